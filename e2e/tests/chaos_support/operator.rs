//! The operator side of the chaos scenarios: who leads (the coordination `Lease`), the
//! operator's `Deployment`, and an audit of every write of the ring `ConfigMap`. The standby
//! operator run as a host process is [`locus_e2e::support::operator::HostOperator`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use locus::ring::RingDocument;
use serde::Serialize;

use super::secs;

/// The chart's default Lease name (in the release's namespace).
pub const LEASE: &str = "locus-operator";
/// The operator container's name in the chart.
pub const OPERATOR_CONTAINER: &str = "operator";

/// The holder of the operator's Lease in `namespace`, if any.
pub async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(LEASE)
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits (bounded) until the Lease has a holder for which `wanted` holds; returns it.
pub async fn wait_holder(
    client: &Client,
    namespace: &str,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(holder) = lease_holder(client, namespace).await
            && wanted(&holder)
        {
            return Some(holder);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Sets the replicas of every `Deployment` in `namespace` (in a chaos namespace: only the
/// operator's chart makes one; the sample's pods belong to the operator).
pub async fn scale_operator_deployment(
    client: &Client,
    namespace: &str,
    replicas: i32,
) -> Result<Vec<String>, kube::Error> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let mut scaled = Vec::new();
    for deployment in api.list(&ListParams::default()).await? {
        let name = deployment.metadata.name.unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await?;
        scaled.push(name);
    }
    Ok(scaled)
}

/// What [`RingAudit`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RingAuditReport {
    /// Writes of the ring `ConfigMap` seen (each new `resourceVersion` with a document).
    pub writes: usize,
    /// Distinct ring versions seen.
    pub versions: usize,
    /// A version published below one seen before, or one version published twice with
    /// different documents.
    pub problems: Vec<String>,
}

#[derive(Default)]
struct AuditState {
    report: RingAuditReport,
    documents: BTreeMap<u64, String>,
    highest: u64,
    last_resource_version: Option<String>,
}

/// Watches the ring `ConfigMap` and checks every write: ring versions never go back, and a
/// version is never published with two different documents (what a deposed leader writing
/// from a stale read would do).
pub struct RingAudit {
    state: Arc<Mutex<AuditState>>,
    task: tokio::task::JoinHandle<()>,
}

impl RingAudit {
    pub fn start(client: &Client, namespace: &str, service: &str, clock: Instant) -> Self {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!(
            "metadata.name={}",
            RingDocument::config_map_name(service)
        ));
        let state: Arc<Mutex<AuditState>> = Arc::default();
        let sink = state.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(maps, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                let Ok(map) = event else { continue };
                let Some(text) = map.data.as_ref().and_then(|d| d.get("ring.json")) else {
                    continue;
                };
                let Ok(mut state) = sink.lock() else { return };
                if state.last_resource_version == map.metadata.resource_version {
                    continue;
                }
                state
                    .last_resource_version
                    .clone_from(&map.metadata.resource_version);
                let at = secs(clock.elapsed());
                let Ok(ring) = RingDocument::from_json(text.as_bytes()) else {
                    state
                        .report
                        .problems
                        .push(format!("t={at:.1}s: a ring document that does not parse"));
                    continue;
                };
                let version = ring.version();
                state.report.writes += 1;
                if version < state.highest {
                    let highest = state.highest;
                    state.report.problems.push(format!(
                        "t={at:.1}s: ring v{version} published after v{highest}"
                    ));
                }
                state.highest = state.highest.max(version);
                match state.documents.get(&version) {
                    Some(before) if before != text => state.report.problems.push(format!(
                        "t={at:.1}s: ring v{version} published again with a different document"
                    )),
                    Some(_) => {}
                    None => {
                        state.documents.insert(version, text.clone());
                        state.report.versions += 1;
                    }
                }
            }
        });
        Self { state, task }
    }

    pub fn finish(self) -> RingAuditReport {
        self.task.abort();
        self.state
            .lock()
            .map(|s| s.report.clone())
            .unwrap_or_default()
    }
}
