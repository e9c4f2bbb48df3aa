//! The ring the request-path benchmarks route by: three active slots on
//! `10.0.0.1..3:8080` (never contacted: the inner services answer in
//! process), planned at the default shard count.

use locus::ring::{
    Assignment, PlanRequest, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition, plan,
};

/// Slots in the benchmark ring.
const MEMBERS: u16 = 3;

/// The benchmark ring; with `owner_of_all`, every shard on that slot.
pub fn ring(owner_of_all: Option<u16>) -> Ring {
    let slots: Vec<u16> = (0..MEMBERS).collect();
    let assignment = match owner_of_all {
        Some(slot) => Assignment::uniform(ShardCount::DEFAULT, slot),
        None => {
            plan(&PlanRequest::new("default", "bench", &slots))
                .unwrap()
                .assignment
        }
    };
    Ring::new(RingParts {
        namespace: "default".to_owned(),
        service: "bench".to_owned(),
        version: 1,
        shards: ShardCount::DEFAULT,
        vnodes: 128,
        slots: slots
            .iter()
            .map(|&index| Slot {
                index,
                pod: Pod {
                    name: format!("bench-{index}-abcde"),
                    uid: format!("uid-{index}"),
                    address: format!("10.0.0.{}:8080", index + 1).parse().unwrap(),
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
            .collect(),
        current: assignment,
        transition: Transition::Stable,
    })
    .unwrap()
}
