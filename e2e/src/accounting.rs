//! The handoff accounting of one transition, from both sides: what the operator summed from
//! the pods' reports (`status.lastTransition.movedSessions`, the `MovedSessionsReported`
//! condition) and what the load generator saw (`x-locus-takeover` headers on the first answer
//! for each session a pod took over, and sessions answered by a new pod).
//!
//! The pods count a takeover as *served* when they answer its first request, and that answer
//! carries the header: the two counts are the same events seen from both ends. They may differ
//! only by answers the client never got (timeouts, cut connections).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use kube::Api;
use kube::api::DynamicObject;
use locus_contract::crd::{MOVED_SESSIONS_REPORTED, StatefulServiceStatus, TransitionRecord};
use locus_examples::loadgen::TakeoverCounts;
use serde::Serialize;
use tokio::time::Instant;

/// How long the operator may take to call a transition's reports complete: the pods' handoff
/// deadline (30 s) after the Switch, the operator's margin, and slack for the reports to reach
/// it.
pub const REPORTS_WITHIN: Duration = Duration::from_secs(80);

/// The status of service `name`, typed (`None` if it cannot be read).
pub async fn status(services: &Api<DynamicObject>, name: &str) -> Option<StatefulServiceStatus> {
    let service = services.get(name).await.ok()?;
    serde_json::from_value(service.data.get("status")?.clone()).ok()
}

/// Waits until the last transition, one that ended after ring `since`, has its reports
/// settled: the `MovedSessionsReported` condition says `Complete` or `ReportsMissing`. Returns
/// the last status read (whatever it says when `within` runs out).
pub async fn wait_reported(
    services: &Api<DynamicObject>,
    name: &str,
    since: u64,
    within: Duration,
) -> Option<StatefulServiceStatus> {
    let deadline = Instant::now() + within;
    loop {
        let status = status(services, name).await;
        let settled = status.as_ref().is_some_and(|s| {
            s.last_transition
                .as_ref()
                .is_some_and(|t| t.to_version > since && t.finished_at.is_some())
                && reports_reason(s).is_some_and(|r| r == "Complete" || r == "ReportsMissing")
        });
        if settled || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The reason of the `MovedSessionsReported` condition.
pub fn reports_reason(status: &StatefulServiceStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == MOVED_SESSIONS_REPORTED)
        .map(|c| c.reason.as_str())
}

/// The takeovers a client saw whose `Switch` version lies in `(from, to]`: (warm, cold).
pub fn seen_between<'a>(
    seen: impl IntoIterator<Item = &'a BTreeMap<u64, TakeoverCounts>>,
    from: u64,
    to: u64,
) -> (u64, u64) {
    let mut sum = (0, 0);
    for map in seen {
        for (_, counts) in map.range(from.saturating_add(1)..=to) {
            sum.0 += counts.warm;
            sum.1 += counts.cold;
        }
    }
    sum
}

/// One transition's handoff accounting from both sides.
#[derive(Debug, Clone, Serialize)]
pub struct HandoffCheck {
    /// The ring version the transition started from.
    pub from_version: u64,
    /// The ring version that completed it.
    pub to_version: u64,
    /// `MovedSessionsReported`'s reason (`Complete`, `Pending`, `ReportsMissing`, ...).
    pub reports: String,
    /// The operator's `warmHitPercent` (set only from complete reports).
    pub operator_warm_percent: Option<f64>,
    /// The pods' takeovers summed by the operator: (warm, cold).
    pub taken_over: (u64, u64),
    /// Of the cold ones, new sessions (nothing was stored for them anywhere).
    pub created: u64,
    /// Of those, the ones whose first request was served: (warm, cold).
    pub served: (u64, u64),
    /// The `x-locus-takeover` headers the client saw for this transition: (warm, cold).
    pub seen: (u64, u64),
    /// Pods whose report is missing, partial or unreadable.
    pub missing: Vec<String>,
    /// Pods whose report was still counting (not final) when the operator looked.
    pub pending: Vec<String>,
}

impl HandoffCheck {
    /// The check for `record` given the headers the client saw (`seen`, by `Switch` version).
    pub fn of<'a>(
        status: &StatefulServiceStatus,
        record: &TransitionRecord,
        seen: impl IntoIterator<Item = &'a BTreeMap<u64, TakeoverCounts>>,
    ) -> Self {
        let moved = record.moved_sessions.clone().unwrap_or_default();
        Self {
            from_version: record.from_version,
            to_version: record.to_version,
            reports: reports_reason(status).unwrap_or("-").to_owned(),
            operator_warm_percent: record.warm_hit_percent,
            taken_over: (moved.warm.total, moved.cold.total),
            created: moved.cold.created,
            served: (moved.served.warm, moved.served.cold),
            seen: seen_between(seen, record.from_version, record.to_version),
            missing: moved.missing,
            pending: moved.pending,
        }
    }

    /// True when every pod's report is in.
    pub fn complete(&self) -> bool {
        self.reports == "Complete"
    }

    /// Served and seen agree: the client saw no more takeovers than the pods counted, and the
    /// pods counted at most `unanswered` more (answers the client never got).
    pub fn agrees(&self, unanswered: u64) -> bool {
        let (served, seen) = (self.served.0 + self.served.1, self.seen.0 + self.seen.1);
        self.served.0 >= self.seen.0 && self.served.1 >= self.seen.1 && served - seen <= unanswered
    }
}

impl fmt::Display for HandoffCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}→v{}: reports {}, operator warm {}, taken over {}/{} (warm/cold; {} new), served {}/{}, client saw {}/{}",
            self.from_version,
            self.to_version,
            self.reports,
            self.operator_warm_percent
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.1} %")),
            self.taken_over.0,
            self.taken_over.1,
            self.created,
            self.served.0,
            self.served.1,
            self.seen.0,
            self.seen.1,
        )?;
        if !self.missing.is_empty() {
            write!(f, ", missing {:?}", self.missing)?;
        }
        if !self.pending.is_empty() {
            write!(f, ", still counting {:?}", self.pending)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_headers_are_summed_over_the_transitions_switch_versions() {
        let counts = |warm, cold| TakeoverCounts {
            warm,
            cold,
            late: 0,
        };
        let phase: BTreeMap<u64, TakeoverCounts> =
            [(3, counts(5, 1)), (7, counts(2, 0)), (9, counts(1, 1))].into();
        let verify: BTreeMap<u64, TakeoverCounts> = [(7, counts(1, 2))].into();
        assert_eq!(seen_between([&phase, &verify], 6, 8), (3, 2));
        assert_eq!(seen_between([&phase], 3, 9), (3, 1), "from is exclusive");
        assert_eq!(seen_between([&phase], 0, 2), (0, 0));
    }

    #[test]
    fn served_and_seen_agree_within_the_unanswered() {
        let check = HandoffCheck {
            from_version: 4,
            to_version: 7,
            reports: "Complete".into(),
            operator_warm_percent: Some(100.0),
            taken_over: (40, 2),
            created: 1,
            served: (30, 1),
            seen: (29, 1),
            missing: Vec::new(),
            pending: Vec::new(),
        };
        assert!(check.complete());
        assert!(check.agrees(1));
        assert!(!check.agrees(0), "one served answer never seen");
        let more_seen = HandoffCheck {
            seen: (31, 1),
            ..check.clone()
        };
        assert!(
            !more_seen.agrees(10),
            "the client saw a takeover no pod counted"
        );
        assert!(check.to_string().contains("served 30/1, client saw 29/1"));
    }
}
