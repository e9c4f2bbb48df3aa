//! The Node object: registration, its Lease and its status heartbeat.
//!
//! The agent applies (server-side apply, field manager `locus-node-agent`) the Node with
//! the usual labels, its pod range, addresses, capacity and node info, and conditions
//! `Ready=True` plus the three pressure conditions `False`. It renews the Lease
//! `kube-node-lease/<node>` every 10 s and re-applies the status every 15 s with fresh
//! heartbeat times, so the node lifecycle controller keeps the node Ready.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::agent::{Agent, FIELD_MANAGER};
use crate::status::now;

/// Lease renewal period.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Lease duration written in the Lease (as kubelets do).
pub const LEASE_SECONDS: i32 = 40;
/// Status heartbeat period.
pub const STATUS_PERIOD: Duration = Duration::from_secs(15);

/// What the machine offers, for capacity and nodeInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// Size of the file system holding the run directory, in KiB.
    pub storage_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// OS name (`PRETTY_NAME` of `/etc/os-release`).
    pub os_image: String,
    /// Boot id.
    pub boot_id: String,
    /// Machine id (`/etc/machine-id`).
    pub id: String,
}

impl Machine {
    /// Reads the facts from `/proc`, `/etc` and the file system under `run_dir`.
    pub fn detect(run_dir: &std::path::Path) -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or_else(|| "Linux".into(), |v| v.trim_matches('"').to_string());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            memory_kib,
            storage_kib: nix::sys::statvfs::statvfs(run_dir)
                .map_or(0, |s| s.blocks().saturating_mul(s.fragment_size()) / 1024),
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            id: read("/etc/machine-id"),
        }
    }
}

/// The Kubernetes name of this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// The Node's metadata and spec, as applied.
pub fn node_object(agent: &Agent) -> Value {
    let name = &agent.flags.node_name;
    let cidr = agent.flags.pod_cidr.to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch(),
            },
        },
        "spec": { "podCIDR": cidr, "podCIDRs": [cidr] },
    })
}

/// The Node's status, as applied: conditions with `heartbeat` and the transition time
/// `since`.
pub fn node_status(
    agent: &Agent,
    machine: &Machine,
    since: Timestamp,
    heartbeat: Timestamp,
) -> Value {
    let resources: BTreeMap<&str, String> = [
        ("cpu", machine.cpus.to_string()),
        ("memory", format!("{}Ki", machine.memory_kib)),
        // A kubelet's default is 110; this node admits what its pod range holds (240 on the
        // usual /24) so the scale tests can run hundreds of small pods.
        ("pods", agent.flags.max_pods.to_string()),
        ("ephemeral-storage", format!("{}Ki", machine.storage_kib)),
    ]
    .into();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": Time(heartbeat),
            "lastTransitionTime": Time(since),
        })
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": agent.flags.node_name },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                { "type": "InternalIP", "address": agent.flags.gateway.to_string() },
                { "type": "Hostname", "address": agent.flags.node_name },
            ],
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady",
                    "locus-node-agent is posting ready status"),
            ],
            "nodeInfo": {
                "machineID": machine.id,
                "systemUUID": machine.id,
                "bootID": machine.boot_id,
                "kernelVersion": machine.kernel,
                "osImage": machine.os_image,
                "containerRuntimeVersion": format!("locus://{}", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": agent.kube_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch(),
            },
        },
    })
}

/// The node's Lease, as applied.
pub fn lease_object(node_name: &str, node_uid: &str, renew: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node_name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Node",
                "name": node_name,
                "uid": node_uid,
            }],
        },
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": MicroTime(renew),
        },
    })
}

/// Applies the Node and its first status; returns the Node's UID.
pub async fn register(
    agent: &Agent,
    machine: &Machine,
    since: Timestamp,
) -> Result<String, kube::Error> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let name = &agent.flags.node_name;
    let node = nodes
        .patch(name, &pp, &Patch::Apply(node_object(agent)))
        .await?;
    nodes
        .patch_status(
            name,
            &pp,
            &Patch::Apply(node_status(agent, machine, since, since)),
        )
        .await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

/// Renews the Lease and refreshes the status until `shutdown` turns true.
pub async fn heartbeats(
    agent: std::sync::Arc<Agent>,
    machine: Machine,
    node_uid: String,
    since: Timestamp,
    mut shutdown: watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let leases: Api<Lease> = Api::namespaced(agent.client.clone(), "kube-node-lease");
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let name = agent.flags.node_name.clone();
    let mut lease_tick = tokio::time::interval(LEASE_RENEW);
    let mut status_tick = tokio::time::interval(STATUS_PERIOD);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                let lease = lease_object(&name, &node_uid, Timestamp::now());
                if let Err(e) = leases.patch(&name, &pp, &Patch::Apply(lease)).await {
                    tracing::warn!("renewing lease kube-node-lease/{name}: {e}");
                }
            }
            _ = status_tick.tick() => {
                let status = node_status(&agent, &machine, since, now());
                if let Err(e) = nodes.patch_status(&name, &pp, &Patch::Apply(status)).await {
                    tracing::warn!("refreshing node {name} status: {e}");
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_carries_owner_and_micro_time() {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let lease = lease_object("n1", "uid-1", t);
        assert_eq!(lease["spec"]["renewTime"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    }

    #[test]
    fn machine_facts_are_plausible() {
        let m = Machine::detect(std::path::Path::new("/"));
        assert!(m.cpus >= 1);
        assert!(m.memory_kib > 0);
        assert!(m.storage_kib > 0);
    }
}
