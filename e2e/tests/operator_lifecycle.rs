//! The operator on the local cluster, end to end: a StatefulService of ring probes is created,
//! scaled up and down, rolled out to a new template by surge handoff, updated in place; bad
//! specs are refused; a converged service costs no writes. The operator runs in-process under
//! the chart's RBAC rules (a missing permission fails these tests).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use locus::ring::SlotState;
use locus_contract::crd::TransitionKind;
use operator_support::*;

#[tokio::test]
async fn create_then_scale_three_to_five_to_two() {
    let env = setup("op-scale").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "chat");
    apply(&env, &service("chat", 3)).await.unwrap();
    let (ring, status) = converged(&env, "chat", 3).await.unwrap();
    assert_balanced(&ring, 3);
    assert!(ring.slots().iter().all(|s| s.state == SlotState::Active));
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(status.selector.as_deref(), Some("locus.dev/service=chat"));

    // The fixed objects exist and are owned by the service.
    let ns = env.namespace();
    let owned = |meta: &kube::api::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "StatefulService" && o.name == "chat" && o.controller == Some(true))
    };
    let headless = Api::<Service>::namespaced(env.admin.clone(), ns)
        .get("chat")
        .await
        .unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    assert!(owned(&headless.metadata));
    let account = Api::<ServiceAccount>::namespaced(env.admin.clone(), ns)
        .get("chat-pod")
        .await
        .unwrap();
    assert!(owned(&account.metadata));
    let role = Api::<Role>::namespaced(env.admin.clone(), ns)
        .get("chat-pod")
        .await
        .unwrap();
    let names: BTreeSet<String> = ring.slots().iter().map(|s| s.pod.name.clone()).collect();
    let allowed: BTreeSet<String> = role.rules.unwrap()[1]
        .resource_names
        .clone()
        .unwrap()
        .into_iter()
        .collect();
    assert!(names.is_subset(&allowed), "{names:?} {allowed:?}");
    Api::<RoleBinding>::namespaced(env.admin.clone(), ns)
        .get("chat-pod")
        .await
        .unwrap();
    let pdb = Api::<PodDisruptionBudget>::namespaced(env.admin.clone(), ns)
        .get("chat")
        .await
        .unwrap();
    assert_eq!(
        pdb.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), ns);
    let key = secrets.get("chat-handoff").await.unwrap().data.unwrap()["key"]
        .0
        .clone();
    assert_eq!(key.len(), 64);

    // 3 -> 5: a warm transition that only gives shards to the new slots.
    let before = ring.current().clone();
    apply(&env, &service("chat", 5)).await.unwrap();
    let (ring, status) = converged(&env, "chat", 5).await.unwrap();
    assert_balanced(&ring, 5);
    assert_eq!(
        status.last_transition.as_ref().unwrap().kind,
        TransitionKind::ScaleUp
    );
    for m in before.moves_to(ring.current()).unwrap() {
        assert!(m.to >= 3, "a shard moved between staying slots: {m:?}");
    }
    let phases: Vec<String> = history
        .rings()
        .iter()
        .map(|(_, r)| r.phase().to_string())
        .collect();
    assert!(
        phases.windows(3).any(|w| w == ["warm", "switch", "stable"]),
        "{phases:?}"
    );

    // 5 -> 2: the leaving slots' pods go once the ring is stable again.
    apply(&env, &service("chat", 2)).await.unwrap();
    let (ring, status) = converged(&env, "chat", 2).await.unwrap();
    assert_balanced(&ring, 2);
    assert_eq!(
        status.last_transition.as_ref().unwrap().kind,
        TransitionKind::ScaleDown
    );
    let versions: Vec<u64> = history.rings().iter().map(|(_, r)| r.version()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    // The handoff key was generated once.
    let again = secrets.get("chat-handoff").await.unwrap().data.unwrap()["key"]
        .0
        .clone();
    assert_eq!(key, again);
}

/// The revision label of a pod.
fn revision_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()?
        .get("locus.dev/revision")
        .cloned()
}

#[tokio::test]
async fn a_template_change_rolls_out_by_surge_handoff_without_moving_shards() {
    let env = setup("op-surge").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "cart");
    apply(&env, &service("cart", 3)).await.unwrap();
    let (before, status) = converged(&env, "cart", 3).await.unwrap();
    let old_revision = status.current_revision.clone().unwrap();
    let old_uids: BTreeSet<String> = before.slots().iter().map(|s| s.pod.uid.clone()).collect();

    let mut manifest = service("cart", 3);
    manifest["spec"]["template"]["spec"]["containers"] =
        serde_json::json!([probe_container(&[("MODE", "second")])]);
    apply(&env, &manifest).await.unwrap();
    let (after, status) = converged(&env, "cart", 3).await.unwrap();
    let new_revision = status.update_revision.clone().unwrap();
    assert_ne!(new_revision, old_revision);
    assert_eq!(
        status.current_revision.as_deref(),
        Some(new_revision.as_str())
    );
    assert_eq!(
        status.last_transition.as_ref().unwrap().kind,
        TransitionKind::Rollout
    );
    for slot in after.slots() {
        assert!(
            !old_uids.contains(&slot.pod.uid),
            "slot {} kept its old pod",
            slot.index
        );
    }
    for pod in live_pods(&env, "cart").await.unwrap() {
        assert_eq!(revision_of(&pod).as_deref(), Some(new_revision.as_str()));
    }
    // Every slot was handed over (a successor in a warm ring, then a predecessor in a switch
    // ring), and no version of the ring moved a shard.
    let rings = history.rings();
    for index in 0..3u16 {
        let warmed = rings
            .iter()
            .any(|(_, r)| r.slot(index).is_some_and(|s| s.successor.is_some()));
        let switched = rings
            .iter()
            .any(|(_, r)| r.slot(index).is_some_and(|s| s.predecessor.is_some()));
        assert!(warmed && switched, "slot {index} was not handed over");
    }
    assert!(rings.iter().all(|(_, r)| r.current() == before.current()));
}

/// A StatefulService of test servers updated in place (image-only changes).
fn in_place_service(image: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "locus.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": "feed"},
        "spec": {
            "replicas": 2,
            "shards": 64,
            "port": "http",
            "unreadyGrace": "20s",
            "updateStrategy": {"type": "InPlace"},
            "snapshot": {"sizeLimit": "16Mi"},
            "template": {"spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "server",
                    "image": image,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                }],
            }},
        },
    })
}

#[tokio::test]
async fn an_image_only_change_with_in_place_keeps_the_pods_and_restarts_their_containers() {
    let env = setup("op-inplace").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    apply(&env, &in_place_service("locus/test-server:dev"))
        .await
        .unwrap();
    let (before, status) = converged(&env, "feed", 2).await.unwrap();
    let old_revision = status.current_revision.clone().unwrap();
    let pods_before = identities(&live_pods(&env, "feed").await.unwrap());

    apply(&env, &in_place_service("locus/test-server:v2"))
        .await
        .unwrap();
    let (after, status) = converged(&env, "feed", 2).await.unwrap();
    assert_ne!(
        status.current_revision.as_deref(),
        Some(old_revision.as_str())
    );
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(after.version(), before.version(), "the ring did not change");
    let pods_after = live_pods(&env, "feed").await.unwrap();
    assert_eq!(
        identities(&pods_after),
        pods_before,
        "same pods (names and UIDs)"
    );
    for pod in &pods_after {
        let spec_image = pod.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(spec_image.as_deref(), Some("locus/test-server:v2"));
        let container = &pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert!(container.restart_count >= 1, "container restarted in place");
        assert_eq!(container.image, "locus/test-server:v2");
        assert_eq!(revision_of(pod), status.update_revision);
    }
}

#[tokio::test]
async fn invalid_specs_are_refused_with_the_documented_messages() {
    use locus_contract::crd::rules;
    let env = setup("op-invalid").await.unwrap();
    let with = |patch: serde_json::Value| {
        let mut manifest = service("bad", 2);
        for (key, value) in patch.as_object().unwrap() {
            manifest["spec"][key] = value.clone();
        }
        serde_json::to_string(&manifest).unwrap()
    };
    let cases = [
        (
            with(serde_json::json!({"shards": 1000})),
            rules::SHARDS_POWER_OF_TWO_MESSAGE.to_owned(),
        ),
        (
            with(serde_json::json!({"replicas": 9, "shards": 8})),
            rules::REPLICAS_AT_MOST_SHARDS_MESSAGE.to_owned(),
        ),
        (
            with(serde_json::json!({"port": "grpc"})),
            "spec.port 'grpc' must name a containerPort in spec.template.spec.containers[*].ports"
                .to_owned(),
        ),
        (
            with(serde_json::json!({"updateStrategy": {"type": "InPlace"}})),
            rules::IN_PLACE_NEEDS_SNAPSHOT_MESSAGE.to_owned(),
        ),
        (
            with(serde_json::json!({"unreadyGrace": "0s"})),
            rules::DURATION_POSITIVE_MESSAGE.to_owned(),
        ),
    ];
    for (manifest, message) in cases {
        let (ok, stderr) = kubectl_apply(&env, &manifest).await;
        assert!(!ok, "accepted a bad spec expected to fail with {message:?}");
        assert!(
            stderr.contains(&message),
            "expected {message:?} in:\n{stderr}"
        );
    }
    // Shards may grow but never shrink.
    let (ok, stderr) = kubectl_apply(&env, &with(serde_json::json!({"shards": 256}))).await;
    assert!(ok, "{stderr}");
    let (ok, stderr) = kubectl_apply(&env, &with(serde_json::json!({"shards": 128}))).await;
    assert!(!ok);
    assert!(stderr.contains(rules::SHARDS_ONLY_GROW_MESSAGE), "{stderr}");
}

#[tokio::test]
async fn a_converged_service_costs_no_writes() {
    let env = setup("op-noop").await.unwrap();
    let metrics = std::sync::Arc::new(locus_operator::metrics::Metrics::new());
    let _operator = Operator::start_measured(
        env.operator.clone(),
        operator_config(env.namespace()),
        metrics.clone(),
    );
    apply(&env, &service("quiet", 3)).await.unwrap();
    converged(&env, "quiet", 3).await.unwrap();
    // Let the last status write land: wait until a second passes without a write.
    let quiet = locus_e2e::support::wait::until(
        std::time::Duration::from_secs(30),
        "a quiet operator",
        || async {
            let mark = env.requests.len();
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Ok::<_, String>(env.requests.writes_since(mark).is_empty().then_some(()))
        },
    );
    quiet.await.unwrap();

    let mark = env.requests.len();
    let reconciled = reconciles(&metrics);
    let pod = live_pods(&env, "quiet").await.unwrap()[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let touches = 10;
    for i in 0..touches {
        // Changes the operator does not care about, each of which triggers a reconcile.
        let patch = serde_json::json!({"metadata": {"annotations": {"e2e.locus.dev/touch": i.to_string()}}});
        if i % 2 == 0 {
            env.services()
                .patch(
                    "quiet",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
        } else {
            env.pods()
                .patch(
                    &pod,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
        }
        let what = format!("reconcile {}", i + 1);
        locus_e2e::support::wait::until(std::time::Duration::from_secs(30), &what, || async {
            Ok::<_, String>((reconciles(&metrics) - reconciled > i).then_some(()))
        })
        .await
        .unwrap();
    }
    let reconciled = reconciles(&metrics) - reconciled;
    let writes = env.requests.writes_since(mark);
    println!("no-op reconciles: {reconciled}, writes: {}", writes.len());
    assert!(reconciled >= touches);
    assert!(
        writes.is_empty(),
        "a converged service was written to: {writes:#?}"
    );
}

#[tokio::test]
async fn metrics_and_health_endpoints_report_what_the_operator_did() {
    let env = setup("op-metrics").await.unwrap();
    // A free port on loopback for the operator's endpoints.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let _operator = Operator::start_with(
        env.operator.clone(),
        locus_operator::Config {
            namespace: Some(env.namespace().to_owned()),
            metrics_addr: Some(addr),
            leader_election: None,
            instance: "metrics".to_owned(),
        },
    );
    apply(&env, &service("obs", 2)).await.unwrap();
    converged(&env, "obs", 2).await.unwrap();
    apply(&env, &service("obs", 3)).await.unwrap();
    let (ring, _) = converged(&env, "obs", 3).await.unwrap();

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| {
        let request = http.get(format!("http://{addr}{path}"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    let ns = env.namespace();
    for expected in [
        r#"locus_operator_transitions_total{kind="none",step="create"} 1"#.to_owned(),
        r#"locus_operator_transitions_total{kind="ScaleUp",step="warm"} 1"#.to_owned(),
        r#"locus_operator_transitions_total{kind="ScaleUp",step="switch"} 1"#.to_owned(),
        r#"locus_operator_transitions_total{kind="ScaleUp",step="settle"} 1"#.to_owned(),
        r#"locus_operator_phase_duration_seconds_count{phase="warm"} 1"#.to_owned(),
        format!(
            r#"locus_operator_ring_version{{namespace="{ns}",service="obs"}} {}"#,
            ring.version()
        ),
        r#"locus_operator_reconcile_duration_seconds_count{result="ok"}"#.to_owned(),
        "locus_operator_leader 1".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    let moved = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"locus_operator_shards_moved_total{kind="ScaleUp"} "#))
        .unwrap();
    // 256 shards from 2 to 3 slots: the new slot takes 85 or 86 (one slot holds the extra
    // shard; which one depends on the namespace, part of the token names).
    assert!(moved == "85" || moved == "86", "{moved}");
}

#[tokio::test]
async fn kubectl_scale_goes_through_the_scale_subresource() {
    let env = setup("op-kscale").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    apply(&env, &service("elastic", 1)).await.unwrap();
    converged(&env, "elastic", 1).await.unwrap();
    let mut command = env.cluster.kubectl();
    command.args([
        "scale",
        "-n",
        env.namespace(),
        "statefulservice/elastic",
        "--replicas=3",
    ]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ring, status) = converged(&env, "elastic", 3).await.unwrap();
    assert_balanced(&ring, 3);
    assert_eq!(status.replicas, 3);
    // What an autoscaler reads: the scale subresource's status.
    let scale: serde_json::Value = env
        .admin
        .request(
            http::Request::get(format!(
                "/apis/locus.dev/v1alpha1/namespaces/{}/statefulservices/elastic/scale",
                env.namespace()
            ))
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(scale["status"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "locus.dev/service=elastic");
}
