//! Command-line flags of the node agent, parsed by hand.
//!
//! Every flag accepts `--name value` and `--name=value`. A missing or invalid flag is
//! reported with the flag's name and what a valid value looks like.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use locus_e2e::cluster::network::{MAX_BRIDGES, pod_capacity};

use crate::network::Ipv4Cidr;

/// The agent's configuration, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flags {
    /// Admin kubeconfig (client-certificate auth) the agent talks to the API server with.
    pub kubeconfig: PathBuf,
    /// Name of the Node object this agent registers and serves.
    pub node_name: String,
    /// An existing, up Linux bridge carrying the gateway address.
    pub bridge: String,
    /// Further bridges joined to `bridge` (one L2 segment) that take pods' veths once the
    /// ones before them are full: a bridge takes 1023 ports.
    pub extra_bridges: Vec<String>,
    /// The pod range on the bridge.
    pub pod_cidr: Ipv4Cidr,
    /// Pods the node admits, derived from the pod range
    /// ([`locus_e2e::cluster::network::pod_capacity`]: 240 on a /24).
    pub max_pods: u32,
    /// The bridge's own address (the API server listens there too).
    pub gateway: Ipv4Addr,
    /// Service range: blackholed inside every pod.
    pub service_cidr: Ipv4Cidr,
    /// The images file: container image → local executable.
    pub images: PathBuf,
    /// Where pods' logs, volumes and tokens live.
    pub run_dir: PathBuf,
    /// Upper bound of the crash-loop back-off.
    pub max_restart_backoff: Duration,
}

/// The usage text printed with flag errors.
pub const USAGE: &str = "usage: locus-node-agent --kubeconfig PATH --node-name NAME --bridge NAME \
--pod-cidr 10.213.N.0/24 --gateway 10.213.N.1 --service-cidr 10.96.0.0/16 --images PATH \
--run-dir DIR [--extra-bridges NAME,...] [--max-restart-backoff-secs 10]\n       locus-node-agent exec-container \
[--hostname NAME] [--workdir DIR] [--mount SRC:DST[:ro]]... -- PROGRAM [ARGS...]";

/// A flag was missing, unknown, repeated or invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    /// A required flag was not given.
    #[error("missing flag --{0}")]
    Missing(&'static str),
    /// A flag the agent does not know.
    #[error("unknown argument {0:?}")]
    Unknown(String),
    /// A flag given without its value.
    #[error("flag --{0} needs a value")]
    NoValue(String),
    /// A flag given twice.
    #[error("flag --{0} given twice")]
    Repeated(String),
    /// A flag whose value does not parse.
    #[error("invalid --{flag} {value:?}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
}

const KNOWN: [&str; 10] = [
    "kubeconfig",
    "node-name",
    "bridge",
    "extra-bridges",
    "pod-cidr",
    "gateway",
    "service-cidr",
    "images",
    "run-dir",
    "max-restart-backoff-secs",
];

/// Splits `--name value` / `--name=value` pairs into (name, value), refusing unknown
/// and repeated flags.
fn pairs(args: &[String]) -> Result<Vec<(&'static str, String)>, FlagError> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(FlagError::Unknown(arg.clone()));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(known) = KNOWN.iter().find(|k| **k == name) else {
            return Err(FlagError::Unknown(arg.clone()));
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .filter(|v| !v.starts_with("--"))
                .cloned()
                .ok_or_else(|| FlagError::NoValue(name.to_string()))?,
        };
        if value.is_empty() {
            return Err(FlagError::NoValue(name.to_string()));
        }
        if out.iter().any(|(n, _)| n == known) {
            return Err(FlagError::Repeated(name.to_string()));
        }
        out.push((known, value));
    }
    Ok(out)
}

impl Flags {
    /// Parses the agent's flags (the arguments after the program name).
    pub fn parse(args: &[String]) -> Result<Self, FlagError> {
        let pairs = pairs(args)?;
        let get = |name: &'static str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .ok_or(FlagError::Missing(name))
        };
        let cidr = |name: &'static str| -> Result<Ipv4Cidr, FlagError> {
            let value = get(name)?;
            value.parse().map_err(|reason| FlagError::Invalid {
                flag: name,
                value: value.clone(),
                reason,
            })
        };
        let pod_cidr = cidr("pod-cidr")?;
        let service_cidr = cidr("service-cidr")?;
        let gateway_text = get("gateway")?;
        let gateway: Ipv4Addr = gateway_text.parse().map_err(|_| FlagError::Invalid {
            flag: "gateway",
            value: gateway_text.clone(),
            reason: "expected an IPv4 address such as 10.213.1.1".into(),
        })?;
        if !pod_cidr.contains(gateway) {
            return Err(FlagError::Invalid {
                flag: "gateway",
                value: gateway_text,
                reason: format!("the gateway must lie inside --pod-cidr {pod_cidr}"),
            });
        }
        let bridge = get("bridge")?;
        let extra = pairs
            .iter()
            .find(|(n, _)| *n == "extra-bridges")
            .map(|(_, v)| v.as_str());
        let extra_bridges = parse_bridges(&bridge, extra)?;
        let max_pods = capacity(pod_cidr, gateway, &gateway_text, extra_bridges.len() + 1)?;
        let max_restart_backoff = match pairs.iter().find(|(n, _)| *n == "max-restart-backoff-secs")
        {
            None => Duration::from_secs(10),
            Some((_, v)) => match v.parse::<u64>() {
                Ok(secs) if secs > 0 => Duration::from_secs(secs),
                _ => {
                    return Err(FlagError::Invalid {
                        flag: "max-restart-backoff-secs",
                        value: v.clone(),
                        reason: "expected a whole number of seconds, at least 1".into(),
                    });
                }
            },
        };
        let node_name = get("node-name")?;
        if !is_dns_subdomain(&node_name) {
            return Err(FlagError::Invalid {
                flag: "node-name",
                value: node_name,
                reason: "expected a DNS subdomain: lower-case letters, digits, '-' and '.'".into(),
            });
        }
        Ok(Self {
            kubeconfig: get("kubeconfig")?.into(),
            node_name,
            bridge,
            extra_bridges,
            pod_cidr,
            max_pods,
            gateway,
            service_cidr,
            images: get("images")?.into(),
            run_dir: get("run-dir")?.into(),
            max_restart_backoff,
        })
    }
}

/// Whether `value` can name a network interface.
fn is_interface_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 15
        && !value.contains(['/', ','])
        && !value.contains(char::is_whitespace)
}

/// Checks `--bridge` and parses `--extra-bridges` (comma-separated, each named once).
fn parse_bridges(bridge: &str, extra: Option<&str>) -> Result<Vec<String>, FlagError> {
    if !is_interface_name(bridge) {
        return Err(FlagError::Invalid {
            flag: "bridge",
            value: bridge.to_owned(),
            reason: "expected a network interface name of at most 15 characters".into(),
        });
    }
    let Some(extra) = extra else {
        return Ok(Vec::new());
    };
    let invalid = |reason: String| FlagError::Invalid {
        flag: "extra-bridges",
        value: extra.to_owned(),
        reason,
    };
    let names: Vec<String> = extra.split(',').map(str::to_owned).collect();
    if !names.iter().all(|n| is_interface_name(n)) {
        return Err(invalid(
            "expected network interface names of at most 15 characters, separated by commas".into(),
        ));
    }
    if names
        .iter()
        .enumerate()
        .any(|(i, b)| b == bridge || names[..i].contains(b))
    {
        return Err(invalid(
            "every bridge may be named once, --bridge included".into(),
        ));
    }
    if u32::try_from(names.len() + 1).map_or(true, |n| n > MAX_BRIDGES) {
        return Err(invalid(format!(
            "at most {} further bridges",
            MAX_BRIDGES - 1
        )));
    }
    Ok(names)
}

/// Pods the node admits on `pod_cidr` with `bridges` bridges, once the gateway is known to be
/// one of its host addresses.
fn capacity(
    pod_cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
    gateway_text: &str,
    bridges: usize,
) -> Result<u32, FlagError> {
    if gateway == pod_cidr.network() || gateway == pod_cidr.broadcast() {
        return Err(FlagError::Invalid {
            flag: "gateway",
            value: gateway_text.to_owned(),
            reason: format!(
                "the gateway must be a host address of --pod-cidr {pod_cidr}, not its network or broadcast address"
            ),
        });
    }
    let bridges = u32::try_from(bridges).unwrap_or(u32::MAX);
    pod_capacity(pod_cidr.prefix(), bridges).ok_or_else(|| FlagError::Invalid {
        flag: "pod-cidr",
        value: pod_cidr.to_string(),
        reason: if pod_cidr.prefix() > 29 {
            "the range is too small for pods: use at most a /29 (a /24 is usual)"
        } else {
            "the range is larger than a node can use: use at least a /16 (a /24 is usual)"
        }
        .into(),
    })
}

impl Flags {
    /// Every bridge pods' veths may go to, `--bridge` first.
    pub fn bridges(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.bridge.as_str()).chain(self.extra_bridges.iter().map(String::as_str))
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    const FULL: &str = "--kubeconfig /k --node-name locus-node --bridge locus1 \
        --pod-cidr 10.213.1.0/24 --gateway=10.213.1.1 --service-cidr 10.96.0.0/16 \
        --images /i.yaml --run-dir /run/x";

    #[test]
    fn parses_both_spellings() {
        let f = Flags::parse(&args(FULL)).unwrap();
        assert_eq!(f.node_name, "locus-node");
        assert_eq!(f.gateway, Ipv4Addr::new(10, 213, 1, 1));
        assert_eq!(f.pod_cidr.to_string(), "10.213.1.0/24");
        assert_eq!(f.max_pods, 240);
        assert_eq!(f.max_restart_backoff, Duration::from_secs(10));
        let f = Flags::parse(&args(&format!("{FULL} --max-restart-backoff-secs=3"))).unwrap();
        assert_eq!(f.max_restart_backoff, Duration::from_secs(3));
    }

    #[test]
    fn capacity_follows_the_pod_range() {
        let wide = FULL
            .replace("10.213.1.0/24", "10.224.8.0/22")
            .replace("10.213.1.1", "10.224.8.1");
        let f = Flags::parse(&args(&wide)).unwrap();
        assert_eq!(f.pod_cidr.to_string(), "10.224.8.0/22");
        assert_eq!(f.max_pods, 969);
        let narrow = FULL.replace("10.213.1.0/24", "10.213.1.0/29");
        assert_eq!(Flags::parse(&args(&narrow)).unwrap().max_pods, 4);
        // A /21 on one bridge is bounded by its 1023 ports; on two by 2044.
        let wider = FULL
            .replace("10.213.1.0/24", "10.224.8.0/21")
            .replace("10.213.1.1", "10.224.8.1");
        assert_eq!(Flags::parse(&args(&wider)).unwrap().max_pods, 971);
        let f = Flags::parse(&args(&format!("{wider} --extra-bridges=locus2p1"))).unwrap();
        assert_eq!(f.extra_bridges, ["locus2p1"]);
        assert_eq!(f.max_pods, 1941);
        for bad in ["locus1", "locus2p1,locus2p1", "a,,b", "a/b"] {
            assert!(
                matches!(
                    Flags::parse(&args(&format!("{wider} --extra-bridges={bad}"))),
                    Err(FlagError::Invalid {
                        flag: "extra-bridges",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn reports_missing_unknown_and_invalid_flags() {
        let without_images = FULL.replace("--images /i.yaml", "");
        assert_eq!(
            Flags::parse(&args(&without_images)),
            Err(FlagError::Missing("images"))
        );
        assert_eq!(
            Flags::parse(&args(&format!("{FULL} --verbose yes"))),
            Err(FlagError::Unknown("--verbose".into()))
        );
        assert_eq!(
            Flags::parse(&args(&format!("{FULL} --images /j"))),
            Err(FlagError::Repeated("images".into()))
        );
        let outside = FULL.replace("--gateway=10.213.1.1", "--gateway=10.213.2.1");
        assert!(matches!(
            Flags::parse(&args(&outside)),
            Err(FlagError::Invalid {
                flag: "gateway",
                ..
            })
        ));
        let bad = FULL.replace("10.213.1.0/24", "10.213.1.0/33");
        assert!(matches!(
            Flags::parse(&args(&bad)),
            Err(FlagError::Invalid {
                flag: "pod-cidr",
                ..
            })
        ));
        for (cidr, gateway) in [("10.213.1.0/30", "10.213.1.1"), ("10.0.0.0/15", "10.0.0.1")] {
            let bad = FULL
                .replace("10.213.1.0/24", cidr)
                .replace("10.213.1.1", gateway);
            assert!(
                matches!(
                    Flags::parse(&args(&bad)),
                    Err(FlagError::Invalid {
                        flag: "pod-cidr",
                        ..
                    })
                ),
                "{cidr}"
            );
        }
        for gateway in ["10.213.1.0", "10.213.1.255"] {
            let bad = FULL.replace("--gateway=10.213.1.1", &format!("--gateway={gateway}"));
            assert!(
                matches!(
                    Flags::parse(&args(&bad)),
                    Err(FlagError::Invalid {
                        flag: "gateway",
                        ..
                    })
                ),
                "{gateway}"
            );
        }
        assert_eq!(
            Flags::parse(&args("--kubeconfig")),
            Err(FlagError::NoValue("kubeconfig".into()))
        );
    }
}
