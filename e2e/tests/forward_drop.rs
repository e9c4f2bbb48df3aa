//! Pods reach each other on a host whose iptables FORWARD policy is DROP, as dockerd leaves
//! it (with `br_netfilter` on, frames between two ports of the cluster's bridge pass FORWARD).
//!
//! The test sets the policy to DROP, starts its own cluster, runs two pods and has each one
//! answer the other over HTTP on its pod address — the request leaves one pod's network
//! namespace through its veth, crosses the bridge and enters the other's. Where bridged
//! traffic passes iptables it also checks the control: with the cluster's FORWARD rules
//! deleted the same request fails, and works again once they are back. Finally the cluster
//! stops and no rule tagged for its bridge is left.
//!
//! The FORWARD policy is the host's: a guard restores the saved one when the test ends in
//! any way it can see (success, panic, SIGINT, SIGTERM, SIGHUP). This is the only test of
//! this binary, so no other test runs while the policy is DROP.

// Test code: a failed step fails the test at once, with its cause.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use locus_e2e::cluster::ClusterInfo;
use locus_e2e::cluster::firewall;
use locus_e2e::cluster::network::netns_prefix;
use tokio::signal::unix::{SignalKind, signal};

/// Restores the FORWARD policy it found when dropped, or when the test process is told to
/// stop by a signal (which would skip the drop).
struct ForwardPolicyGuard {
    iptables: PathBuf,
    saved: String,
    /// Set once the policy is back, so a later signal only ends the process.
    restored: Arc<AtomicBool>,
}

fn forward_policy(iptables: &std::path::Path) -> String {
    let listing = firewall::run_iptables(iptables, &["-S", "FORWARD"]).unwrap();
    listing
        .lines()
        .find_map(|l| l.strip_prefix("-P FORWARD "))
        .map_or_else(
            || panic!("no FORWARD policy in `iptables -S FORWARD`:\n{listing}"),
            |p| p.trim().to_owned(),
        )
}

fn set_forward_policy(iptables: &std::path::Path, policy: &str) -> Result<(), String> {
    firewall::run_iptables(iptables, &["-P", "FORWARD", policy])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl ForwardPolicyGuard {
    /// Saves the FORWARD policy and sets it to DROP.
    fn drop_forwarding() -> Self {
        let iptables = firewall::iptables_program().unwrap_or_else(|| {
            panic!("this test needs the iptables command: apt-get install iptables")
        });
        let saved = forward_policy(&iptables);
        let restored = Arc::new(AtomicBool::new(false));
        {
            let iptables = iptables.clone();
            let saved = saved.clone();
            let restored = Arc::clone(&restored);
            // Catching these signals replaces their default action for the rest of the
            // process: the task ends the process itself once the policy is back.
            // Registered before the policy changes, not when the task first runs.
            let [mut int, mut term, mut hup] = [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
            ]
            .map(|kind| signal(kind).unwrap());
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                if !restored.swap(true, Ordering::SeqCst) {
                    match set_forward_policy(&iptables, &saved) {
                        Ok(()) => eprintln!("FORWARD policy restored to {saved}"),
                        Err(e) => eprintln!("COULD NOT RESTORE the FORWARD policy {saved}: {e}"),
                    }
                }
                std::process::exit(130);
            });
        }
        set_forward_policy(&iptables, "DROP").unwrap();
        eprintln!("FORWARD policy set to DROP (was {saved})");
        Self {
            iptables,
            saved,
            restored,
        }
    }
}

impl Drop for ForwardPolicyGuard {
    fn drop(&mut self) {
        if self.restored.swap(true, Ordering::SeqCst) {
            return;
        }
        match set_forward_policy(&self.iptables, &self.saved) {
            Ok(()) => eprintln!("FORWARD policy restored to {}", self.saved),
            Err(e) => eprintln!(
                "COULD NOT RESTORE the FORWARD policy to {}: {e}; run `iptables -P FORWARD {}`",
                self.saved, self.saved
            ),
        }
    }
}

/// A `locus-cluster up --lifeline` of this test's own; stopped with SIGTERM.
fn start_cluster() -> (Child, ClusterInfo) {
    let bin = locus_e2e::cluster::workspace_bin_dir()
        .unwrap()
        .join("locus-cluster");
    let mut child = Command::new(&bin)
        .args(["up", "--json", "--lifeline"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let msg: serde_json::Value = serde_json::from_str(&line).unwrap();
    let info: ClusterInfo = serde_json::from_value(msg["ready"].clone())
        .unwrap_or_else(|_| panic!("cluster did not start: {line}"));
    (child, info)
}

fn kubectl(info: &ClusterInfo, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new(info.bin_dir.join("kubectl"));
    cmd.arg(format!("--kubeconfig={}", info.kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test-server pod named `name`, Ready once it serves `/healthz`.
fn server_pod(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "server",
                "image": "locus/test-server:dev",
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "POD_NAME", "value": name}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
            }],
        },
    })
    .to_string()
}

/// A running pod: its address and its network namespace on the node.
#[derive(Clone)]
struct PodNet {
    name: String,
    ip: Ipv4Addr,
    netns: String,
}

fn pod_net(info: &ClusterInfo, name: &str) -> PodNet {
    let out = kubectl(
        info,
        &[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.status.podIP} {.metadata.uid}",
        ],
        None,
    );
    let (ip, uid) = out.trim().split_once(' ').unwrap();
    // The node agent names a pod's namespace `locus-<bridge>-<first 8 hex digits of its UID>`.
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    PodNet {
        name: name.to_owned(),
        ip: ip.parse().unwrap(),
        netns: format!("{}{hex}", netns_prefix(&info.bridge)),
    }
}

/// `GET /` on `to`'s port 8080, sent from inside `from`'s network namespace: the request
/// crosses the bridge from one pod's veth to the other's.
fn get_between(from: &PodNet, to: &PodNet, timeout: Duration) -> Result<String, String> {
    let netns = format!("/run/netns/{}", from.netns);
    let addr = SocketAddr::from((to.ip, 8080));
    // A thread of its own enters the namespace (setns changes only the calling thread) and
    // ends with it, so no other code ever runs there.
    let worker = std::thread::spawn(move || -> Result<String, String> {
        let ns = std::fs::File::open(&netns).map_err(|e| format!("open {netns}: {e}"))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter {netns}: {e}"))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(
                format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok(reply)
    });
    worker
        .join()
        .map_err(|_| "the request thread panicked".to_owned())?
}

/// Whether `from` gets `to`'s own answer within `within` (a few tries).
async fn reaches(from: &PodNet, to: &PodNet, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let (from_, to_) = (from.clone(), to.clone());
        let got =
            tokio::task::spawn_blocking(move || get_between(&from_, &to_, Duration::from_secs(3)))
                .await
                .map_err(|e| e.to_string())?;
        let outcome = got.and_then(|reply| {
            if reply.starts_with("HTTP/1.1 200")
                && reply.contains(&format!("\"pod\":\"{}\"", to.name))
            {
                Ok(())
            } else {
                Err(format!("unexpected answer: {reply}"))
            }
        });
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "{} ({}) → {} ({}): {e}",
                    from.name, from.ip, to.name, to.ip
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test]
async fn pods_reach_each_other_when_the_forward_policy_is_drop() {
    let policy = ForwardPolicyGuard::drop_forwarding();
    let passes = firewall::bridged_traffic_passes_iptables();
    if !passes {
        eprintln!(
            "note: bridged traffic does not pass iptables on this host (br_netfilter off), so \
             the DROP policy cannot affect the pods and this test proves less here"
        );
    }

    let (mut supervisor, info) = start_cluster();
    let rules = firewall::bridge_rules(&info.bridge).unwrap();
    assert_eq!(
        rules.len(),
        2,
        "one ACCEPT rule each way for {}: {rules:?}",
        info.bridge
    );

    for name in ["alpha", "beta"] {
        kubectl(&info, &["apply", "-f", "-"], Some(&server_pod(name)));
    }
    kubectl(
        &info,
        &[
            "wait",
            "pod/alpha",
            "pod/beta",
            "--for=condition=Ready",
            "--timeout=90s",
        ],
        None,
    );
    let alpha = pod_net(&info, "alpha");
    let beta = pod_net(&info, "beta");

    let within = Duration::from_secs(15);
    reaches(&alpha, &beta, within).await.unwrap();
    reaches(&beta, &alpha, within).await.unwrap();

    if passes {
        // The control: without the cluster's rules the DROP policy cuts the pods apart...
        let removed = firewall::remove_bridge_rules(&info.bridge).unwrap();
        assert_eq!(removed, 2);
        let cut = reaches(&alpha, &beta, Duration::ZERO).await;
        assert!(
            cut.is_err(),
            "alpha reached beta without the FORWARD rules under policy DROP: the test cannot tell whether the rules matter"
        );
        // ...and with them back the pods talk again.
        assert!(firewall::accept_bridge(&info.bridge).unwrap());
        reaches(&alpha, &beta, within).await.unwrap();
    }

    // Put the host's policy back before anything else can go wrong.
    drop(policy);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(supervisor.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || supervisor.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "supervisor exited with {status}");
    assert_eq!(
        firewall::bridge_rules(&info.bridge).unwrap(),
        Vec::<String>::new(),
        "FORWARD rules tagged for {} left behind",
        info.bridge
    );
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{}", info.bridge)).exists(),
        "bridge {} left behind",
        info.bridge
    );
}
