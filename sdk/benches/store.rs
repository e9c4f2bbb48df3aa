//! Session store benchmarks: warm updates and reads (the session resident),
//! on one key and spread over 10 000 keys, for an 8-byte counter and a 1 KiB
//! state (an update clones the state, so its size shows), and 8 tasks
//! updating one key at once on a multi-thread runtime.
//!
//! Each iteration runs a batch of operations inside one `block_on`, so the
//! figures are per batch; criterion's throughput line gives operations per
//! second.
//!
//! `cargo bench -p locus --bench store`

#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a failed unwrap is a broken benchmark"
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use locus::store::{JsonCodec, Limits, SessionStore};
use tokio::runtime::{Builder, Runtime};

const BATCH: u64 = 1_000;
const KEYS: usize = 10_000;

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

fn counters() -> SessionStore<u64> {
    SessionStore::builder(JsonCodec, |_: &u64| 8)
        .build()
        .unwrap()
}

fn blobs() -> SessionStore<Vec<u8>> {
    SessionStore::builder(JsonCodec, Vec::len)
        .limits(Limits::builder().max_total_bytes(64 << 20).build().unwrap())
        .build()
        .unwrap()
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("session-{i}").into_bytes())
        .collect()
}

fn warm(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("store_warm");
    group.throughput(Throughput::Elements(BATCH));

    let store = counters();
    rt.block_on(store.get(b"k")).unwrap();
    group.bench_function(BenchmarkId::new("update", "counter_one_key"), |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    black_box(store.update(b"k", |n| *n += 1).await.unwrap());
                }
            });
        });
    });
    group.bench_function(BenchmarkId::new("read", "counter_one_key"), |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    black_box(store.read(b"k", |n| *n).await.unwrap());
                }
            });
        });
    });

    let keys = keys();
    rt.block_on(async {
        for key in &keys {
            store.get(key).await.unwrap();
        }
    });
    group.bench_function(BenchmarkId::new("update", "counter_10k_keys"), |b| {
        let mut next = 0;
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    next = (next + 1) % KEYS;
                    black_box(store.update(&keys[next], |n| *n += 1).await.unwrap());
                }
            });
        });
    });

    let blobs = blobs();
    rt.block_on(blobs.update(b"k", |v| v.resize(1024, 7)))
        .unwrap();
    group.bench_function(BenchmarkId::new("update", "1KiB_one_key"), |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BATCH {
                    black_box(blobs.update(b"k", |v| v[0] ^= 1).await.unwrap());
                }
            });
        });
    });
    group.finish();
}

fn contended(c: &mut Criterion) {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = counters();
    rt.block_on(store.get(b"k")).unwrap();
    let mut group = c.benchmark_group("store_contended");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function(BenchmarkId::new("update", "8_tasks_one_key"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            for _ in 0..BATCH / 8 {
                                store.update(b"k", |n| *n += 1).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
        });
    });
    group.finish();
}

criterion_group!(benches, warm, contended);
criterion_main!(benches);
