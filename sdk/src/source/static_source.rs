//! An in-memory ring source: whoever holds it publishes rings by hand.
//!
//! Tests use it to play the operator's role; a process with a fixed
//! membership can use it with one ring for its whole life.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Rejection, RingPublisher, RingSource, RingWatch, SourceStatus};
use crate::metrics::Metrics;
use crate::ring::Ring;

/// A ring source fed by [`StaticRingSource::publish`]. Clones share the ring.
#[derive(Clone)]
pub struct StaticRingSource {
    publisher: Arc<RingPublisher>,
}

impl fmt::Debug for StaticRingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticRingSource")
            .field("version", &self.publisher.watch().version())
            .finish()
    }
}

impl Default for StaticRingSource {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticRingSource {
    /// A source holding no ring yet.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A source holding no ring yet that counts into `metrics`.
    pub fn with_metrics(metrics: Metrics) -> Self {
        Self::build(Some(metrics))
    }

    /// A source holding `ring`.
    pub fn with_ring(ring: Ring) -> Self {
        let source = Self::new();
        // A fresh source takes any valid ring.
        let _ = source.publish(ring);
        source
    }

    fn build(metrics: Option<Metrics>) -> Self {
        Self {
            publisher: Arc::new(RingPublisher::new("static".to_owned(), None, metrics)),
        }
    }

    /// Publishes `ring` if it is newer than the held one. Returns the new
    /// version, or why it was refused (the held ring stays).
    pub fn publish(&self, ring: Ring) -> Result<u64, Rejection> {
        self.publisher.offer(ring)
    }

    /// Parses a ring document and publishes it; a malformed document is
    /// refused (logged, counted) and the held ring stays.
    pub fn publish_document(&self, document: &[u8]) -> Result<u64, Rejection> {
        self.publisher.offer_document(document)
    }

    /// What the source has done so far.
    pub fn status(&self) -> watch::Receiver<SourceStatus> {
        self.publisher.status()
    }
}

impl RingSource for StaticRingSource {
    fn watch(&self) -> RingWatch {
        self.publisher.watch()
    }
}
