//! How the sample takes part in ring transitions: the SDK's [`Member`]
//! (handoff endpoints, transition driver, progress reports, drain on
//! SIGTERM, snapshot restore) set up from [`HandoffOptions`].
//!
//! In a pod the operator gives everything this needs:
//! `LOCUS_HANDOFF_SECRET_FILE` (the per-service secret the handoff endpoints
//! authenticate with), `POD_NAMESPACE` and `POD_NAME` (progress is reported
//! on the pod's own annotations) and, with `spec.snapshot`,
//! `LOCUS_SNAPSHOT_DIR` (the memory-backed volume of in-place restarts).
//!
//! With a snapshot volume, SIGTERM reads the pod's own Pod through the same
//! client as the progress reports: a pod being deleted (eviction, drain,
//! replacement, scale-down) hands its sessions over, since the volume goes
//! with it; a container restarted in the same pod (in-place update) writes
//! the snapshot. [`HandoffOptions::shutdown_intent`] says it instead, for a
//! sample run outside Kubernetes.

use std::path::PathBuf;
use std::time::Duration;

use locus::handoff::{HandoffConfig, HandoffSecret};
use locus::progress::{KubeProgressReporter, MemoryProgressReporter};
use locus::server::session::{Member, ShutdownIntent};
use locus::source::RingSource;

use super::LedgerStore;
use crate::Error;
use crate::ring_source::kube_client;

/// Where the handoff secret comes from.
#[derive(Clone)]
pub enum SecretSource {
    /// A file holding it (the operator mounts the Secret `<service>-handoff`).
    File(PathBuf),
    /// The secret itself (tests, embedding).
    Value(HandoffSecret),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Value(_) => f.write_str("Value(..)"),
        }
    }
}

/// Where the pod's progress (observed, warmed, drained ring versions) goes.
#[derive(Debug, Clone)]
pub enum ProgressTarget {
    /// Nowhere: nobody waits for it (a ring file played by hand).
    None,
    /// The pod's own annotations, patched through the API server (what the
    /// operator watches). The pod's name is the sample's pod name.
    Kube {
        /// The pod's namespace.
        namespace: String,
        /// A kubeconfig file; `None`: in-cluster credentials (or
        /// `$KUBECONFIG`).
        kubeconfig: Option<PathBuf>,
    },
    /// A watch channel a test plays the operator with.
    Memory(MemoryProgressReporter),
}

/// The handoff part of the sample's configuration.
#[derive(Debug, Clone)]
pub struct HandoffOptions {
    /// The shared secret of the handoff endpoints.
    pub secret: SecretSource,
    /// Where progress reports go.
    pub progress: ProgressTarget,
    /// Fast restarts: the snapshot written on SIGTERM and restored at
    /// start (`LOCUS_SNAPSHOT_DIR`).
    pub snapshot_dir: Option<PathBuf>,
    /// How long a pod that got SIGTERM waits for the operator to start the
    /// transition retiring it before handing its sessions over on its own.
    pub coordination_wait: Duration,
    /// Why SIGTERM stops the process, when the caller knows (a sample run
    /// outside Kubernetes): restart with the snapshot, or retire and hand
    /// the sessions over. `None`: with [`ProgressTarget::Kube`], the pod's
    /// own Pod tells (`deletionTimestamp`); otherwise the snapshot is written
    /// (with a warning), as for a restart.
    pub shutdown_intent: Option<ShutdownIntent>,
    /// The protocol's timings and bounds.
    pub config: HandoffConfig,
}

/// Default of [`HandoffOptions::coordination_wait`]: long enough for an
/// evicted pod's replacement to start and turn Ready.
pub const DEFAULT_COORDINATION_WAIT: Duration = Duration::from_secs(15);

impl HandoffOptions {
    /// Options with the secret from `secret`, no progress reports, no
    /// snapshot and the default timings.
    pub fn new(secret: SecretSource) -> Self {
        Self {
            secret,
            progress: ProgressTarget::None,
            snapshot_dir: None,
            coordination_wait: DEFAULT_COORDINATION_WAIT,
            shutdown_intent: None,
            config: HandoffConfig::default(),
        }
    }

    /// Builds and starts the member of pod `pod` over `store`, reading the
    /// ring of `ring`: a snapshot of an in-place restart is back in the
    /// store, and the driver runs, when this returns (call it before
    /// serving).
    pub(crate) async fn start(
        self,
        pod: &str,
        ring: &impl RingSource,
        store: &LedgerStore,
    ) -> Result<Member, Error> {
        let member = self.member(pod, ring, store).await?;
        let started = member.start().await;
        if let Some(restored) = &started.snapshot {
            tracing::info!(?restored, "snapshot restored");
        }
        if let Some(ignored) = &started.snapshot_ignored {
            tracing::warn!(%ignored, "snapshot found but not restored");
        }
        tracing::info!(%pod, "handoff driver running");
        Ok(member)
    }

    /// Builds the member of pod `pod` over `store`, reading the ring of
    /// `ring`. Nothing runs until [`Member::start`].
    async fn member(
        self,
        pod: &str,
        ring: &impl RingSource,
        store: &LedgerStore,
    ) -> Result<Member, Error> {
        let secret = match self.secret {
            SecretSource::File(path) => HandoffSecret::from_file(&path).map_err(|e| {
                Error::config(
                    "handoff secret",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?,
            SecretSource::Value(secret) => secret,
        };
        let mut builder = Member::builder(pod, ring.watch(), store.clone())
            .secret(secret)
            .config(self.config)
            .coordination_wait(self.coordination_wait);
        if let Some(dir) = self.snapshot_dir {
            builder = builder.snapshot_dir(dir);
        }
        // Set after the progress reporter it would otherwise come from.
        let intent = self.shutdown_intent;
        builder = match self.progress {
            ProgressTarget::None => builder,
            ProgressTarget::Kube {
                namespace,
                kubeconfig,
            } => {
                let client = kube_client(kubeconfig.as_deref()).await?;
                builder.progress(KubeProgressReporter::new(client, namespace, pod))
            }
            ProgressTarget::Memory(reporter) => builder.progress(reporter),
        };
        if let Some(intent) = intent {
            builder = builder.shutdown_intent(intent);
        }
        builder
            .build()
            .map_err(|e| Error::config("handoff", e.to_string()))
    }
}
