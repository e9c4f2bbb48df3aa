//! How the sessions this pod takes over in a transition arrive: warm (with the
//! state the previous owner held) or cold (first served without it). The
//! counts of one transition are reported with the `Stable` ring that completes
//! it ([`MovedSessions`]), and again when a late takeover of that transition
//! (one still under its handoff deadline) changes them.

use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::progress::MovedSessions;

/// The counts of the current transition; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct MovedTally {
    counts: Mutex<Counts>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Counts {
    /// The `Stable` ring that completed the transition being counted; `None`
    /// while it is under way.
    settled_by: Option<u64>,
    warm: u64,
    cold: u64,
}

impl MovedTally {
    /// One session taken over with its state (`true`) or without (`false`).
    pub(crate) fn count(&self, warm: bool) {
        let settled = {
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            if warm {
                counts.warm += 1;
            } else {
                counts.cold += 1;
            }
            counts.settled_by.is_some()
        };
        // During the transition the counts go out with its Stable ring; after
        // it, a late takeover updates the report.
        if settled {
            self.changed.notify_one();
        }
    }

    /// A ring of a transition (Warm or Switch) arrived: if the last one was
    /// settled, this is a new transition and counting starts afresh.
    pub(crate) fn transition(&self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.settled_by.is_some() {
            *counts = Counts::default();
        }
    }

    /// The `Stable` ring `version` arrived: the counts so far belong to the
    /// transition it completes. Returns them for the report.
    pub(crate) fn settled(&self, version: u64) -> MovedSessions {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.settled_by = Some(counts.settled_by.map_or(version, |v| v.max(version)));
        Self::snapshot(&counts).unwrap_or_default()
    }

    /// The counts to report, once a `Stable` ring settled them.
    pub(crate) fn report(&self) -> Option<MovedSessions> {
        Self::snapshot(&self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Resolves when a late takeover changed settled counts.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn snapshot(counts: &Counts) -> Option<MovedSessions> {
        counts.settled_by.map(|version| MovedSessions {
            version,
            warm: counts.warm,
            cold: counts.cold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_belong_to_the_transition_the_stable_ring_completes() {
        let tally = MovedTally::default();
        tally.transition();
        tally.count(true);
        tally.count(true);
        tally.count(false);
        assert_eq!(tally.report(), None, "nothing to report while under way");
        let first = tally.settled(12);
        assert_eq!((first.version, first.warm, first.cold), (12, 2, 1));
        // A late takeover of the same transition updates its counts.
        tally.count(true);
        assert_eq!(tally.report().map(|m| m.warm), Some(3));
        // The next transition starts from zero; the next Stable ring reports it.
        tally.transition();
        tally.count(false);
        let second = tally.settled(15);
        assert_eq!((second.version, second.warm, second.cold), (15, 0, 1));
        // A pod that only ever saw Stable rings reports zeros.
        let idle = MovedTally::default();
        assert_eq!(
            idle.settled(3),
            MovedSessions {
                version: 3,
                warm: 0,
                cold: 0
            }
        );
    }

    #[tokio::test]
    async fn a_late_takeover_wakes_the_reporter() {
        let tally = MovedTally::default();
        tally.settled(4);
        tally.count(false);
        // The permit stored by notify_one completes the wait at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), tally.changed())
            .await
            .unwrap();
    }
}
