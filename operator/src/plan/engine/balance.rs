//! Placement by load (`spec.placement.balance: Load`, `docs/adr/0002-load-aware-placement.md`):
//! reading the load the pods report (annotation `locus.dev/shard-load`), the step that starts a
//! rebalance from a `Stable` ring, and `status.placement`.
//!
//! The step runs last among the steps from a `Stable` ring, so only when nothing else is going
//! on (membership settled, no rollout), and starts a rebalance only when
//!
//! - every slot's pod reported for the current ring (its version, its shard count, as many
//!   shards as the ring gives the slot): a report counted under an older placement says
//!   nothing about this one;
//! - every report is live: its window ended after the current ring was published and at most
//!   [`STALE_AFTER_WINDOWS`] windows ago ([`CLOCK_SKEW`] allowed either way between the pod's
//!   clock and this process's): the last report of a pod whose reporter stopped is not used;
//! - the current ring has been in place for `intervalSeconds` and for twice the longest
//!   report window (so the windows measure it), and `intervalSeconds` passed since the last
//!   rebalance started;
//! - the busiest pod serves more than `triggerPercent` of the mean ([`ring::balance`]), and
//!   did in the reports of the windows before as well (hysteresis: two windows in a row of
//!   every pod, remembered in `status.placement.triggerHeld`), so that one window near the
//!   trigger starts nothing.
//!
//! It then publishes a `Warm` ring whose target moves the planned shards (at most
//! `maxShardsPerRound`, and `maxShardMovesPerStep` when lower, so one step moves them all):
//! the same `Warm` → `Switch` → `Settle` path as a scale change, with its handoff and fencing.
//!
//! In the `Off` and `Load` modes the step that evens a table out by key count runs only to
//! finish the capped steps of a membership change ([`Planner::evens_out_by_keys`]); otherwise it
//! would move the shards a rebalance placed by load straight back.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use locus_contract::progress::ShardLoadReport;
use locus_contract::ring::{
    self, Balance, BalanceConfig, BalanceError, Ring, RingError, ShardCount, SlotLoad, Transition,
};

use super::{Decision, Planner, plus, whole_seconds};
use crate::crd::{
    BalanceMode, HotShardStatus, PlacementStatus, PodLoad, RebalanceRecord, TransitionKind,
    TriggerHeld,
};
use crate::plan::{PublishedRing, RingMeta, StepKind, reasons};

/// Most hot shards listed in `status.placement.hotShards`.
const MAX_HOT_IN_STATUS: usize = 16;

/// A report is used only if its window ended at most this many window lengths ago. The SDK's
/// reporter writes every window except at most one unchanged one in a row, so a live pod's
/// annotation ended at most two windows (and a write) ago; a third covers a slow write and a
/// delayed pass (`docs/adr/0002-load-aware-placement.md`, amendment 1).
pub(crate) const STALE_AFTER_WINDOWS: u64 = 3;

/// The difference allowed between a pod's clock (which stamps `windowEndMs`) and this
/// process's, in both checks of a report's age.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// What the pods of a ring report about their load.
pub(super) struct Measure {
    /// One entry per slot that holds shards, by slot.
    pods: Vec<PodLoad>,
    /// The usable loads (requests per second), one per slot that holds shards, if every
    /// report is usable.
    loads: Vec<SlotLoad>,
    /// Why reports are not usable, by slot (empty when all are).
    problems: Vec<(u16, String)>,
    /// The longest report window, in seconds.
    window: u32,
    /// The earliest and the latest end of the usable reports' windows (Unix milliseconds).
    window_ends: Option<(u64, u64)>,
    /// The planner's answer for the usable loads.
    balance: Option<Result<Balance, BalanceError>>,
}

/// `ratio` in percent, rounded.
#[allow(clippy::cast_sign_loss, reason = "ratios are not negative")]
fn percent(ratio: f64) -> u32 {
    (ratio * 100.0).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

fn tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

impl<'a> Planner<'a> {
    /// True if the table may be evened out by key count now: always with `balance: Keys`;
    /// with `Off` or `Load` only to finish a membership change (the last transition joined,
    /// removed or rerouted slots).
    pub(super) fn evens_out_by_keys(&self, published: &PublishedRing) -> bool {
        if self.obs.spec.placement.balance == BalanceMode::Keys {
            return true;
        }
        published
            .meta
            .as_ref()
            .and_then(|m| m.transition.as_ref())
            .is_some_and(|t| {
                matches!(
                    t.kind,
                    TransitionKind::ScaleUp | TransitionKind::ScaleDown | TransitionKind::Reroute
                )
            })
    }

    fn balance_config(&self) -> BalanceConfig {
        let placement = &self.obs.spec.placement;
        let max_moves = self
            .max_moves
            .map_or(placement.max_shards_per_round, |cap| {
                cap.get().min(placement.max_shards_per_round)
            });
        BalanceConfig {
            trigger: f64::from(placement.trigger_percent) / 100.0,
            target: f64::from(placement.target_percent) / 100.0,
            max_moves: max_moves.max(1),
        }
    }

    /// Why `report`, for the current ring, is not live: its window ended before the ring was
    /// published (`in_place`), in the future, or more than [`STALE_AFTER_WINDOWS`] windows ago.
    fn stale(&self, report: &ShardLoadReport, in_place: Timestamp) -> Option<String> {
        let skew = i64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(i64::MAX);
        let end = i64::try_from(report.window_end_ms).unwrap_or(i64::MAX);
        let now = self.obs.now.as_millisecond();
        let max_age = i64::try_from(STALE_AFTER_WINDOWS * u64::from(report.window_seconds) * 1000)
            .unwrap_or(i64::MAX);
        #[allow(clippy::cast_precision_loss, reason = "ages far below 2^52 ms")]
        let seconds = |ms: i64| format!("{:.1}", ms as f64 / 1000.0);
        if end < in_place.as_millisecond().saturating_sub(skew) {
            Some(format!(
                "stale: its window ended {} s before ring version {} was published",
                seconds(in_place.as_millisecond() - end),
                report.ring_version
            ))
        } else if end > now.saturating_add(skew) {
            Some(format!(
                "its window ends {} s in the future: the pod's clock is ahead",
                seconds(end - now)
            ))
        } else if now - end > max_age.saturating_add(skew) {
            Some(format!(
                "stale: its window ended {} s ago, more than {STALE_AFTER_WINDOWS} windows of {} s (is the pod's reporter running?)",
                seconds(now - end),
                report.window_seconds
            ))
        } else {
            None
        }
    }

    /// Reads the reports of the pods of `ring`'s slots that hold shards and, if all are
    /// usable, runs the load planner on them. `meta`: the ring's bookkeeping (when it was
    /// published; a report's window must end after that).
    pub(super) fn measure(&self, ring: &Ring, meta: Option<&RingMeta>) -> Measure {
        let counts = ring.current().counts();
        let in_place = meta.map_or(Timestamp::UNIX_EPOCH, |m| m.published_at);
        let mut measure = Measure {
            pods: Vec::new(),
            loads: Vec::new(),
            problems: Vec::new(),
            window: 0,
            window_ends: None,
            balance: None,
        };
        for slot in ring
            .slots()
            .iter()
            .filter(|s| counts.contains_key(&s.index))
        {
            let mut entry = PodLoad {
                slot: u32::from(slot.index),
                pod: slot.pod.name.clone(),
                ..PodLoad::default()
            };
            let pod = self.find(&slot.pod);
            let problem = match pod.and_then(|p| p.progress.load.as_ref()) {
                None => Some("no load report".to_owned()),
                Some(Err(reason)) => Some(reason.clone()),
                Some(Ok(report)) => {
                    entry.requests_per_second = Some(tenth(report.requests_per_second()));
                    entry.bytes_per_second = Some(report.bytes_per_second().round());
                    entry.ring_version = Some(report.ring_version);
                    entry.seen_at = pod
                        .and_then(|p| self.obs.first_seen.load_reports.get(&p.uid))
                        .map(|&at| whole_seconds(at));
                    let held = counts.get(&slot.index).copied().unwrap_or(0);
                    if report.ring_version != ring.version() {
                        Some(format!(
                            "reports for ring version {}, the ring is at {}",
                            report.ring_version,
                            ring.version()
                        ))
                    } else if report.shards != ring.shards().get() {
                        Some(format!(
                            "reports for {} shards, the ring has {}",
                            report.shards,
                            ring.shards().get()
                        ))
                    } else if report.owned_shards != held {
                        Some(format!(
                            "reports {} owned shards, the ring gives it {held}",
                            report.owned_shards
                        ))
                    } else if let Some(stale) = self.stale(report, in_place) {
                        Some(stale)
                    } else {
                        let end = report.window_end_ms;
                        measure.window_ends = Some(
                            measure
                                .window_ends
                                .map_or((end, end), |(a, b)| (a.min(end), b.max(end))),
                        );
                        let window = f64::from(report.window_seconds.max(1));
                        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
                        let hot = report
                            .hot
                            .iter()
                            .map(|h| (h.shard, h.requests as f64 / window))
                            .collect();
                        measure.window = measure.window.max(report.window_seconds);
                        measure.loads.push(SlotLoad::new(
                            slot.index,
                            report.requests_per_second(),
                            hot,
                        ));
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                measure.problems.push((slot.index, problem.clone()));
                entry.problem = Some(problem);
            }
            measure.pods.push(entry);
        }
        if measure.problems.is_empty() && !measure.loads.is_empty() {
            measure.balance = Some(ring::balance(
                ring.current(),
                &measure.loads,
                &self.balance_config(),
            ));
        }
        measure
    }

    /// Rebalance by load: see the module documentation.
    pub(super) fn balance_by_load(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        if self.obs.spec.placement.balance != BalanceMode::Load {
            return Ok(None);
        }
        let ring = &published.ring;
        if !self.membership_settled(ring)
            || !self.outdated.is_empty()
            || !self.create.is_empty()
            || !self.update.is_empty()
        {
            self.load_note = Some("waiting for membership changes and rollouts to finish".into());
            return Ok(None);
        }
        let measure = self.measure(ring, published.meta.as_ref());
        let decision = self.rebalance_from(published, &measure)?;
        self.measured = Some((ring.version(), measure));
        Ok(decision)
    }

    fn rebalance_from(
        &mut self,
        published: &'a PublishedRing,
        measure: &Measure,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        if let Some((slot, problem)) = measure.problems.first() {
            self.load_note = Some(format!(
                "waiting for every pod's load report for ring version {}: {} of {} not usable (slot {slot}: {problem})",
                ring.version(),
                measure.problems.len(),
                measure.pods.len()
            ));
            return Ok(None);
        }
        let result = match &measure.balance {
            Some(Ok(result)) => result,
            Some(Err(error)) => {
                self.load_note = Some(format!("the load planner refused the reports: {error}"));
                return Ok(None);
            }
            None => {
                self.load_note = Some("no pod holds shards".into());
                return Ok(None);
            }
        };
        let confirmed = self.hold_trigger(ring, measure, result);
        let interval = Duration::from_secs(u64::from(self.obs.spec.placement.interval_seconds));
        let windows = Duration::from_secs(2 * u64::from(measure.window));
        let mut ready_at = plus(self.step_start(published), interval.max(windows));
        if let Some(last) = published
            .meta
            .as_ref()
            .and_then(|m| m.last_rebalance.as_ref())
        {
            ready_at = ready_at.max(plus(last.started_at.0, interval));
        }
        if self.obs.now < ready_at {
            self.deadlines.push(ready_at);
            self.load_note = Some(format!(
                "ring version {} has not been in place long enough to be measured: the next rebalance may start at {}",
                ring.version(),
                whole_seconds(ready_at).0
            ));
            return Ok(None);
        }
        let trigger = self.obs.spec.placement.trigger_percent;
        if !result.triggered {
            self.load_note = Some(format!(
                "busiest pod at {}% of the mean, within the trigger of {trigger}%",
                percent(result.before)
            ));
            return Ok(None);
        }
        if !confirmed {
            self.load_note = Some(format!(
                "busiest pod at {}% of the mean, above the trigger of {trigger}%: a rebalance starts if the next report of every pod shows it too",
                percent(result.before)
            ));
            return Ok(None);
        }
        if let Some(decision) = self.split_hot_shards(published, result)? {
            return Ok(Some(decision));
        }
        if result.moves.is_empty() {
            self.load_note = Some(format!(
                "busiest pod at {}% of the mean, above the trigger of {trigger}%, but no shard move lowers it ({} shards too hot for any pod)",
                percent(result.before),
                result.too_hot.len()
            ));
            return Ok(None);
        }
        let moved = u32::try_from(result.moves.len()).unwrap_or(u32::MAX);
        let mut parts = self.next_parts(ring);
        parts.transition = Transition::Warm {
            target: result.assignment.clone(),
        };
        let next = Ring::new(parts)?;
        let note = format!(
            "busiest pod at {}% of the mean (trigger {trigger}%): {moved} shards move from the busiest pods to the least busy, predicted {}% after (ring version {})",
            percent(result.before),
            percent(result.after),
            next.version()
        );
        self.event(false, reasons::REBALANCE, note.clone());
        self.load_note = Some(note);
        self.step(Some(TransitionKind::Rebalance), StepKind::Warm, 0, None);
        let mut meta = self.meta_start(TransitionKind::Rebalance, ring.version(), moved);
        meta.last_rebalance = Some(RebalanceRecord {
            started_at: whole_seconds(self.obs.now),
            from_version: ring.version(),
            shards_moved: moved,
            busiest_percent_before: percent(result.before),
            busiest_percent_predicted: percent(result.after),
            split_to_shards: None,
        });
        Ok(Some(Decision::publish(next, meta)))
    }

    /// Shards too hot for any pod, with the shard count chosen by the operator (`spec.shards`
    /// unset) and below the largest: the shard count doubles through the `Reshard` step (every
    /// shard split in place, nothing moves), so each hot shard becomes two of about half its
    /// load that the next round can place. With `spec.shards` set, the user fixed the count:
    /// the hot shards are only reported. At most one doubling per `intervalSeconds`: like a
    /// rebalance, it needs the ring in place and the last round started that long ago.
    fn split_hot_shards(
        &mut self,
        published: &'a PublishedRing,
        result: &Balance,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        let shards = ring.shards().get();
        if result.too_hot.is_empty()
            || self.obs.spec.shards.is_some()
            || shards >= locus_contract::ring::MAX_SHARDS
        {
            return Ok(None);
        }
        let doubled = shards * 2;
        let hottest = &result.too_hot[0];
        self.shards = ShardCount::new(doubled)?;
        let Some(mut decision) = self.reshard(published)? else {
            return Ok(None);
        };
        let note = format!(
            "busiest pod at {}% of the mean (trigger {}%) and {} shards too hot for any pod (the hottest, shard {} on slot {}, alone at {}% of the mean): shards {shards} -> {doubled}, each split in two in place, nothing moved; the next rounds place the halves",
            percent(result.before),
            self.obs.spec.placement.trigger_percent,
            result.too_hot.len(),
            hottest.shard,
            hottest.slot,
            percent(hottest.ratio),
        );
        self.event(false, reasons::SPLIT_HOT_SHARDS, note.clone());
        self.load_note = Some(note);
        if let Some(meta) = decision.publish.as_mut().and_then(|p| p.meta.as_mut()) {
            meta.last_rebalance = Some(RebalanceRecord {
                started_at: whole_seconds(self.obs.now),
                from_version: ring.version(),
                shards_moved: 0,
                busiest_percent_before: percent(result.before),
                busiest_percent_predicted: percent(result.before),
                split_to_shards: Some(doubled),
            });
        }
        Ok(Some(decision))
    }

    /// Hysteresis: records in `status.placement.triggerHeld` whether the trigger holds in the
    /// usable reports of `measure`, and returns true if it held as well in reports of earlier
    /// windows of every pod, for the same ring (the windows before: a report is written at
    /// least every other window, and any report within the trigger in between clears the
    /// record).
    fn hold_trigger(&mut self, ring: &Ring, measure: &Measure, result: &Balance) -> bool {
        let Some((earliest, latest)) = measure.window_ends else {
            return false;
        };
        self.trigger_read = true;
        if !result.triggered {
            self.trigger_held = None;
            return false;
        }
        let held = self
            .obs
            .status
            .and_then(|s| s.placement.as_ref())
            .and_then(|p| p.trigger_held.as_ref())
            .filter(|h| h.ring_version == ring.version());
        match held {
            Some(held) if earliest > held.window_end_ms => {
                // Confirmed; the record stays until the rebalance's new ring replaces it.
                self.trigger_held = Some(held.clone());
                true
            }
            Some(held) => {
                self.trigger_held = Some(held.clone());
                false
            }
            None => {
                self.trigger_held = Some(TriggerHeld {
                    ring_version: ring.version(),
                    window_end_ms: latest,
                    busiest_percent: percent(result.before),
                });
                false
            }
        }
    }

    /// `status.placement` with `balance: Load` (`None` otherwise), from the measure the step
    /// took, or else from the ring this pass leaves (the hot shards as last measured while the
    /// reports are not usable); emits `HotShards` when the set of shards too hot for any pod
    /// changes to a non-empty one.
    pub(super) fn placement_status(
        &mut self,
        ring: Option<&Ring>,
        meta: Option<&RingMeta>,
    ) -> Option<PlacementStatus> {
        if self.obs.spec.placement.balance != BalanceMode::Load {
            return None;
        }
        let measured = match self.measured.take() {
            Some((_, measure)) => Some(measure),
            None => ring.map(|r| self.measure(r, meta)),
        };
        let message = self.load_note.take().or_else(|| {
            ring.filter(|r| r.phase() != ring::Phase::Stable)
                .map(|_| "a transition is in progress".to_owned())
        });
        // Hot shards as last measured: kept while the reports are not usable (in a transition,
        // until every pod reported for the new ring).
        let previous_hot = self
            .obs
            .status
            .and_then(|s| s.placement.as_ref())
            .map(|p| p.hot_shards.clone())
            .unwrap_or_default();
        // The trigger as this pass found it, or as the last status recorded it while no usable
        // reports were read; only for the ring this pass leaves.
        let trigger_held = if self.trigger_read {
            self.trigger_held.take()
        } else {
            self.obs
                .status
                .and_then(|s| s.placement.as_ref())
                .and_then(|p| p.trigger_held.clone())
        }
        .filter(|h| ring.is_some_and(|r| r.version() == h.ring_version));
        let mut status = PlacementStatus {
            message,
            last_rebalance: meta.and_then(|m| m.last_rebalance.clone()),
            hot_shards: previous_hot,
            trigger_held,
            ..PlacementStatus::default()
        };
        if let Some(measure) = measured {
            if let Some(Ok(result)) = &measure.balance {
                status.busiest_percent = Some(percent(result.before));
                status.hot_shards = result
                    .too_hot
                    .iter()
                    .take(MAX_HOT_IN_STATUS)
                    .map(|h| HotShardStatus {
                        shard: h.shard,
                        slot: u32::from(h.slot),
                        requests_per_second: tenth(h.load),
                        percent_of_mean: percent(h.ratio),
                    })
                    .collect();
            }
            status.pods = measure.pods;
        }
        self.hot_shards_event(&status);
        Some(status)
    }

    fn hot_shards_event(&mut self, status: &PlacementStatus) {
        let shards = |list: &[HotShardStatus]| list.iter().map(|h| h.shard).collect::<Vec<_>>();
        let now = shards(&status.hot_shards);
        let before = self
            .obs
            .status
            .and_then(|s| s.placement.as_ref())
            .map(|p| shards(&p.hot_shards))
            .unwrap_or_default();
        if now.is_empty() || now == before {
            return;
        }
        let list: Vec<String> = status
            .hot_shards
            .iter()
            .map(|h| {
                format!(
                    "shard {} on slot {} at {}% of the mean",
                    h.shard, h.slot, h.percent_of_mean
                )
            })
            .collect();
        self.event(
            true,
            reasons::HOT_SHARDS,
            format!(
                "{} shards are too hot for any pod (alone above {}% of the mean pod load): {}; doubling spec.shards splits them",
                now.len(),
                self.obs.spec.placement.target_percent,
                list.join(", ")
            ),
        );
    }
}
