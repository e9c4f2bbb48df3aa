//! How the sample takes part in ring transitions: the SDK's entry point,
//! [`MemberPod`] (handoff endpoints, transition driver,
//! progress reports, drain on SIGTERM, snapshot restore), set up from
//! [`HandoffOptions`].
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
use locus::server::session::{MemberPod, MemberPodBuilder, ShutdownIntent};
use locus::{Metrics, Mode};

use super::LedgerStore;
use crate::Error;
use crate::ring_source::{RingSourceConfig, kube_client};

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
    /// Time between the pod's per-shard load reports (`None`: the SDK's
    /// default, 15 s; zero: none).
    pub load_report_interval: Option<Duration>,
}

/// Default of [`HandoffOptions::coordination_wait`]: long enough for an
/// evicted pod's replacement to start and turn Ready. The SDK's default
/// (5 s) suits a pod whose successor starts fast; on the local cluster a
/// surge pod of the sample needs longer to be scheduled, start and pass its
/// readiness probe before the operator publishes the Warm ring naming it,
/// and a pod that stops waiting too early hands its sessions to the other
/// slots instead of its successor (a cold reroute, not a warm replacement).
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
            load_report_interval: None,
        }
    }

    /// The SDK's entry point for pod `name` over `store`, reading the ring
    /// of `ring`, with these options: a snapshot of an in-place restart is
    /// back in the store, and the driver runs, when this returns (call it
    /// before serving). Every metric goes to `metrics`.
    pub(crate) async fn member_pod(
        self,
        name: &str,
        store: &LedgerStore,
        ring: &RingSourceConfig,
        mode: Mode,
        max_key_bytes: usize,
        metrics: &Metrics,
    ) -> Result<MemberPod, Error> {
        let builder = MemberPod::from_lookup(store.clone(), |_| None)
            .pod_name(name)
            .metrics(metrics.clone())
            .mode(mode)
            .max_key_bytes(max_key_bytes);
        let builder = match ring {
            RingSourceConfig::Kube {
                namespace,
                service,
                kubeconfig,
            } => builder
                .kube_ring(namespace, service)
                .kube_client(kube_client(kubeconfig.as_deref()).await?),
            other => builder.ring_source(other.clone().open(metrics).await?),
        };
        let pod = self
            .apply(builder, name, ring)
            .await?
            .build()
            .await
            .map_err(|e| Error::config("handoff", e.to_string()))?;
        tracing::info!(pod = %name, ?ring, "handoff driver running");
        Ok(pod)
    }

    /// These options on the SDK's entry point: the secret, progress,
    /// snapshot directory, coordination wait and shutdown intent of a
    /// [`MemberPod`]. The sample reads its own flags and environment, so
    /// nothing else comes from the environment here.
    async fn apply(
        self,
        mut pod: MemberPodBuilder,
        name: &str,
        ring: &RingSourceConfig,
    ) -> Result<MemberPodBuilder, Error> {
        pod = match self.secret {
            SecretSource::File(path) => pod.secret_file(path),
            SecretSource::Value(secret) => pod.secret(secret),
        };
        pod = match (self.progress, ring) {
            // The default: the pod's annotations, through the ring's client.
            (ProgressTarget::Kube { .. }, RingSourceConfig::Kube { .. }) => pod,
            (
                ProgressTarget::Kube {
                    namespace,
                    kubeconfig,
                },
                _,
            ) => {
                let client = kube_client(kubeconfig.as_deref()).await?;
                pod.progress(KubeProgressReporter::new(client, namespace, name))
            }
            (ProgressTarget::Memory(reporter), _) => pod.progress(reporter),
            (ProgressTarget::None, _) => pod.no_progress(),
        };
        if let Some(dir) = self.snapshot_dir {
            pod = pod.snapshot_dir(dir);
        }
        if let Some(intent) = self.shutdown_intent {
            pod = pod.shutdown_intent(intent);
        }
        if let Some(interval) = self.load_report_interval {
            pod = pod.load_report_interval(interval);
        }
        Ok(pod
            .handoff_config(self.config)
            .coordination_wait(self.coordination_wait))
    }
}
