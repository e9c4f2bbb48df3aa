//! The `Warm` and `Switch` steps of a transition.

use locus::ring::{self, Assignment, Phase, Ring, RingError, SlotState, Transition};

use super::{Decision, Planner, gainers, losers, members, plus};
use crate::plan::{PublishedRing, StepKind, reasons};

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
                    !o.live()
                        || (!o.ready
                            && now >= plus(o.ready_changed_at.unwrap_or(o.created_at), self.grace))
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
        let deadline = plus(Self::published_at(published), self.warm);
        let timed_out = !waiting.is_empty();
        if timed_out && self.obs.now < deadline {
            self.deadlines.push(deadline);
            return Ok(Decision::none());
        }
        let (next, moved) = self.switch_ring(ring, target)?;
        if timed_out {
            self.event(
                true,
                reasons::TIMEOUT,
                format!(
                    "warm step timed out after {:?} waiting for {waiting:?}: switching anyway (they load cold)",
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

    /// `Switch`: settle when every member observed it and every losing pod drained (or
    /// `timeouts.settle` / `timeouts.drain` passed).
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
        let losing_slots = losers(previous, ring.current());
        let drainers: Vec<&ring::Pod> = ring
            .slots()
            .iter()
            .filter_map(|s| match &s.predecessor {
                Some(p) => Some(p),
                None => losing_slots.contains(&s.index).then_some(&s.pod),
            })
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
        let not_drained: Vec<&str> = drainers
            .iter()
            .filter(|p| {
                reporting(p)
                    .and_then(|o| o.progress.drained)
                    .is_none_or(|v| v < version)
            })
            .map(|p| p.name.as_str())
            .collect();
        self.switch_observed = Some(not_observed.is_empty());
        let start = Self::published_at(published);
        let settle_deadline = plus(start, self.settle);
        let drain_deadline = plus(start, self.drain);
        let now = self.obs.now;
        let settle_ok = not_observed.is_empty() || now >= settle_deadline;
        let drain_ok = not_drained.is_empty() || now >= drain_deadline;
        if !(settle_ok && drain_ok) {
            if !not_observed.is_empty() {
                self.deadlines.push(settle_deadline);
            }
            if !not_drained.is_empty() {
                self.deadlines.push(drain_deadline);
            }
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
        if !not_drained.is_empty() {
            timed_out.push("drain");
            self.event(
                true,
                reasons::TIMEOUT,
                format!(
                    "drain timed out after {:?}: {not_drained:?} did not report drained for ring version {version}",
                    self.drain
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
        Ok(Decision::publish(next, meta))
    }
}
