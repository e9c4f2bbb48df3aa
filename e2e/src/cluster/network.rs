//! The cluster network: one Linux bridge per cluster with a private pod range.
//!
//! Cluster `n` (1..=250) owns bridge `locus<n>` with address `10.213.<n>.1/24`; the API
//! server listens on that address so pods can reach it, and the node agent gives each pod a
//! veth on the bridge with an address from the same /24. A cluster started for more pods
//! than a /24 holds ([`pod_prefix_for`]) takes a larger range at the start of the `n`th /20 of
//! `10.224.0.0/12` (a /22 for cluster 3 is `10.224.32.0/22`), with the gateway at its first
//! host address; [`pod_capacity`] is how many pods a range holds, and the node agent
//! advertises exactly that. Nothing routes beyond the bridge:
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

/// The pod range's prefix length unless a cluster is asked for more pods.
pub const DEFAULT_POD_PREFIX: u8 = 24;
/// The widest pod range a cluster takes: every one of the 250 slots has its own /20 in
/// `10.224.0.0/12`.
pub const MIN_POD_PREFIX: u8 = 20;
/// Where ranges wider than a /24 come from (`10.224.0.0/12`), so they overlap neither the
/// /24s of `10.213.0.0/16` nor each other.
const LARGE_RANGES: Ipv4Addr = Ipv4Addr::new(10, 224, 0, 0);
/// Ports one Linux bridge takes: port numbers are 10 bits and 0 is reserved, so attaching a
/// 1024th interface fails with `EXFULL` ("Exchange full"). Every pod's veth is one port.
pub const BRIDGE_PORTS: u32 = 1023;
/// Most bridges one node's pods are spread over.
pub const MAX_BRIDGES: u32 = 64;

/// Addresses of a range of prefix length `prefix` that pods can take: its hosts (the network
/// and broadcast addresses are not) less the gateway.
fn pod_addresses(prefix: u8) -> u32 {
    (1u32 << (32 - u32::from(prefix))) - 3
}

/// How many bridges a cluster with a pod range of prefix length `prefix` brings up so that
/// every pod address can have a port: one up to a /22, two for a /21, five for a /20. The
/// first carries the gateway; each other one hangs off it by a veth pair (one L2 segment,
/// one pod range, nothing routed).
pub fn bridges_for(prefix: u8) -> u32 {
    pod_addresses(prefix).div_ceil(BRIDGE_PORTS).max(1)
}

/// How many pods a node on a pod range with prefix length `prefix` whose pods' veths go to
/// `bridges` bridges admits: the range's pod addresses, bounded by the bridges' ports (less
/// the two ends of each veth pair joining a bridge to the first), less 5 % (rounded up) kept
/// free for pods that still hold an address while they terminate. A /24 admits 240, a /22
/// 969, a /21 on two bridges 1941, on one 971. `None` for prefix lengths outside 16..=29 and
/// bridge counts outside 1..=[`MAX_BRIDGES`].
pub fn pod_capacity(prefix: u8, bridges: u32) -> Option<u32> {
    if !(16..=29).contains(&prefix) || !(1..=MAX_BRIDGES).contains(&bridges) {
        return None;
    }
    let ports = bridges * BRIDGE_PORTS - 2 * (bridges - 1);
    let usable = pod_addresses(prefix).min(ports);
    Some(usable - usable.div_ceil(20))
}

/// How many pods a cluster's node admits on a pod range of prefix length `prefix`, with the
/// bridges the cluster brings up for it ([`bridges_for`]).
pub fn node_capacity(prefix: u8) -> Option<u32> {
    pod_capacity(prefix, bridges_for(prefix))
}

/// The narrowest pod range (largest prefix length, never narrower than the default /24) whose
/// node admits `pods` pods, or an error saying the most one node can admit.
pub fn pod_prefix_for(pods: u32) -> Result<u8, ClusterError> {
    (MIN_POD_PREFIX..=DEFAULT_POD_PREFIX)
        .rev()
        .find(|&prefix| node_capacity(prefix).is_some_and(|c| c >= pods))
        .ok_or_else(|| {
            ClusterError::Network(format!(
                "a local cluster's node admits at most {} pods (a /{MIN_POD_PREFIX}); {pods} were asked for",
                node_capacity(MIN_POD_PREFIX).unwrap_or_default()
            ))
        })
}

/// The pod range of cluster `index` for prefix length `prefix`: the /24 `10.213.<index>.0/24`
/// by default, else the start of the `index - 1`th /20 of `10.224.0.0/12`, so two clusters'
/// ranges never overlap whatever their sizes. The gateway is the range's first host address.
pub fn pod_range(index: u8, prefix: u8) -> Result<(Ipv4Addr, u8), ClusterError> {
    if !(1..=MAX_CLUSTERS).contains(&index) {
        return Err(ClusterError::Network(format!(
            "cluster index {index} is outside 1..={MAX_CLUSTERS}"
        )));
    }
    if prefix == DEFAULT_POD_PREFIX {
        return Ok((Ipv4Addr::new(10, 213, index, 0), prefix));
    }
    if !(MIN_POD_PREFIX..DEFAULT_POD_PREFIX).contains(&prefix) {
        return Err(ClusterError::Network(format!(
            "a pod range of /{prefix} is not offered: use /{MIN_POD_PREFIX} to /{DEFAULT_POD_PREFIX}"
        )));
    }
    let slot = 1u32 << (32 - u32::from(MIN_POD_PREFIX));
    let network = u32::from(LARGE_RANGES) + u32::from(index - 1) * slot;
    Ok((Ipv4Addr::from(network), prefix))
}

/// The network of one local cluster.
#[derive(Debug, Clone)]
pub struct ClusterNetwork {
    /// Index of this cluster on the machine (1..=250).
    pub index: u8,
    /// Name of the bridge.
    pub bridge: String,
    /// Further bridges the node agent puts pods' veths on once `bridge` is full (none for
    /// ranges up to a /22, see [`bridges_for`]), `locus<n>p<k>`; each joins `bridge` by a veth
    /// pair `locus<n>t<k>`/`locus<n>u<k>`.
    pub leaves: Vec<String>,
    /// The bridge's address: the pods' gateway and the API server's listen address.
    pub gateway: Ipv4Addr,
    /// The pod range, `10.213.<n>.0/24` unless a larger one was asked for (see [`pod_range`]).
    pub pod_cidr: String,
    /// The pod range's prefix length.
    pub pod_prefix: u8,
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
    /// Claims a free slot, cleaning stale ones on the way, and brings its bridge up with a
    /// pod range of prefix length `pod_prefix` ([`DEFAULT_POD_PREFIX`] unless more pods are
    /// needed, see [`pod_prefix_for`]). `run_dir` is the cluster's run directory (recorded to
    /// recognise its processes).
    pub fn create(run_dir: &std::path::Path, pod_prefix: u8) -> Result<Self, ClusterError> {
        pod_range(1, pod_prefix)?;
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
            let (network, prefix) = pod_range(index, pod_prefix)?;
            let mut net = Self {
                index,
                bridge: bridge_name(index),
                leaves: leaf_names(index, prefix),
                gateway: Ipv4Addr::from(u32::from(network) + 1),
                pod_cidr: format!("{network}/{prefix}"),
                pod_prefix: prefix,
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
            &format!("{}/{}", self.gateway, self.pod_prefix),
            "dev",
            &self.bridge,
        ])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for (k, leaf) in (1..).zip(&self.leaves) {
            let (trunk, peer) = (
                format!("{}t{k}", self.bridge),
                format!("{}u{k}", self.bridge),
            );
            ip(&["link", "add", leaf, "type", "bridge"])?;
            ip(&["link", "add", &trunk, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &trunk, "master", &self.bridge])?;
            ip(&["link", "set", &peer, "master", leaf])?;
            for link in [leaf, &trunk, &peer] {
                ip(&["link", "set", link, "up"])?;
            }
        }
        self.forward_accepted = firewall::accept_bridges(&self.bridge, &self.leaves)?;
        if !self.leaves.is_empty() || self.pod_prefix < DEFAULT_POD_PREFIX {
            raise_neighbour_limits(node_capacity(self.pod_prefix).unwrap_or_default());
        }
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

/// The further bridges of cluster `index` with a pod range of prefix length `prefix`.
pub fn leaf_names(index: u8, prefix: u8) -> Vec<String> {
    (1..bridges_for(prefix))
        .map(|k| format!("{}p{k}", bridge_name(index)))
        .collect()
}

/// The host's neighbour (ARP) table is one for all network namespaces: each pod holds an entry
/// for the gateway and the host one for each pod, and past `gc_thresh3` (1024 by default)
/// new entries fail ("neighbor table overflow") and pods lose the API server. Raises
/// `gc_thresh2`/`gc_thresh3` for `pods` pods (never lowers them); the values stay after the
/// cluster stops.
fn raise_neighbour_limits(pods: u32) {
    let dir = "/proc/sys/net/ipv4/neigh/default";
    let want3 = 4 * pods + 1024;
    for (name, want) in [("gc_thresh2", want3 / 2), ("gc_thresh3", want3)] {
        let path = format!("{dir}/{name}");
        let now: u32 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u32::MAX);
        if now < want {
            match std::fs::write(&path, want.to_string()) {
                Ok(()) => super::local::progress(&format!(
                    "raised net.ipv4.neigh.default.{name} from {now} to {want} for {pods} pods"
                )),
                Err(e) => tracing::warn!(
                    "could not raise net.ipv4.neigh.default.{name} to {want} ({e}): with many \
                     pods the neighbour table may overflow"
                ),
            }
        }
    }
}

/// The further bridges and the veth pairs joining them of cluster `index`, as they exist.
fn leaf_links(index: u8) -> Vec<String> {
    let base = bridge_name(index);
    let Ok(links) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    links
        .flatten()
        .map(|l| l.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            ["p", "t"].iter().any(|kind| {
                name.strip_prefix(&base)
                    .and_then(|rest| rest.strip_prefix(kind))
                    .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .collect()
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
    // Deleting `locus<n>t<k>` deletes its peer on the further bridge too.
    for link in leaf_links(index) {
        let _ = ip(&["link", "delete", &link]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_the_range_less_gateway_bounded_by_the_bridges_less_headroom() {
        // 254 hosts - gateway = 253, less 13: the default node admits what it always did.
        assert_eq!(pod_capacity(24, 1), Some(240));
        assert_eq!(node_capacity(24), Some(240));
        // 1022 hosts - gateway = 1021, less 52.
        assert_eq!(pod_capacity(22, 1), Some(969));
        // 2045 addresses, but one bridge takes 1023 veths...
        assert_eq!(pod_capacity(21, 1), Some(971));
        assert_eq!(pod_capacity(16, 1), Some(971));
        // ...and two 2 * 1023 less the veth pair joining them: 2044, less 103.
        assert_eq!(pod_capacity(21, 2), Some(1941));
        assert_eq!(node_capacity(21), Some(1941));
        // 4093 addresses on five bridges.
        assert_eq!(node_capacity(20), Some(3888));
        // 6 hosts - gateway = 5, less 1.
        assert_eq!(pod_capacity(29, 1), Some(4));
        assert_eq!(pod_capacity(30, 1), None);
        assert_eq!(pod_capacity(15, 1), None);
        assert_eq!(pod_capacity(24, 0), None);
        assert_eq!(pod_capacity(16, MAX_BRIDGES + 1), None);
    }

    #[test]
    fn bridges_cover_every_pod_address() {
        assert_eq!(bridges_for(24), 1);
        assert_eq!(bridges_for(22), 1);
        assert_eq!(bridges_for(21), 2);
        assert_eq!(bridges_for(20), 5);
        assert_eq!(leaf_names(3, 21), ["locus3p1"]);
        assert!(leaf_names(3, 24).is_empty());
    }

    #[test]
    fn the_narrowest_range_that_admits_the_pods_is_chosen() {
        assert_eq!(pod_prefix_for(0).unwrap(), 24);
        assert_eq!(pod_prefix_for(240).unwrap(), 24);
        assert_eq!(pod_prefix_for(241).unwrap(), 23);
        assert_eq!(pod_prefix_for(550).unwrap(), 22);
        assert_eq!(pod_prefix_for(970).unwrap(), 21);
        assert_eq!(pod_prefix_for(1100).unwrap(), 21);
        assert_eq!(pod_prefix_for(3888).unwrap(), 20);
        let err = pod_prefix_for(3889).unwrap_err().to_string();
        assert!(err.contains("at most 3888 pods"), "{err}");
    }

    #[test]
    fn ranges_are_disjoint_and_the_default_is_unchanged() {
        assert_eq!(
            pod_range(7, 24).unwrap(),
            (Ipv4Addr::new(10, 213, 7, 0), 24)
        );
        assert_eq!(
            pod_range(1, 22).unwrap(),
            (Ipv4Addr::new(10, 224, 0, 0), 22)
        );
        assert_eq!(
            pod_range(3, 22).unwrap(),
            (Ipv4Addr::new(10, 224, 32, 0), 22)
        );
        // Slot 2's /21 ends before slot 3's /22 starts.
        assert_eq!(
            pod_range(2, 21).unwrap(),
            (Ipv4Addr::new(10, 224, 16, 0), 21)
        );
        // The last slot's widest range still ends inside 10.224.0.0/12.
        let (last, prefix) = pod_range(MAX_CLUSTERS, MIN_POD_PREFIX).unwrap();
        let end = u32::from(last) + (1 << (32 - u32::from(prefix))) - 1;
        assert!(end <= u32::from(Ipv4Addr::new(10, 239, 255, 255)));
        assert!(pod_range(1, 19).is_err());
        assert!(pod_range(1, 25).is_err());
        assert!(pod_range(0, 24).is_err());
    }
}
