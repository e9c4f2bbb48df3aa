//! Fan-out over real HTTP: members on distinct loopback addresses behind
//! the ownership layer, one of them down (connection refused), one slow past
//! the deadline, one marked unavailable in the ring.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use locus::fanout::MemberError;
use locus::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
use locus::{FanOut, Metrics, OwnershipLayer, StaticRingSource, headers};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A member that answers `<pod> <path>` (or never, if `hang`).
async fn start_member(host: u8, name: &str, source: &StaticRingSource, hang: bool) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, host), 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    // A gate nobody opens: the slow member never answers.
    let gate = Arc::new(Semaphore::new(0));
    let handler = {
        let name = name.to_owned();
        move |uri: axum::http::Uri| {
            let name = name.clone();
            let gate = Arc::clone(&gate);
            async move {
                if hang {
                    let _never = gate.acquire().await;
                }
                format!("{name} {}", uri.path())
            }
        }
    };
    let layer = OwnershipLayer::new(name, source).unwrap();
    let app = axum::Router::new().fallback(handler).layer(layer);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn ring(members: &[(&str, SocketAddr, SlotState)]) -> Ring {
    let n = members.len() as u16;
    Ring::new(RingParts {
        namespace: "default".into(),
        service: "scuba".into(),
        version: 3,
        shards: ShardCount::new(16).unwrap(),
        vnodes: 8,
        slots: members
            .iter()
            .enumerate()
            .map(|(i, (name, address, state))| Slot {
                index: i as u16,
                pod: Pod {
                    name: (*name).to_owned(),
                    uid: format!("uid-{name}"),
                    address: *address,
                },
                state: *state,
                successor: None,
                predecessor: None,
            })
            .collect(),
        current: Assignment::new((0..16).map(|s| s % n).collect()).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

fn query() -> Request<Bytes> {
    Request::get("/stats?window=1m").body(Bytes::new()).unwrap()
}

#[tokio::test]
async fn completeness_counts_down_and_slow_members_as_missing() {
    let pods = StaticRingSource::new();
    let a = start_member(2, "leaf-0", &pods, false).await;
    let b = start_member(3, "leaf-1", &pods, false).await;
    let slow = start_member(4, "leaf-2", &pods, true).await;
    // Down: a port on 127.0.0.5 that nobody listens on any more.
    let down = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 5), 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let ring = ring(&[
        ("leaf-0", a, SlotState::Active),
        ("leaf-1", b, SlotState::Active),
        ("leaf-2", slow, SlotState::Active),
        ("leaf-3", down, SlotState::Active),
    ]);
    pods.publish(ring.clone()).unwrap();
    let caller = StaticRingSource::with_ring(ring);
    let metrics = Metrics::new();
    let deadline = Duration::from_millis(300);
    let fanout = FanOut::new(&caller)
        .deadline(deadline)
        .metrics(metrics.clone());

    let started = Instant::now();
    let result = fanout.send(query()).await.unwrap();
    let elapsed = started.elapsed();

    assert_eq!(result.ring_version, 3);
    assert_eq!(result.members, 4);
    assert!((result.completeness() - 0.5).abs() < f64::EPSILON);
    assert!(!result.is_complete());
    let answered: Vec<(&str, &[u8])> = result
        .answers
        .iter()
        .map(|a| (a.member.pod.as_str(), a.response.body().as_ref()))
        .collect();
    assert_eq!(
        answered,
        vec![
            ("leaf-0", &b"leaf-0 /stats"[..]),
            ("leaf-1", &b"leaf-1 /stats"[..])
        ]
    );
    for answer in &result.answers {
        assert_eq!(answer.response.status(), StatusCode::OK);
        assert_eq!(
            answer.response.headers()["x-locus-pod"],
            answer.member.pod.as_str()
        );
    }
    let failed: Vec<(&str, &str)> = result
        .failures
        .iter()
        .map(|f| (f.member.pod.as_str(), f.error.metric_label()))
        .collect();
    assert_eq!(failed, vec![("leaf-2", "timeout"), ("leaf-3", "upstream")]);
    // It waited for the slow member until the deadline, not much longer.
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < deadline + Duration::from_secs(2), "{elapsed:?}");
    let page = metrics.encode();
    assert!(page.contains("locus_fanout_members_total{outcome=\"answered\"} 2"));
    assert!(page.contains("locus_fanout_members_total{outcome=\"timeout\"} 1"));
    assert!(page.contains("locus_fanout_members_total{outcome=\"upstream\"} 1"));
}

#[tokio::test]
async fn every_member_answering_is_complete_and_unavailable_slots_count_as_missing() {
    let pods = StaticRingSource::new();
    let a = start_member(6, "leaf-0", &pods, false).await;
    let b = start_member(7, "leaf-1", &pods, false).await;
    let all = ring(&[
        ("leaf-0", a, SlotState::Active),
        ("leaf-1", b, SlotState::Leaving),
        // A joining slot serves nothing under `current`: not a member.
        ("leaf-2", "10.9.9.9:1".parse().unwrap(), SlotState::Joining),
    ]);
    pods.publish(all.clone()).unwrap();
    let result = FanOut::new(StaticRingSource::with_ring(all))
        .send(query())
        .await
        .unwrap();
    assert_eq!(result.members, 2);
    assert!(result.is_complete());
    assert!((result.completeness() - 1.0).abs() < f64::EPSILON);

    // An unavailable slot is a member that fails without a request.
    let unavailable: SocketAddr = "10.9.9.9:1".parse().unwrap();
    let partial = ring(&[
        ("leaf-0", a, SlotState::Active),
        ("leaf-1", unavailable, SlotState::Unavailable),
    ]);
    let started = Instant::now();
    let result = FanOut::new(StaticRingSource::with_ring(partial))
        .send(query())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(result.members, 2);
    assert_eq!(result.answers.len(), 1);
    assert!(matches!(result.failures[0].error, MemberError::Unavailable));
    assert!((result.completeness() - 0.5).abs() < f64::EPSILON);
}

#[tokio::test]
async fn a_fanout_request_for_another_pod_is_misdirected() {
    let pods = StaticRingSource::new();
    let a = start_member(8, "leaf-0", &pods, false).await;
    pods.publish(ring(&[("leaf-0", a, SlotState::Active)]))
        .unwrap();
    let response = reqwest::Client::new()
        .get(format!("http://{a}/stats"))
        .header(headers::FANOUT.as_str(), "leaf-9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(response.headers()["x-locus-pod"], "leaf-0");
}

#[tokio::test]
async fn no_ring_no_fanout() {
    let error = FanOut::new(StaticRingSource::new())
        .send(query())
        .await
        .unwrap_err();
    assert!(matches!(error, locus::FanOutError::NoRing));
}
