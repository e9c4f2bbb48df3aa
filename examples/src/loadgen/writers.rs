//! The double-writer check: which writers acknowledged a session's applied
//! appends, and over which versions.
//!
//! A writer is a pod under one ownership epoch (the version of the ring
//! under which it took the session over, in every append answer). Ownership
//! of a key moves from one writer to the next and never interleaves, and
//! each new owner's epoch is higher than the last. On the session's version
//! axis, then, the versions each writer acknowledged form ranges that do not
//! overlap, in epoch order: A under epoch 4 `[1, 40]`, then B under epoch 6
//! `[41, 90]`. Two writers whose `[lowest, highest]` ranges share a version
//! (touching boundaries included: one version cannot have two writers), or
//! a writer of a lower epoch acknowledging a version at or above the first
//! one of a higher epoch, wrote the session while the other did: a **double
//! writer**.
//!
//! The epoch lets ownership return to a pod it left (A, then B, then A under
//! a newer epoch). Without epochs (a sample without the handoff member
//! answers epoch 0) the check assumes, as before epochs, that within one
//! load run a key's ownership never returns to a pod it left; pod names are
//! unique per pod incarnation either way.
//!
//! Memory is bounded: at most [`MAX_WRITERS`] pods per session are tracked;
//! acknowledgements from further pods are counted, not checked.

use std::fmt;
use std::sync::Arc;

/// Most pods tracked per session.
pub(crate) const MAX_WRITERS: usize = 16;

/// The versions one writer (a pod under one epoch) acknowledged for one
/// session: lowest and highest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriterRange {
    pub(crate) pod: Arc<str>,
    pub(crate) epoch: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl WriterRange {
    /// True when the two writers cannot both have been the only one: their
    /// ranges share a version, or the lower epoch's reaches the higher's.
    fn conflicts(&self, other: &Self) -> bool {
        let shared = self.min <= other.max && other.min <= self.max;
        let reversed = (self.epoch < other.epoch && self.max >= other.min)
            || (other.epoch < self.epoch && other.max >= self.min);
        shared || reversed
    }
}

impl fmt::Display for WriterRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.pod)?;
        if self.epoch > 0 {
            write!(f, "@{}", self.epoch)?;
        }
        write!(f, " [{},{}]", self.min, self.max)
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
    /// Records that `pod`, under ownership epoch `epoch`, acknowledged an
    /// applied append answered with `version`.
    pub(crate) fn record(&mut self, pod: &str, epoch: u64, version: u64) -> Recorded {
        let index = match self
            .ranges
            .iter()
            .position(|r| &*r.pod == pod && r.epoch == epoch)
        {
            Some(index) => {
                let range = &mut self.ranges[index];
                range.min = range.min.min(version);
                range.max = range.max.max(version);
                index
            }
            None if self.ranges.len() < MAX_WRITERS => {
                self.ranges.push(WriterRange {
                    pod: pod.into(),
                    epoch,
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
            .find(|&(i, r)| i != index && r.conflicts(changed));
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
                .find(|b| a.conflicts(b))
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

    /// Records `(pod, version)` in order, all under epoch 0; every outcome.
    fn record_all(acks: &[(&str, u64)]) -> (Writers, Vec<Recorded>) {
        let stamped: Vec<(&str, u64, u64)> = acks.iter().map(|&(p, v)| (p, 0, v)).collect();
        record_stamped(&stamped)
    }

    /// Records `(pod, epoch, version)` in order; every outcome.
    fn record_stamped(acks: &[(&str, u64, u64)]) -> (Writers, Vec<Recorded>) {
        let mut writers = Writers::default();
        let outcomes = acks
            .iter()
            .map(|&(pod, epoch, version)| writers.record(pod, epoch, version))
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
            epoch: 0,
            min,
            max,
        }
    }

    #[test]
    fn ownership_may_return_to_a_pod_under_a_newer_epoch() {
        // A under 4, B under 6, A again under 9.
        let (writers, outcomes) = record_stamped(&[
            ("a", 4, 1),
            ("a", 4, 5),
            ("b", 6, 6),
            ("b", 6, 9),
            ("a", 9, 10),
            ("a", 9, 12),
        ]);
        assert!(double_writers(&outcomes).is_empty(), "{outcomes:?}");
        assert_eq!(writers.overlap(), None);
        // Without epochs the same history looks like A spanning B.
        let (_, outcomes) = record_all(&[("a", 1), ("a", 5), ("b", 6), ("b", 9), ("a", 10)]);
        assert_eq!(double_writers(&outcomes).len(), 1);
    }

    #[test]
    fn an_older_epoch_writing_after_a_newer_one_began_is_a_double_writer() {
        // B took over under 6 at version 6; A, still under 4, then answers
        // version 9: no version shared, but A wrote after B began.
        let (_, outcomes) = record_stamped(&[
            ("a", 4, 1),
            ("a", 4, 5),
            ("b", 6, 6),
            ("b", 6, 8),
            ("a", 4, 9),
        ]);
        let found = double_writers(&outcomes);
        assert_eq!(found.len(), 1, "{outcomes:?}");
        assert_eq!(found[0].to_string(), "b@6 [6,8] and a@4 [1,9]");
        // The same pod under two epochs, out of order, is one too.
        let (_, outcomes) = record_stamped(&[("a", 7, 3), ("a", 5, 4)]);
        assert_eq!(double_writers(&outcomes).len(), 1, "{outcomes:?}");
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
            assert_eq!(writers.record(name, 0, version), Recorded::Tracked);
        }
        let last = &names[MAX_WRITERS];
        assert_eq!(writers.record(last, 0, 1), Recorded::Untracked);
        assert_eq!(writers.ranges.len(), MAX_WRITERS);
        // A tracked pod still counts.
        assert!(matches!(
            writers.record(&names[0], 0, 3),
            Recorded::DoubleWriter(_)
        ));
    }
}
