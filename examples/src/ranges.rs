//! [`SeqSet`]: a set of `u64` sequence numbers kept as sorted, disjoint,
//! inclusive ranges.
//!
//! The ledger records which client sequence numbers it has applied (so a
//! replayed append is applied once) and the load generator records which
//! appends were acknowledged; both are mostly one contiguous run, so a range
//! set stays a few words long however many numbers it holds.
//!
//! ```
//! use locus_examples::ranges::SeqSet;
//!
//! let mut seqs = SeqSet::default();
//! assert!(seqs.insert(1));
//! assert!(seqs.insert(3));
//! assert!(seqs.insert(2)); // joins [1,1] and [3,3]
//! assert!(!seqs.insert(2)); // already there
//! assert_eq!(seqs.ranges().collect::<Vec<_>>(), [(1, 3)]);
//! assert_eq!(seqs.len(), 3);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of `u64`s as disjoint inclusive ranges `[start, end]`, sorted.
/// Serialises as a JSON array of `[start, end]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    /// start → end (inclusive); no two ranges overlap or touch.
    ranges: BTreeMap<u64, u64>,
}

impl SeqSet {
    /// True if `n` is in the set.
    pub fn contains(&self, n: u64) -> bool {
        self.ranges
            .range(..=n)
            .next_back()
            .is_some_and(|(_, &end)| n <= end)
    }

    /// How many ranges `insert(n)` would leave: the current count, plus one
    /// if `n` starts a new range, minus one if it joins two. The ledger uses
    /// it to refuse an insert past its bound before changing anything.
    pub fn range_count_after_insert(&self, n: u64) -> usize {
        if self.contains(n) {
            return self.ranges.len();
        }
        let joins_left = n > 0 && self.contains(n - 1);
        let joins_right = n < u64::MAX && self.ranges.contains_key(&(n + 1));
        match (joins_left, joins_right) {
            (true, true) => self.ranges.len() - 1,
            (false, false) => self.ranges.len() + 1,
            _ => self.ranges.len(),
        }
    }

    /// Adds `n`; returns `false` if it was already there.
    pub fn insert(&mut self, n: u64) -> bool {
        if self.contains(n) {
            return false;
        }
        let left = if n > 0 {
            self.ranges
                .range(..n)
                .next_back()
                .filter(|(_, end)| **end == n - 1)
                .map(|(start, _)| *start)
        } else {
            None
        };
        let right = if n < u64::MAX {
            self.ranges.get(&(n + 1)).copied()
        } else {
            None
        };
        match (left, right) {
            (Some(start), Some(end)) => {
                self.ranges.remove(&(n + 1));
                self.ranges.insert(start, end);
            }
            (Some(start), None) => {
                self.ranges.insert(start, n);
            }
            (None, Some(end)) => {
                self.ranges.remove(&(n + 1));
                self.ranges.insert(n, end);
            }
            (None, None) => {
                self.ranges.insert(n, n);
            }
        }
        true
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&start, &end)| (start, end))
    }

    /// Number of ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Number of values held (saturating at `u64::MAX`).
    pub fn len(&self) -> u64 {
        self.ranges.iter().fold(0u64, |sum, (&start, &end)| {
            sum.saturating_add((end - start).saturating_add(1))
        })
    }

    /// True if the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The largest value held.
    pub fn max(&self) -> Option<u64> {
        self.ranges.values().next_back().copied()
    }

    /// The values of `self` that `other` lacks, counted (saturating), and up
    /// to `keep` of them listed in ascending order.
    pub fn missing_from(&self, other: &SeqSet, keep: usize) -> (u64, Vec<u64>) {
        let mut count = 0u64;
        let mut listed = Vec::new();
        for (start, end) in self.ranges() {
            let mut n = start;
            loop {
                // Skip the part of [n, end] that `other` covers, in one step.
                let covered = other
                    .ranges
                    .range(..=n)
                    .next_back()
                    .filter(|(_, e)| n <= **e)
                    .map(|(_, &e)| e);
                if let Some(covered_to) = covered {
                    if covered_to >= end {
                        break;
                    }
                    n = covered_to + 1;
                    continue;
                }
                // Missing up to the next range of `other` (or `end`).
                let next = other
                    .ranges
                    .range(n..)
                    .next()
                    .map_or(end, |(s, _)| (*s - 1).min(end));
                count = count.saturating_add(next - n + 1);
                let mut m = n;
                while listed.len() < keep && m <= next {
                    listed.push(m);
                    m += 1;
                }
                if next >= end {
                    break;
                }
                n = next + 1;
            }
        }
        (count, listed)
    }
}

impl Serialize for SeqSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.ranges().map(|(start, end)| [start, end]))
    }
}

impl<'de> Deserialize<'de> for SeqSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<[u64; 2]>::deserialize(deserializer)?;
        let mut ranges: BTreeMap<u64, u64> = BTreeMap::new();
        let mut last_end: Option<u64> = None;
        for [start, end] in pairs {
            if start > end {
                return Err(serde::de::Error::custom(format!(
                    "range [{start}, {end}] is reversed"
                )));
            }
            if last_end.is_some_and(|last| start <= last.saturating_add(1)) {
                return Err(serde::de::Error::custom(
                    "ranges must be ascending, disjoint and not touching",
                ));
            }
            ranges.insert(start, end);
            last_end = Some(end);
        }
        Ok(Self { ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[u64]) -> SeqSet {
        let mut s = SeqSet::default();
        for &v in values {
            s.insert(v);
        }
        s
    }

    #[test]
    fn inserts_merge_neighbours_in_any_order() {
        let s = set(&[5, 1, 3, 2, 4, 10, 9, 0, u64::MAX]);
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            [(0, 5), (9, 10), (u64::MAX, u64::MAX)]
        );
        assert_eq!(s.len(), 9);
        assert!(s.contains(0) && s.contains(5) && s.contains(9) && !s.contains(6));
        assert_eq!(s.max(), Some(u64::MAX));
    }

    #[test]
    fn predicted_range_count_matches_the_insert() {
        let mut s = set(&[1, 3, 7]);
        for n in [2, 5, 8, 0, 100, 6, 4] {
            let predicted = s.range_count_after_insert(n);
            s.insert(n);
            assert_eq!(s.range_count(), predicted, "after inserting {n}");
        }
    }

    #[test]
    fn missing_values_are_counted_and_listed() {
        let acked = set(&[1, 2, 3, 4, 5, 6, 7, 8, 20, 21]);
        let server = set(&[1, 2, 5, 6, 7, 21, 30]);
        let (count, listed) = acked.missing_from(&server, 3);
        assert_eq!(count, 4); // 3, 4, 8 and 20
        assert_eq!(listed, [3, 4, 8]);
        let (count, listed) = acked.missing_from(&acked, 10);
        assert_eq!((count, listed.len()), (0, 0));
        let (count, _) = acked.missing_from(&SeqSet::default(), 0);
        assert_eq!(count, 10);
    }

    #[test]
    fn json_round_trip_and_refusals() {
        let s = set(&[1, 2, 3, 7]);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, "[[1,3],[7,7]]");
        assert_eq!(serde_json::from_str::<SeqSet>(&text).unwrap(), s);
        assert!(serde_json::from_str::<SeqSet>("[[3,1]]").is_err());
        assert!(serde_json::from_str::<SeqSet>("[[1,3],[4,5]]").is_err());
        assert!(serde_json::from_str::<SeqSet>("[[5,6],[1,2]]").is_err());
    }
}
