//! The `locus-operator` binary itself (image `locus/operator:dev`) installed on the local
//! cluster with `helm install` of charts/locus-operator: two replicas under the chart's RBAC
//! and pod security, one leads, the other stands by and takes over when the leader's pod is
//! deleted. Build it first: `cargo build -p locus-operator -p locus-e2e --bins`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::DeleteParams;
use locus_e2e::support::wait;
use operator_support::*;

#[tokio::test]
async fn two_operator_replicas_lead_in_turn() {
    let env = setup("op-deploy").await.unwrap();
    let ns = env.namespace().to_owned();

    // The chart itself, as users install it: its Deployment (restricted pod security), its
    // ServiceAccount and its ClusterRole (the rules file the other tests run under).
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/locus-operator");
    // Not `locus-operator-<ns>`: the test setup's own ClusterRole has that name.
    let release = format!("chart-{ns}");
    let out = std::process::Command::new(env.cluster.tool("helm"))
        .arg(format!(
            "--kubeconfig={}",
            env.cluster.kubeconfig().display()
        ))
        .args([
            "install",
            &release,
            chart,
            "--namespace",
            &ns,
            "--wait",
            "--timeout=120s",
        ])
        .args(["--set", &format!("watchNamespace={ns}")])
        .args(["--set", "logLevel=debug"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deployment = Api::<Deployment>::namespaced(env.admin.clone(), &ns)
        .get(&format!("{release}-locus-operator"))
        .await
        .unwrap();
    let status = deployment.status.unwrap_or_default();
    assert_eq!(status.ready_replicas, Some(2), "{status:?}");

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
