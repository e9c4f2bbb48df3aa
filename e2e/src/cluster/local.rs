//! Starting and stopping the local cluster's processes: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and the node agent.
//!
//! [`LocalCluster::start`] is what the `locus-cluster` supervisor runs; tests reach the
//! cluster through [`super::Cluster`], which starts that supervisor.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::certs::Pki;
use super::kubeconfig;
use super::network::ClusterNetwork;
use super::process::Component;
use crate::support::logs::tail;

/// The service range. Nothing serves it (there is no kube-proxy); pods blackhole it.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    /// Directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl.
    pub bin_dir: PathBuf,
    /// Directory for data, certificates, kubeconfigs and logs.
    pub run_dir: PathBuf,
    /// The node agent binary; `None` starts a control plane without a node.
    pub node_agent: Option<PathBuf>,
    /// Container images the node agent can run: image → local executable.
    pub images: Vec<(String, PathBuf)>,
    /// Name of the node the agent registers.
    pub node_name: String,
    /// Prefix length of the pod range: [`super::network::DEFAULT_POD_PREFIX`] (a /24, 240
    /// pods) unless more pods are needed ([`super::network::pod_prefix_for`]).
    pub pod_prefix: u8,
}

/// What a running cluster tells its users (printed as JSON by `locus-cluster up --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Admin kubeconfig (`system:masters`).
    pub kubeconfig: PathBuf,
    /// The Kubernetes binaries (kubectl, helm, ...).
    pub bin_dir: PathBuf,
    /// The cluster's run directory.
    pub run_dir: PathBuf,
    /// The node agent's run directory (pod logs live under `pods/`).
    pub node_run_dir: PathBuf,
    /// The API server's URL.
    pub server: String,
    /// The node's name, if a node agent runs.
    pub node_name: Option<String>,
    /// The bridge pods attach to.
    pub bridge: String,
    /// The pod range.
    pub pod_cidr: String,
    /// How many pods the node admits ([`super::network::node_capacity`] of its range);
    /// 0 on an external cluster.
    #[serde(default)]
    pub pod_capacity: u32,
    /// Seconds from start to a ready cluster.
    pub start_seconds: f64,
}

/// A running local cluster. Dropping it stops everything it started.
#[derive(Debug)]
pub struct LocalCluster {
    info: ClusterInfo,
    network: ClusterNetwork,
    /// In start order; stopped in reverse.
    components: Vec<Component>,
}

fn free_port(ip: IpAddr) -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((ip, 0)).map_err(|source| ClusterError::Io {
        action: format!("find a free port on {ip}"),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| ClusterError::Io {
            action: "read a bound port".into(),
            source,
        })
}

fn path_arg(flag: &str, p: &Path) -> String {
    format!("--{flag}={}", p.display())
}

fn require_binary(bin_dir: &Path, name: &str) -> Result<PathBuf, ClusterError> {
    let p = bin_dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ClusterError::MissingBinary {
            name: name.to_owned(),
            dir: bin_dir.to_owned(),
        })
    }
}

impl LocalCluster {
    /// Starts the cluster and waits until it is ready: the API server answers `/readyz`,
    /// the controller manager has created the default ServiceAccount, and (with a node
    /// agent) the node is Ready and schedulable.
    pub async fn start(config: LocalClusterConfig) -> Result<Self, ClusterError> {
        let started = Instant::now();
        if !nix::unistd::Uid::effective().is_root() {
            return Err(ClusterError::NotRoot);
        }
        let bins = [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ];
        for b in bins {
            require_binary(&config.bin_dir, b)?;
        }
        let run = &config.run_dir;
        for d in ["pki", "etcd", "logs", "node"] {
            std::fs::create_dir_all(run.join(d)).map_err(|source| ClusterError::Io {
                action: format!("create {}", run.join(d).display()),
                source,
            })?;
        }
        let logs = run.join("logs");

        let network = ClusterNetwork::create(run, config.pod_prefix)?;
        let mut cluster = Self {
            info: ClusterInfo {
                kubeconfig: run.join("admin.kubeconfig"),
                bin_dir: config.bin_dir.clone(),
                run_dir: run.clone(),
                node_run_dir: run.join("node"),
                server: String::new(),
                node_name: None,
                bridge: network.bridge.clone(),
                pod_cidr: network.pod_cidr.clone(),
                pod_capacity: super::network::node_capacity(network.pod_prefix).unwrap_or_default(),
                start_seconds: 0.0,
            },
            network,
            components: Vec::new(),
        };
        let gateway = IpAddr::V4(cluster.network.gateway);
        progress(&format!(
            "network: bridge {}{} with {}{}",
            cluster.network.bridge,
            if cluster.network.leaves.is_empty() {
                String::new()
            } else {
                format!(" (and {})", cluster.network.leaves.join(", "))
            },
            cluster.network.pod_cidr,
            if cluster.network.forward_accepted {
                ", accepted in iptables FORWARD"
            } else {
                ""
            }
        ));

        let pki = Pki::generate(&run.join("pki"), &[gateway])?;

        let client = cluster
            .start_api_server(&config, &pki, gateway, &logs)
            .await?;
        progress("kube-apiserver is ready");
        cluster.start_controllers(&config, &pki, &logs)?;

        // The controller manager's ServiceAccount controller creates `default/default`.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        cluster
            .wait_for(
                "kube-controller-manager to create the default ServiceAccount",
                Duration::from_secs(90),
                || {
                    let sas = sas.clone();
                    async move { Ok(sas.get_opt("default").await.ok().flatten()) }
                },
            )
            .await?;
        progress("kube-controller-manager is running");

        if let Some(agent) = &config.node_agent {
            cluster.start_node(&config, agent, &client, &logs).await?;
        }
        cluster.info.start_seconds = started.elapsed().as_secs_f64();
        Ok(cluster)
    }

    /// Starts etcd and the API server and waits for `/readyz`; returns an admin client.
    async fn start_api_server(
        &mut self,
        config: &LocalClusterConfig,
        pki: &Pki,
        gateway: IpAddr,
        logs: &Path,
    ) -> Result<kube::Client, ClusterError> {
        let cluster = self;
        let run = &config.run_dir;
        // etcd on loopback; nothing but the API server talks to it.
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let etcd_port = free_port(loopback)?;
        let peer_port = free_port(loopback)?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_args = vec![
            format!("--name=locus-{}", cluster.network.index),
            path_arg("data-dir", &run.join("etcd")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!(
                "--initial-cluster=locus-{}=http://127.0.0.1:{peer_port}",
                cluster.network.index
            ),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        cluster.spawn("etcd", &config.bin_dir.join("etcd"), &etcd_args, logs)?;

        // The API server listens on the bridge address so pods reach it too.
        let api_port = free_port(gateway)?;
        let server = format!("https://{gateway}:{api_port}");
        cluster.info.server.clone_from(&server);
        let api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={gateway}"),
            format!("--advertise-address={gateway}"),
            format!("--secure-port={api_port}"),
            path_arg("tls-cert-file", &pki.serving.cert),
            path_arg("tls-private-key-file", &pki.serving.key),
            path_arg("client-ca-file", &pki.ca_cert),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            path_arg("service-account-key-file", &pki.sa_pub),
            path_arg("service-account-signing-key-file", &pki.sa_key),
            "--allow-privileged=true".into(),
            // The `kubernetes` Service gets no endpoints: pods dial the API server directly.
            "--endpoint-reconciler-type=none".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--v=1".into(),
        ];
        cluster.spawn(
            "kube-apiserver",
            &config.bin_dir.join("kube-apiserver"),
            &api_args,
            logs,
        )?;

        let kcm_kubeconfig = run.join("controller-manager.kubeconfig");
        let sched_kubeconfig = run.join("scheduler.kubeconfig");
        kubeconfig::write(
            &cluster.info.kubeconfig,
            &server,
            &pki.ca_cert,
            "locus-admin",
            &pki.admin,
        )?;
        kubeconfig::write(
            &kcm_kubeconfig,
            &server,
            &pki.ca_cert,
            "system:kube-controller-manager",
            &pki.controller_manager,
        )?;
        kubeconfig::write(
            &sched_kubeconfig,
            &server,
            &pki.ca_cert,
            "system:kube-scheduler",
            &pki.scheduler,
        )?;

        let client = super::client_for(&cluster.info.kubeconfig).await?;
        cluster
            .wait_for(
                "the API server to be ready",
                Duration::from_secs(90),
                || {
                    let client = client.clone();
                    async move {
                        let req = http::Request::get("/readyz").body(Vec::new());
                        let Ok(req) = req else { return Ok(None) };
                        Ok(client.request_text(req).await.ok().filter(|t| t == "ok"))
                    }
                },
            )
            .await?;
        Ok(client)
    }

    /// Starts kube-controller-manager and kube-scheduler, each under its own identity.
    fn start_controllers(
        &mut self,
        config: &LocalClusterConfig,
        pki: &Pki,
        logs: &Path,
    ) -> Result<(), ClusterError> {
        let cluster = self;
        let run = &config.run_dir;
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let kcm_kubeconfig = run.join("controller-manager.kubeconfig");
        let sched_kubeconfig = run.join("scheduler.kubeconfig");
        let kcm_args = vec![
            path_arg("kubeconfig", &kcm_kubeconfig),
            path_arg("authentication-kubeconfig", &kcm_kubeconfig),
            path_arg("authorization-kubeconfig", &kcm_kubeconfig),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port(loopback)?),
            path_arg("root-ca-file", &pki.ca_cert),
            path_arg("service-account-private-key-file", &pki.sa_key),
            path_arg("cluster-signing-cert-file", &pki.ca_cert),
            path_arg("cluster-signing-key-file", &pki.ca_key),
            "--use-service-account-credentials=true".into(),
            "--leader-elect=false".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--v=1".into(),
        ];
        cluster.spawn(
            "kube-controller-manager",
            &config.bin_dir.join("kube-controller-manager"),
            &kcm_args,
            logs,
        )?;
        let sched_args = vec![
            path_arg("kubeconfig", &sched_kubeconfig),
            path_arg("authentication-kubeconfig", &sched_kubeconfig),
            path_arg("authorization-kubeconfig", &sched_kubeconfig),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port(loopback)?),
            "--leader-elect=false".into(),
            "--v=1".into(),
        ];
        cluster.spawn(
            "kube-scheduler",
            &config.bin_dir.join("kube-scheduler"),
            &sched_args,
            logs,
        )?;

        Ok(())
    }

    async fn start_node(
        &mut self,
        config: &LocalClusterConfig,
        agent: &Path,
        client: &kube::Client,
        logs: &Path,
    ) -> Result<(), ClusterError> {
        let images_file = self.info.run_dir.join("images.yaml");
        write_images(&images_file, &config.images)?;
        let mut args = vec![
            path_arg("kubeconfig", &self.info.kubeconfig),
            format!("--node-name={}", config.node_name),
            format!("--bridge={}", self.network.bridge),
            format!("--pod-cidr={}", self.network.pod_cidr),
            format!("--gateway={}", self.network.gateway),
            format!("--service-cidr={SERVICE_CIDR}"),
            path_arg("images", &images_file),
            path_arg("run-dir", &self.info.node_run_dir),
        ];
        if !self.network.leaves.is_empty() {
            args.push(format!("--extra-bridges={}", self.network.leaves.join(",")));
        }
        self.spawn("node-agent", agent, &args, logs)?;
        self.info.node_name = Some(config.node_name.clone());
        let nodes: Api<Node> = Api::all(client.clone());
        let name = config.node_name.clone();
        self.wait_for(
            &format!("node {name} to be Ready and schedulable"),
            Duration::from_secs(90),
            || {
                let nodes = nodes.clone();
                let name = name.clone();
                async move {
                    let Ok(Some(node)) = nodes.get_opt(&name).await else {
                        return Ok(None);
                    };
                    Ok(node_schedulable(&node).then_some(()))
                }
            },
        )
        .await?;
        progress(&format!("node {name} is Ready"));
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        logs: &Path,
    ) -> Result<(), ClusterError> {
        let c = Component::start(name, program, args, logs)?;
        self.components.push(c);
        let groups: Vec<i32> = self.components.iter().map(Component::group).collect();
        self.network.record_process_groups(&groups);
        Ok(())
    }

    /// Polls `probe` until it yields a value, failing early (with the log's tail) if a
    /// component exits, and with a timeout error naming `what`.
    async fn wait_for<T, F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, ClusterError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            for c in &mut self.components {
                c.check_running()?;
            }
            if let Some(v) = probe().await? {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .components
                    .iter()
                    .map(|c| format!("--- {} ---\n{}", c.name(), tail(c.log(), 8)))
                    .collect();
                return Err(ClusterError::Timeout {
                    what: what.to_owned(),
                    after: timeout,
                    detail: logs.join("\n"),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// What users need to reach the cluster.
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// Stops every process (the node agent first, so it can stop its pods), then removes
    /// the network: pod namespaces, the bridge and its iptables FORWARD rules. Idempotent.
    pub fn stop(&mut self) {
        while let Some(mut c) = self.components.pop() {
            let grace = if c.name() == "node-agent" {
                Duration::from_secs(40)
            } else {
                Duration::from_secs(10)
            };
            c.stop(grace);
        }
        self.network.remove();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node is schedulable once it reports Ready and the not-ready taint is gone.
pub fn node_schedulable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == "node.kubernetes.io/not-ready"));
    ready && !tainted
}

fn write_images(path: &Path, images: &[(String, PathBuf)]) -> Result<(), ClusterError> {
    use std::fmt::Write as _;
    let mut text = String::from(
        "# Container images this node can run, mapped to local executables.\nimages:\n",
    );
    for (image, exe) in images {
        let _ = writeln!(
            text,
            "  {image:?}:\n    entrypoint: [{exe:?}]",
            exe = exe.display().to_string()
        );
    }
    std::fs::write(path, text).map_err(|source| ClusterError::Io {
        action: format!("write {}", path.display()),
        source,
    })
}

/// Prints a progress line for a human watching a long start.
pub fn progress(line: &str) {
    eprintln!("[locus-cluster] {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_file_is_valid_yaml_with_every_image() {
        let dir = std::env::temp_dir().join(format!("locus-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("images.yaml");
        write_images(
            &path,
            &[
                ("locus/test-server:dev".into(), "/bin/a b".into()),
                ("locus/sample:dev".into(), "/bin/c".into()),
            ],
        )
        .unwrap();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            doc["images"]["locus/test-server:dev"]["entrypoint"][0],
            serde_yaml::Value::from("/bin/a b")
        );
        assert_eq!(
            doc["images"]["locus/sample:dev"]["entrypoint"][0],
            serde_yaml::Value::from("/bin/c")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn schedulable_needs_ready_and_no_not_ready_taint() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert!(!node_schedulable(&node));
        node.spec = None;
        assert!(node_schedulable(&node));
        node.status = None;
        assert!(!node_schedulable(&node));
    }
}
