//! The local Kubernetes cluster: a real control plane plus the project's node agent.
//!
//! Two halves:
//! - [`local::LocalCluster`] starts and stops the processes. The `locus-cluster` binary runs it
//!   (`make demo` in the foreground; tests as a supervisor).
//! - [`Cluster`] is what tests use: [`Cluster::shared`] starts one supervisor per test
//!   binary and hands out clients, fresh namespaces and paths. The supervisor watches its
//!   stdin; when the test process exits for any reason (success, panic, Ctrl-C, SIGKILL) the
//!   pipe closes and the supervisor stops every process, deletes every pod network namespace,
//!   the bridge and the bridge's iptables FORWARD rules, and removes the run directory.
//!   `locus-cluster clean` does the same for clusters whose supervisor was killed.

pub mod certs;
pub mod firewall;
pub mod kubeconfig;
pub mod local;
pub mod network;
pub mod process;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use local::{ClusterInfo, LocalCluster, LocalClusterConfig};

/// Everything that can go wrong starting or using the local cluster. Each message says
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Network namespaces, bridges and veths need root.
    #[error(
        "the local cluster needs root for network namespaces and bridges: run it as root (e.g. `sudo -E make test`)"
    )]
    NotRoot,
    /// A Kubernetes binary is not where it should be.
    #[error(
        "{name} is missing from {dir}: run `e2e/cluster/build.sh` (it builds the control plane from Go modules) or set LOCUS_K8S_BIN to a directory holding it"
    )]
    MissingBinary {
        /// The binary.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// Building the control plane failed.
    #[error("building the control plane failed: {0}")]
    Build(String),
    /// A file or process operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating certificates failed.
    #[error("could not generate the {what} certificate or key: {source}")]
    Pki {
        /// Which certificate or key.
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// Setting up the bridge failed.
    #[error("cluster network: {0}")]
    Network(String),
    /// The bridge could not be accepted in the iptables FORWARD chain on a host where bridged
    /// traffic passes iptables.
    #[error(
        "could not accept bridge {bridge} in the iptables FORWARD chain: {source}. Bridged traffic passes iptables on this host (/proc/sys/net/bridge/bridge-nf-call-iptables is 1), so with a FORWARD policy of DROP (dockerd sets it) pods could not reach each other: make `iptables -S FORWARD` work as root"
    )]
    Firewall {
        /// The cluster's bridge.
        bridge: String,
        /// The cause.
        #[source]
        source: firewall::FirewallError,
    },
    /// A component died.
    #[error("{name} exited ({status}); last log lines:\n{log_tail}")]
    ComponentExited {
        /// The component.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}\n{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
        /// Logs or state that explain it.
        detail: String,
    },
    /// A kubeconfig could not be loaded.
    #[error("could not load kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
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
    /// The supervisor process failed to start the cluster.
    #[error("the local cluster did not start: {0}")]
    Supervisor(String),
}

/// Builds a client from a kubeconfig file (ignoring the `KUBECONFIG` environment).
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client, ClusterError> {
    let err = |message: String| ClusterError::Kubeconfig {
        path: kubeconfig.to_owned(),
        message,
    };
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// The cluster a test binary shares between its tests.
#[derive(Debug)]
pub struct Cluster {
    info: ClusterInfo,
    /// The supervisor and its stdin (the lifeline): both live as long as the test process.
    /// `None` on an external cluster (`LOCUS_E2E_KUBECONFIG`).
    supervisor: Option<Mutex<(Child, ChildStdin)>>,
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The directory holding the workspace's built binaries (`target/<profile>`), found from
/// the running executable: a test binary lives in `target/<profile>/deps`.
pub fn workspace_bin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

impl Cluster {
    /// The shared cluster of this test binary, started on first use (building the control
    /// plane first if it is not cached, which takes many minutes once).
    ///
    /// With `LOCUS_E2E_KUBECONFIG` set, the tests run against that cluster instead (kind, for
    /// users with Docker); `kubectl` and `helm` then come from `PATH`.
    pub async fn shared() -> Result<&'static Cluster, ClusterError> {
        Self::shared_with(ClusterOptions::default()).await
    }

    /// [`Cluster::shared`], started with `options` if this is the first use in the test
    /// binary. Fails if the cluster is already up and cannot meet them (a test that needs a
    /// large node asks before any other test starts the cluster). An external cluster
    /// (`LOCUS_E2E_KUBECONFIG`) is taken as it is.
    pub async fn shared_with(options: ClusterOptions) -> Result<&'static Cluster, ClusterError> {
        let cell = tokio::task::spawn_blocking(move || {
            SHARED.get_or_init(|| startsupervisor(options).map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| ClusterError::Supervisor(e.to_string()))?;
        let cluster = cell
            .as_ref()
            .map_err(|e| ClusterError::Supervisor(e.clone()))?;
        if cluster.supervisor.is_some() && cluster.info.pod_capacity < options.pods {
            return Err(ClusterError::Supervisor(format!(
                "the shared cluster's node admits {} pods ({}), {} were asked for: ask with Cluster::shared_with before the first Cluster::shared",
                cluster.info.pod_capacity, cluster.info.pod_cidr, options.pods
            )));
        }
        Ok(cluster)
    }

    /// What the cluster reported when it became ready.
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// The node agent's run directory; pod logs are under `pods/`. `None` on an external
    /// cluster, whose pod logs are only reachable through `kubectl logs`.
    pub fn node_run_dir(&self) -> Option<&Path> {
        self.supervisor
            .as_ref()
            .map(|_| self.info.node_run_dir.as_path())
    }

    /// A new admin client. Each test runs its own tokio runtime, so clients are not shared.
    pub async fn client(&self) -> Result<kube::Client, ClusterError> {
        client_for(&self.info.kubeconfig).await
    }

    /// `kubectl` against this cluster.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.info.bin_dir.join("kubectl"));
        c.arg(format!("--kubeconfig={}", self.info.kubeconfig.display()));
        c
    }

    /// A binary built with the control plane (`kubectl`, `helm`, ...).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.info.bin_dir.join(name)
    }

    /// A fresh namespace named `<prefix>-<random>`, ready for pods (its default
    /// ServiceAccount exists). It is deleted when the handle drops.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, ClusterError> {
        let client = self.client().await?;
        let name = format!("{prefix}-{}", random_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"locus.dev/test": "true"}}
        }))
        .map_err(|e| ClusterError::Supervisor(e.to_string()))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| ClusterError::Api {
                action: format!("create namespace {name}"),
                source,
            })?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
        crate::support::wait::until(
            Duration::from_secs(60),
            &format!("the default ServiceAccount in {name}"),
            || {
                let sas = sas.clone();
                async move { sas.get_opt("default").await }
            },
        )
        .await
        .map_err(|e| ClusterError::Supervisor(e.to_string()))?;
        Ok(TestNamespace {
            name,
            kubectl: self.kubectl(),
        })
    }
}

/// What a test needs of the local cluster it shares ([`Cluster::shared_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Pods the node must admit at once. Up to 240 the default /24 pod range serves; beyond,
    /// the cluster takes a wider range ([`network::pod_prefix_for`]; at most 971 pods).
    pub pods: u32,
}

impl ClusterOptions {
    /// Options for a node that admits at least `pods` pods.
    pub fn pods(pods: u32) -> Self {
        Self { pods }
    }
}

/// A namespace for one test; deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: Command,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("LOCUS_KEEP").is_some() {
            return;
        }
        let _ = self
            .kubectl
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A short random suffix for names (namespace, run dirs).
pub fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = u64::from(nanos) ^ (u64::from(std::process::id()) << 32);
    let mixed = mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:06x}", (mixed >> 40) & 0xff_ffff)
}

fn external_cluster(kubeconfig: PathBuf) -> Cluster {
    let bin_dir = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| dir.join("kubectl").is_file()))
        .unwrap_or_default();
    Cluster {
        info: ClusterInfo {
            kubeconfig,
            bin_dir,
            run_dir: PathBuf::new(),
            node_run_dir: PathBuf::new(),
            server: String::new(),
            node_name: None,
            bridge: String::new(),
            pod_cidr: String::new(),
            pod_capacity: 0,
            start_seconds: 0.0,
        },
        supervisor: None,
    }
}

fn startsupervisor(options: ClusterOptions) -> Result<Cluster, ClusterError> {
    if let Some(kubeconfig) = std::env::var_os("LOCUS_E2E_KUBECONFIG") {
        return Ok(external_cluster(kubeconfig.into()));
    }
    let bin = match std::env::var_os("LOCUS_CLUSTER_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_bin_dir()
            .map(|d| d.join("locus-cluster"))
            .ok_or_else(|| ClusterError::Supervisor("cannot locate locus-cluster".into()))?,
    };
    let mut command = Command::new(&bin);
    command.args(["up", "--json", "--lifeline"]);
    if options.pods > 0 {
        command.args(["--pods", &options.pods.to_string()]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| ClusterError::Io {
            action: format!(
                "start {} (build it with `cargo build -p locus-e2e --bins`)",
                bin.display()
            ),
            source,
        })?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| ClusterError::Supervisor("no stdin pipe".into()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| ClusterError::Supervisor("no stdout pipe".into()))?;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|source| ClusterError::Io {
            action: "read from locus-cluster".into(),
            source,
        })?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(error) = msg.get("error").and_then(|e| e.as_str()) {
            return Err(ClusterError::Supervisor(error.to_owned()));
        }
        if let Some(ready) = msg.get("ready") {
            let info: ClusterInfo = serde_json::from_value(ready.clone())
                .map_err(|e| ClusterError::Supervisor(e.to_string()))?;
            return Ok(Cluster {
                info,
                supervisor: Some(Mutex::new((child, stdin))),
            });
        }
    }
    let status = child.wait().ok().map(|s| s.to_string()).unwrap_or_default();
    Err(ClusterError::Supervisor(format!(
        "locus-cluster exited ({status}) before the cluster was ready; see its output above"
    )))
}
