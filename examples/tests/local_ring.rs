//! `examples/ring.local.json`, the ring the README uses to run three sample
//! pods on one machine, is what `locus::ring` and the operator's planner
//! produce for them (regenerate with `LOCUS_UPDATE_RING=1`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;

use locus::ring::{
    PlanRequest, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState, Transition, plan,
};

fn local_ring() -> Ring {
    let slots = [0u16, 1, 2];
    let planned = plan(&PlanRequest::new("default", "ledger", &slots)).unwrap();
    Ring::new(RingParts {
        namespace: "default".into(),
        service: "ledger".into(),
        version: 1,
        shards: ShardCount::DEFAULT,
        vnodes: locus::ring::DEFAULT_VNODES,
        slots: slots
            .iter()
            .map(|&i| Slot {
                index: i,
                pod: Pod {
                    name: format!("ledger-{i}-local"),
                    uid: format!("local-{i}"),
                    address: format!("127.0.0.1:{}", 8081 + i).parse().unwrap(),
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
            .collect(),
        current: planned.assignment,
        transition: Transition::Stable,
    })
    .unwrap()
}

#[test]
fn the_committed_local_ring_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ring.local.json");
    let mut expected = RingDocument::to_json(&local_ring()).unwrap();
    if !expected.ends_with(b"\n") {
        expected.push(b'\n');
    }
    if std::env::var("LOCUS_UPDATE_RING").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &expected).unwrap();
    }
    let committed = std::fs::read(&path).expect("examples/ring.local.json is missing");
    assert!(
        committed == expected,
        "examples/ring.local.json is stale: run LOCUS_UPDATE_RING=1 cargo test -p locus-examples --test local_ring"
    );
    // And it is a ring the SDK reads back, with three active slots.
    let ring = RingDocument::from_json(&committed).unwrap();
    assert_eq!(ring.slots().len(), 3);
    assert_eq!(ring.current().counts().len(), 3);
}
