//! Layer overhead: one request through [`Router`] (ring snapshot, key
//! extraction, owner lookup, per-owner permit, URI rewrite, body buffering,
//! timeout) and through [`Ownership`] (key extraction, owner lookup, the
//! owner-serves path), each beside the bare in-memory inner service that
//! answers at once — in the same run, on a current-thread tokio runtime.
//!
//! `cargo bench -p locus --bench layer`

#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a failed unwrap is a broken benchmark"
)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use locus::client::RouterBody;
use locus::{MissingKey, OwnershipLayer, RouterLayer, StaticRingSource, headers};
use tower::{Layer, ServiceExt, service_fn};

mod common;

use common::ring;

fn request<B>(key: &str, body: B) -> Request<B> {
    Request::post("/rooms/messages?limit=10")
        .header(headers::SESSION, key)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn layer_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys: Vec<String> = (0..1024).map(|i| format!("session-{i}")).collect();
    let payload = Bytes::from_static(b"{\"text\":\"hello\"}");

    let mut group = c.benchmark_group("layer");
    group.measurement_time(Duration::from_secs(5));

    // Client side: the bare inner service vs the router in front of it.
    let bare = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let mut i = 0usize;
    group.bench_function("client/bare", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let req = request(&keys[i], Full::new(payload.clone()));
            black_box(rt.block_on(bare.oneshot(req)).unwrap())
        });
    });
    let source = StaticRingSource::with_ring(ring(None));
    let router =
        RouterLayer::new(&source).layer(service_fn(|_: Request<RouterBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    group.bench_function("client/router", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let req = request(&keys[i], Full::new(payload.clone()));
            black_box(rt.block_on(router.clone().oneshot(req)).unwrap())
        });
    });

    // Server side: the bare handler vs the ownership layer on the path
    // where this pod owns the key (every key: slot 0 owns all shards).
    let handler = service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    group.bench_function("server/bare", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let req = request(&keys[i], Full::new(payload.clone()));
            black_box(rt.block_on(handler.oneshot(req)).unwrap())
        });
    });
    let source = StaticRingSource::with_ring(ring(Some(0)));
    let ownership = rt.block_on(async {
        OwnershipLayer::builder("bench-0-abcde", &source)
            .missing_key(MissingKey::Reject)
            .build()
            .unwrap()
            .layer(handler)
    });
    group.bench_function("server/ownership", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let req = request(&keys[i], Full::new(payload.clone()));
            let response = rt.block_on(ownership.clone().oneshot(req)).unwrap();
            assert_eq!(response.status(), 200);
            black_box(response)
        });
    });
    group.finish();
}

criterion_group!(benches, layer_overhead);
criterion_main!(benches);
