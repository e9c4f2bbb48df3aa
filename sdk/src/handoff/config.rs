//! [`HandoffConfig`]: the timings and bounds of the handoff protocol and the
//! transition driver, built and checked by [`HandoffConfigBuilder`].
//!
//! ```
//! use std::time::Duration;
//! use locus::handoff::{HandoffConfig, HandoffConfigError};
//!
//! let config = HandoffConfig::builder()
//!     .handoff_deadline(Duration::from_secs(10))
//!     .first_touch_wait(Duration::from_secs(2))
//!     .build()?;
//! assert_eq!(config.first_touch_wait(), Duration::from_secs(2));
//!
//! let refused = HandoffConfig::builder().max_in_flight(0).build();
//! assert!(matches!(refused, Err(HandoffConfigError::ZeroLimit { field: "max_in_flight" })));
//! # Ok::<(), HandoffConfigError>(())
//! ```
//!
//! The fields, their defaults and their getters and setters are written once,
//! in the `config_fields!` list below.

use std::time::Duration;

/// A [`HandoffConfig`] that [`HandoffConfigBuilder::build`] refuses: the
/// field and what it allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffConfigError {
    /// A timeout, deadline, lifetime or pause is zero: every one of them
    /// bounds a wait or paces a retry, and zero would mean giving up (or
    /// retrying) at once.
    #[error("HandoffConfig::{field} is zero; it must be longer than zero")]
    ZeroDuration {
        /// The field.
        field: &'static str,
    },
    /// A count or size bound is zero: nothing could ever pass it.
    #[error("HandoffConfig::{field} is zero; it must be at least 1")]
    ZeroLimit {
        /// The field.
        field: &'static str,
    },
    /// `first_touch_wait` is not below `handoff_deadline`: a request would
    /// wait for a takeover longer than the window in which takeovers of the
    /// settling Switch happen at all.
    #[error(
        "HandoffConfig::first_touch_wait ({first_touch_wait:?}) must be below handoff_deadline ({handoff_deadline:?})"
    )]
    FirstTouchWaitNotBelowDeadline {
        /// The `first_touch_wait` given.
        first_touch_wait: Duration,
        /// The `handoff_deadline` given.
        handoff_deadline: Duration,
    },
}

config_fields! {
    /// Timings and bounds of the handoff protocol and the transition driver.
    ///
    /// Every wait is bounded; past a phase's bound the pod rolls forward and
    /// counts it in `locus_handoff_rolled_forward_total{phase}` — but no bound
    /// hands a key to a new owner: a key loads cold only once its previous owner
    /// is fenced (`docs/adr/0001-fencing.md`).
    ///
    /// Built with [`HandoffConfig::builder`], which checks the values
    /// ([`HandoffConfigError`]); read through the getters. The
    /// [`Default`] is valid.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HandoffConfig, built by HandoffConfigBuilder {
        /// Longest pre-copy (Warm step) before reporting warmed anyway.
        /// Default 30 s (the operator's `timeouts.warm`).
        warm_timeout: Duration = Duration::from_secs(30);
        /// Longest single transfer call. Default 5 s.
        transfer_timeout: Duration = Duration::from_secs(5);
        /// From the moment this pod sees a Switch ring: how long first touches
        /// go through the previous owner (parked record, then a transfer) after
        /// the ring that settles the switch arrived — it may still hold a key's
        /// state in its outbox. Past it, keys not taken over load from the
        /// persistence directly. Default 30 s. It never lets a key load cold
        /// while the switch is not settled: until the operator settles it (every
        /// losing pod drained or gone), an unreachable previous owner's keys
        /// answer 503 (`docs/adr/0001-fencing.md`).
        handoff_deadline: Duration = Duration::from_secs(30);
        /// Longest a request waits for its key's first-touch transfer before it
        /// gets 503 with `Retry-After` (the next attempt continues). Default 5 s.
        first_touch_wait: Duration = Duration::from_secs(5);
        /// Longest drain (Switch step) before reporting drained anyway. Default
        /// 30 s (the operator's `timeouts.drain`).
        drain_timeout: Duration = Duration::from_secs(30);
        /// Longest single push call. Default 10 s.
        push_timeout: Duration = Duration::from_secs(10);
        /// Longest wait for this pod's ring to reach an asker's version. Default 2 s.
        ring_wait: Duration = Duration::from_secs(2);
        /// How long a handed-off key answers 421 with its new owner here.
        /// Default 60 s. It outlives the requests admitted before the ring
        /// changed; later ones are redirected by the ownership check itself.
        tombstone_ttl: Duration = Duration::from_secs(60);
        /// How long a handed-off record stays answerable to a retried transfer.
        /// Default 60 s.
        outbox_ttl: Duration = Duration::from_secs(60);
        /// How long a parked record (handed to this pod before it owns the key)
        /// and a pre-copy are kept. Default 5 minutes.
        parked_ttl: Duration = Duration::from_secs(300);
        /// After a Stable ring, how long pre-copies are kept before being
        /// dropped. Default 30 s.
        settle_grace: Duration = Duration::from_secs(30);
        /// Most records per pushed batch and per pre-copy chunk. Default 256.
        batch_records: usize = 256;
        /// Most bytes per pushed batch and per pre-copy chunk. Default 1 MiB.
        batch_bytes: usize = 1 << 20;
        /// Most keys per transfer request. Default 256.
        max_transfer_keys: usize = 256;
        /// Largest frame accepted (a session plus its key and header). Default
        /// 16 MiB + 64 KiB.
        max_frame_bytes: usize = (16 << 20) + (64 << 10);
        /// Bound of the warm cache (pre-copies and parked records). Default 256 MiB.
        max_cache_bytes: usize = 256 << 20;
        /// Bound of the outbox (records handed off, not yet acknowledged).
        /// Default 256 MiB.
        max_outbox_bytes: usize = 256 << 20;
        /// Pre-copies (one per source pod) run at once. Default 4.
        precopy_concurrency: usize = 4;
        /// Pushes (one per destination pod) run at once. Default 4.
        push_concurrency: usize = 4;
        /// Requests served at once by the session layer; past it, 503 with
        /// `Retry-After`. Default 1024.
        max_in_flight: usize = 1024;
        /// Pause between retries of a failed call. Default 100 ms.
        retry_backoff: Duration = Duration::from_millis(100);
        /// `Retry-After` of the 503 answers. Default 1 s.
        retry_after: Duration = Duration::from_secs(1);
    }
}

/// Builds a [`HandoffConfig`] from the defaults (or from another config),
/// and checks it in [`build`](Self::build).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct HandoffConfigBuilder {
    config: HandoffConfig,
}

impl HandoffConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> HandoffConfigBuilder {
        HandoffConfigBuilder::default()
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> HandoffConfigBuilder {
        HandoffConfigBuilder {
            config: self.clone(),
        }
    }

    /// Checks every rule; the first broken one is the error.
    fn validate(&self) -> Result<(), HandoffConfigError> {
        // `ring_wait` and `settle_grace` may be zero: no wait for a newer
        // ring (the asker retries), and pre-copies dropped as soon as the
        // ring is Stable.
        let durations = [
            ("warm_timeout", self.warm_timeout),
            ("transfer_timeout", self.transfer_timeout),
            ("handoff_deadline", self.handoff_deadline),
            ("first_touch_wait", self.first_touch_wait),
            ("drain_timeout", self.drain_timeout),
            ("push_timeout", self.push_timeout),
            ("tombstone_ttl", self.tombstone_ttl),
            ("outbox_ttl", self.outbox_ttl),
            ("parked_ttl", self.parked_ttl),
            ("retry_backoff", self.retry_backoff),
            ("retry_after", self.retry_after),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, value)| value.is_zero()) {
            return Err(HandoffConfigError::ZeroDuration { field });
        }
        let limits = [
            ("batch_records", self.batch_records),
            ("batch_bytes", self.batch_bytes),
            ("max_transfer_keys", self.max_transfer_keys),
            ("max_frame_bytes", self.max_frame_bytes),
            ("max_cache_bytes", self.max_cache_bytes),
            ("max_outbox_bytes", self.max_outbox_bytes),
            ("precopy_concurrency", self.precopy_concurrency),
            ("push_concurrency", self.push_concurrency),
            ("max_in_flight", self.max_in_flight),
        ];
        if let Some((field, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(HandoffConfigError::ZeroLimit { field });
        }
        if self.first_touch_wait >= self.handoff_deadline {
            return Err(HandoffConfigError::FirstTouchWaitNotBelowDeadline {
                first_touch_wait: self.first_touch_wait,
                handoff_deadline: self.handoff_deadline,
            });
        }
        Ok(())
    }
}

impl HandoffConfigBuilder {
    /// The configuration, if every value is allowed.
    pub fn build(self) -> Result<HandoffConfig, HandoffConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(
            HandoffConfig::builder().build(),
            Ok(HandoffConfig::default())
        );
    }

    #[test]
    fn the_builder_sets_what_it_is_given() {
        let config = HandoffConfig::builder()
            .warm_timeout(Duration::from_secs(3))
            .batch_records(8)
            .build()
            .unwrap();
        assert_eq!(config.warm_timeout(), Duration::from_secs(3));
        assert_eq!(config.batch_records(), 8);
        assert_eq!(
            config.drain_timeout(),
            HandoffConfig::default().drain_timeout()
        );
        let again = config.to_builder().max_in_flight(7).build().unwrap();
        assert_eq!((again.batch_records(), again.max_in_flight()), (8, 7));
    }

    #[test]
    fn a_zero_duration_is_refused_by_name() {
        let zero = Duration::ZERO;
        let cases: [(&str, HandoffConfigBuilder); 11] = [
            ("warm_timeout", HandoffConfig::builder().warm_timeout(zero)),
            (
                "transfer_timeout",
                HandoffConfig::builder().transfer_timeout(zero),
            ),
            (
                "handoff_deadline",
                HandoffConfig::builder().handoff_deadline(zero),
            ),
            (
                "first_touch_wait",
                HandoffConfig::builder().first_touch_wait(zero),
            ),
            (
                "drain_timeout",
                HandoffConfig::builder().drain_timeout(zero),
            ),
            ("push_timeout", HandoffConfig::builder().push_timeout(zero)),
            (
                "tombstone_ttl",
                HandoffConfig::builder().tombstone_ttl(zero),
            ),
            ("outbox_ttl", HandoffConfig::builder().outbox_ttl(zero)),
            ("parked_ttl", HandoffConfig::builder().parked_ttl(zero)),
            (
                "retry_backoff",
                HandoffConfig::builder().retry_backoff(zero),
            ),
            ("retry_after", HandoffConfig::builder().retry_after(zero)),
        ];
        for (field, builder) in cases {
            let error = builder.build().unwrap_err();
            assert_eq!(error, HandoffConfigError::ZeroDuration { field });
            assert!(error.to_string().contains(field), "{error}");
        }
    }

    #[test]
    fn a_zero_ring_wait_or_settle_grace_is_allowed() {
        let config = HandoffConfig::builder()
            .ring_wait(Duration::ZERO)
            .settle_grace(Duration::ZERO)
            .build();
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn a_zero_limit_is_refused_by_name() {
        let cases: [(&str, HandoffConfigBuilder); 9] = [
            ("batch_records", HandoffConfig::builder().batch_records(0)),
            ("batch_bytes", HandoffConfig::builder().batch_bytes(0)),
            (
                "max_transfer_keys",
                HandoffConfig::builder().max_transfer_keys(0),
            ),
            (
                "max_frame_bytes",
                HandoffConfig::builder().max_frame_bytes(0),
            ),
            (
                "max_cache_bytes",
                HandoffConfig::builder().max_cache_bytes(0),
            ),
            (
                "max_outbox_bytes",
                HandoffConfig::builder().max_outbox_bytes(0),
            ),
            (
                "precopy_concurrency",
                HandoffConfig::builder().precopy_concurrency(0),
            ),
            (
                "push_concurrency",
                HandoffConfig::builder().push_concurrency(0),
            ),
            ("max_in_flight", HandoffConfig::builder().max_in_flight(0)),
        ];
        for (field, builder) in cases {
            let error = builder.build().unwrap_err();
            assert_eq!(error, HandoffConfigError::ZeroLimit { field });
            assert!(error.to_string().contains(field), "{error}");
        }
    }

    #[test]
    fn the_first_touch_wait_must_be_below_the_handoff_deadline() {
        let deadline = Duration::from_secs(4);
        for wait in [deadline, deadline * 2] {
            let error = HandoffConfig::builder()
                .handoff_deadline(deadline)
                .first_touch_wait(wait)
                .build()
                .unwrap_err();
            assert_eq!(
                error,
                HandoffConfigError::FirstTouchWaitNotBelowDeadline {
                    first_touch_wait: wait,
                    handoff_deadline: deadline,
                }
            );
        }
        let just_below = HandoffConfig::builder()
            .handoff_deadline(deadline)
            .first_touch_wait(Duration::from_millis(3999))
            .build();
        assert!(just_below.is_ok());
    }
}
