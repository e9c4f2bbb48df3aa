//! The counts behind a pod's [`MovedReport`]: every key this pod takes over
//! is counted once, under the transition (the `Switch` epoch) that moved it,
//! by its [`TakeoverPath`]; see [`crate::progress`]'s `moved` docs for the
//! meaning.
//!
//! A transition is *open* from its `Switch` ring until a `Stable` ring
//! settles it; its counts are then reported under that ring's version, and
//! stay [`Counting`](ReportState::Counting) until the handoff deadline has
//! passed since the pod first saw the `Switch` (after that nothing is taken
//! over under it), when they become [`Final`](ReportState::Final). A process
//! whose first ring is a `Switch` or a `Stable` ring reports that transition
//! as [`Partial`](ReportState::Partial): an earlier process of the pod may
//! have taken keys over in it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::progress::{MovedReport, MovedSessions, ReportState, TakeoverPath};

/// How many transitions are remembered (reported: [`MovedReport::CAPACITY`]).
const KEPT: usize = 8;

/// The counts of this pod's recent transitions; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct MovedTally {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first.
    transitions: VecDeque<Transition>,
    /// True once this process saw its first ring.
    started: bool,
}

#[derive(Debug)]
struct Transition {
    /// The `Switch` epochs whose takeovers count here (more than one when
    /// this pod saw several Switches before the `Stable` ring settling them).
    epochs: Vec<u64>,
    /// The `Stable` ring that settled it.
    settled_by: Option<u64>,
    /// When takeovers under it stop.
    deadline: Instant,
    counts: MovedSessions,
}

impl Transition {
    fn covers(&self, epoch: u64) -> bool {
        self.epochs.contains(&epoch) || self.settled_by == Some(epoch)
    }
}

impl Inner {
    fn find(&mut self, epoch: u64) -> Option<&mut Transition> {
        self.transitions.iter_mut().rev().find(|t| t.covers(epoch))
    }

    fn push(&mut self, transition: Transition) {
        self.transitions.push_back(transition);
        while self.transitions.len() > KEPT {
            self.transitions.pop_front();
        }
    }

    /// The first ring of this process: if it is not a `Warm` ring and names
    /// this pod (`named`), the transition it belongs to may have started in
    /// an earlier process of the pod. A pod the ring does not name (a new
    /// pod, not a member yet) took nothing over in it.
    fn first_ring(&mut self, named: bool) -> ReportState {
        if std::mem::replace(&mut self.started, true) || !named {
            ReportState::Counting
        } else {
            ReportState::Partial
        }
    }

    fn report(&self) -> MovedReport {
        MovedReport::new(self.transitions.iter().filter_map(|t| {
            t.settled_by.map(|version| MovedSessions {
                version,
                ..t.counts
            })
        }))
    }
}

impl MovedTally {
    /// A `Warm` ring arrived: the next takeovers belong to a transition this
    /// process sees from its start.
    pub(crate) fn warm(&self) {
        self.lock().started = true;
    }

    /// The `Switch` ring of step `epoch` arrived (`named`: it names this
    /// pod); its takeovers run until `deadline` after the `Stable` ring
    /// settling it.
    pub(crate) fn switch(&self, epoch: u64, named: bool, deadline: Instant) {
        let mut inner = self.lock();
        let state = inner.first_ring(named);
        if let Some(open) = inner.find(epoch) {
            open.deadline = open.deadline.max(deadline);
            return;
        }
        inner.push(Transition {
            epochs: vec![epoch],
            settled_by: None,
            deadline,
            counts: MovedSessions {
                state,
                ..MovedSessions::default()
            },
        });
    }

    /// The `Stable` ring `version` arrived: it settles every open transition
    /// (merged into one), or, with none open, opens an empty one of its own
    /// (nothing moved here: a ring that only tidied slots, or a transition in
    /// which this pod gained nothing). `skipped` says this pod gained keys
    /// under a `Switch` it never saw: its counts are partial. `deadline`: when
    /// an empty transition of its own ends; `not_before`: no transition it
    /// settles is final before then (requests admitted under the `Switch` may
    /// still be taking keys over). `named`: the ring names this pod. Returns
    /// the report.
    pub(crate) fn settled(
        &self,
        version: u64,
        named: bool,
        skipped: bool,
        deadline: Instant,
        not_before: Instant,
    ) -> MovedReport {
        let mut inner = self.lock();
        let mut state = inner.first_ring(named);
        if skipped {
            state = ReportState::Partial;
        }
        let open: Vec<usize> = (0..inner.transitions.len())
            .filter(|&i| inner.transitions[i].settled_by.is_none())
            .collect();
        if let Some((&first, rest)) = open.split_first() {
            for &i in rest.iter().rev() {
                if let Some(other) = inner.transitions.remove(i) {
                    let merged = &mut inner.transitions[first];
                    merged.epochs.extend(other.epochs);
                    merged.deadline = merged.deadline.max(other.deadline);
                    merged.counts = merged.counts.plus(other.counts);
                }
            }
            let merged = &mut inner.transitions[first];
            merged.settled_by = Some(version);
            merged.deadline = merged.deadline.max(not_before);
            if state == ReportState::Partial {
                merged.counts.state = ReportState::Partial;
            }
        } else if inner.find(version).is_none() {
            inner.push(Transition {
                epochs: Vec::new(),
                settled_by: Some(version),
                deadline,
                counts: MovedSessions {
                    state,
                    ..MovedSessions::default()
                },
            });
        }
        inner.report()
    }

    /// One key taken over under the `Switch` epoch (or the ring version, for
    /// a promotion outside a Switch) `epoch`, by `path`. The caller counts
    /// each key once per epoch ([`Settled::mark`](super::keeping::Settled::mark)).
    /// False if the transition's report is final already (not counted).
    pub(crate) fn count(&self, epoch: u64, path: TakeoverPath, now: Instant) -> bool {
        let notify = {
            let mut inner = self.lock();
            if inner.find(epoch).is_none() {
                inner.push(Transition {
                    epochs: vec![epoch],
                    settled_by: None,
                    deadline: now,
                    counts: MovedSessions::default(),
                });
            }
            let Some(transition) = inner.find(epoch) else {
                return false;
            };
            if transition.counts.state == ReportState::Final {
                // Past its deadline nothing is taken over under a Switch;
                // a promotion this late is logged, not counted into a report
                // the operator may already have summed.
                tracing::debug!(epoch, %path, "takeover after the transition's report was final");
                return false;
            }
            transition.counts.count(path);
            transition.settled_by.is_some()
        };
        if notify {
            self.changed.notify_one();
        }
        true
    }

    /// Of the cold takeovers under `epoch`, one of a key nothing was stored
    /// for (a new session).
    pub(crate) fn created(&self, epoch: u64) {
        let notify = {
            let mut inner = self.lock();
            let Some(t) = inner.find(epoch) else {
                return;
            };
            if t.counts.state == ReportState::Final {
                return;
            }
            t.counts.cold.created = t.counts.cold.created.saturating_add(1);
            t.settled_by.is_some()
        };
        if notify {
            self.changed.notify_one();
        }
    }

    /// The first request served for a key taken over under `epoch` by `path`.
    pub(crate) fn served(&self, epoch: u64, path: TakeoverPath) {
        let notify = {
            let mut inner = self.lock();
            let Some(t) = inner.find(epoch) else {
                return;
            };
            if t.counts.state == ReportState::Final {
                return;
            }
            let served = &mut t.counts.served;
            if path.is_warm() {
                served.warm = served.warm.saturating_add(1);
            } else {
                served.cold = served.cold.saturating_add(1);
            }
            t.settled_by.is_some()
        };
        if notify {
            self.changed.notify_one();
        }
    }

    /// Makes the settled transitions whose deadline passed by `now` final;
    /// returns their epochs (none if nothing changed).
    pub(crate) fn finish(&self, now: Instant) -> Vec<u64> {
        let mut inner = self.lock();
        let mut finished = Vec::new();
        for t in &mut inner.transitions {
            if t.settled_by.is_some()
                && t.deadline <= now
                && t.counts.state == ReportState::Counting
            {
                t.counts.state = ReportState::Final;
                finished.extend(&t.epochs);
                finished.extend(t.settled_by);
            }
        }
        finished
    }

    /// The earliest deadline of a settled transition still counting.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.lock()
            .transitions
            .iter()
            .filter(|t| t.settled_by.is_some() && t.counts.state == ReportState::Counting)
            .map(|t| t.deadline)
            .min()
    }

    /// What to report.
    pub(crate) fn report(&self) -> MovedReport {
        self.lock().report()
    }

    /// Resolves when the counts of a settled transition changed.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long a takeover whose transition's report became final before its
/// first request was served is still announced, as late: long enough for a
/// client to see most of them, short enough that requests soon stop taking
/// the [`Unserved`] lock again.
pub(crate) const LATE_ANNOUNCEMENT: std::time::Duration = std::time::Duration::from_secs(300);

/// A takeover waiting for its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Takeover {
    /// The `Switch` epoch the key was taken over under.
    pub epoch: u64,
    /// How it arrived.
    pub path: TakeoverPath,
    /// True if the transition's report was final before the key's first
    /// request: announced, but no longer counted as served.
    pub late: bool,
}

impl Takeover {
    /// The value of [`TAKEOVER_HEADER`](crate::driver::TAKEOVER_HEADER):
    /// `<epoch>:<path>`, with `:late` if late.
    pub(crate) fn header(&self) -> String {
        let late = if self.late { ":late" } else { "" };
        format!("{}:{}{late}", self.epoch, self.path)
    }
}

/// The keys taken over whose first request was not served yet, with their
/// epoch and path: the next request for one is counted as served and its
/// answer says how the key arrived. Once the transition's report is final
/// the key is kept for [`LATE_ANNOUNCEMENT`] more and its first answer says
/// the takeover is late (not counted), so a client can tell a late first
/// request from a move nobody announced. Bounded: past `max` keys, late
/// ones make room first; then further takeovers are not followed (logged).
#[derive(Debug)]
pub(crate) struct Unserved {
    keys: Mutex<HashMap<Bytes, Pending>>,
    /// `keys.len()`, read without the lock on every request.
    len: AtomicUsize,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    epoch: u64,
    path: TakeoverPath,
    /// When the transition's report became final (or the key was taken
    /// over after that).
    late_since: Option<Instant>,
}

impl Unserved {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// `key` was taken over under `epoch` by `path`, while its transition's
    /// report counts it.
    pub(crate) fn insert(&self, key: &[u8], epoch: u64, path: TakeoverPath) {
        self.put(
            key,
            Pending {
                epoch,
                path,
                late_since: None,
            },
        );
    }

    /// `key` was taken over under `epoch` by `path` at `now`, after its
    /// transition's report became final: announced late.
    pub(crate) fn insert_late(&self, key: &[u8], epoch: u64, path: TakeoverPath, now: Instant) {
        self.put(
            key,
            Pending {
                epoch,
                path,
                late_since: Some(now),
            },
        );
    }

    fn put(&self, key: &[u8], pending: Pending) {
        let mut keys = self.lock();
        if keys.len() >= self.max && !keys.contains_key(key) {
            keys.retain(|_, p| p.late_since.is_none());
            if keys.len() >= self.max {
                tracing::debug!(max = self.max, "too many unserved takeovers to follow");
                self.len.store(keys.len(), Ordering::Release);
                return;
            }
        }
        keys.insert(Bytes::copy_from_slice(key), pending);
        self.len.store(keys.len(), Ordering::Release);
    }

    /// `key`'s takeover, the first time it is served.
    pub(crate) fn take(&self, key: &[u8]) -> Option<Takeover> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut keys = self.lock();
        let taken = keys.remove(key);
        self.len.store(keys.len(), Ordering::Release);
        taken.map(|p| Takeover {
            epoch: p.epoch,
            path: p.path,
            late: p.late_since.is_some(),
        })
    }

    /// The reports of `epochs` became final at `now`: their takeovers are
    /// announced late from now on. Late takeovers older than
    /// [`LATE_ANNOUNCEMENT`] are dropped.
    pub(crate) fn finished(&self, epochs: &[u64], now: Instant) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut keys = self.lock();
        keys.retain(|_, p| match p.late_since {
            None => {
                if epochs.contains(&p.epoch) {
                    p.late_since = Some(now);
                }
                true
            }
            Some(since) => now < since + LATE_ANNOUNCEMENT,
        });
        self.len.store(keys.len(), Ordering::Release);
    }

    /// When the oldest late takeover stops being announced.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock()
            .values()
            .filter_map(|p| p.late_since)
            .min()
            .map(|since| since + LATE_ANNOUNCEMENT)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, Pending>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(30);

    fn totals(report: &MovedReport, version: u64) -> (u64, u64, ReportState) {
        let m = report.get(version).copied().unwrap_or_default();
        (m.warm.total(), m.cold.total(), m.state)
    }

    #[test]
    fn counts_belong_to_the_transition_the_stable_ring_settles() {
        let tally = MovedTally::default();
        let t0 = Instant::now();
        tally.warm();
        tally.switch(11, true, t0 + DEADLINE);
        tally.count(11, TakeoverPath::Transferred, t0);
        tally.count(11, TakeoverPath::Pushed, t0);
        tally.count(11, TakeoverPath::Absent, t0);
        assert!(tally.report().is_empty(), "nothing reported while open");
        let report = tally.settled(12, true, false, t0 + DEADLINE, t0);
        assert_eq!(totals(&report, 12), (2, 1, ReportState::Counting));
        // A late takeover of the same transition, after the Stable ring.
        tally.count(11, TakeoverPath::FencedLoad, t0);
        tally.created(11);
        tally.served(11, TakeoverPath::FencedLoad);
        let report = tally.report();
        assert_eq!(totals(&report, 12), (2, 2, ReportState::Counting));
        assert_eq!(report.get(12).map(|m| m.served.cold), Some(1));
        assert_eq!(report.get(12).map(|m| m.cold.created), Some(1));
        assert_eq!(tally.next_deadline(), Some(t0 + DEADLINE));
        assert!(
            tally
                .finish(t0 + DEADLINE - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(tally.finish(t0 + DEADLINE), vec![11, 12]);
        assert_eq!(totals(&tally.report(), 12), (2, 2, ReportState::Final));
        assert_eq!(tally.next_deadline(), None);
        // Final counts no longer change.
        assert!(!tally.count(11, TakeoverPath::Absent, t0));
        assert_eq!(totals(&tally.report(), 12), (2, 2, ReportState::Final));
    }

    #[test]
    fn a_stable_ring_with_no_switch_does_not_report_the_previous_counts_again() {
        let tally = MovedTally::default();
        let t0 = Instant::now();
        tally.warm();
        tally.switch(5, true, t0);
        tally.count(5, TakeoverPath::Pushed, t0);
        tally.settled(6, true, false, t0, t0);
        // A later Stable ring (slots tidied, or a Switch this pod gained
        // nothing in and skipped) reports its own, empty counts.
        let report = tally.settled(9, true, false, t0, t0);
        assert_eq!(totals(&report, 6), (1, 0, ReportState::Counting));
        assert_eq!(totals(&report, 9), (0, 0, ReportState::Counting));
    }

    #[test]
    fn a_late_takeover_of_one_transition_stays_in_it_when_the_next_begins() {
        let tally = MovedTally::default();
        let t0 = Instant::now();
        tally.warm();
        tally.switch(5, true, t0 + DEADLINE);
        tally.settled(6, true, false, t0 + DEADLINE, t0);
        tally.warm();
        tally.switch(8, true, t0 + DEADLINE * 2);
        tally.count(5, TakeoverPath::RolledForward, t0);
        tally.count(8, TakeoverPath::Precopied, t0);
        let report = tally.settled(9, true, false, t0 + DEADLINE * 2, t0);
        assert_eq!(totals(&report, 6), (0, 1, ReportState::Counting));
        assert_eq!(totals(&report, 9), (1, 0, ReportState::Counting));
    }

    #[test]
    fn a_process_that_starts_mid_transition_reports_it_partial() {
        let t0 = Instant::now();
        let after_switch = MovedTally::default();
        after_switch.switch(5, true, t0);
        after_switch.count(5, TakeoverPath::Transferred, t0);
        let report = after_switch.settled(6, true, false, t0, t0);
        assert_eq!(totals(&report, 6), (1, 0, ReportState::Partial));
        assert!(after_switch.finish(t0).is_empty(), "partial stays partial");

        let after_stable = MovedTally::default();
        let report = after_stable.settled(6, true, false, t0, t0);
        assert_eq!(totals(&report, 6), (0, 0, ReportState::Partial));
        // The next transition it sees from its start is complete.
        after_stable.warm();
        after_stable.switch(8, true, t0);
        let report = after_stable.settled(9, true, false, t0, t0);
        assert_eq!(totals(&report, 9), (0, 0, ReportState::Counting));

        // A new pod whose first ring does not name it took nothing over in
        // the transition: its (empty) counts are complete.
        let new_pod = MovedTally::default();
        let report = new_pod.settled(6, false, false, t0, t0);
        assert_eq!(totals(&report, 6), (0, 0, ReportState::Counting));

        let skipped = MovedTally::default();
        skipped.warm();
        let report = skipped.settled(4, true, true, t0, t0);
        assert_eq!(totals(&report, 4), (0, 0, ReportState::Partial));
    }

    #[test]
    fn switches_seen_before_one_stable_ring_are_one_transition() {
        let tally = MovedTally::default();
        let t0 = Instant::now();
        tally.warm();
        tally.switch(5, true, t0);
        tally.count(5, TakeoverPath::Pushed, t0);
        tally.switch(7, true, t0 + DEADLINE);
        tally.count(7, TakeoverPath::Promoted, t0);
        let report = tally.settled(8, true, false, t0, t0);
        assert_eq!(totals(&report, 8), (2, 0, ReportState::Counting));
        assert_eq!(tally.next_deadline(), Some(t0 + DEADLINE));
    }

    fn counted(epoch: u64, path: TakeoverPath) -> Takeover {
        Takeover {
            epoch,
            path,
            late: false,
        }
    }

    fn late(epoch: u64, path: TakeoverPath) -> Takeover {
        Takeover {
            epoch,
            path,
            late: true,
        }
    }

    #[test]
    fn a_takeover_is_served_once_and_late_after_its_report_is_final() {
        let t0 = Instant::now();
        let unserved = Unserved::new(2);
        assert_eq!(unserved.take(b"a"), None);
        unserved.insert(b"a", 5, TakeoverPath::Pushed);
        unserved.insert(b"b", 5, TakeoverPath::Absent);
        unserved.insert(b"c", 6, TakeoverPath::Absent);
        assert_eq!(unserved.take(b"c"), None, "over the bound: not followed");
        let a = unserved.take(b"a");
        assert_eq!(a, Some(counted(5, TakeoverPath::Pushed)));
        assert_eq!(a.map(|t| t.header()).as_deref(), Some("5:pushed"));
        assert_eq!(unserved.take(b"a"), None, "once");
        assert_eq!(unserved.next_expiry(), None);
        unserved.finished(&[5], t0);
        assert_eq!(unserved.next_expiry(), Some(t0 + LATE_ANNOUNCEMENT));
        let b = unserved.take(b"b");
        assert_eq!(b, Some(late(5, TakeoverPath::Absent)));
        assert_eq!(b.map(|t| t.header()).as_deref(), Some("5:absent:late"));
        // A takeover after the report was final is announced late as well.
        unserved.insert_late(b"d", 5, TakeoverPath::FencedLoad, t0);
        unserved.finished(&[], t0 + LATE_ANNOUNCEMENT);
        assert_eq!(unserved.take(b"d"), None, "late announcements expire");
        assert_eq!(unserved.next_expiry(), None);
    }

    #[test]
    fn late_takeovers_make_room_for_counted_ones() {
        let t0 = Instant::now();
        let unserved = Unserved::new(2);
        unserved.insert(b"a", 5, TakeoverPath::Pushed);
        unserved.insert(b"b", 6, TakeoverPath::Pushed);
        unserved.finished(&[5], t0);
        unserved.insert(b"c", 7, TakeoverPath::Absent);
        assert_eq!(unserved.take(b"a"), None, "the late one made room");
        assert_eq!(unserved.take(b"b"), Some(counted(6, TakeoverPath::Pushed)));
        assert_eq!(unserved.take(b"c"), Some(counted(7, TakeoverPath::Absent)));
    }

    #[tokio::test]
    async fn a_late_takeover_wakes_the_reporter() {
        let tally = MovedTally::default();
        let t0 = Instant::now();
        tally.warm();
        tally.switch(3, true, t0);
        tally.settled(4, true, false, t0 + DEADLINE, t0);
        tally.count(3, TakeoverPath::Absent, t0);
        // The permit stored by notify_one completes the wait at once.
        tokio::time::timeout(Duration::from_secs(1), tally.changed())
            .await
            .unwrap();
    }
}
