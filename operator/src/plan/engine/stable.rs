//! The steps from no ring (creation) and from a `Stable` ring, in their order of priority.
//!
//! Why one file of about 800 lines: it is one concern, the choice of the next step from a
//! stable ring, read top to bottom in the order [`Planner::stable`] tries the steps (fresh
//! and restored rings, scale to zero, reshard, takeover, failures, handover, evictions, scale
//! down and up, rebalance, surge, rollout, normalize; the rebalance by load, before normalize,
//! is in `balance.rs`). Each step is a `Planner` method that reads the same planner state; cut
//! into files, the order of priority — the part a reader must check — would be spread over
//! several of them.

use std::collections::BTreeSet;

use locus_contract::ring::{self, Ring, RingError, RingParts, Slot, SlotState, Transition};

use super::{Decision, Planner, StableStep, members, plus, ring_pod};
use crate::crd::{PodFailurePolicy, TransitionKind};
use crate::plan::{
    MAX_SURGE, ObservedPod, PodPlan, PublishedRing, RememberedRing, RingMeta, StepKind, fencing,
    reasons,
};

impl<'a> Planner<'a> {
    // ----- no ring yet ------------------------------------------------------------------

    /// A fresh service: start a pod per slot; publish ring version 1 when all are Ready, or,
    /// after `timeouts.warm`, with the leading slots whose pods have an address (those not
    /// Ready yet marked `Unavailable`).
    pub(super) fn fresh(&mut self) -> Result<Decision, RingError> {
        let mut chosen = Vec::new();
        for s in 0..self.n {
            chosen.push(self.ensure_candidate(s, &[]));
        }
        if self.n == 0 {
            return Ok(Decision::none());
        }
        let all_ready = chosen
            .iter()
            .all(|c| c.is_some_and(|p| p.healthy() && p.address.is_some()));
        let mut timed_out = Vec::new();
        let prefix: Vec<&ObservedPod> = if all_ready {
            chosen.iter().flatten().copied().collect()
        } else {
            let Some(oldest) = chosen.iter().flatten().map(|p| self.created_since(p)).min() else {
                return Ok(Decision::none());
            };
            let deadline = plus(oldest, self.warm);
            if self.obs.now < deadline {
                self.deadlines.push(deadline);
                return Ok(Decision::none());
            }
            let prefix: Vec<&ObservedPod> = chosen
                .iter()
                .map_while(|c| c.filter(|p| p.live() && p.address.is_some()))
                .collect();
            if !prefix.iter().any(|p| p.healthy()) {
                return Ok(Decision::none());
            }
            timed_out.push("create".to_owned());
            prefix
        };
        let wait = self.obs.spec.on_pod_failure == PodFailurePolicy::Wait;
        let holders: Vec<u16> = prefix
            .iter()
            .filter(|p| wait || p.healthy())
            .map(|p| p.slot)
            .collect();
        let table = self.assign(None, &holders, false)?;
        let slots = prefix
            .iter()
            .filter_map(|p| {
                Some(Slot {
                    index: p.slot,
                    pod: ring_pod(p)?,
                    state: if p.healthy() {
                        SlotState::Active
                    } else {
                        SlotState::Unavailable
                    },
                    successor: None,
                    predecessor: None,
                })
            })
            .collect();
        // A ring ConfigMap deleted by hand (and not remembered) is recreated with a version
        // above every one known: readers ignore versions that are not newer than theirs.
        let known = self.highest_known_version();
        let version = known.saturating_add(1);
        let ring = Ring::new(RingParts {
            namespace: self.obs.namespace.to_owned(),
            service: self.obs.name.to_owned(),
            version,
            shards: self.shards,
            vnodes: self.vnodes,
            slots,
            current: table.assignment,
            transition: Transition::Stable,
        })?;
        if known > 0 {
            self.recreated_fresh(version);
        }
        if timed_out.is_empty() {
            self.event(
                false,
                reasons::RING_CREATED,
                format!(
                    "published ring version {version}: {} slots, {} shards",
                    self.n,
                    self.shards.get()
                ),
            );
        } else {
            self.event(
                true,
                reasons::TIMEOUT,
                format!(
                    "not every pod was Ready after {:?}: published ring version {version} with {} of {} slots ({} serving)",
                    self.warm,
                    ring.slots().len(),
                    self.n,
                    holders.len()
                ),
            );
        }
        self.step(None, StepKind::Create, self.shards.get(), None);
        Ok(Decision::publish(ring, self.meta(None, timed_out)))
    }

    /// The highest ring version the status recorded or a pod reported (0 if none).
    fn highest_recorded_version(&self) -> u64 {
        let status = self.obs.status.and_then(|s| s.ring_version).unwrap_or(0);
        let reported = self
            .obs
            .pods
            .iter()
            .flat_map(|p| [p.progress.observed, p.progress.warmed, p.progress.drained])
            .flatten()
            .max()
            .unwrap_or(0);
        status.max(reported)
    }

    /// The highest ring version anyone may hold: the status' ring version, the versions the
    /// pods reported, and the highest this operator saw (0 if none).
    pub(super) fn highest_known_version(&self) -> u64 {
        let remembered = self.obs.remembered.map_or(0, |r| r.highest);
        self.highest_recorded_version().max(remembered)
    }

    /// The warning of a ring recreated from the plan because the ring `ConfigMap` vanished and
    /// no copy of it was remembered.
    fn recreated_fresh(&mut self, version: u64) {
        self.event(
            true,
            reasons::RING_RECREATED,
            format!(
                "the ring ConfigMap was missing and this operator holds no copy of it (it restarted since): ring version {version} assigns the shards afresh to the running pods; sessions whose shards moved may be unavailable until their previous owners hand them over"
            ),
        );
    }

    /// The remembered ring, if the ring `ConfigMap` may be recreated from it: it belongs to
    /// this service and is at least as new as every version the status recorded or a pod
    /// reported (an older copy would give back shards that moved since).
    pub(super) fn remembered(&self) -> Option<&'a RememberedRing> {
        let recorded = self.highest_recorded_version();
        self.obs.remembered.filter(|r| {
            r.last.ring.version() >= recorded
                && r.last.ring.namespace() == self.obs.namespace
                && r.last.ring.service() == self.obs.name
        })
    }

    /// The ring `ConfigMap` is missing but this operator remembers the last ring: publish it
    /// again, unchanged but for a version above every one known, so that no shard moves
    /// without its handoff. The step it was in starts again (its deadlines run from now).
    pub(super) fn restore(
        &mut self,
        remembered: &'a RememberedRing,
    ) -> Result<Decision, RingError> {
        let last = &remembered.last;
        let mut parts = last.ring.parts().clone();
        parts.version = self.highest_known_version().saturating_add(1);
        let next = Ring::new(parts)?;
        self.event(
            true,
            reasons::RING_RECREATED,
            format!(
                "the ring ConfigMap was missing: republished the last ring this operator saw (version {}, phase {}) as version {}",
                last.ring.version(),
                last.ring.phase(),
                next.version()
            ),
        );
        self.step(None, StepKind::Direct, 0, None);
        let meta = self.meta_keep(last.meta.as_ref());
        Ok(Decision::publish(next, meta))
    }

    // ----- stable ring ------------------------------------------------------------------

    pub(super) fn stable(&mut self, published: &'a PublishedRing) -> Result<Decision, RingError> {
        if self.n == 0 {
            return self.scaled_to_zero(published);
        }
        let steps: [StableStep<'a>; 10] = [
            Self::reshard,
            Self::takeover,
            Self::failures,
            Self::evictions,
            Self::scale_down,
            Self::scale_up,
            Self::rebalance,
            Self::surge,
            Self::start_rollout,
            Self::balance_by_load,
        ];
        for step in steps {
            if let Some(decision) = step(self, published)? {
                return Ok(decision);
            }
        }
        self.normalize(published)
    }

    /// `replicas: 0`: every pod goes; the ring stays (a ring needs a slot) with every slot
    /// `Unavailable`.
    pub(super) fn scaled_to_zero(
        &mut self,
        published: &PublishedRing,
    ) -> Result<Decision, RingError> {
        let ring = &published.ring;
        if ring
            .slots()
            .iter()
            .all(|s| s.state == SlotState::Unavailable)
        {
            return Ok(Decision::none());
        }
        let mut parts = self.next_parts(ring);
        for slot in &mut parts.slots {
            slot.state = SlotState::Unavailable;
        }
        let next = Ring::new(parts)?;
        self.event(
            false,
            reasons::NORMALIZED,
            format!(
                "replicas is 0: ring version {} marks every slot unavailable",
                next.version()
            ),
        );
        self.step(None, StepKind::Direct, 0, None);
        Ok(Decision::publish(
            next,
            self.meta_keep(published.meta.as_ref()),
        ))
    }

    /// The shard count grew (`spec.shards`, or the count chosen for `spec.replicas`): split
    /// every shard in place (nothing moves) in one publish.
    pub(super) fn reshard(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        if self.shards.get() <= ring.shards().get() {
            return Ok(None);
        }
        let mut parts = self.next_parts(ring);
        while parts.shards.get() < self.shards.get() {
            parts.current = parts.current.split()?;
            parts.shards = parts.current.shard_count();
        }
        let next = Ring::new(parts)?;
        self.event(
            false,
            reasons::RESHARD,
            format!(
                "shards {} -> {}: every shard split in place, none moved (ring version {})",
                ring.shards().get(),
                self.shards.get(),
                next.version()
            ),
        );
        self.step(Some(TransitionKind::Reshard), StepKind::Direct, 0, None);
        let mut meta = self.meta_start(TransitionKind::Reshard, ring.version(), 0);
        meta = RingMeta {
            transition: meta.transition.map(|mut r| {
                r.finished_at = Some(r.started_at.clone());
                r.duration_seconds = Some(0.0);
                r
            }),
            ..meta
        };
        Ok(Some(Decision::publish(next, meta)))
    }

    /// Slots that hold shards but whose pod is not serving get their Ready replacement once
    /// the old pod is gone (deleted first if it still exists: it may still serve, cut off or
    /// paused); `Unavailable` slots whose pod is Ready again become `Active`.
    pub(super) fn takeover(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        let held = members(ring.current());
        let mut parts = self.next_parts(ring);
        let mut notes = Vec::new();
        let mut fenced = Vec::new();
        let mut waiting = false;
        for slot in &mut parts.slots {
            if !held.contains(&slot.index) {
                continue;
            }
            let pod = self.find(&slot.pod);
            if pod.is_some_and(ObservedPod::healthy) {
                if slot.state == SlotState::Unavailable {
                    slot.state = SlotState::Active;
                    notes.push((
                        reasons::RECOVERED,
                        format!("slot {}: pod {} is Ready again", slot.index, slot.pod.name),
                    ));
                }
                continue;
            }
            // A pod being deleted that still serves hands over by the surge path instead.
            if pod.is_some_and(|p| p.deleting && p.ready && !p.terminal) {
                continue;
            }
            if let Some(candidate) = self.ready_candidates.get(&slot.index).copied()
                && let Some(new_pod) = ring_pod(candidate)
            {
                // The old pod may still serve (cut off, paused, slow): the replacement takes
                // the slot over only once it is gone.
                if let Some(old) = pod {
                    waiting = true;
                    if self.fence(old, fencing::REPLACED) {
                        fenced.push(format!(
                            "slot {}: pod {} is Ready to take over from {}, which is not Ready: {} is deleted first, {} takes over once it is gone",
                            slot.index, new_pod.name, old.name, old.name, new_pod.name
                        ));
                    }
                    continue;
                }
                notes.push((
                    reasons::TAKEOVER,
                    format!(
                        "slot {}: pod {} took over from {}, which is not Ready",
                        slot.index, new_pod.name, slot.pod.name
                    ),
                ));
                slot.pod = new_pod;
                slot.state = SlotState::Active;
            }
        }
        for note in fenced {
            self.event(false, reasons::TAKEOVER, note);
        }
        if notes.is_empty() {
            // A replacement waiting for the old pod to be gone: nothing else starts meanwhile
            // (in particular no failure policy for that slot, which has its replacement).
            return Ok(waiting.then(Decision::none));
        }
        let next = Ring::new(parts)?;
        for (reason, note) in notes {
            self.event(
                false,
                reason,
                format!("{note} (ring version {})", next.version()),
            );
        }
        self.step(None, StepKind::Direct, 0, None);
        Ok(Some(Decision::publish(
            next,
            self.meta_keep(published.meta.as_ref()),
        )))
    }

    /// Slots whose pod has not been Ready for `unreadyGrace` (or is gone) and that have no
    /// Ready replacement: `Wait` marks them `Unavailable`; `Reroute` moves their shards to the
    /// other slots in a `Switch` ring (no warm-up: there is nothing to warm from).
    pub(super) fn failures(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        let now = self.obs.now;
        let held = members(ring.current());
        let reroute = self.obs.spec.on_pod_failure == PodFailurePolicy::Reroute;
        let mut failed = BTreeSet::new();
        for slot in ring.slots() {
            if !held.contains(&slot.index) {
                continue;
            }
            if !reroute && slot.state == SlotState::Unavailable {
                continue;
            }
            let pod = self.find(&slot.pod);
            if pod.is_some_and(|p| p.ready && !p.terminal) {
                continue;
            }
            let deadline = plus(self.down_since(slot.index, pod), self.grace);
            if now >= deadline {
                failed.insert(slot.index);
            } else {
                self.deadlines.push(deadline);
            }
        }
        if failed.is_empty() {
            return Ok(None);
        }
        let survivors: Vec<u16> = ring
            .slots()
            .iter()
            .filter(|s| {
                held.contains(&s.index)
                    && !failed.contains(&s.index)
                    && s.state != SlotState::Unavailable
            })
            .map(|s| s.index)
            .collect();
        let mut parts = self.next_parts(ring);
        if reroute && !survivors.is_empty() {
            let table = self.assign(Some(ring.current()), &survivors, false)?;
            let previous = std::mem::replace(&mut parts.current, table.assignment);
            parts.transition = Transition::Switch { previous };
            for slot in &mut parts.slots {
                if failed.contains(&slot.index) {
                    slot.state = SlotState::Draining;
                }
            }
            let next = Ring::new(parts)?;
            // The failed pods may still serve (cut off, paused): deleted, so that they are
            // fenced once gone; the Switch settles only then (or when they drained).
            let mut deleted = Vec::new();
            for slot in ring.slots() {
                if failed.contains(&slot.index)
                    && let Some(pod) = self.find(&slot.pod)
                {
                    self.fence(pod, fencing::REROUTED);
                    deleted.push(pod.name.as_str());
                }
            }
            self.event(
                true,
                reasons::REROUTED,
                format!(
                    "slots {failed:?} not Ready for {:?}: {} shards moved to the other slots (ring version {}); pods {deleted:?} deleted: the new owners take the sessions over from their hand-off or, once they are gone, from the persistence",
                    self.grace,
                    table.moved,
                    next.version()
                ),
            );
            self.step(
                Some(TransitionKind::Reroute),
                StepKind::Switch,
                table.moved,
                None,
            );
            let meta = self.meta_start(TransitionKind::Reroute, ring.version(), table.moved);
            return Ok(Some(Decision::publish(next, meta)));
        }
        let mut changed = false;
        for slot in &mut parts.slots {
            if failed.contains(&slot.index) && slot.state != SlotState::Unavailable {
                slot.state = SlotState::Unavailable;
                changed = true;
            }
        }
        if !changed {
            return Ok(None);
        }
        let next = Ring::new(parts)?;
        self.event(
            true,
            reasons::UNAVAILABLE,
            format!(
                "slots {failed:?} not Ready for {:?}: marked unavailable until a replacement is Ready (ring version {})",
                self.grace,
                next.version()
            ),
        );
        self.step(None, StepKind::Direct, 0, None);
        Ok(Some(Decision::publish(
            next,
            self.meta_keep(published.meta.as_ref()),
        )))
    }

    /// Publishes a `Warm` ring in which each listed slot's Ready replacement is the slot's
    /// `successor`; the table does not change.
    pub(super) fn handover(
        &mut self,
        published: &PublishedRing,
        slots: &[(u16, &'a ObservedPod)],
        why: &str,
    ) -> Result<Option<Decision>, RingError> {
        if slots.is_empty() {
            return Ok(None);
        }
        let ring = &published.ring;
        let mut parts = self.next_parts(ring);
        parts.transition = Transition::Warm {
            target: ring.current().clone(),
        };
        let mut names = Vec::new();
        for &(index, pod) in slots {
            if let Some(slot) = parts.slots.get_mut(usize::from(index)) {
                slot.successor = ring_pod(pod);
                names.push(format!("{} -> {}", slot.pod.name, pod.name));
            }
        }
        let next = Ring::new(parts)?;
        self.event(
            false,
            reasons::WARM,
            format!(
                "{why}: surge handoff {} (ring version {})",
                names.join(", "),
                next.version()
            ),
        );
        self.step(Some(TransitionKind::Rollout), StepKind::Warm, 0, None);
        let meta = self.meta_start(TransitionKind::Rollout, ring.version(), 0);
        Ok(Some(Decision::publish(next, meta)))
    }

    /// Pods deleted from outside (eviction, node drain) that still serve: their Ready
    /// replacement warms the slot and takes it over.
    pub(super) fn evictions(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        let held = members(ring.current());
        let slots: Vec<(u16, &ObservedPod)> = ring
            .slots()
            .iter()
            .filter(|s| held.contains(&s.index))
            .filter(|s| {
                self.find(&s.pod)
                    .is_some_and(|p| p.deleting && p.ready && !p.terminal)
            })
            .filter_map(|s| Some((s.index, *self.ready_candidates.get(&s.index)?)))
            .take(MAX_SURGE.max(1))
            .collect();
        self.handover(published, &slots, "pods being deleted")
    }

    /// Slots `>= replicas` that hold shards leave: a `Warm` ring whose target gives their
    /// shards to the staying slots (capped by `maxShardMovesPerStep`).
    pub(super) fn scale_down(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        let held = members(ring.current());
        if held.iter().all(|&s| s < self.n) {
            return Ok(None);
        }
        let stay: Vec<u16> = held.iter().copied().filter(|&s| s < self.n).collect();
        if stay.is_empty() {
            // Nobody to give the shards to yet: the slots below replicas rejoin first.
            return Ok(None);
        }
        let planned = self.assign(Some(ring.current()), &stay, true)?;
        let mut parts = self.next_parts(ring);
        for slot in &mut parts.slots {
            if slot.index >= self.n && held.contains(&slot.index) {
                slot.state = SlotState::Leaving;
            }
        }
        parts.transition = Transition::Warm {
            target: planned.assignment,
        };
        let next = Ring::new(parts)?;
        self.event(
            false,
            reasons::WARM,
            format!(
                "scale down to {} slots: {} shards move from the leaving slots ({} more in later steps) (ring version {})",
                self.n,
                planned.moved,
                planned.remaining,
                next.version()
            ),
        );
        self.step(Some(TransitionKind::ScaleDown), StepKind::Warm, 0, None);
        let meta = self.meta_start(TransitionKind::ScaleDown, ring.version(), planned.moved);
        Ok(Some(Decision::publish(next, meta)))
    }

    /// Slots below `replicas` that hold no shards and have a Ready pod join: a `Warm` ring
    /// whose target gives them shards. New slots beyond the ring join in index order (the
    /// slot list has no gaps), so a slot whose pod is not Ready holds back those after it.
    pub(super) fn scale_up(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        let held = members(ring.current());
        let mut joiners: Vec<(u16, ring::Pod)> = Vec::new();
        for s in 0..self.n {
            match ring.slot(s) {
                Some(entry) => {
                    if held.contains(&s) {
                        continue;
                    }
                    let own = self
                        .find(&entry.pod)
                        .filter(|p| p.healthy() && p.address.is_some());
                    let pod = own.or_else(|| self.ready_candidates.get(&s).copied());
                    if let Some(pod) = pod.and_then(ring_pod) {
                        joiners.push((s, pod));
                    }
                }
                None => match self.ready_candidates.get(&s).copied().and_then(ring_pod) {
                    Some(pod) => joiners.push((s, pod)),
                    None => break,
                },
            }
        }
        if joiners.is_empty() {
            return Ok(None);
        }
        let mut slots: Vec<u16> = held.iter().copied().collect();
        slots.extend(joiners.iter().map(|(s, _)| *s));
        let planned = self.assign(Some(ring.current()), &slots, true)?;
        let mut parts = self.next_parts(ring);
        for (index, pod) in &joiners {
            let slot = Slot {
                index: *index,
                pod: pod.clone(),
                state: SlotState::Joining,
                successor: None,
                predecessor: None,
            };
            match parts.slots.get_mut(usize::from(*index)) {
                Some(existing) => *existing = slot,
                None => parts.slots.push(slot),
            }
        }
        parts.transition = Transition::Warm {
            target: planned.assignment,
        };
        let next = Ring::new(parts)?;
        let list: Vec<u16> = joiners.iter().map(|(s, _)| *s).collect();
        self.event(
            false,
            reasons::WARM,
            format!(
                "slots {list:?} join: {} shards move to them ({} more in later steps) (ring version {})",
                planned.moved,
                planned.remaining,
                next.version()
            ),
        );
        self.step(Some(TransitionKind::ScaleUp), StepKind::Warm, 0, None);
        let meta = self.meta_start(TransitionKind::ScaleUp, ring.version(), planned.moved);
        Ok(Some(Decision::publish(next, meta)))
    }

    /// A capped step left the table unbalanced for its slots: the next capped step (with
    /// `placement.balance` `Off` or `Load`, only to finish a membership change).
    pub(super) fn rebalance(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        if !self.evens_out_by_keys(published) {
            return Ok(None);
        }
        let held: Vec<u16> = members(ring.current()).into_iter().collect();
        let full = self.assign(Some(ring.current()), &held, false)?;
        if full.moved == 0 {
            return Ok(None);
        }
        let planned = self.assign(Some(ring.current()), &held, true)?;
        let kind = published
            .meta
            .as_ref()
            .and_then(|m| m.transition.as_ref())
            .map_or(TransitionKind::ScaleUp, |r| r.kind);
        let mut parts = self.next_parts(ring);
        parts.transition = Transition::Warm {
            target: planned.assignment,
        };
        let next = Ring::new(parts)?;
        self.event(
            false,
            reasons::WARM,
            format!(
                "rebalance: {} shards move ({} more in later steps) (ring version {})",
                planned.moved,
                planned.remaining,
                next.version()
            ),
        );
        self.step(Some(kind), StepKind::Warm, 0, None);
        let meta = self.meta_start(kind, ring.version(), planned.moved);
        Ok(Some(Decision::publish(next, meta)))
    }

    /// Rollout, surge strategy: slots whose surge pod is Ready hand over to it.
    pub(super) fn surge(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let slots: Vec<(u16, &ObservedPod)> = self
            .outdated
            .iter()
            .filter_map(|s| Some((*s, *self.ready_candidates.get(s)?)))
            .take(MAX_SURGE)
            .collect();
        self.handover(published, &slots, "rollout")
    }

    /// True when every wanted slot holds shards and is served by a Ready pod, and no slot
    /// beyond `replicas` holds any: the moment a rollout may proceed.
    pub(super) fn membership_settled(&self, ring: &Ring) -> bool {
        let held = members(ring.current());
        held.len() == usize::from(self.n)
            && held.iter().all(|&s| s < self.n)
            && (0..self.n).all(|s| {
                ring.slot(s)
                    .is_some_and(|e| e.state == SlotState::Active && self.healthy(&e.pod))
            })
            && self.waiting_for_pods.is_empty()
    }

    /// Starts the next piece of a rollout when nothing else is going on: an in-place update of
    /// one pod (`InPlace`, image-only change), or one surge pod.
    #[allow(
        clippy::unnecessary_wraps,
        reason = "one of the stable steps, which share a signature"
    )]
    pub(super) fn start_rollout(
        &mut self,
        published: &'a PublishedRing,
    ) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        if !self.membership_settled(ring) {
            return Ok(None);
        }
        // In place: one pod at a time; the next waits until the last runs its new image.
        let updating = ring.slots().iter().any(|s| {
            self.find(&s.pod).is_some_and(|p| {
                p.revision == self.revision
                    && p.shape.as_deref() == Some(self.shape.as_str())
                    && !(p.ready && p.images_current)
            })
        });
        let eligible = ring.slots().iter().find_map(|s| {
            self.find(&s.pod)
                .filter(|p| p.healthy() && self.in_place_eligible(p))
                .map(|p| (s.index, p))
        });
        if let Some((slot, pod)) = eligible {
            if !updating {
                self.update.push(PodPlan {
                    name: pod.name.clone(),
                    slot,
                    revision: self.revision.clone(),
                });
                self.event(
                    false,
                    reasons::IN_PLACE,
                    format!(
                        "slot {slot}: pod {} restarts in place with revision {}",
                        pod.name, self.revision
                    ),
                );
                self.step(Some(TransitionKind::InPlace), StepKind::InPlace, 0, None);
            }
            return Ok(None);
        }
        if updating {
            return Ok(None);
        }
        let surging = self
            .outdated
            .iter()
            .filter(|s| {
                self.pods_of(**s)
                    .any(|p| p.live() && p.revision == self.revision)
            })
            .count();
        if surging >= MAX_SURGE {
            return Ok(None);
        }
        if let Some(&slot) = self.outdated.first() {
            self.plan_create(slot);
            self.event(
                false,
                reasons::SURGE,
                format!(
                    "slot {slot}: surge pod for revision {} started",
                    self.revision
                ),
            );
        }
        Ok(None)
    }

    /// Nothing to do but possibly tidy the slot list and states.
    pub(super) fn normalize(&mut self, published: &PublishedRing) -> Result<Decision, RingError> {
        let ring = &published.ring;
        let mut parts = self.next_parts(ring);
        self.normalize_stable(&mut parts);
        if parts.slots == ring.slots() {
            return Ok(Decision::none());
        }
        let next = Ring::new(parts)?;
        self.event(
            false,
            reasons::NORMALIZED,
            format!(
                "slot list tidied: {} slots (ring version {})",
                next.slots().len(),
                next.version()
            ),
        );
        self.step(None, StepKind::Direct, 0, None);
        Ok(Decision::publish(
            next,
            self.meta_keep(published.meta.as_ref()),
        ))
    }
}
