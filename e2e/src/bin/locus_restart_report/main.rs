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
//!    binary): the operator updates the pod in place; on SIGTERM the pod, which reads its
//!    own Pod and finds it restarting in place, stops and writes its snapshot with every
//!    changed session marked unsaved, writing nothing back (ADR 0004; a build before it wrote
//!    them back first); the node agent restarts the container in the same pod and the new
//!    process restores the snapshot before it serves, then writes the unsaved sessions back
//!    in the background (the report waits for that before the cold case, and prints when it
//!    finished);
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
//! once more and checked against the acknowledged appends (lost writes must be 0). What the
//! restore found and did is read off the new process's `/metrics` (the SDK's
//! `locus_snapshot_*`, the store's `locus_store_*`; see [`facts`]), never from log wording.
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

//!
//! The program's parts: [`settings`] (flags), [`service`] (the cluster side: the manifest,
//! the pod, the waits), [`cases`] (the two restarts, measured), [`facts`] (read off
//! `/metrics`), [`report`] (the output) and [`host`] (the machine). The operator, the CRD and
//! the namespace come from the crate's shared helpers ([`locus_e2e::support`],
//! [`locus_e2e::cluster`]).

mod cases;
mod facts;
mod host;
mod report;
mod service;
mod settings;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kube::Api;
use locus::RingSource as _;
use locus_e2e::cluster::{Cluster, ClusterError, TestNamespace, random_suffix, workspace_bin_dir};
use locus_e2e::postgres::{PostgresError, PrivatePostgres};
use locus_e2e::support::operator::HostOperator;
use locus_e2e::support::prometheus::{scrape, value};
use locus_e2e::support::{SupportError, crd, init_tracing, service::resource};
use locus_examples::loadgen::{LoadConfig, LoadGenerator, Target, random_prefix};
use locus_examples::ring_source::{OpenRing, RingSourceConfig};

use cases::{Bench, cold_case, load_sessions, snapshot_case};
use host::{load_average, machine};
use report::{Report, settings_fields};
use service::{PodView, Service, api_server_address, manifest, pod_cidr, view};
use settings::{Settings, parse_flags};

/// Name of the `StatefulService` (and of its only container).
const SERVICE: &str = "ledger";
/// The image the service starts with.
const IMAGE_V1: &str = "locus/sample:dev";
/// The image of the in-place update: the node agent maps it to the same binary.
const IMAGE_V2: &str = "locus/sample:v2";
/// The sample's container port.
const PORT: u16 = 8080;
/// Longest wait for the service to converge, a restart to finish, a read-back.
const LONG_WAIT: Duration = Duration::from_secs(300);

/// Field manager of this program's applies.
const MANAGER: &str = "locus-restart-report";

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
    /// A shared helper (the operator process, the CRD) failed.
    #[error(transparent)]
    Support(#[from] SupportError),
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

/// A progress line for whoever watches a long run.
fn progress(line: &str) {
    eprintln!("[restart-report] {line}");
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing("warn");
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

/// What the run starts, stopped in this order when dropped (fields drop in order).
struct Setup {
    operator: HostOperator,
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
    crd::install(&client).await?;
    let namespace = cluster.namespace("restart-bench").await?;
    let ns = namespace.name().to_owned();
    let mut operator = HostOperator::options(
        &bin_dir,
        cluster.kubeconfig(),
        &ns,
        work.0.join("operator.log"),
    )
    .start()?;
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
        services: Api::namespaced_with(client.clone(), &ns, &resource()),
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
    let metrics = scrape(&bench.http, &format!("{}:{PORT}", setup.first.ip)).await;
    let resident = value(&metrics, "locus_store_sessions", None);
    let resident_bytes = value(&metrics, "locus_store_resident_bytes", None);

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
