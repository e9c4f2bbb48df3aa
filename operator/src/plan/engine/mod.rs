//! The planner's decision procedure; the state machine is described in the documentation of
//! the parent module. This file holds the planner's state, the pod candidates, ring building
//! and bookkeeping; [`stable`] the steps from a fresh or `Stable` ring; [`phases`] the `Warm`
//! and `Switch` steps.
//!
//! Why about 700 lines: the planner's state and the helpers every step uses (candidates,
//! deadlines, ring building, transition records, events, deletions, convergence) belong to
//! the `Planner` type the steps in [`stable`] and [`phases`] extend; the steps themselves are
//! already in those files.

mod balance;
mod phases;
mod stable;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use locus_contract::ring::{
    self, Assignment, Phase, Ring, RingError, RingParts, ShardCount, SlotState, Transition,
};

use super::accounting;
use super::first_seen::deadline_start;
use super::status::{self, StatusFacts};
use super::{
    Actions, MAX_SURGE, Observed, ObservedPod, PlannedEvent, PodDeletion, PodPlan, PublishedRing,
    RingMeta, StepKind, StepRecord, naming,
};
use crate::crd::{TransitionKind, TransitionRecord, UpdateStrategyType};

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
    /// In a `Switch` ring past `timeouts.drain`: what it waits for (the `DrainStalled`
    /// condition's message).
    drain_stall: Option<String>,
    /// A `Warm` or `Switch` step that waits for pods: what for and which (the `Progressing`
    /// condition's message, and the `StepWaiting` event's note when it changed).
    waiting: Option<String>,
    /// Pods deleted to fence them although a ring still names them.
    fence: Vec<PodDeletion>,
    names: BTreeSet<String>,
    /// The observed pods by slot, each slot's in observed order (per-slot loops look up
    /// here rather than scan every pod).
    by_slot: HashMap<u16, Vec<&'a ObservedPod>>,
    /// The observed pods by UID (the first, should two share one).
    by_uid: HashMap<&'a str, &'a ObservedPod>,
    create: Vec<PodPlan>,
    update: Vec<PodPlan>,
    events: Vec<PlannedEvent>,
    steps: Vec<StepRecord>,
    deadlines: Vec<Timestamp>,
    /// Placement by load: why no rebalance starts, or which one did (`status.placement`).
    load_note: Option<String>,
    /// Placement by load: the reports the step read, with the ring version they were read for.
    measured: Option<(u64, balance::Measure)>,
    /// Placement by load: `status.placement.triggerHeld` as this pass leaves it, if
    /// `trigger_read` (the step read usable reports); else the previous status's is kept.
    trigger_held: Option<crate::crd::TriggerHeld>,
    /// Placement by load: the step decided `trigger_held` in this pass.
    trigger_read: bool,
}

impl<'a> Planner<'a> {
    pub(super) fn new(obs: &'a Observed<'a>) -> Result<Self, RingError> {
        let spec = obs.spec;
        let n = u16::try_from(spec.replicas.max(0))
            .unwrap_or(u16::MAX)
            .min(ring::MAX_SLOTS as u16);
        let mut names: BTreeSet<String> = obs.pods.iter().map(|p| p.name.clone()).collect();
        let mut by_slot: HashMap<u16, Vec<&'a ObservedPod>> = HashMap::new();
        let mut by_uid: HashMap<&'a str, &'a ObservedPod> = HashMap::new();
        for pod in obs.pods {
            by_slot.entry(pod.slot).or_default().push(pod);
            by_uid.entry(pod.uid.as_str()).or_insert(pod);
        }
        // `spec.shards`, or the count chosen for `spec.replicas`; never below the published
        // ring's count (the count never shrinks: a smaller value leaves the ring as it is).
        let mut shards = spec.desired_shards();
        if let Some(published) = obs.ring {
            shards = shards.max(published.ring.shards().get());
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
            shards: ShardCount::new(shards)?,
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
            drain_stall: None,
            waiting: None,
            fence: Vec::new(),
            names,
            by_slot,
            by_uid,
            create: Vec::new(),
            update: Vec::new(),
            events: Vec::new(),
            steps: Vec::new(),
            deadlines: Vec::new(),
            load_note: None,
            measured: None,
            trigger_held: None,
            trigger_read: false,
        })
    }

    pub(super) fn run(mut self) -> Result<Actions, RingError> {
        let mut decision = match self.obs.ring {
            None => match self.remembered() {
                Some(remembered) => {
                    self.slot_candidates(&remembered.last.ring);
                    self.restore(remembered)?
                }
                None => self.fresh()?,
            },
            Some(published) => {
                self.slot_candidates(&published.ring);
                match published.ring.phase() {
                    Phase::Stable => self.stable(published)?,
                    Phase::Warm => self.warm(published)?,
                    Phase::Switch => self.switch(published)?,
                }
            }
        };
        if let Some(published) = decision.publish.as_mut() {
            Self::name_reporters(published);
        }
        let final_ring = decision.publish.as_ref().or(self.obs.ring).map(|p| &p.ring);
        let mut delete = self.deletions(final_ring);
        for fenced in std::mem::take(&mut self.fence) {
            if !delete.iter().any(|d| d.uid == fenced.uid) {
                delete.push(fenced);
            }
        }
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
        let (status, recheck_at) = status::build(&StatusFacts {
            obs: self.obs,
            n: self.n,
            ring: final_ring,
            meta: final_meta,
            leaving: &leaving,
            switch_observed,
            drain_stall: self.drain_stall.as_deref(),
            waiting: self.waiting.as_deref(),
            converged,
            revision: &self.revision,
        });
        let mut status = status;
        status.placement = self.placement_status(final_ring, final_meta);
        self.deadlines.extend(recheck_at);
        self.status_events(&status);
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
        self.by_slot.get(&slot).into_iter().flatten().copied()
    }

    /// The observed pod behind a ring entry (same name and UID).
    fn find(&self, pod: &ring::Pod) -> Option<&'a ObservedPod> {
        self.by_uid
            .get(pod.uid.as_str())
            .copied()
            .filter(|p| p.name == pod.name)
    }

    fn healthy(&self, pod: &ring::Pod) -> bool {
        self.find(pod).is_some_and(ObservedPod::healthy)
    }

    /// Deletes `pod` to fence it (unless it is already being deleted); `true` if a deletion
    /// was planned in this pass.
    fn fence(&mut self, pod: &ObservedPod, reason: &'static str) -> bool {
        if pod.deleting || self.fence.iter().any(|d| d.uid == pod.uid) {
            return false;
        }
        self.fence.push(PodDeletion {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            reason,
        });
        true
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
                    let deadline = plus(self.unready_since(pod), self.grace);
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
    /// replacement is created as soon as that is seen), else now. Each no earlier than when
    /// this process first saw it (see [`Self::unready_since`], [`Self::created_since`]).
    fn down_since(&self, slot: u16, pod: Option<&ObservedPod>) -> Timestamp {
        match pod {
            Some(p) if p.live() => self.unready_since(p),
            _ => self
                .pods_of(slot)
                .filter(|p| p.revision == self.revision && p.live())
                .map(|p| self.created_since(p))
                .min()
                .unwrap_or(self.obs.now),
        }
    }

    // ----- deadline starts --------------------------------------------------------------
    //
    // Every step deadline starts at the later of the time recorded by another process (on
    // its clock) and the time this process first saw the state (on its own clock), so that
    // none runs out before its full duration has passed on this process's clock: see
    // `Observed::first_seen`.

    /// Start of the deadlines of the step `published` is in (`timeouts.warm`, `settle`,
    /// `drain`): its `published_at`, or when this process first saw that version and phase
    /// if later.
    fn step_start(&self, published: &PublishedRing) -> Timestamp {
        deadline_start(
            Self::published_at(published),
            self.obs.first_seen.ring_at(&published.ring),
        )
    }

    /// Start of the unready grace of `pod`, which is not Ready: its `Ready` condition's change
    /// (its creation if it has none), or when this process first saw it in that readiness if
    /// later.
    fn unready_since(&self, pod: &ObservedPod) -> Timestamp {
        deadline_start(
            pod.ready_changed_at.unwrap_or(pod.created_at),
            self.obs.first_seen.readiness_at(pod),
        )
    }

    /// Start of a deadline that counts from the creation of `pod`: its creation, or when this
    /// process first saw it if later.
    fn created_since(&self, pod: &ObservedPod) -> Timestamp {
        deadline_start(pod.created_at, self.obs.first_seen.pod_at(pod))
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
            reporters: Vec::new(),
            last_rebalance: self
                .obs
                .ring
                .and_then(|p| p.meta.as_ref())
                .and_then(|m| m.last_rebalance.clone()),
        }
    }

    /// A ring that finishes a transition names the pods expected to report the sessions they
    /// took over in it: the pods of its slots that hold shards.
    fn name_reporters(published: &mut PublishedRing) {
        let ring = &published.ring;
        if let Some(meta) = published.meta.as_mut()
            && meta.reporters.is_empty()
            && ring.phase() == Phase::Stable
            && meta
                .transition
                .as_ref()
                .is_some_and(|t| t.finished_at.is_some() && t.to_version == ring.version())
        {
            meta.reporters = status::expected_reporters(ring);
        }
    }

    /// Events that follow from the status this pass writes, each emitted when the condition
    /// it reports changes (so once, not on every pass): `StepWaiting` when a step names other
    /// pods it waits for, `MovedSessionsMissing` and `HandoffReported` when a transition's
    /// reports become missing or complete.
    fn status_events(&mut self, status: &crate::crd::StatefulServiceStatus) {
        let previous = self.obs.status;
        let condition = |s: &crate::crd::StatefulServiceStatus, type_: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        let before = |type_: &str| previous.and_then(|s| condition(s, type_));
        if let Some(waiting) = self.waiting.clone() {
            let now_says = condition(status, crate::crd::PROGRESSING);
            let said = before(crate::crd::PROGRESSING);
            if now_says.as_ref().is_some_and(|(_, m)| *m == waiting)
                && said.is_none_or(|(_, m)| m != waiting)
            {
                self.event(false, super::reasons::STEP_WAITING, waiting);
            }
        }
        let Some((reason, message)) = condition(status, crate::crd::MOVED_SESSIONS_REPORTED) else {
            return;
        };
        let version = |s: &crate::crd::StatefulServiceStatus| {
            s.last_transition
                .as_ref()
                .map(|t| (t.from_version, t.to_version))
        };
        let same_transition = previous.and_then(version) == version(status);
        let changed = !same_transition
            || before(crate::crd::MOVED_SESSIONS_REPORTED).is_none_or(|(r, _)| r != reason);
        if !changed {
            return;
        }
        if reason == accounting::verdicts::REPORTS_MISSING {
            self.event(true, super::reasons::MOVED_SESSIONS_MISSING, message);
        } else if reason == accounting::verdicts::COMPLETE
            && let Some(record) = status.last_transition.as_ref()
            && let Some(summary) = record.moved_sessions.as_ref()
        {
            self.event(
                false,
                super::reasons::HANDOFF_REPORTED,
                format!(
                    "ring version {}: {}",
                    record.to_version,
                    accounting::breakdown(summary)
                ),
            );
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
                moved_sessions: None,
                losers_gone: Vec::new(),
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
        let carried = self.meta(None, Vec::new()).last_rebalance;
        RingMeta {
            reporters: old.map(|m| m.reporters.clone()).unwrap_or_default(),
            last_rebalance: old.and_then(|m| m.last_rebalance.clone()).or(carried),
            ..self.meta(
                old.and_then(|m| m.transition.clone()),
                old.map(|m| m.timed_out.clone()).unwrap_or_default(),
            )
        }
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
