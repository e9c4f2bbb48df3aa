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

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{Api, Client};
use locus::RingSource as _;
use locus::ring::{Ring, RingDocument};
use locus_examples::loadgen::{LoadConfig, LoadGenerator, Stop, Summary, Target, Verification};
use locus_examples::ring_source::{OpenRing, RingSourceConfig};
use serde_json::{Value, json};

use crate::accounting::{self, HandoffCheck};
use crate::cluster::{ClusterError, client_for};
use crate::wait;

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
        }
    }
}

/// The ring and transition side of one phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RingChange {
    /// Ring version when the phase started.
    pub from_version: u64,
    /// Ring version when it ended.
    pub to_version: u64,
    /// Shards whose owner pod differs between those two rings.
    pub shards_moved: u32,
    /// Seconds from the change to a converged service.
    pub converge_s: f64,
    /// The service's `status.lastTransition` at the end of the phase.
    pub last_transition: Option<Value>,
}

/// What one phase measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseReport {
    /// The phase.
    pub name: String,
    /// The load generator's summary of the phase.
    pub summary: Summary,
    /// Acknowledged appends of any phase so far missing when read back after this one,
    /// minus those already missing after the previous phase.
    pub lost_writes: u64,
    /// The read-back after this phase (cumulative).
    pub verification: Verification,
    /// Ring versions, shards moved, convergence time.
    pub ring: RingChange,
    /// The handoff accounting of the phase's last transition, operator and client side by
    /// side (`None`: no transition).
    pub handoff: Option<HandoffCheck>,
    /// True if the service did not converge within the timeout (the phase ended there).
    pub timed_out: bool,
}

impl PhaseReport {
    /// Percentage of sessions that moved pods and were warm on their new pod (`None`: none
    /// moved).
    pub fn moved_warm_percent(&self) -> Option<f64> {
        self.summary.moved.warm_percent()
    }

    /// The operator's `status.lastTransition.warmHitPercent` for the phase's last transition
    /// (from what the pods reported), if that transition ended at the phase's final ring.
    pub fn operator_warm_percent(&self) -> Option<f64> {
        let last = self.ring.last_transition.as_ref()?;
        (last.get("toVersion")?.as_u64()? == self.ring.to_version)
            .then(|| last.get("warmHitPercent")?.as_f64())
            .flatten()
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "phase {} done: {} requests, {} errors, {} lost writes, p99 {:.1} ms, moved sessions warm {}/{}, {} shards moved, ring v{}→v{}, converged in {:.1} s{}",
            self.name,
            self.summary.requests,
            self.summary.errors,
            self.lost_writes,
            self.summary.latency_ms.p99,
            self.summary.moved.warm,
            self.summary.moved.warm + self.summary.moved.cold,
            self.ring.shards_moved,
            self.ring.from_version,
            self.ring.to_version,
            self.ring.converge_s,
            if self.timed_out {
                " — did not converge in time"
            } else {
                ""
            }
        )
    }

    /// One JSON line: the figures of the table, then the load generator's full summary.
    pub fn json_line(&self) -> String {
        let line = json!({
            "phase": self.name,
            "requests": self.summary.requests,
            "errors": self.summary.errors,
            "errors_by_kind": self.summary.errors_by_kind,
            "lost_writes": self.lost_writes,
            "p50_ms": self.summary.latency_ms.p50,
            "p99_ms": self.summary.latency_ms.p99,
            "cache": self.summary.cache,
            "moved": self.summary.moved,
            "moved_warm_percent": self.moved_warm_percent(),
            "operator_warm_hit_percent": self.operator_warm_percent(),
            "first_touches": self.summary.handoff,
            "handoff": self.handoff,
            "ring": self.ring,
            "timed_out": self.timed_out,
            "summary": self.summary,
        });
        line.to_string()
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Per phase.
    pub phases: Vec<PhaseReport>,
    /// Every phase together, with the final read-back.
    pub total: Summary,
}

impl DemoReport {
    /// The handoff accounting of each phase's last transition: the operator's sums of the
    /// pods' reports beside what the load generator saw.
    fn handoff_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "handoff accounting per phase (the phase's last transition): the operator's sums of \
             the pods' reports beside what the load generator saw"
        );
        let _ = writeln!(
            out,
            "  {:<12} {:>9} {:>14} {:>9} {:>11} {:>11} {:>11} {:>11} {:>6}",
            "phase",
            "ring v",
            "reports",
            "op warm %",
            "taken w/c",
            "served w/c",
            "seen w/c",
            "moved w/c",
            "unann."
        );
        for phase in &self.phases {
            let Some(h) = &phase.handoff else {
                continue;
            };
            let pair = |(w, c): (u64, u64)| format!("{w}/{c}");
            let moved = &phase.summary.moved;
            let _ = writeln!(
                out,
                "  {:<12} {:>9} {:>14} {:>9} {:>11} {:>11} {:>11} {:>11} {:>6}",
                phase.name,
                format!("{}→{}", h.from_version, h.to_version),
                h.reports,
                h.operator_warm_percent
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}")),
                pair(h.taken_over),
                pair(h.served),
                pair(h.seen),
                pair((moved.warm, moved.cold)),
                moved.unannounced,
            );
            if !h.missing.is_empty() {
                let _ = writeln!(out, "    reports missing: {:?}", h.missing);
            }
        }
    }

    /// The summary table, one row per phase and a total.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>7} {:>6} {:>8} {:>8} {:>7} {:>12} {:>7} {:>9} {:>8} {:>9}",
            "phase",
            "requests",
            "errors",
            "lost",
            "p50 ms",
            "p99 ms",
            "warm %",
            "moved w/c",
            "shards",
            "ring v",
            "conv s",
            "op warm %"
        );
        for phase in &self.phases {
            let s = &phase.summary;
            let warm = phase
                .moved_warm_percent()
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"));
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>7} {:>6} {:>8.2} {:>8.2} {:>7} {:>12} {:>7} {:>9} {:>8} {:>9}{}",
                phase.name,
                s.requests,
                s.errors,
                phase.lost_writes,
                s.latency_ms.p50,
                s.latency_ms.p99,
                warm,
                format!("{}/{}", s.moved.warm, s.moved.cold),
                phase.ring.shards_moved,
                format!("{}→{}", phase.ring.from_version, phase.ring.to_version),
                if phase.ring.converge_s > 0.0 {
                    format!("{:.1}", phase.ring.converge_s)
                } else {
                    "-".to_owned()
                },
                phase
                    .operator_warm_percent()
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}")),
                if phase.timed_out { "  TIMED OUT" } else { "" }
            );
        }
        let t = &self.total;
        let lost = t.verification.as_ref().map_or(0, |v| v.lost_writes);
        let warm = t
            .moved
            .warm_percent()
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"));
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>7} {:>6} {:>8.2} {:>8.2} {:>7} {:>12}",
            "total",
            t.requests,
            t.errors,
            lost,
            t.latency_ms.p50,
            t.latency_ms.p99,
            warm,
            format!("{}/{}", t.moved.warm, t.moved.cold),
        );
        if let Some(v) = &t.verification {
            let _ = writeln!(
                out,
                "read back {} sessions: {} acknowledged appends, {} lost, {} stale sessions, {} unreadable",
                v.sessions_checked,
                v.acked_appends,
                v.lost_writes,
                v.stale_sessions,
                v.sessions_unreadable
            );
        }
        self.handoff_table(&mut out);
        for phase in &self.phases {
            if !phase.summary.errors_by_kind.is_empty() {
                let _ = writeln!(
                    out,
                    "errors in {}: {:?}",
                    phase.name, phase.summary.errors_by_kind
                );
            }
        }
        out
    }
}

/// The `StatefulService` kind, for dynamic (untyped) API access.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("locus.dev", "v1alpha1", "StatefulService"),
        "statefulservices",
    )
}

/// The sample service's manifest with `replicas` slots, template revision `revision`.
pub fn manifest(options: &DemoOptions, replicas: u16, revision: u32) -> Value {
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
                "containers": [{
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
                }],
            }},
        },
    })
}

/// The demo's handle on the cluster and the service.
struct Session {
    options: DemoOptions,
    services: Api<DynamicObject>,
    maps: Api<ConfigMap>,
    pods: Api<Pod>,
}

impl Session {
    async fn apply(&self, replicas: u16, revision: u32) -> Result<i64, DemoError> {
        let applied = self
            .services
            .patch(
                &self.options.service,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(manifest(&self.options, replicas, revision)),
            )
            .await
            .map_err(api(format!(
                "apply StatefulService {}",
                self.options.service
            )))?;
        Ok(applied.metadata.generation.unwrap_or_default())
    }

    /// Evicts the pod serving `slot`; returns its name.
    async fn evict(&self, slot: u16) -> Result<String, DemoError> {
        let ring = self
            .ring()
            .await
            .map_err(api("read the ring ConfigMap"))?
            .ok_or_else(|| DemoError::NoRing(self.options.service.clone()))?;
        let pod =
            ring.slot(slot)
                .map(|s| s.pod.name.clone())
                .ok_or_else(|| DemoError::Command {
                    command: format!("evict slot {slot}"),
                    output: format!("the ring has {} slots", ring.slots().len()),
                })?;
        self.disruption_allowed().await?;
        self.pods
            .evict(&pod, &EvictParams::default())
            .await
            .map_err(api(format!("evict pod {pod}")))?;
        Ok(pod)
    }

    /// Waits until the service's PodDisruptionBudget allows an eviction. The disruption
    /// controller resolves the pods' controller (the `StatefulService`) through a REST
    /// mapping it refreshes every 30 s; a budget it failed to sync before the CRD was in its
    /// mapping is retried with a growing backoff, so the wait nudges it (an annotation
    /// change is an update event that requeues it).
    async fn disruption_allowed(&self) -> Result<(), DemoError> {
        let budgets: Api<PodDisruptionBudget> =
            Api::namespaced(self.pods.clone().into_client(), &self.options.namespace);
        let name = &self.options.service;
        let nudges = std::sync::atomic::AtomicU32::new(0);
        let last_nudge = Mutex::new(Instant::now());
        wait::until(
            Duration::from_secs(120),
            &format!("the PodDisruptionBudget {name} to allow a disruption"),
            || async {
                let budget = budgets.get(name).await?;
                let status = budget.status.unwrap_or_default();
                if status.disruptions_allowed.unwrap_or_default() >= 1
                    && status.observed_generation == budget.metadata.generation
                {
                    return Ok(Some(()));
                }
                let due = last_nudge.lock().is_ok_and(|mut at| {
                    let due = at.elapsed() >= Duration::from_secs(10);
                    if due {
                        *at = Instant::now();
                    }
                    due
                });
                if due {
                    let n = nudges.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    let patch = json!({"metadata": {"annotations": {"locus.dev/demo-resync": n.to_string()}}});
                    budgets
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                Ok::<_, kube::Error>(None)
            },
        )
        .await?;
        Ok(())
    }

    async fn ring(&self) -> Result<Option<Ring>, kube::Error> {
        read_ring(&self.maps, &self.options.service).await
    }

    /// `Some(status)` once the service is converged on `replicas` slots for `generation`.
    async fn converged_now(
        &self,
        replicas: u16,
        generation: i64,
    ) -> Result<Option<Value>, kube::Error> {
        let service = self.services.get(&self.options.service).await?;
        let status = service.data.get("status").cloned().unwrap_or(Value::Null);
        if !is_settled(&status, Some(generation)) {
            return Ok(None);
        }
        let Some(ring) = self.ring().await? else {
            return Ok(None);
        };
        let pods: Vec<Pod> = self
            .pods
            .list(
                &ListParams::default()
                    .labels(&format!("locus.dev/service={}", self.options.service)),
            )
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let wanted = usize::from(replicas);
        if ring.slots().len() != wanted || pods.len() != wanted {
            return Ok(None);
        }
        Ok(serves(&ring, &pods).then_some(status))
    }

    async fn converged(&self, replicas: u16, generation: i64) -> Result<Value, DemoError> {
        let what = format!(
            "{}/{} converged on {replicas} slots (generation {generation})",
            self.options.namespace, self.options.service
        );
        Ok(wait::until(self.options.converge_timeout, &what, || {
            self.converged_now(replicas, generation)
        })
        .await?)
    }
}

/// True if the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// True if a `StatefulService` status (as JSON) is settled: phase `Stable`, not
/// `Progressing`, and observed at `generation`.
pub fn is_settled(status: &Value, generation: Option<i64>) -> bool {
    let progressing = status["conditions"].as_array().is_some_and(|conditions| {
        conditions
            .iter()
            .any(|c| c["type"] == "Progressing" && c["status"] == "True")
    });
    !progressing
        && status["phase"] == "Stable"
        && status["observedGeneration"].as_i64() == generation
}

/// True if every slot of `ring` is served by one of `pods`: the same name and UID, Ready,
/// at the slot's address.
pub fn serves(ring: &Ring, pods: &[Pod]) -> bool {
    ring.slots().iter().all(|slot| {
        pods.iter().any(|p| {
            p.metadata.name.as_deref() == Some(slot.pod.name.as_str())
                && p.metadata.uid.as_deref() == Some(slot.pod.uid.as_str())
                && is_ready(p)
                && p.status.as_ref().and_then(|s| s.pod_ip.clone())
                    == Some(slot.pod.address.ip().to_string())
        })
    })
}

/// The ring published for `service` in the `ConfigMap`s of `maps`: `None` while there is no
/// ring `ConfigMap` or its document does not parse.
pub async fn read_ring(maps: &Api<ConfigMap>, service: &str) -> Result<Option<Ring>, kube::Error> {
    let Some(map) = maps
        .get_opt(&RingDocument::config_map_name(service))
        .await?
    else {
        return Ok(None);
    };
    Ok(map
        .data
        .as_ref()
        .and_then(|d| d.get(RingDocument::CONFIG_MAP_KEY))
        .and_then(|text| RingDocument::from_json(text.as_bytes()).ok()))
}

/// Shards whose owner pod differs between `before` and `after`.
pub fn shards_moved(before: &Ring, after: &Ring) -> u32 {
    if before.shards() != after.shards() {
        return 0;
    }
    (0..before.shards().get())
        .filter(|&shard| {
            let a = before.owner_of_shard(shard).map(|s| &s.pod.name);
            let b = after.owner_of_shard(shard).map(|s| &s.pod.name);
            a != b
        })
        .count()
        .try_into()
        .unwrap_or(u32::MAX)
}

/// Installs (or upgrades) the operator's chart and waits for it.
fn install_operator(target: &DemoTarget, install: &OperatorInstall) -> Result<(), DemoError> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/locus-operator");
    let mut helm = Command::new(&target.helm);
    helm.arg(format!("--kubeconfig={}", target.kubeconfig.display()))
        .args(["upgrade", "--install", &install.release, chart])
        .args(["--namespace", &install.namespace, "--create-namespace"])
        .args(["--wait", "--timeout=180s"])
        .args(["--set", "image.repository=locus/operator"])
        .args(["--set", "image.tag=dev"])
        .args(["--set", &format!("replicaCount={}", install.replicas)]);
    if let Some(ns) = &install.watch_namespace {
        helm.args(["--set", &format!("watchNamespace={ns}")]);
    }
    let out = helm.output().map_err(|e| DemoError::Command {
        command: format!("{}", target.helm.display()),
        output: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(DemoError::Command {
            command: "helm upgrade --install".into(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Deletes namespace `name` if it exists and waits until it is gone.
async fn delete_namespace(
    client: &Client,
    name: &str,
    log: &dyn Fn(&str),
) -> Result<(), DemoError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(name)
        .await
        .map_err(api(format!("read namespace {name}")))?
        .is_none()
    {
        return Ok(());
    }
    log(&format!(
        "deleting the namespace {name} left by an earlier run"
    ));
    match namespaces.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(api(format!("delete namespace {name}"))(e)),
    }
    wait::until(
        Duration::from_secs(120),
        &format!("namespace {name} deleted"),
        || {
            let namespaces = namespaces.clone();
            async move {
                namespaces
                    .get_opt(name)
                    .await
                    .map(|found| found.is_none().then_some(()))
            }
        },
    )
    .await?;
    Ok(())
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
        let load = LoadGenerator::new(LoadConfig {
            sessions: options.sessions,
            concurrency: options.concurrency,
            rate: options.rate,
            timeout: options.request_timeout,
            ..LoadConfig::new(Target::Ring(watch))
        })?;
        log(&format!(
            "load generator: {} sessions, {} in flight, {} req/s, routed by the ring (KubeRingSource over the admin kubeconfig)",
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

/// Installs the operator and creates the namespace, as the options say.
async fn prepare(
    target: &DemoTarget,
    options: &DemoOptions,
    client: &Client,
    log: &dyn Fn(&str),
) -> Result<(), DemoError> {
    if let Some(install) = &options.operator {
        log(&format!(
            "helm upgrade --install {} (chart charts/locus-operator, image locus/operator:dev) into namespace {}",
            install.release, install.namespace
        ));
        let target = target.clone();
        let install_spec = install.clone();
        // helm blocks while it waits for the Deployment.
        tokio::task::spawn_blocking(move || install_operator(&target, &install_spec))
            .await
            .map_err(|e| DemoError::Command {
                command: "helm".into(),
                output: e.to_string(),
            })??;
        log(&format!(
            "operator installed and ready in namespace {}",
            install.namespace
        ));
    }
    if options.create_namespace {
        delete_namespace(client, &options.namespace, log).await?;
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": options.namespace, "labels": {"app.kubernetes.io/part-of": "locus-demo"}}
        }))
        .map_err(|e| DemoError::Command {
            command: "namespace manifest".into(),
            output: e.to_string(),
        })?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(api(format!("create namespace {}", options.namespace)))?;
        log(&format!("namespace {} created", options.namespace));
    }
    Ok(())
}

/// The spec the demo applied last.
#[derive(Debug, Clone, Copy)]
struct ServiceState {
    replicas: u16,
    revision: u32,
    /// `metadata.generation` of the last apply.
    generation: i64,
}

impl Session {
    /// Runs one phase: the change, load until converged plus the tail, the read-back.
    async fn phase(
        &self,
        load: &mut LoadGenerator,
        phase: &Phase,
        state: &mut ServiceState,
        lost_before: u64,
        log: &dyn Fn(&str),
    ) -> Result<PhaseReport, DemoError> {
        let before = self.ring().await.ok().flatten();
        let change_started = Instant::now();
        let (summary, converge) = match &phase.change {
            Change::Steady(duration) => {
                log(&format!(
                    "phase {}: {} replicas, load for {duration:?}",
                    phase.name, state.replicas
                ));
                let summary = load.phase(&phase.name, Stop::Duration(*duration)).await;
                (summary, Some(Duration::ZERO))
            }
            Change::Scale(to) => {
                log(&format!(
                    "phase {}: scaling {} → {to} under load",
                    phase.name, state.replicas
                ));
                state.replicas = *to;
                state.generation = self.apply(state.replicas, state.revision).await?;
                self.load_until_converged(load, &phase.name, state.replicas, state.generation)
                    .await
            }
            Change::Rollout => {
                state.revision += 1;
                log(&format!(
                    "phase {}: template change (DEMO_REVISION={}) → surge rollout of {} pods under load",
                    phase.name, state.revision, state.replicas
                ));
                state.generation = self.apply(state.replicas, state.revision).await?;
                self.load_until_converged(load, &phase.name, state.replicas, state.generation)
                    .await
            }
            Change::Evict(slot) => {
                let pod = self.evict(*slot).await?;
                log(&format!(
                    "phase {}: evicted pod {pod} (slot {slot}) through the Eviction API under load",
                    phase.name
                ));
                self.load_until_converged(load, &phase.name, state.replicas, state.generation)
                    .await
            }
        };
        let converge_s = converge.map_or_else(
            || change_started.elapsed().as_secs_f64(),
            |c| c.as_secs_f64(),
        );
        let after = self.ring().await.ok().flatten();
        let verification = load.verify().await;
        let from_version = before.as_ref().map_or(0, Ring::version);
        let to_version = after.as_ref().map_or(0, Ring::version);
        // The pods' reports of the phase's last transition are final once their handoff
        // deadline has passed; the operator sums them then.
        let handoff = if to_version > from_version {
            log(&format!(
                "phase {}: waiting for the pods' handoff reports",
                phase.name
            ));
            accounting::wait_reported(
                &self.services,
                &self.options.service,
                from_version,
                accounting::REPORTS_WITHIN,
            )
            .await
            .and_then(|status| {
                let record = status.last_transition.as_ref()?;
                (record.to_version > from_version).then(|| {
                    HandoffCheck::of(
                        &status,
                        record,
                        [&summary.takeovers, &verification.takeovers],
                    )
                })
            })
        } else {
            None
        };
        let status = self
            .services
            .get(&self.options.service)
            .await
            .ok()
            .and_then(|s| s.data.get("status").cloned());
        Ok(PhaseReport {
            name: phase.name.clone(),
            summary,
            lost_writes: verification.lost_writes.saturating_sub(lost_before),
            verification,
            handoff,
            ring: RingChange {
                from_version,
                to_version,
                shards_moved: match (&before, &after) {
                    (Some(b), Some(a)) => shards_moved(b, a),
                    _ => 0,
                },
                converge_s: (converge_s * 10.0).round() / 10.0,
                last_transition: status.and_then(|s| s.get("lastTransition").cloned()),
            },
            timed_out: converge.is_none(),
        })
    }

    /// Runs load until the service converges on `replicas` slots for `generation`, then for
    /// the options' tail (so that most moved sessions get touched on their new pod). Returns
    /// the summary and the time to converge (`None`: not within the converge timeout).
    async fn load_until_converged(
        &self,
        load: &mut LoadGenerator,
        name: &str,
        replicas: u16,
        generation: i64,
    ) -> (Summary, Option<Duration>) {
        let started = Instant::now();
        let converged: Mutex<Option<Duration>> = Mutex::new(None);
        let interrupt = async {
            // A wait that fails (timeout) leaves the phase to its own duration bound.
            if self.converged(replicas, generation).await.is_ok() {
                if let Ok(mut at) = converged.lock() {
                    *at = Some(started.elapsed());
                }
                tokio::time::sleep(self.options.tail).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let summary = load
            .phase_until(
                name,
                Stop::Duration(self.options.converge_timeout + self.options.tail),
                interrupt,
            )
            .await;
        let at = converged.lock().ok().and_then(|at| *at);
        (summary, at)
    }
}

/// Removes what the demo made on a cluster it does not own: the demo namespace and the
/// operator's release.
pub fn cleanup(target: &DemoTarget, options: &DemoOptions) -> Vec<String> {
    let mut problems = Vec::new();
    let kubeconfig = format!("--kubeconfig={}", target.kubeconfig.display());
    if options.create_namespace {
        let kubectl = target.helm.with_file_name("kubectl");
        let kubectl = if kubectl.is_file() {
            kubectl
        } else {
            PathBuf::from("kubectl")
        };
        match Command::new(&kubectl)
            .args([
                kubeconfig.as_str(),
                "delete",
                "namespace",
                &options.namespace,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => problems.push(format!("{}: {e}", kubectl.display())),
        }
    }
    if let Some(install) = &options.operator {
        match Command::new(&target.helm)
            .args([
                kubeconfig.as_str(),
                "uninstall",
                &install.release,
                "--namespace",
                &install.namespace,
            ])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(e) => problems.push(format!("{}: {e}", target.helm.display())),
        }
    }
    problems
}
