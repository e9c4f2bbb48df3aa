//! `kubectl locus status` against a real cluster: the local cluster of `locus-e2e` (a real
//! kube-apiserver and the project's node agent), the operator installed with its Helm chart
//! (watching only the test's namespace) and the sample session ledger as a 2-slot
//! `StatefulService` under a light load. The built `kubectl-locus` binary is run with
//! `--kubeconfig`, with `KUBECONFIG`, and as `kubectl locus` (found on `PATH`); then the
//! service scales to 3 and the new ring version must show.
//!
//! Like the other end-to-end tests it needs root and the binaries the cluster runs; build
//! them first: `cargo build -p locus-operator -p locus-examples -p locus-e2e --bins`, then
//! `cargo test -p kubectl-locus --test status_e2e -- --nocapture` (the outputs are printed).
//! With `LOCUS_E2E_KUBECONFIG` set it runs against that cluster (kind), whose operator
//! `make kind-e2e` installed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a test failure"
)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use locus_e2e::cluster::Cluster;
use locus_e2e::demo::{Change, Demo, DemoOptions, DemoTarget, OperatorInstall, Phase};
use serde_json::Value;

/// The binary under test, built by cargo for this test.
const BIN: &str = env!("CARGO_BIN_EXE_kubectl-locus");

/// The whole end-to-end test must finish within this.
const BOUND: Duration = Duration::from_secs(600);

fn say(line: &str) {
    eprintln!("[kubectl-locus e2e] {line}");
}

fn run(args: &[&str], kubeconfig_env: Option<&Path>) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("COLUMNS");
    match kubeconfig_env {
        Some(path) => command.env("KUBECONFIG", path),
        None => command.env_remove("KUBECONFIG"),
    };
    command.output().expect("run kubectl-locus")
}

fn text_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text_of(output),
        String::from_utf8_lossy(&output.stderr)
    );
    text_of(output)
}

#[test]
fn bad_command_lines_exit_with_2_and_the_usage() {
    for args in [
        &["status"][..],
        &["status", "ledger", "-o", "yaml"],
        &["stats", "ledger"],
        &["status", "ledger", "--namespace"],
    ] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage: kubectl locus status <service>"),
            "{stderr}"
        );
    }
    let help = run(&["--help"], None);
    assert_eq!(help.status.code(), Some(0));
    assert!(text_of(&help).starts_with("Usage: kubectl locus status"));
}

/// The shares of the text's `Slots` table (the cells ending in `%`), in tenths.
fn text_shares(text: &str) -> Vec<i64> {
    text.lines()
        .skip_while(|l| *l != "Slots")
        .skip(2)
        .take_while(|l| !l.is_empty() && !l.starts_with("SHARDS old->new"))
        .filter_map(|l| l.split_whitespace().find(|c| c.ends_with('%')))
        .map(|c| (c.trim_end_matches('%').parse::<f64>().unwrap() * 10.0).round() as i64)
        .collect()
}

/// Checks the text and JSON outputs against the ring and the pods the API server holds.
fn check(
    text: &str,
    json: &Value,
    namespace: &str,
    ring: &locus_contract::ring::Ring,
    pods: &[String],
) {
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "wider than 80: {line:?}");
    }
    assert!(
        text.starts_with(&format!("StatefulService  {namespace}/ledger\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Ring             version {} (stable)",
            ring.version()
        )),
        "{text}"
    );
    for pod in pods {
        assert!(text.contains(pod.as_str()), "{pod} missing from\n{text}");
    }
    let tenths = text_shares(text);
    assert_eq!(tenths.len(), ring.slots().len(), "{text}");
    assert_eq!(
        tenths.iter().sum::<i64>(),
        1000,
        "shares {tenths:?}\n{text}"
    );

    assert_eq!(json["service"], "ledger");
    assert_eq!(json["namespace"], namespace);
    assert_eq!(json["phase"], "Stable");
    assert_eq!(json["ring"]["version"], ring.version());
    assert_eq!(json["ring"]["phase"], "stable");
    assert_eq!(json["ring"]["configMap"], "ledger-ring");
    let slots = json["slots"].as_array().unwrap();
    assert_eq!(slots.len(), ring.slots().len());
    for (slot, expected) in slots.iter().zip(ring.slots()) {
        assert_eq!(slot["pod"], expected.pod.name.as_str());
        assert_eq!(slot["ready"], true);
        let shards = ring.current().counts().get(&expected.index).copied();
        assert_eq!(
            slot["shards"].as_u64(),
            Some(u64::from(shards.unwrap_or(0)))
        );
    }
    let json_tenths: i64 = slots
        .iter()
        .map(|s| (s["sharePercent"].as_f64().unwrap() * 10.0).round() as i64)
        .sum();
    assert_eq!(json_tenths, 1000, "{slots:?}");
    let json_pods: Vec<&str> = json["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for pod in pods {
        assert!(
            json_pods.contains(&pod.as_str()),
            "{pod} not in {json_pods:?}"
        );
    }
    for pod in json["pods"].as_array().unwrap() {
        assert_eq!(pod["ready"], true, "{pod}");
        assert_eq!(pod["ringRole"], "slot", "{pod}");
        assert!(pod["ip"].is_string() && pod["node"].is_string(), "{pod}");
        assert!(pod["progress"]["observed"].as_u64().is_some(), "{pod}");
    }
    assert_eq!(json["replicas"]["desired"], ring.slots().len());
    assert!(json["ringProblem"].is_null());
    let conditions: Vec<&str> = json["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    // `MovedSessionsReported` comes with the first transition record.
    if json["lastTransition"].is_null() {
        assert_eq!(conditions, ["Available", "Progressing", "Degraded"]);
    } else {
        assert_eq!(
            conditions,
            [
                "Available",
                "Progressing",
                "Degraded",
                "MovedSessionsReported"
            ]
        );
    }
    // A converged service: nothing about pods or the ring needs attention (a step that rolled
    // forward on a slow machine may leave Degraded=True, which is a condition warning).
    for warning in json["warnings"].as_array().unwrap() {
        assert_eq!(warning["kind"], "Condition", "{warning}");
    }
}

async fn pod_names(demo: &Demo) -> Vec<String> {
    let mut names: Vec<String> = demo
        .pods()
        .list(&kube::api::ListParams::default().labels("locus.dev/service=ledger"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

/// Text and JSON of `status ledger` in `namespace`: the text with `--kubeconfig`, the JSON
/// with `KUBECONFIG` (and `-n` after the name).
fn status(namespace: &str, kubeconfig: &Path) -> (String, String, Value) {
    let kubeconfig_arg = kubeconfig.to_str().unwrap();
    let text = succeeded(
        &run(
            &[
                "status",
                "ledger",
                "--namespace",
                namespace,
                "--kubeconfig",
                kubeconfig_arg,
            ],
            None,
        ),
        "status (text)",
    );
    let json = succeeded(
        &run(
            &["status", "-o", "json", "ledger", "-n", namespace],
            Some(kubeconfig),
        ),
        "status -o json",
    );
    let value = serde_json::from_str(&json).expect("-o json is JSON");
    (text, json, value)
}

/// Runs `kubectl locus status`, the plugin found on `PATH`, and checks it names `pods`.
fn as_a_kubectl_plugin(cluster: &Cluster, namespace: &str, kubeconfig: &Path, pods: &[String]) {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    // kubectl finds a plugin only when no flag comes before its name: flags go after it, and
    // kubectl hands them to the plugin.
    let through_kubectl = Command::new(cluster.tool("kubectl"))
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .args(["locus", "status", "ledger", "-n", namespace])
        .output()
        .unwrap();
    let via_kubectl = succeeded(&through_kubectl, "kubectl locus status");
    for pod in pods {
        assert!(via_kubectl.contains(pod.as_str()), "{via_kubectl}");
    }
}

#[tokio::test]
async fn status_shows_every_pod_and_the_ring_and_follows_a_scale_up() {
    tokio::time::timeout(BOUND, scenario())
        .await
        .expect("the test finishes within its bound");
}

async fn scenario() {
    let started = Instant::now();
    let cluster = Cluster::shared().await.unwrap();
    let ns = cluster.namespace("kubectl-locus").await.unwrap();
    let namespace = ns.name().to_owned();
    let kubeconfig = cluster.kubeconfig().to_owned();
    let external = std::env::var_os("LOCUS_E2E_KUBECONFIG").is_some();
    let options = DemoOptions {
        operator: (!external).then(|| OperatorInstall {
            release: format!("op-{namespace}"),
            namespace: namespace.clone(),
            watch_namespace: Some(namespace.clone()),
            replicas: 1,
        }),
        namespace: namespace.clone(),
        create_namespace: false,
        service: "ledger".into(),
        replicas: 2,
        shards: 256,
        sessions: 100,
        concurrency: 4,
        rate: Some(40.0),
        phases: Vec::new(),
        converge_timeout: Duration::from_secs(180),
        tail: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        ..DemoOptions::standard()
    };
    let target = DemoTarget {
        kubeconfig: kubeconfig.clone(),
        helm: cluster.tool("helm"),
    };
    let mut demo = Demo::deploy(&target, &options, &say).await.unwrap();
    say(&format!(
        "2 slots converged after {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    // Two slots.
    let ring = demo.ring().await.unwrap().expect("a ring");
    let pods = pod_names(&demo).await;
    assert_eq!(pods.len(), 2);
    let (text, _, json) = status(&namespace, &kubeconfig);
    println!("--- kubectl locus status ledger (2 slots) ---\n{text}");
    check(&text, &json, &namespace, &ring, &pods);

    as_a_kubectl_plugin(cluster, &namespace, &kubeconfig, &pods);

    // A service that does not exist: exit 1 and a message naming it.
    let missing = run(
        &["status", "nosuch", "-n", &namespace],
        Some(kubeconfig.as_path()),
    );
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(
        stderr.trim(),
        format!("error: statefulservice {namespace}/nosuch not found")
    );

    // Scale to 3 under load; meanwhile, catch the status mid-transition if the poll sees it.
    let watcher = {
        let namespace = namespace.clone();
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || mid_transition(&namespace, &kubeconfig))
    };
    demo.run_phase(&Phase::new("scale-to-3", Change::Scale(3)), &say)
        .await
        .unwrap();
    let during = watcher.await.unwrap();
    let scaled = demo.ring().await.unwrap().expect("a ring");
    assert!(scaled.version() > ring.version());
    let pods = pod_names(&demo).await;
    assert_eq!(pods.len(), 3);
    let (text, raw, json) = status(&namespace, &kubeconfig);
    println!("--- kubectl locus status ledger (scaled to 3) ---\n{text}");
    println!("--- kubectl locus status ledger -o json (scaled to 3) ---\n{raw}");
    check(&text, &json, &namespace, &scaled, &pods);
    let last = &json["lastTransition"];
    assert_eq!(last["kind"], "ScaleUp", "{last}");
    assert_eq!(last["toVersion"], scaled.version(), "{last}");
    assert_eq!(last["inProgress"], false, "{last}");
    assert!(last["shardsMoved"].as_u64().unwrap() > 0, "{last}");
    assert!(text.contains("Last transition  ScaleUp"), "{text}");
    match during {
        Some((text, phase)) => {
            println!("--- kubectl locus status ledger (during the scale-up, {phase}) ---\n{text}");
            assert!(text.contains("OBS  WARM  DRAIN"), "{text}");
        }
        None => say("the poll did not catch the ring mid-transition (it moved fast)"),
    }
    demo.finish();
    say(&format!(
        "done after {:.1}s",
        started.elapsed().as_secs_f64()
    ));
}

/// Polls `status` until its ring line shows a transition (then returns the text and the ring
/// phase) or a stable ring version above the first one seen (then `None`).
fn mid_transition(namespace: &str, kubeconfig: &Path) -> Option<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(200);
    let mut first = None;
    while Instant::now() < deadline {
        let out = run(&["status", "ledger", "-n", namespace], Some(kubeconfig));
        let text = text_of(&out);
        // `Ring             version 7 (warm), 256 shards, ...`
        let ring = text
            .lines()
            .find_map(|l| l.strip_prefix("Ring             version "));
        if let Some((version, rest)) = ring.and_then(|r| r.split_once(' ')) {
            let version: Option<u64> = version.parse().ok();
            let phase = rest
                .trim_start_matches('(')
                .split(')')
                .next()
                .unwrap_or_default();
            if phase == "warm" || phase == "switch" {
                return Some((text.clone(), phase.to_owned()));
            }
            match first {
                None => first = version,
                Some(seen) if version > Some(seen) => return None,
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
