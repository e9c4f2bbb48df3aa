//! [`Member`]: one pod of a Locus service — its handoff endpoints, its
//! transition driver, its progress reports, its session layer, its
//! shutdown.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderValue, Response};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::response;
use super::service::SessionLayer;
use crate::client::SessionKey;
use crate::driver::drain::{self, DrainReport};
use crate::driver::gate::Gate;
use crate::driver::{AbortOnDrop, Driver, plan};
use crate::handoff::{
    HandoffBody, HandoffConfig, HandoffMetrics, HandoffSecret, HandoffService, HandoffState,
    HandoffStats, HttpTransport, SessionTable, Transport,
};
use crate::progress::{NoProgressReporter, Progress, ProgressReporter, ProgressTracker};
use crate::snapshot::{self, SnapshotError, SnapshotHeader, SnapshotRestore, SnapshotWritten};
use crate::source::{RingSource, RingWatch};
use crate::store::{Flush, StoreError};

/// Why a [`Member`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// No handoff secret was given.
    #[error("a handoff secret is required (HandoffSecret::from_env, or given directly)")]
    NoSecret,
    /// The pod name cannot be sent in an HTTP header.
    #[error("pod name `{0}` is not a valid HTTP header value")]
    InvalidPodName(String),
}

/// Options of a [`Member`]; see [`Member::builder`].
pub struct MemberBuilder {
    pod: String,
    ring: RingWatch,
    store: Arc<dyn SessionTable>,
    secret: Option<HandoffSecret>,
    transport: Option<Arc<dyn Transport>>,
    progress: Option<Arc<dyn ProgressReporter>>,
    config: HandoffConfig,
    key: SessionKey,
    snapshot_dir: Option<PathBuf>,
    coordination_wait: Duration,
}

impl fmt::Debug for MemberBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberBuilder")
            .field("pod", &self.pod)
            .field("config", &self.config)
            .field("snapshot_dir", &self.snapshot_dir)
            .finish_non_exhaustive()
    }
}

impl MemberBuilder {
    /// The shared secret of the handoff endpoints (required).
    #[must_use]
    pub fn secret(mut self, secret: HandoffSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// How handoff calls reach other pods (default: [`HttpTransport`]).
    #[must_use]
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Where progress reports go (default: nowhere). In Kubernetes:
    /// [`KubeProgressReporter`](crate::progress::KubeProgressReporter).
    #[must_use]
    pub fn progress(mut self, reporter: impl ProgressReporter) -> Self {
        self.progress = Some(Arc::new(reporter));
        self
    }

    /// Timings and bounds.
    #[must_use]
    pub fn config(mut self, config: HandoffConfig) -> Self {
        self.config = config;
        self
    }

    /// Where the session key comes from (must match the ownership layer
    /// and the callers' routers).
    #[must_use]
    pub fn session_key(mut self, key: SessionKey) -> Self {
        self.key = key;
        self
    }

    /// Enables fast restarts: the snapshot is written here on shutdown and
    /// read back by [`Member::start`].
    #[must_use]
    pub fn snapshot_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.snapshot_dir = Some(dir.into());
        self
    }

    /// Enables fast restarts if `LOCUS_SNAPSHOT_DIR` is set.
    #[must_use]
    pub fn snapshot_dir_from_env(mut self) -> Self {
        if let Some(dir) = std::env::var_os(snapshot::SNAPSHOT_DIR_ENV).filter(|d| !d.is_empty()) {
            self.snapshot_dir = Some(dir.into());
        }
        self
    }

    /// How long [`Member::shutdown`] waits for the operator to start a
    /// transition retiring this pod (an eviction's successor, a scale-down)
    /// before handing its sessions over on its own. Default 5 s; ignored
    /// when a snapshot directory is set (an in-place restart is expected).
    #[must_use]
    pub fn coordination_wait(mut self, wait: Duration) -> Self {
        self.coordination_wait = wait;
        self
    }

    /// Builds the member; nothing runs until [`Member::start`].
    pub fn build(self) -> Result<Member, MemberError> {
        let secret = self.secret.ok_or(MemberError::NoSecret)?;
        let pod_header = HeaderValue::from_str(&self.pod)
            .map_err(|_| MemberError::InvalidPodName(self.pod.clone()))?;
        let transport = self
            .transport
            .unwrap_or_else(|| Arc::new(HttpTransport::default()));
        let gate = Gate::new(self.config.max_in_flight);
        let state = Arc::new(HandoffState::new(
            self.pod,
            pod_header,
            self.ring,
            self.store,
            secret,
            transport,
            self.config,
            HandoffMetrics::default(),
        ));
        Ok(Member {
            inner: Arc::new(MemberInner {
                state,
                gate,
                key: self.key,
                snapshot_dir: self.snapshot_dir,
                coordination_wait: self.coordination_wait,
                reporter: self
                    .progress
                    .unwrap_or_else(|| Arc::new(NoProgressReporter)),
                running: Mutex::new(None),
            }),
        })
    }
}

/// What every clone of a member and its layers share.
pub(crate) struct MemberInner {
    pub(crate) state: Arc<HandoffState>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) key: SessionKey,
    snapshot_dir: Option<PathBuf>,
    coordination_wait: Duration,
    reporter: Arc<dyn ProgressReporter>,
    running: Mutex<Option<Running>>,
}

struct Running {
    driver: Arc<Driver>,
    tracker: ProgressTracker,
    /// Aborted when dropped.
    _tasks: Vec<AbortOnDrop>,
}

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
    inner: Arc<MemberInner>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("pod", &self.inner.state.pod)
            .field("ring_version", &self.inner.state.ring.version())
            .finish_non_exhaustive()
    }
}

/// What [`Member::start`] did.
#[derive(Debug)]
pub struct StartReport {
    /// The snapshot restored, if one was found and accepted.
    pub snapshot: Option<SnapshotRestore>,
    /// Why a snapshot found was ignored.
    pub snapshot_ignored: Option<SnapshotError>,
}

/// Which way [`Member::shutdown`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPath {
    /// The operator retired this pod (successor, scale-down): its sessions
    /// were drained by the transition.
    Coordinated,
    /// A snapshot was written for an in-place restart.
    Snapshot,
    /// Nobody coordinated: the sessions were pushed to the owners the
    /// planner gives with this pod's slot removed.
    Handoff,
    /// This pod served no slot; nothing to hand over.
    Idle,
}

/// What [`Member::shutdown`] did.
#[derive(Debug)]
pub struct ShutdownReport {
    /// The path taken.
    pub path: ShutdownPath,
    /// Sessions handed over (paths `Handoff`).
    pub handed_over: DrainReport,
    /// Sessions written back to the persistence.
    pub flushed: Option<Flush>,
    /// The snapshot written (path `Snapshot`).
    pub snapshot: Option<Result<SnapshotWritten, SnapshotError>>,
    /// Time taken.
    pub took: Duration,
}

impl Member {
    /// A member for pod `pod` (its name as in the ring) reading the ring of
    /// `source`, over `store`.
    pub fn builder(
        pod: impl Into<String>,
        source: impl RingSource,
        store: impl SessionTable,
    ) -> MemberBuilder {
        MemberBuilder {
            pod: pod.into(),
            ring: source.watch(),
            store: Arc::new(store),
            secret: None,
            transport: None,
            progress: None,
            config: HandoffConfig::default(),
            key: SessionKey::default(),
            snapshot_dir: None,
            coordination_wait: Duration::from_secs(5),
        }
    }

    /// This pod's name.
    pub fn pod(&self) -> &str {
        &self.inner.state.pod
    }

    /// The middleware to put inside the ownership layer.
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(Arc::clone(&self.inner))
    }

    /// The handoff endpoints alone (the layer already serves them).
    pub fn handoff_service(&self) -> HandoffService {
        HandoffService::new(Arc::clone(&self.inner.state))
    }

    /// Restores the snapshot if one is configured and present (waiting up to
    /// 10 s for a ring to check it against), then starts the transition
    /// driver and the progress reports. Call it before serving; calling it
    /// again does nothing.
    pub async fn start(&self) -> StartReport {
        let mut report = StartReport {
            snapshot: None,
            snapshot_ignored: None,
        };
        if self.lock_running().is_some() {
            return report;
        }
        if let Some(dir) = &self.inner.snapshot_dir
            && snapshot::path_in(dir).exists()
        {
            let state = &self.inner.state;
            if let Some(ring) = state.ring.wait_for_ring(Duration::from_secs(10)).await {
                match snapshot::restore(Arc::clone(&state.store), dir, &ring, &state.pod).await {
                    Ok(restored) => report.snapshot = restored,
                    Err(error) => report.snapshot_ignored = Some(error),
                }
            } else {
                tracing::warn!("no ring within 10 s: the snapshot is not restored");
            }
        }
        let mut running = self.lock_running();
        if running.is_none() {
            let (tracker, reporting) = ProgressTracker::spawn(
                Arc::clone(&self.inner.reporter),
                Duration::from_millis(200),
            );
            let driver = Driver::new(
                Arc::clone(&self.inner.state),
                tracker.clone(),
                Arc::clone(&self.inner.gate),
            );
            let task = tokio::spawn(Arc::clone(&driver).run());
            *running = Some(Running {
                driver,
                tracker,
                _tasks: vec![AbortOnDrop(task), AbortOnDrop(reporting)],
            });
        }
        report
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops every task of this member at once and refuses new requests:
    /// what a crash does to a process (tests use it to kill a pod).
    pub fn abort(&self) {
        self.inner.gate.close();
        drop(self.lock_running().take());
    }

    /// The progress this member wants reported (maxima).
    pub fn progress(&self) -> Progress {
        self.lock_running()
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

    /// Registers the handoff metrics (see `docs/handoff.md`) into `registry`,
    /// usually the process's `locus`-prefixed one.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.state.metrics.register(registry);
    }

    /// The answer for a store error in a handler: its status with
    /// `Retry-After` where it applies, and for
    /// [`StoreError::Moved`] a 421 naming the new owner and its address.
    pub fn error_response(&self, error: &StoreError) -> Response<HandoffBody> {
        let ring = self.inner.state.ring.latest();
        response::store_error(&self.inner.state.pod_header, error, ring.as_deref())
    }

    /// Shuts the member down within `within` (the pod's termination grace
    /// period, minus a margin). Call it from the service's SIGTERM handler,
    /// keep serving requests while it runs, then exit.
    ///
    /// * With a snapshot directory (fast restart): new requests get 503,
    ///   the requests in flight finish, every session is written to the
    ///   snapshot, then written back to the persistence with the time left.
    /// * Else, if the operator retires this pod (a Warm ring names a
    ///   successor for its slot, or its slot is leaving) within the
    ///   coordination wait: the pod keeps serving; the transition drains its
    ///   sessions; this returns once it owns nothing and drained.
    /// * Else (nobody coordinates): new requests get 503, the requests in
    ///   flight finish, changed sessions are written back, and every session
    ///   is handed off to the pod that owns its shard when this pod's slot is
    ///   removed — computed with the operator's planner
    ///   ([`plan::owners_without`]), the same result the operator's
    ///   `Reroute` will publish — as final records those pods keep aside
    ///   until a Switch ring makes them the owners.
    pub async fn shutdown(&self, within: Duration) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + within;
        let state = Arc::clone(&self.inner.state);
        let mut report = ShutdownReport {
            path: ShutdownPath::Idle,
            handed_over: DrainReport::default(),
            flushed: None,
            snapshot: None,
            took: Duration::ZERO,
        };
        let Some(ring) = state.ring.latest() else {
            self.stop(deadline).await;
            report.flushed = Some(self.flush(deadline).await);
            report.took = started.elapsed();
            return report;
        };
        if let Some(dir) = self.inner.snapshot_dir.clone() {
            self.stop(deadline).await;
            report.path = ShutdownPath::Snapshot;
            if let Some(slot) = plan::serving_slot(&ring, &state.pod) {
                let header = SnapshotHeader::new(&ring, slot, &state.pod);
                report.snapshot = Some(snapshot::write(state.store.as_ref(), &dir, &header).await);
            }
            report.flushed = Some(self.flush(deadline).await);
            state.metrics.phase("shutdown", started.elapsed());
            report.took = started.elapsed();
            return report;
        }
        if self.await_coordination(deadline).await {
            report.path = ShutdownPath::Coordinated;
            self.stop(deadline).await;
            report.flushed = Some(self.flush(deadline).await);
            state.metrics.phase("shutdown", started.elapsed());
            report.took = started.elapsed();
            return report;
        }
        self.stop(deadline).await;
        let ring = state.ring.latest().unwrap_or(ring);
        let slot = plan::serving_slot(&ring, &state.pod);
        // Written back first: whoever ends up owning these sessions (the
        // planner's pick, or a replacement pod of this slot loading cold),
        // the persistence has them.
        report.flushed = Some(self.flush(deadline).await);
        if let Some(slot) = slot {
            report.path = ShutdownPath::Handoff;
            match plan::owners_without(&ring, slot) {
                Ok(plan) => {
                    let mut destinations = drain::Destinations::new();
                    for key in state.store.resident_keys() {
                        if let Some(owner) = plan::owner_in(&ring, &plan.assignment, &key) {
                            destinations
                                .entry(owner.name.clone())
                                .or_insert_with(|| (owner.clone(), Vec::new()))
                                .1
                                .push(key);
                        }
                    }
                    report.handed_over = drain::hand_over(
                        &state,
                        destinations,
                        ring.version(),
                        deadline,
                        "shutdown",
                    )
                    .await;
                    if !report.handed_over.complete() {
                        state.metrics.rolled_forward("shutdown");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "no other slot to hand the sessions to");
                }
            }
        }
        state.metrics.phase("shutdown", started.elapsed());
        report.took = started.elapsed();
        tracing::info!(pod = %state.pod, ?report, "shut down");
        report
    }

    /// Closes the gate, lets the requests in flight finish (bounded), stops
    /// the driver.
    async fn stop(&self, deadline: Instant) {
        self.inner.gate.close();
        let left = deadline.saturating_duration_since(Instant::now());
        if !self.inner.gate.wait_idle(left / 4).await {
            tracing::warn!(pod = %self.inner.state.pod, "requests still in flight at shutdown");
        }
        let running = self.lock_running().take();
        if let Some(running) = running {
            // Let the last reports go out.
            let wanted = running.tracker.wanted();
            let _ = running
                .tracker
                .wait_reported(wanted, Duration::from_millis(500).min(left / 8))
                .await;
            drop(running);
        }
    }

    async fn flush(&self, deadline: Instant) -> Flush {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(flush) = tokio::time::timeout(left, self.inner.state.store.flush()).await {
            flush
        } else {
            tracing::warn!(pod = %self.inner.state.pod, "write-back did not finish before the deadline");
            Flush::default()
        }
    }

    /// Waits (at most the coordination wait) for a ring that retires this
    /// pod; if one comes, waits (until `deadline`) for this pod to own
    /// nothing and to have drained. True if the transition took care of it.
    async fn await_coordination(&self, deadline: Instant) -> bool {
        let state = &self.inner.state;
        let pod = &state.pod;
        let mut watch = state.ring.clone();
        let wait_until = (Instant::now() + self.inner.coordination_wait).min(deadline);
        loop {
            let Some(ring) = watch.latest() else {
                return false;
            };
            if plan::is_retiring(&ring, pod) {
                break;
            }
            if tokio::time::timeout_at(wait_until, watch.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
        tracing::info!(pod = %pod, "shutdown: the operator is retiring this pod; serving until drained");
        let driver = self.lock_running().as_ref().map(|r| Arc::clone(&r.driver));
        loop {
            if let Some(ring) = watch.latest()
                && plan::owns_nothing(&ring, pod)
                && state.store.resident_keys().is_empty()
            {
                // Make sure the drain of this ring has been reported.
                if let Some(driver) = &driver
                    && plan::is_losing(&ring, pod)
                {
                    driver.progress.drained(ring.version());
                }
                return true;
            }
            if tokio::time::timeout_at(deadline, watch.changed())
                .await
                .is_err()
            {
                return true;
            }
        }
    }
}
