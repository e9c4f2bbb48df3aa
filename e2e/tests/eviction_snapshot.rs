//! A service with a snapshot volume (`spec.snapshot`) and no persistence, on the local
//! cluster: the snapshot only survives a container restart in the same pod, so
//!
//! * a pod deleted from outside (as an eviction or a node drain does: graceful deletion,
//!   SIGTERM) must hand its sessions to their next owners, not write them to a volume that
//!   dies with it — every acknowledged write stays readable and the moved sessions arrive
//!   warm on the replacement pod;
//! * an in-place image update (the same pod, its container restarted) still restores the
//!   sessions from the snapshot — same pods, same UIDs, nothing lost.
//!
//! The operator runs in-process under the chart's RBAC rules; the pods run the sample ledger
//! (`locus/sample:dev`, and `locus/sample:v2` for the update: the same binary under another
//! image name). Build first: `cargo build -p locus-examples -p locus-e2e --bins`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use locus::RingSource as _;
use locus_e2e::support::logs::{self, strip_ansi};
use locus_e2e::support::service::is_ready;
use locus_e2e::support::wait;
use locus_examples::loadgen::{LoadConfig, LoadGenerator, Stop, Summary, Target, Verification};
use locus_examples::ring_source::{OpenRing, RingSourceConfig};
use operator_support::*;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// One test at a time: each runs an operator, three sample pods and a load generator, which
/// is all two shared cores can carry.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The `StatefulService`'s name (and the sample container's).
const SERVICE: &str = "ledger";
/// The sample's image, and the name the node agent also maps it under.
const IMAGE: &str = "locus/sample:dev";
const IMAGE_V2: &str = "locus/sample:v2";
/// Load kept running once the service converged, so moved sessions get touched.
const TAIL: Duration = Duration::from_secs(3);

/// The sample ledger with a snapshot volume and in-place updates, no PostgreSQL: sessions
/// live only in the pods' memory (and, across an in-place restart, in the snapshot).
fn sample_service(image: &str) -> Value {
    json!({
        "apiVersion": "locus.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": SERVICE},
        "spec": {
            "replicas": 3,
            "shards": 256,
            "port": "http",
            "unreadyGrace": "20s",
            "timeouts": {"warm": "20s", "drain": "20s", "settle": "30s"},
            "updateStrategy": {"type": "InPlace"},
            "snapshot": {"sizeLimit": "64Mi"},
            "template": {"spec": {
                "terminationGracePeriodSeconds": 30,
                "containers": [{
                    "name": SERVICE,
                    "image": image,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [
                        {"name": "LOCUS_SAMPLE_SHUTDOWN_TIMEOUT", "value": "25s"},
                        {"name": "RUST_LOG", "value": "info"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "http"},
                        "periodSeconds": 1,
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http"},
                        "periodSeconds": 5,
                    },
                }],
            }},
        },
    })
}

/// A load generator routed by the service's ring (the ring's source stays open with it).
async fn load_generator(env: &Env) -> (OpenRing, LoadGenerator) {
    let source = RingSourceConfig::Kube {
        namespace: env.namespace().to_owned(),
        service: SERVICE.to_owned(),
        kubeconfig: Some(env.cluster.kubeconfig().to_owned()),
    }
    .open(&locus::Metrics::new())
    .await
    .unwrap();
    let watch = source.watch();
    assert!(
        watch.wait_for_ring(Duration::from_secs(60)).await.is_some(),
        "no ring for the load generator"
    );
    let load = LoadGenerator::new(LoadConfig {
        sessions: 300,
        concurrency: 8,
        rate: Some(150.0),
        // Two cores run the control plane, the operator, the pods and the load in debug
        // builds: a request held up by a handoff is slow, not failed.
        timeout: Duration::from_secs(20),
        ..LoadConfig::new(Target::Ring(watch))
    })
    .unwrap();
    (source, load)
}

/// Runs load until `done` completes, then for [`TAIL`] more.
async fn load_until(
    load: &mut LoadGenerator,
    name: &str,
    done: impl Future<Output = ()>,
) -> Summary {
    let interrupt = async {
        done.await;
        tokio::time::sleep(TAIL).await;
    };
    load.phase_until(name, Stop::Duration(CONVERGE + TAIL), interrupt)
        .await
}

/// Nothing acknowledged was lost, every session read back.
fn assert_nothing_lost(what: &str, verification: &Verification) {
    assert!(
        verification.acked_appends > 0,
        "{what}: nothing was written"
    );
    assert_eq!(
        verification.lost_writes, 0,
        "{what}: {} of {} acknowledged appends lost, e.g. {:?}",
        verification.lost_writes, verification.acked_appends, verification.lost_examples
    );
    assert_eq!(
        verification.sessions_unreadable, 0,
        "{what}: unreadable sessions {:?}",
        verification.read_errors
    );
    assert_eq!(verification.stale_sessions, 0, "{what}: stale sessions");
}

/// The log file of `pod`'s container, kept by the node agent after the pod ends (local
/// cluster only).
fn container_log(env: &Env, pod: &Pod) -> Option<PathBuf> {
    let meta = &pod.metadata;
    Some(logs::container_log(
        env.cluster.node_run_dir()?,
        env.namespace(),
        meta.name.as_deref()?,
        meta.uid.as_deref()?,
        SERVICE,
    ))
}

/// The sessions each "snapshot restored" line of a container log reports installed.
fn restored_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains("snapshot restored"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("inserted: ")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn an_evicted_pod_with_a_snapshot_volume_hands_its_sessions_over() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = setup("evict-snap").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    apply(&env, &sample_service(IMAGE)).await.unwrap();
    let (before, _) = converged(&env, SERVICE, 3).await.unwrap();
    let (_source, mut load) = load_generator(&env).await;
    let steady = load
        .phase("steady", Stop::Duration(Duration::from_secs(4)))
        .await;
    assert!(steady.appends_acked > 0, "{}", steady.to_json_line());
    assert_nothing_lost("steady", &load.verify().await);

    // Graceful deletion, as an eviction or a node drain does: the pod object gets its
    // deletionTimestamp, then the container its SIGTERM.
    let victim = before.slot(1).unwrap().pod.name.clone();
    let victim_pod = env.pods().get(&victim).await.unwrap();
    env.pods()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let replaced = async {
        wait::until(CONVERGE, "a new pod serving slot 1", || async {
            let ring = ring(&env, SERVICE).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                ring.and_then(|r| r.slot(1).map(|s| s.pod.name != victim))
                    .filter(|replaced| *replaced),
            )
        })
        .await
        .unwrap();
        converged(&env, SERVICE, 3).await.unwrap();
    };
    let eviction = Box::pin(load_until(&mut load, "eviction", replaced)).await;
    eprintln!("eviction: {}", eviction.to_json_line());
    wait::until(CONVERGE, "the evicted pod gone", || async {
        Ok::<_, kube::Error>(env.pods().get_opt(&victim).await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    let verification = load.verify().await;
    eprintln!(
        "eviction: read back {} sessions, {} acknowledged appends, {} lost",
        verification.sessions_checked, verification.acked_appends, verification.lost_writes
    );
    let log = container_log(&env, &victim_pod)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|log| strip_ansi(&log));
    if let Some(log) = &log {
        let shutdown: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("sessions handed over") || l.contains("shut"))
            .collect();
        eprintln!("evicted pod's shutdown:\n{}", shutdown.join("\n"));
    }

    assert_nothing_lost("eviction", &verification);
    assert_eq!(
        eviction.errors, 0,
        "failed requests: {:?}",
        eviction.errors_by_kind
    );
    let warm = eviction.moved.warm_percent();
    assert!(
        eviction.moved.warm > 0,
        "no session seen moving: {:?}",
        eviction.moved
    );
    assert!(
        warm.is_some_and(|w| w >= 99.0),
        "only {warm:?} % of moved sessions were warm on the new pod: {:?}",
        eviction.moved
    );
    let (after, _) = converged(&env, SERVICE, 3).await.unwrap();
    assert_ne!(after.slot(1).unwrap().pod.name, victim);
    assert_eq!(
        after.current(),
        before.current(),
        "a replaced pod moves no shard"
    );
    if let Some(log) = &log {
        assert!(
            !log.contains("path=Snapshot"),
            "the evicted pod wrote a snapshot that died with it"
        );
        assert!(
            log.contains("intent=Some(Ok(Retire))"),
            "the evicted pod did not read its deletion from its Pod"
        );
    }
}

#[tokio::test]
async fn an_in_place_update_restores_the_sessions_from_the_snapshot() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = setup("inplace-snap").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    apply(&env, &sample_service(IMAGE)).await.unwrap();
    let (before, status) = converged(&env, SERVICE, 3).await.unwrap();
    let old_revision = status.current_revision.clone().unwrap();
    let pods_before = identities(&live_pods(&env, SERVICE).await.unwrap());
    let (_source, mut load) = load_generator(&env).await;
    let steady = load
        .phase("steady", Stop::Duration(Duration::from_secs(4)))
        .await;
    assert!(steady.appends_acked > 0, "{}", steady.to_json_line());

    apply(&env, &sample_service(IMAGE_V2)).await.unwrap();
    let updated = async {
        wait::until(CONVERGE, "every container restarted on v2", || async {
            let pods = live_pods(&env, SERVICE).await?;
            let done = pods.len() == 3
                && pods.iter().all(|p| {
                    is_ready(p)
                        && p.status
                            .as_ref()
                            .and_then(|s| s.container_statuses.as_ref())
                            .and_then(|c| c.first())
                            .is_some_and(|c| c.image == IMAGE_V2 && c.restart_count >= 1)
                });
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(done.then_some(()))
        })
        .await
        .unwrap();
        converged(&env, SERVICE, 3).await.unwrap();
    };
    let update = Box::pin(load_until(&mut load, "in-place", updated)).await;
    eprintln!("in-place: {}", update.to_json_line());
    let verification = load.verify().await;
    eprintln!(
        "in-place: read back {} sessions, {} acknowledged appends, {} lost",
        verification.sessions_checked, verification.acked_appends, verification.lost_writes
    );
    assert_nothing_lost("in-place update", &verification);

    let (after, status) = converged(&env, SERVICE, 3).await.unwrap();
    assert_ne!(
        status.current_revision.as_deref(),
        Some(old_revision.as_str())
    );
    assert_eq!(
        after.current(),
        before.current(),
        "the ring kept its shards"
    );
    let pods_after = live_pods(&env, SERVICE).await.unwrap();
    assert_eq!(
        identities(&pods_after),
        pods_before,
        "same pods (names and UIDs)"
    );
    if env.cluster.node_run_dir().is_some() {
        let mut restored = 0;
        for pod in &pods_after {
            let log =
                strip_ansi(&std::fs::read_to_string(container_log(&env, pod).unwrap()).unwrap());
            let counts = restored_counts(&log);
            eprintln!(
                "{}: snapshot restores {counts:?}",
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            assert!(
                !counts.is_empty(),
                "{} restored no snapshot after its restart",
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            // The snapshot was chosen because the Pod said so, not for lack of an answer.
            assert!(
                log.contains("path=Snapshot intent=Some(Ok(Restart))"),
                "{} did not read its Pod on SIGTERM",
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            restored += counts.iter().sum::<u64>();
        }
        assert!(restored > 0, "no session restored from a snapshot");
    }
}
