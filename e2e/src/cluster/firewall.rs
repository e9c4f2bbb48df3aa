//! The cluster bridge in the host's iptables FORWARD chain.
//!
//! With `br_netfilter` loaded (`/proc/sys/net/bridge/bridge-nf-call-iptables` = 1), frames
//! between two ports of a Linux bridge pass the iptables FORWARD chain. dockerd loads it and
//! sets the FORWARD policy to DROP, so on a host where Docker runs, pods on the cluster's
//! bridge could no longer reach each other — while they still reached the API server on the
//! bridge address (INPUT) and passed their probes (OUTPUT), so nothing looked wrong.
//!
//! As the CNI bridge plugin and kind do, the cluster inserts two rules at the top of
//! FORWARD while it is up — `-i <bridge> -j ACCEPT` and `-o <bridge> -j ACCEPT` — each tagged
//! with the comment `locus-cluster <bridge>`. Teardown (and `locus-cluster clean`, for a
//! cluster that was killed) deletes every FORWARD rule carrying that exact comment, and only
//! those. The rules go wherever the `iptables` command puts them (nft or legacy backend),
//! which is where dockerd, calling the same command, put its DROP policy.
//!
//! Where the `iptables` command is missing the cluster still starts, with a warning when
//! bridged traffic passes iptables: dockerd needs that command to set the DROP policy, so
//! a host without it has no Docker-made DROP to get around. Where the command is there but
//! fails, starting fails if bridged traffic passes iptables (pods may not reach each other
//! and nothing would say so), and only warns otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ClusterError;

/// The table and chain the rules live in.
const CHAIN: &str = "FORWARD";

/// The sysctl that says whether bridged IPv4 traffic passes the iptables chains.
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Prefix of the comment of every rule a local cluster inserts.
const COMMENT_PREFIX: &str = "locus-cluster ";

/// Everything that can go wrong with the FORWARD rules.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// `iptables` could not be run at all.
    #[error("could not run {program}: {source}")]
    Run {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `iptables` ran and failed.
    #[error("`iptables {args}` failed ({status}): {stderr}")]
    Failed {
        /// Its arguments.
        args: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The comment that tags the FORWARD rules of `bridge`.
pub fn rule_comment(bridge: &str) -> String {
    format!("{COMMENT_PREFIX}{bridge}")
}

/// The `iptables` program: the first one on `PATH`, else the usual sbin locations
/// (`PATH` may lack them outside a root login shell). `None` where it is not installed.
pub fn iptables_program() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("iptables"))
        .find(|p| p.is_file())
}

/// Whether bridged IPv4 traffic passes the iptables chains on this host (`br_netfilter`
/// loaded and `bridge-nf-call-iptables` on).
pub fn bridged_traffic_passes_iptables() -> bool {
    std::fs::read_to_string(BRIDGE_NF_CALL_IPTABLES).is_ok_and(|v| v.trim() == "1")
}

/// Runs `program` with `-w` (wait for the xtables lock) and `args`; returns its stdout.
pub fn run_iptables(program: &Path, args: &[&str]) -> Result<String, FirewallError> {
    let out = Command::new(program)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|source| FirewallError::Run {
            program: program.display().to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FirewallError::Failed {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: match String::from_utf8_lossy(&out.stderr).trim() {
                "" => "(no message)".to_owned(),
                message => message.to_owned(),
            },
        })
    }
}

/// The rule specifications (without `-I`/`-D FORWARD`) that accept `bridge`'s traffic, tagged
/// with `comment`.
fn accept_specs(bridge: &str, comment: &str) -> [Vec<String>; 2] {
    ["-i", "-o"].map(|direction| {
        [
            direction,
            bridge,
            "-m",
            "comment",
            "--comment",
            comment,
            "-j",
            "ACCEPT",
        ]
        .map(str::to_owned)
        .to_vec()
    })
}

/// Inserts the rules accepting `bridge`'s traffic at the top of FORWARD, after deleting any
/// left by an earlier cluster on the same bridge. Returns whether the rules are in place.
pub fn accept_bridge(bridge: &str) -> Result<bool, ClusterError> {
    accept_bridges(bridge, &[])
}

/// [`accept_bridge`] for `bridge` and the further bridges `leaves` joined to it: the rules of
/// all of them are tagged for `bridge`, so [`remove_bridge_rules`] of `bridge` removes them.
pub fn accept_bridges(bridge: &str, leaves: &[String]) -> Result<bool, ClusterError> {
    let passes = bridged_traffic_passes_iptables();
    let Some(program) = iptables_program() else {
        if passes {
            tracing::warn!(
                bridge,
                "the iptables command is not installed, so the cluster bridge is not accepted \
                 in the FORWARD chain: on a host whose FORWARD policy is DROP (dockerd sets it) \
                 pods cannot reach each other. Install it: apt-get install iptables"
            );
        } else {
            tracing::info!(
                bridge,
                "iptables is not installed; bridged traffic does not pass iptables here, so \
                 no FORWARD rule is needed"
            );
        }
        return Ok(false);
    };
    let inserted = remove_rules_with(&program, bridge).and_then(|_| {
        let comment = rule_comment(bridge);
        for link in std::iter::once(bridge).chain(leaves.iter().map(String::as_str)) {
            for spec in accept_specs(link, &comment) {
                let mut args = vec!["-I", CHAIN, "1"];
                args.extend(spec.iter().map(String::as_str));
                run_iptables(&program, &args)?;
            }
        }
        Ok(())
    });
    match inserted {
        Ok(()) => {
            tracing::info!(bridge, "accepted the cluster bridge in iptables FORWARD");
            Ok(true)
        }
        Err(e) => {
            // Do not leave one rule of two behind.
            let _ = remove_rules_with(&program, bridge);
            if passes {
                Err(ClusterError::Firewall {
                    bridge: bridge.to_owned(),
                    source: e,
                })
            } else {
                tracing::warn!(
                    bridge,
                    error = %e,
                    "could not accept the cluster bridge in iptables FORWARD; bridged traffic \
                     does not pass iptables here, so pods still reach each other"
                );
                Ok(false)
            }
        }
    }
}

/// Deletes every FORWARD rule tagged for `bridge`; returns how many. Nothing to do (0)
/// where `iptables` is not installed.
pub fn remove_bridge_rules(bridge: &str) -> Result<usize, FirewallError> {
    match iptables_program() {
        Some(program) => remove_rules_with(&program, bridge),
        None => Ok(0),
    }
}

fn remove_rules_with(program: &Path, bridge: &str) -> Result<usize, FirewallError> {
    let comment = rule_comment(bridge);
    let listing = run_iptables(program, &["-S", CHAIN])?;
    let mut removed = 0;
    for rule in listing.lines().map(split_rule) {
        if comment_of(&rule) != Some(comment.as_str()) {
            continue;
        }
        // `-A FORWARD <spec>` becomes `-D FORWARD <spec>`: deleting by specification, not by
        // position, stays right while others insert rules at the same time.
        let Some(("-A", spec)) = rule.split_first().map(|(a, s)| (a.as_str(), s)) else {
            continue;
        };
        let mut args = vec!["-D"];
        args.extend(spec.iter().map(String::as_str));
        run_iptables(program, &args)?;
        removed += 1;
    }
    Ok(removed)
}

/// The FORWARD rules tagged for `bridge`, as `iptables -S` prints them; empty where
/// `iptables` is not installed.
pub fn bridge_rules(bridge: &str) -> Result<Vec<String>, FirewallError> {
    let Some(program) = iptables_program() else {
        return Ok(Vec::new());
    };
    let comment = rule_comment(bridge);
    Ok(run_iptables(&program, &["-S", CHAIN])?
        .lines()
        .filter(|line| comment_of(&split_rule(line)) == Some(comment.as_str()))
        .map(str::to_owned)
        .collect())
}

/// The bridges that have tagged FORWARD rules (for `locus-cluster clean`); empty where
/// `iptables` is not installed.
pub fn tagged_bridges() -> Result<Vec<String>, FirewallError> {
    let Some(program) = iptables_program() else {
        return Ok(Vec::new());
    };
    let mut bridges: Vec<String> = run_iptables(&program, &["-S", CHAIN])?
        .lines()
        .filter_map(|line| {
            comment_of(&split_rule(line))
                .and_then(|c| c.strip_prefix(COMMENT_PREFIX))
                .map(str::to_owned)
        })
        .collect();
    bridges.sort();
    bridges.dedup();
    Ok(bridges)
}

/// The value of a rule's `--comment`, if it has one.
fn comment_of(rule: &[String]) -> Option<&str> {
    rule.iter()
        .position(|arg| arg == "--comment")
        .and_then(|i| rule.get(i + 1))
        .map(String::as_str)
}

/// Splits a line of `iptables -S` into arguments: words separated by spaces, where a
/// double-quoted word may hold spaces and `\"` or `\\`.
fn split_rule(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    args.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        args.push(current);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_split_like_a_shell_would() {
        let line = r#"-A FORWARD -i locus1 -m comment --comment "locus-cluster locus1" -j ACCEPT"#;
        assert_eq!(
            split_rule(line),
            [
                "-A",
                "FORWARD",
                "-i",
                "locus1",
                "-m",
                "comment",
                "--comment",
                "locus-cluster locus1",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            split_rule(r#"-A X --comment "a \"b\" \\c""#),
            ["-A", "X", "--comment", r#"a "b" \c"#]
        );
        assert_eq!(split_rule(r#"--comment """#), ["--comment", ""]);
    }

    #[test]
    fn a_rule_is_matched_by_its_exact_comment_only() {
        let rule = |c: &str| {
            split_rule(&format!(
                "-A FORWARD -o locus10 -m comment --comment \"{c}\" -j ACCEPT"
            ))
        };
        assert_eq!(
            comment_of(&rule("locus-cluster locus10")),
            Some(rule_comment("locus10").as_str())
        );
        assert_ne!(
            comment_of(&rule("locus-cluster locus10")),
            Some(rule_comment("locus1").as_str())
        );
        assert_eq!(comment_of(&split_rule("-P FORWARD DROP")), None);
    }

    #[test]
    fn both_directions_are_accepted_and_tagged() {
        let [inbound, outbound] = accept_specs("locus7", &rule_comment("locus7"));
        assert_eq!(
            inbound.join(" "),
            "-i locus7 -m comment --comment locus-cluster locus7 -j ACCEPT"
        );
        assert_eq!(
            outbound.join(" "),
            "-o locus7 -m comment --comment locus-cluster locus7 -j ACCEPT"
        );
    }
}
