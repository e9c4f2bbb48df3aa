//! The operator on the local cluster, end to end: a StatefulService of ring probes is created,
//! scaled up and down, rolled out to a new template by surge handoff, updated in place; bad
//! specs are refused; a converged service costs no writes. The operator runs in-process under
//! the chart's RBAC rules (a missing permission fails these tests).

mod operator_support;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use locus::ring::SlotState;
use locus_operator::crd::TransitionKind;
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
