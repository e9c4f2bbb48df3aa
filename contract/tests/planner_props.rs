//! Properties of the ring planner, checked on random shard counts, slot sets
//! (sparse indices included), vnode counts and previous tables:
//! balance, minimal moves, no move between staying slots, determinism, and
//! convergence of capped steps to the uncapped plan.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use locus_contract::ring::{Assignment, Plan, PlanRequest, ShardCount, plan};
use proptest::prelude::*;

fn request<'a>(
    shards: ShardCount,
    vnodes: u32,
    previous: Option<&'a Assignment>,
    slots: &'a [u16],
    cap: Option<u32>,
) -> PlanRequest<'a> {
    PlanRequest {
        namespace: "prop-ns",
        service: "prop-svc",
        shards,
        vnodes,
        previous,
        slots,
        max_moves: cap.and_then(NonZeroU32::new),
    }
}

fn run(
    shards: ShardCount,
    vnodes: u32,
    previous: Option<&Assignment>,
    slots: &[u16],
    cap: Option<u32>,
) -> Plan {
    plan(&request(shards, vnodes, previous, slots, cap)).expect("valid planner input")
}

fn counts(table: &Assignment) -> BTreeMap<u16, u32> {
    table.counts()
}

/// Every slot of `slots` holds floor(S/N) or ceil(S/N) shards and no other slot holds any.
fn check_balanced(table: &Assignment, slots: &[u16]) -> Result<(), TestCaseError> {
    let s = table.shard_count().get();
    let n = slots.len() as u32;
    let counts = counts(table);
    for slot in counts.keys() {
        prop_assert!(
            slots.contains(slot),
            "slot {slot} outside the set holds shards"
        );
    }
    for slot in slots {
        let c = counts.get(slot).copied().unwrap_or(0);
        prop_assert!(
            c == s / n || c == s.div_ceil(n),
            "slot {slot} holds {c}, S={s} N={n}"
        );
    }
    Ok(())
}

/// The fewest moves that can balance `previous` over `slots`: every shard of
/// a slot outside the set, every shard above `q + 1`, and one shard from each
/// of the slots at `q + 1` that cannot all keep it (only `r` may).
fn minimal_moves(previous: &Assignment, slots: &[u16]) -> u32 {
    let s = previous.shard_count().get();
    let n = slots.len() as u32;
    let (q, r) = (s / n, s % n);
    let counts = counts(previous);
    let leaving: u32 = counts
        .iter()
        .filter(|(slot, _)| !slots.contains(slot))
        .map(|(_, c)| c)
        .sum();
    let staying: Vec<u32> = slots
        .iter()
        .map(|slot| counts.get(slot).copied().unwrap_or(0))
        .collect();
    let above: u32 = staying.iter().map(|&c| c.saturating_sub(q + 1)).sum();
    let high = staying.iter().filter(|&&c| c > q).count() as u32;
    leaving + above + high.saturating_sub(r)
}

/// Strategy: shard count, vnodes, a base slot set, and a change (slots that
/// join, slots that leave) with sparse indices below 300.
fn scenario() -> impl Strategy<Value = (ShardCount, u32, Vec<u16>, Vec<u16>)> {
    (
        0u32..=10,
        1u32..=48,
        prop::collection::btree_set(0u16..300, 1..=24),
        prop::collection::btree_set(0u16..300, 1..=24),
    )
        .prop_map(|(bits, vnodes, before, after)| {
            let shards = ShardCount::new(1 << bits).expect("power of two in bounds");
            (
                shards,
                vnodes,
                before.into_iter().collect(),
                after.into_iter().collect(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Fresh tables and tables after any change are floor/ceil balanced.
    #[test]
    fn balance((shards, vnodes, before, after) in scenario()) {
        let base = run(shards, vnodes, None, &before, None);
        check_balanced(&base.assignment, &before)?;
        prop_assert_eq!(base.moved, shards.get());
        prop_assert_eq!(base.remaining, 0);
        let next = run(shards, vnodes, Some(&base.assignment), &after, None);
        check_balanced(&next.assignment, &after)?;
        prop_assert_eq!(next.remaining, 0);
        prop_assert_eq!(next.moved as usize, base.assignment.moves_to(&next.assignment).unwrap().count());
    }

    /// Growth by k slots: every move lands on a new slot, and exactly as many
    /// shards move as the new slots end up holding, which is the minimum.
    #[test]
    fn growth_is_minimal((shards, vnodes, before, _) in scenario(), k in 1usize..=4) {
        let base = run(shards, vnodes, None, &before, None);
        let mut after = before.clone();
        let mut candidate = 0u16;
        let mut new_slots = Vec::new();
        while new_slots.len() < k {
            if !after.contains(&candidate) {
                after.push(candidate);
                new_slots.push(candidate);
            }
            candidate += 1;
        }
        let next = run(shards, vnodes, Some(&base.assignment), &after, None);
        check_balanced(&next.assignment, &after)?;
        let gained: u32 = new_slots.iter().map(|&s| next.assignment.shards_of(s).count() as u32).sum();
        prop_assert_eq!(next.moved, gained);
        prop_assert_eq!(next.moved, minimal_moves(&base.assignment, &after));
        for m in base.assignment.moves_to(&next.assignment).unwrap() {
            prop_assert!(new_slots.contains(&m.to), "{:?} lands on an old slot", m);
        }
    }

    /// Shrink by j slots: exactly the leaving slots' shards move, nothing else.
    #[test]
    fn shrink_moves_only_leaving_shards((shards, vnodes, before, _) in scenario(), pick in any::<prop::sample::Index>(), j in 1usize..=3) {
        prop_assume!(before.len() > j);
        let base = run(shards, vnodes, None, &before, None);
        let start = pick.index(before.len());
        let leaving: BTreeSet<u16> = (0..j).map(|i| before[(start + i) % before.len()]).collect();
        let after: Vec<u16> = before.iter().copied().filter(|s| !leaving.contains(s)).collect();
        let next = run(shards, vnodes, Some(&base.assignment), &after, None);
        check_balanced(&next.assignment, &after)?;
        let leaving_shards: u32 = leaving.iter().map(|&s| base.assignment.shards_of(s).count() as u32).sum();
        prop_assert_eq!(next.moved, leaving_shards);
        for m in base.assignment.moves_to(&next.assignment).unwrap() {
            prop_assert!(leaving.contains(&m.from), "{:?} leaves a staying slot", m);
        }
    }

    /// Any change from a balanced table (joins and leaves together): no shard
    /// moves between two slots that both stay, and the move count is minimal.
    #[test]
    fn no_move_between_staying_slots((shards, vnodes, before, after) in scenario()) {
        let base = run(shards, vnodes, None, &before, None);
        let next = run(shards, vnodes, Some(&base.assignment), &after, None);
        for m in base.assignment.moves_to(&next.assignment).unwrap() {
            let from_stays = after.contains(&m.from);
            let to_stays = before.contains(&m.to);
            prop_assert!(!(from_stays && to_stays), "{:?} between staying slots ({:?} -> {:?})", m, before, after);
        }
        prop_assert_eq!(next.moved, minimal_moves(&base.assignment, &after));
    }

    /// From an arbitrary (unbalanced) table: still balanced and minimal, and
    /// every slot only gains or only loses.
    #[test]
    fn arbitrary_previous_table((shards, vnodes, _, after) in scenario(), seed in prop::collection::vec(0u16..300, 1..=1024)) {
        let table: Vec<u16> = (0..shards.len()).map(|i| seed[i % seed.len()]).collect();
        let previous = Assignment::new(table).unwrap();
        let next = run(shards, vnodes, Some(&previous), &after, None);
        check_balanced(&next.assignment, &after)?;
        prop_assert_eq!(next.moved, minimal_moves(&previous, &after));
        let moves: Vec<_> = previous.moves_to(&next.assignment).unwrap().collect();
        let givers: BTreeSet<u16> = moves.iter().map(|m| m.from).collect();
        let takers: BTreeSet<u16> = moves.iter().map(|m| m.to).collect();
        prop_assert!(givers.is_disjoint(&takers), "a slot both gave and took: {:?} / {:?}", givers, takers);
    }

    /// Same input, same output; the order of the slot list does not matter.
    #[test]
    fn determinism((shards, vnodes, before, after) in scenario()) {
        let a = run(shards, vnodes, None, &before, None);
        let reversed: Vec<u16> = before.iter().rev().copied().collect();
        let b = run(shards, vnodes, None, &reversed, None);
        prop_assert_eq!(&a, &b);
        let x = run(shards, vnodes, Some(&a.assignment), &after, None);
        let y = run(shards, vnodes, Some(&b.assignment), &after, None);
        prop_assert_eq!(x, y);
    }

    /// Capped steps: each moves at most `cap` shards, no shard moves twice,
    /// and after ceil(moves / cap) steps the table is exactly the uncapped one.
    #[test]
    fn cap_converges((shards, vnodes, before, after) in scenario(), cap in 1u32..=64) {
        let base = run(shards, vnodes, None, &before, None);
        let full = run(shards, vnodes, Some(&base.assignment), &after, None);
        let mut table = base.assignment.clone();
        let mut moved_shards = BTreeSet::new();
        let mut steps = 0u32;
        loop {
            let step = run(shards, vnodes, Some(&table), &after, Some(cap));
            prop_assert!(step.moved <= cap);
            for m in table.moves_to(&step.assignment).unwrap() {
                prop_assert!(moved_shards.insert(m.shard), "shard {} moved twice", m.shard);
                prop_assert_eq!(Some(m.to), full.assignment.slot_of(m.shard));
            }
            table = step.assignment;
            steps += 1;
            if step.remaining == 0 {
                break;
            }
            prop_assert!(step.moved == cap);
            prop_assert!(steps <= full.moved, "no convergence");
        }
        prop_assert_eq!(steps, full.moved.div_ceil(cap).max(1));
        prop_assert_eq!(&table, &full.assignment);
        check_balanced(&table, &after)?;
    }
}
