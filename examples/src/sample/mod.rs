//! `locus-sample`: a session ledger served the Locus way.
//!
//! Each session (a [`Ledger`]) lives in the memory of the pod that owns its
//! key under the ring; the [`OwnershipLayer`] forwards (or answers 421 for)
//! the keys this pod does not own, and a bounded [`SessionStore`] keeps the
//! sessions, written back to PostgreSQL when it is configured.
//!
//! | request | answer |
//! |---|---|
//! | `POST /sessions/{id}/events` + [`Event`] JSON | 200 [`AppendAnswer`]; 400 bad JSON or header mismatch; 413 body or session too large; 422 refused by the ledger's rules; 429/503 + `Retry-After` past the store's bounds |
//! | `GET /sessions/{id}` | 200 [`SessionView`] |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once a ring is loaded (or while none has been published); 503 before, and while shutting down |
//! | `GET /metrics` | the SDK's `locus_*` metrics, the store's `locus_store_*` and the sample's `sample_*` |
//!
//! The session id is the Locus key: clients send it in
//! [`x-locus-session`](locus::headers::SESSION) (the router routes by it)
//! and the path's `{id}` must be the same (400 otherwise). Session answers
//! carry [`x-locus-pod`](locus::headers::POD) (who answered) and
//! [`x-locus-cache`](CACHE_HEADER): `warm` (the session was in memory),
//! `cold` (it was not: loaded from PostgreSQL, or created) or `stateless`.
//!
//! With [`SampleMode::Stateless`] nothing is kept in memory: every request
//! reads and writes its session in PostgreSQL (one transaction per append),
//! with no ownership check, so any pod behind any load balancer can serve
//! any session — the baseline of the data-locality benchmark.
//!
//! # Transitions: the handoff driver
//!
//! With [`SampleConfig::handoff`] set (in a pod: `LOCUS_HANDOFF_SECRET_FILE`,
//! which the operator always sets), the service is a full Locus member
//! ([`handoff`] module): the SDK's [`Member`] serves the handoff endpoints
//! under [`locus::RESERVED_PATH_PREFIX`], runs the transition driver
//! (pre-copy of the shards this pod gains in a Warm ring, transfer on first
//! touch, drain of the keys it lost), reports progress on the pod's own
//! annotations, restores the snapshot of an in-place restart at start, and on
//! SIGTERM ([`SampleService::drain`]) hands its sessions over while it still
//! serves — or, when its container restarts in the same pod, snapshots them.
//! Moved sessions are then warm on their new owner, and nothing acknowledged
//! is lost even without PostgreSQL.

mod handlers;
pub mod handoff;
mod metrics;
pub mod options;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use http::HeaderValue;
use locus::driver::DrainReport;
use locus::server::session::{Member, MemberPod, ShutdownIntent, ShutdownPath};
use locus::store::{Flush, JsonCodec, Limits};
use locus::{Metrics, Mode, OwnershipLayer, RingSource, RingWatch, SessionStore};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;

use crate::Error;
use crate::ledger::{Ledger, LedgerRules};
use crate::postgres::{LedgerPersistence, PgConfig, Postgres};
use crate::ring_source::{OpenRing, RingSourceConfig};

pub use self::handoff::{HandoffOptions, ProgressTarget, SecretSource};
pub use self::metrics::SampleMetrics;

#[cfg(doc)]
use crate::ledger::{AppendAnswer, Event, SessionView};

/// Response header saying whether the session was in memory.
pub const CACHE_HEADER: http::HeaderName = http::HeaderName::from_static("x-locus-cache");

/// The session store of the sample.
pub type LedgerStore = SessionStore<Ledger, LedgerPersistence>;

/// Where sessions live.
#[derive(Debug, Clone)]
pub enum SampleMode {
    /// In this pod's memory (the session store), behind the ownership
    /// check; written back to PostgreSQL if given.
    InMemory {
        /// The store's persistence; `None`: sessions live in memory only.
        postgres: Option<PgConfig>,
    },
    /// In PostgreSQL only: every request reads and writes its session there.
    Stateless {
        /// The database.
        postgres: PgConfig,
        /// Longest a request may spend in PostgreSQL (503 past it).
        timeout: Duration,
    },
}

/// Everything the sample needs to start.
#[derive(Debug, Clone)]
pub struct SampleConfig {
    /// This pod's name, as the ring names it.
    pub pod: String,
    /// Memory (with optional PostgreSQL) or stateless.
    pub mode: SampleMode,
    /// Where the ring comes from; `None` only in stateless mode.
    pub ring: Option<RingSourceConfig>,
    /// Bounds of the session store.
    pub limits: Limits,
    /// Bounds of each ledger.
    pub rules: LedgerRules,
    /// Largest request body, in bytes (413 past it).
    pub max_event_bytes: usize,
    /// Forward requests for keys owned elsewhere, or answer 421.
    pub ownership: Mode,
    /// Take part in transitions (in-memory mode with a ring): handoff
    /// endpoints, transition driver, progress, drain and snapshot. `None`:
    /// a pod that loses shards keeps nothing warm for their new owner.
    pub handoff: Option<HandoffOptions>,
    /// Fault injection for tests: an append carrying
    /// [`STALL_HEADER`] (milliseconds, at most [`MAX_STALL`]) waits that
    /// long after admission, before it touches its session — a handler
    /// that stalls while the ring changes. Off unless asked for.
    pub test_stall: bool,
}

/// Request header of the test stall (see [`SampleConfig::test_stall`]).
pub const STALL_HEADER: &str = "x-sample-stall-ms";

/// Longest test stall.
pub const MAX_STALL: Duration = Duration::from_secs(300);

impl SampleConfig {
    /// A memory-only sample for `pod` reading its ring from `ring`, with
    /// the default bounds.
    pub fn new(pod: impl Into<String>, ring: RingSourceConfig) -> Self {
        Self {
            pod: pod.into(),
            mode: SampleMode::InMemory { postgres: None },
            ring: Some(ring),
            limits: Limits::default(),
            rules: LedgerRules::default(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            ownership: Mode::Forward,
            handoff: None,
            test_stall: false,
        }
    }
}

/// Default largest request body.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4096;

/// Where requests are served from.
pub(crate) enum Backend {
    Memory(LedgerStore),
    Stateless { pg: Postgres, timeout: Duration },
}

/// What the handlers share.
pub(crate) struct AppState {
    pub(crate) backend: Backend,
    pub(crate) rules: LedgerRules,
    pub(crate) max_key_bytes: usize,
    pub(crate) pod: HeaderValue,
    pub(crate) metrics: Metrics,
    pub(crate) sample: SampleMetrics,
    /// The ring this pod serves by.
    pub(crate) ring: Option<RingWatch>,
    /// The ring source the sample opened itself (without the handoff
    /// driver); readiness asks it whether a ring exists.
    pub(crate) open_ring: Option<Arc<OpenRing>>,
    /// The SDK's readiness probe, when the sample is a Locus member.
    pub(crate) readiness: Option<locus::server::session::Readiness>,
    pub(crate) draining: AtomicBool,
    /// Sessions are written back to PostgreSQL.
    pub(crate) persistent: bool,
    /// The Locus member, when the sample takes part in transitions (its
    /// answers to store errors).
    pub(crate) member: Option<Member>,
    /// Honour [`STALL_HEADER`].
    pub(crate) test_stall: bool,
}

/// The running sample: its HTTP app and the parts a handoff driver needs.
pub struct SampleService {
    router: Router,
    state: Arc<AppState>,
    /// The Locus side of the pod; the member pod is taken by the drain.
    locus: AsyncMutex<Locus>,
    /// What [`SampleService::drain`] did, once it ran.
    drained: AsyncMutex<Option<ShutdownReport>>,
}

impl std::fmt::Debug for SampleService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleService")
            .field("pod", &self.state.pod)
            .field("ring_version", &self.ring().and_then(|r| r.version()))
            .finish_non_exhaustive()
    }
}

/// The Locus side of the sample's stack.
enum Locus {
    /// Stateless: no owner, nothing to hand over.
    None,
    /// In memory without the handoff driver: the ownership check alone.
    Ownership {
        layer: OwnershipLayer,
        passivation: JoinHandle<()>,
    },
    /// A Locus member: the SDK's entry point (until the drain takes it).
    Member(Box<MemberPod>),
    /// The member after its drain.
    Drained,
}

/// Turns the sample's readiness off; clones share the switch.
#[derive(Clone)]
pub struct Readiness {
    state: Arc<AppState>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("shut", &self.is_shut())
            .finish()
    }
}

impl Readiness {
    /// From now on `/readyz` answers 503.
    pub fn shut(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`shut`](Self::shut) was called.
    pub fn is_shut(&self) -> bool {
        self.state.draining.load(Ordering::SeqCst)
    }
}

/// What [`SampleService::shutdown`] (and [`SampleService::drain`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Changed sessions written back to PostgreSQL, and failures (zero
    /// without PostgreSQL).
    pub flush: Flush,
    /// Sessions that end with the process: resident sessions when there is
    /// no PostgreSQL to write them to and nobody took them over.
    pub dropped: usize,
    /// With the handoff driver: the way the member shut down.
    pub path: Option<ShutdownPath>,
    /// With the handoff driver: sessions pushed to other pods on the way
    /// out (path `Handoff`).
    pub handed_over: DrainReport,
    /// With a snapshot directory: sessions written to the snapshot.
    pub snapshot_sessions: Option<u64>,
    /// With a snapshot directory: why the process stopped (restart in the
    /// same pod, or the pod going away), as given or read from the pod;
    /// `None` if it was not needed or could not be found (then the snapshot
    /// was written).
    pub intent: Option<ShutdownIntent>,
}

impl SampleService {
    /// Connects to PostgreSQL (if configured), builds the session store and
    /// its metrics, opens the ring source and assembles the app.
    pub async fn new(config: SampleConfig) -> Result<Self, Error> {
        let SampleConfig {
            pod,
            mode,
            ring,
            limits,
            rules,
            max_event_bytes,
            ownership,
            handoff,
            test_stall,
        } = config;
        let pod_header = HeaderValue::from_str(&pod)
            .map_err(|_| Error::config("pod name", format!("{pod:?} is not a header value")))?;
        let metrics = Metrics::new();
        let sample = SampleMetrics::new();
        sample.register(&metrics);
        let max_key_bytes = limits.max_key_bytes();
        let persistent = matches!(
            mode,
            SampleMode::InMemory { postgres: Some(_) } | SampleMode::Stateless { .. }
        );
        let (backend, ring, locus) = match (mode, ring, handoff) {
            (SampleMode::Stateless { postgres, timeout }, ring, _) => {
                let pg = Postgres::connect(postgres).await?;
                let ring = match ring {
                    Some(config) => Some(Arc::new(config.open(&metrics).await?)),
                    None => None,
                };
                (Backend::Stateless { pg, timeout }, ring, Locus::None)
            }
            (SampleMode::InMemory { .. }, None, _) => {
                return Err(Error::config(
                    "ring source",
                    "the in-memory sample needs a ring (--ring-file, or LOCUS_RING_CONFIGMAP and POD_NAMESPACE)",
                ));
            }
            (SampleMode::InMemory { postgres }, Some(ring), handoff) => {
                let store = SessionStore::builder(JsonCodec, Ledger::weight)
                    .limits(limits)
                    .persistence(match postgres {
                        Some(pg) => LedgerPersistence::Postgres(Postgres::connect(pg).await?),
                        None => LedgerPersistence::None,
                    })
                    .build()?;
                if let Some(options) = handoff {
                    // A Locus member: the SDK's entry point does the rest.
                    let member = options
                        .member_pod(&pod, &store, &ring, ownership, max_key_bytes, &metrics)
                        .await?;
                    (
                        Backend::Memory(store),
                        None,
                        Locus::Member(Box::new(member)),
                    )
                } else {
                    let (ring, locus) =
                        ownership_only(&pod, &store, ring, ownership, max_key_bytes, &metrics)
                            .await?;
                    (Backend::Memory(store), Some(ring), locus)
                }
            }
        };
        if let Some(ring) = &ring {
            tracing::info!(%pod, source = %ring.describe(), "ring source open");
        }
        let member_pod = match &locus {
            Locus::Member(member) => Some(member.as_ref()),
            _ => None,
        };
        let state = Arc::new(AppState {
            backend,
            rules,
            max_key_bytes,
            pod: pod_header,
            metrics,
            sample,
            ring: ring
                .as_ref()
                .map(|r| RingSource::watch(r.as_ref()))
                .or_else(|| member_pod.map(MemberPod::ring)),
            open_ring: ring,
            readiness: member_pod.map(MemberPod::readiness),
            draining: AtomicBool::new(false),
            persistent,
            member: member_pod.map(|m| m.member().clone()),
            test_stall,
        });
        let router = app(Arc::clone(&state), &locus, max_event_bytes);
        Ok(Self {
            router,
            state,
            locus: AsyncMutex::new(locus),
            drained: AsyncMutex::new(None),
        })
    }

    /// The Locus member (handoff endpoints, transition driver), when the
    /// sample takes part in transitions.
    pub fn member(&self) -> Option<&Member> {
        self.state.member.as_ref()
    }

    /// The HTTP app (cheap to clone); serve it with `axum::serve`.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The session store (in-memory mode).
    pub fn store(&self) -> Option<&LedgerStore> {
        match &self.state.backend {
            Backend::Memory(store) => Some(store),
            Backend::Stateless { .. } => None,
        }
    }

    /// The ring this pod serves by (none in stateless mode without a ring).
    pub fn ring(&self) -> Option<RingWatch> {
        self.state.ring.clone()
    }

    /// The process's metrics (the `/metrics` registry).
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Starts refusing readiness (`/readyz` answers 503) while requests in
    /// flight finish; call it when SIGTERM arrives.
    pub fn begin_shutdown(&self) {
        self.readiness().shut();
    }

    /// A handle that turns readiness off, for a signal handler that runs
    /// apart from the service.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            state: Arc::clone(&self.state),
        }
    }

    /// What SIGTERM calls while the HTTP server still serves, when the
    /// sample takes part in transitions: the member's shutdown within
    /// `within` (the pod's termination grace period minus a margin) — a
    /// snapshot when the container restarts in the same pod (in-place
    /// update), else the transition's drain when the operator retires this
    /// pod (a pod being deleted, with or without a snapshot volume), else a
    /// hand-over of every session to the pods that take its shards. Without
    /// the handoff driver it only turns readiness off. Runs once; later calls
    /// return the first report.
    pub async fn drain(&self, within: Duration) -> ShutdownReport {
        let mut drained = self.drained.lock().await;
        if let Some(report) = *drained {
            return report;
        }
        let mut locus = self.locus.lock().await;
        let Locus::Member(member) = std::mem::replace(&mut *locus, Locus::Drained) else {
            self.begin_shutdown();
            return ShutdownReport::default();
        };
        // The SDK's SIGTERM sequence: passivation stops, the member hands
        // its sessions over (or snapshots them) while this pod still
        // serves, and only then readiness goes off (the operator treats a
        // Ready pod being deleted as an eviction to coordinate).
        let done = member.shutdown_within(within).await;
        self.begin_shutdown();
        let report = ShutdownReport {
            flush: done.flushed.unwrap_or_default(),
            dropped: if self.state.persistent || done.path != ShutdownPath::Idle {
                0
            } else {
                self.store().map_or(0, |s| s.stats().sessions)
            },
            path: Some(done.path),
            handed_over: done.handed_over,
            snapshot_sessions: done
                .snapshot
                .as_ref()
                .and_then(|r| r.as_ref().ok())
                .map(|w| w.records),
            intent: done.intent.as_ref().and_then(|i| i.as_ref().ok()).copied(),
        };
        tracing::info!(
            path = ?done.path,
            intent = ?done.intent,
            handed_over = ?done.handed_over,
            flushed = ?done.flushed,
            snapshot = ?done.snapshot,
            took = ?done.took,
            "sessions handed over"
        );
        *drained = Some(report);
        report
    }

    /// Ends the service after the HTTP server stopped: stops passivation and
    /// writes every changed session back to PostgreSQL; without PostgreSQL
    /// the resident sessions end with the process (counted in the report).
    /// With the handoff driver, after [`drain`](Self::drain) this only
    /// returns its report; without a drain first, it runs it now (nothing
    /// can reach this pod any more, so only the push to other pods helps).
    pub async fn shutdown(self) -> ShutdownReport {
        if self.state.member.is_some() {
            return self.drain(DEFAULT_SHUTDOWN_TIMEOUT).await;
        }
        self.begin_shutdown();
        if let Locus::Ownership { passivation, .. } = &*self.locus.lock().await {
            passivation.abort();
        }
        let store = match &self.state.backend {
            Backend::Memory(store) => store,
            Backend::Stateless { .. } => return ShutdownReport::default(),
        };
        if !self.state.persistent {
            let dropped = store.stats().sessions;
            tracing::info!(
                sessions = dropped,
                "no persistence: resident sessions end with the process"
            );
            return ShutdownReport {
                dropped,
                ..ShutdownReport::default()
            };
        }
        let flush = store.flush().await;
        if flush.failed > 0 {
            tracing::warn!(
                written = flush.written,
                failed = flush.failed,
                "sessions not written back at shutdown"
            );
        } else {
            tracing::info!(written = flush.written, "sessions written back at shutdown");
        }
        ShutdownReport {
            flush,
            ..ShutdownReport::default()
        }
    }
}

/// In memory without the handoff driver: the store's metrics and
/// passivation, the ring source and the ownership check, wired here.
async fn ownership_only(
    pod: &str,
    store: &LedgerStore,
    ring: RingSourceConfig,
    mode: Mode,
    max_key_bytes: usize,
    metrics: &Metrics,
) -> Result<(Arc<OpenRing>, Locus), Error> {
    metrics.register_with(|registry| {
        store.register_metrics(registry.sub_registry_with_prefix("locus"));
    });
    let passivation = store.spawn_passivation();
    let ring = Arc::new(ring.open(metrics).await?);
    let layer = OwnershipLayer::builder(pod, ring.watch())
        .mode(mode)
        .max_key_bytes(max_key_bytes)
        .metrics(metrics.clone())
        .build()?;
    Ok((ring, Locus::Ownership { layer, passivation }))
}

/// Longest [`SampleService::drain`] when nobody says otherwise: under the
/// default 30 s termination grace period of a pod.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);

/// The sample's HTTP stack, assembled in this one place.
///
/// Session routes, innermost first:
/// 1. the handlers (append, read);
/// 2. a body limit, so an oversized event is refused (413) before it is
///    buffered.
///
/// The operational routes (`/healthz`, `/readyz`, `/metrics`) carry no
/// session key and sit beside them. Then, around everything:
/// * a Locus member: the SDK's one layer ([`MemberPod::layer`]) — the
///   ownership check (forward or 421 before any body is read; the
///   operational routes pass), the handoff endpoints under `/_locus/`, the
///   in-flight gate and the take-over of gained keys;
/// * in memory without the handoff driver: the ownership check alone, on
///   the session routes;
/// * stateless: there is no owner; a small layer only stamps `x-locus-pod`
///   on session answers.
fn app(state: Arc<AppState>, locus: &Locus, max_event_bytes: usize) -> Router {
    let sessions = Router::new()
        .route("/sessions/{id}", get(handlers::read))
        .route("/sessions/{id}/events", post(handlers::append))
        .layer(DefaultBodyLimit::max(max_event_bytes));
    let sessions = match locus {
        Locus::Ownership { layer, .. } => sessions.layer(layer.clone()),
        Locus::None => sessions.layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            handlers::stamp_pod,
        )),
        Locus::Member(_) | Locus::Drained => sessions,
    };
    let app = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .merge(sessions)
        .with_state(state);
    match locus {
        Locus::Member(member) => app.layer(member.layer()),
        _ => app,
    }
}
