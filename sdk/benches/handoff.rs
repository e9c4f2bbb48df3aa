//! Handoff over real loopback HTTP: a pod (axum, the session layer with the
//! handoff endpoints) holding 10 000 sessions of 1 KiB, and a second pod's
//! `HandoffClient`.
//!
//! * `precopy/10k x 1KiB`: stream every session of every shard (the Warm
//!   step's pre-copy);
//! * `push/10k x 1KiB`: push 10 000 sessions in batches of 256 to a pod that
//!   owns them and installs them (the drain);
//! * `transfer/one key`: one first-touch transfer (state handed off under
//!   the session's lock, tombstone, answer).
//!
//! `cargo bench -p locus --bench handoff`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark harness"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderValue;
use locus::handoff::HandoffSecret;
use locus::internal::{HandoffClient, HttpTransport, PrecopyRequest, TransferAnswer};
use locus::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
use locus::store::{JsonCodec, Limits, SessionCodec, SessionRecord, SessionStore, Versioned};
use locus::{Member, StaticRingSource};
use tokio::net::TcpListener;
use tower::Layer;

const SESSIONS: usize = 10_000;
const SESSION_BYTES: usize = 1024;
const SHARDS: u32 = 256;

fn secret() -> HandoffSecret {
    HandoffSecret::new("benchmark-secret-0123456789abcdef").unwrap()
}

/// The key the transfer benchmark moves, owned by the client pod.
const MOVING: &[u8] = b"moving";

/// `pod` owns every shard but the one of [`MOVING`], which the benchmark's
/// client pod owns (so the transfer is granted to it).
fn ring(pod: &str, address: SocketAddr) -> Ring {
    let shards = ShardCount::new(SHARDS).unwrap();
    let slot = |index: u16, name: &str, address: SocketAddr| Slot {
        index,
        pod: Pod {
            name: name.into(),
            uid: format!("uid-{name}"),
            address,
        },
        state: SlotState::Active,
        successor: None,
        predecessor: None,
    };
    let mut table = vec![0; SHARDS as usize];
    table[shards.shard_of(MOVING) as usize] = 1;
    Ring::new(RingParts {
        namespace: "bench".into(),
        service: "sessions".into(),
        version: 1,
        shards,
        vnodes: 16,
        slots: vec![
            slot(0, pod, address),
            slot(1, "bench-client", SocketAddr::from(([127, 0, 0, 1], 9))),
        ],
        current: Assignment::new(table).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

/// A 1 KiB session (JSON-encoded string, 1 KiB + quotes).
fn value(i: usize) -> String {
    let mut s = format!("{i:08}-");
    while s.len() < SESSION_BYTES {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s
}

fn store() -> SessionStore<String> {
    SessionStore::builder(JsonCodec, String::len)
        .limits(
            Limits::builder()
                .max_sessions(2_000_000)
                .max_total_bytes(4 << 30)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// A pod serving the handoff endpoints at a loopback address. Its
/// transition driver is not started: the benchmark calls the endpoints
/// directly.
async fn serve(name: &str, store: SessionStore<String>) -> Pod {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let source = StaticRingSource::with_ring(ring(name, address));
    let member = Member::builder(name, &source, store)
        .secret(secret())
        .build()
        .unwrap();
    let service = member.layer().layer(tower::service_fn(
        |_: http::Request<axum::body::Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        },
    ));
    let app = axum::Router::new().fallback_service(service);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // The member's tasks live as long as the process.
    std::mem::forget(member);
    Pod {
        name: name.into(),
        uid: "uid".into(),
        address,
    }
}

fn client() -> HandoffClient {
    HandoffClient::new(
        Arc::new(HttpTransport::default()),
        &secret(),
        &HeaderValue::from_static("bench-client"),
        (16 << 20) + (64 << 10),
    )
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let source_store = store();
    let source = runtime.block_on(async {
        for i in 0..SESSIONS {
            source_store
                .install(
                    format!("session-{i}").as_bytes(),
                    Versioned::new(1, value(i)),
                )
                .await
                .unwrap();
        }
        serve("source-0", source_store.clone()).await
    });
    let receiver = runtime.block_on(serve("receiver-0", store()));
    let setup = Setup {
        runtime,
        client: client(),
        source,
        source_store,
        receiver,
        encoded: (0..SESSIONS).map(|i| value(i).len() + 2).sum::<usize>() as u64,
    };
    precopy(c, &setup);
    push(c, &setup);
    transfer(c, &setup);
}

/// What every benchmark uses.
struct Setup {
    runtime: tokio::runtime::Runtime,
    client: HandoffClient,
    source: Pod,
    source_store: SessionStore<String>,
    receiver: Pod,
    /// Encoded bytes of the 10 000 sessions.
    encoded: u64,
}

fn precopy(c: &mut Criterion, setup: &Setup) {
    let Setup {
        runtime,
        client,
        source,
        encoded,
        ..
    } = setup;
    let mut group = c.benchmark_group("precopy");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(*encoded));
    let request = PrecopyRequest {
        shard_count: SHARDS,
        shards: (0..SHARDS).collect(),
    };
    group.bench_function("10k x 1KiB", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let got = client
                    .precopy(source, 1, &request, Duration::from_secs(30), |_| true)
                    .await
                    .unwrap();
                assert!(got as usize >= SESSIONS);
            });
        });
    });
    group.finish();
}

fn push(c: &mut Criterion, setup: &Setup) {
    let Setup {
        runtime,
        client,
        receiver,
        encoded,
        ..
    } = setup;
    let records: Vec<SessionRecord> = (0..SESSIONS)
        .map(|i| SessionRecord {
            key: Bytes::from(format!("pushed-{i}")),
            version: 1,
            epoch: 1,
            dirty: true,
            value: SessionCodec::<String>::encode(&JsonCodec, &value(i)).unwrap(),
        })
        .collect();
    let mut group = c.benchmark_group("push");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(*encoded));
    let mut round = 0u64;
    group.bench_function("10k x 1KiB", |b| {
        b.iter_custom(|iterations| {
            let client = client.clone();
            let receiver = receiver.clone();
            let mut batches: Vec<Vec<Vec<SessionRecord>>> = Vec::new();
            for _ in 0..iterations {
                round += 1;
                // Fresh keys each round: every record is really installed.
                let fresh: Vec<SessionRecord> = records
                    .iter()
                    .map(|r| SessionRecord {
                        key: Bytes::from(format!("{round}-{}", String::from_utf8_lossy(&r.key))),
                        ..r.clone()
                    })
                    .collect();
                batches.push(fresh.chunks(256).map(<[SessionRecord]>::to_vec).collect());
            }
            runtime.block_on(async move {
                let started = Instant::now();
                for round in batches {
                    for batch in round {
                        let acks = client
                            .push(&receiver, 1, &batch, Duration::from_secs(30))
                            .await
                            .unwrap();
                        assert_eq!(acks.len(), batch.len());
                    }
                }
                started.elapsed()
            })
        });
    });
    group.finish();
}

fn transfer(c: &mut Criterion, setup: &Setup) {
    let Setup {
        runtime,
        client,
        source,
        source_store,
        ..
    } = setup;
    let mut group = c.benchmark_group("transfer");
    group.throughput(Throughput::Elements(1));
    let mut version = 1;
    group.bench_function("one key", |b| {
        b.iter_custom(|iterations| {
            let client = client.clone();
            let source = source.clone();
            let store = source_store.clone();
            let start_version = version;
            version += iterations;
            runtime.block_on(async move {
                let mut took = Duration::ZERO;
                for i in 0..iterations {
                    // Back at the source, one version newer than what it
                    // handed off last time (the tombstone gives way).
                    store
                        .install(MOVING, Versioned::new(start_version + i + 1, value(7)))
                        .await
                        .unwrap();
                    let wants = [(Bytes::from_static(MOVING), None)];
                    let started = Instant::now();
                    let answers = client
                        .transfer(&source, 1, &wants, Duration::from_secs(10))
                        .await
                        .unwrap();
                    took += started.elapsed();
                    assert!(
                        matches!(answers[0].1, TransferAnswer::State(_)),
                        "{answers:?}"
                    );
                }
                took
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
