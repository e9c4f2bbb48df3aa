//! The bounds of a session store and the timings of its background work.
//!
//! Every resource the store holds is bounded here: resident sessions, bytes
//! per session and in total, queued updates per session, concurrent loads,
//! tombstones, key length. [`Limits::validate`] refuses combinations that
//! cannot work (a zero bound, a session bound above the total bound).

use std::time::Duration;

use super::StoreError;
use super::memory::MemoryBudget;

config_fields! {
    /// The bounds and timings of a [`SessionStore`](super::SessionStore).
    ///
    /// Built with [`Limits::builder`] (or from another value with
    /// [`Limits::to_builder`]), which checks them ([`Limits::validate`]);
    /// read through the getters. The [`Default`] is valid.
    ///
    /// ```
    /// use std::time::Duration;
    /// use locus::store::Limits;
    ///
    /// let limits = Limits::builder()
    ///     .max_sessions(10_000)
    ///     .max_total_bytes(64 << 20)
    ///     .idle_timeout(Duration::from_secs(60))
    ///     .build()?;
    /// assert_eq!(limits.max_sessions(), 10_000);
    /// # Ok::<(), locus::StoreError>(())
    /// ```
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Limits, built by LimitsBuilder {
        /// Most sessions resident or loading at once. Past it, idle sessions are
        /// written back and evicted, those not touched lately first (a clock); if none can be,
        /// new sessions are refused with [`StoreError::Full`]. Default 100 000.
        max_sessions: usize = 100_000;
        /// Most bytes one session may weigh (by the store's weigher). A write past
        /// it fails with [`StoreError::TooLarge`] and leaves the old state. Default
        /// 1 MiB.
        max_session_bytes: usize = 1 << 20;
        /// Most bytes all resident sessions may weigh together. Default 256 MiB.
        max_total_bytes: usize = 256 << 20;
        /// Most updates (and installs) queued or running on one session; one more
        /// is refused at once with [`StoreError::Busy`]. Default 32.
        max_pending_updates: usize = 32;
        /// Most loads through the persistence in flight at once; one more is
        /// refused with [`StoreError::LoadsSaturated`]. Default 256.
        max_concurrent_loads: usize = 256;
        /// Longest session key in bytes; longer keys are refused with
        /// [`StoreError::KeyTooLong`]. Default 256, the router's default bound.
        max_key_bytes: usize = 256;
        /// Most tombstones (keys handed off to another owner) kept at once; past
        /// it the tombstone closest to expiry is dropped. Default 100 000.
        max_tombstones: usize = 100_000;
        /// A session untouched this long is written back and evicted by the
        /// passivation sweep. Default 5 minutes.
        idle_timeout: Duration = Duration::from_secs(300);
        /// How often the passivation task sweeps. Default 10 seconds.
        sweep_interval: Duration = Duration::from_secs(10);
        /// Longest wait for one persistence call (load or store); past it the call
        /// counts as failed. Default 10 seconds.
        persistence_timeout: Duration = Duration::from_secs(10);
        /// Most write-backs one passivation sweep runs at once. Default 16.
        write_back_concurrency: usize = 16;
        /// How long a session whose write-back failed is skipped when the store
        /// looks for sessions to evict under pressure (the passivation sweep still
        /// retries it on every sweep). Default 5 seconds.
        write_back_backoff: Duration = Duration::from_secs(5);
        /// The `Retry-After` hint of transient refusals. Default 1 second.
        retry_after: Duration = Duration::from_secs(1);
    }
}

/// Builds [`Limits`] from the defaults (or from other limits) and checks
/// them in [`build`](Self::build).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct LimitsBuilder {
    config: Limits,
}

impl LimitsBuilder {
    /// Fits the store into a container limited to `limit` bytes of memory
    /// ([`MemoryBudget::of`]: half of it for the sessions' weighed bytes, a quarter for
    /// their index): lowers `max_total_bytes`, `max_sessions` and, if it
    /// would exceed the new total, `max_session_bytes`; never raises a bound already
    /// set. With the container's own limit ([`memory_limit`](super::memory_limit)):
    ///
    /// ```
    /// use locus::store::{Limits, memory_limit};
    ///
    /// let mut limits = Limits::builder();
    /// if let Some(limit) = memory_limit() {
    ///     limits = limits.within_memory(limit);
    /// }
    /// let limits = limits.build()?;
    /// # Ok::<(), locus::StoreError>(())
    /// ```
    pub fn within_memory(mut self, limit: u64) -> Self {
        let budget = MemoryBudget::of(limit);
        let config = &mut self.config;
        config.max_total_bytes = config.max_total_bytes.min(budget.session_bytes);
        config.max_sessions = config.max_sessions.min(budget.sessions);
        config.max_session_bytes = config.max_session_bytes.min(config.max_total_bytes);
        self
    }

    /// The limits, if they can work together ([`Limits::validate`]).
    pub fn build(self) -> Result<Limits, StoreError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

impl Limits {
    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder::default()
    }

    /// A builder starting from these limits.
    pub fn to_builder(&self) -> LimitsBuilder {
        LimitsBuilder {
            config: self.clone(),
        }
    }

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
        assert_eq!(Limits::builder().build().unwrap(), Limits::default());
    }

    #[test]
    fn the_builder_sets_what_it_is_given_and_refuses_what_validate_refuses() {
        let limits = Limits::builder().max_sessions(7).build().unwrap();
        assert_eq!(limits.max_sessions(), 7);
        assert_eq!(
            limits
                .to_builder()
                .max_key_bytes(9)
                .build()
                .unwrap()
                .max_key_bytes(),
            9
        );
        let refused = Limits::builder().write_back_concurrency(0).build();
        assert!(matches!(
            refused,
            Err(StoreError::InvalidLimits {
                field: "write_back_concurrency",
                ..
            })
        ));
        let refused = Limits::builder()
            .max_session_bytes(2)
            .max_total_bytes(1)
            .build();
        assert!(matches!(
            refused,
            Err(StoreError::InvalidLimits {
                field: "max_session_bytes",
                ..
            })
        ));
    }

    #[test]
    fn a_memory_limit_lowers_the_bounds_and_never_raises_them() {
        let limits = Limits::builder().within_memory(128 << 20).build().unwrap();
        assert_eq!(limits.max_total_bytes(), 64 << 20);
        assert_eq!(limits.max_sessions(), 32_768);
        assert_eq!(
            limits.max_session_bytes(),
            Limits::default().max_session_bytes()
        );
        let small = Limits::builder()
            .max_sessions(10)
            .within_memory(1 << 20)
            .build()
            .unwrap();
        assert_eq!(small.max_sessions(), 10);
        assert_eq!(small.max_total_bytes(), 512 << 10);
        assert_eq!(small.max_session_bytes(), 512 << 10);
        let huge = Limits::builder().within_memory(1 << 40).build().unwrap();
        assert_eq!(huge, Limits::default());
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
