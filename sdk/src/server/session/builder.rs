//! [`MemberBuilder`]: the options of a [`Member`] and their checks.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;

use super::inner::MemberInner;
use super::member::Member;
use crate::client::SessionKey;
use crate::driver::gate::Gate;
use crate::handoff::{
    HandoffConfig, HandoffMetrics, HandoffSecret, HandoffState, HttpTransport, SessionTable,
    Transport,
};
use crate::intent::ShutdownIntentSource;
use crate::load::{DEFAULT_LOAD_REPORT_INTERVAL, PodLoad};
use crate::progress::{NoProgressReporter, ProgressReporter};
use crate::snapshot;
use crate::source::{RingSource, RingWatch};

/// Default of [`MemberBuilder::coordination_wait`].
pub const DEFAULT_COORDINATION_WAIT: Duration = Duration::from_secs(5);

/// Default of [`MemberBuilder::intent_timeout`].
pub const DEFAULT_INTENT_TIMEOUT: Duration = Duration::from_secs(2);

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
    intent: Option<Arc<dyn ShutdownIntentSource>>,
    intent_timeout: Duration,
    load_report_interval: Duration,
}

impl fmt::Debug for MemberBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberBuilder")
            .field("pod", &self.pod)
            .field("config", &self.config)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("load_report_interval", &self.load_report_interval)
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

    /// How handoff calls reach other pods (default: HTTP).
    ///
    /// Not part of the supported API (the transport is the crate's own
    /// business): the crate's simulation plugs an in-memory network in here
    /// through [`internal::Transport`](crate::internal::Transport).
    #[doc(hidden)]
    #[must_use]
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Where progress reports go (default: nowhere). In Kubernetes:
    /// [`KubeProgressReporter`](crate::progress::KubeProgressReporter),
    /// which also tells [`Member::shutdown`] whether the pod is being deleted
    /// (unless [`shutdown_intent`](Self::shutdown_intent) says otherwise).
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

    /// Enables fast restarts: the snapshot is written here on a shutdown
    /// that restarts the process in the same pod ([`ShutdownIntent`](crate::server::session::ShutdownIntent)) and
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
    /// before handing its sessions over on its own. Default 5 s; not used
    /// when the shutdown writes a snapshot (a restart in the same pod).
    #[must_use]
    pub fn coordination_wait(mut self, wait: Duration) -> Self {
        self.coordination_wait = wait;
        self
    }

    /// Where [`Member::shutdown`] learns why the process stops, when a
    /// snapshot directory is set: a fixed [`ShutdownIntent`](crate::server::session::ShutdownIntent) (a process
    /// outside Kubernetes that knows), or any [`ShutdownIntentSource`].
    /// Default: the progress reporter's
    /// ([`KubeProgressReporter`](crate::progress::KubeProgressReporter)
    /// reads the pod's own Pod), else none — the snapshot is written, with a
    /// warning.
    #[must_use]
    pub fn shutdown_intent(mut self, source: impl ShutdownIntentSource) -> Self {
        self.intent = Some(Arc::new(source));
        self
    }

    /// Longest wait for the [`ShutdownIntent`](crate::server::session::ShutdownIntent) on shutdown (also at most a
    /// quarter of the shutdown's time); past it the snapshot is written, as
    /// when the intent is unknown. Default 2 s.
    #[must_use]
    pub fn intent_timeout(mut self, timeout: Duration) -> Self {
        self.intent_timeout = timeout;
        self
    }

    /// Time between two [load reports](crate::load) through the progress
    /// reporter (default 15 s; zero: none — the counters and their metrics
    /// stay). Only a reporter that
    /// [takes load](crate::progress::ProgressReporter::takes_load) gets them.
    #[must_use]
    pub fn load_report_interval(mut self, interval: Duration) -> Self {
        self.load_report_interval = interval;
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
        let intent = self.intent.or_else(|| {
            self.progress
                .as_ref()
                .and_then(ProgressReporter::intent_source)
        });
        // Loads only of keys this pod owns under its latest ring: a request
        // admitted under an older ring must not load a key that was handed
        // off (whatever became of its tombstone). What it loads or installs
        // is written back under that ring's version, its ownership epoch
        // (before any ring: epoch 0, which any stored epoch fences).
        let watch = self.ring.clone();
        let me: Arc<str> = self.pod.as_str().into();
        let guard_pod = Arc::clone(&me);
        let guarded = self.store.guard_loads(Arc::new(move |key: &[u8]| {
            let Some(ring) = watch.latest() else {
                return Ok(0);
            };
            let owner = &ring.owner(key).pod.name;
            if owner.as_str() == &*guard_pod {
                Ok(ring.version())
            } else {
                Err(Arc::from(owner.as_str()))
            }
        }));
        if !guarded {
            tracing::warn!(pod = %me, "the store already has a load guard (a second member on it?)");
        }
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
        Ok(Member::from_inner(Arc::new(MemberInner {
            state,
            gate,
            key: self.key,
            load: Arc::new(PodLoad::default()),
            load_report_interval: self.load_report_interval,
            snapshot_dir: self.snapshot_dir,
            coordination_wait: self.coordination_wait,
            intent,
            intent_timeout: self.intent_timeout,
            reporter: self
                .progress
                .unwrap_or_else(|| Arc::new(NoProgressReporter)),
            running: Mutex::new(None),
            started: tokio::sync::Mutex::new(false),
        })))
    }
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
            coordination_wait: DEFAULT_COORDINATION_WAIT,
            intent: None,
            intent_timeout: DEFAULT_INTENT_TIMEOUT,
            load_report_interval: DEFAULT_LOAD_REPORT_INTERVAL,
        }
    }
}
