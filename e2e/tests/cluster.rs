//! The local cluster's control plane: real binaries built from the Kubernetes Go modules,
//! reachable with the kubeconfig the harness writes, and torn down without leftovers.

// Test code: a failed step fails the test at once, with its cause.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use locus_e2e::cluster::firewall;
use locus_e2e::cluster::network::{netns_prefix, netns_with_prefix};
use locus_e2e::cluster::{Cluster, ClusterInfo};

#[tokio::test]
async fn kubectl_reaches_the_api_server_with_the_written_kubeconfig() {
    let cluster = Cluster::shared().await.unwrap();

    let out = cluster
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.36.3", "{v}");
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.36.3", "{v}");

    let out = cluster
        .kubectl()
        .args(["get", "--raw", "/readyz"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    // A fresh namespace per test, with its default ServiceAccount ready for pods.
    let ns = cluster.namespace("cp").await.unwrap();
    let out = cluster
        .kubectl()
        .args([
            "get",
            "serviceaccount",
            "default",
            "-n",
            ns.name(),
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "serviceaccount/default"
    );
}

/// Processes whose command line mentions `needle` (every process of a cluster names its
/// run directory in its arguments).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

/// How a test asks the supervisor to stop.
#[derive(Clone, Copy)]
enum Stop {
    /// Close its stdin, as happens when the test process exits for any reason.
    Lifeline,
    /// Send SIGTERM, as `kill` or Ctrl-C (SIGINT takes the same path) would.
    Sigterm,
    /// SIGKILL the supervisor (nothing is torn down), then run `locus-cluster clean`.
    KillThenClean,
}

/// The lifeline: when whoever started `locus-cluster up --lifeline` goes away (its stdin
/// closes), every process, pod network namespace, the bridge, its iptables FORWARD rules
/// and the run dir are removed.
#[tokio::test]
async fn closing_the_lifeline_leaves_nothing_behind() {
    start_run_pod_and_stop(Stop::Lifeline).await;
}

/// A signal stops the cluster the same way, even while the lifeline is still open.
#[tokio::test]
async fn sigterm_leaves_nothing_behind() {
    start_run_pod_and_stop(Stop::Sigterm).await;
}

/// A supervisor killed outright leaves its cluster behind; `locus-cluster clean` removes it
/// (the run dir, with the logs that tell why it died, is kept).
#[tokio::test]
async fn locus_cluster_clean_removes_what_a_killed_cluster_left() {
    start_run_pod_and_stop(Stop::KillThenClean).await;
}

/// After the supervisor was killed: its bridge and FORWARD rules are still there, and
/// `locus-cluster clean` removes them (and the rest), naming the bridge and keeping the
/// run dir, which the test then removes.
fn clean_after_kill(bin: &Path, info: &ClusterInfo) {
    assert!(
        Path::new(&format!("/sys/class/net/{}", info.bridge)).exists(),
        "a killed supervisor tears nothing down"
    );
    if firewall::iptables_program().is_some() {
        assert_eq!(forward_rules(&info.bridge).len(), 2);
    }
    let out = Command::new(bin).arg("clean").output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "locus-cluster clean failed: {said}");
    assert!(said.contains(&info.bridge), "{said}");
    assert!(info.run_dir.exists(), "clean keeps the run dir");
    std::fs::remove_dir_all(&info.run_dir).unwrap();
}

/// The FORWARD rules tagged for `bridge` (see `locus_e2e::cluster::firewall`).
fn forward_rules(bridge: &str) -> Vec<String> {
    firewall::bridge_rules(bridge).unwrap()
}

/// Polls `probe` until it yields nothing, for up to 10 s (killed processes take a moment
/// to go); returns what it yielded last.
fn eventually_empty(mut probe: impl FnMut() -> Vec<String>) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = probe();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

async fn start_run_pod_and_stop(stop: Stop) {
    let bin = locus_e2e::cluster::workspace_bin_dir()
        .unwrap()
        .join("locus-cluster");
    let mut child = Command::new(&bin)
        .args(["up", "--json", "--lifeline"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let msg: serde_json::Value = serde_json::from_str(&line).unwrap();
    let info: ClusterInfo = serde_json::from_value(msg["ready"].clone())
        .unwrap_or_else(|_| panic!("cluster did not start: {line}"));
    let run_dir = info.run_dir.to_string_lossy().into_owned();

    // Put a pod on the node so there is a pod network namespace to clean up.
    let kubectl = |args: &[&str]| {
        Command::new(info.bin_dir.join("kubectl"))
            .arg(format!("--kubeconfig={}", info.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let out = kubectl(&[
        "run",
        "lifeline",
        "--image=locus/test-server:dev",
        "--restart=Never",
        "--port=8080",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&[
        "wait",
        "pod/lifeline",
        "--for=condition=Ready",
        "--timeout=60s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = netns_prefix(&info.bridge);
    assert_eq!(
        netns_with_prefix(&prefix).len(),
        1,
        "the pod has its own network namespace"
    );
    assert!(!processes_mentioning(&run_dir).is_empty());
    if firewall::iptables_program().is_some() {
        assert_eq!(
            forward_rules(&info.bridge).len(),
            2,
            "one FORWARD rule each way accepts the bridge's traffic"
        );
    }

    // Stop the supervisor and wait for it to finish its teardown.
    stdin.flush().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    match stop {
        Stop::Lifeline => drop(stdin),
        Stop::Sigterm => {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        }
        Stop::KillThenClean => {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    if let Stop::KillThenClean = stop {
        clean_after_kill(&bin, &info);
    } else {
        assert!(status.success(), "supervisor exited with {status}");
    }

    assert_nothing_left(&info);
}

/// No process, pod network namespace, bridge, FORWARD rule or run dir of the cluster is left.
fn assert_nothing_left(info: &ClusterInfo) {
    let run_dir = info.run_dir.to_string_lossy().into_owned();
    let prefix = netns_prefix(&info.bridge);
    assert_eq!(
        eventually_empty(|| processes_mentioning(&run_dir)),
        Vec::<String>::new(),
        "processes left behind"
    );
    assert_eq!(
        netns_with_prefix(&prefix),
        Vec::<String>::new(),
        "pod namespaces left behind"
    );
    assert!(
        !Path::new(&format!("/sys/class/net/{}", info.bridge)).exists(),
        "bridge {} left behind",
        info.bridge
    );
    assert_eq!(
        forward_rules(&info.bridge),
        Vec::<String>::new(),
        "iptables FORWARD rules tagged for {} left behind",
        info.bridge
    );
    assert!(!info.run_dir.exists(), "run dir {run_dir} left behind");
}
