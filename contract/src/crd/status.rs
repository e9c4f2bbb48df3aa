//! The observed state the operator reports: [`StatefulServiceStatus`].
//!
//! The operator writes status by server-side apply; conditions are a list-type map keyed by
//! `type`, so each condition is merged on its own.

// Doc comments of these types become the schema's descriptions, which users read through
// `kubectl explain`: field names there are written as users type them, without backticks.
#![allow(clippy::doc_markdown)]

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the service serves every shard from a Ready pod.
pub const AVAILABLE: &str = "Available";
/// Condition type: a transition (scale, rollout, reroute) is in progress.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something needs attention (a slot without a Ready pod, a step that timed out).
pub const DEGRADED: &str = "Degraded";
/// Condition type: every pod that may have taken sessions over in the last transition reported
/// its final counts (`status.lastTransition.movedSessions`).
pub const MOVED_SESSIONS_REPORTED: &str = "MovedSessionsReported";

/// Observed state of a `StatefulService`, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::crd::schema::for_kubernetes)]
pub struct StatefulServiceStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Number of slots that have a pod (the scale subresource reads it).
    #[serde(default)]
    pub replicas: i32,

    /// Number of slots whose pod is Ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Number of slots that own shards in the current ring.
    #[serde(default)]
    pub active_replicas: i32,

    /// Number of shards of the current ring: spec.shards, or the count the operator chose when
    /// spec.shards is unset. It never shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,

    /// Version of the last ring published in the ConfigMap `<name>-ring`; every publish adds 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_version: Option<u64>,

    /// Stable when no transition is in progress; otherwise the step in progress: Warm, Switch or
    /// Settle.
    #[serde(default)]
    pub phase: Phase,

    /// Latest observations of the service's state: Available, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Label selector of the service's pods, in the string form of kubectl's --selector (the
    /// scale subresource and the HorizontalPodAutoscaler read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Revision (hash) of the pod template that the current pods were created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,

    /// Revision (hash) of spec.template; differs from currentRevision while a rollout is in
    /// progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,

    /// The most recent transition: the one in progress, or the last one finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<TransitionRecord>,

    /// Placement by load (spec.placement.balance Load): the load each pod reports, the last
    /// rebalance and the shards too hot for any pod. Unset in the other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementStatus>,
}

/// What the operator knows about the load of the service's pods (status.placement).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// The load each slot's pod reports (annotation locus.dev/shard-load), by slot. Pods without
    /// a readable report are listed without figures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodLoad>,

    /// The busiest pod's requests per second over the mean, in percent, when every pod reported
    /// for the current ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busiest_percent: Option<u32>,

    /// Why no rebalance is starting now (reports missing or for another ring, the interval not
    /// passed, the load within the trigger), or which one started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The last rebalance by load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rebalance: Option<RebalanceRecord>,

    /// The busiest pod was above triggerPercent in the reports of these windows: a rebalance
    /// starts only when it is again in reports of later windows of every pod (two windows in
    /// a row; unset as soon as a report shows it within the trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_held: Option<TriggerHeld>,

    /// Shards busier alone than spec.placement.targetPercent of the mean pod load: no pod can
    /// take one within the target, so they stay where they are (doubling spec.shards splits
    /// them). Busiest first, at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hot_shards: Vec<HotShardStatus>,
}

/// The load one pod reports.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodLoad {
    /// The slot the pod serves.
    pub slot: u32,
    /// The pod's name.
    pub pod: String,
    /// Requests per second over the report's window (rounded to a tenth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Request and response body bytes per second over the window (rounded to a whole byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
    /// The ring version the report counts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_version: Option<u64>,
    /// When the operator first saw this report (unchanged since): its age is the time since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<Time>,
    /// Why the report is not used: missing, unreadable, or for another ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One rebalance by load.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceRecord {
    /// When its Warm ring was published.
    pub started_at: Time,
    /// The ring version whose reports it was planned from.
    pub from_version: u64,
    /// Shards it moves.
    pub shards_moved: u32,
    /// The busiest pod's requests per second over the mean, in percent, before.
    pub busiest_percent_before: u32,
    /// The same, predicted after the moves (measured again once the pods report for the new
    /// ring: busiestPercent).
    pub busiest_percent_predicted: u32,
    /// Set when the round moved nothing but doubled the shard count to split shards too hot for
    /// any pod (spec.shards unset): the count after. Each hot shard becomes two of about half
    /// its load, which the next rounds can place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_to_shards: Option<u32>,
}

/// Reports in which the busiest pod was above the trigger, waiting for the next windows to
/// confirm it.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerHeld {
    /// The ring version the reports are for.
    pub ring_version: u64,
    /// The latest end of those reports' windows (Unix milliseconds, each pod's clock): the
    /// next reports of every pod must have ended later.
    pub window_end_ms: u64,
    /// The busiest pod's requests per second over the mean in those reports, in percent.
    pub busiest_percent: u32,
}

/// A shard too hot for any pod.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HotShardStatus {
    /// The shard.
    pub shard: u32,
    /// The slot that holds it.
    pub slot: u32,
    /// Its requests per second (rounded to a tenth).
    pub requests_per_second: f64,
    /// Its requests per second over the mean pod load, in percent.
    pub percent_of_mean: u32,
}

/// Step of the ring's life cycle.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum Phase {
    /// No transition in progress: the ring has no target and no previous assignment.
    #[default]
    Stable,
    /// A target assignment is published beside the current one; gaining pods pre-copy sessions.
    Warm,
    /// The target became current; losing pods hand over and drain the keys they lost.
    Switch,
    /// Waiting for every member to observe the new ring and every losing pod to drain.
    Settle,
}

/// What started a transition.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionKind {
    /// Slots were added.
    ScaleUp,
    /// Slots were removed.
    ScaleDown,
    /// Pods were replaced by surge pods after a template change.
    Rollout,
    /// Pods were restarted in place, keeping state through their snapshot.
    InPlace,
    /// A failed slot's shards moved to the other slots.
    Reroute,
    /// Shards moved from the busiest pods to the least busy (spec.placement.balance Load).
    Rebalance,
    /// The shard count grew; shards were split in place and none moved.
    Reshard,
}

/// Summary of one transition, for `kubectl describe` and dashboards.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransitionRecord {
    /// What started the transition: ScaleUp, ScaleDown, Rollout, InPlace, Reroute, Reshard or
    /// Rebalance.
    pub kind: TransitionKind,

    /// Ring version the transition started from.
    pub from_version: u64,

    /// Ring version of the last step published so far (the final one once finished).
    pub to_version: u64,

    /// Number of shards whose owner changed.
    #[serde(default)]
    pub shards_moved: u32,

    /// When the first step was published.
    pub started_at: Time,

    /// When the ring became stable again; unset while the transition is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// Seconds from startedAt to finishedAt; unset while the transition is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,

    /// Percentage (0 to 100, one decimal) of the sessions the pods took over in this
    /// transition that arrived with their state (movedSessions.warm.total out of warm.total +
    /// cold.total). Set only once every pod of movedSessions.podsExpected reported final
    /// counts for this transition (movedSessions.final, condition MovedSessionsReported True),
    /// and kept from then on; unset while reports are counting, missing, partial or unreadable,
    /// and when no session moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub warm_hit_percent: Option<f64>,

    /// How the sessions the pods took over in this transition arrived, summed over the pods of
    /// the final ring (annotation locus.dev/moved-sessions); set once the transition finished.
    /// Recomputed on each reconcile until final, then kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_sessions: Option<MovedSessionsSummary>,

    /// Pods that lost shards in this transition and were gone (deleted by the operator to
    /// fence them, failed or evicted) rather than reported drained when it settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub losers_gone: Vec<String>,
}

/// Sessions taken over with the previous owner's state, by path.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WarmSessions {
    /// The pre-copy of the Warm step, confirmed unchanged at the first touch.
    #[serde(default)]
    pub precopied: u64,
    /// Handed over by the previous owner at the first touch.
    #[serde(default)]
    pub transferred: u64,
    /// Pushed by the previous owner while it drained.
    #[serde(default)]
    pub pushed: u64,
    /// Pushed before the pod owned the key (parked), installed at the switch or first touch.
    #[serde(default)]
    pub promoted: u64,
    /// All warm takeovers.
    #[serde(default)]
    pub total: u64,
}

/// Sessions first served without the previous owner's state, by path.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ColdSessions {
    /// The previous owner answered that it held nothing for the key (never created,
    /// passivated or evicted): loaded from the persistence.
    #[serde(default)]
    pub absent: u64,
    /// The previous owner did not answer and was fenced while the pod waited: loaded from the
    /// persistence.
    #[serde(default)]
    pub rolled_forward: u64,
    /// The previous owner was fenced before the first request asked it (drained through the
    /// persistence, or gone): loaded from the persistence.
    #[serde(default)]
    pub fenced_load: u64,
    /// All cold takeovers.
    #[serde(default)]
    pub total: u64,
    /// Of all cold takeovers, those of keys nothing was stored for anywhere: new sessions,
    /// which no handoff could have warmed.
    #[serde(default)]
    pub created: u64,
}

/// The breakdown by path, as the operator's events and conditions and `kubectl locus status`
/// write it: `precopied 3, transferred 5, pushed 12, promoted 0`.
impl fmt::Display for WarmSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precopied {}, transferred {}, pushed {}, promoted {}",
            self.precopied, self.transferred, self.pushed, self.promoted
        )
    }
}

/// The breakdown by path, as the operator's events and conditions and `kubectl locus status`
/// write it: `absent 2, rolled forward 0, fenced load 1`, then `; 2 of them new sessions` when
/// some were new.
impl fmt::Display for ColdSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "absent {}, rolled forward {}, fenced load {}",
            self.absent, self.rolled_forward, self.fenced_load
        )?;
        if self.created > 0 {
            write!(f, "; {} of them new sessions", self.created)?;
        }
        Ok(())
    }
}

impl MovedSessionsSummary {
    /// Warm takeovers out of all, in percent rounded to a tenth; `None` when nothing was taken
    /// over (the same figure as [`MovedSessions::warm_percent`](crate::progress::MovedSessions::warm_percent)
    /// of the summed counts).
    #[must_use]
    pub fn warm_percent(&self) -> Option<f64> {
        crate::progress::warm_percent(self.warm.total, self.cold.total)
    }
}

impl From<&crate::progress::WarmTakeovers> for WarmSessions {
    fn from(w: &crate::progress::WarmTakeovers) -> Self {
        Self {
            precopied: w.precopied,
            transferred: w.transferred,
            pushed: w.pushed,
            promoted: w.promoted,
            total: w.total(),
        }
    }
}

impl From<&crate::progress::ColdTakeovers> for ColdSessions {
    fn from(c: &crate::progress::ColdTakeovers) -> Self {
        Self {
            absent: c.absent,
            rolled_forward: c.rolled_forward,
            fenced_load: c.fenced_load,
            total: c.total(),
            created: c.created,
        }
    }
}

impl From<&crate::progress::ServedTakeovers> for ServedSessions {
    fn from(s: &crate::progress::ServedTakeovers) -> Self {
        Self {
            warm: s.warm,
            cold: s.cold,
        }
    }
}

/// Taken-over sessions whose first request was served, by how they arrived.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServedSessions {
    /// Served with the previous owner's state.
    #[serde(default)]
    pub warm: u64,
    /// Served without it.
    #[serde(default)]
    pub cold: u64,
}

/// The sums of what the pods of a transition's final ring reported about the sessions they
/// took over in it.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MovedSessionsSummary {
    /// Sessions that arrived with their state.
    #[serde(default)]
    pub warm: WarmSessions,

    /// Sessions first served without it.
    #[serde(default)]
    pub cold: ColdSessions,

    /// Of all taken over, those a request was served for.
    #[serde(default)]
    pub served: ServedSessions,

    /// Cold takeovers while the previous owner was alive: cold.absent always (the previous
    /// owner answered), plus cold.rolledForward + cold.fencedLoad when no pod that lost shards
    /// in this transition was gone when it settled (losersGone empty: every previous owner
    /// drained, so it was alive and fenced). Pods report these two counts without naming the
    /// previous owner, so when any loser was gone they count in coldPreviousGone instead.
    #[serde(default)]
    pub cold_while_previous_alive: u64,

    /// Cold takeovers without an answer (cold.rolledForward + cold.fencedLoad) in a transition
    /// where a pod that lost shards was gone when it settled (losersGone not empty); 0
    /// otherwise.
    #[serde(default)]
    pub cold_previous_gone: u64,

    /// Pods expected to report: the pods of the slots that hold shards in the ring that
    /// completed the transition.
    #[serde(default)]
    pub pods_expected: u32,

    /// Expected pods that reported final counts.
    #[serde(default)]
    pub pods_reported: u32,

    /// Expected pods whose counts may still change (their handoff deadline runs); at most 10
    /// names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,

    /// Expected pods whose report is missing, partial (the pod restarted during the
    /// transition) or unreadable; at most 10 names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,

    /// Every expected pod reported final counts: the sums no longer change.
    #[serde(default)]
    pub r#final: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{ColdTakeovers, MovedSessions, TakeoverPath, WarmTakeovers};

    #[test]
    fn the_breakdown_names_every_path_and_the_new_sessions() {
        let warm = WarmTakeovers {
            precopied: 3,
            transferred: 5,
            pushed: 12,
            promoted: 0,
        };
        let mut cold = ColdTakeovers {
            absent: 2,
            rolled_forward: 0,
            fenced_load: 1,
            created: 0,
        };
        assert_eq!(
            WarmSessions::from(&warm).to_string(),
            "precopied 3, transferred 5, pushed 12, promoted 0"
        );
        assert_eq!(
            ColdSessions::from(&cold).to_string(),
            "absent 2, rolled forward 0, fenced load 1"
        );
        cold.created = 2;
        assert_eq!(
            ColdSessions::from(&cold).to_string(),
            "absent 2, rolled forward 0, fenced load 1; 2 of them new sessions"
        );
    }

    #[test]
    fn the_summary_percentage_is_the_counts_percentage() {
        let mut moved = MovedSessions::default();
        let summary = |m: &MovedSessions| MovedSessionsSummary {
            warm: WarmSessions::from(&m.warm),
            cold: ColdSessions::from(&m.cold),
            ..MovedSessionsSummary::default()
        };
        assert_eq!(summary(&moved).warm_percent(), None);
        for path in [
            TakeoverPath::Pushed,
            TakeoverPath::Pushed,
            TakeoverPath::Absent,
        ] {
            moved.count(path);
        }
        assert_eq!(summary(&moved).warm_percent(), Some(66.7));
        assert_eq!(summary(&moved).warm_percent(), moved.warm_percent());
    }
}
