//! Handoff accounting: the sums of what the pods of a finished transition reported about the
//! sessions they took over in it (`locus.dev/moved-sessions`), the warm-hit percentage, and
//! the `MovedSessionsReported` condition that says whether those sums are complete.
//!
//! A pod's counts for a transition are *final* once its handoff deadline has passed since it
//! saw the `Switch` (nothing is taken over under the transition after that); a pod restarted
//! during the transition reports *partial* counts. The percentage is set only when every
//! expected pod reported final counts; until then the sums are recomputed on each reconcile,
//! and once final they are kept (a pod restarted later reports its counts afresh).

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use locus_contract::progress::{MovedSessions, ReportState};

use super::{ObservedPod, ReportingPod};
use crate::crd::{
    ColdSessions, MovedSessionsSummary, ServedSessions, TransitionRecord, WarmSessions,
};

/// How long after a transition finished its pods' reports are waited for before missing ones
/// are named (`ReportsMissing`): the SDK's default handoff deadline (30 s, counted from when a
/// pod saw the `Switch`, which is before the transition finished) and a margin of 30 s for the
/// report to reach the API server. The CRD has no handoff-deadline setting; pods configured
/// with a longer one show as `ReportsMissing` until their final report arrives.
pub const REPORT_WAIT: Duration = Duration::from_secs(60);

/// Most pod names listed in the status and in a condition message.
const MAX_NAMES: usize = 10;

/// Condition reasons of `MovedSessionsReported`.
pub mod verdicts {
    /// The transition is in progress: pods report once it finished (`Unknown`).
    pub const IN_PROGRESS: &str = "TransitionInProgress";
    /// Reports are still counting, within [`super::REPORT_WAIT`] of the end (`False`).
    pub const PENDING: &str = "Pending";
    /// Past [`super::REPORT_WAIT`], some expected pod has no final report (`False`).
    pub const REPORTS_MISSING: &str = "ReportsMissing";
    /// Every expected pod reported final counts (`True`).
    pub const COMPLETE: &str = "Complete";
}

/// The accounting of one transition.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Accounting {
    /// The sums, once the transition finished.
    pub summary: Option<MovedSessionsSummary>,
    /// The warm-hit percentage, once final (and some session moved).
    pub percent: Option<f64>,
    /// `MovedSessionsReported`: status (`True`, `False`, `Unknown`), reason, message.
    pub condition: (&'static str, &'static str, String),
    /// When the condition changes by itself (to `ReportsMissing`).
    pub recheck_at: Option<Timestamp>,
}

/// What one expected pod reported for the transition.
enum PodReport {
    Final(MovedSessions),
    Counting(MovedSessions),
    Partial(MovedSessions),
    Missing(&'static str),
    Unreadable(String),
}

fn report_of(pods: &[ObservedPod], expected: &ReportingPod, version: u64) -> PodReport {
    let Some(pod) = pods
        .iter()
        .find(|p| p.uid == expected.uid && p.name == expected.name)
    else {
        return PodReport::Missing("pod gone");
    };
    match &pod.progress.moved {
        None => PodReport::Missing("no report"),
        Some(Err(why)) => PodReport::Unreadable(why.clone()),
        Some(Ok(report)) => match report.get(version) {
            None => PodReport::Missing("no report for this ring version"),
            Some(m) => match m.state {
                ReportState::Final => PodReport::Final(*m),
                ReportState::Counting => PodReport::Counting(*m),
                ReportState::Partial => PodReport::Partial(*m),
            },
        },
    }
}

/// `names` joined, at most [`MAX_NAMES`] of them.
fn bounded(names: &[String]) -> Vec<String> {
    names.iter().take(MAX_NAMES).cloned().collect()
}

/// `items` joined by ", ", with a count of those left out past [`MAX_NAMES`].
pub(super) fn join_bounded(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(MAX_NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_NAMES {
        let _ = write!(text, " and {} more", items.len() - MAX_NAMES);
    }
    text
}

fn summary_of(sum: &MovedSessions, losers_gone: bool) -> MovedSessionsSummary {
    let (w, c) = (&sum.warm, &sum.cold);
    let unanswered = c.unanswered();
    MovedSessionsSummary {
        warm: WarmSessions::from(w),
        cold: ColdSessions::from(c),
        served: ServedSessions::from(&sum.served),
        cold_while_previous_alive: if losers_gone {
            c.absent
        } else {
            c.absent.saturating_add(unanswered)
        },
        cold_previous_gone: if losers_gone { unanswered } else { 0 },
        ..MovedSessionsSummary::default()
    }
}

/// The figure and its breakdown, as the `HandoffReported` event and the `Complete` condition
/// say it.
pub(super) fn breakdown(summary: &MovedSessionsSummary) -> String {
    let (w, c) = (&summary.warm, &summary.cold);
    match summary.warm_percent() {
        None => "no session moved".to_owned(),
        Some(p) => format!("warm {p:.1} % ({w}; cold {}: {c})", c.total),
    }
}

/// The expected pods' reports for one transition, summed and sorted.
struct Tally {
    sum: MovedSessions,
    /// Pods with final counts.
    reported: u32,
    /// Pods still counting.
    pending: Vec<String>,
    /// Pods with a missing, partial or unreadable report.
    missing: Vec<String>,
    /// Why each pod without final counts has none, for the condition.
    notes: Vec<String>,
}

fn tally(pods: &[ObservedPod], expected: &[ReportingPod], version: u64) -> Tally {
    let mut t = Tally {
        sum: MovedSessions {
            version,
            ..MovedSessions::default()
        },
        reported: 0,
        pending: Vec::new(),
        missing: Vec::new(),
        notes: Vec::new(),
    };
    for pod in expected {
        let name = pod.name.clone();
        match report_of(pods, pod, version) {
            PodReport::Final(m) => {
                t.sum = t.sum.plus(m);
                t.reported += 1;
            }
            PodReport::Counting(m) => {
                t.sum = t.sum.plus(m);
                t.notes.push(format!("{name} (still counting)"));
                t.pending.push(name);
            }
            PodReport::Partial(m) => {
                t.sum = t.sum.plus(m);
                t.notes
                    .push(format!("{name} (partial: restarted during the transition)"));
                t.missing.push(name);
            }
            PodReport::Missing(why) => {
                t.notes.push(format!("{name} ({why})"));
                t.missing.push(name);
            }
            PodReport::Unreadable(why) => {
                t.notes.push(format!("{name} (unreadable: {why})"));
                t.missing.push(name);
            }
        }
    }
    t
}

/// The accounting of `record` (the last transition) given the pods' reports, the pods
/// expected to report, and what the status held for the same transition before (`previous`,
/// kept once final).
pub(super) fn account(
    pods: &[ObservedPod],
    record: &TransitionRecord,
    expected: &[ReportingPod],
    previous: Option<&TransitionRecord>,
    now: Timestamp,
) -> Accounting {
    let version = record.to_version;
    let Some(finished) = record.finished_at.as_ref().map(|t| t.0) else {
        return Accounting {
            summary: None,
            percent: None,
            condition: (
                "Unknown",
                verdicts::IN_PROGRESS,
                format!(
                    "the transition from ring version {} is in progress: pods report the sessions they take over once it finished",
                    record.from_version
                ),
            ),
            recheck_at: None,
        };
    };
    let kept = previous
        .filter(|p| p.from_version == record.from_version && p.to_version == version)
        .and_then(|p| p.moved_sessions.as_ref().map(|s| (s, p.warm_hit_percent)))
        .filter(|(s, _)| s.r#final);
    if let Some((summary, percent)) = kept {
        return complete(version, summary.clone(), percent);
    }

    let Tally {
        sum,
        reported,
        pending,
        missing,
        notes,
    } = tally(pods, expected, version);
    let mut summary = summary_of(&sum, !record.losers_gone.is_empty());
    summary.pods_expected = u32::try_from(expected.len()).unwrap_or(u32::MAX);
    summary.pods_reported = reported;
    summary.pending = bounded(&pending);
    summary.missing = bounded(&missing);
    summary.r#final = pending.is_empty() && missing.is_empty();
    if summary.r#final {
        let percent = summary.warm_percent();
        return complete(version, summary, percent);
    }
    let deadline = finished
        .saturating_add(REPORT_WAIT)
        .unwrap_or(Timestamp::MAX);
    let of = format!("{reported} of {} pods", summary.pods_expected);
    if now < deadline {
        return Accounting {
            summary: Some(summary),
            percent: None,
            condition: (
                "False",
                verdicts::PENDING,
                format!(
                    "ring version {version}: {of} reported final counts; waiting until {} for {}",
                    whole(deadline),
                    join_bounded(&notes)
                ),
            ),
            recheck_at: Some(deadline),
        };
    }
    Accounting {
        summary: Some(summary),
        percent: None,
        condition: (
            "False",
            verdicts::REPORTS_MISSING,
            format!(
                "ring version {version}: {of} reported final counts, no warm-hit percentage; without final counts: {}",
                join_bounded(&notes)
            ),
        ),
        recheck_at: None,
    }
}

fn complete(version: u64, summary: MovedSessionsSummary, percent: Option<f64>) -> Accounting {
    let message = format!(
        "ring version {version}: all {} pods reported final counts: {}",
        summary.pods_expected,
        breakdown(&summary)
    );
    Accounting {
        summary: Some(summary),
        percent,
        condition: ("True", verdicts::COMPLETE, message),
        recheck_at: None,
    }
}

/// `at` at whole seconds, for messages.
pub(super) fn whole(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}
