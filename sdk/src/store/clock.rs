//! Time as the store sees it: last access, idle deadlines, tombstone expiry.
//!
//! The store asks a [`Clock`] for the time instead of reading it, so that
//! passivation can be tested deterministically. [`TokioClock`] (the default)
//! follows tokio's clock, which a test can pause and advance
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`);
//! [`ManualClock`] moves only when told to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A monotonic source of time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant; never earlier than a previous answer.
    fn now(&self) -> Instant;
}

/// tokio's clock (`tokio::time::Instant::now`): real time, or the paused and
/// advanced time of a test runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until [`advance`](ManualClock::advance)d. Clones
/// share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    elapsed_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading the current tokio instant until advanced.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            elapsed_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward by `by` (saturating after about 584 years).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .elapsed_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(nanos))
            });
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
    }
}

/// `now + by`, saturated at about 30 years from `now` (a user-supplied
/// duration such as `Duration::MAX` must not panic).
pub(crate) fn later(now: Instant, by: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(by.min(FAR)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::new();
        let first = clock.now();
        assert_eq!(clock.now(), first);
        let other = clock.clone();
        other.advance(Duration::from_secs(3));
        assert_eq!(clock.now() - first, Duration::from_secs(3));
    }

    #[test]
    fn later_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
    }
}
