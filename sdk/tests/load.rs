//! Per-shard load of a member pod, in-process: requests served through the
//! one layer are counted by shard with their body bytes, reported through
//! the progress reporter every interval, and shown on `/metrics`; requests
//! the pod does not serve as owner count nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use locus::handoff::HandoffSecret;
use locus::progress::MemoryProgressReporter;
use locus::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
use locus::store::{JsonCodec, SessionStore};
use locus::{MemberPod, Mode, StaticRingSource, headers};

const POD: &str = "carts-0-x7k2p";
const OTHER: &str = "carts-1-q9z3w";
const SHARDS: u32 = 16;

/// Two slots: shards 0..8 on [`POD`] at `address`, 8..16 on [`OTHER`]
/// (never asked: this pod answers 421 for its keys).
fn ring(address: SocketAddr) -> Ring {
    let slot = |index: u16, name: &str, address: SocketAddr| Slot {
        index,
        pod: Pod {
            name: name.into(),
            uid: format!("uid-{index}"),
            address,
        },
        state: SlotState::Active,
        successor: None,
        predecessor: None,
    };
    let mut table = vec![0u16; SHARDS as usize / 2];
    table.extend(vec![1u16; SHARDS as usize / 2]);
    Ring::new(RingParts {
        namespace: "shop".into(),
        service: "carts".into(),
        version: 4,
        shards: ShardCount::new(SHARDS).unwrap(),
        vnodes: 16,
        slots: vec![
            slot(0, POD, address),
            slot(1, OTHER, SocketAddr::from(([127, 0, 0, 1], 1))),
        ],
        current: Assignment::new(table).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

type Carts = SessionStore<Vec<String>>;

/// Twenty sessions of [`POD`] and five of [`OTHER`], by the ring.
fn sessions(ring: &Ring) -> (Vec<String>, Vec<String>) {
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    for i in 0.. {
        let key = format!("cart-{i}");
        if ring.owner(key.as_bytes()).pod.name == POD {
            mine.push(key);
        } else {
            theirs.push(key);
        }
        if mine.len() >= 20 && theirs.len() >= 5 {
            break;
        }
    }
    (mine, theirs)
}

async fn add(State(carts): State<Carts>, headers: HeaderMap, item: String) -> Response {
    let key = headers.get(headers::SESSION).unwrap().as_bytes().to_vec();
    let done = carts
        .update(&key, |cart| {
            cart.push(item);
            cart.len()
        })
        .await
        .unwrap();
    // A body of a known length: "items: N".
    format!("items: {}", done.value).into_response()
}

#[tokio::test]
async fn served_requests_are_counted_by_shard_and_reported() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let ring = ring(address);
    let source = StaticRingSource::with_ring(ring.clone());
    let carts: Carts = SessionStore::builder(JsonCodec, Vec::len).build().unwrap();
    let reporter = MemoryProgressReporter::new();
    let pod = MemberPod::from_lookup(carts.clone(), |_| None)
        .pod_name(POD)
        .ring_source(locus::RingSource::watch(&source))
        .secret(HandoffSecret::new("a-test-secret-of-more-than-sixteen-bytes").unwrap())
        .progress(reporter.clone())
        .mode(Mode::Redirect421)
        .load_report_interval(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let metrics = pod.metrics().clone();
    let app = axum::Router::new()
        .route("/cart", post(add))
        .with_state(carts.clone())
        .merge(axum::Router::new().route("/metrics", get(move || async move { metrics.encode() })))
        .layer(pod.layer());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();

    let (mine, theirs) = sessions(&ring);
    let (mut requests, mut bytes) = (0u64, 0u64);
    let mut per_shard = [0u64; SHARDS as usize];
    for (n, key) in mine.iter().enumerate() {
        // Session n gets n + 1 appends: the shards' counts differ.
        for _ in 0..=n {
            let item = "apple".repeat(n % 3 + 1);
            let answer = client
                .post(format!("http://{address}/cart"))
                .header(headers::SESSION.as_str(), key)
                .body(item.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            let text = answer.text().await.unwrap();
            requests += 1;
            bytes += (item.len() + text.len()) as u64;
            per_shard[ring.shard_of(key.as_bytes()) as usize] += 1;
        }
    }
    // Owned elsewhere: 421, not this pod's load.
    for key in &theirs {
        let answer = client
            .post(format!("http://{address}/cart"))
            .header(headers::SESSION.as_str(), key)
            .body("pear")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::MISDIRECTED_REQUEST);
    }
    assert_eq!(pod.member().load_totals(), (requests, bytes));

    // The first window, 5 s from the start, holds them all (a few hundred
    // requests on loopback take a fraction of that).
    let complete = reporter
        .wait_for_load(|load| load.requests == requests, Duration::from_secs(10))
        .await;
    let load = reporter.latest_load().unwrap();
    assert!(complete, "no window with all {requests} requests: {load:?}");
    load.validate().unwrap();
    assert_eq!(reporter.load_reports(), 1);
    assert_eq!(load.window_seconds, 5);
    assert_eq!(load.ring_version, 4);
    assert_eq!(load.shards, SHARDS);
    assert_eq!(load.owned_shards, SHARDS / 2);
    assert_eq!(load.bytes, bytes);
    let mut expected: Vec<(u32, u64)> = per_shard
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(shard, n)| (shard as u32, *n))
        .collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let hot: Vec<(u32, u64)> = load.hot.iter().map(|l| (l.shard, l.requests)).collect();
    assert_eq!(hot, expected);
    assert!(
        hot.iter().all(|(shard, _)| *shard < SHARDS / 2),
        "only owned shards"
    );

    let page = client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!("locus_load_requests_total {requests}"),
        format!("locus_load_bytes_total {bytes}"),
        "locus_load_reports_total{outcome=\"patched\"} 1".to_owned(),
    ] {
        assert!(page.contains(&line), "{line} not in {page}");
    }
    server.abort();
}
