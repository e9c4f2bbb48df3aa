//! The cluster network: one Linux bridge per cluster with a private /24 pod range.
//!
//! Cluster `n` (1..=250) owns bridge `locus<n>` with address `10.213.<n>.1/24`; the API
//! server listens on that address so pods can reach it, and the node agent gives each pod a
//! veth on the bridge with an address from the same /24. Nothing routes beyond the bridge:
//! pod namespaces have no default route and the host does not forward.
//!
//! A claim file `/run/locus/cluster-<n>.json` records the supervising process and the process
//! groups it started. A claim whose supervisor is gone is stale: its processes, network
//! namespaces and bridge are removed before the slot is reused, so a crashed run leaves
//! nothing the next run cannot clean.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::process::kill_group;

const STATE_DIR: &str = "/run/locus";
const MAX_CLUSTERS: u8 = 250;

/// The network of one local cluster.
#[derive(Debug, Clone)]
pub struct ClusterNetwork {
    /// Index of this cluster on the machine (1..=250).
    pub index: u8,
    /// Name of the bridge.
    pub bridge: String,
    /// The bridge's address: the pods' gateway and the API server's listen address.
    pub gateway: Ipv4Addr,
    /// The pod range, `10.213.<n>.0/24`.
    pub pod_cidr: String,
    claim: PathBuf,
    run_dir: String,
}

/// What a claim file records about the cluster that owns a network slot.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Claim {
    supervisor_pid: u32,
    process_groups: Vec<i32>,
    /// Every process of the cluster names its run directory in its arguments; a recorded
    /// process group is only killed if its leader still does (pids get reused).
    #[serde(default)]
    run_dir: String,
}

/// Holds `/run/locus/lock` exclusively: claiming, cleaning and releasing slots happen one
/// process at a time, so two starts never clean up the same stale slot.
fn state_lock() -> Result<nix::fcntl::Flock<std::fs::File>, ClusterError> {
    let path = format!("{STATE_DIR}/lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {path}")))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        ClusterError::Io {
            action: format!("lock {path}"),
            source: errno.into(),
        }
    })
}

/// Whether the process `pid` names `needle` in its command line.
fn cmdline_mentions(pid: i32, needle: &str) -> bool {
    !needle.is_empty()
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
}

/// Prefix of the network namespaces the node agent creates for pods on `bridge`.
pub fn netns_prefix(bridge: &str) -> String {
    format!("locus-{bridge}-")
}

/// Runs `ip` with `args`, failing with its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<(), ClusterError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| ClusterError::Io {
            action: "run `ip` (install iproute2: apt-get install iproute2)".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Network(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Lists the network namespaces whose names start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn io_err(action: String) -> impl FnOnce(std::io::Error) -> ClusterError {
    move |source| ClusterError::Io { action, source }
}

impl ClusterNetwork {
    /// Claims a free slot, cleaning stale ones on the way, and brings its bridge up.
    /// `run_dir` is the cluster's run directory (recorded to recognise its processes).
    pub fn create(run_dir: &std::path::Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(STATE_DIR).map_err(io_err(format!("create {STATE_DIR}")))?;
        let _lock = state_lock()?;
        let run_dir = run_dir.to_string_lossy().into_owned();
        for index in 1..=MAX_CLUSTERS {
            let claim = PathBuf::from(format!("{STATE_DIR}/cluster-{index}.json"));
            if claim.exists() {
                let owner: Claim = std::fs::read(&claim)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                if owner.supervisor_pid != 0 && pid_alive(owner.supervisor_pid) {
                    continue;
                }
                tracing::info!(index, "cleaning up a stale local cluster");
                for group in owner.process_groups {
                    if cmdline_mentions(group, &owner.run_dir) {
                        kill_group(group, nix::sys::signal::Signal::SIGKILL);
                    }
                }
                remove_network(index);
                let _ = std::fs::remove_file(&claim);
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim);
            let Ok(mut file) = file else { continue };
            let mine = Claim {
                supervisor_pid: std::process::id(),
                process_groups: Vec::new(),
                run_dir: run_dir.clone(),
            };
            let json = serde_json::to_vec(&mine).unwrap_or_default();
            file.write_all(&json)
                .map_err(io_err(format!("write {}", claim.display())))?;
            let net = Self {
                index,
                bridge: format!("locus{index}"),
                gateway: Ipv4Addr::new(10, 213, index, 1),
                pod_cidr: format!("10.213.{index}.0/24"),
                claim,
                run_dir,
            };
            // A bridge left by a run that died before writing its claim is removed first.
            remove_network(index);
            net.bring_up()?;
            return Ok(net);
        }
        Err(ClusterError::Network(format!(
            "all {MAX_CLUSTERS} local cluster slots in {STATE_DIR} are in use"
        )))
    }

    fn bring_up(&self) -> Result<(), ClusterError> {
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &self.bridge,
        ])?;
        ip(&["link", "set", &self.bridge, "up"])
    }

    /// Records the process groups this cluster runs, so a later run can clean them up
    /// if this supervisor dies without doing so.
    pub fn record_process_groups(&self, groups: &[i32]) {
        let claim = Claim {
            supervisor_pid: std::process::id(),
            process_groups: groups.to_vec(),
            run_dir: self.run_dir.clone(),
        };
        if let Ok(json) = serde_json::to_vec(&claim) {
            let _ = std::fs::write(&self.claim, json);
        }
    }

    /// Removes the bridge, every pod namespace on it and the claim.
    pub fn remove(&self) {
        let _lock = state_lock();
        remove_network(self.index);
        let _ = std::fs::remove_file(&self.claim);
    }
}

fn remove_network(index: u8) {
    let bridge = format!("locus{index}");
    for ns in netns_with_prefix(&netns_prefix(&bridge)) {
        // Deleting the namespace deletes the pod end of its veth, and with it the host end.
        let _ = ip(&["netns", "delete", &ns]);
    }
    if std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists() {
        let _ = ip(&["link", "delete", &bridge]);
    }
}
