//! The sample as a Locus member, in-process: the SDK's handoff endpoints are
//! wired into its HTTP stack (authenticated, reachable through the ownership
//! layer) and an in-place restart keeps every session through the snapshot.
//! Transitions between pods under the operator are tested end to end in
//! `e2e/tests/e2e_demo.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{TempDir, client, pod_name, start_ring_pods};
use http::StatusCode;
use locus::handoff::HandoffSecret;
use locus::headers;
use locus::server::session::ShutdownPath;
use locus_examples::ledger::SessionView;
use locus_examples::ring_source::RingSourceConfig;
use locus_examples::sample::{CACHE_HEADER, HandoffOptions, SampleConfig, SecretSource};
use tokio::net::TcpListener;

fn secret() -> HandoffSecret {
    HandoffSecret::new("a-test-secret-of-more-than-sixteen-bytes").unwrap()
}

#[tokio::test]
async fn the_handoff_endpoints_are_served_and_authenticated() {
    let dir = TempDir::new("handoff-endpoints");
    let (pods, _, _) = start_ring_pods(dir.path(), 2, |config| {
        config.handoff = Some(HandoffOptions::new(SecretSource::Value(secret())));
    })
    .await;
    for pod in &pods {
        assert!(pod.service().member().is_some());
        let answer = client()
            .post(pod.url("/_locus/handoff/v1/push"))
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::UNAUTHORIZED,
            "the endpoint answers, and refuses a caller without the secret"
        );
        let metrics = client()
            .get(pod.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("locus_handoff_"), "{metrics}");
        assert!(metrics.contains("locus_store_"), "{metrics}");
        assert_eq!(
            metrics.matches("# EOF").count(),
            1,
            "one exposition: {metrics}"
        );
    }
    // Without the handoff driver, the path is nothing.
    let dir = TempDir::new("no-handoff");
    let (plain, _, _) = start_ring_pods(dir.path(), 1, |_| {}).await;
    assert!(plain[0].service().member().is_none());
    let answer = client()
        .post(plain[0].url("/_locus/handoff/v1/push"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_in_place_restart_keeps_every_session_through_the_snapshot() {
    let dir = TempDir::new("snapshot");
    let snapshots = dir.path().join("snapshot");
    std::fs::create_dir_all(&snapshots).unwrap();
    let configure = |config: &mut SampleConfig| {
        config.handoff = Some(HandoffOptions {
            snapshot_dir: Some(snapshots.clone()),
            ..HandoffOptions::new(SecretSource::Value(secret()))
        });
    };
    // One pod: it owns every session.
    let (mut pods, _, ring_path) = start_ring_pods(dir.path(), 1, configure).await;
    let pod = pods.pop().unwrap();
    let sessions: Vec<String> = (0..20).map(|i| format!("snap-{i}")).collect();
    for id in &sessions {
        for seq in 1..=3 {
            let answer = client()
                .post(pod.url(&format!("/sessions/{id}/events")))
                .header(headers::SESSION, id)
                .body(format!(
                    r#"{{"seq": {seq}, "kind": "deposit", "amount": 5}}"#
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
        }
    }
    let address = pod.address;
    // SIGTERM's path: with a snapshot directory, the sessions go to the snapshot.
    let report = pod.stop().await;
    assert_eq!(report.path, Some(ShutdownPath::Snapshot));
    assert_eq!(report.snapshot_sessions, Some(20));
    assert_eq!(report.dropped, 0);

    // The same pod again (same name, address and ring): the sessions are back
    // before the first request, in memory.
    let listener = TcpListener::bind(address).await.unwrap();
    let mut config = SampleConfig::new(pod_name(0), RingSourceConfig::File(ring_path));
    configure(&mut config);
    let pod = common::serve(listener, config).await;
    for id in &sessions {
        let answer = client()
            .get(pod.url(&format!("/sessions/{id}")))
            .header(headers::SESSION, id)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            answer.headers().get(CACHE_HEADER).unwrap(),
            "warm",
            "{id} restored into memory"
        );
        let view: SessionView = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert_eq!((view.events, view.total), (3, 15), "{id}: {view:?}");
    }
}
