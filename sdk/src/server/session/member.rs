//! [`Member`]: one pod of a Locus service — its handoff endpoints, its
//! transition driver, its progress reports, its session layer, its
//! shutdown.
//!
//! The member is cut by concern: its options in [`builder`](super::builder),
//! [`Member::start`] in [`lifecycle`](super::lifecycle), [`Member::shutdown`]
//! in [`shutdown`](super::shutdown), what they share in
//! [`inner`](super::inner). [`MemberPod`](super::MemberPod) builds one from
//! the pod's environment.

use std::fmt;
use std::sync::Arc;

use http::Response;
use prometheus_client::registry::Registry;

use super::inner::MemberInner;
use super::response;
use super::service::SessionLayer;
use crate::handoff::{HandoffBody, HandoffStats};
use crate::progress::Progress;
use crate::store::StoreError;

/// One pod of a Locus service: handoff endpoints, transition driver,
/// progress reports, session layer, shutdown. Clones share it.
///
/// ```text
/// let member = Member::builder(pod, &source, store.clone()).secret(secret).build()?;
/// member.start().await;                       // restore a snapshot, start the driver
/// let app = router.layer(member.layer()).layer(ownership);
/// // serve `app`; on SIGTERM:
/// member.shutdown(grace_period).await;
/// ```
///
/// The crate documentation has the complete, compiled example.
#[derive(Clone)]
pub struct Member {
    pub(super) inner: Arc<MemberInner>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("pod", &self.inner.state.pod)
            .field("ring_version", &self.inner.state.ring.version())
            .finish_non_exhaustive()
    }
}

impl Member {
    pub(super) fn from_inner(inner: Arc<MemberInner>) -> Self {
        Self { inner }
    }

    /// This pod's name.
    pub fn pod(&self) -> &str {
        &self.inner.state.pod
    }

    /// The middleware to put inside the ownership layer.
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(Arc::clone(&self.inner))
    }

    /// Stops every task of this member at once and refuses new requests:
    /// what a crash does to a process (tests use it to kill a pod).
    pub fn abort(&self) {
        self.inner.gate.close();
        drop(self.inner.lock_running().take());
    }

    /// The progress this member wants reported (maxima).
    pub fn progress(&self) -> Progress {
        self.inner
            .lock_running()
            .as_ref()
            .map(|r| r.tracker.wanted())
            .unwrap_or_default()
    }

    /// Counts of what the handoff code did.
    pub fn stats(&self) -> HandoffStats {
        self.inner.state.metrics.stats()
    }

    /// Requests in flight through the session layer.
    pub fn in_flight(&self) -> usize {
        self.inner.gate.in_flight()
    }

    /// Registers the handoff metrics (see `docs/handoff.md`) and the load
    /// metrics ([`load::metrics`](crate::load::metrics)) into `registry`,
    /// usually the process's `locus`-prefixed one.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.state.metrics.register(registry);
        self.inner.load.metrics.register(registry);
    }

    /// Requests and body bytes this pod served as the owner of their key
    /// since it started ([`load`](crate::load)).
    pub fn load_totals(&self) -> (u64, u64) {
        self.inner.load.counters.totals()
    }

    /// The answer for a store error in a handler: its status with
    /// `Retry-After` where it applies, and for
    /// [`StoreError::Moved`] a 421 naming the new owner and its address.
    pub fn error_response(&self, error: &StoreError) -> Response<HandoffBody> {
        let ring = self.inner.state.ring.latest();
        response::store_error(&self.inner.state.pod_header, error, ring.as_deref())
    }
}
