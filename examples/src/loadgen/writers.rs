//! The double-writer check: which pods acknowledged a session's applied
//! appends, and over which versions.
//!
//! Ownership of a key moves from one pod to the next; it never interleaves.
//! On the session's version axis, then, the versions each pod acknowledged
//! form ranges that do not overlap: pod A's `[1, 40]`, then pod B's
//! `[41, 90]`. Two pods whose `[lowest, highest]` ranges share a version
//! (touching boundaries included: one version cannot have two writers) both
//! wrote the session while the other did: a **double writer**.
//!
//! The check rests on two assumptions, both true of the scenarios the load
//! generator runs in:
//!
//! * pod names are unique per pod incarnation (a pod that comes back with
//!   empty memory comes back under a new name); and
//! * within one load run a key's ownership never returns to a pod it left.
//!   If it did (A, then B, then A again), A's one range would span B's and
//!   the session would be reported although nobody wrote at once.
//!
//! Memory is bounded: at most [`MAX_WRITERS`] pods per session are tracked;
//! acknowledgements from further pods are counted, not checked.

use std::fmt;
use std::sync::Arc;

/// Most pods tracked per session.
pub(crate) const MAX_WRITERS: usize = 16;

/// The versions one pod acknowledged for one session: lowest and highest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriterRange {
    pub(crate) pod: Arc<str>,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl WriterRange {
    /// True when the two ranges share at least one version.
    fn overlaps(&self, other: &Self) -> bool {
        self.min <= other.max && other.min <= self.max
    }
}

impl fmt::Display for WriterRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{},{}]", self.pod, self.min, self.max)
    }
}

/// Two pods whose version ranges overlap on one session (the ranges as they
/// stood when the overlap was first seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overlap {
    pub(crate) first: WriterRange,
    pub(crate) second: WriterRange,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} and {}", self.first, self.second)
    }
}

/// What recording one acknowledgement found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Recorded; no new overlap (or the session was reported already).
    Tracked,
    /// From a pod beyond the first [`MAX_WRITERS`]: not checked.
    Untracked,
    /// The session has just become a double writer (once per session).
    DoubleWriter(Overlap),
}

/// The pods that acknowledged one session's applied appends, each with its
/// version range.
#[derive(Debug, Default)]
pub(crate) struct Writers {
    ranges: Vec<WriterRange>,
    /// Set once an overlap was reported, so a session counts once.
    reported: bool,
}

impl Writers {
    /// Records that `pod` acknowledged an applied append answered with
    /// `version`.
    pub(crate) fn record(&mut self, pod: &str, version: u64) -> Recorded {
        let index = match self.ranges.iter().position(|r| &*r.pod == pod) {
            Some(index) => {
                let range = &mut self.ranges[index];
                range.min = range.min.min(version);
                range.max = range.max.max(version);
                index
            }
            None if self.ranges.len() < MAX_WRITERS => {
                self.ranges.push(WriterRange {
                    pod: pod.into(),
                    min: version,
                    max: version,
                });
                self.ranges.len() - 1
            }
            None => return Recorded::Untracked,
        };
        if self.reported {
            return Recorded::Tracked;
        }
        // Ranges only grow, and only this one changed: an overlap new with
        // this acknowledgement involves it.
        let changed = &self.ranges[index];
        let other = self
            .ranges
            .iter()
            .enumerate()
            .find(|&(i, r)| i != index && r.overlaps(changed));
        match other {
            Some((_, other)) => {
                let overlap = Overlap {
                    first: other.clone(),
                    second: changed.clone(),
                };
                self.reported = true;
                Recorded::DoubleWriter(overlap)
            }
            None => Recorded::Tracked,
        }
    }

    /// The first pair of pods whose ranges overlap, if any.
    #[cfg(test)]
    fn overlap(&self) -> Option<Overlap> {
        self.ranges.iter().enumerate().find_map(|(i, a)| {
            self.ranges[i + 1..]
                .iter()
                .find(|b| a.overlaps(b))
                .map(|b| Overlap {
                    first: a.clone(),
                    second: b.clone(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `(pod, version)` in order; every outcome.
    fn record_all(acks: &[(&str, u64)]) -> (Writers, Vec<Recorded>) {
        let mut writers = Writers::default();
        let outcomes = acks
            .iter()
            .map(|&(pod, version)| writers.record(pod, version))
            .collect();
        (writers, outcomes)
    }

    fn double_writers(outcomes: &[Recorded]) -> Vec<&Overlap> {
        outcomes
            .iter()
            .filter_map(|o| match o {
                Recorded::DoubleWriter(overlap) => Some(overlap),
                _ => None,
            })
            .collect()
    }

    fn range(pod: &str, min: u64, max: u64) -> WriterRange {
        WriterRange {
            pod: pod.into(),
            min,
            max,
        }
    }

    #[test]
    fn overlapping_ranges_are_a_double_writer() {
        // A: [1,5], B: [4,8].
        let (writers, outcomes) = record_all(&[("a", 1), ("a", 2), ("b", 4), ("a", 5), ("b", 8)]);
        let found = double_writers(&outcomes);
        assert_eq!(found.len(), 1, "{outcomes:?}");
        assert_eq!(
            found[0],
            &Overlap {
                first: range("b", 4, 4),
                second: range("a", 1, 5),
            }
        );
        assert_eq!(found[0].to_string(), "b [4,4] and a [1,5]");
        let overlap = writers.overlap();
        assert_eq!(
            overlap,
            Some(Overlap {
                first: range("a", 1, 5),
                second: range("b", 4, 8),
            })
        );
    }

    #[test]
    fn ownership_that_moves_once_is_no_double_writer() {
        // A: [1,5], B: [6,9], answers arriving out of version order.
        let (writers, outcomes) =
            record_all(&[("a", 2), ("a", 1), ("b", 7), ("a", 5), ("b", 6), ("b", 9)]);
        assert!(double_writers(&outcomes).is_empty(), "{outcomes:?}");
        assert!(outcomes.iter().all(|o| *o == Recorded::Tracked));
        assert_eq!(writers.overlap(), None);
        assert_eq!(writers.ranges, [range("a", 1, 5), range("b", 6, 9)]);
    }

    #[test]
    fn a_single_pod_is_no_double_writer() {
        let acks: Vec<(&str, u64)> = (1..=100).map(|v| ("a", v)).collect();
        let (writers, outcomes) = record_all(&acks);
        assert!(double_writers(&outcomes).is_empty());
        assert_eq!(writers.overlap(), None);
        assert_eq!(writers.ranges, [range("a", 1, 100)]);
    }

    #[test]
    fn one_version_from_two_pods_is_a_double_writer() {
        // Touching boundaries: A's last version is B's first.
        let (_, outcomes) = record_all(&[("a", 1), ("a", 5), ("b", 5), ("b", 9)]);
        let found = double_writers(&outcomes);
        assert_eq!(found.len(), 1, "{outcomes:?}");
        assert_eq!(found[0].second, range("b", 5, 5));
    }

    #[test]
    fn a_range_that_grows_over_another_is_a_double_writer() {
        // B acknowledges 4 and 5, then A acknowledges 9: A's range [1,9]
        // spans B's, though no single version was answered twice.
        let (_, outcomes) = record_all(&[("a", 1), ("b", 4), ("b", 5), ("a", 9)]);
        let found = double_writers(&outcomes);
        assert_eq!(found.len(), 1, "{outcomes:?}");
        assert_eq!(found[0].first, range("b", 4, 5));
        assert_eq!(found[0].second, range("a", 1, 9));
    }

    #[test]
    fn a_session_is_reported_once() {
        let (writers, outcomes) = record_all(&[("a", 1), ("a", 5), ("b", 3), ("c", 4), ("b", 6)]);
        assert_eq!(double_writers(&outcomes).len(), 1, "{outcomes:?}");
        assert!(writers.overlap().is_some());
    }

    #[test]
    fn pods_beyond_the_cap_are_counted_not_tracked() {
        let names: Vec<String> = (0..=MAX_WRITERS).map(|i| format!("p-{i}")).collect();
        let mut writers = Writers::default();
        for (version, name) in (1..).zip(&names[..MAX_WRITERS]) {
            assert_eq!(writers.record(name, version), Recorded::Tracked);
        }
        let last = &names[MAX_WRITERS];
        assert_eq!(writers.record(last, 1), Recorded::Untracked);
        assert_eq!(writers.ranges.len(), MAX_WRITERS);
        // A tracked pod still counts.
        assert!(matches!(
            writers.record(&names[0], 3),
            Recorded::DoubleWriter(_)
        ));
    }
}
