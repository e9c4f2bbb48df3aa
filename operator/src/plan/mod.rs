//! The pure planner: observed state → next actions.
//!
//! [`plan`] takes everything the operator knows about one `StatefulService` — its spec, its
//! pods (readiness, progress annotations, deletion state, revision labels), the ring it last
//! published (parsed, with the bookkeeping the operator keeps beside it) and the time — and
//! returns [`Actions`]: pods to create, update in place or delete, the next ring to publish,
//! the status to write, the events to emit and when to look again. It does no I/O, keeps no
//! memory between calls and is deterministic, so:
//!
//! - every transition step is unit-tested without a cluster (see the tests of this module);
//! - an operator restarted mid-transition, or running on a stale cache, plans the same next
//!   step from the ring document and the pods alone (only later: its step deadlines count from
//!   no earlier than when it first saw the state they count from, see [`FirstSeen`]);
//! - pod names are derived, not random, so planning twice before a new pod shows up in the
//!   cache creates it once.
//!
//! # The state machine
//!
//! The ring document's phase is the state (`Stable`, `Warm`, `Switch`); pods' readiness and
//! progress annotations are the inputs. From a `Stable` ring, one transition starts at a time,
//! in this order of priority:
//!
//! 1. **Reshard**: the shard count grew (`spec.shards` raised, or, unset, the count chosen for
//!    `spec.replicas`: `crd::auto_shards`); every shard is split in place (nothing moves),
//!    before the scale-up that needs it.
//! 2. **Takeover**: a slot whose pod is not Ready has a Ready replacement: the replacement
//!    serves the slot at once (nothing to warm from a dead pod); a slot marked `Unavailable`
//!    whose pod is Ready again becomes `Active`.
//! 3. **Failure**: a slot's pod not Ready for `spec.unreadyGrace` (or gone): with `Wait` the
//!    slot is marked `Unavailable` (its keys get 503) until a replacement is Ready; with
//!    `Reroute` its shards move to the other slots at once (a `Switch` ring, no warm-up: the
//!    new owners load cold), and the replacement later rejoins like a scale-up.
//! 4. **Eviction**: a slot's pod is being deleted from outside but still Ready: a replacement
//!    is started and, when Ready, takes over by the surge handoff below.
//! 5. **Scale down**: slots `>= spec.replicas` are `Leaving`; their shards go to the others.
//! 6. **Scale up / rejoin**: slots with a Ready pod that hold no shards are `Joining`.
//! 7. **Rebalance**: a capped step left the table unbalanced: the next capped step (with
//!    `spec.placement.balance` `Off` or `Load`, only the steps of a membership change).
//! 8. **Rollout (Surge)**: a slot whose pod has an old revision gets a surge pod; when Ready
//!    it is the slot's `successor`, warms the whole slot and takes it over at the switch.
//! 9. **Rollout (`InPlace`)**: an image-only change is applied to the pod itself, one slot at a
//!    time; the pod keeps its name and address.
//! 10. **Rebalance by load** (`spec.placement.balance: Load`): when nothing else is going on,
//!     every pod reported its load for the current ring, the busiest exceeds the trigger and
//!     the interval passed: a `Warm` ring whose target moves shards from the busiest pods to
//!     the least busy (`docs/adr/0002-load-aware-placement.md`).
//!
//! A transition that moves shards or pods is `Warm` (target published beside current) →
//! `Switch` (when every gaining pod reported warmed, or `timeouts.warm` passed) → `Stable`
//! (when every member observed the switch, or `timeouts.settle` passed, **and** every losing
//! pod is *fenced*: it reported drained for the switch, or it is gone). Retired pods are
//! deleted once a ring no longer names them.
//!
//! # Fencing
//!
//! A timeout alone never hands a key to a new owner: the `Stable` ring that settles a
//! `Switch` lets the gaining pods load what they have not taken over from the persistence, so
//! it is published only once no losing pod can still serve those keys — each one reported
//! `drained` for the switch's version, or no pod with its name and UID exists any more. Past
//! `timeouts.drain` a losing pod that leaves anyway (a predecessor, the pod of a slot left
//! without shards, the pod of a slot marked `Unavailable`, a finished pod) is deleted so that
//! it becomes gone; one that stays in the ring is waited for, with a `DrainStalled` warning and
//! condition. The same rule holds for the other ways a pod loses keys: `Reroute` deletes the
//! failed pod along with publishing the `Switch` that moves its shards, and a replacement takes
//! a slot over from a pod that is not Ready only once that pod is gone.

mod accounting;
mod engine;
mod first_seen;
mod naming;
mod observe;
mod status;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use locus_contract::ring::{Ring, RingError};
use serde::{Deserialize, Serialize};

use crate::crd::{
    RebalanceRecord, StatefulServiceSpec, StatefulServiceStatus, TransitionKind, TransitionRecord,
};

pub use first_seen::{FirstSeen, PodSeen, Readiness, RingSeen};
pub use naming::{
    ANNOTATION_RING_META, ANNOTATION_SHAPE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_REVISION,
    LABEL_SERVICE, LABEL_SLOT, MANAGED_BY, handoff_secret, pod_account, pod_name, revision,
    selector, shape,
};
pub use observe::{ObserveError, observe_pod, published_ring};
pub use status::merge_conditions;

/// Largest number of slots replaced by surge pods at the same time during a rollout.
pub const MAX_SURGE: usize = 1;

/// Progress a pod reported by annotating itself (`locus.dev/*-ring-version`,
/// `locus.dev/moved-sessions`, `locus.dev/shard-load`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Newest ring version the pod loaded.
    pub observed: Option<u64>,
    /// Newest `Warm` ring version for which the pod pre-copied what it gains.
    pub warmed: Option<u64>,
    /// Newest `Switch` ring version for which the pod handed over what it lost.
    pub drained: Option<u64>,
    /// How the sessions it took over in its last few transitions arrived
    /// (`locus.dev/moved-sessions`): `None` when the annotation is missing, `Err` (why, bounded)
    /// when it cannot be read.
    pub moved: Option<Result<locus_contract::progress::MovedReport, String>>,
    /// What it served over its last window (`locus.dev/shard-load`): `None` when the annotation
    /// is missing, `Err` (why, bounded) when it cannot be read.
    pub load: Option<Result<locus_contract::progress::ShardLoadReport, String>>,
}

/// A pod expected to report its moved sessions for a transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportingPod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// What the planner needs to know about one pod of the service.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts the API server reports about a pod"
)]
pub struct ObservedPod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The slot it serves (label `locus.dev/slot`).
    pub slot: u16,
    /// The template revision it runs (label `locus.dev/revision`).
    pub revision: String,
    /// The template shape it was created from (annotation `locus.dev/template-shape`).
    pub shape: Option<String>,
    /// Pod IP and the number of the service's named port, once both are known.
    pub address: Option<SocketAddr>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// When the `Ready` condition last changed.
    pub ready_changed_at: Option<Timestamp>,
    /// `metadata.creationTimestamp`.
    pub created_at: Timestamp,
    /// `metadata.deletionTimestamp` is set: the pod is going away.
    pub deleting: bool,
    /// Phase `Failed` or `Succeeded`: its containers will not run again.
    pub terminal: bool,
    /// Every container runs the image its spec names (false while an in-place update has not
    /// reached the container yet).
    pub images_current: bool,
    /// What it reported through its annotations.
    pub progress: Progress,
}

impl ObservedPod {
    /// Ready and staying: not being deleted, not finished.
    pub fn healthy(&self) -> bool {
        self.ready && !self.deleting && !self.terminal
    }

    /// Neither being deleted nor finished: it may still become or stay Ready.
    pub fn live(&self) -> bool {
        !self.deleting && !self.terminal
    }
}

/// The operator's bookkeeping of the published ring, kept as a JSON annotation
/// (`locus.dev/ring-meta`) on the ring `ConfigMap` so that it survives operator restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingMeta {
    /// When this ring version was published: the start of the step's timeout.
    pub published_at: Timestamp,
    /// The transition in progress, or the last one finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<TransitionRecord>,
    /// Steps of that transition that rolled forward on their timeout (`warm`, `drain`,
    /// `settle`, `create`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timed_out: Vec<String>,
    /// Once that transition finished: the pods expected to report the sessions they took over
    /// in it (the pods of the slots holding shards in its final ring), kept while later rings
    /// that start no transition are published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reporters: Vec<ReportingPod>,
    /// The last rebalance by load, carried from ring to ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rebalance: Option<RebalanceRecord>,
}

/// A ring as published, with its bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedRing {
    /// The ring document's content.
    pub ring: Ring,
    /// The operator's bookkeeping; `None` if the annotation is missing or unreadable (then
    /// every step deadline counts from when this operator process first saw the ring, so
    /// nothing waits forever).
    pub meta: Option<RingMeta>,
}

/// The last ring the operator observed or published for a service, kept in memory between
/// reconciles (the only thing that is), so that a ring `ConfigMap` deleted by hand is
/// recreated with the ownership it had rather than a fresh table.
#[derive(Clone, Debug, PartialEq)]
pub struct RememberedRing {
    /// The last document seen or written, with its bookkeeping.
    pub last: PublishedRing,
    /// The highest ring version seen or written for the service.
    pub highest: u64,
}

impl RememberedRing {
    /// Remembers `ring` as the last one, keeping the highest version of `self` and it.
    pub fn remember(previous: Option<&Self>, ring: &PublishedRing) -> Self {
        let version = ring.ring.version();
        Self {
            last: ring.clone(),
            highest: previous.map_or(version, |p| p.highest.max(version)),
        }
    }
}

/// Everything the planner looks at for one `StatefulService`.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Namespace of the service.
    pub namespace: &'a str,
    /// Name of the service.
    pub name: &'a str,
    /// UID of the service (seeds the pod names).
    pub uid: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The desired state.
    pub spec: &'a StatefulServiceSpec,
    /// The status last written, for its conditions' transition times.
    pub status: Option<&'a StatefulServiceStatus>,
    /// The service's pods (owned by it, with valid slot labels).
    pub pods: &'a [ObservedPod],
    /// The ring last published, if any.
    pub ring: Option<&'a PublishedRing>,
    /// The last ring this operator instance saw for the service (kept in memory), used only
    /// when the ring `ConfigMap` is missing.
    pub remembered: Option<&'a RememberedRing>,
    /// When this operator process first saw the ring's version and phase and each pod's
    /// readiness (on its own clock). Every step deadline starts at the later of the recorded
    /// time (`published_at`, the `Ready` condition's change, the pod's creation) and this, so
    /// that no deadline runs out before its full duration has passed on this process's clock
    /// since it first saw the state — whatever the clocks of the processes that recorded the
    /// times. A fresh process (first reconcile after a start or a takeover) therefore restarts
    /// every deadline that is running from the moment it first sees the state: after a
    /// failover a step may wait up to one more timeout, never less.
    pub first_seen: &'a FirstSeen,
    /// The time of this decision.
    pub now: Timestamp,
}

/// A pod to create (or, in [`Actions::update`], to re-apply in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// Its name.
    pub name: String,
    /// The slot it serves.
    pub slot: u16,
    /// The revision of `spec.template` it is built from.
    pub revision: String,
}

/// A pod to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDeletion {
    /// Its name.
    pub name: String,
    /// Its UID (a precondition of the delete, so a newer pod of the same name is spared).
    pub uid: String,
    /// Why, for logs and events.
    pub reason: &'static str,
}

/// A Kubernetes event to emit on the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// `PascalCase` reason (one of [`reasons`]).
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

/// Event reasons the planner emits.
pub mod reasons {
    /// The first ring was published.
    pub const RING_CREATED: &str = "RingCreated";
    /// A transition published its `Warm` ring.
    pub const WARM: &str = "WarmStarted";
    /// A transition published its `Switch` ring.
    pub const SWITCH: &str = "Switched";
    /// A transition published its final `Stable` ring.
    pub const SETTLE: &str = "Settled";
    /// A step rolled forward on its timeout.
    pub const TIMEOUT: &str = "StepTimedOut";
    /// A `Warm` ring was withdrawn because a pod it waited for is gone.
    pub const ABORTED: &str = "TransitionAborted";
    /// The shard count doubled (shards split in place).
    pub const RESHARD: &str = "Resharded";
    /// A Ready replacement took over a slot whose pod failed.
    pub const TAKEOVER: &str = "SlotTakenOver";
    /// A slot marked `Unavailable` has a Ready pod again.
    pub const RECOVERED: &str = "SlotRecovered";
    /// A slot's pod failed; policy `Wait` marked the slot `Unavailable`.
    pub const UNAVAILABLE: &str = "SlotUnavailable";
    /// A slot's pod failed; policy `Reroute` moved its shards to the other slots.
    pub const REROUTED: &str = "SlotRerouted";
    /// A surge pod was created for a rollout or to replace an evicted pod.
    pub const SURGE: &str = "SurgePodCreated";
    /// A pod's image was updated in place.
    pub const IN_PLACE: &str = "InPlaceUpdate";
    /// Slot states or the slot list were tidied (no shard moved).
    pub const NORMALIZED: &str = "RingNormalized";
    /// A `Switch` waits past `timeouts.drain` for losing pods that neither reported drained
    /// nor are gone (also the reason of the `Progressing` and `Degraded` conditions then).
    pub const DRAIN_STALLED: &str = "DrainStalled";
    /// The ring `ConfigMap` was missing and was published again.
    pub const RING_RECREATED: &str = "RingRecreated";
    /// A `Warm` or `Switch` step waits for a set of pods other than the last one it named
    /// (also in the `Progressing` condition's message).
    pub const STEP_WAITING: &str = "StepWaiting";
    /// The pods of a finished transition did not all report final counts of the sessions
    /// they took over in time (condition `MovedSessionsReported` `False/ReportsMissing`).
    pub const MOVED_SESSIONS_MISSING: &str = "MovedSessionsMissing";
    /// Every pod of a finished transition reported final counts (condition
    /// `MovedSessionsReported` `True/Complete`): the warm-hit percentage and its breakdown.
    pub const HANDOFF_REPORTED: &str = "HandoffReported";
    /// A rebalance by load published its `Warm` ring (`spec.placement.balance: Load`).
    pub const REBALANCE: &str = "LoadRebalance";
    /// Shards too hot for any pod (alone above `spec.placement.targetPercent` of the mean),
    /// when the set of them changes.
    pub const HOT_SHARDS: &str = "HotShards";
    /// Shards too hot for any pod were split by doubling the shard count (`spec.shards` unset,
    /// `spec.placement.balance: Load`).
    pub const SPLIT_HOT_SHARDS: &str = "HotShardsSplit";
}

/// Reasons of the deletions that fence a pod (make it gone, so that its keys may be loaded
/// from the persistence by their new owners) while a ring still names it.
pub mod fencing {
    /// A losing pod that leaves anyway did not report drained within `timeouts.drain`.
    pub const DRAIN_STALLED: &str = "not drained within timeouts.drain";
    /// Policy `Reroute` moved the shards of this failed pod to other slots.
    pub const REROUTED: &str = "rerouted";
    /// A Ready replacement waits to take the slot over from this pod, which is not Ready.
    pub const REPLACED: &str = "replaced while not Ready";
}

/// Which step of a transition was taken, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// The first ring.
    Create,
    /// A `Warm` ring.
    Warm,
    /// A `Switch` ring.
    Switch,
    /// The final `Stable` ring.
    Settle,
    /// A `Warm` ring withdrawn.
    Abort,
    /// A single-step change (reshard, takeover, slot marked unavailable, tidying).
    Direct,
    /// A pod updated in place.
    InPlace,
}

impl StepKind {
    /// Lower-case name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Warm => "warm",
            Self::Switch => "switch",
            Self::Settle => "settle",
            Self::Abort => "abort",
            Self::Direct => "direct",
            Self::InPlace => "in_place",
        }
    }
}

/// One step taken, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// The transition it belongs to, if any.
    pub kind: Option<TransitionKind>,
    /// The step.
    pub step: StepKind,
    /// Shards whose owner changed in this step (`Switch` and `Reroute` steps).
    pub shards_moved: u32,
    /// Seconds the ring spent in the phase this step leaves (`Warm` or `Switch`).
    pub phase_seconds: Option<f64>,
    /// The phase this step leaves.
    pub left_phase: Option<locus_contract::ring::Phase>,
}

/// What the executor should do, in order: create and update pods, publish the ring, delete
/// pods (after the publish, so no published ring names a deleted pod), write the status, emit
/// the events.
#[derive(Clone, Debug, PartialEq)]
pub struct Actions {
    /// Pods to create (server-side apply of the full pod).
    pub create: Vec<PodPlan>,
    /// Pods to re-apply with the current template (in-place image update).
    pub update: Vec<PodPlan>,
    /// Pods to delete.
    pub delete: Vec<PodDeletion>,
    /// The ring to publish, if it changes.
    pub publish: Option<PublishedRing>,
    /// The status the service should have.
    pub status: StatefulServiceStatus,
    /// Events to emit.
    pub events: Vec<PlannedEvent>,
    /// Steps taken, for metrics.
    pub steps: Vec<StepRecord>,
    /// When to reconcile again if nothing else happens (a step deadline).
    pub requeue_after: Option<Duration>,
}

impl Actions {
    /// True when the plan changes nothing but (possibly) the status.
    pub fn is_idle(&self) -> bool {
        self.create.is_empty()
            && self.update.is_empty()
            && self.delete.is_empty()
            && self.publish.is_none()
    }
}

/// Plans the next actions for one service. Fails only if the ring planner refuses its input
/// (a spec the CRD validation should have refused, such as a shard count that is not a power
/// of two).
pub fn plan(observed: &Observed<'_>) -> Result<Actions, RingError> {
    engine::Planner::new(observed)?.run()
}
