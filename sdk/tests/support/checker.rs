//! The history of a counter workload and the checks it must pass.
//!
//! Every session is a counter starting at 0; an increment is a
//! read-modify-write under the session's lock, so each committed increment
//! raises both the counter and the session's version by 1, and every
//! acknowledged response carries the pod that served it, the new version and
//! the new value. The checker verifies:
//!
//! * **single writer / linearizable history**: per session, every
//!   acknowledged value equals its version, no version was acknowledged
//!   twice (two pods serving the same session from the same state would both
//!   produce it), and versions follow real time: an increment acknowledged
//!   before another started has the lower version;
//! * **no lost acknowledged write**: the final counter is at least the number
//!   of acknowledged increments, and at most that plus the increments whose
//!   outcome is unknown (a connection cut mid-request), minus the writes a
//!   crashed pod is allowed to lose (acknowledged by it, never persisted);
//! * **persisted versions never decrease**: per session, no store the
//!   persistence applied replaced a version with a lower one (a stale
//!   write-back overwriting a newer one);
//! * **warm first touches**: after each transition, the first request a new
//!   owner served for each moved session found it warm (pre-copied,
//!   transferred, pushed), not loaded from the persistence.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::db::StoreCall;
use super::operator::TransitionRecord;

/// What one increment request ended with.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 200: applied, with what the pod answered.
    Acked {
        /// New version.
        version: u64,
        /// New value.
        value: u64,
        /// The pod that served it.
        pod: String,
        /// `x-locus-handoff`, if the request was a first touch.
        handoff: Option<String>,
    },
    /// An answer that says the increment was not applied (4xx, 503).
    Refused(u16),
    /// No answer, or a gateway error: applied or not, nobody knows.
    Unknown(String),
}

/// One increment.
#[derive(Debug, Clone)]
pub struct Op {
    pub session: usize,
    pub started: Instant,
    pub ended: Instant,
    pub outcome: Outcome,
}

/// Every operation of a run; clones share it.
#[derive(Debug, Clone, Default)]
pub struct History {
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub requests: usize,
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    /// Acknowledged increments missing from the final counters (beyond the
    /// allowed crash losses).
    pub lost: u64,
    /// Acknowledged increments a crashed pod was allowed to lose, and lost.
    pub lost_allowed: u64,
    /// Versions acknowledged twice (double owner), or out of real-time order.
    pub violations: Vec<String>,
    /// Sessions with a violation or a lost write.
    pub bad_sessions: BTreeSet<usize>,
    /// First touches of moved sessions by their new owner, and how many were
    /// warm.
    pub first_touches: usize,
    pub warm_first_touches: usize,
    /// The first few cold first touches, for the report.
    pub cold_examples: Vec<String>,
    /// Store calls the persistence received, and applied stores that
    /// lowered the persisted version.
    pub stores: usize,
    pub version_decreases: usize,
}

impl Verdict {
    /// Warm share of first touches, in percent (100 when there were none).
    pub fn warm_percent(&self) -> f64 {
        if self.first_touches == 0 {
            return 100.0;
        }
        100.0 * self.warm_first_touches as f64 / self.first_touches as f64
    }

    pub fn summary(&self) -> String {
        format!(
            "requests {} acked {} refused {} unknown {} lost {} (allowed crash losses {}) violations {} first touches {} warm {:.2} % {:?}",
            self.requests,
            self.acked,
            self.refused,
            self.unknown,
            self.lost,
            self.lost_allowed,
            self.violations.len(),
            self.first_touches,
            self.warm_percent(),
            self.cold_examples
        )
    }
}

/// A crashed pod: when it died, what had been persisted per session then,
/// and the sessions it held, owned or was moving (to or from itself).
#[derive(Debug, Clone)]
pub struct Crash {
    pub pod: String,
    pub at: Instant,
    /// Session → highest version persisted when the pod died.
    pub persisted: HashMap<usize, u64>,
    /// Sessions whose state the pod held, owned, or was handing over or
    /// taking over when it died.
    pub affected: std::collections::HashSet<usize>,
}

/// Checks `ops` against the final counters `finals` (session → (version,
/// value)); `crashes` lists pods that died (their unpersisted acknowledged
/// writes may be lost).
pub fn check(ops: &[Op], finals: &HashMap<usize, (u64, u64)>, crashes: &[Crash]) -> Verdict {
    let mut verdict = Verdict {
        requests: ops.len(),
        ..Verdict::default()
    };
    let mut by_session: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    let mut unknown: HashMap<usize, u64> = HashMap::new();
    for op in ops {
        match &op.outcome {
            Outcome::Acked { .. } => {
                verdict.acked += 1;
                by_session.entry(op.session).or_default().push(op);
            }
            Outcome::Refused(_) => verdict.refused += 1,
            Outcome::Unknown(_) => {
                verdict.unknown += 1;
                *unknown.entry(op.session).or_default() += 1;
            }
        }
    }
    for (session, acked) in &by_session {
        let violations_before = verdict.violations.len();
        // After a crash only what had not been persisted may be lost: writes
        // acknowledged before the crash, above the persisted version, of a
        // session the crashed pod held or was moving. They are left out of
        // the order checks (the next owner continued from the persisted
        // version).
        let allowed = |version: u64, ended: Instant| {
            crashes.iter().any(|c| {
                c.affected.contains(session)
                    && ended <= c.at
                    && version > c.persisted.get(session).copied().unwrap_or(0)
            })
        };
        let mut kept: Vec<(u64, Instant, Instant)> = Vec::new();
        let mut allowed_here = 0;
        for op in acked {
            let Outcome::Acked {
                version,
                value,
                pod,
                ..
            } = &op.outcome
            else {
                continue;
            };
            if version != value {
                verdict.violations.push(format!(
                    "session {session}: pod {pod} answered value {value} at version {version}"
                ));
            }
            if allowed(*version, op.ended) {
                allowed_here += 1;
                continue;
            }
            kept.push((*version, op.started, op.ended));
        }
        kept.sort_by_key(|(v, _, _)| *v);
        for pair in kept.windows(2) {
            if pair[0].0 == pair[1].0 {
                verdict.violations.push(format!(
                    "session {session}: version {} acknowledged twice (two writers)",
                    pair[0].0
                ));
            }
        }
        // Real-time order: no op with a higher version ended before an op
        // with a lower version started.
        let mut min_end_after = None::<Instant>;
        for &(version, started, ended) in kept.iter().rev() {
            if let Some(end) = min_end_after
                && end < started
            {
                verdict.violations.push(format!(
                    "session {session}: version {version} started after a higher version was acknowledged"
                ));
            }
            min_end_after = Some(min_end_after.map_or(ended, |m| m.min(ended)));
        }
        let (final_version, final_value) = finals.get(session).copied().unwrap_or((0, 0));
        if final_version != final_value {
            verdict.violations.push(format!(
                "session {session}: final value {final_value} at version {final_version}"
            ));
        }
        let acked_here = kept.len() as u64;
        let unknown_here = unknown.get(session).copied().unwrap_or(0);
        // Every kept acknowledged increment is in the final counter; allowed
        // losses may or may not be.
        if final_value < acked_here {
            verdict.lost += acked_here - final_value;
            verdict.bad_sessions.insert(*session);
        }
        let max = acked_here + allowed_here + unknown_here;
        if final_value > max {
            verdict.violations.push(format!(
                "session {session}: final value {final_value} exceeds the {max} increments that may have been applied"
            ));
        }
        if allowed_here > 0 {
            verdict.lost_allowed += (acked_here + allowed_here).saturating_sub(final_value);
        }
        if verdict.violations.len() > violations_before {
            verdict.bad_sessions.insert(*session);
        }
    }
    verdict
}

/// Counts first touches of moved sessions: for each transition, each
/// session whose owner changed, the first acknowledged increment served by
/// the new owner after the switch; warm unless it says `cold` or `loaded`.
pub fn first_touches(
    ops: &[Op],
    transitions: &[TransitionRecord],
    keys: &[Vec<u8>],
    verdict: &mut Verdict,
) {
    for t in transitions {
        let Some(previous) = t.switch.previous() else {
            continue;
        };
        let mut moved: HashMap<usize, String> = HashMap::new();
        for (session, key) in keys.iter().enumerate() {
            let shard = t.switch.shard_of(key) as usize;
            let before_slot = t.switch.slot(previous.as_slice()[shard]).unwrap();
            let before = before_slot
                .predecessor
                .as_ref()
                .unwrap_or(&before_slot.pod)
                .name
                .clone();
            let after = t.switch.owner(key).pod.name.clone();
            // A session nobody had written before the switch did not move:
            // there was nothing to warm.
            let existed = ops.iter().any(|o| {
                o.session == session
                    && o.ended < t.switched_at
                    && matches!(o.outcome, Outcome::Acked { .. })
            });
            if before != after && existed {
                moved.insert(session, after);
            }
        }
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut sorted: Vec<&Op> = ops.iter().filter(|o| o.ended >= t.switched_at).collect();
        sorted.sort_by_key(|o| o.ended);
        for op in sorted {
            let Outcome::Acked { pod, handoff, .. } = &op.outcome else {
                continue;
            };
            let Some(owner) = moved.get(&op.session) else {
                continue;
            };
            if pod != owner || !seen.insert(op.session) {
                continue;
            }
            verdict.first_touches += 1;
            if matches!(handoff.as_deref(), Some("cold" | "loaded")) {
                if verdict.cold_examples.len() < 10 {
                    let before = ops
                        .iter()
                        .filter(|o| {
                            o.session == op.session
                                && o.ended < t.switched_at
                                && matches!(o.outcome, Outcome::Acked { .. })
                        })
                        .count();
                    verdict.cold_examples.push(format!(
                        "{} at version {}: session {} on {pod}: {handoff:?} ({before} increments before the switch)",
                        t.kind,
                        t.switch.version(),
                        op.session
                    ));
                }
            } else {
                verdict.warm_first_touches += 1;
            }
        }
    }
}

/// Checks that the persisted version of each session never decreased:
/// `calls[session]` lists the store calls the persistence received for it,
/// in order. Adds a violation per session where an applied store lowered
/// the version held.
pub fn persisted_versions(calls: &[Vec<StoreCall>], verdict: &mut Verdict) {
    for (session, calls) in calls.iter().enumerate() {
        let lowered: Vec<&StoreCall> = calls
            .iter()
            .filter(|c| c.applied && c.stamp < c.held)
            .collect();
        verdict.stores += calls.len();
        if let Some(first) = lowered.first() {
            verdict.violations.push(format!(
                "session {session}: persisted (epoch, version) decreased {} times (first: {} stored over {})",
                lowered.len(),
                first.stamp,
                first.held
            ));
            verdict.version_decreases += lowered.len();
            verdict.bad_sessions.insert(session);
        }
    }
}
