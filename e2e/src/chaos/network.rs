//! Network faults: iptables chains in one pod's network namespace, and their removal.

use std::time::Instant;

use super::{ChaosError, ChaosPod, ClusterNet, XTABLES_WAIT_SECS, run, tool};

/// Which fault a [`NetFault`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFaultKind {
    /// Cut off from the other pods, not from the host.
    Partition,
    /// Cut off from the API server only.
    ApiServerCut,
}

impl NetFaultKind {
    /// Its chains: (chain jumped to from `INPUT`, chain jumped to from `OUTPUT`).
    pub(super) fn chains(self) -> (&'static str, &'static str) {
        match self {
            Self::Partition => ("LOCUS-CHAOS-PEERS-IN", "LOCUS-CHAOS-PEERS-OUT"),
            Self::ApiServerCut => ("LOCUS-CHAOS-API-IN", "LOCUS-CHAOS-API-OUT"),
        }
    }

    /// A name for logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Partition => "partition from pods",
            Self::ApiServerCut => "cut from the API server",
        }
    }

    /// The rules of its `INPUT` chain, then of its `OUTPUT` chain.
    pub(super) fn rules(self, net: &ClusterNet) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
        let gateway = net.gateway.to_string();
        let port = net.api_port.to_string();
        let rule = |parts: &[&str]| parts.iter().map(|&p| p.to_owned()).collect::<Vec<_>>();
        match self {
            Self::Partition => (
                vec![
                    rule(&["-i", "lo", "-j", "ACCEPT"]),
                    rule(&["-s", &gateway, "-j", "ACCEPT"]),
                    rule(&["-s", &net.pod_cidr, "-j", "DROP"]),
                ],
                vec![
                    rule(&["-o", "lo", "-j", "ACCEPT"]),
                    rule(&["-d", &gateway, "-j", "ACCEPT"]),
                    rule(&["-d", &net.pod_cidr, "-j", "DROP"]),
                ],
            ),
            Self::ApiServerCut => (
                vec![rule(&[
                    "-s", &gateway, "-p", "tcp", "--sport", &port, "-j", "DROP",
                ])],
                vec![rule(&[
                    "-d", &gateway, "-p", "tcp", "--dport", &port, "-j", "DROP",
                ])],
            ),
        }
    }
}

/// A network fault in force on one pod; healed when dropped.
#[derive(Debug)]
pub struct NetFault {
    pod: ChaosPod,
    kind: NetFaultKind,
    since: Instant,
    active: bool,
}

impl NetFault {
    /// The pod.
    pub fn pod(&self) -> &ChaosPod {
        &self.pod
    }

    /// Which fault.
    pub fn kind(&self) -> NetFaultKind {
        self.kind
    }

    /// When it was put in force.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Removes the fault's rules.
    pub fn heal(mut self) -> Result<(), ChaosError> {
        self.active = false;
        remove_chains(&self.pod, self.kind)?;
        tracing::info!(pod = %self.pod, fault = self.kind.as_str(), held = ?self.since.elapsed(), "fault healed");
        Ok(())
    }
}

impl Drop for NetFault {
    fn drop(&mut self) {
        if self.active
            && let Err(error) = remove_chains(&self.pod, self.kind)
        {
            tracing::warn!(pod = %self.pod, fault = self.kind.as_str(), %error, "could not heal the fault on drop");
        }
    }
}

/// Cuts `pod` off from every other pod: inside its namespace, loopback and the gateway
/// (API server, probes, the tests' load generator) stay accepted, the rest of the pod
/// range is dropped in both directions.
pub fn partition_from_pods(pod: &ChaosPod) -> Result<NetFault, ChaosError> {
    inject(pod, NetFaultKind::Partition)
}

/// Cuts `pod` off from the API server only (its address and port, both directions):
/// other pods, probes and the load generator still reach it.
pub fn cut_from_api_server(pod: &ChaosPod) -> Result<NetFault, ChaosError> {
    inject(pod, NetFaultKind::ApiServerCut)
}

/// Removes every network fault of this module from `pod` (whatever guard made it).
pub fn heal(pod: &ChaosPod) -> Result<(), ChaosError> {
    for kind in [NetFaultKind::Partition, NetFaultKind::ApiServerCut] {
        remove_chains(pod, kind)?;
    }
    Ok(())
}

pub(super) fn inject(pod: &ChaosPod, kind: NetFaultKind) -> Result<NetFault, ChaosError> {
    let (input, output) = kind.chains();
    let (input_rules, output_rules) = kind.rules(&pod.net);
    let apply = || -> Result<(), ChaosError> {
        for (chain, rules, parent) in [
            (input, &input_rules, "INPUT"),
            (output, &output_rules, "OUTPUT"),
        ] {
            iptables(pod, &["-N", chain])?;
            for rule in rules {
                let mut args = vec!["-A", chain];
                args.extend(rule.iter().map(String::as_str));
                iptables(pod, &args)?;
            }
            iptables(pod, &["-I", parent, "1", "-j", chain])?;
        }
        Ok(())
    };
    if let Err(error) = apply() {
        // Leave nothing half-made; the original error is the one to report.
        let _ = remove_chains(pod, kind);
        return Err(error);
    }
    tracing::info!(%pod, netns = %pod.netns, fault = kind.as_str(), "fault injected");
    Ok(NetFault {
        pod: pod.clone(),
        kind,
        since: Instant::now(),
        active: true,
    })
}

/// Removes the jumps to the fault's chains and the chains; absent ones are fine.
pub(super) fn remove_chains(pod: &ChaosPod, kind: NetFaultKind) -> Result<(), ChaosError> {
    let (input, output) = kind.chains();
    for (chain, parent) in [(input, "INPUT"), (output, "OUTPUT")] {
        let listed = iptables(pod, &["-S"])?;
        if !listed.lines().any(|l| l == format!("-N {chain}")) {
            continue;
        }
        // A jump inserted twice (never by this module, but cheap to be sure) goes too.
        while listed_jump(&iptables(pod, &["-S", parent])?, chain) {
            iptables(pod, &["-D", parent, "-j", chain])?;
        }
        iptables(pod, &["-F", chain])?;
        iptables(pod, &["-X", chain])?;
    }
    Ok(())
}

pub(super) fn listed_jump(rules: &str, chain: &str) -> bool {
    rules.lines().any(|l| {
        l.split_whitespace()
            .collect::<Vec<_>>()
            .ends_with(&["-j", chain])
    })
}

pub(super) fn iptables(pod: &ChaosPod, args: &[&str]) -> Result<String, ChaosError> {
    let ip = tool("ip", "iproute2")?;
    let iptables = tool("iptables", "iptables")?;
    let iptables = iptables.to_string_lossy();
    let mut full = vec![
        "netns",
        "exec",
        pod.netns.as_str(),
        &iptables,
        "-w",
        XTABLES_WAIT_SECS,
    ];
    full.extend_from_slice(args);
    run(&ip, &full)
}
