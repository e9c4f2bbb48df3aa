//! The local cluster's control plane: real binaries built from the Kubernetes Go modules,
//! reachable with the kubeconfig the harness writes, and torn down without leftovers.

// Test code: a failed step fails the test at once, with its cause.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

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
}

/// The lifeline: when whoever started `locus-cluster up --lifeline` goes away (its stdin
/// closes), every process, pod network namespace, the bridge and the run dir are removed.
#[tokio::test]
async fn closing_the_lifeline_leaves_nothing_behind() {
    start_run_pod_and_stop(Stop::Lifeline).await;
}

/// A signal stops the cluster the same way, even while the lifeline is still open.
#[tokio::test]
async fn sigterm_leaves_nothing_behind() {
    start_run_pod_and_stop(Stop::Sigterm).await;
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

    // Stop the supervisor and wait for it to finish its teardown.
    stdin.flush().unwrap();
    match stop {
        Stop::Lifeline => drop(stdin),
        Stop::Sigterm => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "supervisor exited with {status}");

    assert_eq!(
        processes_mentioning(&run_dir),
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
    assert!(!info.run_dir.exists(), "run dir {run_dir} left behind");
}
