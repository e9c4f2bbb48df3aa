//! The planner's decision procedure; the state machine is described in the documentation of
//! the parent module.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use locus::ring::{
    self, Assignment, Phase, Ring, RingError, RingParts, ShardCount, Slot, SlotState, Transition,
};

use super::status::{self, StatusFacts};
use super::{
    Actions, MAX_SURGE, Observed, ObservedPod, PlannedEvent, PodDeletion, PodPlan, PublishedRing,
    RingMeta, StepKind, StepRecord, naming, reasons,
};
use crate::crd::{PodFailurePolicy, TransitionKind, TransitionRecord, UpdateStrategyType};

/// A small margin added to deadlines, so the requeued pass finds them passed.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// The slots that hold at least one shard under `table`.
fn members(table: &Assignment) -> BTreeSet<u16> {
    table.counts().into_keys().collect()
}

/// Slots that hold, under `to`, a shard they did not hold under `from` (the gaining slots).
fn gainers(from: &Assignment, to: &Assignment) -> BTreeSet<u16> {
    from.as_slice()
        .iter()
        .zip(to.as_slice())
        .filter(|(a, b)| a != b)
        .map(|(_, &b)| b)
        .collect()
}

/// Slots that held, under `from`, a shard they do not hold under `to` (the losing slots).
fn losers(from: &Assignment, to: &Assignment) -> BTreeSet<u16> {
    gainers(to, from)
}

fn plus(at: Timestamp, duration: Duration) -> Timestamp {
    at.saturating_add(duration).unwrap_or(Timestamp::MAX)
}

/// A `Time` at whole seconds, as the API server stores it, so that a status computed twice
/// compares equal to the one read back.
fn whole_seconds(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

/// The ring form of an observed pod, if it has an address.
fn ring_pod(pod: &ObservedPod) -> Option<ring::Pod> {
    pod.address.map(|address| ring::Pod {
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        address,
    })
}

/// What a planner pass decided about the ring.
struct Decision {
    publish: Option<PublishedRing>,
}

impl Decision {
    fn none() -> Self {
        Self { publish: None }
    }

    fn publish(ring: Ring, meta: RingMeta) -> Self {
        Self {
            publish: Some(PublishedRing {
                ring,
                meta: Some(meta),
            }),
        }
    }
}

/// One candidate transition from a `Stable` ring: `Some` if it applies.
type StableStep<'a> =
    fn(&mut Planner<'a>, &'a PublishedRing) -> Result<Option<Decision>, RingError>;

pub(super) struct Planner<'a> {
    obs: &'a Observed<'a>,
    /// Desired number of slots.
    n: u16,
    revision: String,
    shape: String,
    shards: ShardCount,
    vnodes: u32,
    grace: Duration,
    warm: Duration,
    drain: Duration,
    settle: Duration,
    max_moves: Option<NonZeroU32>,
    /// Pods to keep besides those the final ring names.
    keep: BTreeSet<String>,
    /// A Ready replacement, new-slot or surge pod with an address, per slot.
    ready_candidates: BTreeMap<u16, &'a ObservedPod>,
    /// Slots whose serving pod runs an old revision (a rollout is due).
    outdated: Vec<u16>,
    /// Slots that still wait for a pod to become Ready.
    waiting_for_pods: BTreeSet<u16>,
    /// In a `Switch` ring: whether every member observed it.
    switch_observed: Option<bool>,
    names: BTreeSet<String>,
    create: Vec<PodPlan>,
    update: Vec<PodPlan>,
    events: Vec<PlannedEvent>,
    steps: Vec<StepRecord>,
    deadlines: Vec<Timestamp>,
}

impl<'a> Planner<'a> {
    pub(super) fn new(obs: &'a Observed<'a>) -> Result<Self, RingError> {
        let spec = obs.spec;
        let n = u16::try_from(spec.replicas.max(0))
            .unwrap_or(u16::MAX)
            .min(ring::MAX_SLOTS as u16);
        let mut names: BTreeSet<String> = obs.pods.iter().map(|p| p.name.clone()).collect();
        if let Some(published) = obs.ring {
            for slot in published.ring.slots() {
                names.insert(slot.pod.name.clone());
                names.extend(slot.successor.iter().map(|p| p.name.clone()));
                names.extend(slot.predecessor.iter().map(|p| p.name.clone()));
            }
        }
        Ok(Self {
            obs,
            n,
            revision: naming::revision(&spec.template),
            shape: naming::shape(&spec.template),
            shards: ShardCount::new(spec.shards)?,
            vnodes: spec.vnodes,
            grace: spec.unready_grace.into(),
            warm: spec.timeouts.warm.into(),
            drain: spec.timeouts.drain.into(),
            settle: spec.timeouts.settle.into(),
            max_moves: spec.max_shard_moves_per_step.and_then(NonZeroU32::new),
            keep: BTreeSet::new(),
            ready_candidates: BTreeMap::new(),
            outdated: Vec::new(),
            waiting_for_pods: BTreeSet::new(),
            switch_observed: None,
            names,
            create: Vec::new(),
            update: Vec::new(),
            events: Vec::new(),
            steps: Vec::new(),
            deadlines: Vec::new(),
        })
    }

    pub(super) fn run(mut self) -> Result<Actions, RingError> {
        let decision = match self.obs.ring {
            None => self.fresh()?,
            Some(published) => {
                self.slot_candidates(&published.ring);
                match published.ring.phase() {
                    Phase::Stable => self.stable(published)?,
                    Phase::Warm => self.warm(published)?,
                    Phase::Switch => self.switch(published)?,
                }
            }
        };
        let final_ring = decision.publish.as_ref().or(self.obs.ring).map(|p| &p.ring);
        let delete = self.deletions(final_ring);
        let final_meta = decision
            .publish
            .as_ref()
            .or(self.obs.ring)
            .and_then(|p| p.meta.as_ref());
        let converged = self.converged(final_ring, &delete);
        // A Switch ring published in this pass has not been observed by anyone yet.
        let switch_observed = match decision.publish.as_ref() {
            Some(p) if p.ring.phase() == Phase::Switch => false,
            _ => self.switch_observed.unwrap_or(true),
        };
        let leaving: BTreeSet<&str> = delete.iter().map(|d| d.uid.as_str()).collect();
        let status = status::build(&StatusFacts {
            obs: self.obs,
            n: self.n,
            ring: final_ring,
            meta: final_meta,
            leaving: &leaving,
            switch_observed,
            converged,
            revision: &self.revision,
        });
        let now = self.obs.now;
        let requeue_after = self
            .deadlines
            .iter()
            .filter(|&&d| d > now)
            .min()
            .map(|&d| d.duration_since(now).unsigned_abs() + DEADLINE_MARGIN);
        Ok(Actions {
            create: self.create,
            update: self.update,
            delete,
            publish: decision.publish,
            status,
            events: self.events,
            steps: self.steps,
            requeue_after,
        })
    }

    // ----- pods -------------------------------------------------------------------------

    fn pods_of(&self, slot: u16) -> impl Iterator<Item = &'a ObservedPod> + '_ {
        self.obs.pods.iter().filter(move |p| p.slot == slot)
    }

    /// The observed pod behind a ring entry (same name and UID).
    fn find(&self, pod: &ring::Pod) -> Option<&'a ObservedPod> {
        self.obs
            .pods
            .iter()
            .find(|p| p.uid == pod.uid && p.name == pod.name)
    }

    fn healthy(&self, pod: &ring::Pod) -> bool {
        self.find(pod).is_some_and(ObservedPod::healthy)
    }

    fn in_place_eligible(&self, pod: &ObservedPod) -> bool {
        self.obs.spec.update_strategy.type_ == UpdateStrategyType::InPlace
            && pod.revision != self.revision
            && pod.shape.as_deref() == Some(self.shape.as_str())
    }

    /// A name for a new pod of `slot` that no known pod uses.
    fn fresh_name(&self, slot: u16) -> String {
        (0..u32::MAX)
            .map(|attempt| {
                naming::pod_name(self.obs.name, self.obs.uid, slot, &self.revision, attempt)
            })
            .find(|name| !self.names.contains(name))
            .unwrap_or_default()
    }

    fn plan_create(&mut self, slot: u16) {
        let name = self.fresh_name(slot);
        self.names.insert(name.clone());
        self.keep.insert(name.clone());
        self.create.push(PodPlan {
            name,
            slot,
            revision: self.revision.clone(),
        });
        self.waiting_for_pods.insert(slot);
    }

    /// The best existing candidate pod for `slot` (current revision, live, not one of the
    /// `serving` pods the ring names), kept; `None` if there is none.
    fn existing_candidate(&mut self, slot: u16, serving: &[&str]) -> Option<&'a ObservedPod> {
        let best = self
            .pods_of(slot)
            .filter(|p| {
                p.live() && p.revision == self.revision && !serving.contains(&p.uid.as_str())
            })
            .min_by(|a, b| {
                (!a.ready, a.created_at, &a.name).cmp(&(!b.ready, b.created_at, &b.name))
            })?;
        self.keep.insert(best.name.clone());
        if best.ready && best.address.is_some() {
            self.ready_candidates.insert(slot, best);
        } else {
            self.waiting_for_pods.insert(slot);
        }
        Some(best)
    }

    /// Keeps the best candidate for `slot`, or plans a new pod if there is none.
    fn ensure_candidate(&mut self, slot: u16, serving: &[&str]) -> Option<&'a ObservedPod> {
        let found = self.existing_candidate(slot, serving);
        if found.is_none() {
            self.plan_create(slot);
        }
        found
    }

    /// Decides which slots need another pod than the one the ring names: slots beyond the
    /// ring, slots whose pod failed (past the grace period), is gone or is being deleted, and
    /// slots whose pod runs an old revision (rollout; new surge pods are only planned when
    /// nothing else is going on, see [`Self::start_rollout`]).
    fn slot_candidates(&mut self, ring: &'a Ring) {
        let now = self.obs.now;
        let current = members(ring.current());
        let target = ring.target().map(members).unwrap_or_default();
        for s in 0..self.n {
            let Some(entry) = ring.slot(s) else {
                self.ensure_candidate(s, &[]);
                continue;
            };
            if entry.successor.is_some() {
                continue;
            }
            let serving: Vec<&str> = std::iter::once(entry.pod.uid.as_str())
                .chain(entry.predecessor.iter().map(|p| p.uid.as_str()))
                .collect();
            let member = current.contains(&s) || target.contains(&s);
            match self.find(&entry.pod) {
                Some(pod) if pod.healthy() => {
                    if pod.revision != self.revision && !self.in_place_eligible(pod) {
                        self.outdated.push(s);
                    }
                }
                // Not Ready: a replacement after the grace period (at once for a slot already
                // marked unavailable). The pod itself is kept while the grace runs.
                Some(pod) if pod.live() && !(member && entry.state == SlotState::Unavailable) => {
                    let since = pod.ready_changed_at.unwrap_or(pod.created_at);
                    let deadline = plus(since, self.grace);
                    if now < deadline {
                        self.deadlines.push(deadline);
                        self.keep.insert(pod.name.clone());
                        self.existing_candidate(s, &serving);
                    } else {
                        self.ensure_candidate(s, &serving);
                    }
                }
                _ => {
                    self.ensure_candidate(s, &serving);
                }
            }
        }
        // Surge pods already started for a rollout are kept, at most MAX_SURGE of them.
        let outdated = self.outdated.clone();
        let mut surging = 0;
        for s in outdated {
            if surging >= MAX_SURGE {
                break;
            }
            let entry = ring.slot(s).map(|e| e.pod.uid.as_str()).unwrap_or_default();
            if self.existing_candidate(s, &[entry]).is_some() {
                surging += 1;
            }
        }
    }

    /// When a slot's pod stopped serving: the `Ready` condition's change for a live pod, the
    /// first replacement's creation for a pod that is gone, finished or being deleted (the
    /// replacement is created as soon as that is seen), else now.
    fn down_since(&self, slot: u16, pod: Option<&ObservedPod>) -> Timestamp {
        match pod {
            Some(p) if p.live() => p.ready_changed_at.unwrap_or(p.created_at),
            _ => self
                .pods_of(slot)
                .filter(|p| p.revision == self.revision && p.live())
                .map(|p| p.created_at)
                .min()
                .unwrap_or(self.obs.now),
        }
    }

    // ----- building rings ---------------------------------------------------------------

    fn next_parts(&self, ring: &Ring) -> RingParts {
        let mut parts = ring.parts().clone();
        parts.version += 1;
        parts.vnodes = self.vnodes;
        parts
    }

    fn assign(
        &self,
        previous: Option<&Assignment>,
        slots: &[u16],
        capped: bool,
    ) -> Result<ring::Plan, RingError> {
        ring::plan(&ring::PlanRequest {
            namespace: self.obs.namespace,
            service: self.obs.name,
            shards: previous.map_or(self.shards, Assignment::shard_count),
            vnodes: self.vnodes,
            previous,
            slots,
            max_moves: if capped { self.max_moves } else { None },
        })
    }

    /// Turns `parts` into a `Stable` ring: no second table, no handover pods, slot states
    /// derived from the table, trailing slots that neither hold shards nor are wanted dropped.
    fn normalize_stable(&self, parts: &mut RingParts) {
        parts.transition = Transition::Stable;
        let held = members(&parts.current);
        let old_len = parts.slots.len();
        for slot in &mut parts.slots {
            slot.successor = None;
            slot.predecessor = None;
            let member = held.contains(&slot.index);
            slot.state = match (member, slot.state) {
                (true, SlotState::Unavailable) | (false, _) => SlotState::Unavailable,
                (true, _) if slot.index >= self.n => SlotState::Leaving,
                (true, _) => SlotState::Active,
            };
        }
        let needed = held.iter().next_back().map_or(1, |&s| usize::from(s) + 1);
        let len = old_len.min(usize::from(self.n)).max(needed).max(1);
        parts.slots.truncate(len);
    }

    fn meta(&self, transition: Option<TransitionRecord>, timed_out: Vec<String>) -> RingMeta {
        RingMeta {
            published_at: self.obs.now,
            transition,
            timed_out,
        }
    }

    /// Bookkeeping for the first step of a transition.
    fn meta_start(&self, kind: TransitionKind, from: u64, moved: u32) -> RingMeta {
        self.meta(
            Some(TransitionRecord {
                kind,
                from_version: from,
                to_version: from + 1,
                shards_moved: moved,
                started_at: whole_seconds(self.obs.now),
                finished_at: None,
                duration_seconds: None,
                warm_hit_percent: None,
            }),
            Vec::new(),
        )
    }

    /// Bookkeeping for a later step of the transition in `old`; `finished` closes it.
    fn meta_step(
        &self,
        old: Option<&RingMeta>,
        to: u64,
        timed_out: &[&str],
        finished: bool,
    ) -> RingMeta {
        let mut record = old.and_then(|m| m.transition.clone());
        let mut timeouts = old.map(|m| m.timed_out.clone()).unwrap_or_default();
        timeouts.extend(timed_out.iter().map(|s| (*s).to_owned()));
        if let Some(record) = record.as_mut() {
            record.to_version = to;
            if finished {
                record.finished_at = Some(whole_seconds(self.obs.now));
                record.duration_seconds =
                    Some(seconds_between(record.started_at.0, self.obs.now).round());
            }
        }
        self.meta(record, timeouts)
    }

    /// Bookkeeping for a single-step change outside any transition: the last record stays.
    fn meta_keep(&self, old: Option<&RingMeta>) -> RingMeta {
        self.meta(
            old.and_then(|m| m.transition.clone()),
            old.map(|m| m.timed_out.clone()).unwrap_or_default(),
        )
    }

    fn published_at(published: &PublishedRing) -> Timestamp {
        published
            .meta
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |m| m.published_at)
    }

    fn event(&mut self, warning: bool, reason: &'static str, note: String) {
        self.events.push(PlannedEvent {
            warning,
            reason,
            note,
        });
    }

    fn step(
        &mut self,
        kind: Option<TransitionKind>,
        step: StepKind,
        shards_moved: u32,
        left: Option<(&PublishedRing, Phase)>,
    ) {
        let (phase_seconds, left_phase) = match left {
            Some((published, phase)) => (
                Some(seconds_between(Self::published_at(published), self.obs.now)),
                Some(phase),
            ),
            None => (None, None),
        };
        self.steps.push(StepRecord {
            kind,
            step,
            shards_moved,
            phase_seconds,
            left_phase,
        });
    }

    // ----- no ring yet ------------------------------------------------------------------

    /// A fresh service: start a pod per slot; publish ring version 1 when all are Ready, or,
    /// after `timeouts.warm`, with the leading slots whose pods have an address (those not
    /// Ready yet marked `Unavailable`).
    fn fresh(&mut self) -> Result<Decision, RingError> {
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
            let Some(oldest) = chosen.iter().flatten().map(|p| p.created_at).min() else {
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
        // A ring ConfigMap deleted by hand is recreated with a version above the last one the
        // status recorded: readers ignore versions that are not newer than theirs.
        let version = self
            .obs
            .status
            .and_then(|s| s.ring_version)
            .map_or(1, |v| v + 1);
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

    // ----- stable ring ------------------------------------------------------------------

    fn stable(&mut self, published: &'a PublishedRing) -> Result<Decision, RingError> {
        if self.n == 0 {
            return self.scaled_to_zero(published);
        }
        let steps: [StableStep<'a>; 9] = [
            Self::reshard,
            Self::takeover,
            Self::failures,
            Self::evictions,
            Self::scale_down,
            Self::scale_up,
            Self::rebalance,
            Self::surge,
            Self::start_rollout,
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
    fn scaled_to_zero(&mut self, published: &PublishedRing) -> Result<Decision, RingError> {
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

    /// `spec.shards` grew: split every shard in place (nothing moves) in one publish.
    fn reshard(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
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

    /// Slots that hold shards but whose pod is not serving get a Ready replacement at once;
    /// `Unavailable` slots whose pod is Ready again become `Active`.
    fn takeover(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
        let held = members(ring.current());
        let mut parts = self.next_parts(ring);
        let mut notes = Vec::new();
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
        if notes.is_empty() {
            return Ok(None);
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
    fn failures(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
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
            self.event(
                true,
                reasons::REROUTED,
                format!(
                    "slots {failed:?} not Ready for {:?}: {} shards moved to the other slots, which load them cold (ring version {})",
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
    fn handover(
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
    fn evictions(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
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
    fn scale_down(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
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
    fn scale_up(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
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

    /// A capped step left the table unbalanced for its slots: the next capped step.
    fn rebalance(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
        let ring = &published.ring;
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
    fn surge(&mut self, published: &'a PublishedRing) -> Result<Option<Decision>, RingError> {
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
    fn membership_settled(&self, ring: &Ring) -> bool {
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
    fn start_rollout(
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
    fn normalize(&mut self, published: &PublishedRing) -> Result<Decision, RingError> {
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

    // ----- warm ring --------------------------------------------------------------------

    /// `Warm`: switch when every gaining pod warmed (or `timeouts.warm` passed); withdraw the
    /// ring if a gaining pod is gone or has not been Ready for `unreadyGrace`.
    fn warm(&mut self, published: &'a PublishedRing) -> Result<Decision, RingError> {
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
    fn switch_ring(&self, ring: &Ring, target: &Assignment) -> Result<(Ring, u32), RingError> {
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
    fn switch(&mut self, published: &'a PublishedRing) -> Result<Decision, RingError> {
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

    // ----- after the decision -----------------------------------------------------------

    /// Pods to delete given the ring that will be published: every pod that ring does not
    /// name and no slot needs, and the failed pods of slots that hold no shards.
    fn deletions(&self, ring: Option<&Ring>) -> Vec<PodDeletion> {
        let mut named: BTreeSet<&str> = BTreeSet::new();
        // With replicas 0 a stable ring keeps its slots (a ring needs one) but no pod stays.
        let ring = ring.filter(|r| self.n > 0 || r.phase() != Phase::Stable);
        if let Some(ring) = ring {
            let held = members(ring.current());
            let target = ring.target().map(members).unwrap_or_default();
            let stable = ring.phase() == Phase::Stable;
            for slot in ring.slots() {
                let tombstone = stable
                    && !held.contains(&slot.index)
                    && !target.contains(&slot.index)
                    && !self.healthy(&slot.pod);
                if !tombstone {
                    named.insert(slot.pod.uid.as_str());
                }
                named.extend(slot.successor.iter().map(|p| p.uid.as_str()));
                named.extend(slot.predecessor.iter().map(|p| p.uid.as_str()));
            }
        }
        self.obs
            .pods
            .iter()
            .filter(|p| !p.deleting)
            .filter(|p| !named.contains(p.uid.as_str()) && !self.keep.contains(&p.name))
            .map(|p| PodDeletion {
                name: p.name.clone(),
                uid: p.uid.clone(),
                reason: if p.terminal {
                    "finished"
                } else if p.slot >= self.n {
                    "scaled down"
                } else if p.revision != self.revision {
                    "outdated"
                } else {
                    "surplus"
                },
            })
            .collect()
    }

    /// True when nothing remains to do: a `Stable` ring of exactly the wanted slots, each
    /// `Active` and served by a pod of the current revision, and no other pod. (A pod that is
    /// not Ready within its grace period makes the service degraded, not progressing.)
    fn converged(&self, ring: Option<&Ring>, delete: &[PodDeletion]) -> bool {
        let Some(ring) = ring else {
            return false;
        };
        let held = members(ring.current());
        ring.phase() == Phase::Stable
            && ring.slots().len() == usize::from(self.n)
            && held.len() == usize::from(self.n)
            && ring.slots().iter().all(|s| {
                s.state == SlotState::Active
                    && self.find(&s.pod).is_some_and(|p| {
                        p.live() && p.revision == self.revision && p.images_current
                    })
            })
            && self.create.is_empty()
            && self.update.is_empty()
            && delete.is_empty()
            && self.obs.pods.iter().filter(|p| !p.deleting).count() == usize::from(self.n)
    }
}
