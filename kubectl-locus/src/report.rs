//! The facts `kubectl locus status` shows, as plain data: [`StatusReport`], built from the
//! API objects by [`build`] (pure: the objects and the time in, the report out).
//!
//! The report serializes to the JSON of `-o json`; its field names are listed in the
//! [crate docs](crate) and do not change without a note there.
//!
//! Why about 730 lines: the serialized types here are the `-o json` contract, and they stay
//! beside the one pure [`build`] that fills them, so a reader sees each field and where it
//! comes from in one place; most of the file is those types and their field docs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use locus_contract::crd::{
    BalanceMode, ColdSessions, HotShardStatus, MOVED_SESSIONS_REPORTED, MovedSessionsSummary,
    Phase, PodLoad, RebalanceRecord, ServedSessions, TransitionKind, TransitionRecord, TriggerHeld,
    WarmSessions,
};
use locus_contract::progress::{MovedReport, MovedSessions, Progress, ReportState};
use locus_contract::ring::{
    Phase as RingPhase, Ring, RingDocument, SlotState, Transition, annotations,
};
use locus_operator::plan::{LABEL_SLOT, ObserveError, PublishedRing, published_ring};
use serde::Serialize;

use crate::fetch::Objects;
use crate::warnings::{Warning, warnings};

/// Everything `kubectl locus status` shows about one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Name of the `StatefulService`.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// `metadata.generation` of the spec.
    pub generation: Option<i64>,
    /// `status.observedGeneration`: the generation the operator's status describes.
    pub observed_generation: Option<i64>,
    /// `status.phase` (`Stable`, `Warm`, `Switch`, `Settle`); `None` without a status.
    pub phase: Option<Phase>,
    /// Desired and observed replica counts.
    pub replicas: Replicas,
    /// The shard count in use: `status.shards`; without it, the count the spec asks for
    /// (`spec.shards`, or the operator's choice for `spec.replicas` when unset).
    pub shards: u32,
    /// Template revisions (`status.currentRevision`, `status.updateRevision`).
    pub revision: Revisions,
    /// The published ring; `None` if there is none (see [`ring_problem`](Self::ring_problem)).
    pub ring: Option<RingSummary>,
    /// Why there is no ring to show.
    pub ring_problem: Option<RingProblem>,
    /// The ring's slots, by index (empty without a ring).
    pub slots: Vec<SlotRow>,
    /// The service's pods, by slot then name.
    pub pods: Vec<PodRow>,
    /// `status.conditions`.
    pub conditions: Vec<ConditionRow>,
    /// `status.lastTransition`, with the moved sessions the pods reported for it.
    pub last_transition: Option<TransitionSummary>,
    /// Placement by load: `spec.placement` and `status.placement`; `None` when the service
    /// balances by key count (the default) and the status has no placement.
    pub placement: Option<PlacementSummary>,
    /// What needs attention.
    pub warnings: Vec<Warning>,
}

/// How shards are placed (`spec.placement`) and what the operator measured
/// (`status.placement`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSummary {
    /// `spec.placement.balance`: `Keys`, `Load` or `Off`.
    pub mode: BalanceMode,
    /// `spec.placement.triggerPercent`.
    pub trigger_percent: u32,
    /// `spec.placement.targetPercent`.
    pub target_percent: u32,
    /// The busiest pod's requests per second over the mean, in percent.
    pub busiest_percent: Option<u32>,
    /// Why no rebalance is starting, or which one started.
    pub message: Option<String>,
    /// The load each slot's pod reports (`status.placement.pods`).
    pub pods: Vec<PodLoad>,
    /// The last rebalance by load.
    pub last_rebalance: Option<RebalanceRecord>,
    /// Seconds since the last rebalance started.
    pub last_rebalance_seconds_ago: Option<i64>,
    /// Shards too hot for any pod, busiest first.
    pub hot_shards: Vec<HotShardStatus>,
    /// The trigger held in the last windows; a rebalance starts if the next ones confirm it.
    pub trigger_held: Option<TriggerHeld>,
}

/// Replica counts: the spec's, and the status' (`None` without a status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.replicas`: slots that have a pod.
    pub current: Option<i32>,
    /// `status.readyReplicas`: slots whose pod is Ready.
    pub ready: Option<i32>,
    /// `status.activeReplicas`: slots holding shards in the current ring.
    pub active: Option<i32>,
}

/// Template revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revisions {
    /// The revision the serving pods run.
    pub current: Option<String>,
    /// The revision of `spec.template`; differs from `current` during a rollout.
    pub update: Option<String>,
}

/// The ring document's header and the operator's bookkeeping of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RingSummary {
    /// Name of the `ConfigMap` holding it.
    pub config_map: String,
    /// The ring version; every publish adds 1.
    pub version: u64,
    /// `stable`, `warm` or `switch`.
    pub phase: RingPhase,
    /// Number of shards of the table.
    pub shards: u32,
    /// Tokens per slot of the planner.
    pub vnodes: u32,
    /// When the operator published this version (RFC 3339), if its bookkeeping says.
    pub published_at: Option<String>,
    /// Seconds since then.
    pub age_seconds: Option<i64>,
    /// Steps of the transition that rolled forward on their timeout (`warm`, `settle`, ...).
    pub timed_out: Vec<String>,
}

/// Why no ring is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RingProblem {
    /// `NotFound` (no `ConfigMap` yet), `MissingKey` (no `ring.json`) or `Invalid`.
    pub reason: RingProblemReason,
    /// What is wrong, for a person.
    pub message: String,
}

/// Kinds of [`RingProblem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RingProblemReason {
    /// The operator has not published a ring `ConfigMap` yet.
    NotFound,
    /// The `ConfigMap` has no `ring.json` key.
    MissingKey,
    /// `ring.json` is not a valid ring document.
    Invalid,
}

/// One slot of the ring.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRow {
    /// The slot index.
    pub index: u16,
    /// `active`, `joining`, `leaving`, `draining` or `unavailable`.
    pub state: SlotState,
    /// The pod serving the slot under the current table.
    pub pod: String,
    /// That pod exists and is Ready.
    pub ready: bool,
    /// Shards the slot owns under the current table (what routers use).
    pub shards: u32,
    /// `shards` as a share of all shards, in percent with one decimal; the shares of all
    /// slots add up to exactly 100 ([`shares`]).
    pub share_percent: f64,
    /// Warm phase: shards it will own under the target table.
    pub target_shards: Option<u32>,
    /// Switch phase: shards it owned under the previous table.
    pub previous_shards: Option<u32>,
    /// Shards this transition step gives it (0 when stable).
    pub gaining: u32,
    /// Shards this transition step takes from it (0 when stable).
    pub losing: u32,
    /// Warm phase: the surge pod that takes the whole slot over at the switch.
    pub successor: Option<String>,
    /// Switch phase: the pod that served the slot before the switch.
    pub predecessor: Option<String>,
}

/// How the ring names a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RingRole {
    /// It serves a slot under the current table.
    Slot,
    /// It warms a slot it takes over at the switch.
    Successor,
    /// It served a slot before the switch and drains it.
    Predecessor,
    /// The ring does not name it (starting, retired, or no ring).
    None,
}

/// One pod of the service.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    /// Pod name.
    pub name: String,
    /// Its slot: the ring's, else its `locus.dev/slot` label.
    pub slot: Option<u16>,
    /// How the ring names it.
    pub ring_role: RingRole,
    /// `status.phase` (`Pending`, `Running`, ...).
    pub phase: Option<String>,
    /// Its `Ready` condition is True.
    pub ready: bool,
    /// It is being deleted.
    pub terminating: bool,
    /// Container restarts, summed over its containers.
    pub restarts: i32,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// Seconds since its creation.
    pub age_seconds: Option<i64>,
    /// The ring versions it reported (annotations `locus.dev/*-ring-version`).
    pub progress: ProgressRow,
    /// Its `locus.dev/moved-sessions` counts for the last finished transition (`toVersion`),
    /// else for the newest transition it reported; `None` without such counts.
    pub moved_sessions: Option<MovedSessionsRow>,
    /// The state of its report for that transition.
    pub moved_report: MovedReportState,
    /// Progress annotations present but not readable (their names).
    pub unreadable_annotations: Vec<String>,
}

/// Ring versions a pod reported; `None` where it reported nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressRow {
    /// Newest ring version it loaded and routes by.
    pub observed: Option<u64>,
    /// Newest Warm ring version whose gained shards it pre-copied.
    pub warmed: Option<u64>,
    /// Newest Switch ring version whose lost keys it handed over.
    pub drained: Option<u64>,
}

impl From<Progress> for ProgressRow {
    fn from(progress: Progress) -> Self {
        Self::from(&progress)
    }
}

impl From<&Progress> for ProgressRow {
    fn from(progress: &Progress) -> Self {
        Self {
            observed: progress.observed,
            warmed: progress.warmed,
            drained: progress.drained,
        }
    }
}

/// The operator's sums of the sessions the pods took over in the last transition
/// (`status.lastTransition.movedSessions`, with every field present).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedSessionsTotal {
    /// Sessions that arrived with their state, by path.
    pub warm: WarmSessions,
    /// Sessions first served without it, by path.
    pub cold: ColdSessions,
    /// Of those, the sessions a request was served for.
    pub served: ServedSessions,
    /// Cold takeovers while the previous owner was alive.
    pub cold_while_previous_alive: u64,
    /// Cold takeovers without an answer from a previous owner that was gone.
    pub cold_previous_gone: u64,
    /// Pods expected to report.
    pub pods_expected: u32,
    /// Of those, pods that reported final counts.
    pub pods_reported: u32,
    /// Pods whose counts may still change.
    pub pending: Vec<String>,
    /// Pods whose report is missing, partial or unreadable.
    pub missing: Vec<String>,
    /// Every expected pod reported final counts.
    pub r#final: bool,
}

impl From<MovedSessionsSummary> for MovedSessionsTotal {
    fn from(m: MovedSessionsSummary) -> Self {
        Self {
            warm: m.warm,
            cold: m.cold,
            served: m.served,
            cold_while_previous_alive: m.cold_while_previous_alive,
            cold_previous_gone: m.cold_previous_gone,
            pods_expected: m.pods_expected,
            pods_reported: m.pods_reported,
            pending: m.pending,
            missing: m.missing,
            r#final: m.r#final,
        }
    }
}

/// The state of a pod's report of the sessions it took over in a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MovedReportState {
    /// Its counts may still change (its handoff deadline runs).
    Counting,
    /// Its counts are complete.
    Final,
    /// It restarted during the transition: its counts miss what it took over before.
    Partial,
    /// It reported nothing for the transition.
    Missing,
    /// Its annotation cannot be read.
    Unreadable,
}

impl MovedReportState {
    /// Lower-case name, for the text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counting => "counting",
            Self::Final => "final",
            Self::Partial => "partial",
            Self::Missing => "missing",
            Self::Unreadable => "unreadable",
        }
    }
}

/// A pod's report of the sessions it took over in one transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedSessionsRow {
    /// The Stable ring version that completed the transition.
    pub version: u64,
    /// Sessions that arrived with their state, by path.
    pub warm: WarmSessions,
    /// Sessions first served without it, by path.
    pub cold: ColdSessions,
    /// Of those, the sessions a request was served for.
    pub served: ServedSessions,
}

impl From<&MovedSessions> for MovedSessionsRow {
    fn from(moved: &MovedSessions) -> Self {
        Self {
            version: moved.version,
            warm: WarmSessions::from(&moved.warm),
            cold: ColdSessions::from(&moved.cold),
            served: ServedSessions::from(&moved.served),
        }
    }
}

/// A pod's counts for the transition completed by `version` (else its newest), and the state
/// of that report.
fn moved_row(
    report: Option<&MovedReport>,
    unreadable: bool,
    version: Option<u64>,
) -> (Option<MovedSessionsRow>, MovedReportState) {
    if unreadable {
        return (None, MovedReportState::Unreadable);
    }
    let counts = report.and_then(|r| match version {
        Some(v) => r.get(v),
        None => r.latest(),
    });
    match counts {
        None => (None, MovedReportState::Missing),
        Some(m) => (
            Some(m.into()),
            match m.state {
                ReportState::Final => MovedReportState::Final,
                ReportState::Partial => MovedReportState::Partial,
                ReportState::Counting => MovedReportState::Counting,
            },
        ),
    }
}

/// One condition of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRow {
    /// `Available`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// What it means, for a person.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// Seconds since then.
    pub since_seconds: i64,
}

/// The last transition, from `status.lastTransition`, with what the pods reported of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionSummary {
    /// `ScaleUp`, `ScaleDown`, `Rollout`, `InPlace`, `Reroute` or `Reshard`.
    pub kind: TransitionKind,
    /// Ring version it started from.
    pub from_version: u64,
    /// Ring version of its last step so far.
    pub to_version: u64,
    /// Shards whose owner changed.
    pub shards_moved: u32,
    /// When its first step was published (RFC 3339).
    pub started_at: String,
    /// When the ring became stable again; `None` while it runs.
    pub finished_at: Option<String>,
    /// Seconds from start to finish; while it runs, seconds since the start.
    pub duration_seconds: Option<f64>,
    /// Seconds since it finished; `None` while it runs.
    pub finished_seconds_ago: Option<i64>,
    /// It has not finished.
    pub in_progress: bool,
    /// Percentage of the moved sessions that arrived with their state (the operator's
    /// figure, `status.lastTransition.warmHitPercent`, set only from final reports).
    pub warm_hit_percent: Option<f64>,
    /// The operator's sums of the pods' reports for `toVersion`
    /// (`status.lastTransition.movedSessions`); `None` while the transition runs.
    pub moved_sessions: Option<MovedSessionsTotal>,
    /// The operator's `MovedSessionsReported` condition reason (`Complete`, `Pending`,
    /// `ReportsMissing`, `TransitionInProgress`), if it wrote one.
    pub reports: Option<String>,
}

/// Splits 100 % among slots in proportion to `counts` (shards per slot), in tenths of a
/// percent, so that the rounded shares add up to exactly 100.0 (largest remainder: every
/// share is rounded down, then the tenths left over go to the largest remainders, ties to the
/// first). All zeros (no shard at all) give all zeros.
pub fn shares(counts: &[u32]) -> Vec<f64> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return vec![0.0; counts.len()];
    }
    let mut tenths: Vec<u64> = counts
        .iter()
        .map(|&c| u64::from(c) * 1000 / total)
        .collect();
    let left = 1000 - tenths.iter().sum::<u64>();
    let mut by_remainder: Vec<(u64, usize)> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (u64::from(c) * 1000 % total, i))
        .collect();
    by_remainder.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in by_remainder.iter().take(usize::try_from(left).unwrap_or(0)) {
        tenths[i] += 1;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "at most 1000 tenths, exact in an f64"
    )]
    tenths.into_iter().map(|t| t as f64 / 10.0).collect()
}

fn seconds_since(now: Timestamp, then: Timestamp) -> i64 {
    now.duration_since(then).as_secs().max(0)
}

/// The progress a pod reported, and the names of the annotations it could not read.
pub fn progress_of(pod: &Pod) -> (Progress, Vec<String>) {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return (Progress::default(), Vec::new());
    };
    let (progress, unreadable) = Progress::from_annotations(annotations);
    let names = unreadable.into_iter().map(|u| u.name.to_owned()).collect();
    (progress, names)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How `ring` names the pod called `name`, and the slot.
fn role_in(ring: Option<&Ring>, name: &str) -> (RingRole, Option<u16>) {
    let Some(ring) = ring else {
        return (RingRole::None, None);
    };
    for slot in ring.slots() {
        if slot.pod.name == name {
            return (RingRole::Slot, Some(slot.index));
        }
        if slot.successor.as_ref().is_some_and(|p| p.name == name) {
            return (RingRole::Successor, Some(slot.index));
        }
        if slot.predecessor.as_ref().is_some_and(|p| p.name == name) {
            return (RingRole::Predecessor, Some(slot.index));
        }
    }
    (RingRole::None, None)
}

/// The row of `pod`; `moved_version`: the transition whose moved sessions to show (the last
/// finished one), else the pod's newest.
fn pod_row(pod: &Pod, ring: Option<&Ring>, now: Timestamp, moved_version: Option<u64>) -> PodRow {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let (ring_role, ring_slot) = role_in(ring, &name);
    let label_slot = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SLOT))
        .and_then(|s| s.parse().ok());
    let status = pod.status.as_ref();
    let (progress, unreadable_annotations) = progress_of(pod);
    let unreadable_moved = unreadable_annotations
        .iter()
        .any(|a| a == annotations::MOVED_SESSIONS);
    let (moved_sessions, moved_report) =
        moved_row(progress.moved.as_ref(), unreadable_moved, moved_version);
    PodRow {
        slot: ring_slot.or(label_slot),
        ring_role,
        phase: status.and_then(|s| s.phase.clone()),
        ready: is_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        restarts: status
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |c| c.iter().map(|c| c.restart_count).sum()),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ip: status.and_then(|s| s.pod_ip.clone()),
        age_seconds: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| seconds_since(now, t.0)),
        progress: (&progress).into(),
        moved_sessions,
        moved_report,
        unreadable_annotations,
        name,
    }
}

/// Shards of `slot` under `table`.
fn count_in(counts: &BTreeMap<u16, u32>, slot: u16) -> u32 {
    counts.get(&slot).copied().unwrap_or(0)
}

fn slot_rows(ring: &Ring, pods: &[PodRow]) -> Vec<SlotRow> {
    let current = ring.current();
    let counts = current.counts();
    let slot_counts: Vec<u32> = ring
        .slots()
        .iter()
        .map(|s| count_in(&counts, s.index))
        .collect();
    let shares = shares(&slot_counts);
    let (other, other_counts) = match ring.transition() {
        Transition::Stable => (None, BTreeMap::new()),
        Transition::Warm { target } => (Some(target), target.counts()),
        Transition::Switch { previous } => (Some(previous), previous.counts()),
    };
    let phase = ring.phase();
    ring.slots()
        .iter()
        .zip(slot_counts)
        .zip(shares)
        .map(|((slot, shards), share_percent)| {
            // Shards the slot holds in one table and not in the other.
            let (mut only_current, mut only_other) = (0u32, 0u32);
            if let Some(other) = other {
                for (&in_current, &in_other) in current.as_slice().iter().zip(other.as_slice()) {
                    if in_current != in_other {
                        only_current += u32::from(in_current == slot.index);
                        only_other += u32::from(in_other == slot.index);
                    }
                }
            }
            // Warm moves from `current` to `target`; Switch has moved from `previous` to
            // `current`.
            let (gaining, losing) = match phase {
                RingPhase::Warm => (only_other, only_current),
                RingPhase::Switch => (only_current, only_other),
                RingPhase::Stable => (0, 0),
            };
            let other_count = other.map(|_| count_in(&other_counts, slot.index));
            SlotRow {
                index: slot.index,
                state: slot.state,
                pod: slot.pod.name.clone(),
                ready: pods.iter().any(|p| p.name == slot.pod.name && p.ready),
                shards,
                share_percent,
                target_shards: other_count.filter(|_| phase == RingPhase::Warm),
                previous_shards: other_count.filter(|_| phase == RingPhase::Switch),
                gaining,
                losing,
                successor: slot.successor.as_ref().map(|p| p.name.clone()),
                predecessor: slot.predecessor.as_ref().map(|p| p.name.clone()),
            }
        })
        .collect()
}

/// Reads the ring `ConfigMap` with the operator's reader (the SDK's document parser, plus
/// the operator's bookkeeping annotation).
fn read_ring(
    namespace: &str,
    service: &str,
    config_map: Option<&ConfigMap>,
) -> Result<PublishedRing, RingProblem> {
    let name = RingDocument::config_map_name(service);
    let Some(config_map) = config_map else {
        return Err(RingProblem {
            reason: RingProblemReason::NotFound,
            message: format!(
                "no ring published yet: ConfigMap {namespace}/{name} does not exist (the operator publishes it once the first pods are Ready)"
            ),
        });
    };
    published_ring(config_map).map_err(|e| match e {
        ObserveError::MissingRingKey => RingProblem {
            reason: RingProblemReason::MissingKey,
            message: format!(
                "ConfigMap {namespace}/{name} has no key {}",
                RingDocument::CONFIG_MAP_KEY
            ),
        },
        ObserveError::Ring(e) => RingProblem {
            reason: RingProblemReason::Invalid,
            message: format!("ConfigMap {namespace}/{name} does not hold a valid ring: {e}"),
        },
    })
}

/// The last transition as the status records it, with the operator's sums of the moved
/// sessions and the reason of its `MovedSessionsReported` condition.
fn transition_summary(
    t: &TransitionRecord,
    reports: Option<String>,
    now: Timestamp,
) -> TransitionSummary {
    let running = t.finished_at.is_none();
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds of a transition, far below 2^52"
    )]
    let elapsed = running.then(|| seconds_since(now, t.started_at.0) as f64);
    TransitionSummary {
        kind: t.kind,
        from_version: t.from_version,
        to_version: t.to_version,
        shards_moved: t.shards_moved,
        started_at: t.started_at.0.to_string(),
        finished_at: t.finished_at.as_ref().map(|f| f.0.to_string()),
        duration_seconds: t.duration_seconds.or(elapsed),
        finished_seconds_ago: t.finished_at.as_ref().map(|f| seconds_since(now, f.0)),
        in_progress: running,
        warm_hit_percent: t.warm_hit_percent,
        moved_sessions: t.moved_sessions.clone().map(Into::into),
        reports,
    }
}

/// `spec.placement` and `status.placement`, unless the service balances by key count and has
/// no placement status.
fn placement_summary(
    service: &locus_contract::crd::StatefulService,
    now: Timestamp,
) -> Option<PlacementSummary> {
    let status = service.status.as_ref();
    let spec_placement = &service.spec.placement;
    let status_placement = status.and_then(|s| s.placement.as_ref());
    (spec_placement.balance != BalanceMode::Keys || status_placement.is_some()).then(|| {
        let measured = status_placement.cloned().unwrap_or_default();
        PlacementSummary {
            mode: spec_placement.balance,
            trigger_percent: spec_placement.trigger_percent,
            target_percent: spec_placement.target_percent,
            busiest_percent: measured.busiest_percent,
            message: measured.message,
            pods: measured.pods,
            last_rebalance_seconds_ago: measured
                .last_rebalance
                .as_ref()
                .map(|r| seconds_since(now, r.started_at.0)),
            last_rebalance: measured.last_rebalance,
            hot_shards: measured.hot_shards,
            trigger_held: measured.trigger_held,
        }
    })
}

/// The report of `objects` at time `now`.
pub fn build(objects: &Objects, now: Timestamp) -> StatusReport {
    let service = &objects.service;
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let status = service.status.as_ref();
    let (published, ring_problem) = match read_ring(&namespace, &name, objects.ring.as_ref()) {
        Ok(published) => (Some(published), None),
        Err(problem) => (None, Some(problem)),
    };
    let ring = published.as_ref().map(|p| &p.ring);
    let record = status.and_then(|s| s.last_transition.as_ref());
    let moved_version = record
        .filter(|t| t.finished_at.is_some())
        .map(|t| t.to_version);
    let mut pods: Vec<PodRow> = objects
        .pods
        .iter()
        .map(|pod| pod_row(pod, ring, now, moved_version))
        .collect();
    pods.sort_by(|a, b| (a.slot, &a.name).cmp(&(b.slot, &b.name)));
    let slots = ring.map(|r| slot_rows(r, &pods)).unwrap_or_default();
    let ring_summary = published.as_ref().map(|p| RingSummary {
        config_map: RingDocument::config_map_name(&name),
        version: p.ring.version(),
        phase: p.ring.phase(),
        shards: p.ring.shards().get(),
        vnodes: p.ring.vnodes(),
        published_at: p.meta.as_ref().map(|m| m.published_at.to_string()),
        age_seconds: p.meta.as_ref().map(|m| seconds_since(now, m.published_at)),
        timed_out: p
            .meta
            .as_ref()
            .map(|m| m.timed_out.clone())
            .unwrap_or_default(),
    });
    let conditions = status
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| ConditionRow {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.0.to_string(),
                    since_seconds: seconds_since(now, c.last_transition_time.0),
                })
                .collect()
        })
        .unwrap_or_default();
    let reports = status
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == MOVED_SESSIONS_REPORTED)
        })
        .map(|c| c.reason.clone());
    let last_transition = record.map(|t| transition_summary(t, reports, now));
    let placement = placement_summary(service, now);
    let mut report = StatusReport {
        service: name,
        namespace,
        generation: service.metadata.generation,
        observed_generation: status.and_then(|s| s.observed_generation),
        phase: status.map(|s| s.phase),
        replicas: Replicas {
            desired: service.spec.replicas,
            current: status.map(|s| s.replicas),
            ready: status.map(|s| s.ready_replicas),
            active: status.map(|s| s.active_replicas),
        },
        shards: status
            .and_then(|s| s.shards)
            .unwrap_or_else(|| service.spec.desired_shards()),
        revision: Revisions {
            current: status.and_then(|s| s.current_revision.clone()),
            update: status.and_then(|s| s.update_revision.clone()),
        },
        ring: ring_summary,
        ring_problem,
        slots,
        pods,
        conditions,
        last_transition,
        placement,
        warnings: Vec::new(),
    };
    report.warnings = warnings(&report);
    report
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "shares are computed in exact tenths and compared with the same literals"
)]
pub(crate) mod tests {
    use super::*;
    use locus_contract::crd::StatefulService;
    use serde_json::{Value, json};

    /// Version 4, phase warm: slot 2 (`ledger-2-ccccc`) joins and gains
    /// shards 1, 5 and 6 from slots 0 and 1.
    pub fn warm_to_three() -> Value {
        ring_json(
            4,
            "warm",
            &[
                ("ledger-0-aaaaa", "active"),
                ("ledger-1-bbbbb", "active"),
                ("ledger-2-ccccc", "joining"),
            ],
            &[0, 0, 1, 0, 1, 0, 1, 0],
            Some(&[0, 2, 1, 0, 1, 2, 2, 0]),
        )
    }

    /// A ring document: `slots` as (pod, state), `current` and optional second table.
    pub fn ring_json(
        version: u64,
        phase: &str,
        slots: &[(&str, &str)],
        current: &[u16],
        other: Option<&[u16]>,
    ) -> Value {
        let table = |t: &[u16]| {
            locus_contract::ring::Assignment::new(t.to_vec())
                .unwrap()
                .to_base64()
        };
        let mut doc = json!({
            "schema": 1, "namespace": "demo", "service": "ledger", "version": version,
            "hash": {"algorithm": "xxh3-64", "seed": 0},
            "shards": current.len(), "vnodes": 16, "phase": phase,
            "slots": slots.iter().enumerate().map(|(i, (pod, state))| json!({
                "index": i, "state": state,
                "pod": {"name": pod, "uid": format!("uid-{pod}"), "address": format!("10.0.0.{}:8080", i + 1)},
            })).collect::<Vec<_>>(),
            "current": table(current),
        });
        match (phase, other) {
            ("warm", Some(t)) => doc["target"] = json!(table(t)),
            ("switch", Some(t)) => doc["previous"] = json!(table(t)),
            _ => {}
        }
        doc
    }

    pub fn config_map(ring: &Value) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "ledger-ring", "namespace": "demo", "annotations": {
                "locus.dev/ring-meta": r#"{"publishedAt":"2030-01-01T00:00:50Z"}"#,
            }},
            "data": {"ring.json": ring.to_string()},
        }))
        .unwrap()
    }

    pub fn pod(name: &str, slot: u16, ready: bool, annotations: &[(&str, &str)]) -> Pod {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "demo", "uid": format!("uid-{name}"),
                "creationTimestamp": "2030-01-01T00:00:00Z",
                "labels": {"locus.dev/service": "ledger", "locus.dev/slot": slot.to_string()},
                "annotations": annotations,
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
            "status": {
                "phase": "Running", "podIP": format!("10.0.0.{}", slot + 1),
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": "app", "image": "app", "imageID": "", "ready": ready, "restartCount": 2}],
            },
        }))
        .unwrap()
    }

    pub fn service(replicas: i32, status: &Value) -> StatefulService {
        serde_json::from_value(json!({
            "apiVersion": "locus.dev/v1alpha1", "kind": "StatefulService",
            "metadata": {"name": "ledger", "namespace": "demo", "uid": "svc", "generation": 2},
            "spec": {"replicas": replicas, "shards": 8, "port": "http",
                "template": {"spec": {"containers": [{"name": "app"}]}}},
            "status": status,
        }))
        .unwrap()
    }

    pub fn stable_status() -> Value {
        json!({
            "observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "activeReplicas": 2,
            "ringVersion": 3, "phase": "Stable",
            "conditions": [
                {"type": "Available", "status": "True", "reason": "AllShardsServed",
                 "message": "every shard is owned by a slot whose pod is Ready",
                 "lastTransitionTime": "2030-01-01T00:00:40Z"},
                {"type": "Progressing", "status": "False", "reason": "Converged",
                 "message": "2 slots of revision abc serve a stable ring",
                 "lastTransitionTime": "2030-01-01T00:00:50Z"},
                {"type": "Degraded", "status": "False", "reason": "AsExpected",
                 "message": "nothing needs attention", "lastTransitionTime": "2030-01-01T00:00:10Z"},
                {"type": "MovedSessionsReported", "status": "True", "reason": "Complete",
                 "message": "ring version 3: all 2 pods reported final counts",
                 "lastTransitionTime": "2030-01-01T00:01:20Z"},
            ],
            "currentRevision": "abc", "updateRevision": "abc",
            "lastTransition": {"kind": "ScaleUp", "fromVersion": 1, "toVersion": 3,
                "shardsMoved": 3, "startedAt": "2030-01-01T00:00:30Z",
                "finishedAt": "2030-01-01T00:00:50Z", "durationSeconds": 20.0,
                "warmHitPercent": 90.0,
                "movedSessions": {"warm": {"pushed": 9, "total": 9},
                    "cold": {"absent": 1, "total": 1}, "served": {"warm": 8, "cold": 1},
                    "coldWhilePreviousAlive": 1, "podsExpected": 2, "podsReported": 2,
                    "final": true}},
        })
    }

    pub fn now() -> Timestamp {
        "2030-01-01T00:01:40Z".parse().unwrap()
    }

    /// A stable two-slot service: slot 0 holds 5 of 8 shards, slot 1 holds 3.
    pub fn stable() -> Objects {
        Objects {
            service: service(2, &stable_status()),
            ring: Some(config_map(&ring_json(
                3,
                "stable",
                &[("ledger-0-aaaaa", "active"), ("ledger-1-bbbbb", "active")],
                &[0, 0, 1, 0, 1, 0, 1, 0],
                None,
            ))),
            pods: vec![
                pod(
                    "ledger-1-bbbbb",
                    1,
                    true,
                    &[
                        ("locus.dev/observed-ring-version", "3"),
                        (
                            "locus.dev/moved-sessions",
                            r#"{"3":{"warm":{"pushed":9},"cold":{"absent":1},"state":"final"}}"#,
                        ),
                    ],
                ),
                pod(
                    "ledger-0-aaaaa",
                    0,
                    true,
                    &[
                        ("locus.dev/observed-ring-version", "3"),
                        ("locus.dev/moved-sessions", r#"{"3":{"state":"final"}}"#),
                    ],
                ),
            ],
        }
    }

    #[test]
    fn shares_add_up_to_exactly_100() {
        assert_eq!(shares(&[86, 85, 85]), vec![33.6, 33.2, 33.2]);
        assert_eq!(shares(&[1, 1, 1]), vec![33.4, 33.3, 33.3]);
        assert_eq!(shares(&[5, 3]), vec![62.5, 37.5]);
        assert_eq!(shares(&[7, 0]), vec![100.0, 0.0]);
        assert_eq!(shares(&[0, 0]), vec![0.0, 0.0]);
        assert!(shares(&[]).is_empty());
        for counts in [
            vec![1u32; 7],
            vec![4096, 0, 1],
            vec![820, 819, 819, 819, 819],
            vec![3; 2048],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
        ] {
            let tenths: i64 = shares(&counts)
                .iter()
                .map(|s| (s * 10.0).round() as i64)
                .sum();
            assert_eq!(tenths, 1000, "{counts:?}");
        }
    }

    #[test]
    fn a_stable_service_is_read_slot_by_slot() {
        let report = build(&stable(), now());
        assert_eq!(report.service, "ledger");
        assert_eq!(report.phase, Some(Phase::Stable));
        let ring = report.ring.as_ref().unwrap();
        assert_eq!(
            (ring.version, ring.phase, ring.shards),
            (3, RingPhase::Stable, 8)
        );
        assert_eq!(ring.published_at.as_deref(), Some("2030-01-01T00:00:50Z"));
        assert_eq!(report.slots.len(), 2);
        assert_eq!(report.slots[0].pod, "ledger-0-aaaaa");
        assert_eq!(
            (report.slots[0].shards, report.slots[0].share_percent),
            (5, 62.5)
        );
        assert_eq!(
            (report.slots[1].shards, report.slots[1].share_percent),
            (3, 37.5)
        );
        assert!(
            report
                .slots
                .iter()
                .all(|s| s.ready && s.gaining == 0 && s.losing == 0)
        );
        // Pods sorted by slot, with what the pod says of itself.
        let names: Vec<&str> = report.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ledger-0-aaaaa", "ledger-1-bbbbb"]);
        let pod = &report.pods[1];
        assert_eq!(pod.ring_role, RingRole::Slot);
        assert_eq!((pod.restarts, pod.age_seconds), (2, Some(100)));
        assert_eq!(pod.ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(pod.progress.observed, Some(3));
        // Each pod's report for the last transition, and the operator's sums.
        assert_eq!(pod.moved_report, MovedReportState::Final);
        let moved = pod.moved_sessions.as_ref().unwrap();
        assert_eq!(
            (moved.version, moved.warm.pushed, moved.cold.absent),
            (3, 9, 1)
        );
        let last = report.last_transition.as_ref().unwrap();
        let sums = last.moved_sessions.as_ref().unwrap();
        assert_eq!(
            (sums.warm.total, sums.cold.total, sums.pods_reported),
            (9, 1, 2)
        );
        assert!(sums.r#final);
        assert_eq!(last.reports.as_deref(), Some("Complete"));
        assert_eq!(last.duration_seconds, Some(20.0));
        assert!(!last.in_progress);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }

    #[test]
    fn a_warm_ring_counts_what_each_slot_gains_and_loses() {
        let mut objects = stable();
        objects.ring = Some(config_map(&warm_to_three()));
        let report = build(&objects, now());
        let slot = |i: usize| &report.slots[i];
        assert_eq!(
            (slot(0).shards, slot(0).target_shards, slot(0).losing),
            (5, Some(3), 2)
        );
        assert_eq!(
            (slot(1).shards, slot(1).target_shards, slot(1).losing),
            (3, Some(2), 1)
        );
        assert_eq!(
            (slot(2).shards, slot(2).target_shards, slot(2).gaining),
            (0, Some(3), 3)
        );
        assert_eq!(slot(2).share_percent, 0.0);
        assert!(!slot(2).ready, "its pod does not exist");
        assert!(report.slots.iter().all(|s| s.previous_shards.is_none()));
    }

    #[test]
    fn a_switch_ring_counts_against_the_previous_table() {
        let mut objects = stable();
        objects.ring = Some(config_map(&ring_json(
            5,
            "switch",
            &[
                ("ledger-0-aaaaa", "active"),
                ("ledger-1-bbbbb", "active"),
                ("ledger-2-ccccc", "active"),
            ],
            &[0, 2, 1, 0, 1, 2, 2, 0],
            Some(&[0, 0, 1, 0, 1, 0, 1, 0]),
        )));
        let report = build(&objects, now());
        assert_eq!(
            (
                report.slots[0].previous_shards,
                report.slots[0].losing,
                report.slots[0].gaining
            ),
            (Some(5), 2, 0)
        );
        assert_eq!(
            (report.slots[2].previous_shards, report.slots[2].gaining),
            (Some(0), 3)
        );
    }

    #[test]
    fn without_a_ring_configmap_the_rest_is_still_read() {
        let mut objects = stable();
        objects.ring = None;
        let report = build(&objects, now());
        assert!(report.ring.is_none() && report.slots.is_empty());
        let problem = report.ring_problem.as_ref().unwrap();
        assert_eq!(problem.reason, RingProblemReason::NotFound);
        assert!(problem.message.contains("demo/ledger-ring"), "{problem:?}");
        assert_eq!(report.pods.len(), 2);
        assert!(report.pods.iter().all(|p| p.ring_role == RingRole::None));
        assert_eq!(report.pods[0].slot, Some(0), "the slot label stands in");
    }

    #[test]
    fn an_invalid_ring_is_reported_not_fatal() {
        let mut objects = stable();
        objects.ring = Some(
            serde_json::from_value(json!({
                "metadata": {"name": "ledger-ring"}, "data": {"ring.json": "{\"schema\": 9}"},
            }))
            .unwrap(),
        );
        let report = build(&objects, now());
        assert_eq!(
            report.ring_problem.as_ref().map(|p| p.reason),
            Some(RingProblemReason::Invalid)
        );
    }

    #[test]
    fn unreadable_progress_annotations_are_named() {
        let pod = pod(
            "ledger-0-aaaaa",
            0,
            true,
            &[
                ("locus.dev/observed-ring-version", "seven"),
                ("locus.dev/warmed-ring-version", " 4 "),
                ("locus.dev/moved-sessions", "1:2"),
            ],
        );
        let (progress, unreadable) = progress_of(&pod);
        assert_eq!(progress.observed, None);
        assert_eq!(progress.warmed, Some(4));
        assert_eq!(progress.moved, None);
        assert_eq!(
            unreadable,
            [
                "locus.dev/observed-ring-version",
                "locus.dev/moved-sessions"
            ]
        );
    }

    #[test]
    fn a_running_transition_reports_its_elapsed_time() {
        let mut status = stable_status();
        status["lastTransition"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| {
                !matches!(
                    k.as_str(),
                    "finishedAt" | "durationSeconds" | "warmHitPercent"
                )
            });
        let mut objects = stable();
        objects.service = service(2, &status);
        let last = build(&objects, now()).last_transition.unwrap();
        assert!(last.in_progress);
        assert_eq!(last.duration_seconds, Some(70.0));
        assert_eq!(last.finished_at, None);
    }
}
