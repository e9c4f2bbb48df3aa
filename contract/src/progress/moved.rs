//! How the sessions a pod took over in a transition arrived: the counts a pod
//! reports in the annotation
//! [`MOVED_SESSIONS`](crate::ring::annotations::MOVED_SESSIONS), and the
//! operator sums into the transition's warm-hit percentage.
//!
//! Every key a pod takes over in a transition is counted exactly once, by the
//! path that made it resident ([`TakeoverPath`]): *warm* when it arrived with
//! the state the previous owner held, *cold* when the pod served it without
//! (the previous owner held nothing for it, or was fenced before it answered).
//! The first request served for such a key is counted once more, in
//! [`ServedTakeovers`], and its answer carries the
//! `x-locus-takeover` header (the SDK's `locus::driver::TAKEOVER_HEADER`), so a
//! client can check the pods' figures against its own.
//!
//! A report is keyed by the `Stable` ring version that completed the
//! transition and holds the last [`MovedReport::CAPACITY`] transitions. Its
//! [`ReportState`] says whether the counts can still change: a transition's
//! takeovers go on until its handoff deadline has passed since the pod first
//! saw its `Switch` (after that nothing is taken over under it), and a
//! process that started in the middle of a transition knows only part of it.
//!
//! ```
//! use locus_contract::progress::{MovedReport, ReportState, TakeoverPath};
//!
//! let json = r#"{"14":{"warm":{"transferred":5,"pushed":12},"cold":{"absent":2},
//!                "served":{"warm":9,"cold":1},"state":"final"}}"#;
//! let report: MovedReport = json.parse().unwrap();
//! let moved = report.get(14).unwrap();
//! assert_eq!((moved.warm.total(), moved.cold.total()), (17, 2));
//! assert_eq!(moved.state, ReportState::Final);
//! assert_eq!(moved.warm_percent(), Some(89.5));
//! assert!(TakeoverPath::Pushed.is_warm());
//! // The older `V:warm:cold` form is read as counts that are not final.
//! let old: MovedReport = "7:120:2".parse().unwrap();
//! assert_eq!(old.get(7).unwrap().state, ReportState::Counting);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a pod made a key it took over resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TakeoverPath {
    /// Warm: the pre-copy made during the `Warm` phase, confirmed unchanged by
    /// the previous owner at the first touch.
    Precopied,
    /// Warm: the previous owner handed the state over at the first touch.
    Transferred,
    /// Warm: the previous owner pushed the state while it drained.
    Pushed,
    /// Warm: a record the previous owner pushed before this pod owned the key
    /// (it was parked here), installed at the switch or at the first touch.
    Promoted,
    /// Cold: the previous owner answered that it did not hold the key (never
    /// created, passivated or evicted), so the persistence holds its state.
    Absent,
    /// Cold: the previous owner did not answer and was fenced (the switch
    /// settled) while this pod waited; loaded from the persistence.
    RolledForward,
    /// Cold: the previous owner was fenced before the first request asked it
    /// (it drained the key through the persistence, or is gone).
    FencedLoad,
}

impl TakeoverPath {
    /// Every path, warm ones first.
    pub const ALL: [TakeoverPath; 7] = [
        Self::Precopied,
        Self::Transferred,
        Self::Pushed,
        Self::Promoted,
        Self::Absent,
        Self::RolledForward,
        Self::FencedLoad,
    ];

    /// True if the key arrived with the previous owner's state.
    #[must_use]
    pub fn is_warm(self) -> bool {
        matches!(
            self,
            Self::Precopied | Self::Transferred | Self::Pushed | Self::Promoted
        )
    }

    /// The path's name in reports, headers and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Precopied => "precopied",
            Self::Transferred => "transferred",
            Self::Pushed => "pushed",
            Self::Promoted => "promoted",
            Self::Absent => "absent",
            Self::RolledForward => "rolledForward",
            Self::FencedLoad => "fencedLoad",
        }
    }

    /// The path named `name` ([`as_str`](Self::as_str)).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for TakeoverPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keys taken over with the previous owner's state, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WarmTakeovers {
    /// [`TakeoverPath::Precopied`].
    pub precopied: u64,
    /// [`TakeoverPath::Transferred`].
    pub transferred: u64,
    /// [`TakeoverPath::Pushed`].
    pub pushed: u64,
    /// [`TakeoverPath::Promoted`].
    pub promoted: u64,
}

impl WarmTakeovers {
    /// All warm takeovers.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.precopied
            .saturating_add(self.transferred)
            .saturating_add(self.pushed)
            .saturating_add(self.promoted)
    }

    /// The sum of two pods' counts.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            precopied: self.precopied.saturating_add(other.precopied),
            transferred: self.transferred.saturating_add(other.transferred),
            pushed: self.pushed.saturating_add(other.pushed),
            promoted: self.promoted.saturating_add(other.promoted),
        }
    }
}

/// Keys taken over without the previous owner's state, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ColdTakeovers {
    /// [`TakeoverPath::Absent`].
    pub absent: u64,
    /// [`TakeoverPath::RolledForward`].
    pub rolled_forward: u64,
    /// [`TakeoverPath::FencedLoad`].
    pub fenced_load: u64,
    /// Of all the cold takeovers above, those of keys nothing was stored for
    /// anywhere: new sessions, which no handoff could have warmed.
    pub created: u64,
}

impl ColdTakeovers {
    /// All cold takeovers.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.absent
            .saturating_add(self.rolled_forward)
            .saturating_add(self.fenced_load)
    }

    /// Cold takeovers made without an answer from the previous owner (it was
    /// fenced: drained through the persistence, or gone).
    #[must_use]
    pub fn unanswered(&self) -> u64 {
        self.rolled_forward.saturating_add(self.fenced_load)
    }

    /// The sum of two pods' counts.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            absent: self.absent.saturating_add(other.absent),
            rolled_forward: self.rolled_forward.saturating_add(other.rolled_forward),
            fenced_load: self.fenced_load.saturating_add(other.fenced_load),
            created: self.created.saturating_add(other.created),
        }
    }
}

/// Keys taken over whose first request was served (once per key), by how
/// they arrived: what clients saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServedTakeovers {
    /// Served with the previous owner's state.
    pub warm: u64,
    /// Served without it.
    pub cold: u64,
}

impl ServedTakeovers {
    /// The sum of two pods' counts.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            warm: self.warm.saturating_add(other.warm),
            cold: self.cold.saturating_add(other.cold),
        }
    }
}

/// Whether a transition's counts can still change; see the `moved`
/// module's docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReportState {
    /// Takeovers of the transition may still come (its handoff deadline runs).
    #[default]
    Counting,
    /// The handoff deadline passed: the counts are complete.
    Final,
    /// The pod's process started during or after the transition: the counts
    /// miss what an earlier process took over.
    Partial,
}

/// One pod's counts for one transition; see the `moved` module's docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MovedSessions {
    /// The `Stable` ring version that completed the transition.
    #[serde(skip)]
    pub version: u64,
    /// Keys that arrived with their state.
    pub warm: WarmTakeovers,
    /// Keys first served without it.
    pub cold: ColdTakeovers,
    /// Of those, the keys a request was served for.
    pub served: ServedTakeovers,
    /// Whether the counts can still change.
    pub state: ReportState,
}

impl MovedSessions {
    /// Counts one takeover by `path`.
    pub fn count(&mut self, path: TakeoverPath) {
        let slot = match path {
            TakeoverPath::Precopied => &mut self.warm.precopied,
            TakeoverPath::Transferred => &mut self.warm.transferred,
            TakeoverPath::Pushed => &mut self.warm.pushed,
            TakeoverPath::Promoted => &mut self.warm.promoted,
            TakeoverPath::Absent => &mut self.cold.absent,
            TakeoverPath::RolledForward => &mut self.cold.rolled_forward,
            TakeoverPath::FencedLoad => &mut self.cold.fenced_load,
        };
        *slot = slot.saturating_add(1);
    }

    /// All keys taken over.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.warm.total().saturating_add(self.cold.total())
    }

    /// Warm takeovers out of all, in percent rounded to a tenth; `None` when
    /// nothing was taken over.
    #[must_use]
    pub fn warm_percent(&self) -> Option<f64> {
        warm_percent(self.warm.total(), self.cold.total())
    }

    /// The sum of two pods' counts for the same transition: final only if both are,
    /// partial if either is.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        let state = match (self.state, other.state) {
            (ReportState::Partial, _) | (_, ReportState::Partial) => ReportState::Partial,
            (ReportState::Final, ReportState::Final) => ReportState::Final,
            _ => ReportState::Counting,
        };
        Self {
            version: self.version,
            warm: self.warm.plus(other.warm),
            cold: self.cold.plus(other.cold),
            served: self.served.plus(other.served),
            state,
        }
    }
}

/// `warm` out of `warm + cold`, in percent rounded to a tenth; `None` when both are 0. The one
/// computation of the warm-hit percentage, of a pod's counts and of the operator's sums.
pub(crate) fn warm_percent(warm: u64, cold: u64) -> Option<f64> {
    let total = warm.saturating_add(cold);
    #[allow(
        clippy::cast_precision_loss,
        reason = "a percentage rounded to a tenth; session counts far below 2^52"
    )]
    (total > 0).then(|| (warm as f64 * 1000.0 / total as f64).round() / 10.0)
}

impl fmt::Display for MovedSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.warm;
        let c = &self.cold;
        write!(
            f,
            "v{} {:?}: warm {} (precopied {}, transferred {}, pushed {}, promoted {}), \
             cold {} (absent {}, rolled forward {}, fenced load {}; new {}), served {} warm / {} cold",
            self.version,
            self.state,
            w.total(),
            w.precopied,
            w.transferred,
            w.pushed,
            w.promoted,
            c.total(),
            c.absent,
            c.rolled_forward,
            c.fenced_load,
            c.created,
            self.served.warm,
            self.served.cold,
        )
    }
}

/// A pod's counts for its last few transitions, keyed by the `Stable` ring
/// version that completed each; the value of the annotation
/// [`MOVED_SESSIONS`](crate::ring::annotations::MOVED_SESSIONS) (JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MovedReport {
    /// Oldest first; `None` entries are unused.
    entries: [Option<MovedSessions>; MovedReport::CAPACITY],
}

impl MovedReport {
    /// How many transitions a report holds.
    pub const CAPACITY: usize = 3;

    /// Largest annotation value accepted.
    pub const MAX_BYTES: usize = 4096;

    /// A report of `entries`; only the newest [`CAPACITY`](Self::CAPACITY)
    /// versions are kept.
    #[must_use]
    pub fn new(entries: impl IntoIterator<Item = MovedSessions>) -> Self {
        let mut all: Vec<MovedSessions> = entries.into_iter().collect();
        all.sort_by_key(|m| m.version);
        all.dedup_by_key(|m| m.version);
        let skip = all.len().saturating_sub(Self::CAPACITY);
        let mut report = Self::default();
        for (slot, moved) in report.entries.iter_mut().zip(all.into_iter().skip(skip)) {
            *slot = Some(moved);
        }
        report
    }

    /// The counts of the transition the `Stable` ring `version` completed.
    #[must_use]
    pub fn get(&self, version: u64) -> Option<&MovedSessions> {
        self.iter().find(|m| m.version == version)
    }

    /// The newest transition's counts.
    #[must_use]
    pub fn latest(&self) -> Option<&MovedSessions> {
        self.iter().last()
    }

    /// The transitions, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &MovedSessions> {
        self.entries.iter().flatten()
    }

    /// True if the report holds no transition.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(Option::is_none)
    }

    /// The report as the annotation's JSON value.
    #[must_use]
    pub fn to_json(&self) -> String {
        let map: BTreeMap<String, &MovedSessions> =
            self.iter().map(|m| (m.version.to_string(), m)).collect();
        serde_json::to_string(&map).unwrap_or_default()
    }
}

/// A [`MovedReport`] annotation that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("moved sessions {text:?}: {reason}")]
pub struct MovedSessionsError {
    text: String,
    reason: String,
}

impl MovedSessionsError {
    fn new(text: &str, reason: impl Into<String>) -> Self {
        Self {
            text: text.chars().take(64).collect(),
            reason: reason.into(),
        }
    }
}

impl std::str::FromStr for MovedReport {
    type Err = MovedSessionsError;

    /// Reads the JSON form (`{"<version>": {...}}`), or the older
    /// `V:warm:cold` (counts not final: an older pod cannot say).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > Self::MAX_BYTES {
            return Err(MovedSessionsError::new(
                text,
                format!("longer than {} bytes", Self::MAX_BYTES),
            ));
        }
        if !text.trim_start().starts_with('{') {
            return legacy(text).map(|m| Self::new([m]));
        }
        let map: BTreeMap<String, MovedSessions> = serde_json::from_str(text)
            .map_err(|e| MovedSessionsError::new(text, format!("not a report: {e}")))?;
        if map.len() > Self::CAPACITY {
            return Err(MovedSessionsError::new(
                text,
                format!("more than {} transitions", Self::CAPACITY),
            ));
        }
        let mut entries = Vec::with_capacity(map.len());
        for (key, mut moved) in map {
            moved.version = key
                .parse()
                .ok()
                .filter(|v| *v > 0 && key.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    MovedSessionsError::new(text, format!("key {key:?} is not a ring version"))
                })?;
            entries.push(moved);
        }
        Ok(Self::new(entries))
    }
}

/// `V:warm:cold`, three decimal numbers: warm counted as transferred, cold as
/// absent, and never final.
fn legacy(text: &str) -> Result<MovedSessions, MovedSessionsError> {
    let invalid = || {
        MovedSessionsError::new(
            text,
            "want a JSON report or <ring version>:<warm>:<cold>, three decimal numbers",
        )
    };
    let mut parts = text.split(':').map(|p| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<u64>().ok())
            .flatten()
            .ok_or_else(invalid)
    });
    let (Some(version), Some(warm), Some(cold), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    Ok(MovedSessions {
        version: version?,
        warm: WarmTakeovers {
            transferred: warm?,
            ..WarmTakeovers::default()
        },
        cold: ColdTakeovers {
            absent: cold?,
            ..ColdTakeovers::default()
        },
        served: ServedTakeovers::default(),
        state: ReportState::Counting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(version: u64, warm: u64, cold: u64, state: ReportState) -> MovedSessions {
        let mut m = MovedSessions {
            version,
            state,
            ..MovedSessions::default()
        };
        for _ in 0..warm {
            m.count(TakeoverPath::Pushed);
        }
        for _ in 0..cold {
            m.count(TakeoverPath::Absent);
        }
        m
    }

    #[test]
    fn a_report_round_trips_through_its_json() {
        let mut a = moved(12, 3, 1, ReportState::Final);
        a.count(TakeoverPath::Precopied);
        a.count(TakeoverPath::RolledForward);
        a.served = ServedTakeovers { warm: 2, cold: 1 };
        let b = moved(15, 0, 0, ReportState::Partial);
        let report = MovedReport::new([b, a]);
        let json = report.to_json();
        assert!(json.starts_with(r#"{"12":{"#), "{json}");
        let back: MovedReport = json.parse().unwrap();
        assert_eq!(back, report);
        assert_eq!(back.latest().map(|m| m.version), Some(15));
        assert_eq!(back.get(12).map(MovedSessions::total), Some(6));
    }

    #[test]
    fn a_report_keeps_the_newest_transitions() {
        let report = MovedReport::new((1..=5).map(|v| moved(v, v, 0, ReportState::Final)));
        let versions: Vec<u64> = report.iter().map(|m| m.version).collect();
        assert_eq!(versions, [3, 4, 5]);
        assert!(MovedReport::default().is_empty());
    }

    #[test]
    fn every_path_is_counted_in_its_own_field() {
        for path in TakeoverPath::ALL {
            let mut m = MovedSessions::default();
            m.count(path);
            assert_eq!(m.total(), 1, "{path}");
            assert_eq!(m.warm.total(), u64::from(path.is_warm()), "{path}");
            assert_eq!(TakeoverPath::from_name(path.as_str()), Some(path));
            // The JSON field is named after the path.
            let json = serde_json::to_value(m).unwrap();
            let group = if path.is_warm() { "warm" } else { "cold" };
            assert_eq!(json[group][path.as_str()], 1, "{path}: {json}");
        }
    }

    #[test]
    fn sums_are_final_only_when_every_part_is() {
        let f = moved(9, 1, 0, ReportState::Final);
        let c = moved(9, 0, 1, ReportState::Counting);
        let p = moved(9, 0, 0, ReportState::Partial);
        assert_eq!(f.plus(f).state, ReportState::Final);
        assert_eq!(f.plus(c).state, ReportState::Counting);
        assert_eq!(c.plus(p).state, ReportState::Partial);
        assert_eq!(f.plus(c).warm_percent(), Some(50.0));
        assert_eq!(MovedSessions::default().warm_percent(), None);
    }

    #[test]
    fn the_older_form_is_read_as_not_final() {
        let report: MovedReport = "42:950:3".parse().unwrap();
        let m = report.get(42).unwrap();
        assert_eq!((m.warm.total(), m.cold.total()), (950, 3));
        assert_eq!(m.state, ReportState::Counting);
        for bad in [
            "",
            "1",
            "1:2",
            "1:2:3:4",
            "a:2:3",
            "1:-2:3",
            "1:+2:3",
            "1: 2:3",
            "1:2:18446744073709551616",
        ] {
            assert!(bad.parse::<MovedReport>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_reports_are_refused_with_a_bounded_message() {
        for bad in [
            "{",
            r#"{"x":{}}"#,
            r#"{"0":{}}"#,
            r#"{"+3":{}}"#,
            r#"{"3":{"warm":{"pushed":-1}}}"#,
            r#"{"3":{"state":"done"}}"#,
            r#"{"1":{},"2":{},"3":{},"4":{}}"#,
            "[1,2]",
        ] {
            assert!(bad.parse::<MovedReport>().is_err(), "{bad:?}");
        }
        let long = format!("{{\"1\":{{}}, \"pad\": \"{}\"}}", "x".repeat(5000));
        let error = long.parse::<MovedReport>().unwrap_err().to_string();
        assert!(error.len() < 200, "{error}");
        // Fields a newer pod adds are ignored; missing ones are zero.
        let newer: MovedReport = r#"{"3":{"warm":{"pushed":2,"later":1},"extra":true}}"#
            .parse()
            .unwrap();
        assert_eq!(newer.get(3).map(MovedSessions::total), Some(2));
    }
}
