//! The router's own cost per request: one request through [`Router`] in
//! front of an inner service that answers at once (no I/O), alone on a
//! current-thread runtime (`router/sequential`) and 64 at a time on a
//! two-worker runtime (`router/concurrent-64`, where state shared by all
//! requests — the per-owner limits, the retry budget, the ring — is touched
//! from both threads).
//!
//! `cargo bench -p locus --bench router`

#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a failed unwrap is a broken benchmark"
)]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use locus::client::RouterBody;
use locus::{RouterLayer, StaticRingSource, headers};
use tower::{Layer, ServiceExt, service_fn};

mod common;

use common::ring;

const IN_FLIGHT: u64 = 64;

fn request(key: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::post("/sessions/abc/events?x=1")
        .header(headers::SESSION, key)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap()
}

fn router_overhead(c: &mut Criterion) {
    let keys: Arc<Vec<String>> = Arc::new((0..1024).map(|i| format!("session-{i}")).collect());
    let payload = Bytes::from_static(b"{\"seq\":1,\"kind\":\"fee\",\"amount\":-3}");
    let source = StaticRingSource::with_ring(ring(None));
    let router = RouterLayer::new(&source)
        .owner_concurrency(4096)
        .layer(service_fn(|_: Request<RouterBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));

    let mut group = c.benchmark_group("router");
    group.measurement_time(Duration::from_secs(5));

    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut i = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function("sequential", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let req = request(&keys[i], payload.clone());
            black_box(current.block_on(router.clone().oneshot(req)).unwrap())
        });
    });

    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    group.throughput(Throughput::Elements(IN_FLIGHT));
    group.bench_function("concurrent-64", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                threads.block_on(async {
                    let tasks: Vec<_> = (0..IN_FLIGHT)
                        .map(|t| {
                            let router = router.clone();
                            let keys = Arc::clone(&keys);
                            let req = request(
                                &keys[usize::try_from(t).unwrap() % keys.len()],
                                payload.clone(),
                            );
                            tokio::spawn(async move { router.oneshot(req).await.unwrap() })
                        })
                        .collect();
                    for task in tasks {
                        black_box(task.await.unwrap());
                    }
                });
            }
            started.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, router_overhead);
criterion_main!(benches);
