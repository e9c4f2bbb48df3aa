//! The entry point of a member pod, [`MemberPod`], in-process: one pod on
//! loopback built from a lookup environment plus overrides, serving an axum
//! application through the one layer; readiness through the shutdown; and a
//! member started twice at once restoring its snapshot once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, get_service, post};
use http::StatusCode;
use locus::handoff::HandoffSecret;
use locus::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
use locus::server::session::{Member, ShutdownIntent, ShutdownPath};
use locus::store::{JsonCodec, SessionStore, Versioned};
use locus::{MemberPod, StaticRingSource, headers};

const POD: &str = "carts-0-x7k2p";

fn secret() -> HandoffSecret {
    HandoffSecret::new("a-test-secret-of-more-than-sixteen-bytes").unwrap()
}

/// One slot served by [`POD`] at `address`, owning every shard.
fn ring(address: SocketAddr) -> Ring {
    Ring::new(RingParts {
        namespace: "shop".into(),
        service: "carts".into(),
        version: 1,
        shards: ShardCount::new(16).unwrap(),
        vnodes: 16,
        slots: vec![Slot {
            index: 0,
            pod: Pod {
                name: POD.into(),
                uid: "uid-0".into(),
                address,
            },
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        }],
        current: Assignment::new(vec![0; 16]).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

type Carts = SessionStore<Vec<String>>;

#[derive(Clone)]
struct App {
    carts: Carts,
    member: Member,
}

async fn add(State(app): State<App>, headers: HeaderMap, item: String) -> Response {
    let Some(key) = headers.get(headers::SESSION) else {
        return (StatusCode::BAD_REQUEST, "no session").into_response();
    };
    match app
        .carts
        .update(key.as_bytes(), |cart| {
            cart.push(item);
            cart.len()
        })
        .await
    {
        Ok(done) => done.value.to_string().into_response(),
        Err(error) => app.member.error_response(&error).into_response(),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("locus-member-pod-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn one_layer_serves_the_application_the_handoff_endpoints_and_the_probes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let source = StaticRingSource::with_ring(ring(address));
    let carts: Carts = SessionStore::builder(JsonCodec, Vec::len).build().unwrap();
    // What the operator sets, but the ring and the secret given here.
    let env = |name: &str| (name == "POD_NAME").then(|| POD.to_owned());
    let pod = MemberPod::from_lookup(carts.clone(), env)
        .ring_source(locus::RingSource::watch(&source))
        .secret(secret())
        // Nobody retires this pod: the shutdown waits this long first.
        .coordination_wait(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let metrics = pod.metrics().clone();
    let app = axum::Router::new()
        .route("/cart", post(add))
        .with_state(App {
            carts: carts.clone(),
            member: pod.member().clone(),
        })
        // Merged routers and routes without a key: no placeholder needed.
        .merge(
            axum::Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get_service(pod.readiness()))
                .route("/metrics", get(move || async move { metrics.encode() })),
        )
        .layer(pod.layer());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{address}{path}");

    let answer = client
        .post(url("/cart"))
        .header(headers::SESSION.as_str(), "cart-7")
        .body("apple")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()[headers::POD.as_str()], POD);
    assert_eq!(answer.text().await.unwrap(), "1");
    // The ownership check still refuses a session route without a key.
    let answer = client.post(url("/cart")).body("pear").send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    // The handoff endpoints answer (and refuse a caller without the secret).
    let answer = client
        .post(url("/_locus/handoff/v1/push"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    for probe in ["/healthz", "/readyz"] {
        let answer = client.get(url(probe)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{probe}");
    }
    let page = client
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in ["locus_requests", "locus_store_", "locus_handoff_"] {
        assert!(page.contains(family), "{family} in {page}");
    }
    assert_eq!(page.matches("# EOF").count(), 1);

    // SIGTERM: readiness stays on while the member hands over, then goes off.
    let readiness = pod.readiness();
    let shutdown = tokio::spawn(pod.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shutdown.is_finished(), "still waiting for the operator");
    let answer = client.get(url("/readyz")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "ready while handing over");
    let report = shutdown.await.unwrap();
    assert_eq!(report.path, ShutdownPath::Handoff);
    assert!(readiness.is_shut());
    let answer = client.get(url("/readyz")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The member no longer serves as the sessions' owner.
    let answer = client
        .post(url("/cart"))
        .header(headers::SESSION.as_str(), "cart-7")
        .body("plum")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    server.abort();
}

#[tokio::test]
async fn two_starts_at_once_restore_the_snapshot_once() {
    let dir = temp_dir("double-start");
    let address: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let source = StaticRingSource::with_ring(ring(address));
    let member_over = |store: &Carts| {
        Member::builder(POD, &source, store.clone())
            .secret(secret())
            .snapshot_dir(&dir)
            .build()
            .unwrap()
    };
    // A process that wrote its sessions to the snapshot.
    let before: Carts = SessionStore::builder(JsonCodec, Vec::len).build().unwrap();
    for i in 0..8 {
        before
            .install(
                format!("k{i}").as_bytes(),
                Versioned::new(1, vec![i.to_string()]),
            )
            .await
            .unwrap();
    }
    let report = member_over(&before)
        .shutdown_as(ShutdownIntent::Restart, Duration::from_secs(5))
        .await;
    assert_eq!(report.path, ShutdownPath::Snapshot);

    // The next process starts twice at once.
    let after: Carts = SessionStore::builder(JsonCodec, Vec::len).build().unwrap();
    let member = member_over(&after);
    let (a, b) = tokio::join!(member.start(), member.start());
    let restored: Vec<_> = [&a, &b]
        .iter()
        .filter_map(|r| r.snapshot.as_ref())
        .collect();
    assert_eq!(restored.len(), 1, "{a:?} {b:?}");
    assert!(a.snapshot_ignored.is_none() && b.snapshot_ignored.is_none());
    assert_eq!(after.stats().sessions, 8);
    member.abort();
    std::fs::remove_dir_all(&dir).unwrap();
}
