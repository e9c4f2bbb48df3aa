//! Shared setup of the demo-based end-to-end tests: a fresh namespace on the shared cluster
//! and, on the local cluster, the operator installed into it with its Helm chart (watching
//! only that namespace). On an external cluster (`LOCUS_E2E_KUBECONFIG`, kind) the operator
//! is the one `make kind-e2e` installed.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::time::Duration;

use locus_e2e::cluster::{Cluster, TestNamespace};
use locus_e2e::demo::{DemoOptions, DemoTarget, OperatorInstall};
use tokio::sync::{Mutex, MutexGuard};

/// One test at a time per binary: each runs an operator, several sample pods and a load
/// generator, which is all two shared cores can carry without distorting latencies.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// One test's world.
pub struct Env {
    pub cluster: &'static Cluster,
    pub ns: TestNamespace,
    pub target: DemoTarget,
    pub external: bool,
    _turn: MutexGuard<'static, ()>,
}

/// Waits for this test's turn, then makes its namespace.
pub async fn setup(prefix: &str) -> Env {
    let turn = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::shared().await.unwrap();
    let ns = cluster.namespace(prefix).await.unwrap();
    let target = DemoTarget {
        kubeconfig: cluster.kubeconfig().to_owned(),
        helm: cluster.tool("helm"),
    };
    Env {
        cluster,
        ns,
        target,
        external: std::env::var_os("LOCUS_E2E_KUBECONFIG").is_some(),
        _turn: turn,
    }
}

impl Env {
    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        self.ns.name()
    }

    /// Demo options for this test: its namespace, `replicas` to start with, a modest load,
    /// no phases (tests run their own).
    pub fn options(&self, replicas: u16) -> DemoOptions {
        let ns = self.namespace().to_owned();
        DemoOptions {
            operator: (!self.external).then(|| OperatorInstall {
                release: format!("op-{ns}"),
                namespace: ns.clone(),
                watch_namespace: Some(ns.clone()),
                replicas: 1,
            }),
            namespace: ns,
            create_namespace: false,
            service: "ledger".into(),
            replicas,
            shards: 256,
            sessions: 300,
            concurrency: 8,
            rate: Some(150.0),
            phases: Vec::new(),
            converge_timeout: Duration::from_secs(180),
            tail: Duration::from_secs(3),
            // CI's two cores run the control plane, the operator, every pod and the load in
            // debug builds: a request held up by a handoff on a saturated machine is slow, not
            // failed. A request is counted as failed only past 20 s.
            request_timeout: Duration::from_secs(20),
            note_bytes: 0,
            memory_limit: None,
            sample_args: Vec::new(),
        }
    }
}

/// Progress lines of the demo, on the test's output.
pub fn say(line: &str) {
    eprintln!("[e2e] {line}");
}
