//! [`MemberPod`]: the one entry point of a member pod.
//!
//! A pod of a Locus service needs a dozen parts wired in the right order:
//! its name, the ring source, the member (secret, progress reports,
//! snapshot directory) and its start, passivation, the ownership check and
//! the session layer around the application, metrics, a readiness probe,
//! and on SIGTERM a shutdown that hands the sessions over before readiness
//! goes off. [`MemberPod::from_env`] reads what the operator puts in the
//! pod's environment ([`env`](mod@env)), a [`MemberPodBuilder`] overrides any of it,
//! and the [`MemberPod`] it builds gives:
//!
//! * [`MemberPod::layer`]: one [`MemberLayer`] to put around the
//!   application (ownership check, handoff endpoints, in-flight gate,
//!   take-over of gained keys; the probe paths pass through);
//! * [`MemberPod::readiness`]: the [`Readiness`] probe;
//! * [`MemberPod::metrics`]: every metric of the pod, registered once;
//! * [`MemberPod::shutdown`] / [`MemberPod::shutdown_on_signal`]: the
//!   SIGTERM sequence, in its order.
//!
//! ```no_run
//! use axum::routing::{get, get_service, post};
//! use locus::MemberPod;
//! use locus::store::{JsonCodec, SessionStore};
//!
//! # async fn handler() -> &'static str { "" }
//! # async fn example() -> Result<(), locus::BoxError> {
//! let carts = SessionStore::builder(JsonCodec, |cart: &Vec<String>| cart.len()).build()?;
//! let pod = MemberPod::from_env(carts.clone()).build().await?;
//! let metrics = pod.metrics().clone();
//! let app = axum::Router::new()
//!     .route("/cart", post(handler))
//!     .route("/readyz", get_service(pod.readiness()))
//!     .route("/metrics", get(move || async move { metrics.encode() }))
//!     .layer(pod.layer());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, app)
//!     // Serves while the sessions are handed over; then stops.
//!     .with_graceful_shutdown(async move { pod.shutdown_on_signal().await.ok(); })
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod builder;
pub mod env;
mod error;
mod layer;
mod readiness;

use std::fmt;
use std::time::Duration;

use http::Response;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

pub use self::builder::{DEFAULT_PROBE_PATHS, DEFAULT_SHUTDOWN_TIMEOUT, MemberPodBuilder};
pub use self::env::PodEnv;
pub use self::error::PodError;
pub use self::layer::MemberLayer;
pub use self::readiness::Readiness;
use super::{Member, ShutdownReport, StartReport};
use crate::handoff::HandoffBody;
use crate::metrics::Metrics;
use crate::source::{RingSource, RingWatch};
use crate::store::{Persistence, SessionStore, StoreError};

/// A running member pod; see the [module docs](self).
pub struct MemberPod {
    member: Member,
    layer: MemberLayer,
    readiness: Readiness,
    metrics: Metrics,
    ring: RingWatch,
    /// Kept open: dropping a source stops it.
    _source: Box<dyn RingSource + Send + Sync>,
    passivation: JoinHandle<()>,
    started: StartReport,
    shutdown_timeout: Duration,
}

impl fmt::Debug for MemberPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberPod")
            .field("member", &self.member)
            .field("readiness", &self.readiness)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl MemberPod {
    /// A pod over `store`, configured from this process's environment
    /// ([`env`](mod@env)); override any setting on the builder, then
    /// [`build`](MemberPodBuilder::build) it.
    pub fn from_env<V, P>(store: SessionStore<V, P>) -> MemberPodBuilder
    where
        V: Clone + Send + Sync + 'static,
        P: Persistence<V>,
    {
        MemberPodBuilder::new(store, PodEnv::from_process())
    }

    /// [`from_env`](Self::from_env) with the variables `lookup` gives
    /// (tests; a process configured another way).
    pub fn from_lookup<V, P>(
        store: SessionStore<V, P>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> MemberPodBuilder
    where
        V: Clone + Send + Sync + 'static,
        P: Persistence<V>,
    {
        MemberPodBuilder::new(store, PodEnv::from_lookup(lookup))
    }

    /// The layer to put around the application, last (see [`MemberLayer`]).
    pub fn layer(&self) -> MemberLayer {
        self.layer.clone()
    }

    /// The readiness probe.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Every metric of the pod (ring source, ownership layer, store,
    /// handoff), registered once; serve [`Metrics::encode`] on `/metrics`
    /// and register the service's own metrics here.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The member (handoff, driver, progress), for handlers and tests.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The ring this pod serves by.
    pub fn ring(&self) -> RingWatch {
        self.ring.clone()
    }

    /// This pod's name.
    pub fn pod_name(&self) -> &str {
        self.member.pod()
    }

    /// What the start did (the snapshot restored or ignored).
    pub fn started(&self) -> &StartReport {
        &self.started
    }

    /// The answer for a store error in a handler; see
    /// [`Member::error_response`].
    pub fn error_response(&self, error: &StoreError) -> Response<HandoffBody> {
        self.member.error_response(error)
    }

    /// The SIGTERM sequence, within the
    /// [shutdown timeout](MemberPodBuilder::shutdown_timeout). Keep serving
    /// while it runs; stop the HTTP server when it returns. In order:
    ///
    /// 1. passivation stops, so no eviction races the hand-over;
    /// 2. the member shuts down ([`Member::shutdown`]): it stops accepting
    ///    requests as the sessions' owner (503) when its path needs it — at
    ///    once before a snapshot or a hand-over of its own, only after the
    ///    drain when the operator retires the pod — and snapshots or hands
    ///    the sessions over, by the reason the process stops;
    /// 3. readiness goes off — only now: while it hands over, the pod still
    ///    serves, and the operator treats a Ready pod being deleted as an
    ///    eviction to coordinate (a successor warms from it).
    pub async fn shutdown(self) -> ShutdownReport {
        let within = self.shutdown_timeout;
        self.shutdown_within(within).await
    }

    /// [`shutdown`](Self::shutdown) within `within` instead of the
    /// configured timeout (a caller that learns the grace period late).
    pub async fn shutdown_within(self, within: Duration) -> ShutdownReport {
        self.passivation.abort();
        let report = self.member.shutdown(within).await;
        self.readiness.shut();
        report
    }

    /// Waits for SIGTERM (or Ctrl-C), then runs [`shutdown`](Self::shutdown).
    /// The handler is installed when the future is first polled: hand it to
    /// the server (axum's `with_graceful_shutdown`) before serving.
    pub async fn shutdown_on_signal(self) -> Result<ShutdownReport, PodError> {
        let mut terminate = signal(SignalKind::terminate()).map_err(PodError::Signal)?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!(pod = %self.pod_name(), "SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!(pod = %self.pod_name(), "interrupted: shutting down"),
        }
        Ok(self.shutdown().await)
    }
}
