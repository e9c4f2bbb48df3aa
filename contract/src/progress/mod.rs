//! Progress reports: what a pod tells the operator about a transition, as annotations on its own
//! Pod object ([`crate::ring::annotations`], `docs/ring-format.md` §10).
//!
//! A pod reports three ring versions: the newest ring it *observed* (loaded and routes by), the
//! Warm version it *warmed* (pre-copied every shard it gains) and the Switch version it
//! *drained* (handed over every key it lost); values only ever go up. With them it reports how
//! the sessions it took over in its last transitions arrived ([`MovedReport`]).
//!
//! * [`Progress`]: the four values, and their annotations both ways
//!   ([`Progress::to_annotations`] for the pod that writes them, [`Progress::from_annotations`]
//!   for the operator and the tools that read them).
//! * [`MovedReport`], [`MovedSessions`] and their parts: the moved-sessions counts.
//! * [`ShardLoadReport`], [`ShardLoad`]: how busy the pod is, in total and for its busiest
//!   shards, which the operator reads to place shards by load.
//!
//! The SDK's reporter, which patches the annotations from a running pod, is `locus::progress`;
//! it re-exports these types.

mod load;
mod moved;

use std::collections::BTreeMap;

pub use self::load::{LoadReportError, ShardLoad, ShardLoadReport};
pub(crate) use self::moved::warm_percent;
pub use self::moved::{
    ColdTakeovers, MovedReport, MovedSessions, MovedSessionsError, ReportState, ServedTakeovers,
    TakeoverPath, WarmTakeovers,
};
use crate::ring::annotations;

/// The versions a pod reports; `None` until first set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Newest ring version loaded (routes by it).
    pub observed: Option<u64>,
    /// Warm ring version whose gained shards were pre-copied.
    pub warmed: Option<u64>,
    /// Switch ring version whose lost keys were handed over.
    pub drained: Option<u64>,
    /// How the sessions taken over in the last few transitions arrived.
    pub moved: Option<MovedReport>,
}

impl Progress {
    /// The element-wise maximum of `self` and `other` (for `moved`: the
    /// report whose newest transition is newer, `other` when they are of the
    /// same one: the pod's tally is the source and only moves forward).
    #[must_use]
    pub fn max(self, other: Progress) -> Progress {
        Progress {
            observed: self.observed.max(other.observed),
            warmed: self.warmed.max(other.warmed),
            drained: self.drained.max(other.drained),
            moved: match (self.moved, other.moved) {
                (Some(a), Some(b)) => {
                    let newest = |r: &MovedReport| r.latest().map(|m| m.version);
                    Some(if newest(&b) >= newest(&a) { b } else { a })
                }
                (a, None) => a,
                (None, b) => b,
            },
        }
    }

    /// The annotations that carry `self`, by name: one for each field that is `Some`, versions
    /// in decimal, the moved sessions as their JSON ([`MovedReport::to_json`]).
    #[must_use]
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let versions = [
            (annotations::OBSERVED_RING_VERSION, self.observed),
            (annotations::WARMED_RING_VERSION, self.warmed),
            (annotations::DRAINED_RING_VERSION, self.drained),
        ];
        let moved = self
            .moved
            .map(|m| (annotations::MOVED_SESSIONS.to_owned(), m.to_json()));
        versions
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?.to_string())))
            .chain(moved)
            .collect()
    }

    /// The progress a pod's annotations (`pod_annotations`) report, and those of its annotations that are present
    /// but cannot be read (each left `None` in the progress). Values are read with surrounding
    /// whitespace trimmed; other annotations are ignored.
    #[must_use]
    pub fn from_annotations(
        pod_annotations: &BTreeMap<String, String>,
    ) -> (Progress, Vec<UnreadableAnnotation>) {
        let mut unreadable = Vec::new();
        let mut read = |name: &'static str| -> Option<u64> {
            let text = pod_annotations.get(name)?.trim();
            text.parse()
                .map_err(|e: std::num::ParseIntError| {
                    unreadable.push(UnreadableAnnotation {
                        name,
                        reason: format!(
                            "{:?} is not a ring version: {e}",
                            text.chars().take(64).collect::<String>()
                        ),
                    });
                })
                .ok()
        };
        let observed = read(annotations::OBSERVED_RING_VERSION);
        let warmed = read(annotations::WARMED_RING_VERSION);
        let drained = read(annotations::DRAINED_RING_VERSION);
        let moved = pod_annotations
            .get(annotations::MOVED_SESSIONS)
            .and_then(|text| {
                text.trim()
                    .parse::<MovedReport>()
                    .map_err(|e| {
                        unreadable.push(UnreadableAnnotation {
                            name: annotations::MOVED_SESSIONS,
                            reason: e.to_string(),
                        });
                    })
                    .ok()
            });
        let progress = Progress {
            observed,
            warmed,
            drained,
            moved,
        };
        (progress, unreadable)
    }
}

/// A progress annotation that is present on a pod but cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {name}: {reason}")]
pub struct UnreadableAnnotation {
    /// The annotation's name (one of [`annotations`]).
    pub name: &'static str,
    /// Why it cannot be read (bounded in length).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotations_name_only_the_values_set_and_read_back() {
        let mut moved = MovedSessions {
            version: 7,
            state: ReportState::Final,
            ..MovedSessions::default()
        };
        moved.count(TakeoverPath::Promoted);
        let progress = Progress {
            observed: Some(7),
            drained: Some(6),
            moved: Some(MovedReport::new([moved])),
            ..Progress::default()
        };
        let written = progress.to_annotations();
        let names: Vec<&str> = written.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                annotations::DRAINED_RING_VERSION,
                annotations::MOVED_SESSIONS,
                annotations::OBSERVED_RING_VERSION,
            ]
        );
        assert_eq!(written[annotations::OBSERVED_RING_VERSION], "7");
        assert_eq!(Progress::from_annotations(&written), (progress, Vec::new()));
        assert_eq!(
            Progress::from_annotations(&BTreeMap::new()),
            (Progress::default(), Vec::new())
        );
    }

    #[test]
    fn unreadable_annotations_are_named_and_read_as_missing() {
        let values: BTreeMap<String, String> = [
            (annotations::OBSERVED_RING_VERSION, " 9 "),
            (annotations::WARMED_RING_VERSION, "x"),
            (annotations::DRAINED_RING_VERSION, "-1"),
            (annotations::MOVED_SESSIONS, "{"),
            ("example.com/other", "ignored"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (progress, unreadable) = Progress::from_annotations(&values);
        assert_eq!(
            progress,
            Progress {
                observed: Some(9),
                ..Progress::default()
            }
        );
        let names: Vec<&str> = unreadable.iter().map(|u| u.name).collect();
        assert_eq!(
            names,
            [
                annotations::WARMED_RING_VERSION,
                annotations::DRAINED_RING_VERSION,
                annotations::MOVED_SESSIONS,
            ]
        );
        assert_eq!(
            unreadable[2].reason,
            "{".parse::<MovedReport>().unwrap_err().to_string()
        );
    }
}
