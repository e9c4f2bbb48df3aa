//! The history of a list-append workload and the checks it must pass.
//!
//! Every session is a list of elements, empty at first. Each request appends
//! one element, unique across the whole run (retries get new ones), under
//! the session's lock: a committed append adds exactly one element and
//! raises the session's version by 1, so the element appended at version `v`
//! sits at position `v` (1-based) of the list for good. An acknowledgement
//! carries the new version, the new list length, the pod that served it and
//! the ownership epoch under which that pod held the session. The final
//! reads give each session's whole list. The checker verifies, per session:
//!
//! * **no lost acknowledged write**: every acknowledged element is in the
//!   final list exactly once — except, after a crash, writes that had not
//!   been persisted (acknowledged before the crash, of a session the pod
//!   held, owned or was moving, and not in the list persisted then: a
//!   version above the persisted one, or any version if the persisted row
//!   is another history, a dead pod's late write): those may be missing,
//!   never duplicated;
//! * **nothing invented or applied twice**: no element appears twice in the
//!   final list, no element of a refused request (4xx, 503) appears, and
//!   every element in it was sent for that session (acknowledged, unknown or
//!   lost with a crash);
//! * **one history**: each acknowledged element is at position `version` of
//!   the final list and its acknowledged list length equals its version
//!   (two pods serving the session from the same state would both
//!   acknowledge the same version; at most one of them can be there), and
//!   versions follow real time: an append acknowledged before another
//!   started has the lower version;
//! * **one writer at a time**: sorted by version, the acknowledgements'
//!   `(pod, epoch)` pairs form contiguous blocks (a writer never comes back
//!   after another one took over) and the epoch never decreases;
//! * **persisted stamps never decrease**: no store the persistence applied
//!   replaced an (epoch, version) with a lower one (a stale write-back
//!   overwriting a newer one);
//! * **warm first touches**: after each transition, the first request a new
//!   owner served for each moved session found it warm (pre-copied,
//!   transferred, pushed), not loaded from the persistence.
//!
//! The crash-allowed acknowledgements take no part in the order and writer
//! checks: the next owner continued from the persisted version, and may have
//! acknowledged the same versions again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::db::StoreCall;
use super::operator::TransitionRecord;

/// What one append request ended with.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 200: applied, with what the pod answered.
    Acked {
        /// The element appended (the request's).
        element: u64,
        /// New version.
        version: u64,
        /// New list length.
        len: u64,
        /// The ownership epoch under which the pod held the session.
        epoch: u64,
        /// The pod that served it.
        pod: String,
        /// `x-locus-handoff`, if the request was a first touch.
        handoff: Option<String>,
        /// `x-locus-takeover` (`<epoch>:<path>`), if this was the first
        /// answer for a key the pod took over.
        takeover: Option<String>,
    },
    /// An answer that says the append was not applied (4xx, 503).
    Refused(u16),
    /// No answer, or a gateway error: applied or not, nobody knows.
    Unknown(String),
}

/// One append.
#[derive(Debug, Clone)]
pub struct Op {
    pub session: usize,
    /// The element the request carried, whatever its outcome.
    pub element: u64,
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
    /// Acknowledged elements missing from the final lists (beyond the
    /// allowed crash losses).
    pub lost: u64,
    /// Acknowledged elements a crashed pod was allowed to lose, and lost.
    pub lost_allowed: u64,
    /// The first few lost elements, for the report.
    pub lost_examples: Vec<String>,
    /// Everything else that went wrong: duplicates, elements out of place or
    /// never sent, two writers, versions out of real-time order, persisted
    /// stamps that decreased.
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
    /// lowered the persisted (epoch, version).
    pub stores: usize,
    pub version_decreases: usize,
    /// First answers of moved sessions checked for `x-locus-takeover`.
    pub announced: usize,
    /// The `x-locus-takeover` headers seen, by epoch: (warm, cold).
    pub takeover_headers: BTreeMap<u64, (u64, u64)>,
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
    /// Session → the list persisted when the pod died.
    pub persisted: HashMap<usize, Vec<u64>>,
    /// Sessions whose state the pod held, owned, or was handing over or
    /// taking over when it died.
    pub affected: HashSet<usize>,
}

/// An acknowledgement, as the per-session checks see it.
#[derive(Debug, Clone, Copy)]
struct Ack<'a> {
    element: u64,
    version: u64,
    epoch: u64,
    pod: &'a str,
    started: Instant,
    ended: Instant,
}

/// Checks `ops` against the final lists `finals` (session → (version,
/// list)); `crashes` lists pods that died (their unpersisted acknowledged
/// writes may be lost).
pub fn check(ops: &[Op], finals: &HashMap<usize, (u64, Vec<u64>)>, crashes: &[Crash]) -> Verdict {
    let mut verdict = Verdict {
        requests: ops.len(),
        ..Verdict::default()
    };
    let mut by_session: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        match &op.outcome {
            Outcome::Acked { .. } => verdict.acked += 1,
            Outcome::Refused(_) => verdict.refused += 1,
            Outcome::Unknown(_) => verdict.unknown += 1,
        }
        by_session.entry(op.session).or_default().push(op);
    }
    let sessions: BTreeSet<usize> = by_session.keys().chain(finals.keys()).copied().collect();
    let empty = (0, Vec::new());
    for session in sessions {
        let ops = by_session.get(&session).map_or(&[][..], Vec::as_slice);
        let (version, list) = finals.get(&session).unwrap_or(&empty);
        let violations_before = verdict.violations.len();
        let lost_before = verdict.lost;
        check_session(session, ops, (*version, list), crashes, &mut verdict);
        if verdict.violations.len() > violations_before || verdict.lost > lost_before {
            verdict.bad_sessions.insert(session);
        }
    }
    verdict
}

/// The checks of one session: its ops, its final (version, list).
fn check_session(
    session: usize,
    ops: &[&Op],
    (final_version, list): (u64, &[u64]),
    crashes: &[Crash],
    verdict: &mut Verdict,
) {
    let positions = final_list(session, ops, (final_version, list), verdict);
    // After a crash only what had not been persisted may be lost: writes
    // acknowledged before the crash, of a session the crashed pod held or
    // was moving, and missing from the list persisted then. Along one
    // history that is a version above the persisted one; the persisted row
    // can also be another history, a dead pod's late write that landed after
    // the next owner loaded (ADR 0001), which holds none of that owner's
    // writes whatever its version.
    let allowed = |element: u64, ended: Instant| {
        crashes.iter().any(|c| {
            c.affected.contains(&session)
                && ended <= c.at
                && c.persisted
                    .get(&session)
                    .is_none_or(|list| !list.contains(&element))
        })
    };
    let mut kept: Vec<Ack<'_>> = Vec::new();
    for op in ops {
        let Outcome::Acked {
            element,
            version,
            len,
            epoch,
            pod,
            ..
        } = &op.outcome
        else {
            continue;
        };
        if len != version {
            verdict.violations.push(format!(
                "session {session}: pod {pod} (epoch {epoch}) answered list length {len} at version {version} (element {element})"
            ));
        }
        if allowed(*element, op.ended) {
            if !positions.contains_key(element) {
                verdict.lost_allowed += 1;
            }
            continue;
        }
        let ack = Ack {
            element: *element,
            version: *version,
            epoch: *epoch,
            pod,
            started: op.started,
            ended: op.ended,
        };
        match positions.get(element) {
            None => {
                verdict.lost += 1;
                if verdict.lost_examples.len() < 5 {
                    verdict.lost_examples.push(format!(
                        "session {session}: element {element} acknowledged at version {version} by {pod} (epoch {epoch}) is missing from the final list"
                    ));
                }
            }
            Some(at) if at[0] as u64 != *version => {
                verdict.violations.push(format!(
                    "session {session}: element {element} acknowledged at version {version} by {pod} (epoch {epoch}) is at position {} of the final list",
                    at[0]
                ));
            }
            Some(_) => {}
        }
        kept.push(ack);
    }
    kept.sort_by_key(|a| (a.version, a.ended));
    for pair in kept.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.version == b.version {
            verdict.violations.push(format!(
                "session {session}: version {} acknowledged twice (two writers): element {} by {} (epoch {}), element {} by {} (epoch {})",
                a.version, a.element, a.pod, a.epoch, b.element, b.pod, b.epoch
            ));
        }
    }
    real_time_order(session, &kept, verdict);
    one_writer(session, &kept, verdict);
}

/// The final list: as long as the version says, each element once, and each
/// sent for this session by a request that was not refused. Returns the
/// positions (1-based) of each element.
fn final_list(
    session: usize,
    ops: &[&Op],
    (final_version, list): (u64, &[u64]),
    verdict: &mut Verdict,
) -> HashMap<u64, Vec<usize>> {
    if list.len() as u64 != final_version {
        verdict.violations.push(format!(
            "session {session}: the final list has {} elements at version {final_version}",
            list.len()
        ));
    }
    let mut positions: HashMap<u64, Vec<usize>> = HashMap::new();
    for (index, element) in list.iter().enumerate() {
        positions.entry(*element).or_default().push(index + 1);
    }
    let sent: HashMap<u64, &Op> = ops.iter().map(|op| (op.element, *op)).collect();
    for (index, element) in list.iter().enumerate() {
        let at = &positions[element];
        if at.len() > 1 && at[0] == index + 1 {
            verdict.violations.push(format!(
                "session {session}: element {element} appears {} times in the final list (positions {at:?})",
                at.len()
            ));
        }
        match sent.get(element).map(|op| &op.outcome) {
            None => verdict.violations.push(format!(
                "session {session}: element {element} at position {} was never sent for this session",
                index + 1
            )),
            Some(Outcome::Refused(status)) => verdict.violations.push(format!(
                "session {session}: element {element} of a refused request ({status}) is at position {}",
                index + 1
            )),
            Some(_) => {}
        }
    }
    positions
}

/// Versions follow real time: no ack with a higher version ended before an
/// ack with a lower version started. `kept` is sorted by version.
fn real_time_order(session: usize, kept: &[Ack<'_>], verdict: &mut Verdict) {
    let mut min_end_after = None::<Instant>;
    for ack in kept.iter().rev() {
        if let Some(end) = min_end_after
            && end < ack.started
        {
            verdict.violations.push(format!(
                "session {session}: version {} started after a higher version was acknowledged",
                ack.version
            ));
        }
        min_end_after = Some(min_end_after.map_or(ack.ended, |m| m.min(ack.ended)));
    }
}

/// One writer at a time: along the versions (`kept` is sorted by them), the
/// `(pod, epoch)` pairs form contiguous blocks and the epoch never
/// decreases.
fn one_writer(session: usize, kept: &[Ack<'_>], verdict: &mut Verdict) {
    // The writers whose block ended, with the last version of their block.
    let mut done: HashMap<(&str, u64), u64> = HashMap::new();
    let Some(first) = kept.first() else {
        return;
    };
    let mut current = *first;
    for ack in &kept[1..] {
        if (ack.pod, ack.epoch) == (current.pod, current.epoch) {
            current = *ack;
            continue;
        }
        if let Some(last) = done.get(&(ack.pod, ack.epoch)) {
            verdict.violations.push(format!(
                "session {session}: two writers: {} (epoch {}) acknowledged version {} after {} (epoch {}) had taken over (version {}), its own earlier block ending at version {last}",
                ack.pod, ack.epoch, ack.version, current.pod, current.epoch, current.version
            ));
        } else if ack.epoch < current.epoch {
            verdict.violations.push(format!(
                "session {session}: the epoch went back: {} (epoch {}) acknowledged version {} after {} (epoch {}) acknowledged version {}",
                ack.pod, ack.epoch, ack.version, current.pod, current.epoch, current.version
            ));
        }
        done.insert((current.pod, current.epoch), current.version);
        current = *ack;
    }
}

/// Counts first touches of moved sessions: for each transition, each
/// session whose owner changed, the first acknowledged append served by
/// the new owner after the switch; warm unless it says `cold` or `loaded`.
pub fn first_touches(
    ops: &[Op],
    transitions: &[TransitionRecord],
    keys: &[Vec<u8>],
    verdict: &mut Verdict,
) {
    for t in transitions {
        let moved: HashMap<usize, String> = moved_sessions(ops, t, keys)
            .into_iter()
            .map(|(session, after, _)| (session, after))
            .collect();
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
                        "{} at version {}: session {} on {pod}: {handoff:?} ({before} appends before the switch)",
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

/// The `x-locus-takeover` headers the client saw, by the epoch (`Switch`
/// version) they name: (warm, cold); late ones (`:late`) are left out, as
/// the pods leave them out of their reports.
pub fn takeover_headers(ops: &[Op]) -> BTreeMap<u64, (u64, u64)> {
    let mut seen: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for op in ops {
        let Outcome::Acked {
            takeover: Some(header),
            ..
        } = &op.outcome
        else {
            continue;
        };
        if header.ends_with(":late") {
            // After the pod's report was final: not counted as served.
            continue;
        }
        let (epoch, path) = header.split_once(':').expect("<epoch>:<path>");
        let epoch: u64 = epoch.parse().expect("a decimal epoch");
        let path = locus::progress::TakeoverPath::from_name(path).expect("a known path");
        let counts = seen.entry(epoch).or_default();
        if path.is_warm() {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    seen
}

/// For each transition, each session whose owner changed in it and that was
/// written before: the first append the new owner acknowledged after the
/// switch (lowest version), or a request that ran alongside it, must say it
/// is the first answer after a takeover (`x-locus-takeover`), unless a
/// request of the session then got no answer (it may have carried the
/// header). Only first answers received
/// within `window` of the switch are checked: a pod counts takeovers until
/// the handoff deadline after it saw the Switch, then its report is final
/// and it announces no more. A pod that makes a moved session resident by a
/// path it does not count fails this. Returns how many such first answers
/// were checked.
pub fn takeovers_announced(
    ops: &[Op],
    transitions: &[TransitionRecord],
    keys: &[Vec<u8>],
    window: Duration,
    verdict: &mut Verdict,
) -> usize {
    let mut checked = 0;
    for t in transitions {
        for (session, owner, previous) in moved_sessions(ops, t, keys) {
            let acks = |by: String| {
                ops.iter().filter_map(move |o| match &o.outcome {
                    Outcome::Acked {
                        pod,
                        version,
                        takeover,
                        ..
                    } if o.session == session && *pod == by => Some((*version, takeover, o)),
                    _ => None,
                })
            };
            // The previous owner's last answer, then the new owner's first
            // one after it (requests that started before the switch
            // included: routing may have moved them).
            let Some((last_version, _, last)) = acks(previous.clone()).max_by_key(|(v, _, _)| *v)
            else {
                continue;
            };
            let Some((version, takeover, first)) = acks(owner.clone())
                .filter(|(v, _, _)| *v > last_version)
                .min_by_key(|(v, _, _)| *v)
            else {
                continue;
            };
            if first.ended >= t.switched_at + window {
                continue;
            }
            // The header goes to the first request that gets past the
            // takeover, which need not be the first to write: requests
            // that ran alongside the first answer count too, and one that
            // got no answer may have carried it.
            let announced = takeover.is_some()
                || acks(owner.clone())
                    .any(|(_, takeover, o)| takeover.is_some() && o.started <= first.ended);
            let unanswered = ops.iter().any(|o| {
                o.session == session
                    && matches!(o.outcome, Outcome::Unknown(_))
                    && o.started <= first.ended
                    && o.ended > last.started
            });
            checked += 1;
            if !announced && !unanswered {
                let history: Vec<String> = ops
                    .iter()
                    .filter(|o| o.session == session && o.ended > last.started)
                    .map(|o| match &o.outcome {
                        Outcome::Acked {
                            pod,
                            version,
                            takeover,
                            handoff,
                            ..
                        } => format!(
                            "{pod} v{version} {takeover:?} {handoff:?} @{:?}",
                            o.started.duration_since(t.switched_at)
                        ),
                        other => format!("{other:?}"),
                    })
                    .take(6)
                    .collect();
                verdict.violations.push(format!(
                    "{} at version {}: session {session} moved to {owner}, whose first answer (version {version}) did not announce a takeover; after {previous}'s last: {history:?}",
                    t.kind,
                    t.switch.version()
                ));
            }
        }
    }
    checked
}

/// The sessions whose owner changed in transition `t` and that were
/// acknowledged before its switch: (session, new owner, previous owner).
fn moved_sessions(
    ops: &[Op],
    t: &TransitionRecord,
    keys: &[Vec<u8>],
) -> Vec<(usize, String, String)> {
    let Some(previous) = t.switch.previous() else {
        return Vec::new();
    };
    let mut moved = Vec::new();
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
        let existed = ops.iter().any(|o| {
            o.session == session
                && o.ended < t.switched_at
                && matches!(o.outcome, Outcome::Acked { .. })
        });
        if before != after && existed {
            moved.push((session, after, before));
        }
    }
    moved
}

/// Checks that the persisted (epoch, version) of each session never
/// decreased: `calls[session]` lists the store calls the persistence
/// received for it, in order. Adds a violation per session where an applied
/// store lowered the stamp held.
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
