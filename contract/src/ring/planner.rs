//! The assignment planner: previous table + slot set after a change → next
//! table. Pure and deterministic; the operator calls it for every membership
//! change.
//!
//! # Rules
//!
//! With `N` slots in the new set, `q = S / N` and `r = S % N`, the result
//! gives every slot `q` or `q + 1` shards, exactly `r` of them `q + 1`
//! (floor/ceil balance), and moves the fewest shards that allows:
//!
//! * a shard moves only from a **giver** to a **receiver**; a giver is a slot
//!   not in the new set (leaving, or "nobody" for a fresh service), a slot
//!   above `q + 1`, or a slot at `q + 1` while more than `r` slots are at
//!   `q + 1` or above; a receiver is a slot of the new set below `q`, or at
//!   `q` while fewer than `r` slots are at `q + 1` or above. No slot is ever
//!   both, so a slot only gains or only loses.
//! * which shards move, and where, follows consistent hashing with bounded
//!   loads: every shard has a preference order of slots ([`SlotRing`], from
//!   the shard's start point `shard << (64 - log2 S)`). In round `k = 0, 1, …`
//!   every shard still on a giver, in ascending shard order, looks at its
//!   `k`-th preferred slot and moves there if that slot is a receiver. So a new
//!   slot first takes the shards that prefer it most, and a leaving slot's
//!   shard goes to its next preference with room.
//!
//! From a balanced table (any table this planner produced uncapped), growth
//! moves shards only onto the new slots, and shrink moves only the leaving
//! slots' shards: no shard moves between two slots that both stay. Only an
//! unbalanced previous table (written by hand, or mid-way through capped
//! steps) has staying slots above `q + 1` that give to staying slots below `q`.
//!
//! # Capped steps
//!
//! With `max_moves = c`, the step applies the first `c` moves of the uncapped
//! plan in the order the rounds made them and leaves every other shard where
//! it is. Planning again from that table with the same slot set makes exactly
//! the remaining moves of the same plan, so repeated capped steps converge to
//! the uncapped table after `ceil(moves / c)` steps, each shard moving at
//! most once. Mid-way, every slot's count lies between its count before the
//! change and its final count (a slot never overshoots, no shard moves twice),
//! but floor/ceil balance holds only at the end.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use super::{Assignment, MAX_SLOTS, MAX_VNODES, RingError, ShardCount, SlotRing};

/// Input of [`plan`].
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// Namespace of the service (part of the token names).
    pub namespace: &'a str,
    /// Name of the service (part of the token names).
    pub service: &'a str,
    /// Shard count `S`.
    pub shards: ShardCount,
    /// Tokens per slot on the preference ring.
    pub vnodes: u32,
    /// The table before the change (`current` of the last ring), or `None`
    /// for a fresh service. Must have `S` entries; entries naming slots not in
    /// `slots` are the leaving slots' shards.
    pub previous: Option<&'a Assignment>,
    /// The slots that hold shards after the change (any order, no duplicates,
    /// each below [`MAX_SLOTS`]).
    pub slots: &'a [u16],
    /// At most this many shards move in this step (ignored for a fresh
    /// service, which has no partial table).
    pub max_moves: Option<NonZeroU32>,
}

impl<'a> PlanRequest<'a> {
    /// A request for a fresh service with the default shard count and
    /// [`DEFAULT_VNODES`](super::DEFAULT_VNODES); set the other fields with
    /// struct update syntax.
    pub fn new(namespace: &'a str, service: &'a str, slots: &'a [u16]) -> Self {
        Self {
            namespace,
            service,
            shards: ShardCount::DEFAULT,
            vnodes: super::DEFAULT_VNODES,
            previous: None,
            slots,
            max_moves: None,
        }
    }
}

/// Shards held by one slot before and after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotCount {
    /// The slot.
    pub slot: u16,
    /// Shards held under the previous table (0 for a fresh service).
    pub before: u32,
    /// Shards held under the planned table.
    pub after: u32,
}

/// Output of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The next table.
    pub assignment: Assignment,
    /// Shards whose slot changed in this step (`S` for a fresh service).
    pub moved: u32,
    /// Moves the uncapped plan still needs after this step; 0 when the table
    /// is balanced for the slot set.
    pub remaining: u32,
    /// Per-slot counts, for every slot of the new set and every slot the
    /// previous table used, ascending by slot.
    pub slots: Vec<SlotCount>,
}

impl Plan {
    /// True when this step reached the balanced table (nothing remaining).
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }
}

/// Slot value meaning "no owner yet" (fresh service); never a valid slot
/// because slots are below [`MAX_SLOTS`].
const NOBODY: u16 = u16::MAX;

/// Plans the next assignment; see the module documentation for the rules.
pub fn plan(request: &PlanRequest<'_>) -> Result<Plan, RingError> {
    let shards = request.shards;
    if !(1..=MAX_VNODES).contains(&request.vnodes) {
        return Err(RingError::InvalidVnodes {
            vnodes: u64::from(request.vnodes),
        });
    }
    if request.slots.is_empty() {
        return Err(RingError::EmptySlotSet);
    }
    let mut sorted = request.slots.to_vec();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        if pair[0] == pair[1] {
            return Err(RingError::DuplicateSlot { slot: pair[0] });
        }
    }
    if let Some(&slot) = sorted.iter().find(|&&s| usize::from(s) >= MAX_SLOTS) {
        return Err(RingError::SlotOutOfRange { slot });
    }
    if let Some(previous) = request.previous
        && previous.shard_count() != shards
    {
        return Err(RingError::TableLength {
            table: "previous (planner input)",
            found: previous.shard_count().len(),
            expected: shards.len(),
        });
    }

    let start: Vec<u16> = match request.previous {
        Some(previous) => previous.as_slice().to_vec(),
        None => vec![NOBODY; shards.len()],
    };
    let ring = SlotRing::new(request.namespace, request.service, &sorted, request.vnodes);
    let moves = Rounds::new(request.shards, &sorted, &start).run(&ring);

    let applied = match (request.previous, request.max_moves) {
        (Some(_), Some(cap)) => moves.len().min(cap.get() as usize),
        _ => moves.len(),
    };
    let mut table = start;
    for &(shard, to) in &moves[..applied] {
        table[shard as usize] = to;
    }
    let assignment = Assignment::new(table)?;

    let none = |slot| SlotCount {
        slot,
        before: 0,
        after: 0,
    };
    let mut counts: BTreeMap<u16, SlotCount> =
        sorted.iter().map(|&slot| (slot, none(slot))).collect();
    if let Some(previous) = request.previous {
        for (slot, before) in previous.counts() {
            counts.entry(slot).or_insert_with(|| none(slot)).before = before;
        }
    }
    for (slot, after) in assignment.counts() {
        counts.entry(slot).or_insert_with(|| none(slot)).after = after;
    }
    Ok(Plan {
        assignment,
        moved: applied as u32,
        remaining: (moves.len() - applied) as u32,
        slots: counts.into_values().collect(),
    })
}

/// State of the round-based bounded-loads assignment.
struct Rounds {
    shards: ShardCount,
    owner: Vec<u16>,
    /// Shard count of each slot of the new set, indexed by slot.
    count: Vec<u32>,
    in_set: Vec<bool>,
    q: u32,
    r: u32,
    /// Slots of the new set holding `q + 1` shards or more.
    high: u32,
}

impl Rounds {
    fn new(shards: ShardCount, slots: &[u16], start: &[u16]) -> Self {
        let size = slots.last().map_or(0, |&s| usize::from(s) + 1);
        let mut in_set = vec![false; size];
        for &slot in slots {
            in_set[usize::from(slot)] = true;
        }
        let mut count = vec![0u32; size];
        for &slot in start {
            if in_set.get(usize::from(slot)).copied().unwrap_or(false) {
                count[usize::from(slot)] += 1;
            }
        }
        let n = slots.len() as u32;
        let q = shards.get() / n;
        let r = shards.get() % n;
        let high = slots.iter().filter(|&&s| count[usize::from(s)] > q).count() as u32;
        Self {
            shards,
            owner: start.to_vec(),
            count,
            in_set,
            q,
            r,
            high,
        }
    }

    fn in_set(&self, slot: u16) -> bool {
        self.in_set.get(usize::from(slot)).copied().unwrap_or(false)
    }

    fn is_giver(&self, slot: u16) -> bool {
        if !self.in_set(slot) {
            return true;
        }
        let c = self.count[usize::from(slot)];
        c > self.q + 1 || (c == self.q + 1 && self.high > self.r)
    }

    fn is_receiver(&self, slot: u16) -> bool {
        if !self.in_set(slot) {
            return false;
        }
        let c = self.count[usize::from(slot)];
        c < self.q || (c == self.q && self.high < self.r)
    }

    fn apply(&mut self, shard: u32, from: u16, to: u16) {
        if self.in_set(from) {
            let c = &mut self.count[usize::from(from)];
            if *c == self.q + 1 {
                self.high -= 1;
            }
            *c -= 1;
        }
        let c = &mut self.count[usize::from(to)];
        if *c == self.q {
            self.high += 1;
        }
        *c += 1;
        self.owner[shard as usize] = to;
    }

    /// Runs rounds until no shard is left on a giver; returns the moves as
    /// `(shard, to)` in the order they were made.
    fn run(mut self, ring: &SlotRing) -> Vec<(u32, u16)> {
        let mut candidates: Vec<(u32, super::tokens::Preferences<'_>)> = (0..self.shards.get())
            .filter(|&shard| self.is_giver(self.owner[shard as usize]))
            .map(|shard| (shard, ring.preferences(self.shards.start(shard))))
            .collect();
        let mut moves = Vec::new();
        while !candidates.is_empty() {
            candidates.retain_mut(|(shard, preferences)| {
                let from = self.owner[*shard as usize];
                // Giving is monotone: a slot that stopped being a giver never
                // becomes one again, so the shard is done.
                if !self.is_giver(from) {
                    return false;
                }
                let Some(to) = preferences.next() else {
                    return false;
                };
                if to != from && self.is_receiver(to) {
                    self.apply(*shard, from, to);
                    moves.push((*shard, to));
                    return false;
                }
                true
            });
        }
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(shards: u32, slots: &[u16]) -> Plan {
        plan(&PlanRequest {
            namespace: "default",
            service: "chat",
            shards: ShardCount::new(shards).unwrap(),
            vnodes: 16,
            previous: None,
            slots,
            max_moves: None,
        })
        .unwrap()
    }

    fn step(previous: &Assignment, slots: &[u16], cap: Option<u32>) -> Plan {
        plan(&PlanRequest {
            namespace: "default",
            service: "chat",
            shards: previous.shard_count(),
            vnodes: 16,
            previous: Some(previous),
            slots,
            max_moves: cap.and_then(NonZeroU32::new),
        })
        .unwrap()
    }

    fn assert_balanced(a: &Assignment, slots: &[u16]) {
        let s = a.shard_count().get();
        let n = slots.len() as u32;
        let counts = a.counts();
        assert_eq!(
            counts.keys().filter(|k| !slots.contains(k)).count(),
            0,
            "{counts:?}"
        );
        for &slot in slots {
            let c = counts.get(&slot).copied().unwrap_or(0);
            assert!(
                c == s / n || c == s.div_ceil(n),
                "slot {slot} has {c}: {counts:?}"
            );
        }
    }

    /// Exact expectations for small rings: S = 8 and 16, N = 1..=4, fresh and
    /// after growth and shrink by one. `moved: None` means "exactly the
    /// leaving slot's shards" (how many depends on which slots got `q + 1`).
    #[test]
    fn small_cases_table() {
        struct Case {
            shards: u32,
            before: &'static [u16],
            after: &'static [u16],
            moved: Option<u32>,
        }
        let case = |shards, before, after, moved| Case {
            shards,
            before,
            after,
            moved,
        };
        let cases = [
            case(8, &[0][..], &[0, 1][..], Some(4)),
            case(8, &[0, 1], &[0, 1, 2], Some(2)),
            case(8, &[0, 1, 2], &[0, 1, 2, 3], Some(2)),
            case(8, &[0, 1, 2, 3], &[0, 1, 2], Some(2)),
            case(8, &[0, 1, 2], &[0, 1], None),
            case(8, &[0, 1], &[0], Some(4)),
            case(16, &[0], &[0, 1], Some(8)),
            case(16, &[0, 1], &[0, 1, 2], Some(5)),
            case(16, &[0, 1, 2], &[0, 1, 2, 3], Some(4)),
            case(16, &[0, 1, 2, 3], &[0, 1, 2], Some(4)),
            case(16, &[0, 1, 2], &[0, 1], None),
            // Slot 1 leaves and slot 3 joins in one step.
            case(16, &[0, 1, 2], &[0, 2, 3], None),
        ];
        for case in cases {
            let base = fresh(case.shards, case.before);
            assert_balanced(&base.assignment, case.before);
            assert_eq!(base.moved, case.shards);
            let next = step(&base.assignment, case.after, None);
            assert_balanced(&next.assignment, case.after);
            let moves: Vec<_> = base
                .assignment
                .moves_to(&next.assignment)
                .unwrap()
                .collect();
            assert_eq!(
                next.moved as usize,
                moves.len(),
                "summary disagrees with the tables"
            );
            let leaving: Vec<u16> = case
                .before
                .iter()
                .copied()
                .filter(|s| !case.after.contains(s))
                .collect();
            let leaving_shards = leaving
                .iter()
                .map(|&s| base.assignment.shards_of(s).count() as u32)
                .sum::<u32>();
            let expected = case.moved.unwrap_or(leaving_shards);
            assert_eq!(
                next.moved, expected,
                "S={} {:?} -> {:?}: {:?}",
                case.shards, case.before, case.after, next.slots
            );
            assert!(next.is_complete());
            for m in &moves {
                let from_stays = case.after.contains(&m.from);
                let to_stays = case.before.contains(&m.to);
                assert!(
                    !(from_stays && to_stays),
                    "move between staying slots: {m:?}"
                );
            }
        }
    }

    /// A pinned table, so that an accidental change of the algorithm shows
    /// up here (and in `contract/testdata/ring-vectors.json`).
    #[test]
    fn pinned_small_table() {
        let p = fresh(8, &[0, 1, 2]);
        assert_eq!(p.assignment.as_slice(), PINNED_8_3);
    }

    const PINNED_8_3: &[u16] = &[0, 0, 1, 2, 1, 2, 1, 0];

    #[test]
    fn single_slot_and_single_shard() {
        let p = fresh(1, &[0]);
        assert_eq!(p.assignment.as_slice(), &[0]);
        let p = fresh(1, &[0, 1, 2]);
        assert_eq!(p.assignment.counts().values().sum::<u32>(), 1);
        let p = fresh(8, &[5]);
        assert_eq!(p.assignment.as_slice(), &[5; 8]);
    }

    #[test]
    fn fresh_table_is_deterministic_and_follows_first_preference_when_room() {
        let a = fresh(16, &[0, 1, 2, 3]);
        let b = fresh(16, &[3, 2, 1, 0]);
        assert_eq!(a, b);
        let ring = SlotRing::new("default", "chat", &[0, 1, 2, 3], 16);
        let s = ShardCount::new(16).unwrap();
        // Round 0 places every shard whose first preference still had room;
        // so at least 4 shards (one slot's quota) sit on their first choice.
        let first_choice = (0..16)
            .filter(|&shard| ring.first(s.start(shard)) == a.assignment.slot_of(shard))
            .count();
        assert!(first_choice >= 4, "{first_choice}");
    }

    #[test]
    fn cap_moves_a_prefix_and_converges() {
        let base = fresh(16, &[0, 1, 2]);
        let full = step(&base.assignment, &[0, 1, 2, 3], None);
        let mut table = base.assignment.clone();
        let mut steps = 0;
        loop {
            let p = step(&table, &[0, 1, 2, 3], Some(1));
            assert!(p.moved <= 1);
            table = p.assignment;
            steps += 1;
            if p.remaining == 0 {
                break;
            }
        }
        assert_eq!(steps, full.moved);
        assert_eq!(table, full.assignment);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let s = ShardCount::new(8).unwrap();
        let mut request = PlanRequest {
            namespace: "n",
            service: "s",
            shards: s,
            vnodes: 4,
            previous: None,
            slots: &[],
            max_moves: None,
        };
        assert_eq!(
            plan(&request).unwrap_err().to_string(),
            "planner input has no slots: at least one slot must hold shards"
        );
        request.slots = &[1, 2, 1];
        assert_eq!(
            plan(&request).unwrap_err().to_string(),
            "planner input lists slot 1 more than once"
        );
        request.slots = &[0, 5000];
        assert!(matches!(
            plan(&request),
            Err(RingError::SlotOutOfRange { slot: 5000 })
        ));
        request.slots = &[0];
        request.vnodes = 0;
        assert!(matches!(
            plan(&request),
            Err(RingError::InvalidVnodes { vnodes: 0 })
        ));
        request.vnodes = 4;
        let other = Assignment::uniform(ShardCount::new(16).unwrap(), 0);
        request.previous = Some(&other);
        assert_eq!(
            plan(&request).unwrap_err().to_string(),
            "table `previous (planner input)` has 16 entries, expected 8 (one per shard)"
        );
    }
}
