//! What a transition costs the operator as services grow: API requests (from the operator's
//! own `locus_operator_api_requests_total`, by verb), reconciles and the time spent in them
//! (`locus_operator_reconcile_duration_seconds`), CPU time of this process (the operator runs
//! in it; the API server, etcd and the pods are other processes), time to Stable, and this
//! process's resident memory.
//!
//! `LOCUS_E2E_SCALE` lists the scenarios, comma-separated, each `<services>x<pods>` (default
//! `1x10`; `make bench` runs more). The scenarios run one after the other, each waiting for its
//! pods to be gone, so the node must admit the largest `services * (pods + max(1, pods / 10))`:
//! the test asks the local cluster for that many ([`Cluster::shared_with`]), which takes a pod
//! range wider than the default /24 (240 pods) when it must, up to 971 pods (one bridge's
//! ports). Each scenario runs in its own namespace with its own operator, ring-probe services
//! (`e2e/src/bin/locus_ring_probe.rs`; 256 shards, or the next power of two above the grown
//! replica count when that is larger; beyond 240 pods with a more patient readiness probe, see
//! `scaled_service`):
//!
//! - *create*: every service created at `pods` replicas, until all are Stable;
//! - *idle*: 10 s of a settled service (what a converged service costs);
//! - *scale*: every service scaled up by `max(1, pods / 10)`, until all are Stable.
//!
//! One JSON line per measurement (prefix `operator-scale:`). The figures are reported, not
//! asserted (they belong to `docs/benchmarks.md`); the test asserts that every transition
//! converges.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use kube::api::{DeleteParams, ListParams};
use locus_e2e::cluster::{Cluster, ClusterOptions};
use locus_operator::metrics::Metrics;
use operator_support::*;
use serde_json::json;

/// The scenarios run unless `LOCUS_E2E_SCALE` says otherwise.
const SCENARIOS: &str = "1x10";
/// How long a settled service is watched for its idle cost.
const IDLE: Duration = Duration::from_secs(10);

/// Cumulative figures at one instant.
#[derive(Clone, Debug, Default)]
struct Figures {
    /// API requests by verb.
    requests: BTreeMap<String, f64>,
    reconciles: f64,
    reconcile_seconds: f64,
    cpu: Duration,
}

/// The value of every sample of `family` in the Prometheus text `text`, with its labels.
fn samples<'a>(text: &'a str, family: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (100 ticks/s).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th, stime the 13th.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn figures(metrics: &Metrics) -> Figures {
    let text = metrics.encode();
    let mut requests = BTreeMap::new();
    for (labels, value) in samples(&text, "locus_operator_api_requests_total") {
        let verb = labels
            .split("verb=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("?");
        *requests.entry(verb.to_owned()).or_default() += value;
    }
    let sum = |family: &str| samples(&text, family).iter().map(|(_, v)| v).sum::<f64>();
    Figures {
        requests,
        reconciles: sum("locus_operator_reconcile_duration_seconds_count"),
        reconcile_seconds: sum("locus_operator_reconcile_duration_seconds_sum"),
        cpu: cpu_time(),
    }
}

/// Prints what happened between `before` and now.
fn report(
    scenario: &str,
    step: &str,
    pods: usize,
    metrics: &Metrics,
    before: &Figures,
    elapsed: Duration,
) {
    let after = figures(metrics);
    let requests: BTreeMap<&str, f64> = after
        .requests
        .iter()
        .map(|(verb, n)| {
            (
                verb.as_str(),
                n - before.requests.get(verb).copied().unwrap_or_default(),
            )
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let total: f64 = requests.values().sum();
    let line = json!({
        "scenario": scenario,
        "step": step,
        "pods": pods,
        "api_requests": total,
        "api_requests_by_verb": requests,
        "reconciles": after.reconciles - before.reconciles,
        "reconcile_ms": ((after.reconcile_seconds - before.reconcile_seconds) * 1e3).round(),
        "cpu_ms": after.cpu.saturating_sub(before.cpu).as_millis(),
        "elapsed_ms": elapsed.as_millis(),
        "rss_mib": rss_mib().round(),
    });
    println!("operator-scale: {line}");
}

/// Waits until every service named in `names` is converged on `replicas` slots.
async fn all_converged(env: &Env, names: &[String], replicas: usize) {
    // Every pod of every service starts on the one node: the time grows with all of them.
    let limit = Duration::from_secs(120 + 2 * (names.len() * replicas) as u64);
    try_join_all(
        names
            .iter()
            .map(|name| converged_within(env, name, replicas, limit)),
    )
    .await
    .unwrap();
}

/// A scenario `<services>x<pods>` as (services, pods).
fn parse(spec: &str) -> (usize, usize) {
    let (services, pods) = spec
        .split_once('x')
        .unwrap_or_else(|| panic!("scenario {spec:?}: expected <services>x<pods>"));
    (services.parse().unwrap(), pods.parse().unwrap())
}

/// Beyond this many pods at once, a probe that fails once makes a pod unready: see
/// [`scaled_service`].
const PATIENT_PROBES_ABOVE: usize = 240;

/// The ring-probe service `name` at `replicas`, with `shards` shards (the shared fixture has 256;
/// a service may not have more slots than shards). With `patient`, the readiness probe allows
/// 2 s and 3 failures and `unreadyGrace` is 10 s (the fixture: 1 s, 1 failure, 3 s): with
/// hundreds of pods on a busy 2-core machine single probes time out, pods turn unready for a
/// moment and the operator replaces their slots, so a transition would measure that churn
/// rather than the operator.
fn scaled_service(name: &str, replicas: usize, shards: usize, patient: bool) -> serde_json::Value {
    let mut manifest = service(name, i32::try_from(replicas).unwrap());
    manifest["spec"]["shards"] = json!(shards);
    if patient {
        manifest["spec"]["unreadyGrace"] = json!("10s");
        let probe = &mut manifest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
        probe["timeoutSeconds"] = json!(2);
        probe["failureThreshold"] = json!(3);
    }
    manifest
}

/// Pods a scenario runs at its peak: every service after the scale step.
fn peak_pods((services, pods): (usize, usize)) -> usize {
    services * (pods + (pods / 10).max(1))
}

async fn scenario(spec: &str) {
    let (services, pods) = parse(spec);
    let env = setup("op-scale").await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let _operator = Operator::start_measured(
        env.operator.clone(),
        operator_config(env.namespace()),
        metrics.clone(),
    );
    let names: Vec<String> = (0..services).map(|i| format!("s{i}")).collect();
    let total = services * pods;
    let grown = pods + (pods / 10).max(1);
    // 256 shards as in the other operator tests, or the power of two that gives every slot
    // of the grown service at least one; the same before and after the scale step.
    let shards = grown.next_power_of_two().max(256);
    let patient = services * grown > PATIENT_PROBES_ABOVE;

    let (before, started) = (figures(&metrics), Instant::now());
    for name in &names {
        apply(&env, &scaled_service(name, pods, shards, patient))
            .await
            .unwrap();
    }
    all_converged(&env, &names, pods).await;
    report(spec, "create", total, &metrics, &before, started.elapsed());

    let (before, started) = (figures(&metrics), Instant::now());
    tokio::time::sleep(IDLE).await;
    report(spec, "idle", total, &metrics, &before, started.elapsed());

    let (before, started) = (figures(&metrics), Instant::now());
    for name in &names {
        apply(&env, &scaled_service(name, grown, shards, patient))
            .await
            .unwrap();
    }
    all_converged(&env, &names, grown).await;
    report(
        spec,
        "scale",
        services * grown,
        &metrics,
        &before,
        started.elapsed(),
    );

    // Leave no pods behind for the next scenario.
    for name in &names {
        env.services()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let _ = locus_e2e::support::wait::until(
        Duration::from_secs(120 + total as u64),
        "pods gone",
        || async {
            let left = env.pods().list(&ListParams::default()).await?.items.len();
            Ok::<_, kube::Error>((left == 0).then_some(()))
        },
    )
    .await;
}

#[tokio::test]
async fn operator_cost_per_transition() {
    let scenarios = std::env::var("LOCUS_E2E_SCALE").unwrap_or_else(|_| SCENARIOS.to_owned());
    let specs: Vec<&str> = scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let peak = specs.iter().map(|s| peak_pods(parse(s))).max().unwrap_or(0);
    let cluster = Cluster::shared_with(ClusterOptions::pods(u32::try_from(peak).unwrap()))
        .await
        .unwrap();
    println!(
        "operator-scale: {}",
        json!({
            "peak_pods": peak,
            "pod_cidr": cluster.info().pod_cidr,
            "node_admits": cluster.info().pod_capacity,
        })
    );
    for spec in specs {
        scenario(spec).await;
    }
}

/// Runs `ip -batch -` with `commands`, one per line.
fn ip_batch(commands: &str) {
    use std::io::Write as _;
    let mut ip = std::process::Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ip.stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(ip.wait().unwrap().success(), "ip -batch failed");
}

/// A cluster of its own (not the shared one) whose node admits `pods` pods: the supervisor, its
/// lifeline (drop it to stop the cluster) and what the cluster reported.
fn own_cluster(
    pods: u32,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    locus_e2e::cluster::ClusterInfo,
) {
    use std::io::BufRead as _;
    let bin = locus_e2e::cluster::workspace_bin_dir()
        .unwrap()
        .join("locus-cluster");
    let mut supervisor = std::process::Command::new(bin)
        .args(["up", "--json", "--lifeline", "--pods", &pods.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lifeline = supervisor.stdin.take().unwrap();
    let stdout = std::io::BufReader::new(supervisor.stdout.take().unwrap());
    let info = stdout
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find_map(|m| m.get("ready").cloned())
        .map(|ready| serde_json::from_value(ready).unwrap());
    let Some(info) = info else {
        panic!("the cluster did not start (its messages are above)")
    };
    (supervisor, lifeline, info)
}

/// Takes every free port of `bridge` with veth pairs whose other ends live in a namespace the
/// cluster's teardown removes (it carries the cluster's prefix). Returns the first host end.
fn fill_bridge(bridge: &str) -> String {
    use locus_e2e::cluster::network::{BRIDGE_PORTS, netns_prefix};
    use std::fmt::Write as _;
    let ports = || {
        std::fs::read_dir(
            std::path::Path::new("/sys/class/net")
                .join(bridge)
                .join("brif"),
        )
        .unwrap()
        .count()
    };
    let fill = format!("{}fill", netns_prefix(bridge));
    let index = bridge.trim_start_matches("locus");
    let mut batch = format!("netns add {fill}\n");
    for k in 0..usize::try_from(BRIDGE_PORTS).unwrap() - ports() {
        let host = format!("f{index}x{k}");
        let _ = write!(
            batch,
            "link add {host} type veth peer name p{k} netns {fill}\nlink set {host} master {bridge}\n"
        );
    }
    ip_batch(&batch);
    assert_eq!(ports(), usize::try_from(BRIDGE_PORTS).unwrap());
    format!("f{index}x0")
}

/// Creates a test-server pod in a new namespace of the cluster behind `kubeconfig` and waits
/// until it is Ready; returns the host end of its veth (`lc<first 12 hex of its UID>`).
async fn ready_pod(kubeconfig: &std::path::Path) -> String {
    use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
    use kube::Api;
    use kube::api::PostParams;
    use locus_e2e::support::wait;
    let client = locus_e2e::cluster::client_for(kubeconfig).await.unwrap();
    let ns = "bridges";
    let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    wait::until(
        Duration::from_secs(60),
        "the default ServiceAccount",
        || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await }
        },
    )
    .await
    .unwrap();
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "server"},
        "spec": {"containers": [{
            "name": "server",
            "image": "locus/test-server:dev",
            "ports": [{"name": "http", "containerPort": 8080}],
            "env": [
                {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                {"name": "POD_IP", "valueFrom": field("status.podIP")},
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        }]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let uid = pods
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    wait::until(Duration::from_secs(120), "the pod Ready", || {
        let pods = pods.clone();
        async move {
            let ready = pods
                .get("server")
                .await?
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Ok::<_, kube::Error>(ready.then_some(()))
        }
    })
    .await
    .unwrap();
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("lc{hex}")
}

/// A cluster asked for more pods than one bridge has ports (1023) brings up a further bridge
/// joined to its own; once the first is full, a pod's veth goes on the next one, where the
/// node agent still reaches it (its readiness probe passes through the join and the FORWARD
/// rules), and stopping the cluster removes both bridges and their rules. The first bridge is
/// filled with veth pairs instead of a thousand pods.
#[tokio::test]
async fn a_full_bridge_sends_pods_to_the_next() {
    use locus_e2e::cluster::firewall;
    use std::path::Path;
    if std::env::var_os("LOCUS_E2E_KUBECONFIG").is_some() {
        return; // an external cluster has its own network
    }
    let (mut supervisor, lifeline, info) = own_cluster(1100);
    assert_eq!(info.pod_capacity, 1941, "{info:?}");
    assert!(info.pod_cidr.ends_with("/21"), "{info:?}");
    let bridge = info.bridge.clone();
    let leaf = format!("{bridge}p1");
    let class = Path::new("/sys/class/net");
    assert!(
        class.join(&leaf).join("bridge").is_dir(),
        "no bridge {leaf}"
    );
    assert_eq!(firewall::bridge_rules(&bridge).unwrap().len(), 4);
    let filler = fill_bridge(&bridge);

    let veth = ready_pod(&info.kubeconfig).await;
    let master = std::fs::read_link(class.join(&veth).join("master")).unwrap();
    assert_eq!(
        master.file_name().unwrap().to_string_lossy(),
        leaf,
        "the pod's veth is not on the further bridge"
    );

    drop(lifeline);
    assert!(supervisor.wait().unwrap().success());
    for link in [&bridge, &leaf, &format!("{bridge}t1"), &filler] {
        assert!(
            !class.join(link).exists(),
            "{link} is left after the cluster stopped"
        );
    }
    assert!(firewall::bridge_rules(&bridge).unwrap().is_empty());
}
