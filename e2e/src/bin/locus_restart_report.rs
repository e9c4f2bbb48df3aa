//! `locus-restart-report`: benchmark (d) on the local cluster — an in-place restart that
//! restores every session from the pod's snapshot, against a cold restart that loads each
//! session from PostgreSQL on first touch.
//!
//! ```text
//! locus-restart-report [--sessions 100000] [--appends 4] [--note-bytes 200]
//!                      [--load-concurrency 64] [--read-concurrency 64] [--pg-pool 8]
//!                      [--pg-script PATH]
//! ```
//!
//! `e2e/bench/inplace-restart.sh` builds the release binaries and runs this (`make bench`).
//! Steps, each with a progress line on stderr:
//!
//! 1. the local cluster ([`Cluster::shared`]: started for the run, or the one
//!    `LOCUS_E2E_KUBECONFIG` names), the `StatefulService` CRD, a fresh namespace, and the
//!    release `locus-operator` binary as a local process watching only that namespace;
//! 2. a private PostgreSQL started by `examples/tests/pg.sh`, then restarted to listen on the
//!    cluster bridge's address (where pods reach the API server) and its unix socket only,
//!    accepting TCP clients from the pod range only;
//! 3. the sample (`locus/sample:dev`) as a one-slot `StatefulService` with `spec.snapshot`,
//!    `updateStrategy: InPlace` and PostgreSQL persistence (idle timeout 1 h: nothing is
//!    written back while the benchmark runs unless it asks);
//! 4. `--sessions` sessions, each given `--appends` acknowledged appends with a
//!    `--note-bytes` note, by the load generator routing with the SDK router over the ring
//!    `ConfigMap`;
//! 5. **snapshot**: the template's image `locus/sample:dev` → `locus/sample:v2` (the same
//!    binary): the operator updates the pod in place; on SIGTERM the pod writes its changed
//!    sessions back to PostgreSQL while still serving, stops, writes what changed meanwhile
//!    and its snapshot; the node agent restarts the container in the same pod and the new
//!    process restores the snapshot before it serves;
//! 6. **cold**: with every session in PostgreSQL (checked by counting its rows), the
//!    container's process is killed with SIGKILL (the process id is the node agent's
//!    `containerID`, `locus://<pid>`, checked against the process's environment): no
//!    snapshot is written, the node agent restarts the container in the same pod, and the new
//!    process loads each session from PostgreSQL when it is first read.
//!
//! Each case is timed on one clock from the change (the `StatefulService` apply, the kill):
//! when the old process stops answering `/readyz`, when the new one answers it (polled every
//! 10 ms from the host), when the pod is Ready again (a watch; the readiness probe runs every
//! second), and when every session has been read once (started as soon as the new process
//! answers, `--read-concurrency` reads in flight, routed by the ring). The reads count the
//! `x-locus-cache` answers (`warm`: restored, `cold`: loaded); then every session is read
//! once more and checked against the acknowledged appends (lost writes must be 0).
//!
//! Output on stdout: the settings, the machine, one line per case and the comparison
//! (`restart → every session served`, and from a session read first failing to every session
//! served once more, cold over snapshot). The cold case starts with every
//! session already in PostgreSQL, while the snapshot case writes its sessions back during its
//! shutdown, mostly while the old process still serves. Exit status 0, 3 when a write was
//! lost or a session could not be read back, 1 when the benchmark could not run, 2 for bad
//! flags. Everything it started (operator, PostgreSQL, namespace, work directory; the local
//! cluster when it started one) is removed at the end, also on errors and Ctrl-C
//! (`LOCUS_KEEP=1` keeps the namespace and the work directory with the operator's and
//! PostgreSQL's logs).
//!
//! The pods' memory-backed snapshot volume is a plain directory under the node agent's run
//! directory, which the cluster creates in `$TMPDIR`; the script sets `TMPDIR=/dev/shm` so
//! that it is memory-backed as a kubelet's `emptyDir` with `medium: Memory` is. The report
//! names the file system it found.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use locus::RingSource as _;
use locus::RingWatch;
use locus_e2e::cluster::{Cluster, ClusterError, TestNamespace, random_suffix, workspace_bin_dir};
use locus_e2e::demo;
use locus_e2e::logs::{container_log, strip_ansi};
use locus_e2e::postgres::{PostgresError, PrivatePostgres, pg_script};
use locus_examples::loadgen::{
    LoadConfig, LoadGenerator, Stop, Summary, Target, Verification, random_prefix,
};
use locus_examples::ring_source::{OpenRing, RingSourceConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const USAGE: &str = "\
usage: locus-restart-report [--sessions N] [--appends N] [--note-bytes N]
                            [--load-concurrency N] [--read-concurrency N] [--pg-pool N]
                            [--pg-script PATH]

  --sessions N          sessions loaded and read back (default 100000, at most 1000000)
  --appends N           acknowledged appends per session (default 4)
  --note-bytes N        note bytes per append, at most 256 (default 200; with 4 appends a
                        session is about 1 KiB of JSON)
  --load-concurrency N  appends in flight while loading (default 64)
  --read-concurrency N  reads in flight while reading every session back (default 64)
  --pg-pool N           PostgreSQL connections of the pod (default 8)
  --pg-script PATH      the private PostgreSQL's start/stop script (default examples/tests/pg.sh)

Runs as root on the local cluster (started for the run, or LOCUS_E2E_KUBECONFIG's);
see e2e/bench/inplace-restart.sh.";

/// Name of the `StatefulService` (and of its only container).
const SERVICE: &str = "ledger";
/// The image the service starts with.
const IMAGE_V1: &str = "locus/sample:dev";
/// The image of the in-place update: the node agent maps it to the same binary.
const IMAGE_V2: &str = "locus/sample:v2";
/// The sample's container port.
const PORT: u16 = 8080;
/// Field manager of this program's applies.
const MANAGER: &str = "locus-restart-report";
/// Longest wait for the service to converge, a restart to finish, a read-back.
const LONG_WAIT: Duration = Duration::from_secs(300);
/// The CRD, as `make crds` generates it.
const CRD_YAML: &str = include_str!("../../../crds/statefulservices.locus.dev.yaml");

/// Everything that can stop the benchmark.
#[derive(Debug, thiserror::Error)]
enum ReportError {
    /// The local cluster could not be started or reached.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The load generator refused its configuration or could not open the ring.
    #[error("load generator: {0}")]
    Load(#[from] locus_examples::Error),
    /// A file or process operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// PostgreSQL could not be started, reconfigured or queried.
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// The operator process failed.
    #[error("locus-operator: {0}")]
    Operator(String),
    /// Something about the cluster or a restart is not what the benchmark needs.
    #[error("{0}")]
    Setup(String),
}

impl From<PostgresError> for ReportError {
    fn from(error: PostgresError) -> Self {
        Self::Postgres(error.to_string())
    }
}

fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReportError {
    let action = action.into();
    move |source| ReportError::Api { action, source }
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReportError {
    let action = action.into();
    move |source| ReportError::Io { action, source }
}

/// The flags.
#[derive(Debug, Clone)]
struct Settings {
    sessions: u32,
    appends: u32,
    note_bytes: usize,
    load_concurrency: usize,
    read_concurrency: usize,
    pg_pool: usize,
    pg_script: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sessions: 100_000,
            appends: 4,
            note_bytes: 200,
            load_concurrency: 64,
            read_concurrency: 64,
            pg_pool: 8,
            pg_script: pg_script(),
        }
    }
}

fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Settings, String> {
    fn number<T>(flag: &str, value: &str, range: (T, T)) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let n: T = value
            .parse()
            .map_err(|_| format!("{flag} {value:?}: expected a whole number"))?;
        if n < range.0 || n > range.1 {
            return Err(format!("{flag} must be {} to {}", range.0, range.1));
        }
        Ok(n)
    }
    let mut settings = Settings::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if matches!(flag.as_str(), "-h" | "--help") {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--sessions" => settings.sessions = number(&flag, &value, (1, 1_000_000))?,
            "--appends" => settings.appends = number(&flag, &value, (1, 1000))?,
            "--note-bytes" => settings.note_bytes = number(&flag, &value, (0, 256))?,
            "--load-concurrency" => settings.load_concurrency = number(&flag, &value, (1, 4096))?,
            "--read-concurrency" => settings.read_concurrency = number(&flag, &value, (1, 4096))?,
            "--pg-pool" => settings.pg_pool = number(&flag, &value, (1, 256))?,
            "--pg-script" => settings.pg_script = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(settings)
}

/// A progress line for whoever watches a long run.
fn progress(line: &str) {
    eprintln!("[restart-report] {line}");
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = match parse_flags(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let outcome = tokio::select! {
        outcome = run(&settings) => outcome,
        _ = tokio::signal::ctrl_c() => {
            progress("interrupted; cleaning up");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(report) => {
            print!("{}", report.text());
            if report.consistent() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(error) => {
            eprintln!("[restart-report] failed: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// What the run produces.

/// One restart, measured.
#[derive(Debug)]
struct CaseReport {
    name: &'static str,
    /// Change → the old process stops answering `/readyz`.
    down_s: f64,
    /// Change → a session read first fails (the old process no longer serves sessions; it
    /// keeps serving them after `/readyz` turned 503, while it writes its sessions back).
    sessions_down_s: f64,
    /// Change → the new process answers `/readyz`.
    serving_s: f64,
    /// Change → the pod is Ready again (Kubernetes).
    ready_s: f64,
    /// `locus_store_sessions` when the new process first answered.
    resident_at_start: Option<f64>,
    /// The read of every session once.
    read: Summary,
    /// Its duration.
    read_all_s: f64,
    /// Change → every session answered once.
    total_s: f64,
    /// The second read of every session, against the acknowledged appends.
    verification: Verification,
    /// Case-specific facts, `key=value`.
    facts: Vec<(String, String)>,
    /// Load average when the case started.
    load_average: String,
}

impl CaseReport {
    /// From a session read first failing to every session served once.
    fn stopped_to_all_served_s(&self) -> f64 {
        (self.total_s - self.sessions_down_s).max(0.0)
    }

    fn line(&self) -> String {
        let mut line = format!(
            "case={} restart_to_serving_s={:.2} restart_to_ready_s={:.2} old_process_down_s={:.2} \
             sessions_down_s={:.2} \
             resident_at_start={} read_all_s={:.2} read_rps={:.0} read_p50_ms={:.2} read_p99_ms={:.2} \
             read_max_ms={:.1} warm={} cold={} read_errors={} restart_to_all_served_s={:.2} \
             stopped_to_all_served_s={:.2} lost_writes={} stale_sessions={} unreadable={}",
            self.name,
            self.serving_s,
            self.ready_s,
            self.down_s,
            self.sessions_down_s,
            self.resident_at_start
                .map_or_else(|| "?".to_owned(), |v| format!("{v:.0}")),
            self.read_all_s,
            self.read.throughput_rps,
            self.read.read_latency_ms.p50,
            self.read.read_latency_ms.p99,
            self.read.read_latency_ms.max,
            self.read.cache.warm,
            self.read.cache.cold,
            self.read.errors,
            self.total_s,
            self.stopped_to_all_served_s(),
            self.verification.lost_writes,
            self.verification.stale_sessions,
            self.verification.sessions_unreadable,
        );
        for (key, value) in &self.facts {
            let _ = write!(line, " {key}={value}");
        }
        let _ = write!(line, " loadavg={}", self.load_average);
        line
    }
}

/// The whole run.
#[derive(Debug)]
struct Report {
    settings: Vec<String>,
    machine: Vec<String>,
    load: String,
    cases: Vec<CaseReport>,
    load_average_end: String,
}

impl Report {
    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nsettings: {}", self.settings.join(" "));
        let _ = writeln!(out, "machine: {}", self.machine.join(" "));
        let _ = writeln!(out, "load: {}", self.load);
        for case in &self.cases {
            let _ = writeln!(out, "restart: {}", case.line());
        }
        if let [snapshot, cold] = self.cases.as_slice() {
            let ratio = |a: f64, b: f64| a / b.max(1e-9);
            let _ = write!(
                out,
                "comparison: restart_to_all_served_s snapshot={:.2} cold={:.2} cold_over_snapshot={:.2} \
                 read_all_s snapshot={:.2} cold={:.2} cold_over_snapshot={:.2}",
                snapshot.total_s,
                cold.total_s,
                ratio(cold.total_s, snapshot.total_s),
                snapshot.read_all_s,
                cold.read_all_s,
                ratio(cold.read_all_s, snapshot.read_all_s),
            );
            // The snapshot case's old process serves while it writes its sessions back; from
            // when it stops serving sessions to every session served once more:
            let _ = write!(
                out,
                " stopped_to_all_served_s snapshot={:.2} cold={:.2} cold_over_snapshot={:.2}",
                snapshot.stopped_to_all_served_s(),
                cold.stopped_to_all_served_s(),
                ratio(
                    cold.stopped_to_all_served_s(),
                    snapshot.stopped_to_all_served_s()
                ),
            );
            let _ = writeln!(out, " loadavg_end={}", self.load_average_end);
        }
        out
    }

    fn consistent(&self) -> bool {
        self.cases.iter().all(|c| {
            c.verification.lost_writes == 0
                && c.verification.stale_sessions == 0
                && c.verification.sessions_unreadable == 0
                && c.read.stale_reads == 0
                && c.read.version_conflicts == 0
        })
    }
}

// ---------------------------------------------------------------------------------------
// Things this program starts, each removed when dropped (also on errors and Ctrl-C).

/// The work directory: the operator's log, PostgreSQL's data and logs.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("LOCUS_KEEP").is_some() {
            progress(&format!("LOCUS_KEEP: keeping {}", self.0.display()));
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The operator, a local process of the release binary.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(
        bin: &Path,
        kubeconfig: &Path,
        namespace: &str,
        log: PathBuf,
    ) -> Result<Self, ReportError> {
        let file = std::fs::File::create(&log).map_err(io(format!("create {}", log.display())))?;
        let err = file.try_clone().map_err(io("duplicate a file handle"))?;
        let child = Command::new(bin)
            .env("KUBECONFIG", kubeconfig)
            .env("LOCUS_OPERATOR_WATCH_NAMESPACE", namespace)
            .env("LOCUS_OPERATOR_METRICS_ADDR", "off")
            .env("LOCUS_OPERATOR_LEADER_ELECTION", "false")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(io(format!(
                "start {} (build it: cargo build --release -p locus-operator)",
                bin.display()
            )))?;
        Ok(Self { child, log })
    }

    /// Fails when the process has exited, with the end of its log.
    fn check(&mut self) -> Result<(), ReportError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(ReportError::Operator(format!(
                "exited ({status}); last log lines:\n{}",
                tail(&self.log, 10)
            ))),
            Err(e) => Err(ReportError::Operator(e.to_string())),
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// The cluster side.

/// The address pods reach the API server at: the host of the kubeconfig's server, which on
/// the local cluster is the bridge's own address.
fn api_server_address(kubeconfig: &Path) -> Result<Ipv4Addr, ReportError> {
    let bad =
        |why: String| ReportError::Setup(format!("kubeconfig {}: {why}", kubeconfig.display()));
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| bad(e.to_string()))?;
    let context = config.current_context.clone().unwrap_or_default();
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let server = config
        .clusters
        .iter()
        .find(|c| cluster_name.as_ref().is_none_or(|n| *n == c.name))
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| bad("no server".into()))?;
    let authority = server
        .split_once("://")
        .map_or(server.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| bad(format!("server {server:?} is not an IPv4 address")))?;
    if ip.is_loopback() || ip.is_unspecified() {
        return Err(bad(format!(
            "server {server:?}: pods cannot reach PostgreSQL on {ip}; this benchmark needs the local \
             cluster, whose API server listens on its bridge"
        )));
    }
    Ok(ip)
}

/// The node's pod range (`spec.podCIDR`).
async fn pod_cidr(client: &Client) -> Result<String, ReportError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(api("list nodes"))?;
    list.items
        .iter()
        .find_map(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.clone()))
        .ok_or_else(|| ReportError::Setup("no node has a spec.podCIDR".into()))
}

/// Installs (or updates) the CRD and waits until it is established.
async fn install_crd(client: &Client) -> Result<(), ReportError> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(CRD_YAML)
        .map_err(|e| ReportError::Setup(format!("the committed CRD does not parse: {e}")))?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(api(format!("apply CRD {name}")))?;
    let established = kube::runtime::wait::await_condition(
        crds,
        &name,
        kube::runtime::wait::conditions::is_crd_established(),
    );
    match tokio::time::timeout(Duration::from_secs(30), established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ReportError::Setup(format!("waiting for CRD {name}: {e}"))),
        Err(_) => Err(ReportError::Setup(format!(
            "CRD {name} not established within 30 s"
        ))),
    }
}

/// The sample as a one-slot service with a snapshot volume, in-place updates and
/// PostgreSQL persistence.
fn manifest(namespace: &str, settings: &Settings, database_url: &str, image: &str) -> Value {
    let sessions = u64::from(settings.sessions);
    let max_sessions = (sessions + sessions / 10 + 1000).max(100_000);
    let max_total_bytes = (sessions * 8192).max(256 << 20);
    let snapshot_mib = ((sessions * 4096) >> 20).max(256);
    json!({
        "apiVersion": "locus.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": SERVICE, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "port": "http",
            "updateStrategy": {"type": "InPlace"},
            "snapshot": {"sizeLimit": format!("{snapshot_mib}Mi")},
            "unreadyGrace": "120s",
            "onPodFailure": "Wait",
            "template": {"spec": {
                "terminationGracePeriodSeconds": 120,
                "containers": [{
                    "name": SERVICE,
                    "image": image,
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "env": [
                        {"name": "DATABASE_URL", "value": database_url},
                        {"name": "LOCUS_SAMPLE_PG_POOL", "value": settings.pg_pool.to_string()},
                        {"name": "LOCUS_SAMPLE_IDLE_TIMEOUT", "value": "1h"},
                        {"name": "LOCUS_SAMPLE_MAX_SESSIONS", "value": max_sessions.to_string()},
                        {"name": "LOCUS_SAMPLE_MAX_TOTAL_BYTES", "value": max_total_bytes.to_string()},
                        {"name": "LOCUS_SAMPLE_SHUTDOWN_TIMEOUT", "value": "100s"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "http"},
                        "periodSeconds": 1,
                    },
                }],
            }},
        },
    })
}

/// What the benchmark reads off the service's pod.
#[derive(Debug, Clone)]
struct PodView {
    name: String,
    uid: String,
    ip: String,
    restarts: i32,
    ready: bool,
    image: String,
    /// The node agent's container id is `locus://<pid>`.
    pid: Option<i32>,
}

fn view(pod: &Pod) -> PodView {
    let status = pod.status.clone().unwrap_or_default();
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.name == SERVICE))
        .cloned();
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ip: status.pod_ip.clone().unwrap_or_default(),
        restarts: container.as_ref().map_or(0, |c| c.restart_count),
        ready: demo::is_ready(pod),
        image: container
            .as_ref()
            .map(|c| c.image.clone())
            .unwrap_or_default(),
        pid: container
            .as_ref()
            .and_then(|c| c.container_id.as_deref())
            .and_then(|id| id.strip_prefix("locus://"))
            .and_then(|pid| pid.parse().ok()),
    }
}

/// The cluster objects of the run.
struct Service {
    namespace: String,
    services: Api<DynamicObject>,
    pods: Api<Pod>,
    maps: Api<ConfigMap>,
    /// The node agent's run directory (pod logs), on the local cluster.
    node_run_dir: Option<PathBuf>,
}

impl Service {
    async fn apply(&self, manifest: &Value) -> Result<(), ReportError> {
        self.services
            .patch(
                SERVICE,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(manifest),
            )
            .await
            .map_err(api(format!(
                "apply StatefulService {}/{SERVICE}",
                self.namespace
            )))?;
        Ok(())
    }

    /// The service's pod once it is converged: phase `Stable`, not progressing, one Ready pod,
    /// a ring naming that pod.
    async fn converged_now(&self) -> Result<Option<Pod>, kube::Error> {
        let service = self.services.get(SERVICE).await?;
        let status = service.data.get("status").unwrap_or(&Value::Null);
        if !demo::is_settled(status, service.metadata.generation) {
            return Ok(None);
        }
        let pods: Vec<Pod> = self
            .pods
            .list(&ListParams::default().labels(&format!("locus.dev/service={SERVICE}")))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let [pod] = pods.as_slice() else {
            return Ok(None);
        };
        let pod_view = view(pod);
        if !pod_view.ready {
            return Ok(None);
        }
        let ring = demo::read_ring(&self.maps, SERVICE).await?;
        let named = ring.is_some_and(|ring| {
            ring.slots()
                .iter()
                .any(|s| s.pod.name == pod_view.name && s.pod.uid == pod_view.uid)
        });
        Ok(named.then(|| pod.clone()))
    }

    async fn converged(&self, operator: &mut Operator) -> Result<Pod, ReportError> {
        let started = Instant::now();
        let mut last_error = String::new();
        loop {
            match self.converged_now().await {
                Ok(Some(pod)) => return Ok(pod),
                Ok(None) => {}
                Err(e) => last_error = e.to_string(),
            }
            operator.check()?;
            if started.elapsed() > LONG_WAIT {
                return Err(ReportError::Setup(format!(
                    "{}/{SERVICE} did not converge within {LONG_WAIT:?} {last_error}",
                    self.namespace
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The container's log file in the node agent's run directory.
    fn log_path(&self, pod: &PodView) -> Option<PathBuf> {
        self.node_run_dir
            .as_ref()
            .map(|dir| container_log(dir, &self.namespace, &pod.name, &pod.uid, SERVICE))
    }
}

/// Waits (a watch) until pod `name` — still `uid` — runs its container for the
/// `restarts`-th time and is Ready; returns when it saw that.
async fn ready_after_restart(
    pods: Api<Pod>,
    name: String,
    uid: String,
    restarts: i32,
) -> Result<Instant, ReportError> {
    let stream = watcher(
        pods,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects();
    let mut stream = std::pin::pin!(stream);
    let wait = async {
        while let Some(pod) = stream
            .try_next()
            .await
            .map_err(|e| ReportError::Setup(format!("watching pod {name}: {e}")))?
        {
            let seen = view(&pod);
            if seen.uid != uid {
                return Err(ReportError::Setup(format!(
                    "pod {name} was replaced (uid {uid} → {}): not an in-place restart",
                    seen.uid
                )));
            }
            if seen.restarts >= restarts && seen.ready {
                return Ok(Instant::now());
            }
        }
        Err(ReportError::Setup(format!("the watch of pod {name} ended")))
    };
    tokio::time::timeout(LONG_WAIT, wait).await.map_err(|_| {
        ReportError::Setup(format!("pod {name} not Ready again within {LONG_WAIT:?}"))
    })?
}

/// Polls `url` (`/readyz`, or a session's read with its `session` header) every 10 ms until
/// it fails at least once and then answers 200; returns when it first failed and when it
/// answered again.
async fn serving_again(
    http: reqwest::Client,
    url: String,
    session: Option<String>,
) -> Result<(Instant, Instant), ReportError> {
    let started = Instant::now();
    let mut down_at = None;
    loop {
        let mut request = http.get(&url).timeout(Duration::from_secs(1));
        if let Some(session) = &session {
            request = request.header(locus::headers::SESSION, session);
        }
        let ok = matches!(request.send().await, Ok(r) if r.status() == reqwest::StatusCode::OK);
        let now = Instant::now();
        match (ok, down_at) {
            (false, None) => down_at = Some(now),
            (true, Some(down)) => return Ok((down, now)),
            _ => {}
        }
        if started.elapsed() > LONG_WAIT {
            return Err(ReportError::Setup(format!(
                "{url} did not {} within {LONG_WAIT:?}",
                if down_at.is_none() {
                    "go down"
                } else {
                    "answer 200 again"
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A value of the Prometheus text `text`: the first sample of `name` whose labels contain
/// `label` (if given).
fn metric(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .find(|l| label.is_none_or(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(http: &reqwest::Client, ip: &str) -> String {
    let url = format!("http://{ip}:{PORT}/metrics");
    match http.get(&url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Runs `work`, printing a line every 10 s while it runs.
async fn with_ticker<F: Future>(what: &str, work: F) -> F::Output {
    let started = Instant::now();
    let mut work = std::pin::pin!(work);
    let every = Duration::from_secs(10);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => progress(&format!("{what}: {:.0} s so far", started.elapsed().as_secs_f64())),
        }
    }
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |t| t.split_whitespace().take(3).collect::<Vec<_>>().join("/"),
    )
}

/// The file system type `path` lives on (the longest matching mount point).
fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _device = f.next()?;
            let point = f.next()?;
            let kind = f.next()?;
            path.starts_with(point)
                .then(|| (point.len(), format!("{kind}:{point}")))
        })
        .max()
        .map_or_else(|| "?".to_owned(), |(_, k)| k)
}

/// Facts about the machine, for the report.
fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or_else(
            || "?".to_owned(),
            |kb| format!("{:.1}", kb / 1024.0 / 1024.0),
        );
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or("?", |v| v.trim_matches('"'))
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_owned(), |k| k.trim().to_owned());
    vec![
        format!(
            "cpus={}",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        ),
        format!("cpu={model:?}"),
        format!("mem_gib={mem_gib}"),
        format!("os={os:?}"),
        format!("kernel={kernel}"),
    ]
}

// ---------------------------------------------------------------------------------------
// The container's log: what the SDK and the sample say about the snapshot and the flush.

/// The container's log with terminal colour codes removed (empty if unreadable).
fn read_log(path: &Path) -> String {
    strip_ansi(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The value of `key=` in `line`, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!(" {key}=");
    let start = line.find(&needle)? + needle.len();
    line[start..].split_whitespace().next()
}

/// A `Debug`-formatted `Duration` (`1.5s`, `250.1ms`, `12µs`) in seconds.
fn debug_seconds(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("µs").or_else(|| text.strip_suffix("us")) {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// The last line of `log` containing every one of `needles`.
fn last_line<'a>(log: &'a str, needles: &[&str]) -> Option<&'a str> {
    log.lines()
        .rev()
        .find(|l| needles.iter().all(|n| l.contains(n)))
}

/// `key=value` facts of the snapshot case from the log: the snapshot written, the shutdown,
/// the write-back, the restore.
fn snapshot_facts(log: &str) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    let mut push = |key: &str, value: Option<String>| {
        facts.push((key.to_owned(), value.unwrap_or_else(|| "?".to_owned())));
    };
    let written = last_line(log, &["snapshot written", " records="]);
    push(
        "snapshot_records",
        written.and_then(|l| field(l, "records")).map(str::to_owned),
    );
    let bytes = written
        .and_then(|l| field(l, "bytes"))
        .and_then(|b| b.parse::<f64>().ok());
    push("snapshot_mb", bytes.map(|b| format!("{:.1}", b / 1e6)));
    push(
        "snapshot_write_s",
        written
            .and_then(|l| field(l, "took"))
            .and_then(debug_seconds)
            .map(|s| format!("{s:.2}")),
    );
    let shutdown = last_line(log, &["sessions handed over", " took="]);
    push(
        "shutdown_s",
        shutdown
            .and_then(|l| field(l, "took"))
            .and_then(debug_seconds)
            .map(|s| format!("{s:.2}")),
    );
    let stopped = last_line(log, &["locus-sample stopped"]);
    push(
        "written_back",
        stopped.and_then(|l| field(l, "written")).map(str::to_owned),
    );
    push(
        "write_back_failed",
        stopped.and_then(|l| field(l, "failed")).map(str::to_owned),
    );
    let restored = last_line(log, &["snapshot restored", " records="]);
    push(
        "restored",
        restored
            .and_then(|l| field(l, "restored"))
            .map(str::to_owned),
    );
    push(
        "restore_s",
        restored
            .and_then(|l| field(l, "took"))
            .and_then(debug_seconds)
            .map(|s| format!("{s:.2}")),
    );
    facts
}

/// How many snapshot restores the log records.
fn restores_in(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("snapshot restored") && l.contains(" records="))
        .count()
}

// ---------------------------------------------------------------------------------------
// The run.

/// A task aborted when its handle is dropped (a case that fails leaves no watcher behind).
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What both cases share.
struct Bench<'a> {
    settings: &'a Settings,
    service: &'a Service,
    http: reqwest::Client,
    watch: RingWatch,
    prefix: String,
}

impl Bench<'_> {
    /// Reads every session once through a fresh generator (reads only, the same sessions).
    async fn read_all(&self) -> Result<Summary, ReportError> {
        let mut reader = LoadGenerator::new(LoadConfig {
            sessions: self.settings.sessions,
            concurrency: self.settings.read_concurrency,
            read_percent: 100,
            timeout: Duration::from_secs(10),
            prefix: self.prefix.clone(),
            ..LoadConfig::new(Target::Ring(self.watch.clone()))
        })?;
        let reads = Stop::Requests(u64::from(self.settings.sessions));
        Ok(with_ticker("reading every session", reader.phase("read-all", reads)).await)
    }

    /// Times one restart: `change` makes it happen; then every session is read.
    async fn measure(
        &self,
        name: &'static str,
        load: &LoadGenerator,
        before: &PodView,
        change: impl Future<Output = Result<(), ReportError>>,
    ) -> Result<CaseReport, ReportError> {
        let load_average = load_average();
        let mut ready = Aborting(tokio::spawn(ready_after_restart(
            self.service.pods.clone(),
            before.name.clone(),
            before.uid.clone(),
            before.restarts + 1,
        )));
        let mut serving = Aborting(tokio::spawn(serving_again(
            self.http.clone(),
            format!("http://{}:{PORT}/readyz", before.ip),
            None,
        )));
        // One session, read straight from the pod.
        let session = format!("{}-0", self.prefix);
        let mut sessions = Aborting(tokio::spawn(serving_again(
            self.http.clone(),
            format!("http://{}:{PORT}/sessions/{session}", before.ip),
            Some(session),
        )));
        let started = Instant::now();
        change.await?;
        let joined = |e: tokio::task::JoinError| ReportError::Setup(e.to_string());
        let (down, up) = (&mut serving.0).await.map_err(joined)??;
        let (sessions_down, _) = (&mut sessions.0).await.map_err(joined)??;
        progress(&format!(
            "{name}: the new process answers after {:.2} s; reading every session",
            (up - started).as_secs_f64()
        ));
        let resident = metric(
            &scrape(&self.http, &before.ip).await,
            "locus_store_sessions",
            None,
        );
        let read_started = Instant::now();
        let read = self.read_all().await?;
        let done = Instant::now();
        let ready_at = (&mut ready.0).await.map_err(joined)??;
        progress(&format!(
            "{name}: read every session in {:.2} s ({} warm, {} cold, {} errors); checking the acknowledged appends",
            (done - read_started).as_secs_f64(),
            read.cache.warm,
            read.cache.cold,
            read.errors
        ));
        let verification = with_ticker("checking every session", load.verify()).await;
        Ok(CaseReport {
            name,
            down_s: (down - started).as_secs_f64(),
            sessions_down_s: (sessions_down - started).as_secs_f64(),
            serving_s: (up - started).as_secs_f64(),
            ready_s: (ready_at - started).as_secs_f64(),
            resident_at_start: resident,
            read,
            read_all_s: (done - read_started).as_secs_f64(),
            total_s: (done - started).as_secs_f64(),
            verification,
            facts: Vec::new(),
            load_average,
        })
    }

    async fn pod(&self, name: &str) -> Result<PodView, ReportError> {
        let pod = self
            .service
            .pods
            .get(name)
            .await
            .map_err(api(format!("read pod {name}")))?;
        Ok(view(&pod))
    }
}

/// Loads `settings.appends` acknowledged appends into each session, in ten steps.
async fn load_sessions(load: &mut LoadGenerator, settings: &Settings) -> String {
    let total = u64::from(settings.sessions) * u64::from(settings.appends);
    let steps = total.min(10);
    let started = Instant::now();
    let (mut sent, mut acked, mut errors) = (0u64, 0u64, 0u64);
    for step in 1..=steps {
        let chunk = total * step / steps - sent;
        let summary = load.phase("load", Stop::Requests(chunk)).await;
        sent += chunk;
        acked += summary.appends_acked;
        errors += summary.errors;
        progress(&format!(
            "loading: {sent}/{total} appends sent, {acked} acknowledged, {errors} errors ({:.0} s)",
            started.elapsed().as_secs_f64()
        ));
    }
    let total_summary = load.total("load", None);
    format!(
        "appends={} acknowledged={} errors={} elapsed_s={:.1} rps={:.0} append_p50_ms={:.2} append_p99_ms={:.2} errors_by_kind={:?}",
        total_summary.requests,
        total_summary.appends_acked,
        total_summary.errors,
        total_summary.elapsed_s,
        total_summary.throughput_rps,
        total_summary.append_latency_ms.p50,
        total_summary.append_latency_ms.p99,
        total_summary.errors_by_kind,
    )
}

/// Checks that `pid` is the container of pod `name` in `namespace` (its environment says so).
fn check_process(pid: i32, namespace: &str, name: &str) -> Result<(), ReportError> {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(io(format!("read the environment of process {pid}")))?;
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    let has = |var: String| vars.contains(&var.as_bytes());
    if has(format!("POD_NAME={name}")) && has(format!("POD_NAMESPACE={namespace}")) {
        Ok(())
    } else {
        Err(ReportError::Setup(format!(
            "process {pid} is not the container of pod {namespace}/{name}"
        )))
    }
}

/// What the run starts, stopped in this order when dropped (fields drop in order).
struct Setup {
    operator: Operator,
    _namespace: TestNamespace,
    pg: PrivatePostgres,
    /// Removed last: it holds the operator's log and PostgreSQL's data.
    _work: WorkDir,
    service: Service,
    first: PodView,
    database_url: String,
    bin_dir: PathBuf,
    kubeconfig: PathBuf,
    gateway: Ipv4Addr,
}

/// The cluster, the CRD, a namespace, the operator, PostgreSQL and the converged service.
async fn setup(settings: &Settings) -> Result<Setup, ReportError> {
    progress("starting the local cluster (or using LOCUS_E2E_KUBECONFIG's)");
    let cluster = Cluster::shared().await?;
    let client = cluster.client().await?;
    let gateway = api_server_address(cluster.kubeconfig())?;
    let pod_cidr = pod_cidr(&client).await?;
    let bin_dir = workspace_bin_dir()
        .ok_or_else(|| ReportError::Setup("cannot find the directory of this binary".into()))?;
    let work = WorkDir(std::env::temp_dir().join(format!("locus-restart-{}", random_suffix())));
    std::fs::create_dir_all(&work.0).map_err(io(format!("create {}", work.0.display())))?;
    install_crd(&client).await?;
    let namespace = cluster.namespace("restart-bench").await?;
    let ns = namespace.name().to_owned();
    let mut operator = Operator::start(
        &bin_dir.join("locus-operator"),
        cluster.kubeconfig(),
        &ns,
        work.0.join("operator.log"),
    )?;
    progress(&format!(
        "namespace {ns}; locus-operator ({}) watching it",
        bin_dir.display()
    ));
    progress(&format!(
        "PostgreSQL: {} start, then listening on {gateway} (the bridge) for {pod_cidr} only",
        settings.pg_script.display()
    ));
    let pg = PrivatePostgres::start(&settings.pg_script, work.0.join("pg"), gateway, &pod_cidr)?;
    progress(&format!("PostgreSQL {} on {}", pg.version(), pg.addr()));
    let service = Service {
        namespace: ns.clone(),
        services: Api::namespaced_with(client.clone(), &ns, &demo::resource()),
        pods: Api::namespaced(client.clone(), &ns),
        maps: Api::namespaced(client.clone(), &ns),
        node_run_dir: cluster.node_run_dir().map(Path::to_path_buf),
    };
    let database_url = pg.url_for_pods();
    service
        .apply(&manifest(&ns, settings, &database_url, IMAGE_V1))
        .await?;
    let first = view(&service.converged(&mut operator).await?);
    progress(&format!(
        "service {ns}/{SERVICE} converged: pod {} on {}",
        first.name, first.ip
    ));
    Ok(Setup {
        operator,
        _namespace: namespace,
        pg,
        _work: work,
        service,
        first,
        database_url,
        bin_dir,
        kubeconfig: cluster.kubeconfig().to_owned(),
        gateway,
    })
}

/// Case 1: the in-place update; the pod snapshots on SIGTERM and restores at start.
async fn snapshot_case(
    bench: &Bench<'_>,
    load: &LoadGenerator,
    setup: &Setup,
) -> Result<CaseReport, ReportError> {
    let first = &setup.first;
    progress(&format!(
        "snapshot: {IMAGE_V1} → {IMAGE_V2} (in-place update)"
    ));
    let v2 = manifest(
        &setup.service.namespace,
        bench.settings,
        &setup.database_url,
        IMAGE_V2,
    );
    let mut case = bench
        .measure("snapshot", load, first, setup.service.apply(&v2))
        .await?;
    let after = bench.pod(&first.name).await?;
    if after.uid != first.uid || after.image != IMAGE_V2 {
        return Err(ReportError::Setup(format!(
            "the update was not in place: pod {} uid {} image {}",
            after.name, after.uid, after.image
        )));
    }
    let log = setup
        .service
        .log_path(&after)
        .map(|p| read_log(&p))
        .unwrap_or_default();
    case.facts = snapshot_facts(&log);
    case.facts.push((
        "restarts".into(),
        format!("{}→{}", first.restarts, after.restarts),
    ));
    Ok(case)
}

/// Case 2: with every session in PostgreSQL, SIGKILL: no snapshot, each session loaded on
/// its first read.
async fn cold_case(
    bench: &Bench<'_>,
    load: &LoadGenerator,
    setup: &Setup,
    sessions: u64,
) -> Result<CaseReport, ReportError> {
    let (rows, _) = setup.pg.sessions(&bench.prefix)?;
    if rows < sessions {
        return Err(ReportError::Setup(format!(
            "only {rows} of {sessions} sessions are in PostgreSQL: the cold case would lose writes"
        )));
    }
    let before = bench.pod(&setup.first.name).await?;
    let pid = before.pid.ok_or_else(|| {
        ReportError::Setup(format!(
            "pod {} has no locus://<pid> container id",
            before.name
        ))
    })?;
    check_process(pid, &setup.service.namespace, &before.name)?;
    let log_path = setup.service.log_path(&before);
    let restores_before = log_path.as_deref().map_or(0, |p| restores_in(&read_log(p)));
    progress(&format!(
        "cold: {rows} sessions in PostgreSQL; SIGKILL to the container's process {pid}"
    ));
    let sigkill = async {
        kill(Pid::from_raw(pid), Signal::SIGKILL)
            .map_err(|e| ReportError::Setup(format!("SIGKILL to process {pid}: {e}")))
    };
    let mut case = bench.measure("cold", load, &before, sigkill).await?;
    let after = bench.pod(&setup.first.name).await?;
    if after.uid != before.uid {
        return Err(ReportError::Setup(
            "the pod was replaced after SIGKILL".into(),
        ));
    }
    let metrics = scrape(&bench.http, &after.ip).await;
    let restores_after = log_path.as_deref().map_or(0, |p| restores_in(&read_log(p)));
    case.facts = vec![
        (
            "loaded_from_postgres".into(),
            metric(
                &metrics,
                "locus_store_loads_total",
                Some("result=\"found\""),
            )
            .map_or_else(|| "?".to_owned(), |v| format!("{v:.0}")),
        ),
        (
            "snapshot_restores".into(),
            restores_after.saturating_sub(restores_before).to_string(),
        ),
        ("postgres_rows".into(), rows.to_string()),
        (
            "restarts".into(),
            format!("{}→{}", before.restarts, after.restarts),
        ),
    ];
    Ok(case)
}

fn or_unknown<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// The settings line's fields.
fn settings_fields(
    settings: &Settings,
    setup: &Setup,
    sizes: (Option<u64>, Option<f64>, Option<f64>),
) -> Vec<String> {
    let (session_bytes, resident, resident_bytes) = sizes;
    vec![
        format!("sessions={}", settings.sessions),
        format!("appends_per_session={}", settings.appends),
        format!("note_bytes={}", settings.note_bytes),
        format!("session_json_bytes={}", or_unknown(session_bytes)),
        format!("resident_sessions={}", or_unknown(resident)),
        format!("resident_bytes={}", or_unknown(resident_bytes)),
        "replicas=1".to_owned(),
        format!("load_concurrency={}", settings.load_concurrency),
        format!("read_concurrency={}", settings.read_concurrency),
        format!("pg_pool={}", settings.pg_pool),
        "idle_timeout=1h shards=4096 readiness_period_s=1".to_owned(),
        format!(
            "postgres={} fsync=off listen={}:{}",
            setup.pg.version(),
            setup.gateway,
            setup.pg.addr().port()
        ),
        format!(
            "snapshot_volume_fs={}",
            setup
                .service
                .node_run_dir
                .as_deref()
                .map_or_else(|| "?".to_owned(), fs_type)
        ),
        format!("binaries={}", setup.bin_dir.display()),
    ]
}

async fn run(settings: &Settings) -> Result<Report, ReportError> {
    let load_average_start = load_average();
    let mut setup = setup(settings).await?;
    let ring_source: OpenRing = RingSourceConfig::Kube {
        namespace: setup.service.namespace.clone(),
        service: SERVICE.to_owned(),
        kubeconfig: Some(setup.kubeconfig.clone()),
    }
    .open(&locus::Metrics::new())
    .await?;
    let watch = ring_source.watch();
    if watch.wait_for_ring(Duration::from_secs(60)).await.is_none() {
        return Err(ReportError::Setup(
            "the load generator got no ring within 60 s".into(),
        ));
    }
    let prefix = random_prefix();
    let mut load = LoadGenerator::new(LoadConfig {
        sessions: settings.sessions,
        concurrency: settings.load_concurrency,
        read_percent: 0,
        note_bytes: settings.note_bytes,
        timeout: Duration::from_secs(10),
        prefix: prefix.clone(),
        ..LoadConfig::new(Target::Ring(watch.clone()))
    })?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(200))
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| ReportError::Setup(format!("HTTP client: {e}")))?;
    let bench = Bench {
        settings,
        service: &setup.service,
        http,
        watch,
        prefix,
    };

    progress(&format!(
        "loading {} sessions × {} appends ({}-byte notes, {} in flight)",
        settings.sessions, settings.appends, settings.note_bytes, settings.load_concurrency
    ));
    let loaded = load_sessions(&mut load, settings).await;
    let metrics = scrape(&bench.http, &setup.first.ip).await;
    let resident = metric(&metrics, "locus_store_sessions", None);
    let resident_bytes = metric(&metrics, "locus_store_resident_bytes", None);

    let snapshot = snapshot_case(&bench, &load, &setup).await?;
    progress(&format!("snapshot: {}", snapshot.line()));
    setup.service.converged(&mut setup.operator).await?;
    let cold = cold_case(
        &bench,
        &load,
        &setup,
        snapshot.verification.sessions_checked,
    )
    .await?;
    progress(&format!("cold: {}", cold.line()));

    let (rows, state_bytes) = setup.pg.sessions(&bench.prefix)?;
    let session_bytes = (rows > 0).then(|| state_bytes / rows);
    let report = Report {
        settings: settings_fields(settings, &setup, (session_bytes, resident, resident_bytes)),
        machine: {
            let mut m = machine();
            m.push(format!("loadavg_start={load_average_start}"));
            m
        },
        load: loaded,
        cases: vec![snapshot, cold],
        load_average_end: load_average(),
    };
    drop(ring_source);
    drop(setup);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_have_defaults_and_bounds() {
        let s = parse_flags(args(&[])).unwrap();
        assert_eq!((s.sessions, s.appends, s.note_bytes), (100_000, 4, 200));
        let s = parse_flags(args(&["--sessions", "20000", "--read-concurrency", "8"])).unwrap();
        assert_eq!((s.sessions, s.read_concurrency), (20_000, 8));
        assert!(parse_flags(args(&["--note-bytes", "257"])).is_err());
        assert!(parse_flags(args(&["--sessions", "0"])).is_err());
        assert!(parse_flags(args(&["--sessions"])).is_err());
        assert!(parse_flags(args(&["--bogus", "1"])).is_err());
    }

    #[test]
    fn metrics_are_read_by_name_and_label() {
        let text = "# HELP x\nlocus_store_sessions 42\nlocus_store_sessions_extra 1\n\
                    locus_store_loads_total{result=\"new\"} 3\nlocus_store_loads_total{result=\"found\"} 7\n";
        assert_eq!(metric(text, "locus_store_sessions", None), Some(42.0));
        assert_eq!(
            metric(text, "locus_store_loads_total", Some("result=\"found\"")),
            Some(7.0)
        );
        assert_eq!(metric(text, "missing", None), None);
    }

    #[test]
    fn log_fields_and_durations() {
        let log = strip_ansi(
            "x \u{1b}[2m2026\u{1b}[0m INFO locus::snapshot: snapshot restored path=/s records=10 restored=9 took=1.5s\n\
             y INFO sample: snapshot restored restored=SnapshotRestore { records: 10 }\n",
        );
        let line = last_line(&log, &["snapshot restored", " records="]).unwrap();
        assert_eq!(field(line, "restored"), Some("9"));
        assert_eq!(field(line, "took").and_then(debug_seconds), Some(1.5));
        assert_eq!(restores_in(&log), 1);
        assert_eq!(debug_seconds("250ms"), Some(0.25));
        assert_eq!(debug_seconds("12µs"), Some(12e-6));
        assert_eq!(debug_seconds("abc"), None);
    }
}
