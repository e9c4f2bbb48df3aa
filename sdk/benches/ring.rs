//! Ring benchmarks: the routing decision (`Ring::owner`) at 100 and 1000
//! members beside the `hashring` crate's own `HashRing::get` over the same
//! members × vnodes, the planner for a 100 → 101 step and a fresh 1000-slot
//! table, and parsing a ring document.
//!
//! `cargo bench -p locus --bench ring`

#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a failed unwrap is a broken benchmark"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hashring::HashRing;
use locus::ring::{
    Assignment, PlanRequest, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState,
    Transition, plan,
};

const VNODES: u32 = 128;

fn slots(members: u16) -> Vec<u16> {
    (0..members).collect()
}

fn fresh(members: u16) -> Assignment {
    plan(&PlanRequest::new("default", "bench", &slots(members)))
        .unwrap()
        .assignment
}

fn ring(members: u16) -> Ring {
    Ring::new(RingParts {
        namespace: "default".to_owned(),
        service: "bench".to_owned(),
        version: 1,
        shards: ShardCount::DEFAULT,
        vnodes: VNODES,
        slots: (0..members)
            .map(|index| Slot {
                index,
                pod: Pod {
                    name: format!("bench-{index}-abcde"),
                    uid: format!("5f1c2a4e-0000-4000-8000-{index:012}"),
                    address: format!("10.0.{}.{}:8080", index / 250, index % 250 + 1)
                        .parse()
                        .unwrap(),
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
            .collect(),
        current: fresh(members),
        transition: Transition::Stable,
    })
    .unwrap()
}

/// A node of the `hashring` comparison ring: token `index` of `slot`.
#[derive(Debug, Clone, Copy, Hash, PartialEq)]
struct VNode {
    slot: u16,
    index: u32,
}

fn keys() -> Vec<String> {
    (0..1024).map(|i| format!("session-{i}")).collect()
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("lookup");
    for members in [100u16, 1000] {
        let ring = ring(members);
        group.bench_with_input(BenchmarkId::new("locus", members), &ring, |b, ring| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(ring.owner(black_box(keys[i].as_bytes())).index)
            });
        });
        let mut baseline = HashRing::new();
        baseline.batch_add(
            (0..members)
                .flat_map(|slot| (0..VNODES).map(move |index| VNode { slot, index }))
                .collect(),
        );
        group.bench_with_input(
            BenchmarkId::new("hashring", members),
            &baseline,
            |b, baseline| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(baseline.get(black_box(&keys[i].as_bytes())).unwrap().slot)
                });
            },
        );
    }
    group.finish();
}

fn planner(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    let before = fresh(100);
    let after = slots(101);
    group.bench_function("grow_100_to_101", |b| {
        b.iter(|| {
            plan(black_box(&PlanRequest {
                previous: Some(&before),
                ..PlanRequest::new("default", "bench", &after)
            }))
            .unwrap()
        });
    });
    let thousand = slots(1000);
    group.bench_function("fresh_1000", |b| {
        b.iter(|| plan(black_box(&PlanRequest::new("default", "bench", &thousand))).unwrap());
    });
    group.finish();
}

fn document(c: &mut Criterion) {
    let bytes = RingDocument::to_json(&ring(100)).unwrap();
    c.bench_function("document/parse_4096_shards_100_slots", |b| {
        b.iter(|| RingDocument::from_json(black_box(&bytes)).unwrap());
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = lookup, planner, document
}
criterion_main!(benches);
