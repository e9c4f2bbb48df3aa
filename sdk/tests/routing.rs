//! Routing over real HTTP: several axum servers on distinct loopback
//! addresses (127.0.0.2, .3, .4 …), each with the [`OwnershipLayer`] in front
//! of a handler that answers its pod name and the key, and a [`Router`]
//! client over [`ReqwestClient`] with its own ring source playing a caller
//! that may be behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use http::{Request, Response, StatusCode};
use locus::client::RouterBody;
use locus::metrics::Side;
use locus::ring::{
    Assignment, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState, Transition,
};
use locus::server::ownership::OwnershipLayerBuilder;
use locus::source::{RingSource, SourceStatus};
use locus::{
    FileRingSource, Metrics, MissingKey, Mode, OwnershipLayer, ReqwestClient, RouteError,
    RouterLayer, StaticRingSource, headers,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const SHARDS: u32 = 64;
const WAIT: Duration = Duration::from_secs(10);
/// Response header of the test handler: the request's ring version.
const SEEN_RING_VERSION: http::HeaderName = http::HeaderName::from_static("x-seen-ring-version");

/// One service pod: an axum server with the ownership layer.
struct TestPod {
    name: String,
    address: SocketAddr,
    /// The pod's own ring source (pods can be on different versions).
    source: StaticRingSource,
    metrics: Metrics,
    /// Requests to `/slow` wait for a permit here.
    gate: Arc<Semaphore>,
}

async fn bind(host: u8) -> TcpListener {
    TcpListener::bind((Ipv4Addr::new(127, 0, 0, host), 0))
        .await
        .unwrap()
}

/// Starts `count` pods on 127.0.0.2, .3, …, named `chat-<i>-pod`.
async fn start_pods(
    count: u8,
    configure: impl Fn(OwnershipLayerBuilder) -> OwnershipLayerBuilder,
) -> Vec<TestPod> {
    let mut pods = Vec::new();
    for i in 0..count {
        let listener = bind(2 + i).await;
        let address = listener.local_addr().unwrap();
        let name = format!("chat-{i}-pod");
        let source = StaticRingSource::new();
        let metrics = Metrics::new();
        let gate = Arc::new(Semaphore::new(0));
        let layer =
            configure(OwnershipLayer::builder(name.clone(), &source).metrics(metrics.clone()))
                .build()
                .unwrap();
        let echo = {
            let name = name.clone();
            move |headers: HeaderMap, uri: axum::http::Uri| {
                let name = name.clone();
                async move {
                    let key = headers
                        .get(headers::SESSION)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .unwrap_or_default();
                    // Echo the ring version the request was routed by.
                    let seen = headers
                        .get(headers::RING_VERSION)
                        .cloned()
                        .unwrap_or(http::HeaderValue::from_static("none"));
                    (
                        [(SEEN_RING_VERSION, seen)],
                        format!("{name} {key} {}", uri.path()),
                    )
                }
            }
        };
        let slow = {
            let gate = Arc::clone(&gate);
            move || {
                let gate = Arc::clone(&gate);
                async move {
                    let _permit = gate.acquire().await.unwrap();
                    "slow done"
                }
            }
        };
        let app = axum::Router::new()
            .route("/slow", axum::routing::get(slow))
            .fallback(echo)
            .layer(layer);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        pods.push(TestPod {
            name,
            address,
            source,
            metrics,
            gate,
        });
    }
    pods
}

/// A ring over `pods` where shard `s` belongs to slot `(s + rotate) % n`.
fn ring(version: u64, pods: &[(String, SocketAddr, SlotState)], rotate: u32) -> Ring {
    let n = pods.len() as u32;
    let table = (0..SHARDS).map(|s| ((s + rotate) % n) as u16).collect();
    Ring::new(RingParts {
        namespace: "default".into(),
        service: "chat".into(),
        version,
        shards: ShardCount::new(SHARDS).unwrap(),
        vnodes: 16,
        slots: pods
            .iter()
            .enumerate()
            .map(|(i, (name, address, state))| Slot {
                index: i as u16,
                pod: Pod {
                    name: name.clone(),
                    uid: format!("uid-{name}"),
                    address: *address,
                },
                state: *state,
                successor: None,
                predecessor: None,
            })
            .collect(),
        current: Assignment::new(table).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

fn members(pods: &[TestPod]) -> Vec<(String, SocketAddr, SlotState)> {
    pods.iter()
        .map(|p| (p.name.clone(), p.address, SlotState::Active))
        .collect()
}

fn publish_to_pods(pods: &[TestPod], ring: &Ring) {
    for pod in pods {
        pod.source.publish(ring.clone()).unwrap();
    }
}

fn get(key: &str) -> Request<String> {
    Request::get("/messages")
        .header(headers::SESSION, key)
        .body(String::new())
        .unwrap()
}

fn header(response: &Response<reqwest::Body>, name: http::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn text(response: Response<reqwest::Body>) -> String {
    use http_body_util::BodyExt as _;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn await_status(
    mut status: watch::Receiver<SourceStatus>,
    condition: impl Fn(&SourceStatus) -> bool,
) -> SourceStatus {
    tokio::time::timeout(WAIT, status.wait_for(condition))
        .await
        .expect("source status condition not reached")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn requests_land_on_the_owner() {
    let pods = start_pods(3, |b| b).await;
    let ring = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring);
    let source = StaticRingSource::with_ring(ring.clone());
    let metrics = Metrics::new();
    let router = RouterLayer::new(&source)
        .metrics(metrics.clone())
        .layer(ReqwestClient::new());

    let mut per_pod = std::collections::HashMap::new();
    for i in 0..300 {
        let key = format!("session-{i}");
        let response = router.clone().oneshot(get(&key)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let owner = &ring.owner(key.as_bytes()).pod.name;
        assert_eq!(
            header(&response, headers::POD).as_ref(),
            Some(owner),
            "{key}"
        );
        assert_eq!(header(&response, headers::FORWARDED_BY), None);
        assert_eq!(text(response).await, format!("{owner} {key} /messages"));
        *per_pod.entry(owner.clone()).or_insert(0) += 1;
    }
    // Every pod owns a share of the keys.
    assert_eq!(per_pod.len(), 3, "{per_pod:?}");
    assert_eq!(metrics.requests_total(Side::Client, "ok"), 300);
    let served: u64 = pods
        .iter()
        .map(|p| p.metrics.requests_total(Side::Server, "served"))
        .sum();
    assert_eq!(served, 300);
    assert!(pods.iter().all(|p| p.metrics.forwarded_total() == 0));
    // The metrics page has what a dashboard needs.
    let page = metrics.encode();
    assert!(page.contains("locus_requests_total{side=\"client\",outcome=\"ok\"} 300"));
    assert!(page.contains("locus_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn a_stale_router_is_forwarded_by_the_pod_it_reaches() {
    let pods = start_pods(3, |b| b.mode(Mode::Forward)).await;
    let old = ring(1, &members(&pods), 0);
    // Version 2 moves every shard to the next slot.
    let new = ring(2, &members(&pods), 1);
    publish_to_pods(&pods, &new);
    let router =
        RouterLayer::new(StaticRingSource::with_ring(old.clone())).layer(ReqwestClient::new());

    for i in 0..60 {
        let key = format!("user-{i}");
        let response = router.clone().oneshot(get(&key)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{key}");
        let owner = &new.owner(key.as_bytes()).pod.name;
        let stale = &old.owner(key.as_bytes()).pod.name;
        assert_ne!(owner, stale);
        assert_eq!(header(&response, headers::POD).as_ref(), Some(owner));
        assert_eq!(
            header(&response, headers::FORWARDED_BY).as_ref(),
            Some(stale)
        );
        assert_eq!(text(response).await, format!("{owner} {key} /messages"));
    }
    let forwarded: u64 = pods.iter().map(|p| p.metrics.forwarded_total()).sum();
    assert_eq!(forwarded, 60);
}

#[tokio::test]
async fn a_forwarded_request_is_never_forwarded_again() {
    let pods = start_pods(2, |b| b.mode(Mode::Forward)).await;
    let ring = ring(4, &members(&pods), 0);
    publish_to_pods(&pods, &ring);
    let key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| ring.owner(k.as_bytes()).pod.name == pods[1].name)
        .unwrap();
    // Sent to pod 0, already marked as one hop: 421 with the hint.
    let response = reqwest::Client::new()
        .get(format!("http://{}/x", pods[0].address))
        .header(headers::SESSION.as_str(), &key)
        .header(headers::HOP.as_str(), "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    let h = response.headers();
    assert_eq!(h[headers::POD.as_str()], pods[0].name.as_str());
    assert_eq!(h[headers::OWNER.as_str()], pods[1].name.as_str());
    assert_eq!(
        h[headers::OWNER_ADDRESS.as_str()],
        pods[1].address.to_string().as_str()
    );
    assert_eq!(h[headers::RING_VERSION.as_str()], "4");
    assert_eq!(pods[0].metrics.misdirected_sent_total(), 1);
    assert_eq!(pods[0].metrics.forwarded_total(), 0);
}

#[tokio::test]
async fn a_stale_router_gets_421_refreshes_and_converges() {
    let pods = start_pods(3, |b| b.mode(Mode::Redirect421)).await;
    let old = ring(1, &members(&pods), 0);
    let new = ring(2, &members(&pods), 2);
    publish_to_pods(&pods, &new);
    let source = StaticRingSource::with_ring(old.clone());
    let metrics = Metrics::new();
    // Tells the test when a 421 passed through the router's client.
    let saw_421 = Arc::new(Notify::new());
    let client = ServiceBuilder::new()
        .map_response({
            let saw_421 = Arc::clone(&saw_421);
            move |response: Response<reqwest::Body>| {
                if response.status() == StatusCode::MISDIRECTED_REQUEST {
                    saw_421.notify_one();
                }
                response
            }
        })
        .service(ReqwestClient::new());
    let router = RouterLayer::new(&source)
        .misdirect_wait(WAIT)
        .metrics(metrics.clone())
        .layer(client);

    let key = "room-42";
    let pending = tokio::spawn(router.clone().oneshot(get(key)));
    // The operator's new ring reaches the router only after the 421: the
    // router must be waiting for it, not failing.
    saw_421.notified().await;
    source.publish(new.clone()).unwrap();
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let owner = &new.owner(key.as_bytes()).pod.name;
    assert_ne!(owner, &old.owner(key.as_bytes()).pod.name);
    assert_eq!(header(&response, headers::POD).as_ref(), Some(owner));
    // The retry was routed by the refreshed ring, not by the hint alone.
    assert_eq!(header(&response, SEEN_RING_VERSION).as_deref(), Some("2"));
    assert_eq!(metrics.misdirected_received_total(), 1);

    // Converged: no more 421s, every request straight to its owner.
    for i in 0..50 {
        let key = format!("room-{i}");
        let response = router.clone().oneshot(get(&key)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, headers::POD).as_ref(),
            Some(&new.owner(key.as_bytes()).pod.name)
        );
    }
    assert_eq!(metrics.misdirected_received_total(), 1);
    assert_eq!(metrics.requests_total(Side::Client, "ok"), 51);
    let sent: u64 = pods
        .iter()
        .map(|p| p.metrics.misdirected_sent_total())
        .sum();
    assert_eq!(sent, 1);
}

#[tokio::test]
async fn a_router_whose_ring_does_not_catch_up_follows_the_hint() {
    let pods = start_pods(3, |b| b.mode(Mode::Redirect421)).await;
    let old = ring(1, &members(&pods), 0);
    let new = ring(2, &members(&pods), 1);
    publish_to_pods(&pods, &new);
    let metrics = Metrics::new();
    let router = RouterLayer::new(StaticRingSource::with_ring(old))
        .misdirect_wait(Duration::from_millis(50))
        .metrics(metrics.clone())
        .layer(ReqwestClient::new());
    for i in 0..10 {
        let key = format!("doc-{i}");
        let response = router.clone().oneshot(get(&key)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, headers::POD).as_ref(),
            Some(&new.owner(key.as_bytes()).pod.name)
        );
        // Sent to the hinted owner, still by the router's version 1.
        assert_eq!(header(&response, SEEN_RING_VERSION).as_deref(), Some("1"));
    }
    // Still stale: one 421 per request, each followed once.
    assert_eq!(metrics.misdirected_received_total(), 10);
    assert_eq!(metrics.requests_total(Side::Client, "ok"), 10);
}

#[tokio::test]
async fn a_streaming_body_is_not_replayed_after_421() {
    let pods = start_pods(2, |b| b.mode(Mode::Redirect421)).await;
    let old = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring(2, &members(&pods), 1));
    let router = RouterLayer::new(StaticRingSource::with_ring(old))
        .misdirect_wait(Duration::from_millis(10))
        .layer(ReqwestClient::new());
    // A body of unknown length cannot be kept for a retry.
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
        bytes::Bytes::from_static(b"chunk"),
    ))]);
    let request = Request::post("/upload")
        .header(headers::SESSION, "k")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let error = router.oneshot(request).await.unwrap_err();
    assert!(
        matches!(error, RouteError::Misdirected { reason, .. } if reason.contains("replayed")),
        "{error}"
    );
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("locus-{}-{name}.json", std::process::id()))
}

/// Replaces the file atomically (temporary file, then rename).
fn write_atomically(path: &PathBuf, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_file_source_rejects_bad_documents_and_routing_continues_on_the_last_good_ring() {
    let pods = start_pods(3, |b| b).await;
    let v2 = ring(2, &members(&pods), 0);
    let v3 = ring(3, &members(&pods), 1);
    publish_to_pods(&pods, &v2);
    let path = temp_path("file-source");
    write_atomically(&path, &RingDocument::to_json(&v2).unwrap());

    let metrics = Metrics::new();
    let source = FileRingSource::builder(&path)
        .poll_interval(Duration::from_millis(10))
        .service("default", "chat")
        .metrics(metrics.clone())
        .open()
        .await;
    assert_eq!(source.watch().version(), Some(2));
    let router = RouterLayer::new(&source).layer(ReqwestClient::new());
    let check = |ring: Ring| {
        let router = router.clone();
        async move {
            for i in 0..20 {
                let key = format!("s{i}");
                let response = router.clone().oneshot(get(&key)).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(
                    header(&response, headers::POD).as_ref(),
                    Some(&ring.owner(key.as_bytes()).pod.name)
                );
                assert_eq!(header(&response, headers::FORWARDED_BY), None);
            }
        }
    };
    check(v2.clone()).await;

    // Garbage: rejected, version 2 keeps serving.
    write_atomically(&path, b"{\"schema\": 1, \"version\": ");
    let status = await_status(source.status(), |s| s.rejected >= 1).await;
    assert!(status.last_problem.unwrap().contains("malformed"));
    assert_eq!(metrics.rejected_total("malformed"), 1);
    assert_eq!(source.watch().version(), Some(2));
    check(v2.clone()).await;

    // An older version: rejected too.
    write_atomically(
        &path,
        &RingDocument::to_json(&ring(1, &members(&pods), 2)).unwrap(),
    );
    await_status(source.status(), |s| s.rejected >= 2).await;
    assert_eq!(metrics.rejected_total("older"), 1);
    assert_eq!(source.watch().version(), Some(2));
    check(v2.clone()).await;

    // A newer version: loaded (the pods got it first, as the operator's
    // rollout would have it).
    publish_to_pods(&pods, &v3);
    write_atomically(&path, &RingDocument::to_json(&v3).unwrap());
    await_status(source.status(), |s| s.version == Some(3)).await;
    assert_eq!(metrics.ring_version(), 3);
    check(v3).await;
    assert_eq!(source.status().borrow().accepted, 2);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn keys_are_checked_before_anything_is_sent() {
    let pods = start_pods(1, |b| b).await;
    let ring = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring);
    let http = reqwest::Client::new();
    let url = format!("http://{}/messages", pods[0].address);

    // Server: no key → 400, key over 256 bytes → 413, both with the pod name.
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["x-locus-pod"], "chat-0-pod");
    let long = "k".repeat(257);
    let response = http
        .get(&url)
        .header("x-locus-session", &long)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()["x-locus-pod"], "chat-0-pod");
    let at_bound = "k".repeat(256);
    let response = http
        .get(&url)
        .header("x-locus-session", &at_bound)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The reserved prefix passes through without a key.
    let response = http
        .get(format!("http://{}/_locus/handoff", pods[0].address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        "chat-0-pod  /_locus/handoff"
    );
    assert_eq!(pods[0].metrics.requests_total(Side::Server, "no_key"), 1);
    assert_eq!(
        pods[0].metrics.requests_total(Side::Server, "key_too_long"),
        1
    );

    // Client: the same bounds, refused before sending.
    let router = RouterLayer::new(StaticRingSource::with_ring(ring)).layer(ReqwestClient::new());
    let error = router
        .clone()
        .oneshot(Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, RouteError::NoKey), "{error}");
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    let error = router.clone().oneshot(get(&long)).await.unwrap_err();
    assert!(
        matches!(error, RouteError::KeyTooLong { len: 257, max: 256 }),
        "{error}"
    );
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(pods[0].metrics.requests_total(Side::Server, "no_key"), 1);
}

#[tokio::test]
async fn keyless_requests_pass_through_when_configured() {
    let pods = start_pods(2, |b| b.missing_key(MissingKey::PassThrough)).await;
    let ring = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring);
    let router = RouterLayer::new(StaticRingSource::with_ring(ring))
        .require_key(false)
        .layer(ReqwestClient::new());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let response = router
            .clone()
            .oneshot(Request::get("/health").body(String::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        seen.insert(header(&response, headers::POD).unwrap());
    }
    // Round robin over the members.
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn without_a_ring_both_sides_refuse_quickly() {
    let pods = start_pods(1, |b| b.retry_after(Duration::from_secs(2))).await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/x", pods[0].address))
        .header("x-locus-session", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["x-locus-pod"], "chat-0-pod");

    let router = RouterLayer::new(StaticRingSource::new()).layer(ReqwestClient::new());
    let error = router.oneshot(get("k")).await.unwrap_err();
    assert!(matches!(error, RouteError::NoRing), "{error}");
    assert!(error.is_fail_fast());
}

#[tokio::test]
async fn the_per_owner_limit_fails_fast_without_queueing() {
    let pods = start_pods(2, |b| b).await;
    let ring = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring);
    let metrics = Metrics::new();
    let router = RouterLayer::new(StaticRingSource::with_ring(ring.clone()))
        .owner_concurrency(1)
        .metrics(metrics.clone())
        .layer(ReqwestClient::new());
    let key_of = |pod: &str| {
        (0..10_000)
            .map(|i| format!("key-{i}"))
            .find(|k| ring.owner(k.as_bytes()).pod.name == pod)
            .unwrap()
    };
    let (a, b) = (key_of(&pods[0].name), key_of(&pods[1].name));
    let slow = |key: &str| {
        Request::get("/slow")
            .header(headers::SESSION, key)
            .body(String::new())
            .unwrap()
    };

    // The first request takes pod 0's only place when it is called and
    // holds it while the handler waits at the gate.
    let mut first = router.clone();
    let first = ServiceExt::<Request<String>>::ready(&mut first)
        .await
        .unwrap()
        .call(slow(&a));
    let first = tokio::spawn(first);
    let started = Instant::now();
    let error = router.clone().oneshot(get(&a)).await.unwrap_err();
    assert!(
        matches!(&error, RouteError::OwnerOverloaded { limit: 1, pod, .. } if *pod == pods[0].name),
        "{error}"
    );
    assert!(error.is_fail_fast());
    assert!(started.elapsed() < Duration::from_secs(1));
    // Another owner is not affected.
    let response = router.clone().oneshot(get(&b)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Open the gate: the first completes and frees its place.
    pods[0].gate.add_permits(1);
    let response = first.await.unwrap().unwrap();
    assert_eq!(text(response).await, "slow done");
    let response = router.clone().oneshot(get(&a)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(metrics.requests_total(Side::Client, "owner_overloaded"), 1);
    assert_eq!(metrics.requests_total(Side::Client, "ok"), 3);
}

#[tokio::test]
async fn a_slow_owner_times_out() {
    let pods = start_pods(1, |b| b).await;
    let ring = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring);
    let router = RouterLayer::new(StaticRingSource::with_ring(ring))
        .timeout(Duration::from_millis(200))
        .layer(ReqwestClient::new());
    let request = Request::get("/slow")
        .header(headers::SESSION, "k")
        .body(String::new())
        .unwrap();
    let error = router.oneshot(request).await.unwrap_err();
    assert!(matches!(error, RouteError::Timeout { .. }), "{error}");
    assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn an_unreachable_owner_is_an_upstream_error() {
    let pods = start_pods(1, |b| b.mode(Mode::Forward)).await;
    // A port on 127.0.0.9 that nobody listens on any more.
    let closed = bind(9).await.local_addr().unwrap();
    let mut members = members(&pods);
    members.push(("chat-1-gone".into(), closed, SlotState::Active));
    let ring = ring(1, &members, 0);
    publish_to_pods(&pods, &ring);
    let key = (0..10_000)
        .map(|i| format!("q{i}"))
        .find(|k| ring.owner(k.as_bytes()).pod.address == closed)
        .unwrap();

    // Client side: the router reports which owner failed.
    let router =
        RouterLayer::new(StaticRingSource::with_ring(ring.clone())).layer(ReqwestClient::new());
    let error = router.oneshot(get(&key)).await.unwrap_err();
    match &error {
        RouteError::Upstream { pod, address, .. } => {
            assert_eq!(pod, "chat-1-gone");
            assert_eq!(*address, closed);
        }
        other => panic!("expected Upstream, got {other}"),
    }
    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);

    // Server side: a pod forwarding to it answers 502 naming the owner.
    let response = reqwest::Client::new()
        .get(format!("http://{}/x", pods[0].address))
        .header("x-locus-session", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["x-locus-owner"], "chat-1-gone");
    assert_eq!(response.headers()["x-locus-pod"], "chat-0-pod");
    assert_eq!(
        pods[0]
            .metrics
            .requests_total(Side::Server, "forward_failed"),
        1
    );
}

#[tokio::test]
async fn an_unavailable_owner_fails_fast_on_both_sides() {
    let pods = start_pods(2, |b| b).await;
    let mut members = members(&pods);
    members[1].2 = SlotState::Unavailable;
    let ring = ring(1, &members, 0);
    publish_to_pods(&pods, &ring);
    let key = (0..10_000)
        .map(|i| format!("u{i}"))
        .find(|k| ring.owner(k.as_bytes()).index == 1)
        .unwrap();
    let router = RouterLayer::new(StaticRingSource::with_ring(ring)).layer(ReqwestClient::new());
    let error = router.oneshot(get(&key)).await.unwrap_err();
    assert!(
        matches!(&error, RouteError::OwnerUnavailable { slot: 1, .. }),
        "{error}"
    );
    let response = reqwest::Client::new()
        .get(format!("http://{}/x", pods[0].address))
        .header("x-locus-session", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_pod_behind_the_caller_waits_for_its_ring_before_deciding() {
    let pods = [
        (
            "p-0".to_owned(),
            "10.1.0.1:8080".parse().unwrap(),
            SlotState::Active,
        ),
        (
            "p-1".to_owned(),
            "10.1.0.2:8080".parse().unwrap(),
            SlotState::Active,
        ),
    ];
    let old = ring(1, &pods, 0);
    let new = ring(2, &pods, 1);
    let key = (0..10_000)
        .map(|i| format!("w{i}"))
        .find(|k| new.owner(k.as_bytes()).index == 1)
        .unwrap();
    // Pod p-1 still holds version 1, under which it does not own the key.
    let source = StaticRingSource::with_ring(old);
    let handler = tower::service_fn(|_: Request<String>| async {
        Ok::<_, std::convert::Infallible>(Response::new(String::from("served")))
    });
    let layer = |wait| {
        OwnershipLayer::builder("p-1", &source)
            .mode(Mode::Redirect421)
            .ring_wait(wait)
            .build()
            .unwrap()
            .layer(handler)
    };
    let request = || {
        Request::get("/x")
            .header(headers::SESSION, key.as_str())
            .header(headers::RING_VERSION, "2")
            .body(String::new())
            .unwrap()
    };

    // Without a newer ring within the bound: decided on version 1, 421.
    let response = layer(Duration::from_millis(20))
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);

    // The caller is on version 2: the pod waits (the call is pending)
    // instead of answering 421, and serves once its source delivers it.
    let mut service = layer(WAIT);
    let mut pending = service.ready().await.unwrap().call(request());
    assert!(futures::poll!(&mut pending).is_pending());
    source.publish(new).unwrap();
    let response = pending.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[headers::POD], "p-1");
}

#[tokio::test]
async fn the_router_is_a_tower_layer_over_any_client() {
    // An in-memory inner service: the router's rewrite is visible.
    let pods = [
        (
            "a-0".to_owned(),
            "10.1.0.1:8080".parse().unwrap(),
            SlotState::Active,
        ),
        (
            "a-1".to_owned(),
            "10.1.0.2:9090".parse().unwrap(),
            SlotState::Active,
        ),
    ];
    let ring = ring(7, &pods, 0);
    let router = RouterLayer::new(StaticRingSource::with_ring(ring.clone())).layer(
        tower::service_fn(|request: Request<RouterBody<String>>| async move {
            let uri = request.uri().to_string();
            let version = request.headers()[headers::RING_VERSION].clone();
            Ok::<_, std::convert::Infallible>(Response::new(format!(
                "{uri} v{}",
                version.to_str().unwrap()
            )))
        }),
    );
    let request = Request::get("/a/b?c=d")
        .header(headers::SESSION, "key-1")
        .body(String::new())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let owner = ring.owner(b"key-1").pod.address;
    assert_eq!(response.body(), &format!("http://{owner}/a/b?c=d v7"));
}

#[tokio::test]
async fn an_axum_gateway_routes_incoming_requests_to_their_owners() {
    let pods = start_pods(3, |b| b).await;
    let ring = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring);
    let router =
        RouterLayer::new(StaticRingSource::with_ring(ring.clone())).layer(ReqwestClient::new());
    // The gateway's handler sends the incoming request (hyper body, not
    // `Sync`) through the router and maps routing errors to statuses.
    let gateway = axum::Router::new().fallback(move |request: Request<axum::body::Body>| {
        let router = router.clone();
        async move {
            match router.oneshot(request).await {
                Ok(response) => axum::response::IntoResponse::into_response(response),
                Err(error) => {
                    axum::response::IntoResponse::into_response((error.status(), error.to_string()))
                }
            }
        }
    });
    let listener = bind(10).await;
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, gateway).await.unwrap() });

    let http = reqwest::Client::new();
    for i in 0..30 {
        let key = format!("g{i}");
        let response = http
            .post(format!("http://{address}/rooms"))
            .header("x-locus-session", &key)
            .body(format!("message {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["x-locus-pod"],
            ring.owner(key.as_bytes()).pod.name.as_str()
        );
    }
    let response = http
        .get(format!("http://{address}/rooms"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// A stand-in for the API server's `ConfigMap` list and watch endpoints,
/// just enough for kube's watcher: the current object and its
/// resourceVersion in a watch channel; watches stream `MODIFIED` events and
/// end when the server shuts down.
mod fake_api {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use axum::extract::{Query, State};
    use axum::response::{IntoResponse, Response};
    use bytes::Bytes;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    #[derive(Clone)]
    struct Shared {
        object: watch::Receiver<(u64, Value)>,
        shutdown: watch::Receiver<bool>,
    }

    pub struct FakeApi {
        pub address: SocketAddr,
        pub object: watch::Sender<(u64, Value)>,
        shutdown: watch::Sender<bool>,
        task: JoinHandle<()>,
    }

    pub fn config_map(namespace: &str, document: &[u8], resource_version: u64) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "chat-ring",
                "namespace": namespace,
                "uid": "5c3c1d2e-0000-4000-8000-000000000001",
                "resourceVersion": resource_version.to_string(),
            },
            "data": {"ring.json": String::from_utf8_lossy(document)},
        })
    }

    async fn configmaps(
        State(shared): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let (version, object) = shared.object.borrow().clone();
        if query.get("watch").map(String::as_str) != Some("true") {
            return axum::Json(json!({
                "apiVersion": "v1",
                "kind": "ConfigMapList",
                "metadata": {"resourceVersion": version.to_string()},
                "items": [object],
            }))
            .into_response();
        }
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let events = futures::stream::unfold(
            (shared.object, shared.shutdown, since),
            |(mut object, mut shutdown, since)| async move {
                loop {
                    let (version, current) = object.borrow_and_update().clone();
                    if version > since {
                        let line = format!("{}\n", json!({"type": "MODIFIED", "object": current}));
                        return Some((
                            Ok::<_, Infallible>(Bytes::from(line)),
                            (object, shutdown, version),
                        ));
                    }
                    tokio::select! {
                        changed = object.changed() => changed.ok()?,
                        _ = shutdown.wait_for(|down| *down) => return None,
                    }
                }
            },
        );
        (
            [("content-type", "application/json")],
            axum::body::Body::from_stream(events),
        )
            .into_response()
    }

    impl FakeApi {
        pub fn start(listener: TcpListener, version: u64, object: Value) -> Self {
            let address = listener.local_addr().unwrap();
            let (object_tx, object_rx) = watch::channel((version, object));
            let (shutdown_tx, shutdown_rx) = watch::channel(false);
            let shared = Shared {
                object: object_rx,
                shutdown: shutdown_rx.clone(),
            };
            let app = axum::Router::new()
                .route(
                    "/api/v1/namespaces/{namespace}/configmaps",
                    axum::routing::get(configmaps),
                )
                .with_state(shared);
            let mut down = shutdown_rx;
            let task = tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = down.wait_for(|down| *down).await;
                    })
                    .await
                    .unwrap();
            });
            Self {
                address,
                object: object_tx,
                shutdown: shutdown_tx,
                task,
            }
        }

        /// Stops serving: open watches end, connections close, the port
        /// refuses connections. Returns once the listener is gone.
        pub async fn stop(self) -> SocketAddr {
            self.shutdown.send_replace(true);
            self.task.await.unwrap();
            self.address
        }
    }
}

#[tokio::test]
async fn routing_continues_on_the_last_good_ring_while_the_api_server_is_down() {
    use fake_api::{FakeApi, config_map};

    let pods = start_pods(3, |b| b).await;
    let v1 = ring(1, &members(&pods), 0);
    let v2 = ring(2, &members(&pods), 1);
    publish_to_pods(&pods, &v1);
    let api = FakeApi::start(
        bind(11).await,
        1,
        config_map("default", &RingDocument::to_json(&v1).unwrap(), 1),
    );
    let config = kube::Config::new(format!("http://{}", api.address).parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let metrics = Metrics::new();
    let source = locus::KubeRingSource::builder(client, "default", "chat")
        .metrics(metrics.clone())
        .spawn();
    assert_eq!(source.config_map(), "default/chat-ring");
    let loaded = source.watch().wait_for_version(1, WAIT).await.unwrap();
    assert_eq!(*loaded, v1);
    let router = RouterLayer::new(&source).layer(ReqwestClient::new());
    let check = |ring: Ring| {
        let router = router.clone();
        async move {
            for i in 0..10 {
                let key = format!("api-{i}");
                let response = router.clone().oneshot(get(&key)).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(
                    header(&response, headers::POD).as_ref(),
                    Some(&ring.owner(key.as_bytes()).pod.name)
                );
            }
        }
    };
    check(v1.clone()).await;

    // A malformed update: rejected, ring 1 keeps serving.
    api.object
        .send_replace((2, config_map("default", b"{\"schema\": 1", 2)));
    await_status(source.status(), |s| s.rejected >= 1).await;
    assert_eq!(metrics.rejected_total("malformed"), 1);
    check(v1.clone()).await;

    // The API server goes away: the source notices, routing does not.
    let address = api.stop().await;
    await_status(source.status(), |s| s.errors >= 1).await;
    assert_eq!(source.watch().version(), Some(1));
    check(v1.clone()).await;

    // It comes back with ring 2: the watcher reconnects (with backoff) and
    // the router follows.
    let listener = TcpListener::bind(address).await.unwrap();
    let _api = FakeApi::start(
        listener,
        3,
        config_map("default", &RingDocument::to_json(&v2).unwrap(), 3),
    );
    publish_to_pods(&pods, &v2);
    await_status(source.status(), |s| s.version == Some(2)).await;
    check(v2).await;
    assert_eq!(metrics.ring_version(), 2);
}

#[tokio::test]
async fn an_empty_retry_budget_turns_a_421_into_an_error() {
    let pods = start_pods(2, |b| b.mode(Mode::Redirect421)).await;
    let old = ring(1, &members(&pods), 0);
    publish_to_pods(&pods, &ring(2, &members(&pods), 1));
    let metrics = Metrics::new();
    // No reserve, no share of the request rate: no retry is ever allowed.
    // Out-of-range values are clamped, not a panic.
    let router = RouterLayer::new(StaticRingSource::with_ring(old))
        .retry_budget(Duration::ZERO, 0, -1.0)
        .misdirect_wait(Duration::from_millis(10))
        .metrics(metrics.clone())
        .layer(ReqwestClient::new());
    let error = router.oneshot(get("budget")).await.unwrap_err();
    assert!(
        matches!(&error, RouteError::Misdirected { reason, ring_version: Some(2), .. } if reason.contains("budget")),
        "{error}"
    );
    assert_eq!(metrics.misdirected_received_total(), 1);
    assert_eq!(metrics.requests_total(Side::Client, "misdirected"), 1);
}
