//! The agent as a whole: start-up checks, shared context, and the run until a signal.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

use crate::flags::Flags;
use crate::images::{Images, ImagesError};
use crate::network::{IpAllocator, IpCommand, remove_stale};

/// The field manager of every write the agent makes.
pub const FIELD_MANAGER: &str = "locus-node-agent";

/// How long pods get to stop when the agent itself is stopped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not running as root.
    #[error("the node agent needs root for network namespaces: run it with sudo")]
    NotRoot,
    /// No `ip` command.
    #[error("the `ip` command was not found: install iproute2 (e.g. `apt-get install iproute2`)")]
    NoIp,
    /// The bridge does not exist.
    #[error(
        "bridge {0:?} does not exist (or is not a bridge): create it first, e.g. \
         `ip link add {0} type bridge && ip addr add <gateway>/<pod-cidr prefix> dev {0} && ip link set {0} up`"
    )]
    NoBridge(String),
    /// The images file is unreadable or invalid.
    #[error(transparent)]
    Images(#[from] ImagesError),
    /// The kubeconfig is unusable.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The run directory cannot be created.
    #[error("cannot create the run directory {path}: {source}")]
    RunDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The API server could not be reached or refused the Node.
    #[error("registering node {node}: {source}")]
    Register {
        /// Node name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// The agent's own executable path is unknown.
    #[error("cannot find the agent's own executable: {0}")]
    SelfExe(std::io::Error),
}

/// What every part of the agent shares.
pub struct Agent {
    /// Admin client.
    pub client: Client,
    /// The flags.
    pub flags: Flags,
    /// Image mapping.
    pub images: Images,
    /// The `ip` command.
    pub ip: IpCommand,
    /// This executable (re-run as `exec-container`).
    pub exe: PathBuf,
    /// The cluster CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// The API server's port (for `KUBERNETES_SERVICE_PORT`).
    pub api_port: u16,
    /// Pod addresses.
    pub ipam: Mutex<IpAllocator>,
    /// The control plane's version, reported as the kubelet version.
    pub kube_version: String,
}

impl Agent {
    /// Allocates a pod address.
    pub fn allocate_ip(&self) -> Option<Ipv4Addr> {
        self.ipam
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allocate()
    }

    /// Releases a pod address.
    pub fn release_ip(&self, ip: Ipv4Addr) {
        self.ipam
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .release(ip);
    }
}

/// Checks that must pass before anything else: root, `ip`, the bridge, the images file.
pub fn check_host(flags: &Flags) -> Result<(IpCommand, Images), StartError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(StartError::NotRoot);
    }
    let ip = IpCommand::find().ok_or(StartError::NoIp)?;
    if let Some(missing) = flags
        .bridges()
        .find(|b| !Path::new("/sys/class/net").join(b).join("bridge").is_dir())
    {
        return Err(StartError::NoBridge(missing.to_owned()));
    }
    let images = Images::open(&flags.images)?;
    Ok((ip, images))
}

/// The cluster CA (PEM) and the API server port from the kubeconfig's current cluster.
pub fn kubeconfig_facts(
    kubeconfig: &Kubeconfig,
    path: &Path,
) -> Result<(Vec<u8>, u16), StartError> {
    let bad = |reason: String| StartError::Kubeconfig {
        path: path.display().to_string(),
        reason,
    };
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .or_else(|| kubeconfig.clusters.first().map(|c| c.name.clone()))
        .ok_or_else(|| bad("has no cluster".into()))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| bad(format!("has no cluster named {cluster_name:?}")))?;
    let ca_pem = if let Some(data) = &cluster.certificate_authority_data {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| bad(format!("certificate-authority-data is not base64: {e}")))?
    } else if let Some(file) = &cluster.certificate_authority {
        std::fs::read(file).map_err(|e| bad(format!("certificate-authority {file}: {e}")))?
    } else {
        return Err(bad(
            "the cluster has no certificate-authority(-data): pods need the CA".into(),
        ));
    };
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| bad("the cluster has no server".into()))?;
    let port = server_port(&server)
        .ok_or_else(|| bad(format!("cannot read a port from server {server:?}")))?;
    Ok((ca_pem, port))
}

/// The port of an `https://host:port` URL (443 when absent).
pub fn server_port(server: &str) -> Option<u16> {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let after_host = if host_port.starts_with('[') {
        host_port.split_once(']')?.1
    } else {
        host_port.rfind(':').map_or("", |i| &host_port[i..])
    };
    match after_host.strip_prefix(':') {
        Some(p) => p.parse().ok(),
        None if server.starts_with("https://") => Some(443),
        None => Some(80),
    }
}

/// Builds the agent: reads the kubeconfig, connects, cleans leftovers.
pub async fn build(flags: Flags, ip: IpCommand, images: Images) -> Result<Arc<Agent>, StartError> {
    let path = flags.kubeconfig.clone();
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| StartError::Kubeconfig {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let (ca_pem, api_port) = kubeconfig_facts(&kubeconfig, &path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| StartError::Kubeconfig {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    let client = Client::try_from(config).map_err(|e| StartError::Kubeconfig {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let kube_version = client
        .apiserver_version()
        .await
        .map_err(|source| StartError::Register {
            node: flags.node_name.clone(),
            source,
        })?
        .git_version;
    std::fs::create_dir_all(flags.run_dir.join("pods")).map_err(|source| StartError::RunDir {
        path: flags.run_dir.display().to_string(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(StartError::SelfExe)?;
    let removed = remove_stale(&ip, &flags.bridge, &flags.extra_bridges).await;
    if removed > 0 {
        tracing::info!(
            "removed {removed} namespaces/veths left by an earlier agent on {}",
            flags.bridge
        );
    }
    let ipam = Mutex::new(IpAllocator::new(flags.pod_cidr, flags.gateway));
    Ok(Arc::new(Agent {
        client,
        flags,
        images,
        ip,
        exe,
        ca_pem,
        api_port,
        ipam,
        kube_version,
    }))
}

/// Runs the node until SIGTERM/SIGINT, then stops every pod and removes their networks.
pub async fn run(agent: Arc<Agent>) -> Result<(), StartError> {
    let machine = crate::node::Machine::detect(&agent.flags.run_dir);
    let since = crate::status::now();
    let node_uid = crate::node::register(&agent, &machine, since)
        .await
        .map_err(|source| StartError::Register {
            node: agent.flags.node_name.clone(),
            source,
        })?;
    tracing::info!(node = %agent.flags.node_name, "node registered");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let heartbeats = tokio::spawn(crate::node::heartbeats(
        agent.clone(),
        machine,
        node_uid,
        since,
        shutdown_rx.clone(),
    ));
    let pods = tokio::spawn(crate::pods::run(agent.clone(), shutdown_rx));
    wait_for_signal().await;
    tracing::info!("stopping: pods get {SHUTDOWN_GRACE:?} to exit");
    let _ = shutdown_tx.send(true);
    let _ = pods.await;
    let _ = heartbeats.await;
    let removed = remove_stale(&agent.ip, &agent.flags.bridge, &agent.flags.extra_bridges).await;
    if removed > 0 {
        tracing::warn!("removed {removed} namespaces/veths that pods left behind");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_server_urls() {
        assert_eq!(server_port("https://10.213.1.1:6443"), Some(6443));
        assert_eq!(server_port("https://10.213.1.1:6443/"), Some(6443));
        assert_eq!(server_port("https://[::1]:7443"), Some(7443));
        assert_eq!(server_port("https://example.com"), Some(443));
        assert_eq!(server_port("ftp://x"), None);
    }

    #[test]
    fn ca_and_port_come_from_the_current_cluster() {
        let text = r"
apiVersion: v1
kind: Config
current-context: admin
clusters:
- name: other
  cluster: {server: 'https://1.2.3.4:1', certificate-authority-data: 'eHg='}
- name: locus
  cluster: {server: 'https://10.213.1.1:6443', certificate-authority-data: 'LS0tQ0EtLS0='}
contexts:
- name: admin
  context: {cluster: locus, user: admin}
users:
- name: admin
  user: {}
";
        let kc = Kubeconfig::from_yaml(text).unwrap();
        let (ca, port) = kubeconfig_facts(&kc, Path::new("/k")).unwrap();
        assert_eq!(ca, b"---CA---");
        assert_eq!(port, 6443);
    }
}
