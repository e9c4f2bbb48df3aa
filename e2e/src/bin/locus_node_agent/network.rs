//! Pod networking: a network namespace per pod, a veth pair into the bridge, an address
//! from the pod range.
//!
//! Inside a pod's namespace there is `lo`, `eth0` with the pod's address, the connected
//! route of the pod range (which holds the gateway, where the API server listens) and a
//! `blackhole` route for the service range. There is no default route, so nothing a pod
//! does can leave the machine. Everything is done with the `ip` command (iproute2).
//!
//! Names: the namespace is `locus-<bridge>-<first 8 hex of the pod UID>`; the host end of
//! the veth is `lc<first 12 hex of the pod UID>` (15 characters at most, as Linux wants).
//! On start the agent kills every process left inside a namespace with its bridge's
//! prefix, deletes those namespaces and every `lc*` veth still attached to its bridge, so
//! a crashed run leaves nothing the next cannot clean.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An IPv4 range `a.b.c.d/n`, stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The range's first address.
    pub fn network(self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The range's last address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// Whether `ip` lies in the range.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || format!("expected an IPv4 range such as 10.213.1.0/24, got {s:?}");
        let (addr, prefix) = s.split_once('/').ok_or_else(expected)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| expected())?;
        let prefix: u8 = prefix.parse().map_err(|_| expected())?;
        if prefix > 32 {
            return Err(expected());
        }
        let cidr = Self {
            network: addr,
            prefix,
        };
        let network = Ipv4Addr::from(u32::from(addr) & cidr.mask());
        if network != addr {
            return Err(format!(
                "{s} has host bits set: did you mean {network}/{prefix}?"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Hands out pod addresses from the pod range: never the network address, the gateway
/// or the broadcast address, lowest free first.
#[derive(Debug)]
pub struct IpAllocator {
    cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
    used: BTreeSet<Ipv4Addr>,
}

impl IpAllocator {
    /// An allocator over `cidr` that never returns `gateway`.
    pub fn new(cidr: Ipv4Cidr, gateway: Ipv4Addr) -> Self {
        Self {
            cidr,
            gateway,
            used: BTreeSet::new(),
        }
    }

    /// The lowest free address, or `None` when the range is full.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let first = u32::from(self.cidr.network()) + 1;
        let last = u32::from(self.cidr.broadcast());
        let ip = (first..last)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != self.gateway && !self.used.contains(ip))?;
        self.used.insert(ip);
        Some(ip)
    }

    /// Returns `ip` to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    /// How many addresses are handed out.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

/// Network errors: an `ip` command failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// `ip` could not be run at all.
    #[error("could not run {ip} {args}: {source}")]
    Spawn {
        /// The `ip` binary.
        ip: String,
        /// Its arguments.
        args: String,
        /// Why.
        source: std::io::Error,
    },
    /// `ip` ran and failed.
    #[error("`ip {args}` failed: {stderr}")]
    Failed {
        /// Its arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Runs the `ip` command.
#[derive(Clone, Debug)]
pub struct IpCommand {
    path: PathBuf,
}

impl IpCommand {
    /// Finds `ip` on `PATH` or in the usual sbin directories.
    pub fn find() -> Option<Self> {
        let path_dirs = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_dirs)
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
            .map(|d| d.join("ip"))
            .find(|p| p.is_file())
            .map(|path| Self { path })
    }

    /// The binary's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ip args…`, returning its stdout.
    pub async fn run(&self, args: &[&str]) -> Result<String, NetworkError> {
        let out = tokio::process::Command::new(&self.path)
            .args(args)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| NetworkError::Spawn {
                ip: self.path.display().to_string(),
                args: args.join(" "),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(NetworkError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// Prefix of the namespaces of pods on `bridge`.
pub fn netns_prefix(bridge: &str) -> String {
    format!("locus-{bridge}-")
}

fn uid_hex(uid: &str) -> String {
    uid.chars().filter(char::is_ascii_hexdigit).collect()
}

/// The namespace name of a pod.
pub fn netns_name(bridge: &str, uid: &str) -> String {
    let hex = uid_hex(uid);
    format!("{}{}", netns_prefix(bridge), &hex[..hex.len().min(8)])
}

/// The host end of a pod's veth pair.
pub fn host_veth_name(uid: &str) -> String {
    let hex = uid_hex(uid);
    format!("lc{}", &hex[..hex.len().min(12)])
}

/// One pod's network as set up on the host.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    /// The namespace's name (for `ip netns exec`).
    pub netns: String,
    /// The host end of the veth.
    pub host_veth: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

/// Creates the namespace, the veth pair and the routes of one pod. The host end of the veth
/// goes to `bridge`, or once that is full (a bridge takes 1023 ports) to the first of
/// `extra_bridges` with room; the namespace is named after `bridge` either way.
pub async fn set_up(
    ip: &IpCommand,
    bridge: &str,
    extra_bridges: &[String],
    pod_cidr: Ipv4Cidr,
    service_cidr: Ipv4Cidr,
    uid: &str,
    addr: Ipv4Addr,
) -> Result<PodNetwork, NetworkError> {
    let net = PodNetwork {
        netns: netns_name(bridge, uid),
        host_veth: host_veth_name(uid),
        ip: addr,
    };
    // Leftovers of an earlier attempt for the same pod would make `add` fail.
    tear_down(ip, &net).await;
    let ns = net.netns.as_str();
    let address = format!("{addr}/{}", pod_cidr.prefix());
    let service = service_cidr.to_string();
    ip.run(&["netns", "add", ns]).await?;
    if let Err(e) = attach(ip, &net, bridge, extra_bridges).await {
        tear_down(ip, &net).await;
        return Err(e);
    }
    let steps: [&[&str]; 5] = [
        &["link", "set", &net.host_veth, "up"],
        &["-n", ns, "link", "set", "lo", "up"],
        &["-n", ns, "addr", "add", &address, "dev", "eth0"],
        &["-n", ns, "link", "set", "eth0", "up"],
        &["-n", ns, "route", "add", "blackhole", &service],
    ];
    for step in steps {
        if let Err(e) = ip.run(step).await {
            tear_down(ip, &net).await;
            return Err(e);
        }
    }
    Ok(net)
}

/// Creates the pod's veth pair and puts its host end on the first bridge with a free port.
async fn attach(
    ip: &IpCommand,
    net: &PodNetwork,
    bridge: &str,
    extra_bridges: &[String],
) -> Result<(), NetworkError> {
    ip.run(&[
        "link",
        "add",
        &net.host_veth,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &net.netns,
    ])
    .await?;
    for candidate in std::iter::once(bridge).chain(extra_bridges.iter().map(String::as_str)) {
        match ip
            .run(&["link", "set", &net.host_veth, "master", candidate])
            .await
        {
            Ok(_) => return Ok(()),
            // EXFULL: every port number of this bridge is taken; try the next.
            Err(NetworkError::Failed { stderr, .. }) if stderr.contains("Exchange full") => {}
            Err(e) => return Err(e),
        }
    }
    Err(NetworkError::Failed {
        args: format!("link set {} master <each bridge>", net.host_veth),
        stderr: format!(
            "every bridge of the node is full (a bridge takes 1023 ports): {bridge}{}{}",
            if extra_bridges.is_empty() { "" } else { "," },
            extra_bridges.join(",")
        ),
    })
}

/// Kills every process still inside network namespace `netns` (a container that left
/// its process group, or the containers of an agent that crashed); returns how many.
pub async fn kill_processes_in(ip: &IpCommand, netns: &str) -> usize {
    let Ok(pids) = ip.run(&["netns", "pids", netns]).await else {
        return 0;
    };
    pids.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::SIGKILL)
                .is_ok()
        })
        .count()
}

/// Deletes a pod's namespace (which deletes both veth ends) and its host veth if it is
/// still there, killing whatever still runs inside first. Errors are logged, not
/// returned: tear-down is best effort.
pub async fn tear_down(ip: &IpCommand, net: &PodNetwork) {
    if Path::new("/run/netns").join(&net.netns).exists() {
        let killed = kill_processes_in(ip, &net.netns).await;
        if killed > 0 {
            tracing::info!(netns = %net.netns, "killed {killed} processes left in the pod");
        }
        if let Err(e) = ip.run(&["netns", "delete", &net.netns]).await {
            tracing::warn!(netns = %net.netns, "could not delete the pod's namespace: {e}");
        }
    }
    if Path::new("/sys/class/net").join(&net.host_veth).exists() {
        let _ = ip.run(&["link", "delete", &net.host_veth]).await;
    }
}

/// Removes namespaces and veths an earlier agent on the same bridges left behind.
/// Returns how many it removed.
pub async fn remove_stale(ip: &IpCommand, bridge: &str, extra_bridges: &[String]) -> usize {
    let mut removed = 0;
    let prefix = netns_prefix(bridge);
    if let Ok(list) = ip.run(&["netns", "list"]).await {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&prefix) {
                let killed = kill_processes_in(ip, name).await;
                if killed > 0 {
                    tracing::info!("killed {killed} processes left in stale namespace {name}");
                }
                match ip.run(&["netns", "delete", name]).await {
                    Ok(_) => removed += 1,
                    Err(e) => tracing::warn!("could not delete stale namespace {name}: {e}"),
                }
            }
        }
    }
    for bridge in std::iter::once(bridge).chain(extra_bridges.iter().map(String::as_str)) {
        let Ok(list) = ip.run(&["-o", "link", "show", "master", bridge]).await else {
            continue;
        };
        for line in list.lines() {
            // "12: lcabcdef012345@if2: <BROADCAST,...> ..."
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with("lc") && ip.run(&["link", "delete", name]).await.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_rejects_host_bits() {
        let c: Ipv4Cidr = "10.213.7.0/24".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(10, 213, 7, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 213, 7, 255));
        assert!(c.contains(Ipv4Addr::new(10, 213, 7, 9)));
        assert!(!c.contains(Ipv4Addr::new(10, 213, 8, 9)));
        assert!("10.213.7.1/24".parse::<Ipv4Cidr>().is_err());
        assert!("10.213.7.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.213.7.0/40".parse::<Ipv4Cidr>().is_err());
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn allocator_skips_network_gateway_and_broadcast_and_reuses_released() {
        let cidr: Ipv4Cidr = "10.213.1.0/29".parse().unwrap();
        let mut ipam = IpAllocator::new(cidr, Ipv4Addr::new(10, 213, 1, 1));
        let got: Vec<_> = std::iter::from_fn(|| ipam.allocate()).collect();
        // .0 network, .1 gateway, .7 broadcast are never handed out.
        assert_eq!(
            got,
            (2..=6)
                .map(|i| Ipv4Addr::new(10, 213, 1, i))
                .collect::<Vec<_>>()
        );
        assert_eq!(ipam.allocate(), None);
        ipam.release(Ipv4Addr::new(10, 213, 1, 4));
        assert_eq!(ipam.in_use(), 4);
        assert_eq!(ipam.allocate(), Some(Ipv4Addr::new(10, 213, 1, 4)));
    }

    #[test]
    fn names_fit_linux_limits() {
        let uid = "0f6c2a4e-93b1-4c2d-8e8f-1234567890ab";
        assert_eq!(netns_name("locus3", uid), "locus-locus3-0f6c2a4e");
        let veth = host_veth_name(uid);
        assert_eq!(veth, "lc0f6c2a4e93b1");
        assert!(veth.len() <= 15);
    }
}
