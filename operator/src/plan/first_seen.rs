//! When this operator process first saw the states that step deadlines count from
//! ([`FirstSeen`], part of the planner's input).
//!
//! A deadline counts from a time another process recorded on its own clock: a ring's
//! `published_at` (written by whichever operator published it), a pod's `Ready` condition
//! change or creation (written by the kubelet and the API server). Compared with this
//! process's clock alone, a recorded time from a clock that runs behind ours would make a
//! deadline run out early (a standby 60 s ahead that takes over mid-Switch would see every
//! deadline as passed at once). So every deadline starts at the **later** of the recorded time
//! and the time this process first saw that same state, measured on its own clock.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use locus_contract::ring::{Phase, Ring};

use super::ObservedPod;

/// A pod's readiness as the API server reports it: the state the unready grace counts from.
/// A different `changed_at` is a different state (the pod became Ready and not Ready again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// When it last changed (`lastTransitionTime`).
    pub changed_at: Option<Timestamp>,
}

impl Readiness {
    /// The readiness of `pod`.
    pub fn of(pod: &ObservedPod) -> Self {
        Self {
            ready: pod.ready,
            changed_at: pod.ready_changed_at,
        }
    }
}

/// When this process first saw the published ring at a version and phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSeen {
    /// The ring's version.
    pub version: u64,
    /// The ring's phase.
    pub phase: Phase,
    /// When this process first saw (or published) it, on its own clock.
    pub at: Timestamp,
}

/// When this process first saw a pod, and the pod in its current readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSeen {
    /// When this process first saw the pod (its UID), on its own clock.
    pub pod: Timestamp,
    /// The readiness it was first seen in at [`Self::readiness_at`].
    pub readiness: Readiness,
    /// When this process first saw the pod in `readiness`, on its own clock.
    pub readiness_at: Timestamp,
}

/// When this operator process first saw each state a step deadline counts from, as times on
/// its own wall clock (the controller measures them on the monotonic clock and converts them
/// when it builds the planner's input, so a wall-clock step between reconciles does not shorten
/// them). A state without an entry (or an empty `FirstSeen`) counts from its recorded time only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FirstSeen {
    /// The published ring, if this process saw one.
    pub ring: Option<RingSeen>,
    /// The pods, by UID.
    pub pods: BTreeMap<String, PodSeen>,
    /// When this process first saw each pod's current load report (`locus.dev/shard-load`,
    /// unchanged since), by pod UID.
    pub load_reports: BTreeMap<String, Timestamp>,
}

impl FirstSeen {
    /// When this process first saw `ring` at its version and phase.
    pub fn ring_at(&self, ring: &Ring) -> Option<Timestamp> {
        self.ring
            .filter(|s| s.version == ring.version() && s.phase == ring.phase())
            .map(|s| s.at)
    }

    /// When this process first saw `pod`.
    pub fn pod_at(&self, pod: &ObservedPod) -> Option<Timestamp> {
        self.pods.get(&pod.uid).map(|s| s.pod)
    }

    /// When this process first saw `pod` in its current readiness.
    pub fn readiness_at(&self, pod: &ObservedPod) -> Option<Timestamp> {
        self.pods
            .get(&pod.uid)
            .filter(|s| s.readiness == Readiness::of(pod))
            .map(|s| s.readiness_at)
    }
}

/// The start of a deadline that counts from `recorded` (a time written by another process, on
/// its clock) for a state this process first saw at `seen`: the later of the two.
pub(super) fn deadline_start(recorded: Timestamp, seen: Option<Timestamp>) -> Timestamp {
    seen.map_or(recorded, |seen| seen.max(recorded))
}
