//! The `Warm` and `Switch` steps of a transition.

use std::collections::BTreeSet;

use locus_contract::ring::{self, Assignment, Phase, Ring, RingError, SlotState, Transition};

use super::{Decision, Planner, accounting, gainers, losers, members, plus};
use crate::crd::PROGRESSING;
use crate::plan::{ObservedPod, PublishedRing, RingMeta, StepKind, fencing, reasons};

impl<'a> Planner<'a> {
    // ----- warm ring --------------------------------------------------------------------

    /// `Warm`: switch when every gaining pod warmed (or `timeouts.warm` passed); withdraw the
    /// ring if a gaining pod is gone or has not been Ready for `unreadyGrace`.
    pub(super) fn warm(&mut self, published: &'a PublishedRing) -> Result<Decision, RingError> {
        let ring = &published.ring;
        let version = ring.version();
        let Some(target) = ring.target() else {
            return Ok(Decision::none());
        };
        let gaining_slots = gainers(ring.current(), target);
        let gaining: Vec<&ring::Pod> = ring
            .slots()
            .iter()
            .filter_map(|s| match &s.successor {
                Some(successor) => Some(successor),
                None => gaining_slots.contains(&s.index).then_some(&s.pod),
            })
            .collect();
        // A gaining pod that is gone, or has not been Ready for the grace period, cannot
        // take what it gains: withdraw the target rather than switch to it.
        let now = self.obs.now;
        let gone: Vec<&str> = gaining
            .iter()
            .filter(|p| {
                self.find(p).is_none_or(|o| {
                    !o.live() || (!o.ready && now >= plus(self.unready_since(o), self.grace))
                })
            })
            .map(|p| p.name.as_str())
            .collect();
        let kind = published
            .meta
            .as_ref()
            .and_then(|m| m.transition.as_ref())
            .map(|r| r.kind);
        if !gone.is_empty() {
            let mut parts = self.next_parts(ring);
            self.normalize_stable(&mut parts);
            let next = Ring::new(parts)?;
            self.event(
                true,
                reasons::ABORTED,
                format!(
                    "pods {gone:?} are gone or not Ready: ring version {version} withdrawn, ring version {} keeps the current table",
                    next.version()
                ),
            );
            self.step(kind, StepKind::Abort, 0, Some((published, Phase::Warm)));
            let meta = self.meta_step(published.meta.as_ref(), next.version(), &["abort"], true);
            return Ok(Decision::publish(next, meta));
        }
        let waiting: Vec<&str> = gaining
            .iter()
            .filter(|p| {
                self.find(p)
                    .and_then(|o| o.progress.warmed)
                    .is_none_or(|w| w < version)
            })
            .map(|p| p.name.as_str())
            .collect();
        let deadline = plus(self.step_start(published), self.warm);
        let timed_out = !waiting.is_empty();
        if timed_out && self.obs.now < deadline {
            self.deadlines.push(deadline);
            self.waiting = Some(format!(
                "Warm ring version {version} waits for {} to report warmed (timeouts.warm {:?}, until {})",
                pods_named(&waiting),
                self.warm,
                accounting::whole(deadline)
            ));
            return Ok(Decision::none());
        }
        let (next, moved) = self.switch_ring(ring, target)?;
        if timed_out {
            self.event(
                true,
                reasons::TIMEOUT,
                format!(
                    "warm step of ring version {version} timed out after {:?} waiting for {waiting:?}: switching anyway (what they did not pre-copy they take over at the first touch, or load cold)",
                    self.warm
                ),
            );
        }
        self.event(
            false,
            reasons::SWITCH,
            format!(
                "ring version {}: the target is current, {moved} shards changed owner",
                next.version()
            ),
        );
        self.step(
            kind,
            StepKind::Switch,
            moved,
            Some((published, Phase::Warm)),
        );
        let meta = self.meta_step(
            published.meta.as_ref(),
            next.version(),
            if timed_out { &["warm"] } else { &[] },
            false,
        );
        Ok(Decision::publish(next, meta))
    }

    /// The `Switch` ring that follows the `Warm` ring `ring`: `target` becomes current, the old
    /// table is kept as `previous`, successors replace their slot's pod (which becomes the
    /// predecessor), and slot states follow the new table. Also returns the shards moved.
    pub(super) fn switch_ring(
        &self,
        ring: &Ring,
        target: &Assignment,
    ) -> Result<(Ring, u32), RingError> {
        let mut parts = self.next_parts(ring);
        let previous = std::mem::replace(&mut parts.current, target.clone());
        let now_held = members(&parts.current);
        let before = members(&previous);
        for slot in &mut parts.slots {
            if let Some(successor) = slot.successor.take() {
                slot.predecessor = Some(std::mem::replace(&mut slot.pod, successor));
                slot.state = SlotState::Active;
                continue;
            }
            slot.state = if now_held.contains(&slot.index) {
                match slot.state {
                    SlotState::Unavailable => SlotState::Unavailable,
                    _ if slot.index >= self.n => SlotState::Leaving,
                    _ => SlotState::Active,
                }
            } else if before.contains(&slot.index) {
                SlotState::Draining
            } else {
                SlotState::Unavailable
            };
        }
        let moved = previous.moves_to(&parts.current)?.count() as u32;
        parts.transition = Transition::Switch { previous };
        Ok((Ring::new(parts)?, moved))
    }

    // ----- switch ring ------------------------------------------------------------------

    /// The losing pods of the `Switch` ring `ring` that are not fenced yet: the predecessors
    /// of replaced slots and the pods of slots that lost shards, that still exist (a pod with
    /// that name and UID is observed, Ready or not, terminating or not) and have not reported
    /// drained for the ring's version. Each comes with whether it leaves anyway (see
    /// [`Self::retiring`]).
    fn unfenced_losers(&self, ring: &Ring, previous: &Assignment) -> Vec<(&'a ObservedPod, bool)> {
        let version = ring.version();
        let held = members(ring.current());
        let losing_slots = losers(previous, ring.current());
        ring.slots()
            .iter()
            .filter_map(|s| match &s.predecessor {
                Some(p) => Some((p, true)),
                None => losing_slots
                    .contains(&s.index)
                    .then(|| (&s.pod, Self::retiring(s, &held))),
            })
            .filter_map(|(p, retiring)| self.find(p).map(|o| (o, retiring)))
            .filter(|(o, _)| o.progress.drained.is_none_or(|d| d < version))
            .collect()
    }

    /// Whether the pod of `slot`, which lost shards, leaves anyway: its slot holds no shard
    /// any more (scale down, `Reroute`), or the slot is marked `Unavailable` (its pod failed;
    /// a replacement takes over once it is gone).
    fn retiring(slot: &ring::Slot, held: &BTreeSet<u16>) -> bool {
        !held.contains(&slot.index) || slot.state == SlotState::Unavailable
    }

    /// `Switch`: settle when every member observed it (or `timeouts.settle` passed) and every
    /// losing pod is fenced — reported drained for this version, or gone. A timeout never
    /// settles by itself: past `timeouts.drain`, losing pods that leave anyway are deleted (and
    /// the ring settles once they are gone), the others are waited for (`DrainStalled`).
    pub(super) fn switch(&mut self, published: &'a PublishedRing) -> Result<Decision, RingError> {
        let ring = &published.ring;
        let version = ring.version();
        let Some(previous) = ring.previous() else {
            return Ok(Decision::none());
        };
        let reporting = |p: &ring::Pod| self.find(p).filter(|o| o.ready && !o.terminal);
        let observers: Vec<&ring::Pod> = ring
            .slots()
            .iter()
            .flat_map(|s| std::iter::once(&s.pod).chain(s.predecessor.as_ref()))
            .filter(|p| reporting(p).is_some())
            .collect();
        let not_observed: Vec<&str> = observers
            .iter()
            .filter(|p| {
                reporting(p)
                    .and_then(|o| o.progress.observed)
                    .is_none_or(|v| v < version)
            })
            .map(|p| p.name.as_str())
            .collect();
        let unfenced = self.unfenced_losers(ring, previous);
        self.switch_observed = Some(not_observed.is_empty());
        let start = self.step_start(published);
        let settle_deadline = plus(start, self.settle);
        let drain_deadline = plus(start, self.drain);
        let now = self.obs.now;
        let settle_ok = not_observed.is_empty() || now >= settle_deadline;
        if !settle_ok {
            self.deadlines.push(settle_deadline);
        }
        let observing = (!settle_ok).then(|| {
            format!(
                "{} to report observing it (timeouts.settle {:?}, until {})",
                pods_named(&not_observed),
                self.settle,
                accounting::whole(settle_deadline)
            )
        });
        if !unfenced.is_empty() {
            if now < drain_deadline {
                self.deadlines.push(drain_deadline);
                self.waiting = Some(self.drain_waiting(
                    version,
                    &unfenced,
                    drain_deadline,
                    observing.as_deref(),
                ));
            } else {
                self.drain_stalled(version, &unfenced);
            }
            return Ok(Decision::none());
        }
        if let Some(observing) = observing {
            self.waiting = Some(format!(
                "Switch ring version {version} waits for {observing}"
            ));
            return Ok(Decision::none());
        }
        let mut timed_out = Vec::new();
        if !not_observed.is_empty() {
            timed_out.push("settle");
            self.event(
                true,
                reasons::TIMEOUT,
                format!(
                    "settle step timed out after {:?}: {not_observed:?} did not report ring version {version}",
                    self.settle
                ),
            );
        }
        let mut parts = self.next_parts(ring);
        self.normalize_stable(&mut parts);
        let next = Ring::new(parts)?;
        let kind = published
            .meta
            .as_ref()
            .and_then(|m| m.transition.as_ref())
            .map(|r| r.kind);
        self.event(
            false,
            reasons::SETTLE,
            format!("ring version {} is stable", next.version()),
        );
        self.step(kind, StepKind::Settle, 0, Some((published, Phase::Switch)));
        let meta = self.meta_step(published.meta.as_ref(), next.version(), &timed_out, true);
        Ok(Decision::publish(
            next,
            self.with_gone_losers(meta, ring, previous),
        ))
    }

    /// `meta` of the ring settling the `Switch` ring `ring`, with its losing pods
    /// (predecessors and the pods of slots that lost shards) that are gone rather than drained
    /// added to the record: their keys' new owners load what they did not take over without
    /// an answer from them (`coldPreviousGone`).
    fn with_gone_losers(&self, mut meta: RingMeta, ring: &Ring, previous: &Assignment) -> RingMeta {
        let losing_slots = losers(previous, ring.current());
        let gone = ring
            .slots()
            .iter()
            .filter_map(|s| match &s.predecessor {
                Some(p) => Some(p),
                None => losing_slots.contains(&s.index).then_some(&s.pod),
            })
            .filter(|p| self.find(p).is_none());
        if let Some(record) = meta.transition.as_mut() {
            for pod in gone {
                if !record.losers_gone.contains(&pod.name) {
                    record.losers_gone.push(pod.name.clone());
                }
            }
        }
        meta
    }

    /// What a `Switch` waiting for its losing pods to drain says it waits for.
    fn drain_waiting(
        &self,
        version: u64,
        unfenced: &[(&'a ObservedPod, bool)],
        deadline: k8s_openapi::jiff::Timestamp,
        observing: Option<&str>,
    ) -> String {
        let names: Vec<&str> = unfenced.iter().map(|(p, _)| p.name.as_str()).collect();
        let mut message = format!(
            "Switch ring version {version} waits for {} to report drained (timeouts.drain {:?}, until {})",
            pods_named(&names),
            self.drain,
            accounting::whole(deadline)
        );
        if let Some(observing) = observing {
            message.push_str(", and for ");
            message.push_str(observing);
        }
        message
    }

    /// Past `timeouts.drain` with losing pods not fenced: deletes those that leave anyway (or
    /// have finished), waits for the others, and says so — a `DrainStalled` warning (once per
    /// situation: not when the status already carries the same message) and condition.
    fn drain_stalled(&mut self, version: u64, unfenced: &[(&'a ObservedPod, bool)]) {
        let mut notes = Vec::new();
        for &(pod, retiring) in unfenced {
            let note = if retiring || pod.terminal || pod.deleting {
                self.fence(pod, fencing::DRAIN_STALLED);
                "deleted: fenced once it is gone"
            } else {
                "stays in the ring: waiting for its drained report (deleting the pod fences it)"
            };
            notes.push(format!("{} ({note})", pod.name));
        }
        let message = format!(
            "ring version {version} waits past timeouts.drain ({:?}) for pods that lost shards to report drained or be gone: {}",
            self.drain,
            notes.join(", ")
        );
        let reported = self.obs.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == PROGRESSING && c.reason == reasons::DRAIN_STALLED && c.message == message
            })
        });
        if !reported {
            self.event(true, reasons::DRAIN_STALLED, message.clone());
        }
        self.drain_stall = Some(message);
    }
}

/// "pod a" or "pods a, b" (at most ten names).
fn pods_named(names: &[&str]) -> String {
    let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let list = accounting::join_bounded(&owned);
    if names.len() == 1 {
        format!("pod {list}")
    } else {
        format!("pods {list}")
    }
}
