//! Fault injection on the local cluster's pods: network partitions and pauses.
//!
//! The local cluster runs each pod as processes in the pod's own network namespace
//! (`locus-<bridge>-<first 8 hex digits of the pod UID>`, see the node agent's `network`
//! module), on a bridge whose address (the *gateway*) is where the API server listens and
//! where the host — the node agent's probes, the tests' load generator — talks to pods from.
//! So a fault is a change inside one pod's namespace:
//!
//! | helper | does | undone by |
//! |---|---|---|
//! | [`partition_from_pods`] | iptables in the pod's namespace: accept loopback and the gateway (API server, probes, load generator), drop the rest of the pod range, both directions | [`NetFault::heal`], dropping the guard, [`heal`] |
//! | [`cut_from_api_server`] | drop only the API server's address and port, both directions | the same |
//! | [`pause`] | SIGSTOP to every process of the pod (`ip netns pids`) | [`Paused::resume`], dropping the guard, [`resume`] |
//!
//! Rules go into chains of their own (`LOCUS-CHAOS-…`) jumped to from `INPUT` and
//! `OUTPUT`; healing removes the jumps and the chains. Packets are dropped, not rejected, so
//! connections hang as they do behind a real partition. `iptables` (Debian package
//! `iptables`, nft backend) and `ip` (iproute2) must be installed; everything needs root.
//!
//! Faults only touch what tests created: [`ChaosPod::find`] refuses pods whose Kubernetes
//! namespace lacks the label `locus.dev/test=true` (which
//! [`Cluster::namespace`](crate::cluster::Cluster::namespace) sets), network namespaces
//! outside this cluster's bridge prefix, and a namespace whose `eth0` does not hold the
//! pod's address. Nothing here sends a packet anywhere but to a pod of the cluster.
//!
//! The module is cut by concern: the pods and the cluster's addresses here, the network
//! faults in `network`, the pauses in `pause`.
//!
//! ```no_run
//! # async fn example(client: kube::Client, info: &locus_e2e::cluster::ClusterInfo) -> Result<(), locus_e2e::chaos::ChaosError> {
//! use locus_e2e::chaos::{ChaosPod, partition_from_pods};
//! let pod = ChaosPod::find(&client, info, "e2e-chaos-x1", "ledger-0-abcde").await?;
//! let cut = partition_from_pods(&pod)?;
//! // ... the pod reaches the API server but no other pod ...
//! cut.heal()?; // or drop it
//! # Ok(())
//! # }
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{Api, Client};

use crate::cluster::ClusterInfo;

mod network;
mod pause;

pub use self::network::{NetFault, NetFaultKind, cut_from_api_server, heal, partition_from_pods};
use self::pause::parse_pids;
pub use self::pause::{Paused, pause, process_state, resume};
use crate::cluster::network::netns_prefix;

/// Label a Kubernetes namespace must carry (value `true`) for its pods to be faulted.
pub const TEST_NAMESPACE_LABEL: &str = "locus.dev/test";
/// Prefix of the iptables chains this module creates.
pub const CHAIN_PREFIX: &str = "LOCUS-CHAOS-";
/// How long [`pause`] waits for every process to show as stopped.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Seconds `iptables -w` waits for the xtables lock.
const XTABLES_WAIT_SECS: &str = "5";

/// What went wrong injecting or healing a fault.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The cluster is not one whose pods run as local processes (an external cluster).
    #[error("fault injection needs the local cluster: {0}")]
    Unsupported(String),
    /// The pod is not one the tests created, or not on this cluster.
    #[error("refusing to touch pod {pod}: {reason}")]
    NotOurs {
        /// `namespace/name`.
        pod: String,
        /// Why.
        reason: String,
    },
    /// The pod has no address or UID yet, or is gone.
    #[error("pod {pod} is not running: {reason}")]
    NotRunning {
        /// `namespace/name`.
        pod: String,
        /// Why.
        reason: String,
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
    /// A tool is missing.
    #[error("{tool} not found: install it (apt-get install {package})")]
    MissingTool {
        /// The binary.
        tool: String,
        /// The Debian package holding it.
        package: String,
    },
    /// A command could not be started.
    #[error("could not run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A signal could not be sent.
    #[error("could not send {signal} to process {pid} of pod {pod}: {source}")]
    Signal {
        /// `namespace/name`.
        pod: String,
        /// The process.
        pid: i32,
        /// The signal.
        signal: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Processes did not stop in time.
    #[error("processes {pids:?} of pod {pod} did not stop within {after:?}")]
    NotStopped {
        /// `namespace/name`.
        pod: String,
        /// Those still running.
        pids: Vec<i32>,
        /// The wait.
        after: Duration,
    },
}

/// The cluster's network as faults need it: the bridge, its address and the pod range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNet {
    /// The bridge pods attach to.
    pub bridge: String,
    /// The bridge's address: the host side of every pod (API server, probes, load).
    pub gateway: Ipv4Addr,
    /// The pod range, `a.b.c.d/n`.
    pub pod_cidr: String,
    /// The API server's port on the gateway.
    pub api_port: u16,
}

impl ClusterNet {
    /// The network of the local cluster `info` describes.
    pub fn of(info: &ClusterInfo) -> Result<Self, ChaosError> {
        Self::from_parts(&info.bridge, &info.server, &info.pod_cidr)
    }

    /// The network of a local cluster with bridge `bridge`, API server URL `server` and
    /// pod range `pod_cidr`; the API server must listen on an address of the pod range.
    pub fn from_parts(bridge: &str, server: &str, pod_cidr: &str) -> Result<Self, ChaosError> {
        let (gateway, api_port) = parse_server(server).ok_or_else(|| {
            ChaosError::Unsupported(format!(
                "the API server {server:?} is not an IPv4 address and port"
            ))
        })?;
        let (network, prefix) = parse_cidr(pod_cidr).ok_or_else(|| {
            ChaosError::Unsupported(format!("pod range {pod_cidr:?} is not IPv4"))
        })?;
        if bridge.is_empty() || !cidr_contains(network, prefix, gateway) {
            return Err(ChaosError::Unsupported(format!(
                "the API server {gateway} is not on a local pod bridge ({bridge:?}, {pod_cidr})"
            )));
        }
        Ok(Self {
            bridge: bridge.to_owned(),
            gateway,
            pod_cidr: pod_cidr.to_owned(),
            api_port,
        })
    }
}

/// A pod of the local cluster, resolved to its network namespace.
#[derive(Debug, Clone)]
pub struct ChaosPod {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Its network namespace (`ip netns exec <netns> …`).
    pub netns: String,
    /// The cluster's network.
    pub net: ClusterNet,
}

impl std::fmt::Display for ChaosPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ChaosPod {
    /// Finds pod `namespace/name` on the local cluster `info` and its network namespace,
    /// checking that the tests created it (see the [module docs](self)).
    pub async fn find(
        client: &Client,
        info: &ClusterInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Self, ChaosError> {
        let label = format!("{namespace}/{name}");
        let net = ClusterNet::of(info)?;
        let ns = Api::<Namespace>::all(client.clone())
            .get(namespace)
            .await
            .map_err(|source| ChaosError::Api {
                action: format!("read namespace {namespace}"),
                source,
            })?;
        let marked = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEST_NAMESPACE_LABEL))
            .is_some_and(|v| v == "true");
        if !marked {
            return Err(ChaosError::NotOurs {
                pod: label,
                reason: format!(
                    "namespace {namespace} lacks the label {TEST_NAMESPACE_LABEL}=true"
                ),
            });
        }
        let pod = Api::<Pod>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .map_err(|source| ChaosError::Api {
                action: format!("read pod {label}"),
                source,
            })?;
        let not_running = |reason: &str| ChaosError::NotRunning {
            pod: label.clone(),
            reason: reason.to_owned(),
        };
        let uid = pod
            .metadata
            .uid
            .clone()
            .ok_or_else(|| not_running("no UID"))?;
        let ip: Ipv4Addr = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| not_running("no IPv4 address yet"))?;
        let netns = netns_name(&net.bridge, &uid);
        if !netns.starts_with(&netns_prefix(&net.bridge)) {
            return Err(ChaosError::NotOurs {
                pod: label,
                reason: format!("{netns} is not a namespace of bridge {}", net.bridge),
            });
        }
        let listed = run(&tool("ip", "iproute2")?, &["netns", "list"])?;
        if !listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|n| n == netns)
        {
            return Err(not_running(&format!("no network namespace {netns}")));
        }
        let addresses = run(
            &tool("ip", "iproute2")?,
            &["-n", &netns, "-4", "-o", "addr", "show", "dev", "eth0"],
        )?;
        if !eth0_holds(&addresses, ip) {
            return Err(ChaosError::NotOurs {
                pod: label,
                reason: format!("eth0 of {netns} does not hold the pod's address {ip}"),
            });
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid,
            ip,
            netns,
            net,
        })
    }

    /// The processes running in the pod's network namespace now.
    pub fn pids(&self) -> Result<Vec<i32>, ChaosError> {
        let out = run(&tool("ip", "iproute2")?, &["netns", "pids", &self.netns])?;
        Ok(parse_pids(&out))
    }

    /// Whether a TCP connection from inside this pod's namespace to `to` opens within
    /// `timeout`; see [`connect_failure`](Self::connect_failure).
    pub fn can_connect(&self, to: SocketAddrV4, timeout: Duration) -> Result<bool, ChaosError> {
        Ok(self.connect_failure(to, timeout)?.is_none())
    }

    /// Opens a TCP connection from inside this pod's namespace to `to` (`bash`'s
    /// `/dev/tcp` under `timeout`, run inside the namespace) and closes it: `None` if it
    /// opened within `timeout`, else why not (what the command printed, or its exit status;
    /// 124: timed out). `to` must be an address of the cluster's pod range.
    pub fn connect_failure(
        &self,
        to: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Option<String>, ChaosError> {
        let (network, prefix) = parse_cidr(&self.net.pod_cidr)
            .ok_or_else(|| ChaosError::Unsupported(format!("pod range {}", self.net.pod_cidr)))?;
        if !cidr_contains(network, prefix, *to.ip()) {
            return Err(ChaosError::NotOurs {
                pod: self.to_string(),
                reason: format!("{to} is outside the pod range {}", self.net.pod_cidr),
            });
        }
        let ip = tool("ip", "iproute2")?;
        let seconds = format!("{:.1}", timeout.as_secs_f64().max(0.1));
        let script = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
        let out = Command::new(&ip)
            .args(["netns", "exec", &self.netns, "timeout", &seconds])
            .args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ChaosError::Spawn {
                command: format!(
                    "{} netns exec {} … bash -c {script}",
                    ip.display(),
                    self.netns
                ),
                source,
            })?;
        if out.status.success() {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Ok(Some(match out.status.code() {
            Some(124) => format!("no connection within {seconds} s"),
            _ if !stderr.is_empty() => stderr,
            _ => format!("exit status {}", out.status),
        }))
    }
}

/// The network namespace the node agent gives pod `uid` on `bridge`.
pub fn netns_name(bridge: &str, uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!("{}{hex}", netns_prefix(bridge))
}

fn parse_server(server: &str) -> Option<(Ipv4Addr, u16)> {
    let uri: http::Uri = server.parse().ok()?;
    let host: Ipv4Addr = uri.host()?.parse().ok()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    Some((host, port))
}

fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((addr.parse().ok()?, prefix))
}

fn cidr_contains(network: Ipv4Addr, prefix: u8, ip: Ipv4Addr) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(network) & mask
}

/// Whether `ip -4 -o addr show dev eth0` output lists `ip`.
fn eth0_holds(listing: &str, ip: Ipv4Addr) -> bool {
    listing.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.any(|w| w == "inet")
            && words
                .next()
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                == Some(ip)
    })
}

/// Finds `name` on `PATH` or in the usual sbin directories.
fn tool(name: &str, package: &str) -> Result<PathBuf, ChaosError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ChaosError::MissingTool {
            tool: name.to_owned(),
            package: package.to_owned(),
        })
}

/// Runs `program args…`, returning its stdout.
fn run(program: &std::path::Path, args: &[&str]) -> Result<String, ChaosError> {
    let command = || format!("{} {}", program.display(), args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ChaosError::Spawn {
            command: command(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ChaosError::Command {
            command: command(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::network::listed_jump;
    use super::pause::parse_state;
    use super::*;

    fn net() -> ClusterNet {
        ClusterNet {
            bridge: "locus3".into(),
            gateway: Ipv4Addr::new(10, 213, 3, 1),
            pod_cidr: "10.213.3.0/24".into(),
            api_port: 6443,
        }
    }

    #[test]
    fn the_namespace_name_is_the_node_agents() {
        assert_eq!(
            netns_name("locus3", "0f6c2a4e-93b1-4c2d-8e8f-1234567890ab"),
            "locus-locus3-0f6c2a4e"
        );
    }

    #[test]
    fn the_server_and_range_are_parsed() {
        assert_eq!(
            parse_server("https://10.213.3.1:6443"),
            Some((Ipv4Addr::new(10, 213, 3, 1), 6443))
        );
        assert_eq!(
            parse_server("https://10.213.3.1"),
            Some((Ipv4Addr::new(10, 213, 3, 1), 443))
        );
        assert_eq!(parse_server("https://localhost:6443"), None);
        assert_eq!(
            parse_cidr("10.213.3.0/24"),
            Some((Ipv4Addr::new(10, 213, 3, 0), 24))
        );
        assert_eq!(parse_cidr("10.213.3.0/33"), None);
        assert!(cidr_contains(
            Ipv4Addr::new(10, 213, 3, 0),
            24,
            Ipv4Addr::new(10, 213, 3, 9)
        ));
        assert!(!cidr_contains(
            Ipv4Addr::new(10, 213, 3, 0),
            24,
            Ipv4Addr::new(10, 213, 4, 9)
        ));
    }

    #[test]
    fn the_partition_keeps_the_gateway_and_drops_the_range() {
        let (input, output) = NetFaultKind::Partition.rules(&net());
        assert_eq!(input[0], ["-i", "lo", "-j", "ACCEPT"]);
        assert_eq!(input[1], ["-s", "10.213.3.1", "-j", "ACCEPT"]);
        assert_eq!(input[2], ["-s", "10.213.3.0/24", "-j", "DROP"]);
        assert_eq!(output[1], ["-d", "10.213.3.1", "-j", "ACCEPT"]);
        assert_eq!(output[2], ["-d", "10.213.3.0/24", "-j", "DROP"]);
        let (input, output) = NetFaultKind::ApiServerCut.rules(&net());
        assert_eq!(
            input,
            [[
                "-s",
                "10.213.3.1",
                "-p",
                "tcp",
                "--sport",
                "6443",
                "-j",
                "DROP"
            ]]
        );
        assert_eq!(
            output,
            [[
                "-d",
                "10.213.3.1",
                "-p",
                "tcp",
                "--dport",
                "6443",
                "-j",
                "DROP"
            ]]
        );
        for kind in [NetFaultKind::Partition, NetFaultKind::ApiServerCut] {
            let (i, o) = kind.chains();
            assert!(i.starts_with(CHAIN_PREFIX) && o.starts_with(CHAIN_PREFIX));
            // iptables limits chain names to 28 characters.
            assert!(i.len() <= 28 && o.len() <= 28);
        }
    }

    #[test]
    fn listings_are_read() {
        assert_eq!(parse_pids("12\n345\n"), [12, 345]);
        assert_eq!(parse_state("42 (my (odd) name) T 1 42"), Some('T'));
        assert_eq!(parse_state("42 (x) S 1"), Some('S'));
        assert!(listed_jump(
            "-P INPUT ACCEPT\n-A INPUT -j LOCUS-CHAOS-PEERS-IN\n",
            "LOCUS-CHAOS-PEERS-IN"
        ));
        assert!(!listed_jump("-P INPUT ACCEPT\n", "LOCUS-CHAOS-PEERS-IN"));
        let eth0 = "2: eth0    inet 10.213.3.7/24 scope global eth0\\       valid_lft forever";
        assert!(eth0_holds(eth0, Ipv4Addr::new(10, 213, 3, 7)));
        assert!(!eth0_holds(eth0, Ipv4Addr::new(10, 213, 3, 8)));
    }

    #[test]
    fn another_clusters_server_is_unsupported() {
        assert!(matches!(
            ClusterNet::from_parts("locus3", "https://127.0.0.1:6443", "10.213.3.0/24"),
            Err(ChaosError::Unsupported(_))
        ));
        assert!(matches!(
            ClusterNet::from_parts("", "https://10.213.3.1:6443", "10.213.3.0/24"),
            Err(ChaosError::Unsupported(_))
        ));
        assert_eq!(
            ClusterNet::from_parts("locus3", "https://10.213.3.1:6443", "10.213.3.0/24").unwrap(),
            net()
        );
    }
}
