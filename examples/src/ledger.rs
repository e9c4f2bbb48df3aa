//! The sample's domain: a **session ledger**.
//!
//! Each session is a [`Ledger`]: the events appended to it, counted and
//! summed (overall and per kind), the last few kept verbatim, and the set of
//! client sequence numbers already applied. An [`Event`] may carry a `seq`:
//! an append whose `seq` the ledger has already applied changes nothing
//! ([`Appended::Duplicate`]), so a client may safely send an append again
//! after a timeout or a redirect. The load generator numbers its appends and
//! checks, at the end, that every acknowledged `seq` is in the ledger.
//!
//! Everything a ledger holds is bounded by [`LedgerRules`]: the number of
//! kinds, the length of kinds and notes, the events kept verbatim and the
//! number of gaps in the applied sequence numbers. The session store bounds
//! the whole (its weigher is [`Ledger::weight`]).
//!
//! ```
//! use locus_examples::ledger::{Appended, Event, Ledger, LedgerRules};
//!
//! let rules = LedgerRules::default();
//! let mut ledger = Ledger::default();
//! let deposit = Event { seq: Some(1), kind: "deposit".into(), amount: 50, note: None };
//! assert_eq!(ledger.append(deposit.clone(), &rules), Ok(Appended::Applied));
//! assert_eq!(ledger.append(deposit, &rules), Ok(Appended::Duplicate));
//! assert_eq!((ledger.events, ledger.total), (1, 50));
//! ```

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ranges::SeqSet;

/// One event appended to a session (the body of `POST /sessions/{id}/events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The client's sequence number for this append (idempotency key):
    /// an append whose `seq` was already applied is not applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// What happened (1 to [`LedgerRules::max_kind_bytes`] bytes of
    /// letters, digits, `-`, `_`, `.`); default `event`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Amount added to the session's totals (may be negative).
    #[serde(default)]
    pub amount: i64,
    /// Free text kept with the event, at most
    /// [`LedgerRules::max_note_bytes`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn default_kind() -> String {
    "event".to_owned()
}

/// The state of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Events applied.
    pub events: u64,
    /// Sum of their amounts.
    pub total: i64,
    /// Sum of amounts per kind.
    pub by_kind: BTreeMap<String, i64>,
    /// The last [`LedgerRules::recent_events`] events applied, oldest first.
    pub recent: VecDeque<Event>,
    /// Sequence numbers of the applied events that carried one.
    pub seqs: SeqSet,
}

/// The bounds of a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRules {
    /// Events kept verbatim (the last ones). Default 16.
    pub recent_events: usize,
    /// Distinct kinds per session. Default 32.
    pub max_kinds: usize,
    /// Longest kind, in bytes. Default 32.
    pub max_kind_bytes: usize,
    /// Longest note, in bytes. Default 256.
    pub max_note_bytes: usize,
    /// Most ranges in the set of applied sequence numbers (each gap in the
    /// client's numbering adds one). Default 1024.
    pub max_seq_ranges: usize,
}

impl Default for LedgerRules {
    fn default() -> Self {
        Self {
            recent_events: 16,
            max_kinds: 32,
            max_kind_bytes: 32,
            max_note_bytes: 256,
            max_seq_ranges: 1024,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The event was applied.
    Applied,
    /// Its `seq` had been applied before: nothing changed.
    Duplicate,
}

/// Why an event is refused. [`LedgerError::metric_label`] names it in
/// responses and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The kind is empty, too long or has characters outside
    /// `[A-Za-z0-9._-]`.
    #[error("event kind must be 1 to {max} bytes of letters, digits, '.', '_' or '-'")]
    InvalidKind {
        /// The length bound.
        max: usize,
    },
    /// The note is longer than the bound.
    #[error("event note is {len} bytes, more than {max}")]
    NoteTooLong {
        /// The note's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The session already has the most kinds allowed.
    #[error("session already has {max} kinds of events")]
    TooManyKinds {
        /// The bound.
        max: usize,
    },
    /// The applied sequence numbers would have more gaps than allowed.
    #[error("applied sequence numbers would have more than {max} ranges")]
    TooManyGaps {
        /// The bound.
        max: usize,
    },
    /// A total would overflow a 64-bit integer.
    #[error("the session's totals would overflow")]
    Overflow,
}

impl LedgerError {
    /// A short, stable name for responses and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidKind { .. } => "invalid_kind",
            Self::NoteTooLong { .. } => "note_too_long",
            Self::TooManyKinds { .. } => "too_many_kinds",
            Self::TooManyGaps { .. } => "too_many_gaps",
            Self::Overflow => "overflow",
        }
    }
}

impl Event {
    /// Checks the event's own fields against `rules` (before any session is
    /// touched).
    pub fn validate(&self, rules: &LedgerRules) -> Result<(), LedgerError> {
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= rules.max_kind_bytes
            && self
                .kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !kind_ok {
            return Err(LedgerError::InvalidKind {
                max: rules.max_kind_bytes,
            });
        }
        if let Some(note) = &self.note
            && note.len() > rules.max_note_bytes
        {
            return Err(LedgerError::NoteTooLong {
                len: note.len(),
                max: rules.max_note_bytes,
            });
        }
        Ok(())
    }

    fn weight(&self) -> usize {
        EVENT_OVERHEAD + self.kind.len() + self.note.as_ref().map_or(0, String::len)
    }
}

/// Bytes counted per event kept, besides its strings.
const EVENT_OVERHEAD: usize = 64;
/// Bytes counted per kind total, besides its name.
const KIND_OVERHEAD: usize = 48;
/// Bytes counted per range of applied sequence numbers.
const RANGE_OVERHEAD: usize = 48;
/// Bytes counted for the ledger itself.
const LEDGER_OVERHEAD: usize = 128;

impl Ledger {
    /// Applies `event` (validated first), or refuses it leaving the ledger
    /// unchanged.
    pub fn append(&mut self, event: Event, rules: &LedgerRules) -> Result<Appended, LedgerError> {
        event.validate(rules)?;
        if let Some(seq) = event.seq {
            if self.seqs.contains(seq) {
                return Ok(Appended::Duplicate);
            }
            if self.seqs.range_count_after_insert(seq) > rules.max_seq_ranges {
                return Err(LedgerError::TooManyGaps {
                    max: rules.max_seq_ranges,
                });
            }
        }
        let known_kind = self.by_kind.contains_key(&event.kind);
        if !known_kind && self.by_kind.len() >= rules.max_kinds {
            return Err(LedgerError::TooManyKinds {
                max: rules.max_kinds,
            });
        }
        let total = self
            .total
            .checked_add(event.amount)
            .ok_or(LedgerError::Overflow)?;
        let kind_total = self
            .by_kind
            .get(&event.kind)
            .copied()
            .unwrap_or(0)
            .checked_add(event.amount)
            .ok_or(LedgerError::Overflow)?;
        // Every check passed: now change the ledger.
        if let Some(seq) = event.seq {
            self.seqs.insert(seq);
        }
        self.events = self.events.saturating_add(1);
        self.total = total;
        self.by_kind.insert(event.kind.clone(), kind_total);
        self.recent.push_back(event);
        while self.recent.len() > rules.recent_events {
            self.recent.pop_front();
        }
        Ok(Appended::Applied)
    }

    /// The bytes this ledger is counted for by the session store: its
    /// strings plus a fixed overhead per event kept, kind and range.
    pub fn weight(&self) -> usize {
        LEDGER_OVERHEAD
            + self
                .by_kind
                .keys()
                .map(|kind| KIND_OVERHEAD + kind.len())
                .sum::<usize>()
            + self.recent.iter().map(Event::weight).sum::<usize>()
            + RANGE_OVERHEAD * self.seqs.range_count()
    }
}

/// The answer to an append: the session's new (or, for a duplicate,
/// current) summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendAnswer {
    /// The session id.
    pub session: String,
    /// The session's version after the append (unchanged for a duplicate).
    pub version: u64,
    /// The ownership epoch under which the answering pod holds the session
    /// (0 without the handoff member, and in stateless mode). It grows from
    /// one owner to the next: what the load generator's double-writer check
    /// orders writers by.
    #[serde(default)]
    pub epoch: u64,
    /// Whether this request applied the event (`false`: its `seq` had
    /// been applied before).
    pub applied: bool,
    /// The event's `seq`, if it carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Events applied to the session.
    pub events: u64,
    /// Sum of their amounts.
    pub total: i64,
}

/// The answer to `GET /sessions/{id}`: the whole state with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session id.
    pub session: String,
    /// The session's version (0: nothing applied yet).
    pub version: u64,
    /// Events applied.
    pub events: u64,
    /// Sum of their amounts.
    pub total: i64,
    /// Sum of amounts per kind.
    pub by_kind: BTreeMap<String, i64>,
    /// The last events applied, oldest first.
    pub recent: Vec<Event>,
    /// Applied sequence numbers as `[start, end]` ranges.
    pub seqs: SeqSet,
}

impl SessionView {
    /// The view of `ledger` at `version`.
    pub fn new(session: &str, version: u64, ledger: &Ledger) -> Self {
        Self {
            session: session.to_owned(),
            version,
            events: ledger.events,
            total: ledger.total,
            by_kind: ledger.by_kind.clone(),
            recent: ledger.recent.iter().cloned().collect(),
            seqs: ledger.seqs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: &str, amount: i64) -> Event {
        Event {
            seq: Some(seq),
            kind: kind.into(),
            amount,
            note: None,
        }
    }

    #[test]
    fn appends_sum_per_kind_and_keep_the_last_events() {
        let rules = LedgerRules {
            recent_events: 2,
            ..LedgerRules::default()
        };
        let mut ledger = Ledger::default();
        for (seq, kind, amount) in [(1, "in", 10), (2, "out", -3), (3, "in", 5)] {
            assert_eq!(
                ledger.append(event(seq, kind, amount), &rules),
                Ok(Appended::Applied)
            );
        }
        assert_eq!(ledger.events, 3);
        assert_eq!(ledger.total, 12);
        assert_eq!(ledger.by_kind["in"], 15);
        assert_eq!(ledger.by_kind["out"], -3);
        assert_eq!(
            ledger.recent.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [Some(2), Some(3)]
        );
        assert_eq!(ledger.seqs.ranges().collect::<Vec<_>>(), [(1, 3)]);
    }

    #[test]
    fn a_replayed_seq_changes_nothing_and_unnumbered_events_always_apply() {
        let rules = LedgerRules::default();
        let mut ledger = Ledger::default();
        ledger.append(event(7, "in", 1), &rules).unwrap();
        let before = ledger.clone();
        assert_eq!(
            ledger.append(event(7, "in", 100), &rules),
            Ok(Appended::Duplicate)
        );
        assert_eq!(ledger, before);
        let plain = Event {
            seq: None,
            ..event(0, "in", 1)
        };
        ledger.append(plain.clone(), &rules).unwrap();
        ledger.append(plain, &rules).unwrap();
        assert_eq!(ledger.events, 3);
    }

    #[test]
    fn refusals_leave_the_ledger_unchanged() {
        let rules = LedgerRules {
            max_kinds: 1,
            max_seq_ranges: 2,
            max_note_bytes: 4,
            ..LedgerRules::default()
        };
        let mut ledger = Ledger::default();
        ledger.append(event(1, "a", i64::MAX), &rules).unwrap();
        let before = ledger.clone();
        assert_eq!(
            ledger.append(event(2, "b", 0), &rules),
            Err(LedgerError::TooManyKinds { max: 1 })
        );
        assert_eq!(
            ledger.append(event(3, "a", 1), &rules),
            Err(LedgerError::Overflow)
        );
        ledger.append(event(10, "a", -1), &rules).unwrap();
        assert_eq!(
            ledger.append(event(20, "a", 0), &rules),
            Err(LedgerError::TooManyGaps { max: 2 })
        );
        // Filling a gap is fine even at the bound.
        assert_eq!(ledger.seqs.range_count(), 2);
        let mut bad = event(4, "a b", 0);
        assert!(matches!(
            ledger.append(bad.clone(), &rules),
            Err(LedgerError::InvalidKind { .. })
        ));
        bad.kind = "a".into();
        bad.note = Some("too long".into());
        assert_eq!(
            ledger.append(bad, &rules),
            Err(LedgerError::NoteTooLong { len: 8, max: 4 })
        );
        assert_eq!(ledger.events, before.events + 1);
    }

    #[test]
    fn weight_grows_with_what_is_kept() {
        let rules = LedgerRules::default();
        let mut ledger = Ledger::default();
        let empty = ledger.weight();
        ledger.append(event(1, "deposit", 1), &rules).unwrap();
        let one = ledger.weight();
        assert_eq!(
            one,
            empty + KIND_OVERHEAD + 7 + EVENT_OVERHEAD + 7 + RANGE_OVERHEAD
        );
        let mut noted = event(3, "deposit", 1);
        noted.note = Some("x".repeat(100));
        ledger.append(noted, &rules).unwrap();
        assert_eq!(
            ledger.weight(),
            one + EVENT_OVERHEAD + 7 + 100 + RANGE_OVERHEAD
        );
    }

    #[test]
    fn events_parse_with_defaults_and_refuse_unknown_fields() {
        let e: Event = serde_json::from_str(r#"{"amount": 5}"#).unwrap();
        assert_eq!((e.kind.as_str(), e.amount, e.seq), ("event", 5, None));
        assert!(serde_json::from_str::<Event>(r#"{"amount": 5, "x": 1}"#).is_err());
        assert!(serde_json::from_str::<Event>(r#"{"amount": "5"}"#).is_err());
    }
}
