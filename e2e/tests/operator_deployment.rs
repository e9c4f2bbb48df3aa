//! The `locus-operator` binary itself (image `locus/operator:dev`) deployed on the local
//! cluster as two replicas under the chart's RBAC rules: one leads, the other stands by and
//! takes over when the leader's pod is deleted. Build it first:
//! `cargo build -p locus-operator -p locus-e2e --bins`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use locus_e2e::wait;
use operator_support::*;
use serde_json::json;

#[tokio::test]
async fn two_operator_replicas_lead_in_turn() {
    let env = setup("op-deploy").await.unwrap();
    let ns = env.namespace().to_owned();
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "locus-operator"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "locus-operator"}},
            "template": {
                "metadata": {"labels": {"app": "locus-operator"}},
                "spec": {
                    // The ServiceAccount the test setup bound to the chart's rules.
                    "serviceAccountName": "locus-operator",
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "operator",
                        "image": "locus/operator:dev",
                        "ports": [{"name": "metrics", "containerPort": 8080}],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                            {"name": "LOCUS_OPERATOR_WATCH_NAMESPACE", "value": ns},
                            {"name": "RUST_LOG", "value": "info,locus_operator=debug"},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 1},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 5},
                    }],
                },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(env.admin.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &ns);
    let holder = || {
        let leases = leases.clone();
        async move {
            wait::until(Duration::from_secs(90), "a Lease holder", || async {
                let lease = leases.get_opt("locus-operator").await?;
                let holder = lease
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .filter(|h| !h.is_empty());
                Ok::<_, kube::Error>(holder)
            })
            .await
            .unwrap()
        }
    };
    let first = holder().await;
    apply(&env, &service("app", 2)).await.unwrap();
    converged(&env, "app", 2).await.unwrap();

    // The leader's pod goes away (it releases the Lease on SIGTERM); the standby leads.
    env.pods()
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    let second = wait::until(Duration::from_secs(60), "a new Lease holder", || async {
        let lease = leases.get_opt("locus-operator").await?;
        let holder = lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty() && *h != first);
        Ok::<_, kube::Error>(holder)
    })
    .await
    .unwrap();
    assert_ne!(second, first);
    apply(&env, &service("app", 3)).await.unwrap();
    let (ring, _) = converged(&env, "app", 3).await.unwrap();
    assert_balanced(&ring, 3);
}
