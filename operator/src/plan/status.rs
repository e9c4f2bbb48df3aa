//! The status the planner wants the service to have, and the merge of conditions that keeps
//! `lastTransitionTime` unless a condition's status changes.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use locus_contract::ring::{Phase as RingPhase, Ring, SlotState};

use super::accounting::{self, Accounting};
use super::{Observed, ObservedPod, ReportingPod, RingMeta, naming, reasons};
use crate::crd::{
    AVAILABLE, DEGRADED, MOVED_SESSIONS_REPORTED, PROGRESSING, Phase, StatefulServiceStatus,
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
    /// A `Warm` or `Switch` step that waits for pods: what for and which (the `Progressing`
    /// condition's message).
    pub waiting: Option<&'a str>,
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

/// The observed pods by UID (the first, should two share one), for lookups in per-slot loops.
fn by_uid(pods: &[ObservedPod]) -> HashMap<&str, &ObservedPod> {
    let mut map = HashMap::with_capacity(pods.len());
    for pod in pods {
        map.entry(pod.uid.as_str()).or_insert(pod);
    }
    map
}

/// The observed pod behind a ring entry (same name and UID).
fn find<'a>(
    pods: &HashMap<&str, &'a ObservedPod>,
    pod: &locus_contract::ring::Pod,
) -> Option<&'a ObservedPod> {
    pods.get(pod.uid.as_str())
        .copied()
        .filter(|p| p.name == pod.name)
}

/// The pods expected to report the sessions they took over in the transition `meta` records:
/// those its bookkeeping names, else (bookkeeping of an older operator) the pods of the slots
/// that hold shards in `ring`.
pub(super) fn reporters(meta: &RingMeta, ring: Option<&Ring>) -> Vec<ReportingPod> {
    if !meta.reporters.is_empty() {
        return meta.reporters.clone();
    }
    ring.map(expected_reporters).unwrap_or_default()
}

/// The pods of the slots that hold shards in `ring` (a slot holding none took nothing over).
pub(super) fn expected_reporters(ring: &Ring) -> Vec<ReportingPod> {
    let held: BTreeSet<u16> = ring.current().counts().into_keys().collect();
    ring.slots()
        .iter()
        .filter(|s| held.contains(&s.index))
        .map(|s| ReportingPod {
            name: s.pod.name.clone(),
            uid: s.pod.uid.clone(),
        })
        .collect()
}

/// The revision most of the serving pods run: the update revision once all run it, else the
/// most common other revision (the one being rolled away from).
fn current_revision(facts: &StatusFacts<'_>, ring: &Ring) -> Option<String> {
    let pods = by_uid(facts.obs.pods);
    let revisions: Vec<&str> = ring
        .slots()
        .iter()
        .filter_map(|s| find(&pods, &s.pod))
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
    accounting: Option<&Accounting>,
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
                facts.waiting.map_or_else(
                    || format!("ring version {} is in phase {:?}", ring.version(), phase),
                    str::to_owned,
                ),
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
    let mut all = vec![available, progressing, degraded];
    if let Some(accounting) = accounting {
        let (status, reason, message) = &accounting.condition;
        all.push(Condition {
            type_: MOVED_SESSIONS_REPORTED.to_owned(),
            status: (*status).to_owned(),
            reason: (*reason).to_owned(),
            message: message.clone(),
            observed_generation: generation,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        });
    }
    all
}

/// The status, and when it changes by itself if nothing else happens (a report wait ending).
pub(super) fn build(facts: &StatusFacts<'_>) -> (StatefulServiceStatus, Option<Timestamp>) {
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
    let pods = by_uid(obs.pods);
    let unserved: Vec<u16> = facts
        .ring
        .map(|ring| {
            ring.slots()
                .iter()
                .filter(|s| held.contains(&s.index))
                .filter(|s| {
                    s.state == SlotState::Unavailable
                        || !find(&pods, &s.pod).is_some_and(ObservedPod::healthy)
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
    // The sums of the pods' reports: recomputed until every expected pod reported final
    // counts, kept from then on (a pod restarted later reports its counts afresh).
    let mut accounting = None;
    let transition = facts.meta.and_then(|meta| {
        let mut record = meta.transition.clone()?;
        let previous = obs.status.and_then(|s| s.last_transition.as_ref());
        let expected = reporters(meta, facts.ring);
        let counted = accounting::account(obs.pods, &record, &expected, previous, obs.now);
        record.moved_sessions.clone_from(&counted.summary);
        record.warm_hit_percent = counted.percent;
        accounting = Some(counted);
        Some(record)
    });
    let timed_out = facts.meta.map(|m| m.timed_out.clone()).unwrap_or_default();

    let desired = conditions(
        facts,
        &unserved,
        phase,
        transition.as_ref(),
        &timed_out,
        accounting.as_ref(),
    );
    let now = Time(Timestamp::from_second(obs.now.as_second()).unwrap_or(obs.now));
    let previous = obs
        .status
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let status = StatefulServiceStatus {
        observed_generation: generation,
        replicas: count(live.len()),
        ready_replicas: count(ready.len()),
        active_replicas: count(held.len()),
        shards: facts.ring.map(|r| r.shards().get()),
        ring_version: facts.ring.map(Ring::version),
        phase,
        conditions: merge_conditions(previous, desired, &now),
        selector: Some(naming::selector(obs.name)),
        current_revision: facts.ring.and_then(|r| current_revision(facts, r)),
        update_revision: Some(facts.revision.to_owned()),
        last_transition: transition,
        placement: None,
    };
    (status, accounting.and_then(|a| a.recheck_at))
}
