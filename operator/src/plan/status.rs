//! The status the planner wants the service to have, and the merge of conditions that keeps
//! `lastTransitionTime` unless a condition's status changes.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use locus::ring::{Phase as RingPhase, Ring, SlotState};

use super::{Observed, ObservedPod, RingMeta, naming, reasons};
use crate::crd::{
    AVAILABLE, DEGRADED, PROGRESSING, Phase, StatefulServiceStatus, TransitionRecord,
};

/// Facts the status is computed from.
pub(super) struct StatusFacts<'a> {
    pub obs: &'a Observed<'a>,
    pub n: u16,
    /// The ring as it will be after this pass.
    pub ring: Option<&'a Ring>,
    pub meta: Option<&'a RingMeta>,
    /// UIDs of the pods this pass deletes: they no longer count.
    pub leaving: &'a BTreeSet<&'a str>,
    /// In a `Switch` ring: every member reported it.
    pub switch_observed: bool,
    /// In a `Switch` ring past `timeouts.drain`: what it waits for.
    pub drain_stall: Option<&'a str>,
    /// Nothing remains to do.
    pub converged: bool,
    /// Revision of `spec.template`.
    pub revision: &'a str,
}

/// Merges `desired` conditions into `previous`: a condition whose status did not change keeps
/// its `lastTransitionTime`; one that changed (or is new) gets `now`. The result lists the
/// desired conditions in their order; conditions not desired are dropped.
pub fn merge_conditions(
    previous: &[Condition],
    desired: Vec<Condition>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|mut condition| {
            condition.last_transition_time = previous
                .iter()
                .find(|p| p.type_ == condition.type_ && p.status == condition.status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            condition
        })
        .collect()
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

fn find<'a>(pods: &'a [ObservedPod], pod: &locus::ring::Pod) -> Option<&'a ObservedPod> {
    pods.iter().find(|p| p.uid == pod.uid && p.name == pod.name)
}

/// The warm-hit percentage of the finished transition `record`: the sessions the pods of the
/// `Stable` ring that completed it took over with their state, out of all they took over, as
/// each pod reported with that ring (`locus.dev/moved-sessions`). `None` while the transition
/// runs, until every pod of the ring reported, or when no session moved.
fn warm_hit_percent(
    pods: &[ObservedPod],
    ring: Option<&Ring>,
    record: &TransitionRecord,
) -> Option<f64> {
    let ring = ring.filter(|r| record.finished_at.is_some() && r.version() == record.to_version)?;
    let (mut warm, mut cold) = (0u64, 0u64);
    for slot in ring.slots() {
        let moved = find(pods, &slot.pod)?
            .progress
            .moved
            .filter(|m| m.version == record.to_version)?;
        warm = warm.saturating_add(moved.warm);
        cold = cold.saturating_add(moved.cold);
    }
    let total = warm.saturating_add(cold);
    #[allow(
        clippy::cast_precision_loss,
        reason = "a percentage rounded to a tenth; session counts far below 2^52"
    )]
    (total > 0).then(|| (warm as f64 * 1000.0 / total as f64).round() / 10.0)
}

/// The revision most of the serving pods run: the update revision once all run it, else the
/// most common other revision (the one being rolled away from).
fn current_revision(facts: &StatusFacts<'_>, ring: &Ring) -> Option<String> {
    let revisions: Vec<&str> = ring
        .slots()
        .iter()
        .filter_map(|s| find(facts.obs.pods, &s.pod))
        .map(|p| p.revision.as_str())
        .collect();
    if revisions.is_empty() {
        return None;
    }
    if revisions.iter().all(|r| *r == facts.revision) {
        return Some(facts.revision.to_owned());
    }
    let distinct: BTreeSet<&str> = revisions
        .iter()
        .copied()
        .filter(|r| *r != facts.revision)
        .collect();
    distinct
        .into_iter()
        .max_by_key(|r| {
            (
                revisions.iter().filter(|x| *x == r).count(),
                std::cmp::Reverse(*r),
            )
        })
        .map(str::to_owned)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The `Degraded` condition: a stalled drain first, then slots without a Ready pod, then
/// steps that rolled forward on their timeouts.
fn degraded(facts: &StatusFacts<'_>, unserved: &[u16], timed_out: &[String]) -> Condition {
    let generation = facts.obs.generation;
    if let Some(stall) = facts.drain_stall {
        condition(
            DEGRADED,
            true,
            reasons::DRAIN_STALLED,
            stall.to_owned(),
            generation,
        )
    } else if facts.ring.is_some() && facts.n > 0 && !unserved.is_empty() {
        condition(
            DEGRADED,
            true,
            "SlotsUnavailable",
            format!("slots {unserved:?} have no Ready pod"),
            generation,
        )
    } else if !timed_out.is_empty() {
        condition(
            DEGRADED,
            true,
            "StepTimedOut",
            format!(
                "the last transition rolled forward on timeouts: {}",
                timed_out.join(", ")
            ),
            generation,
        )
    } else {
        condition(
            DEGRADED,
            false,
            "AsExpected",
            "nothing needs attention".to_owned(),
            generation,
        )
    }
}

/// The three conditions, without transition times.
fn conditions(
    facts: &StatusFacts<'_>,
    unserved: &[u16],
    phase: Phase,
    transition: Option<&crate::crd::TransitionRecord>,
    timed_out: &[String],
) -> Vec<Condition> {
    let generation = facts.obs.generation;
    let available = match facts.ring {
        None => condition(
            AVAILABLE,
            false,
            "NoRing",
            "no ring published yet: waiting for the pods to become Ready".to_owned(),
            generation,
        ),
        Some(_) if facts.n == 0 => condition(
            AVAILABLE,
            false,
            "ScaledToZero",
            "replicas is 0".to_owned(),
            generation,
        ),
        Some(_) if unserved.is_empty() => condition(
            AVAILABLE,
            true,
            "AllShardsServed",
            "every shard is owned by a slot whose pod is Ready".to_owned(),
            generation,
        ),
        Some(_) => condition(
            AVAILABLE,
            false,
            "SlotsNotReady",
            format!("slots {unserved:?} own shards but have no Ready pod"),
            generation,
        ),
    };
    let progressing = if facts.converged {
        condition(
            PROGRESSING,
            false,
            "Converged",
            format!(
                "{} slots of revision {} serve a stable ring",
                facts.n, facts.revision
            ),
            generation,
        )
    } else {
        match (facts.ring, transition, facts.drain_stall) {
            (Some(_), _, Some(stall)) => condition(
                PROGRESSING,
                true,
                reasons::DRAIN_STALLED,
                stall.to_owned(),
                generation,
            ),
            (Some(ring), Some(record), _) if ring.phase() != RingPhase::Stable => condition(
                PROGRESSING,
                true,
                &format!("{:?}", record.kind),
                format!("ring version {} is in phase {:?}", ring.version(), phase),
                generation,
            ),
            (None, _, _) => condition(
                PROGRESSING,
                true,
                "CreatingPods",
                format!("waiting for {} pods to become Ready", facts.n),
                generation,
            ),
            _ => condition(
                PROGRESSING,
                true,
                "Reconciling",
                "pods or slots differ from the spec".to_owned(),
                generation,
            ),
        }
    };
    let degraded = degraded(facts, unserved, timed_out);
    vec![available, progressing, degraded]
}

pub(super) fn build(facts: &StatusFacts<'_>) -> StatefulServiceStatus {
    let obs = facts.obs;
    let generation = obs.generation;
    let staying = || {
        obs.pods
            .iter()
            .filter(|p| !facts.leaving.contains(p.uid.as_str()))
    };
    let live: BTreeSet<u16> = staying().filter(|p| p.live()).map(|p| p.slot).collect();
    let ready: BTreeSet<u16> = staying().filter(|p| p.healthy()).map(|p| p.slot).collect();
    let held: BTreeSet<u16> = facts
        .ring
        .map(|r| r.current().counts().into_keys().collect())
        .unwrap_or_default();
    let unserved: Vec<u16> = facts
        .ring
        .map(|ring| {
            ring.slots()
                .iter()
                .filter(|s| held.contains(&s.index))
                .filter(|s| {
                    s.state == SlotState::Unavailable
                        || !find(obs.pods, &s.pod).is_some_and(ObservedPod::healthy)
                })
                .map(|s| s.index)
                .collect()
        })
        .unwrap_or_default();
    let phase = match facts.ring.map(Ring::phase) {
        None | Some(RingPhase::Stable) => Phase::Stable,
        Some(RingPhase::Warm) => Phase::Warm,
        Some(RingPhase::Switch) if facts.switch_observed => Phase::Settle,
        Some(RingPhase::Switch) => Phase::Switch,
    };
    let transition = facts.meta.and_then(|m| m.transition.clone()).map(|mut t| {
        // Computed once, when every pod has reported; kept from then on (a pod restarted
        // later reports counts from zero).
        let known = obs
            .status
            .and_then(|s| s.last_transition.as_ref())
            .filter(|last| last.from_version == t.from_version && last.to_version == t.to_version)
            .and_then(|last| last.warm_hit_percent);
        t.warm_hit_percent = known.or_else(|| warm_hit_percent(obs.pods, facts.ring, &t));
        t
    });
    let timed_out = facts.meta.map(|m| m.timed_out.clone()).unwrap_or_default();

    let desired = conditions(facts, &unserved, phase, transition.as_ref(), &timed_out);
    let now = Time(Timestamp::from_second(obs.now.as_second()).unwrap_or(obs.now));
    let previous = obs
        .status
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    StatefulServiceStatus {
        observed_generation: generation,
        replicas: count(live.len()),
        ready_replicas: count(ready.len()),
        active_replicas: count(held.len()),
        ring_version: facts.ring.map(Ring::version),
        phase,
        conditions: merge_conditions(previous, desired, &now),
        selector: Some(naming::selector(obs.name)),
        current_revision: facts.ring.and_then(|r| current_revision(facts, r)),
        update_revision: Some(facts.revision.to_owned()),
        last_transition: transition,
    }
}
