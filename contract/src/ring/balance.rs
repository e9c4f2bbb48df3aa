//! Placement by load: which shards to move from the busiest slots to the least busy ones
//! (`docs/adr/0002-load-aware-placement.md`). Pure and deterministic; the operator calls it on
//! a `Stable` ring when a service places by load, and moves the shards it names through the
//! ordinary `Warm` → `Switch` → `Settle` transition.
//!
//! # Input
//!
//! The current table, one [`SlotLoad`] per slot that holds shards (its total load over the
//! pods' report window, in any unit that adds up, such as requests per second, and the loads of
//! the shards it reported as its busiest), and a [`BalanceConfig`]. A shard the slot did not
//! report is estimated at the slot's remaining load spread evenly over its other shards.
//!
//! # Rules
//!
//! With `mean` the total load over the number of slots and `ratio` the busiest slot's load over
//! `mean`:
//!
//! * nothing moves unless `ratio > trigger` (hysteresis: once moved, a service stays put until
//!   its load drifts past the trigger again, which is above the target the moves aim for);
//! * then, while `ratio > target` and fewer than `max_moves` shards moved, the busiest slot
//!   gives one shard to the least busy slot: of its shards that lower the larger of the two
//!   slots' loads, the one that brings them closest to equal (ties: the busier shard, then the
//!   lower shard number). It stops when no shard of the busiest slot can lower it. Every shard
//!   moves at most once per call;
//! * a shard whose own load exceeds `mean × target` is **too hot**: on any slot it alone would
//!   exceed the target, so it never moves (that would only move the hot spot) and is reported;
//!   only doubling the shard count can split it.
//!
//! Every move strictly lowers the sum of the squared slot loads, so the loop ends, and a
//! result that reached the target, measured again, does not trigger (no oscillation).
//!
//! ```
//! use locus_contract::ring::{Assignment, BalanceConfig, SlotLoad, balance};
//!
//! // Slot 0 holds shards 0..4 and serves 300 req/s, 200 of them for shard 1; slot 1 serves 100.
//! let table = Assignment::new(vec![0, 0, 0, 0, 1, 1, 1, 1]).unwrap();
//! let loads = [SlotLoad::new(0, 300.0, vec![(1, 200.0)]), SlotLoad::new(1, 100.0, vec![])];
//! let result = balance(&table, &loads, &BalanceConfig::default()).unwrap();
//! assert_eq!(result.before, 1.5);
//! // Shard 1 alone would overshoot; slot 0's three cool shards (about 33 req/s each) move.
//! assert_eq!(result.moves.len(), 3);
//! assert!((result.after - 1.0).abs() < 1e-9);
//! assert!(result.too_hot.is_empty());
//! ```

use std::collections::BTreeMap;

use super::{Assignment, RingError, ShardMove};

/// The load of one slot over the pods' report window.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotLoad {
    /// The slot.
    pub slot: u16,
    /// Its total load (for example requests per second); finite, not negative.
    pub load: f64,
    /// Loads of shards it reported individually, as `(shard, load)`; each finite, not
    /// negative, their sum at most `load` (entries for shards the slot does not hold are
    /// ignored).
    pub hot: Vec<(u32, f64)>,
}

impl SlotLoad {
    /// A slot's load.
    pub fn new(slot: u16, load: f64, hot: Vec<(u32, f64)>) -> Self {
        Self { slot, load, hot }
    }
}

/// When to move shards and how many.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceConfig {
    /// Move only when the busiest slot's load over the mean exceeds this (for example 1.20).
    pub trigger: f64,
    /// Stop moving once the busiest slot's load over the mean is at most this (for example
    /// 1.10); also the tolerance past which one shard is too hot. At least 1, at most
    /// `trigger`.
    pub target: f64,
    /// At most this many shards move per call (at least 1).
    pub max_moves: u32,
}

impl Default for BalanceConfig {
    /// Trigger 1.20, target 1.10, 64 moves.
    fn default() -> Self {
        Self {
            trigger: 1.20,
            target: 1.10,
            max_moves: 64,
        }
    }
}

/// A shard whose load alone exceeds the mean slot load × the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotShard {
    /// The shard.
    pub shard: u32,
    /// The slot that holds it.
    pub slot: u16,
    /// Its load (as reported).
    pub load: f64,
    /// Its load over the mean slot load.
    pub ratio: f64,
}

/// What [`balance`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    /// The shards to move, ascending by shard; empty when the trigger is not exceeded or no
    /// move helps.
    pub moves: Vec<ShardMove>,
    /// The table after the moves.
    pub assignment: Assignment,
    /// The busiest slot's load over the mean, now (1 when there is no load at all).
    pub before: f64,
    /// The same, predicted after the moves.
    pub after: f64,
    /// True when `before` exceeded the trigger.
    pub triggered: bool,
    /// Each slot's predicted load after the moves, with its individually known shards (those
    /// it reported and those it gains), ascending by slot: what the slots should report once
    /// the moves are done, if the load stays as it was.
    pub predicted: Vec<SlotLoad>,
    /// Shards too hot for any slot, busiest first.
    pub too_hot: Vec<HotShard>,
}

/// Why [`balance`] refused its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalanceError {
    /// The configuration is out of range.
    #[error("balance configuration: {0}")]
    Config(&'static str),
    /// A slot that holds shards has no load, or a slot has two.
    #[error("balance input: slot {slot} {problem}")]
    Slot {
        /// The slot.
        slot: u16,
        /// What is wrong.
        problem: &'static str,
    },
    /// A load is negative, not finite, or the reported shards add up to more than the total.
    #[error("balance input: slot {slot}: {problem}")]
    Load {
        /// The slot.
        slot: u16,
        /// What is wrong.
        problem: &'static str,
    },
    /// The result is not a table (cannot happen for a valid input table).
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// Per-slot working state.
struct SlotState {
    load: f64,
    /// Shards held.
    shards: Vec<u32>,
}

/// The load of every shard (reported, or estimated) and of every slot.
struct Estimate {
    shard_load: Vec<f64>,
    reported: Vec<bool>,
    slots: BTreeMap<u16, SlotState>,
    mean: f64,
}

impl Estimate {
    /// Reported shards at their load; every other shard at its slot's remaining load spread
    /// evenly over the slot's other shards.
    fn new(current: &Assignment, by_slot: &BTreeMap<u16, &SlotLoad>) -> Self {
        let table = current.as_slice();
        let counts = current.counts();
        let mut shard_load = vec![0.0; table.len()];
        let mut reported = vec![false; table.len()];
        // Per slot: the reported shards' sum and count.
        let mut known: BTreeMap<u16, (f64, u32)> = BTreeMap::new();
        for load in by_slot.values() {
            for &(shard, value) in &load.hot {
                let index = shard as usize;
                if table.get(index) == Some(&load.slot) && !reported[index] {
                    shard_load[index] = value;
                    reported[index] = true;
                    let entry = known.entry(load.slot).or_insert((0.0, 0));
                    entry.0 += value;
                    entry.1 += 1;
                }
            }
        }
        let mut slots: BTreeMap<u16, SlotState> = by_slot
            .iter()
            .map(|(&slot, l)| {
                let state = SlotState {
                    load: l.load,
                    shards: Vec::new(),
                };
                (slot, state)
            })
            .collect();
        for (shard, &slot) in table.iter().enumerate() {
            if !reported[shard] {
                let held = counts.get(&slot).copied().unwrap_or(0);
                let (hot_sum, hot_count) = known.get(&slot).copied().unwrap_or((0.0, 0));
                let rest = (by_slot.get(&slot).map_or(0.0, |l| l.load) - hot_sum).max(0.0);
                shard_load[shard] = rest / f64::from((held - hot_count).max(1));
            }
            if let Some(state) = slots.get_mut(&slot) {
                state.shards.push(shard as u32);
            }
        }
        let total: f64 = slots.values().map(|s| s.load).sum();
        let mean = total / f64::from(u32::try_from(slots.len()).unwrap_or(u32::MAX).max(1));
        Self {
            shard_load,
            reported,
            slots,
            mean,
        }
    }

    /// The busiest slot's load over the mean (1 without load).
    fn ratio(&self) -> f64 {
        if self.mean <= 0.0 {
            1.0
        } else {
            self.slots.values().map(|s| s.load).fold(0.0, f64::max) / self.mean
        }
    }

    /// Shards whose load exceeds `limit`, busiest first.
    fn too_hot(&self, current: &Assignment, limit: f64) -> Vec<HotShard> {
        let mut hot: Vec<HotShard> = current
            .as_slice()
            .iter()
            .enumerate()
            .filter(|&(shard, _)| self.mean > 0.0 && self.shard_load[shard] > limit)
            .map(|(shard, &slot)| HotShard {
                shard: shard as u32,
                slot,
                load: self.shard_load[shard],
                ratio: self.shard_load[shard] / self.mean,
            })
            .collect();
        hot.sort_by(|a, b| b.load.total_cmp(&a.load).then(a.shard.cmp(&b.shard)));
        hot
    }

    /// The shard of `from` that best evens `from` and `to` out (see the module
    /// documentation), if one lowers the larger of the two.
    fn best_shard(&self, from: u16, to: u16, limit: f64, moved: &[bool]) -> Option<u32> {
        let gap = self.slots[&from].load - self.slots[&to].load;
        let load = |s: u32| self.shard_load[s as usize];
        self.slots[&from]
            .shards
            .iter()
            .copied()
            .filter(|&s| !moved[s as usize] && load(s) <= limit)
            .filter(|&s| load(s) > 0.0 && load(s) < gap)
            .min_by(|&a, &b| {
                let (x, y) = (load(a), load(b));
                (x - gap / 2.0)
                    .abs()
                    .total_cmp(&(y - gap / 2.0).abs())
                    .then(y.total_cmp(&x))
                    .then(a.cmp(&b))
            })
    }

    fn apply(&mut self, shard: u32, from: u16, to: u16) {
        let load = self.shard_load[shard as usize];
        if let Some(state) = self.slots.get_mut(&from) {
            state.load -= load;
            state.shards.retain(|&s| s != shard);
        }
        if let Some(state) = self.slots.get_mut(&to) {
            state.load += load;
            state.shards.push(shard);
        }
    }

    /// Each slot's load with its individually known shards (reported or `moved`), busiest
    /// first.
    fn predicted(&self, moved: &[bool]) -> Vec<SlotLoad> {
        self.slots
            .iter()
            .map(|(&slot, state)| {
                let mut hot: Vec<(u32, f64)> = state
                    .shards
                    .iter()
                    .filter(|&&s| self.reported[s as usize] || moved[s as usize])
                    .map(|&s| (s, self.shard_load[s as usize]))
                    .collect();
                hot.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                SlotLoad::new(slot, state.load, hot)
            })
            .collect()
    }
}

/// Chooses the shards to move; see the module documentation for the rules.
pub fn balance(
    current: &Assignment,
    loads: &[SlotLoad],
    config: &BalanceConfig,
) -> Result<Balance, BalanceError> {
    check_config(config)?;
    let mut by_slot: BTreeMap<u16, &SlotLoad> = BTreeMap::new();
    for load in loads {
        if by_slot.insert(load.slot, load).is_some() {
            return Err(BalanceError::Slot {
                slot: load.slot,
                problem: "has more than one load",
            });
        }
        check_load(load)?;
    }
    if let Some(&slot) = current.counts().keys().find(|s| !by_slot.contains_key(s)) {
        return Err(BalanceError::Slot {
            slot,
            problem: "holds shards but has no load",
        });
    }
    let mut estimate = Estimate::new(current, &by_slot);
    let limit = estimate.mean * config.target;
    let too_hot = estimate.too_hot(current, limit);
    let before = estimate.ratio();
    let triggered = before > config.trigger;
    let mut next = current.as_slice().to_vec();
    let mut done = vec![false; next.len()];
    let mut moves = Vec::new();
    while triggered && moves.len() < config.max_moves as usize && estimate.ratio() > config.target {
        let (Some(hottest), Some(coolest)) = (
            extreme(&estimate.slots, |a, b| a > b),
            extreme(&estimate.slots, |a, b| a < b),
        ) else {
            break;
        };
        if hottest == coolest {
            break;
        }
        let Some(shard) = estimate.best_shard(hottest, coolest, limit, &done) else {
            break;
        };
        estimate.apply(shard, hottest, coolest);
        done[shard as usize] = true;
        next[shard as usize] = coolest;
        moves.push(ShardMove {
            shard,
            from: hottest,
            to: coolest,
        });
    }
    moves.sort_unstable();
    Ok(Balance {
        moves,
        assignment: Assignment::new(next)?,
        before,
        after: estimate.ratio(),
        triggered,
        predicted: estimate.predicted(&done),
        too_hot,
    })
}

/// The slot whose load is `better` than every other's (ties: the lower slot).
fn extreme(slots: &BTreeMap<u16, SlotState>, better: impl Fn(f64, f64) -> bool) -> Option<u16> {
    let mut best: Option<(u16, f64)> = None;
    for (&slot, state) in slots {
        if best.is_none_or(|(_, load)| better(state.load, load)) {
            best = Some((slot, state.load));
        }
    }
    best.map(|(slot, _)| slot)
}

fn check_config(config: &BalanceConfig) -> Result<(), BalanceError> {
    if !config.target.is_finite() || config.target < 1.0 {
        return Err(BalanceError::Config(
            "target must be a finite ratio of at least 1",
        ));
    }
    if !config.trigger.is_finite() || config.trigger < config.target {
        return Err(BalanceError::Config(
            "trigger must be finite and at least the target",
        ));
    }
    if config.max_moves == 0 {
        return Err(BalanceError::Config("max_moves must be at least 1"));
    }
    Ok(())
}

fn check_load(load: &SlotLoad) -> Result<(), BalanceError> {
    let bad = |problem| BalanceError::Load {
        slot: load.slot,
        problem,
    };
    if !load.load.is_finite() || load.load < 0.0 {
        return Err(bad("load must be finite and not negative"));
    }
    if load.hot.iter().any(|&(_, l)| !l.is_finite() || l < 0.0) {
        return Err(bad(
            "a reported shard's load must be finite and not negative",
        ));
    }
    let sum: f64 = load.hot.iter().map(|&(_, l)| l).sum();
    if sum > load.load * (1.0 + 1e-9) + 1e-9 {
        return Err(bad(
            "the reported shards' loads add up to more than the slot's load",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::ring::{PlanRequest, ShardCount, plan};

    fn config(max_moves: u32) -> BalanceConfig {
        BalanceConfig {
            max_moves,
            ..BalanceConfig::default()
        }
    }

    fn fresh(shards: u32, slots: u16) -> Assignment {
        let list: Vec<u16> = (0..slots).collect();
        plan(&PlanRequest {
            shards: ShardCount::new(shards).unwrap(),
            vnodes: 16,
            ..PlanRequest::new("default", "chat", &list)
        })
        .unwrap()
        .assignment
    }

    /// What the slots would report for a true per-shard load: their totals and their 64
    /// busiest shards (as a pod reports them).
    fn reports(table: &Assignment, truth: &[f64]) -> Vec<SlotLoad> {
        let mut by_slot: BTreeMap<u16, Vec<(u32, f64)>> = BTreeMap::new();
        for (shard, &slot) in table.as_slice().iter().enumerate() {
            by_slot
                .entry(slot)
                .or_default()
                .push((shard as u32, truth[shard]));
        }
        by_slot
            .into_iter()
            .map(|(slot, mut shards)| {
                let load = shards.iter().map(|s| s.1).sum();
                shards.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                shards.truncate(64);
                shards.retain(|s| s.1 > 0.0);
                SlotLoad::new(slot, load, shards)
            })
            .collect()
    }

    /// The true busiest/mean of `table` under `truth`.
    fn true_ratio(table: &Assignment, truth: &[f64]) -> f64 {
        let loads = reports(table, truth);
        let mean = loads.iter().map(|l| l.load).sum::<f64>() / f64::from(loads.len() as u32);
        loads.iter().map(|l| l.load).fold(0.0, f64::max) / mean
    }

    /// Zipf-like load over shards: shard `i` in a shuffled order gets `1 / rank^s`.
    fn zipf(shards: usize, s: f64, seed: u64) -> Vec<f64> {
        let mut order: Vec<usize> = (0..shards).collect();
        let mut x = seed | 1;
        for i in (1..shards).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut truth = vec![0.0; shards];
        for (rank, &shard) in order.iter().enumerate() {
            truth[shard] = 1000.0 / f64::from(rank as u32 + 1).powf(s);
        }
        truth
    }

    fn apply(table: &Assignment, result: &Balance) -> Assignment {
        let mut next = table.as_slice().to_vec();
        for m in &result.moves {
            assert_eq!(next[m.shard as usize], m.from, "{m:?}");
            next[m.shard as usize] = m.to;
        }
        let next = Assignment::new(next).unwrap();
        assert_eq!(next, result.assignment);
        next
    }

    #[test]
    fn skewed_load_reaches_the_target_within_two_rounds() {
        for (seed, slots) in [(1, 8), (2, 16), (3, 10), (4, 32)] {
            let mut table = fresh(4096, slots);
            // Zipf over sessions spread over shards (s = 1.1 over 200k keys folds to about
            // this much skew per shard), plus one busy tenant's hundred shards on slot 0.
            let mut truth = zipf(4096, 0.6, seed);
            let mean = truth.iter().sum::<f64>() / f64::from(slots);
            for shard in table.shards_of(0).take(100).collect::<Vec<_>>() {
                truth[shard as usize] += mean * 0.6 / 100.0;
            }
            let start = true_ratio(&table, &truth);
            assert!(start > 1.2, "seed {seed}: the input is not skewed: {start}");
            let mut rounds = 0;
            while true_ratio(&table, &truth) > 1.10 {
                rounds += 1;
                assert!(
                    rounds <= 2,
                    "seed {seed}, {slots} slots: still {} after 2 rounds",
                    true_ratio(&table, &truth)
                );
                let result = balance(&table, &reports(&table, &truth), &config(64)).unwrap();
                assert!(result.triggered || rounds > 1);
                assert!(result.moves.len() <= 64);
                table = apply(&table, &result);
            }
            println!(
                "seed {seed}, {slots} slots: {start:.3} -> {:.3} in {rounds} rounds",
                true_ratio(&table, &truth)
            );
        }
    }

    #[test]
    fn the_budget_is_respected() {
        let table = fresh(1024, 4);
        let mut truth = vec![1.0; 1024];
        for shard in table.shards_of(0) {
            truth[shard as usize] = 3.0;
        }
        for budget in [1, 5, 17] {
            let result = balance(&table, &reports(&table, &truth), &config(budget)).unwrap();
            assert_eq!(result.moves.len(), budget as usize);
            assert!(result.after < result.before);
            assert!(result.moves.iter().all(|m| m.from == 0));
            assert_eq!(
                table.moves_to(&result.assignment).unwrap().count(),
                budget as usize
            );
        }
    }

    #[test]
    fn a_balanced_input_moves_nothing() {
        let table = fresh(4096, 10);
        let truth = vec![2.5; 4096];
        let result = balance(&table, &reports(&table, &truth), &config(64)).unwrap();
        assert!(!result.triggered);
        assert!(result.moves.is_empty());
        assert_eq!(result.assignment, table);
        assert!(result.before < 1.2, "{}", result.before);
        // Just under the trigger: still nothing.
        let mut skewed = truth.clone();
        for shard in table.shards_of(3) {
            skewed[shard as usize] = 2.5 * 1.19;
        }
        let result = balance(&table, &reports(&table, &skewed), &config(64)).unwrap();
        assert!(
            result.before > 1.1 && result.before <= 1.2,
            "{}",
            result.before
        );
        assert!(result.moves.is_empty());
        // No load at all.
        let idle = balance(&table, &reports(&table, &vec![0.0; 4096]), &config(64)).unwrap();
        assert!(idle.moves.is_empty() && (idle.before - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn measured_again_after_the_moves_nothing_moves() {
        let table = fresh(4096, 12);
        let truth = zipf(4096, 0.8, 7);
        let first = balance(&table, &reports(&table, &truth), &config(64)).unwrap();
        assert!(first.triggered && !first.moves.is_empty());
        assert!(first.after <= 1.10, "{}", first.after);
        let moved = apply(&table, &first);
        // As predicted...
        let again = balance(&moved, &first.predicted, &config(64)).unwrap();
        assert!((again.before - first.after).abs() < 1e-9);
        assert!(again.moves.is_empty(), "{:?}", again.moves);
        // ...and as the pods would measure it.
        let measured = balance(&moved, &reports(&moved, &truth), &config(64)).unwrap();
        assert!(
            measured.moves.is_empty(),
            "{} -> {:?}",
            measured.before,
            measured.moves
        );
    }

    #[test]
    fn a_shard_too_hot_for_any_slot_is_reported_and_stays() {
        let table = fresh(256, 4);
        let mut truth = vec![1.0; 256];
        let hot = table.shards_of(2).next().unwrap();
        truth[hot as usize] = 200.0; // mean = (255 + 200) / 4 ≈ 114
        let result = balance(&table, &reports(&table, &truth), &config(64)).unwrap();
        assert_eq!(result.too_hot.len(), 1);
        assert_eq!((result.too_hot[0].shard, result.too_hot[0].slot), (hot, 2));
        assert!(result.too_hot[0].ratio > 1.7, "{:?}", result.too_hot);
        assert!(result.moves.iter().all(|m| m.shard != hot));
        // Slot 2 gives away its other shards instead, as far as that helps.
        assert!(result.moves.iter().all(|m| m.from == 2));
        assert!(result.after < result.before);
    }

    #[test]
    fn the_keys_planner_is_unchanged_by_loads() {
        // Placement by keys does not look at loads: the planner's table for the same slots is
        // the same whatever the load, and re-planning a balanced table moves nothing.
        let table = fresh(4096, 6);
        let again = plan(&PlanRequest {
            shards: table.shard_count(),
            vnodes: 16,
            previous: Some(&table),
            ..PlanRequest::new("default", "chat", &[0, 1, 2, 3, 4, 5])
        })
        .unwrap();
        assert_eq!(again.moved, 0);
        // A table moved by load is usually no longer balanced by keys: planning by keys again
        // would move shards back, which is why the operator does not take that step while it
        // places by load.
        let mut truth = vec![1.0; 4096];
        for shard in table.shards_of(0) {
            truth[shard as usize] = 2.0;
        }
        let result = balance(&table, &reports(&table, &truth), &config(64)).unwrap();
        assert_eq!(result.moves.len(), 64);
        let back = plan(&PlanRequest {
            shards: table.shard_count(),
            vnodes: 16,
            previous: Some(&result.assignment),
            ..PlanRequest::new("default", "chat", &[0, 1, 2, 3, 4, 5])
        })
        .unwrap();
        assert_eq!(back.moved, 64);
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let table = Assignment::new(vec![0, 0, 1, 1]).unwrap();
        let ok = [SlotLoad::new(0, 1.0, vec![]), SlotLoad::new(1, 1.0, vec![])];
        let bad_config = BalanceConfig {
            trigger: 1.05,
            target: 1.10,
            max_moves: 1,
        };
        assert_eq!(
            balance(&table, &ok, &bad_config).unwrap_err().to_string(),
            "balance configuration: trigger must be finite and at least the target"
        );
        assert!(balance(&table, &ok, &config(0)).is_err());
        assert_eq!(
            balance(&table, &ok[..1], &config(1))
                .unwrap_err()
                .to_string(),
            "balance input: slot 1 holds shards but has no load"
        );
        let twice = [ok[0].clone(), ok[0].clone(), ok[1].clone()];
        assert!(balance(&table, &twice, &config(1)).is_err());
        let over = [SlotLoad::new(0, 1.0, vec![(0, 2.0)]), ok[1].clone()];
        assert_eq!(
            balance(&table, &over, &config(1)).unwrap_err().to_string(),
            "balance input: slot 0: the reported shards' loads add up to more than the slot's load"
        );
        let nan = [SlotLoad::new(0, f64::NAN, vec![]), ok[1].clone()];
        assert!(balance(&table, &nan, &config(1)).is_err());
    }

    #[test]
    fn it_runs_at_a_thousand_slots_and_65536_shards() {
        let started = Instant::now();
        let table = fresh(65_536, 1000);
        let planned = started.elapsed();
        let truth = zipf(65_536, 0.5, 5);
        let loads = reports(&table, &truth);
        let started = Instant::now();
        let result = balance(&table, &loads, &config(256)).unwrap();
        let took = started.elapsed();
        println!(
            "1000 slots x 65536 shards: balance {took:?} ({} moves, {:.3} -> {:.3}; keys plan {planned:?})",
            result.moves.len(),
            result.before,
            result.after
        );
        assert!(result.after <= result.before);
        assert!(result.moves.len() <= 256);
    }
}
