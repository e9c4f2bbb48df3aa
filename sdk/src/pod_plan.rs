//! What a ring means for one pod: pure functions, no I/O.
//!
//! Used by the transition driver, the handoff endpoints, the shutdown and the
//! snapshot (all of which `crate::driver` reaches as `driver::plan`); it
//! depends on the ring alone, so none of them imports another through it.
//!
//! * [`gained_shards`]: in a Warm ring, the shards this pod will own under
//!   `target` and does not serve now, grouped by the pod serving them now
//!   (where the pre-copy comes from).
//! * [`gained_from`]: in a Switch ring, whether this pod gained a key, and
//!   from which pod (the slot's `predecessor` if the slot changed pods,
//!   else the slot's pod under `previous`).
//! * [`is_losing`]: whether this pod must report `drained` for a Switch ring.
//! * [`owners_without`]: who would own this pod's shards if its slot were
//!   removed — the SIGTERM drain's destinations.

use std::collections::BTreeMap;

use crate::ring::{Assignment, Phase, Plan, PlanRequest, Pod, Ring, RingError, SlotState, plan};

/// The slot whose current pod is `pod`.
pub fn serving_slot(ring: &Ring, pod: &str) -> Option<u16> {
    ring.slots()
        .iter()
        .find(|slot| slot.pod.name == pod)
        .map(|slot| slot.index)
}

/// True if `ring` names `pod` in a slot: serving it, or as its predecessor
/// or successor.
pub fn names_pod(ring: &Ring, pod: &str) -> bool {
    let is = |p: Option<&Pod>| p.is_some_and(|p| p.name == pod);
    ring.slots().iter().any(|slot| {
        slot.pod.name == pod || is(slot.predecessor.as_ref()) || is(slot.successor.as_ref())
    })
}

/// The slot `pod` will serve after the switch of a Warm ring: the slot it is
/// the successor of, or the slot it serves now if nobody replaces it.
pub fn target_slot(ring: &Ring, pod: &str) -> Option<u16> {
    ring.slots()
        .iter()
        .find(|slot| slot.successor.as_ref().is_some_and(|s| s.name == pod))
        .or_else(|| {
            ring.slots()
                .iter()
                .find(|slot| slot.pod.name == pod && slot.successor.is_none())
        })
        .map(|slot| slot.index)
}

/// Shards this pod gains under the `target` of a Warm ring, by the pod that
/// serves each of them now (empty outside Warm).
pub fn gained_shards(ring: &Ring, pod: &str) -> BTreeMap<String, (Pod, Vec<u32>)> {
    let mut gained: BTreeMap<String, (Pod, Vec<u32>)> = BTreeMap::new();
    let (Some(target), Some(slot)) = (ring.target(), target_slot(ring, pod)) else {
        return gained;
    };
    let current = ring.current().as_slice();
    for (shard, &to) in target.as_slice().iter().enumerate() {
        if to != slot {
            continue;
        }
        let Some(from) = ring.slot(current[shard]) else {
            continue;
        };
        if from.pod.name == pod {
            continue;
        }
        gained
            .entry(from.pod.name.clone())
            .or_insert_with(|| (from.pod.clone(), Vec::new()))
            .1
            .push(shard as u32);
    }
    gained
}

/// True if `pod` serves shards under `ring` that another pod served under
/// `prior`, an older ring (it gained keys between the two: when `prior` is
/// not the Switch that moved them, this pod did not see that Switch). The
/// shard count may have doubled in between (shard `i` becomes `2i`, `2i+1`).
pub fn gained_between(prior: &Ring, ring: &Ring, pod: &str) -> bool {
    let (before, now) = (prior.shards().get(), ring.shards().get());
    if now < before || now % before != 0 {
        return false;
    }
    let factor = now / before;
    (0..now).any(|shard| {
        ring.owner_of_shard(shard)
            .is_some_and(|slot| slot.pod.name == pod)
            && prior
                .owner_of_shard(shard / factor)
                .is_some_and(|slot| slot.pod.name != pod)
    })
}

/// The pod that served `key` before the switch of a Switch ring.
pub fn previous_pod<'a>(ring: &'a Ring, key: &[u8]) -> Option<&'a Pod> {
    let slot = ring.previous_owner(key)?;
    Some(slot.predecessor.as_ref().unwrap_or(&slot.pod))
}

/// In a Switch ring: if `pod` owns `key` now and another pod served it
/// before the switch, that pod (where the key's state is pulled from).
pub fn gained_from<'a>(ring: &'a Ring, pod: &str, key: &[u8]) -> Option<&'a Pod> {
    if ring.phase() != Phase::Switch || ring.owner(key).pod.name != pod {
        return None;
    }
    previous_pod(ring, key).filter(|previous| previous.name != pod)
}

/// In a Switch ring: true if `pod` lost keys (it is a slot's predecessor, or
/// its slot held shards under `previous` that it does not hold now). Such a
/// pod reports `drained` once its lost keys are handed over.
pub fn is_losing(ring: &Ring, pod: &str) -> bool {
    let Some(previous) = ring.previous() else {
        return false;
    };
    if is_predecessor(ring, pod) {
        return true;
    }
    let Some(slot) = serving_slot(ring, pod) else {
        return false;
    };
    let current = ring.current().as_slice();
    previous
        .as_slice()
        .iter()
        .zip(current)
        .any(|(&before, &now)| before == slot && now != slot)
}

/// True if `pod` is a slot's predecessor (it is being drained).
fn is_predecessor(ring: &Ring, pod: &str) -> bool {
    ring.slots()
        .iter()
        .any(|slot| slot.predecessor.as_ref().is_some_and(|p| p.name == pod))
}

/// True if this pod's part in the ring is coming to an end under the
/// operator's coordination: a successor is warming its slot, its slot is
/// leaving or draining, or it is already only a predecessor (or not named).
pub fn is_retiring(ring: &Ring, pod: &str) -> bool {
    if is_predecessor(ring, pod) {
        return true;
    }
    match ring.slots().iter().find(|slot| slot.pod.name == pod) {
        None => true,
        Some(slot) => {
            slot.successor.is_some()
                || matches!(slot.state, SlotState::Leaving | SlotState::Draining)
        }
    }
}

/// True if `pod` owns no shard under `current`.
pub fn owns_nothing(ring: &Ring, pod: &str) -> bool {
    match serving_slot(ring, pod) {
        None => true,
        Some(slot) => !ring.current().as_slice().contains(&slot),
    }
}

/// The assignment if slot `removed` left: the operator's planner with the
/// slots holding shards under `current`, minus `removed` and minus
/// `Unavailable` slots, uncapped — the same slot set and planner the
/// operator's `Reroute` uses, so the SIGTERM drain sends each session where
/// the operator will route it.
pub fn owners_without(ring: &Ring, removed: u16) -> Result<Plan, RingError> {
    let current = ring.current();
    let mut survivors: Vec<u16> = ring
        .slots()
        .iter()
        .filter(|slot| {
            slot.index != removed
                && slot.state != SlotState::Unavailable
                && current.as_slice().contains(&slot.index)
        })
        .map(|slot| slot.index)
        .collect();
    survivors.sort_unstable();
    plan(&PlanRequest {
        namespace: ring.namespace(),
        service: ring.service(),
        shards: ring.shards(),
        vnodes: ring.vnodes(),
        previous: Some(current),
        slots: &survivors,
        max_moves: None,
    })
}

/// The owner pod of `shard` under `table` (a table of `ring`'s slots).
pub fn owner_in<'a>(ring: &'a Ring, table: &Assignment, shard: u32) -> Option<&'a Pod> {
    let slot = table.slot_of(shard)?;
    ring.slot(slot).map(|slot| &slot.pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{RingParts, ShardCount, Slot, Transition};

    fn pod(name: &str, i: u8) -> Pod {
        Pod {
            name: name.into(),
            uid: format!("uid-{name}"),
            address: format!("10.0.0.{i}:80").parse().unwrap(),
        }
    }

    fn slot(index: u16, name: &str) -> Slot {
        Slot {
            index,
            pod: pod(name, index as u8 + 1),
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        }
    }

    fn ring(slots: Vec<Slot>, current: Vec<u16>, transition: Transition) -> Ring {
        Ring::new(RingParts {
            namespace: "ns".into(),
            service: "svc".into(),
            version: 3,
            shards: ShardCount::new(current.len() as u32).unwrap(),
            vnodes: 8,
            slots,
            current: Assignment::new(current).unwrap(),
            transition,
        })
        .unwrap()
    }

    fn key_in_shard(ring: &Ring, shard: u32) -> Vec<u8> {
        (0..10_000)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|k| ring.shard_of(k) == shard)
            .unwrap()
    }

    #[test]
    fn a_joining_slot_gains_shards_from_their_current_pods() {
        let mut joining = slot(2, "c");
        joining.state = SlotState::Joining;
        let r = ring(
            vec![slot(0, "a"), slot(1, "b"), joining],
            vec![0, 1, 0, 1],
            Transition::Warm {
                target: Assignment::new(vec![0, 2, 2, 1]).unwrap(),
            },
        );
        let gained = gained_shards(&r, "c");
        assert_eq!(gained.len(), 2);
        assert_eq!(gained["a"].1, vec![2]);
        assert_eq!(gained["b"].1, vec![1]);
        assert!(gained_shards(&r, "a").is_empty());
        assert!(!is_retiring(&r, "a"));
    }

    #[test]
    fn a_successor_warms_its_whole_slot_and_its_predecessor_drains() {
        let mut replaced = slot(1, "b");
        replaced.successor = Some(pod("b2", 9));
        let warm = ring(
            vec![slot(0, "a"), replaced],
            vec![0, 1, 1, 0],
            Transition::Warm {
                target: Assignment::new(vec![0, 1, 1, 0]).unwrap(),
            },
        );
        let gained = gained_shards(&warm, "b2");
        assert_eq!(gained["b"].1, vec![1, 2]);
        assert!(gained_shards(&warm, "b").is_empty(), "b is being replaced");
        assert!(is_retiring(&warm, "b"));

        let mut switched = slot(1, "b2");
        switched.pod = pod("b2", 9);
        switched.predecessor = Some(pod("b", 2));
        let switch = ring(
            vec![slot(0, "a"), switched],
            vec![0, 1, 1, 0],
            Transition::Switch {
                previous: Assignment::new(vec![0, 1, 1, 0]).unwrap(),
            },
        );
        let key = key_in_shard(&switch, 1);
        assert_eq!(gained_from(&switch, "b2", &key).unwrap().name, "b");
        assert!(gained_from(&switch, "a", &key).is_none());
        let other = key_in_shard(&switch, 0);
        assert!(gained_from(&switch, "a", &other).is_none(), "a kept it");
        assert!(is_losing(&switch, "b"));
        assert!(!is_losing(&switch, "a"));
        assert!(!is_losing(&switch, "b2"));
        assert!(owns_nothing(&switch, "b"));
    }

    #[test]
    fn a_switch_moves_keys_from_the_previous_owner() {
        let switch = ring(
            vec![slot(0, "a"), slot(1, "b")],
            vec![0, 1, 1, 1],
            Transition::Switch {
                previous: Assignment::new(vec![0, 1, 0, 1]).unwrap(),
            },
        );
        let moved = key_in_shard(&switch, 2);
        assert_eq!(gained_from(&switch, "b", &moved).unwrap().name, "a");
        assert!(is_losing(&switch, "a"));
        assert!(!is_losing(&switch, "b"));
        assert_eq!(previous_pod(&switch, &moved).unwrap().name, "a");
    }

    #[test]
    fn owners_without_a_slot_follow_the_planner() {
        let r = ring(
            vec![slot(0, "a"), slot(1, "b"), slot(2, "c")],
            (0..16u16).map(|s| s % 3).collect(),
            Transition::Stable,
        );
        let plan = owners_without(&r, 1).unwrap();
        let table = plan.assignment.as_slice();
        assert!(!table.contains(&1));
        for (shard, &slot) in r.current().as_slice().iter().enumerate() {
            if slot != 1 {
                assert_eq!(table[shard], slot, "staying slots keep their shards");
            }
        }
        let key = key_in_shard(&r, 1);
        let shard = r.shard_of(&key);
        assert_ne!(owner_in(&r, &plan.assignment, shard).unwrap().name, "b");
    }
}
