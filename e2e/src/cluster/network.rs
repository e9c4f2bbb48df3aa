//! The cluster network: one Linux bridge per cluster with a private /24 pod range.
//!
//! Cluster `n` (1..=250) owns bridge `locus<n>` with address `10.213.<n>.1/24`; the API
//! server listens on that address so pods can reach it, and the node agent gives each pod a
//! veth on the bridge with an address from the same /24. Nothing routes beyond the bridge:
//! pod namespaces have no default route and the host does not forward. While the bridge is
//! up, two iptables FORWARD rules tagged `locus-cluster <bridge>` accept its traffic, for
//! hosts where Docker set the FORWARD policy to DROP (see [`super::firewall`]).
//!
//! A claim file `/run/locus/cluster-<n>.json` records the supervising process and the process
//! groups it started. A claim whose supervisor is gone is stale: its processes, network
//! namespaces, bridge and FORWARD rules are removed before the slot is reused (or by
//! [`clean_stale`], which `locus-cluster clean` runs), so a crashed run leaves nothing the
//! next run cannot clean.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::ClusterError;
use super::firewall;
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
    /// Whether iptables FORWARD rules accept the bridge's traffic (see [`super::firewall`]).
    pub forward_accepted: bool,
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
                clean_claim(index, &claim, &owner);
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
            let mut net = Self {
                index,
                bridge: bridge_name(index),
                gateway: Ipv4Addr::new(10, 213, index, 1),
                pod_cidr: format!("10.213.{index}.0/24"),
                forward_accepted: false,
                claim,
                run_dir,
            };
            // A bridge left by a run that died before writing its claim is removed first.
            remove_network(index);
            if let Err(e) = net.bring_up() {
                remove_network(index);
                let _ = std::fs::remove_file(&net.claim);
                return Err(e);
            }
            return Ok(net);
        }
        Err(ClusterError::Network(format!(
            "all {MAX_CLUSTERS} local cluster slots in {STATE_DIR} are in use"
        )))
    }

    fn bring_up(&mut self) -> Result<(), ClusterError> {
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &self.bridge,
        ])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        self.forward_accepted = firewall::accept_bridge(&self.bridge)?;
        Ok(())
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

    /// Removes the bridge, every pod namespace on it, its FORWARD rules and the claim.
    pub fn remove(&self) {
        let _lock = state_lock();
        remove_network(self.index);
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// The bridge of cluster `index`.
fn bridge_name(index: u8) -> String {
    format!("locus{index}")
}

/// The cluster index of a bridge named `locus<n>` (1..=250).
fn bridge_index(bridge: &str) -> Option<u8> {
    bridge
        .strip_prefix("locus")
        .filter(|n| !n.starts_with('0'))
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| (1..=MAX_CLUSTERS).contains(n))
}

/// Kills the process groups a dead supervisor recorded and removes its network and claim.
fn clean_claim(index: u8, claim: &std::path::Path, owner: &Claim) {
    for &group in &owner.process_groups {
        if cmdline_mentions(group, &owner.run_dir) {
            kill_group(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
    remove_network(index);
    let _ = std::fs::remove_file(claim);
}

fn remove_network(index: u8) {
    let bridge = bridge_name(index);
    for ns in netns_with_prefix(&netns_prefix(&bridge)) {
        // Processes left in a pod namespace (their node agent was killed) would keep it alive.
        kill_netns_processes(&ns);
        // Deleting the namespace deletes the pod end of its veth, and with it the host end.
        let _ = ip(&["netns", "delete", &ns]);
    }
    if std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists() {
        let _ = ip(&["link", "delete", &bridge]);
    }
    match firewall::remove_bridge_rules(&bridge) {
        Ok(0) => {}
        Ok(removed) => tracing::debug!(bridge, removed, "removed the bridge's FORWARD rules"),
        Err(e) => tracing::warn!(
            bridge,
            error = %e,
            "could not remove the bridge's iptables FORWARD rules (tagged \"locus-cluster {bridge}\")"
        ),
    }
}

/// SIGKILLs every process in the network namespace `ns`.
fn kill_netns_processes(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes what local clusters whose supervisor is gone left behind: their process groups,
/// pod namespaces, bridges, iptables FORWARD rules and claims. Clusters that are up are not
/// touched. Returns one line per cluster cleaned. Run directories are left (their logs
/// tell why a cluster died).
pub fn clean_stale() -> Result<Vec<String>, ClusterError> {
    std::fs::create_dir_all(STATE_DIR).map_err(io_err(format!("create {STATE_DIR}")))?;
    let _lock = state_lock()?;
    let mut report = Vec::new();
    let mut live = std::collections::BTreeSet::new();
    for index in 1..=MAX_CLUSTERS {
        let claim = PathBuf::from(format!("{STATE_DIR}/cluster-{index}.json"));
        if !claim.exists() {
            continue;
        }
        let owner: Claim = std::fs::read(&claim)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if owner.supervisor_pid != 0 && pid_alive(owner.supervisor_pid) {
            live.insert(index);
            continue;
        }
        clean_claim(index, &claim, &owner);
        let run_dir = if owner.run_dir.is_empty() {
            String::new()
        } else {
            format!("; its run directory {} is kept", owner.run_dir)
        };
        report.push(format!(
            "cluster {index} (bridge {}): supervisor {} is gone; removed its processes, pod namespaces, bridge and FORWARD rules{run_dir}",
            bridge_name(index),
            owner.supervisor_pid
        ));
    }

    // Leftovers without a claim: a run killed before writing it, or a claim deleted by hand.
    let mut orphans = std::collections::BTreeSet::new();
    if let Ok(links) = std::fs::read_dir("/sys/class/net") {
        for link in links.flatten() {
            orphans.extend(bridge_index(&link.file_name().to_string_lossy()));
        }
    }
    for ns in netns_with_prefix("locus-locus") {
        let bridge = ns
            .strip_prefix("locus-")
            .and_then(|rest| rest.split('-').next())
            .unwrap_or_default();
        orphans.extend(bridge_index(bridge));
    }
    match firewall::tagged_bridges() {
        Ok(bridges) => orphans.extend(bridges.iter().filter_map(|b| bridge_index(b))),
        Err(e) => report.push(format!("could not list the iptables FORWARD rules: {e}")),
    }
    for index in orphans.difference(&live) {
        remove_network(*index);
        report.push(format!(
            "bridge {}: no cluster owns it; removed it with its pod namespaces and FORWARD rules",
            bridge_name(*index)
        ));
    }
    Ok(report)
}
