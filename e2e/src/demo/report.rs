//! What the demo measured: per phase and in all, as a table and as JSON lines.

use std::fmt::Write as _;

use locus_examples::loadgen::{Summary, Verification};
use serde_json::{Value, json};

use crate::accounting::HandoffCheck;

/// The ring and transition side of one phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RingChange {
    /// Ring version when the phase started.
    pub from_version: u64,
    /// Ring version when it ended.
    pub to_version: u64,
    /// Shards whose owner pod differs between those two rings.
    pub shards_moved: u32,
    /// Seconds from the change to a converged service.
    pub converge_s: f64,
    /// The service's `status.lastTransition` at the end of the phase.
    pub last_transition: Option<Value>,
}

/// What one phase measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    /// The phase.
    pub name: String,
    /// The load generator's summary of the phase.
    pub summary: Summary,
    /// Acknowledged appends of any phase so far missing when read back after this one,
    /// minus those already missing after the previous phase.
    pub lost_writes: u64,
    /// The read-back after this phase (cumulative).
    pub verification: Verification,
    /// Ring versions, shards moved, convergence time.
    pub ring: RingChange,
    /// The handoff accounting of the phase's last transition, operator and client side by
    /// side (`None`: no transition).
    pub handoff: Option<HandoffCheck>,
    /// True if the service did not converge within the timeout (the phase ended there).
    pub timed_out: bool,
}

impl PhaseReport {
    /// Percentage of sessions that moved pods and were warm on their new pod (`None`: none
    /// moved).
    pub fn moved_warm_percent(&self) -> Option<f64> {
        self.summary.moved.warm_percent()
    }

    /// The operator's `status.lastTransition.warmHitPercent` for the phase's last transition
    /// (from what the pods reported), if that transition ended at the phase's final ring.
    pub fn operator_warm_percent(&self) -> Option<f64> {
        let last = self.ring.last_transition.as_ref()?;
        (last.get("toVersion")?.as_u64()? == self.ring.to_version)
            .then(|| last.get("warmHitPercent")?.as_f64())
            .flatten()
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "phase {} done: {} requests, {} errors, {} lost writes, p99 {:.1} ms, moved sessions warm {}/{}, {} shards moved, ring v{}→v{}, converged in {:.1} s{}",
            self.name,
            self.summary.requests,
            self.summary.errors,
            self.lost_writes,
            self.summary.latency_ms.p99,
            self.summary.moved.warm,
            self.summary.moved.warm + self.summary.moved.cold,
            self.ring.shards_moved,
            self.ring.from_version,
            self.ring.to_version,
            self.ring.converge_s,
            if self.timed_out {
                " — did not converge in time"
            } else {
                ""
            }
        )
    }

    /// One JSON line: the figures of the table, then the load generator's full summary.
    pub fn json_line(&self) -> String {
        let line = json!({
            "phase": self.name,
            "requests": self.summary.requests,
            "errors": self.summary.errors,
            "errors_by_kind": self.summary.errors_by_kind,
            "lost_writes": self.lost_writes,
            "p50_ms": self.summary.latency_ms.p50,
            "p99_ms": self.summary.latency_ms.p99,
            "cache": self.summary.cache,
            "moved": self.summary.moved,
            "moved_warm_percent": self.moved_warm_percent(),
            "operator_warm_hit_percent": self.operator_warm_percent(),
            "first_touches": self.summary.handoff,
            "handoff": self.handoff,
            "ring": self.ring,
            "timed_out": self.timed_out,
            "summary": self.summary,
        });
        line.to_string()
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Per phase.
    pub phases: Vec<PhaseReport>,
    /// Every phase together, with the final read-back.
    pub total: Summary,
}

impl DemoReport {
    /// The handoff accounting of each phase's last transition: the operator's sums of the
    /// pods' reports beside what the load generator saw.
    fn handoff_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "handoff accounting per phase (the phase's last transition): the operator's sums of \
             the pods' reports beside what the load generator saw"
        );
        let _ = writeln!(
            out,
            "  {:<12} {:>9} {:>14} {:>9} {:>11} {:>11} {:>11} {:>11} {:>6}",
            "phase",
            "ring v",
            "reports",
            "op warm %",
            "taken w/c",
            "served w/c",
            "seen w/c",
            "moved w/c",
            "unann."
        );
        for phase in &self.phases {
            let Some(h) = &phase.handoff else {
                continue;
            };
            let pair = |(w, c): (u64, u64)| format!("{w}/{c}");
            let moved = &phase.summary.moved;
            let _ = writeln!(
                out,
                "  {:<12} {:>9} {:>14} {:>9} {:>11} {:>11} {:>11} {:>11} {:>6}",
                phase.name,
                format!("{}→{}", h.from_version, h.to_version),
                h.reports,
                h.operator_warm_percent
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}")),
                pair(h.taken_over),
                pair(h.served),
                pair(h.seen),
                pair((moved.warm, moved.cold)),
                moved.unannounced,
            );
            if !h.missing.is_empty() {
                let _ = writeln!(out, "    reports missing: {:?}", h.missing);
            }
        }
    }

    /// The summary table, one row per phase and a total.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>7} {:>6} {:>8} {:>8} {:>7} {:>12} {:>7} {:>9} {:>8} {:>9}",
            "phase",
            "requests",
            "errors",
            "lost",
            "p50 ms",
            "p99 ms",
            "warm %",
            "moved w/c",
            "shards",
            "ring v",
            "conv s",
            "op warm %"
        );
        for phase in &self.phases {
            let s = &phase.summary;
            let warm = phase
                .moved_warm_percent()
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"));
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>7} {:>6} {:>8.2} {:>8.2} {:>7} {:>12} {:>7} {:>9} {:>8} {:>9}{}",
                phase.name,
                s.requests,
                s.errors,
                phase.lost_writes,
                s.latency_ms.p50,
                s.latency_ms.p99,
                warm,
                format!("{}/{}", s.moved.warm, s.moved.cold),
                phase.ring.shards_moved,
                format!("{}→{}", phase.ring.from_version, phase.ring.to_version),
                if phase.ring.converge_s > 0.0 {
                    format!("{:.1}", phase.ring.converge_s)
                } else {
                    "-".to_owned()
                },
                phase
                    .operator_warm_percent()
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}")),
                if phase.timed_out { "  TIMED OUT" } else { "" }
            );
        }
        let t = &self.total;
        let lost = t.verification.as_ref().map_or(0, |v| v.lost_writes);
        let warm = t
            .moved
            .warm_percent()
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"));
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>7} {:>6} {:>8.2} {:>8.2} {:>7} {:>12}",
            "total",
            t.requests,
            t.errors,
            lost,
            t.latency_ms.p50,
            t.latency_ms.p99,
            warm,
            format!("{}/{}", t.moved.warm, t.moved.cold),
        );
        if let Some(v) = &t.verification {
            let _ = writeln!(
                out,
                "read back {} sessions: {} acknowledged appends, {} lost, {} stale sessions, {} unreadable",
                v.sessions_checked,
                v.acked_appends,
                v.lost_writes,
                v.stale_sessions,
                v.sessions_unreadable
            );
        }
        self.handoff_table(&mut out);
        for phase in &self.phases {
            if !phase.summary.errors_by_kind.is_empty() {
                let _ = writeln!(
                    out,
                    "errors in {}: {:?}",
                    phase.name, phase.summary.errors_by_kind
                );
            }
        }
        out
    }
}
