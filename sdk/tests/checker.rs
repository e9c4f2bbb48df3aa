//! The list-append checker (`support/checker.rs`) on hand-built histories:
//! it flags a missing acknowledged element, a duplicated element, two
//! writers interleaved along the versions, an epoch that goes back, and the
//! rest of what it promises, and passes a clean history and the losses a
//! crash allows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use support::checker::{self, Crash, Op, Outcome, Verdict};
use tokio::time::Instant;

/// Builds histories of session 0: appends one after the other, 10 ms each.
struct Builder {
    origin: Instant,
    ops: Vec<Op>,
    next: u64,
}

impl Builder {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            ops: Vec::new(),
            next: 0,
        }
    }

    /// The next time slot: (start, end).
    fn slot(&mut self) -> (Instant, Instant) {
        let started = self.origin + Duration::from_millis(10 * self.next);
        self.next += 1;
        (started, started + Duration::from_millis(5))
    }

    /// `pod` crashed as the last operation ended, with session 0 persisted
    /// as `persisted`.
    fn crash(&self, pod: &str, persisted: &[u64]) -> Crash {
        Crash {
            pod: pod.into(),
            at: self
                .ops
                .last()
                .expect("an operation before the crash")
                .ended,
            persisted: HashMap::from([(0, persisted.to_vec())]),
            affected: HashSet::from([0]),
        }
    }

    /// An acknowledged append of `element` at `version` by `pod` under
    /// `epoch` (list length = version).
    fn acked(&mut self, element: u64, version: u64, pod: &str, epoch: u64) -> &mut Self {
        let (started, ended) = self.slot();
        self.ops.push(Op {
            session: 0,
            element,
            started,
            ended,
            outcome: Outcome::Acked {
                element,
                version,
                len: version,
                epoch,
                pod: pod.to_owned(),
                handoff: None,
                takeover: None,
            },
        });
        self
    }

    fn refused(&mut self, element: u64) -> &mut Self {
        let (started, ended) = self.slot();
        self.ops.push(Op {
            session: 0,
            element,
            started,
            ended,
            outcome: Outcome::Refused(503),
        });
        self
    }

    fn unknown(&mut self, element: u64) -> &mut Self {
        let (started, ended) = self.slot();
        self.ops.push(Op {
            session: 0,
            element,
            started,
            ended,
            outcome: Outcome::Unknown("no answer".into()),
        });
        self
    }

    /// Checks the history against session 0's final `list` (its version is
    /// its length).
    fn check(&self, list: &[u64], crashes: &[Crash]) -> Verdict {
        let finals = HashMap::from([(0, (list.len() as u64, list.to_vec()))]);
        let verdict = checker::check(&self.ops, &finals, crashes);
        eprintln!("{}: {:#?}", verdict.summary(), verdict.violations);
        verdict
    }
}

fn clean(verdict: &Verdict) -> bool {
    verdict.violations.is_empty() && verdict.lost == 0 && verdict.bad_sessions.is_empty()
}

fn mentions(verdict: &Verdict, words: &str) -> bool {
    verdict.violations.iter().any(|v| v.contains(words))
}

#[test]
fn a_clean_history_passes() {
    // a (epoch 1) writes 1–2, b takes over under epoch 4, then a again under
    // epoch 7 (a new writer); an unknown append applied, a refused one not.
    let mut h = Builder::new();
    h.acked(10, 1, "a", 1)
        .acked(11, 2, "a", 1)
        .refused(12)
        .unknown(13)
        .acked(14, 4, "b", 4)
        .acked(15, 5, "b", 4)
        .unknown(16)
        .acked(17, 6, "a", 7);
    let verdict = h.check(&[10, 11, 13, 14, 15, 17], &[]);
    assert!(clean(&verdict));
    assert_eq!((verdict.acked, verdict.refused, verdict.unknown), (5, 1, 2));
}

#[test]
fn a_missing_acknowledged_element_is_lost() {
    let mut h = Builder::new();
    h.acked(1, 1, "a", 1)
        .acked(2, 2, "a", 1)
        .acked(3, 3, "a", 1);
    // Element 2 is gone (and 3 moved down: that one is out of place).
    let verdict = h.check(&[1, 3], &[]);
    assert_eq!(verdict.lost, 1);
    assert!(verdict.bad_sessions.contains(&0));
    assert!(mentions(&verdict, "element 3 acknowledged at version 3"));
}

#[test]
fn an_element_twice_in_the_list_is_flagged() {
    let mut h = Builder::new();
    h.acked(1, 1, "a", 1).acked(2, 2, "a", 1).unknown(3);
    // A retry inside the stack applied the unknown append twice.
    let verdict = h.check(&[1, 2, 3, 3], &[]);
    assert!(mentions(&verdict, "element 3 appears 2 times"));
    assert_eq!(verdict.lost, 0);
}

#[test]
fn interleaved_writers_are_flagged() {
    // b took over at version 3, yet a (same epoch) acknowledged version 4
    // afterwards: two writers.
    let mut h = Builder::new();
    h.acked(1, 1, "a", 2)
        .acked(2, 2, "a", 2)
        .acked(3, 3, "b", 5)
        .acked(4, 4, "a", 2)
        .acked(5, 5, "b", 5);
    let verdict = h.check(&[1, 2, 3, 4, 5], &[]);
    assert_eq!(verdict.lost, 0);
    assert!(
        mentions(&verdict, "two writers: a (epoch 2) acknowledged version 4"),
        "{:?}",
        verdict.violations
    );
}

#[test]
fn an_epoch_going_back_is_flagged() {
    // b's epoch is lower than a's, though b wrote after a.
    let mut h = Builder::new();
    h.acked(1, 1, "a", 6).acked(2, 2, "b", 3);
    let verdict = h.check(&[1, 2], &[]);
    assert!(mentions(&verdict, "the epoch went back"));
}

#[test]
fn a_version_acknowledged_twice_is_flagged() {
    // Two pods serving the session from the same state: both acknowledge
    // version 2, only one element can be there.
    let mut h = Builder::new();
    h.acked(1, 1, "a", 1)
        .acked(2, 2, "a", 1)
        .acked(3, 2, "b", 1);
    let verdict = h.check(&[1, 2], &[]);
    assert!(mentions(&verdict, "version 2 acknowledged twice"));
    assert_eq!(verdict.lost, 1);
}

#[test]
fn refused_or_unsent_elements_in_the_list_are_flagged() {
    let mut h = Builder::new();
    h.acked(1, 1, "a", 1).refused(2);
    let verdict = h.check(&[1, 2, 99], &[]);
    assert!(mentions(&verdict, "element 2 of a refused request"));
    assert!(mentions(
        &verdict,
        "element 99 at position 3 was never sent"
    ));
}

#[test]
fn a_wrong_list_length_is_flagged() {
    let mut h = Builder::new();
    h.acked(1, 1, "a", 1);
    if let Outcome::Acked { len, .. } = &mut h.ops[0].outcome {
        *len = 4;
    }
    let verdict = h.check(&[1], &[]);
    assert!(mentions(&verdict, "answered list length 4 at version 1"));
}

#[test]
fn versions_against_real_time_are_flagged() {
    let mut h = Builder::new();
    // Version 2 acknowledged before version 1 started.
    h.acked(2, 2, "a", 1).acked(1, 1, "a", 1);
    let verdict = h.check(&[1, 2], &[]);
    assert!(mentions(
        &verdict,
        "version 1 started after a higher version"
    ));
}

#[test]
fn a_crash_may_lose_unpersisted_writes_but_only_those() {
    // a acknowledged 1–3, 1 was persisted, then a died; b continued from
    // version 1 under a higher epoch.
    let mut h = Builder::new();
    h.acked(1, 1, "a", 1)
        .acked(2, 2, "a", 1)
        .acked(3, 3, "a", 1);
    let crash = h.crash("a", &[1]);
    h.acked(4, 2, "b", 4).acked(5, 3, "b", 4);
    let verdict = h.check(&[1, 4, 5], std::slice::from_ref(&crash));
    assert!(clean(&verdict));
    assert_eq!(verdict.lost_allowed, 2);

    // Persisted writes are not allowed losses.
    let verdict = h.check(&[4, 5], std::slice::from_ref(&crash));
    assert_eq!(verdict.lost, 1);

    // Allowed losses may be missing, never duplicated.
    let verdict = h.check(&[1, 4, 5, 2, 2], std::slice::from_ref(&crash));
    assert!(mentions(&verdict, "element 2 appears 2 times"));
}

#[test]
fn a_crash_over_a_dead_pods_late_write_may_lose_what_the_new_owner_acknowledged() {
    // a (epoch 1) acknowledged 1–3 and died with its write-back of version 3
    // in flight; b (epoch 4) had loaded version 1 and acknowledged its own
    // versions 2–3; a's late write then landed (version 3, a's history), and
    // b died before writing: b's acknowledgements were never persisted,
    // though the persisted version covers them. c continued from a's row.
    let mut h = Builder::new();
    h.acked(1, 1, "a", 1)
        .acked(2, 2, "a", 1)
        .acked(3, 3, "a", 1);
    let a_died = h.crash("a", &[1]);
    h.acked(4, 2, "b", 4).acked(5, 3, "b", 4);
    let b_died = h.crash("b", &[1, 2, 3]);
    h.acked(6, 4, "c", 7);
    let verdict = h.check(&[1, 2, 3, 6], &[a_died.clone(), b_died]);
    assert!(clean(&verdict));
    assert_eq!(verdict.lost_allowed, 2);

    // Without b's crash, b's writes were lost by nobody's leave.
    let verdict = h.check(&[1, 2, 3, 6], &[a_died]);
    assert_eq!(verdict.lost, 2);
}
