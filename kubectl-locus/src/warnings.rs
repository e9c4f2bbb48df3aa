//! What needs attention, derived from a [`StatusReport`] by [`warnings`] (pure).
//!
//! | kind | when |
//! |---|---|
//! | `NoStatus` | the operator has written no status |
//! | `StatusBehind` | `status.observedGeneration` is below `metadata.generation` |
//! | `NoRing` / `InvalidRing` | no ring `ConfigMap`, or one that holds no valid ring |
//! | `Condition` | `Available` is not True, `Degraded` is True, or a condition is Unknown |
//! | `SlotUnavailable` | a slot of the ring is `unavailable` |
//! | `PodMissing` | the ring names a pod that does not exist |
//! | `PodNotReady` | a pod of the service is not Ready (and not terminating) |
//! | `ProgressMissing` / `ProgressBehind` | during a transition (ring `warm` or `switch`, version V): a pod the ring names has not reported `observed` ≥ V; in `warm`, a gaining pod or successor has not reported `warmed` ≥ V; in `switch`, a losing pod or predecessor has not reported `drained` ≥ V. Missing: no annotation; behind: a lower version |
//! | `UnreadableAnnotation` | a progress annotation is not a number (or not a moved-sessions report) |
//! | `MovedSessionsMissing` | the last transition finished and a pod's report of the sessions it took over in it is partial (the pod restarted during it), or, once the operator says `ReportsMissing`, missing or unreadable: its warm-hit percentage stays unset |
//! | `ColdTakeovers` | in the last finished transition, sessions were loaded without an answer while a previous owner was gone (`coldPreviousGone` > 0): writes it had not persisted are lost. Loads after a previous owner drained read what it handed over through the persistence and are not warned about |
//!
//! Terminating pods get no readiness or progress warning: they are on their way out, and the
//! operator treats a pod that is gone as fenced.

use serde::Serialize;

use locus_contract::ring::{Phase as RingPhase, SlotState, annotations};

use crate::report::{MovedReportState, PodRow, RingProblemReason, StatusReport};

/// Kinds of [`Warning`]; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(
    missing_docs,
    reason = "each kind is described in the module docs' table"
)]
pub enum WarningKind {
    NoStatus,
    StatusBehind,
    NoRing,
    InvalidRing,
    Condition,
    SlotUnavailable,
    PodMissing,
    PodNotReady,
    ProgressMissing,
    ProgressBehind,
    UnreadableAnnotation,
    MovedSessionsMissing,
    ColdTakeovers,
}

/// One thing that needs attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// What kind of problem.
    pub kind: WarningKind,
    /// The pod, slot (`slot/<index>`) or condition type it is about, if any.
    pub subject: Option<String>,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl Warning {
    fn new(kind: WarningKind, subject: Option<String>, message: String) -> Self {
        Self {
            kind,
            subject,
            message,
        }
    }
}

/// Which progress report a pod owes the ring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Report {
    Observed,
    Warmed,
    Drained,
}

impl Report {
    fn value(self, pod: &PodRow) -> Option<u64> {
        match self {
            Self::Observed => pod.progress.observed,
            Self::Warmed => pod.progress.warmed,
            Self::Drained => pod.progress.drained,
        }
    }

    fn annotation(self) -> &'static str {
        match self {
            Self::Observed => annotations::OBSERVED_RING_VERSION,
            Self::Warmed => annotations::WARMED_RING_VERSION,
            Self::Drained => annotations::DRAINED_RING_VERSION,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Observed => "observed",
            Self::Warmed => "warmed",
            Self::Drained => "drained",
        }
    }
}

/// The warnings of `report` (its own `warnings` field is ignored), in a stable order: the
/// service, the ring, the conditions, the slots, then the pods.
pub fn warnings(report: &StatusReport) -> Vec<Warning> {
    let mut out = Vec::new();
    service_warnings(report, &mut out);
    for condition in &report.conditions {
        let bad = match condition.type_.as_str() {
            // Said by the moved-sessions warnings below (Unknown while a transition runs).
            "MovedSessionsReported" => false,
            _ if condition.status == "Unknown" => true,
            "Available" => condition.status != "True",
            "Degraded" => condition.status == "True",
            _ => false,
        };
        if bad {
            out.push(Warning::new(
                WarningKind::Condition,
                Some(condition.type_.clone()),
                format!(
                    "condition {} is {} ({}): {}",
                    condition.type_, condition.status, condition.reason, condition.message
                ),
            ));
        }
    }
    let find = |name: &str| report.pods.iter().find(|p| p.name == name);
    for slot in &report.slots {
        if slot.state == SlotState::Unavailable {
            out.push(Warning::new(
                WarningKind::SlotUnavailable,
                Some(format!("slot/{}", slot.index)),
                format!(
                    "slot {} is unavailable: requests for its {} shards get 503 until a replacement pod is Ready",
                    slot.index, slot.shards
                ),
            ));
        }
        let named = [
            Some((&slot.pod, "serves")),
            slot.successor.as_ref().map(|p| (p, "is the successor of")),
            slot.predecessor
                .as_ref()
                .map(|p| (p, "is the predecessor of")),
        ];
        for (pod, role) in named.into_iter().flatten() {
            if find(pod).is_none() && slot.state != SlotState::Unavailable {
                out.push(Warning::new(
                    WarningKind::PodMissing,
                    Some(pod.clone()),
                    format!(
                        "the ring says pod {pod} {role} slot {}, but no such pod exists",
                        slot.index
                    ),
                ));
            }
        }
    }
    for pod in &report.pods {
        if !pod.ready && !pod.terminating {
            out.push(Warning::new(
                WarningKind::PodNotReady,
                Some(pod.name.clone()),
                format!(
                    "pod {}{} is not Ready (phase {})",
                    pod.name,
                    pod.slot.map(|s| format!(" (slot {s})")).unwrap_or_default(),
                    pod.phase.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        for annotation in &pod.unreadable_annotations {
            out.push(Warning::new(
                WarningKind::UnreadableAnnotation,
                Some(pod.name.clone()),
                format!("pod {} has an unreadable annotation {annotation}", pod.name),
            ));
        }
    }
    progress_warnings(report, &mut out);
    moved_warnings(report, &mut out);
    out
}

/// Reports of the last finished transition that are missing, and cold takeovers in it.
fn moved_warnings(report: &StatusReport, out: &mut Vec<Warning>) {
    let Some(t) = report.last_transition.as_ref().filter(|t| !t.in_progress) else {
        return;
    };
    let version = t.to_version;
    let missing_said = t.reports.as_deref() == Some("ReportsMissing");
    let expected: Vec<&str> = t
        .moved_sessions
        .iter()
        .flat_map(|m| m.missing.iter().chain(&m.pending))
        .map(String::as_str)
        .collect();
    for pod in &report.pods {
        let why = match pod.moved_report {
            MovedReportState::Partial => "partial (the pod restarted during the transition)",
            MovedReportState::Missing if missing_said && expected.contains(&pod.name.as_str()) => {
                "missing"
            }
            MovedReportState::Unreadable if missing_said => "unreadable",
            _ => continue,
        };
        out.push(Warning::new(
            WarningKind::MovedSessionsMissing,
            Some(pod.name.clone()),
            format!(
                "pod {}: its report of the sessions it took over in the transition to ring version {version} is {why}: no warm-hit percentage",
                pod.name
            ),
        ));
    }
    if missing_said {
        // Expected pods that no longer exist are named by the operator only.
        for name in &expected {
            if !report.pods.iter().any(|p| p.name == *name) {
                out.push(Warning::new(
                    WarningKind::MovedSessionsMissing,
                    Some((*name).to_owned()),
                    format!(
                        "pod {name} did not report the sessions it took over in the transition to ring version {version}: no warm-hit percentage"
                    ),
                ));
            }
        }
    }
    // Loads without an answer from a previous owner that drained read what it handed over
    // through the persistence; only a previous owner that was gone can have taken writes with
    // it that it had not persisted.
    if let Some(m) = &t.moved_sessions
        && m.cold_previous_gone > 0
    {
        out.push(Warning::new(
            WarningKind::ColdTakeovers,
            None,
            format!(
                "the transition to ring version {version} loaded {} sessions without an answer while a previous owner was gone (rolled forward {}, fenced load {}): writes it had not persisted are lost",
                m.cold_previous_gone, m.cold.rolled_forward, m.cold.fenced_load
            ),
        ));
    }
}

fn service_warnings(report: &StatusReport, out: &mut Vec<Warning>) {
    let namespace = &report.namespace;
    if report.phase.is_none() {
        out.push(Warning::new(
            WarningKind::NoStatus,
            None,
            format!(
                "the operator has not written a status yet: is it running and watching namespace {namespace}?"
            ),
        ));
    } else if let (Some(observed), Some(generation)) =
        (report.observed_generation, report.generation)
        && observed < generation
    {
        out.push(Warning::new(
            WarningKind::StatusBehind,
            None,
            format!(
                "the status describes generation {observed} of the spec, which is at generation {generation}: the operator has not acted on the latest change yet"
            ),
        ));
    }
    if let Some(problem) = &report.ring_problem {
        let kind = match problem.reason {
            RingProblemReason::NotFound => WarningKind::NoRing,
            RingProblemReason::MissingKey | RingProblemReason::Invalid => WarningKind::InvalidRing,
        };
        out.push(Warning::new(kind, None, problem.message.clone()));
    }
}

/// Records that `pod` owes `report`, once.
fn owe_report<'a>(owed: &mut Vec<(&'a str, Vec<Report>)>, pod: &'a str, report: Report) {
    match owed.iter_mut().find(|(p, _)| *p == pod) {
        Some((_, reports)) if !reports.contains(&report) => reports.push(report),
        Some(_) => {}
        None => owed.push((pod, vec![report])),
    }
}

/// During a transition: the reports the ring waits for.
fn progress_warnings(report: &StatusReport, out: &mut Vec<Warning>) {
    let Some(ring) = &report.ring else { return };
    if ring.phase == RingPhase::Stable {
        return;
    }
    let version = ring.version;
    let phase = ring.phase;
    // (pod, the reports it owes), in slot order; each pod and report once.
    let mut owed: Vec<(&str, Vec<Report>)> = Vec::new();
    let mut owe = |pod, report| owe_report(&mut owed, pod, report);
    for slot in &report.slots {
        owe(&slot.pod, Report::Observed);
        match phase {
            RingPhase::Warm if slot.gaining > 0 => owe(&slot.pod, Report::Warmed),
            RingPhase::Switch if slot.losing > 0 => owe(&slot.pod, Report::Drained),
            _ => {}
        }
        if let Some(successor) = &slot.successor {
            owe(successor, Report::Observed);
            owe(successor, Report::Warmed);
        }
        if let Some(predecessor) = &slot.predecessor {
            owe(predecessor, Report::Observed);
            owe(predecessor, Report::Drained);
        }
    }
    for (name, reports) in owed {
        let Some(pod) = report.pods.iter().find(|p| p.name == name) else {
            continue;
        };
        if pod.terminating {
            continue;
        }
        for wanted in reports {
            let verb = wanted.verb();
            match wanted.value(pod) {
                Some(reported) if reported >= version => {}
                Some(reported) => out.push(Warning::new(
                    WarningKind::ProgressBehind,
                    Some(name.to_owned()),
                    format!(
                        "pod {name} reports {verb} ring version {reported}; ring version {version} ({phase}) waits for {version}"
                    ),
                )),
                None => out.push(Warning::new(
                    WarningKind::ProgressMissing,
                    Some(name.to_owned()),
                    format!(
                        "pod {name} has not reported {verb} (annotation {}); ring version {version} ({phase}) waits for it",
                        wanted.annotation()
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::build;
    use crate::report::tests::{config_map, now, pod, ring_json, stable, warm_to_three};

    fn kinds(report: &StatusReport) -> Vec<(WarningKind, Option<&str>)> {
        report
            .warnings
            .iter()
            .map(|w| (w.kind, w.subject.as_deref()))
            .collect()
    }

    #[test]
    fn a_healthy_stable_service_has_none() {
        assert!(build(&stable(), now()).warnings.is_empty());
    }

    #[test]
    fn unready_pods_and_bad_conditions_are_named() {
        let mut objects = stable();
        objects.pods[0] = pod("ledger-1-bbbbb", 1, false, &[]);
        let status = objects.service.status.as_mut().unwrap();
        status.conditions[0].status = "False".into();
        status.conditions[0].reason = "SlotsNotReady".into();
        status.conditions[0].message = "slots [1] own shards but have no Ready pod".into();
        status.conditions[2].status = "True".into();
        status.conditions[2].reason = "SlotsUnavailable".into();
        let report = build(&objects, now());
        assert_eq!(
            kinds(&report),
            [
                (WarningKind::Condition, Some("Available")),
                (WarningKind::Condition, Some("Degraded")),
                (WarningKind::PodNotReady, Some("ledger-1-bbbbb")),
            ]
        );
        assert_eq!(
            report.warnings[0].message,
            "condition Available is False (SlotsNotReady): slots [1] own shards but have no Ready pod"
        );
        assert_eq!(
            report.warnings[2].message,
            "pod ledger-1-bbbbb (slot 1) is not Ready (phase Running)"
        );
        // Progress is not asked for while the ring is stable.
        assert!(report.pods[1].progress.observed.is_none());
    }

    #[test]
    fn a_terminating_pod_is_not_a_warning() {
        let mut objects = stable();
        let mut leaving = pod("ledger-2-zzzzz", 2, false, &[]);
        leaving.metadata.deletion_timestamp = objects.pods[0].metadata.creation_timestamp.clone();
        objects.pods.push(leaving);
        assert!(build(&objects, now()).warnings.is_empty());
    }

    #[test]
    fn no_status_and_no_ring_are_said() {
        let mut objects = stable();
        objects.service.status = None;
        objects.ring = None;
        let report = build(&objects, now());
        assert_eq!(
            kinds(&report),
            [(WarningKind::NoStatus, None), (WarningKind::NoRing, None)]
        );
    }

    #[test]
    fn a_status_behind_the_spec_is_said() {
        let mut objects = stable();
        objects.service.metadata.generation = Some(3);
        let report = build(&objects, now());
        assert_eq!(kinds(&report), [(WarningKind::StatusBehind, None)]);
        assert!(report.warnings[0].message.contains("generation 2"));
    }

    #[test]
    fn during_warm_gaining_pods_owe_warmed_and_every_pod_observed() {
        let mut objects = stable();
        objects.ring = Some(config_map(&warm_to_three()));
        // Slot 0 is up to date, slot 1 still on version 3, slot 2 observed but not warmed.
        objects.pods[1] = pod(
            "ledger-0-aaaaa",
            0,
            true,
            &[("locus.dev/observed-ring-version", "4")],
        );
        objects.pods.push(pod(
            "ledger-2-ccccc",
            2,
            true,
            &[
                ("locus.dev/observed-ring-version", "4"),
                ("locus.dev/warmed-ring-version", "x"),
            ],
        ));
        let report = build(&objects, now());
        assert_eq!(
            kinds(&report),
            [
                (WarningKind::UnreadableAnnotation, Some("ledger-2-ccccc")),
                (WarningKind::ProgressBehind, Some("ledger-1-bbbbb")),
                (WarningKind::ProgressMissing, Some("ledger-2-ccccc")),
            ]
        );
        assert_eq!(
            report.warnings[1].message,
            "pod ledger-1-bbbbb reports observed ring version 3; ring version 4 (warm) waits for 4"
        );
        assert!(
            report.warnings[2]
                .message
                .contains("has not reported warmed (annotation locus.dev/warmed-ring-version)")
        );
    }

    #[test]
    fn during_switch_losing_pods_owe_drained() {
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
        let all = |drained: &'static str| {
            [
                ("locus.dev/observed-ring-version", "5"),
                ("locus.dev/drained-ring-version", drained),
            ]
        };
        objects.pods = vec![
            pod("ledger-0-aaaaa", 0, true, &all("5")),
            pod("ledger-1-bbbbb", 1, true, &all("2")),
            pod("ledger-2-ccccc", 2, true, &all("0")),
        ];
        let report = build(&objects, now());
        assert_eq!(
            kinds(&report),
            [(WarningKind::ProgressBehind, Some("ledger-1-bbbbb"))],
            "slot 2 only gains: it owes no drain"
        );
        assert!(
            report.warnings[0]
                .message
                .contains("reports drained ring version 2")
        );
    }

    #[test]
    fn a_pod_the_ring_names_but_that_is_gone_is_said() {
        let mut objects = stable();
        objects.pods.remove(0);
        let report = build(&objects, now());
        assert_eq!(
            kinds(&report),
            [(WarningKind::PodMissing, Some("ledger-1-bbbbb"))]
        );
    }
}
