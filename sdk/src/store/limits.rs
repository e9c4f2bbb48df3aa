//! The bounds of a session store and the timings of its background work.
//!
//! Every resource the store holds is bounded here: resident sessions, bytes
//! per session and in total, queued updates per session, concurrent loads,
//! tombstones, key length. [`Limits::validate`] refuses combinations that
//! cannot work (a zero bound, a session bound above the total bound).

use std::time::Duration;

use super::StoreError;

/// The bounds and timings of a [`SessionStore`](super::SessionStore).
///
/// Build one from [`Limits::default`] and override fields:
///
/// ```
/// use std::time::Duration;
/// use locus::store::Limits;
///
/// let limits = Limits {
///     max_sessions: 10_000,
///     max_total_bytes: 64 << 20,
///     idle_timeout: Duration::from_secs(60),
///     ..Limits::default()
/// };
/// assert!(limits.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most sessions resident or loading at once. Past it, idle sessions are
    /// written back and evicted, least recently used first; if none can be,
    /// new sessions are refused with [`StoreError::Full`]. Default 100 000.
    pub max_sessions: usize,
    /// Most bytes one session may weigh (by the store's weigher). A write past
    /// it fails with [`StoreError::TooLarge`] and leaves the old state. Default
    /// 1 MiB.
    pub max_session_bytes: usize,
    /// Most bytes all resident sessions may weigh together. Default 256 MiB.
    pub max_total_bytes: usize,
    /// Most updates (and installs) queued or running on one session; one more
    /// is refused at once with [`StoreError::Busy`]. Default 32.
    pub max_pending_updates: usize,
    /// Most loads through the persistence in flight at once; one more is
    /// refused with [`StoreError::LoadsSaturated`]. Default 256.
    pub max_concurrent_loads: usize,
    /// Longest session key in bytes; longer keys are refused with
    /// [`StoreError::KeyTooLong`]. Default 256, the router's default bound.
    pub max_key_bytes: usize,
    /// Most tombstones (keys handed off to another owner) kept at once; past
    /// it the tombstone closest to expiry is dropped. Default 100 000.
    pub max_tombstones: usize,
    /// A session untouched this long is written back and evicted by the
    /// passivation sweep. Default 5 minutes.
    pub idle_timeout: Duration,
    /// How often the passivation task sweeps. Default 10 seconds.
    pub sweep_interval: Duration,
    /// Longest wait for one persistence call (load or store); past it the call
    /// counts as failed. Default 10 seconds.
    pub persistence_timeout: Duration,
    /// Most write-backs one passivation sweep runs at once. Default 16.
    pub write_back_concurrency: usize,
    /// How long a session whose write-back failed is skipped when the store
    /// looks for sessions to evict under pressure (the passivation sweep still
    /// retries it on every sweep). Default 5 seconds.
    pub write_back_backoff: Duration,
    /// The `Retry-After` hint of transient refusals. Default 1 second.
    pub retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            max_session_bytes: 1 << 20,
            max_total_bytes: 256 << 20,
            max_pending_updates: 32,
            max_concurrent_loads: 256,
            max_key_bytes: 256,
            max_tombstones: 100_000,
            idle_timeout: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(10),
            persistence_timeout: Duration::from_secs(10),
            write_back_concurrency: 16,
            write_back_backoff: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// Checks that the limits can work together.
    pub fn validate(&self) -> Result<(), StoreError> {
        let positive: [(&'static str, usize); 7] = [
            ("max_sessions", self.max_sessions),
            ("max_session_bytes", self.max_session_bytes),
            ("max_total_bytes", self.max_total_bytes),
            ("max_pending_updates", self.max_pending_updates),
            ("max_concurrent_loads", self.max_concurrent_loads),
            ("max_key_bytes", self.max_key_bytes),
            ("write_back_concurrency", self.write_back_concurrency),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(StoreError::InvalidLimits {
                    field,
                    reason: "must be at least 1",
                });
            }
        }
        let durations: [(&'static str, Duration); 3] = [
            ("idle_timeout", self.idle_timeout),
            ("sweep_interval", self.sweep_interval),
            ("persistence_timeout", self.persistence_timeout),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return Err(StoreError::InvalidLimits {
                    field,
                    reason: "must be longer than zero",
                });
            }
        }
        if self.max_session_bytes > self.max_total_bytes {
            return Err(StoreError::InvalidLimits {
                field: "max_session_bytes",
                reason: "must not exceed max_total_bytes",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Limits::default().validate().is_ok());
    }

    #[test]
    fn zero_bounds_are_refused_by_name() {
        let limits = Limits {
            max_pending_updates: 0,
            ..Limits::default()
        };
        match limits.validate() {
            Err(StoreError::InvalidLimits { field, .. }) => {
                assert_eq!(field, "max_pending_updates");
            }
            other => panic!("expected InvalidLimits, got {other:?}"),
        }
        let limits = Limits {
            idle_timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(matches!(
            limits.validate(),
            Err(StoreError::InvalidLimits {
                field: "idle_timeout",
                ..
            })
        ));
    }

    #[test]
    fn a_session_bound_above_the_total_bound_is_refused() {
        let limits = Limits {
            max_session_bytes: 2048,
            max_total_bytes: 1024,
            ..Limits::default()
        };
        assert!(matches!(
            limits.validate(),
            Err(StoreError::InvalidLimits {
                field: "max_session_bytes",
                ..
            })
        ));
    }
}
