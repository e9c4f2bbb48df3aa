//! The demo: the operator installed with its Helm chart, the sample session ledger as a
//! `StatefulService`, and the load generator running through a scale-up, a rolling update and
//! a scale-down, counting errors, lost writes and how warm moved sessions were.
//!
//! [`run`] does every step and reports each with a progress line; [`DemoReport::table`] and
//! [`PhaseReport::json_line`] print the outcome. The `locus-demo` binary (what `make demo`
//! runs) and the end-to-end tests (`tests/e2e_demo.rs`) both drive it.
//!
//! Each phase runs load while the change happens and until the service is converged again:
//! status `Stable`, not `Progressing`, for the applied generation, the ring naming exactly the
//! wanted slots, each served by a Ready pod at its address. After each phase every session
//! with an acknowledged append is read back, so lost writes are counted per phase.
//!
//! The module is cut by concern: the options and the run here, the measured outcome in
//! `report`, the service and its load in `session`, the operator's install and the clean-up
//! in `install`.

mod install;
mod report;
mod session;

pub use self::install::cleanup;
use self::install::prepare;
pub use self::report::{DemoReport, PhaseReport, RingChange};
use self::session::{ServiceState, Session};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use locus::RingSource as _;
use locus::ring::Ring;
use locus_examples::loadgen::{LoadConfig, LoadGenerator, Target};
use locus_examples::ring_source::{OpenRing, RingSourceConfig};
use serde_json::{Value, json};

use crate::cluster::{ClusterError, client_for};
use crate::support::service::resource;
use crate::support::wait;

/// Field manager of the demo's applies.
const MANAGER: &str = "locus-demo";
/// Image of the sample service.
pub const SAMPLE_IMAGE: &str = "locus/sample:dev";

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The cluster could not be reached or started.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A command (helm) failed.
    #[error("{command} failed: {output}")]
    Command {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A wait ran out of time.
    #[error(transparent)]
    Wait(#[from] wait::WaitError),
    /// The load generator could not start.
    #[error("load generator: {0}")]
    Load(#[from] locus_examples::Error),
    /// The ring did not appear.
    #[error("no ring for {0} within the wait")]
    NoRing(String),
}

fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> DemoError {
    let action = action.into();
    move |source| DemoError::Api { action, source }
}

/// The cluster the demo runs on.
#[derive(Debug, Clone)]
pub struct DemoTarget {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The `helm` binary.
    pub helm: PathBuf,
}

/// One phase: a change, then load until the service is converged again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// No change: load for this long.
    Steady(Duration),
    /// `spec.replicas` to this many.
    Scale(u16),
    /// A template change (an environment variable): a surge rollout, slot by slot.
    Rollout,
    /// The pod of this slot evicted through the Eviction API (as a node drain does): it
    /// gets SIGTERM and a replacement takes its slot over.
    Evict(u16),
}

/// One phase of the demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Its name in the reports.
    pub name: String,
    /// What changes.
    pub change: Change,
}

impl Phase {
    /// A phase named `name`.
    pub fn new(name: impl Into<String>, change: Change) -> Self {
        Self {
            name: name.into(),
            change,
        }
    }
}

/// How the operator gets installed.
#[derive(Debug, Clone)]
pub struct OperatorInstall {
    /// Helm release name.
    pub release: String,
    /// Namespace of the release.
    pub namespace: String,
    /// Restrict the operator to one namespace (tests); `None`: every namespace.
    pub watch_namespace: Option<String>,
    /// Operator replicas.
    pub replicas: u8,
}

/// Everything the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Install (or upgrade) the operator with the chart; `None`: it is already running.
    pub operator: Option<OperatorInstall>,
    /// Namespace of the sample service.
    pub namespace: String,
    /// Create the namespace (deleting a leftover one first); `false`: it exists.
    pub create_namespace: bool,
    /// Name of the `StatefulService`.
    pub service: String,
    /// Replicas to start with.
    pub replicas: u16,
    /// Shards of the ring.
    pub shards: u32,
    /// Sessions of the load.
    pub sessions: u32,
    /// Requests in flight.
    pub concurrency: usize,
    /// Requests per second (all workers); `None`: as fast as answered.
    pub rate: Option<f64>,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// Longest time for the service to converge (at start and per phase).
    pub converge_timeout: Duration,
    /// Load kept running after a change converged, in the same phase, so that the sessions
    /// that moved get touched on their new pods.
    pub tail: Duration,
    /// How long the load generator waits for one answer before counting a timeout.
    pub request_timeout: Duration,
    /// Bytes of note per append of the load (0: none).
    pub note_bytes: usize,
    /// The sample container's memory limit (and request), a Kubernetes quantity; `None`:
    /// no limit.
    pub memory_limit: Option<String>,
    /// More arguments for the sample (its flags; a flag wins over the environment, the
    /// operator's variables included).
    pub sample_args: Vec<String>,
}

impl DemoOptions {
    /// The demo as `make demo` runs it: operator in `locus-system` watching every namespace,
    /// service `ledger` in `locus-demo`, phases steady (3) → scale to 5 → rollout → scale
    /// to 2.
    pub fn standard() -> Self {
        Self {
            operator: Some(OperatorInstall {
                release: "locus-operator".into(),
                namespace: "locus-system".into(),
                watch_namespace: None,
                replicas: 1,
            }),
            namespace: "locus-demo".into(),
            create_namespace: true,
            service: "ledger".into(),
            replicas: 3,
            shards: 1024,
            sessions: 1000,
            concurrency: 16,
            rate: Some(200.0),
            phases: vec![
                Phase::new("steady", Change::Steady(Duration::from_secs(15))),
                Phase::new("scale-to-5", Change::Scale(5)),
                Phase::new("rollout", Change::Rollout),
                Phase::new("scale-to-2", Change::Scale(2)),
            ],
            converge_timeout: Duration::from_secs(300),
            tail: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            note_bytes: 0,
            memory_limit: None,
            sample_args: Vec::new(),
        }
    }
}

/// The sample service's manifest with `replicas` slots, template revision `revision`.
pub fn manifest(options: &DemoOptions, replicas: u16, revision: u32) -> Value {
    let mut container = json!({
        "name": "ledger",
        "image": SAMPLE_IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [
            {"name": "DEMO_REVISION", "value": revision.to_string()},
            {"name": "LOCUS_SAMPLE_SHUTDOWN_TIMEOUT", "value": "25s"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 1,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
        },
    });
    if !options.sample_args.is_empty() {
        container["args"] = json!(options.sample_args);
    }
    if let Some(limit) = &options.memory_limit {
        container["resources"] = json!({
            "limits": {"memory": limit},
            "requests": {"memory": limit},
        });
    }
    json!({
        "apiVersion": "locus.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": options.service, "namespace": options.namespace},
        "spec": {
            "replicas": replicas,
            "shards": options.shards,
            "port": "http",
            "unreadyGrace": "10s",
            "timeouts": {"warm": "20s", "drain": "20s", "settle": "30s"},
            "template": {"spec": {
                "terminationGracePeriodSeconds": 30,
                "containers": [container],
            }},
        },
    })
}

/// Runs the demo on `target`: [`Demo::deploy`], every phase of the options, then
/// [`Demo::finish`]; `log` gets one line per step.
pub async fn run(
    target: &DemoTarget,
    options: &DemoOptions,
    log: &dyn Fn(&str),
) -> Result<DemoReport, DemoError> {
    let mut demo = Demo::deploy(target, options, log).await?;
    for phase in &options.phases {
        demo.run_phase(phase, log).await?;
    }
    Ok(demo.finish())
}

/// A deployed sample service with its load generator; phases run one after the other.
pub struct Demo {
    service: Session,
    state: ServiceState,
    load: LoadGenerator,
    /// Kept open: the load generator routes by its watch.
    _ring_source: OpenRing,
    reports: Vec<PhaseReport>,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("namespace", &self.service.options.namespace)
            .field("service", &self.service.options.service)
            .field("phases", &self.reports.len())
            .finish_non_exhaustive()
    }
}

impl Demo {
    /// Installs the operator and creates the namespace (as the options say), applies the
    /// sample service, waits until it is converged and opens the load generator on its ring.
    pub async fn deploy(
        target: &DemoTarget,
        options: &DemoOptions,
        log: &dyn Fn(&str),
    ) -> Result<Self, DemoError> {
        Self::deploy_with(target, options, |load| load, log).await
    }

    /// [`deploy`](Self::deploy), with the load generator's configuration changed by `load`
    /// (e.g. its key distribution) after the options set theirs.
    pub async fn deploy_with(
        target: &DemoTarget,
        options: &DemoOptions,
        load: impl FnOnce(LoadConfig) -> LoadConfig,
        log: &dyn Fn(&str),
    ) -> Result<Self, DemoError> {
        let client = client_for(&target.kubeconfig).await?;
        prepare(target, options, &client, log).await?;
        let service = Session {
            options: options.clone(),
            services: Api::namespaced_with(client.clone(), &options.namespace, &resource()),
            maps: Api::namespaced(client.clone(), &options.namespace),
            pods: Api::namespaced(client.clone(), &options.namespace),
        };
        let mut state = ServiceState {
            replicas: options.replicas,
            revision: 1,
            generation: 0,
        };
        // The CRD may be fresh: retry the first apply until the API server serves it.
        state.generation = wait::until(
            Duration::from_secs(60),
            "the StatefulService API to accept the sample service",
            || async {
                service
                    .apply(state.replicas, state.revision)
                    .await
                    .map(Some)
            },
        )
        .await?;
        log(&format!(
            "applied StatefulService {}/{} ({} replicas, image {SAMPLE_IMAGE}, port http, readiness /readyz)",
            options.namespace, options.service, state.replicas
        ));
        let started = Instant::now();
        service.converged(state.replicas, state.generation).await?;
        log(&format!(
            "converged: phase Stable, {} slots, ring version {} ({:.1} s)",
            state.replicas,
            service
                .ring()
                .await
                .ok()
                .flatten()
                .map_or(0, |r| r.version()),
            started.elapsed().as_secs_f64()
        ));
        let ring_source: OpenRing = RingSourceConfig::Kube {
            namespace: options.namespace.clone(),
            service: options.service.clone(),
            kubeconfig: Some(target.kubeconfig.clone()),
        }
        .open(&locus::Metrics::new())
        .await?;
        let watch = ring_source.watch();
        if watch.wait_for_ring(Duration::from_secs(60)).await.is_none() {
            return Err(DemoError::NoRing(options.service.clone()));
        }
        let config = load(LoadConfig {
            sessions: options.sessions,
            concurrency: options.concurrency,
            rate: options.rate,
            timeout: options.request_timeout,
            note_bytes: options.note_bytes,
            ..LoadConfig::new(Target::Ring(watch))
        });
        let keys = config.keys;
        let load = LoadGenerator::new(config)?;
        log(&format!(
            "load generator: {} sessions ({keys}), {} in flight, {} req/s, routed by the ring (KubeRingSource over the admin kubeconfig)",
            options.sessions,
            options.concurrency,
            options
                .rate
                .map_or_else(|| "unpaced".to_owned(), |r| format!("{r}"))
        ));
        Ok(Self {
            service,
            state,
            load,
            _ring_source: ring_source,
            reports: Vec::new(),
        })
    }

    /// Runs one phase and returns its report (also kept for [`finish`](Self::finish)).
    pub async fn run_phase(
        &mut self,
        phase: &Phase,
        log: &dyn Fn(&str),
    ) -> Result<&PhaseReport, DemoError> {
        let lost_before = self
            .reports
            .last()
            .map_or(0, |r| r.verification.lost_writes);
        let report = self
            .service
            .phase(&mut self.load, phase, &mut self.state, lost_before, log)
            .await?;
        log(&report.line());
        self.reports.push(report);
        Ok(self
            .reports
            .last()
            .unwrap_or_else(|| unreachable!("just pushed")))
    }

    /// The load generator, for phases of the caller's own (it counts them in the total).
    pub fn load(&mut self) -> &mut LoadGenerator {
        &mut self.load
    }

    /// The service's pods (admin client).
    pub fn pods(&self) -> &Api<Pod> {
        &self.service.pods
    }

    /// The ring the operator published last.
    pub async fn ring(&self) -> Result<Option<Ring>, DemoError> {
        self.service
            .ring()
            .await
            .map_err(api("read the ring ConfigMap"))
    }

    /// Waits until the service is converged on the last applied spec.
    pub async fn converged(&self) -> Result<(), DemoError> {
        self.service
            .converged(self.state.replicas, self.state.generation)
            .await
            .map(drop)
    }

    /// The reports of the phases so far and the total, with the last read-back.
    pub fn finish(self) -> DemoReport {
        let verification = self
            .reports
            .last()
            .map(|r| r.verification.clone())
            .unwrap_or_default();
        DemoReport {
            total: self.load.total("total", Some(verification)),
            phases: self.reports,
        }
    }
}
