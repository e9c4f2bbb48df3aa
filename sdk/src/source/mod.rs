//! Ring sources: where a process gets the ring it routes by.
//!
//! A source keeps the *last good ring* and replaces it only with a valid ring
//! that is strictly newer. Readers hold a [`RingWatch`], a cheap cloneable
//! handle over a `tokio::sync::watch` channel of `Option<Arc<Ring>>`: taking a
//! snapshot clones an `Arc` under a read lock that writers hold only for the
//! pointer swap, never across I/O, so routing never waits on the API server,
//! the disk or a parse. The same handle awaits changes
//! ([`RingWatch::wait_for_version`]).
//!
//! * [`KubeRingSource`]: a kube-rs watcher of `ConfigMap` `<service>-ring`
//!   (key `ring.json`); keeps serving and reconnects with backoff when the API
//!   server is unreachable.
//! * [`FileRingSource`]: a `ring.json` file, reloaded when it changes (for
//!   services outside Kubernetes).
//! * [`StaticRingSource`]: in memory, [`StaticRingSource::publish`] plays the
//!   operator's role in tests.
//!
//! Every source counts what it did in a [`SourceStatus`] (a watch channel too,
//! so tests and readiness checks can await "a ring was loaded" or "a document
//! was rejected"), logs refusals with `tracing::warn!` and, given
//! [`Metrics`](crate::Metrics), counts them in
//! `locus_ring_documents_rejected_total{reason}`.
//!
//! ```
//! use locus::source::{RingSource, StaticRingSource};
//! # use locus::ring::*;
//! # let ring = |version| { let slot = Slot { index: 0, pod: Pod { name: "chat-0-a".into(), uid: "u".into(), address: "10.0.0.1:80".parse().unwrap() }, state: SlotState::Active, successor: None, predecessor: None };
//! #   Ring::new(RingParts { namespace: "default".into(), service: "chat".into(), version, shards: ShardCount::new(1).unwrap(), vnodes: 1, slots: vec![slot], current: Assignment::new(vec![0]).unwrap(), transition: Transition::Stable }).unwrap() };
//! let source = StaticRingSource::new();
//! let watch = source.watch();
//! assert!(watch.latest().is_none());
//! source.publish(ring(2)).unwrap();
//! assert_eq!(watch.version(), Some(2));
//! // Older (or equal) versions are not taken.
//! assert!(source.publish(ring(1)).is_err());
//! assert_eq!(watch.version(), Some(2));
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::ring::{Ring, RingError};

mod file;
mod kubernetes;
mod publisher;
mod static_source;

pub use self::file::{FileRingSource, FileRingSourceBuilder};
pub use self::kubernetes::{KubeRingSource, KubeRingSourceBuilder};
pub use self::static_source::StaticRingSource;

pub(crate) use self::publisher::RingPublisher;

/// Anything that provides a ring to route by.
pub trait RingSource {
    /// A handle on the source's last good ring; clones are cheap and all see
    /// the same ring.
    fn watch(&self) -> RingWatch;
}

impl RingSource for RingWatch {
    fn watch(&self) -> RingWatch {
        self.clone()
    }
}

impl<T: RingSource + ?Sized> RingSource for &T {
    fn watch(&self) -> RingWatch {
        (**self).watch()
    }
}

impl<T: RingSource + ?Sized> RingSource for Arc<T> {
    fn watch(&self) -> RingWatch {
        (**self).watch()
    }
}

/// The ring a source holds and when it was received.
#[derive(Debug, Clone)]
pub struct HeldRing {
    /// The ring.
    pub ring: Arc<Ring>,
    /// When the source accepted it (`locus_ring_age_seconds` counts from here).
    pub received_at: Instant,
}

/// A reader's handle on a source's last good ring.
///
/// Cloning is cheap; a handle keeps working (with the last ring) after its
/// source is dropped, it just sees no more changes.
#[derive(Debug, Clone)]
pub struct RingWatch {
    rx: watch::Receiver<Option<HeldRing>>,
}

impl RingWatch {
    pub(crate) fn new(rx: watch::Receiver<Option<HeldRing>>) -> Self {
        Self { rx }
    }

    /// The last good ring, if any: an `Arc` clone, no I/O, no waiting on
    /// writers beyond a pointer swap.
    #[inline]
    pub fn latest(&self) -> Option<Arc<Ring>> {
        self.rx.borrow().as_ref().map(|held| Arc::clone(&held.ring))
    }

    /// The last good ring and when it was received.
    pub fn held(&self) -> Option<HeldRing> {
        self.rx.borrow().clone()
    }

    /// Version of the last good ring.
    pub fn version(&self) -> Option<u64> {
        self.rx.borrow().as_ref().map(|held| held.ring.version())
    }

    /// Waits until the source holds a ring of at least `version`, for at
    /// most `within`. Returns that ring, or `None` on timeout (or if the
    /// source is gone and never got there). Wakes on the source's change
    /// notification; never polls.
    pub async fn wait_for_version(&self, version: u64, within: Duration) -> Option<Arc<Ring>> {
        let mut rx = self.rx.clone();
        let wait = rx.wait_for(|held| held.as_ref().is_some_and(|h| h.ring.version() >= version));
        match tokio::time::timeout(within, wait).await {
            Ok(Ok(held)) => held.as_ref().map(|h| Arc::clone(&h.ring)),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Waits until the source holds any ring, for at most `within`.
    pub async fn wait_for_ring(&self, within: Duration) -> Option<Arc<Ring>> {
        self.wait_for_version(0, within).await
    }

    /// Waits for the next change of the held ring. Returns `false` if the
    /// source is gone (no change will ever come).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// What a source has done so far; a watch channel so callers can await a
/// condition (`rejected >= 1`, `accepted >= 1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Rings taken as the new last good ring.
    pub accepted: u64,
    /// Documents ignored because they carried the version already held
    /// (with the same content): re-deliveries, not errors.
    pub unchanged: u64,
    /// Documents refused (malformed, older, conflicting, for another service).
    pub rejected: u64,
    /// Outages: times the source started failing to fetch documents at all
    /// (file unreadable, API server unreachable); each run of consecutive
    /// failures counts once. The last good ring keeps serving throughout.
    pub errors: u64,
    /// Version of the held ring.
    pub version: Option<u64>,
    /// The last refusal or error, as logged.
    pub last_problem: Option<String>,
}

/// Why a source refused a ring or a ring document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The document is not a valid ring.
    #[error(transparent)]
    Invalid(#[from] RingError),
    /// The ring is older than the one held.
    #[error("ring version {offered} is older than the held version {held}")]
    Older {
        /// Version held.
        held: u64,
        /// Version offered.
        offered: u64,
    },
    /// The ring carries the held version with different content: two
    /// publishers, or a publisher that reused a version.
    #[error("ring version {version} differs from the held ring of the same version")]
    Conflict {
        /// The version both carry.
        version: u64,
    },
    /// Same version, same content: nothing to do.
    #[error("ring version {version} is already held")]
    Unchanged {
        /// The version.
        version: u64,
    },
    /// The ring is for another service than the source reads.
    #[error("ring is for service {found}, but this source reads the ring of {expected}")]
    WrongService {
        /// `namespace/service` the source expects.
        expected: String,
        /// `namespace/service` the ring names.
        found: String,
    },
    /// The `ConfigMap` has no `ring.json` key.
    #[error("`ConfigMap` {name} has no key `{key}`")]
    MissingKey {
        /// `namespace/name` of the `ConfigMap`.
        name: String,
        /// The missing key.
        key: &'static str,
    },
}

impl Rejection {
    /// A short, stable label for `locus_ring_documents_rejected_total{reason}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.metric_label(),
            Self::Older { .. } => "older",
            Self::Conflict { .. } => "conflict",
            Self::Unchanged { .. } => "unchanged",
            Self::WrongService { .. } => "service",
            Self::MissingKey { .. } => "missing_key",
        }
    }
}
