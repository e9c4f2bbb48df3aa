//! The cluster side of the run: where pods reach the host, the sample's manifest, its pod
//! as the benchmark sees it, convergence, and the waits around a restart.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use locus_e2e::support::operator::HostOperator;
use locus_e2e::support::service::{is_ready, is_settled, live_pods, read_ring};
use serde_json::{Value, json};

use crate::settings::Settings;
use crate::{LONG_WAIT, MANAGER, PORT, ReportError, SERVICE, api};

/// The address pods reach the API server at: the host of the kubeconfig's server, which on
/// the local cluster is the bridge's own address.
pub(crate) fn api_server_address(kubeconfig: &Path) -> Result<Ipv4Addr, ReportError> {
    let bad =
        |why: String| ReportError::Setup(format!("kubeconfig {}: {why}", kubeconfig.display()));
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| bad(e.to_string()))?;
    let context = config.current_context.clone().unwrap_or_default();
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let server = config
        .clusters
        .iter()
        .find(|c| cluster_name.as_ref().is_none_or(|n| *n == c.name))
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| bad("no server".into()))?;
    let authority = server
        .split_once("://")
        .map_or(server.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| bad(format!("server {server:?} is not an IPv4 address")))?;
    if ip.is_loopback() || ip.is_unspecified() {
        return Err(bad(format!(
            "server {server:?}: pods cannot reach PostgreSQL on {ip}; this benchmark needs the local \
             cluster, whose API server listens on its bridge"
        )));
    }
    Ok(ip)
}

/// The node's pod range (`spec.podCIDR`).
pub(crate) async fn pod_cidr(client: &Client) -> Result<String, ReportError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(api("list nodes"))?;
    list.items
        .iter()
        .find_map(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.clone()))
        .ok_or_else(|| ReportError::Setup("no node has a spec.podCIDR".into()))
}

/// The sample as a one-slot service with a snapshot volume, in-place updates and
/// PostgreSQL persistence.
pub(crate) fn manifest(
    namespace: &str,
    settings: &Settings,
    database_url: &str,
    image: &str,
) -> Value {
    let sessions = u64::from(settings.sessions);
    let max_sessions = (sessions + sessions / 10 + 1000).max(100_000);
    let max_total_bytes = (sessions * 8192).max(256 << 20);
    let snapshot_mib = ((sessions * 4096) >> 20).max(256);
    json!({
        "apiVersion": "locus.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": SERVICE, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "port": "http",
            "updateStrategy": {"type": "InPlace"},
            "snapshot": {"sizeLimit": format!("{snapshot_mib}Mi")},
            "unreadyGrace": "120s",
            "onPodFailure": "Wait",
            "template": {"spec": {
                "terminationGracePeriodSeconds": 120,
                "containers": [{
                    "name": SERVICE,
                    "image": image,
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "env": [
                        {"name": "DATABASE_URL", "value": database_url},
                        {"name": "LOCUS_SAMPLE_PG_POOL", "value": settings.pg_pool.to_string()},
                        {"name": "LOCUS_SAMPLE_IDLE_TIMEOUT", "value": "1h"},
                        {"name": "LOCUS_SAMPLE_MAX_SESSIONS", "value": max_sessions.to_string()},
                        {"name": "LOCUS_SAMPLE_MAX_TOTAL_BYTES", "value": max_total_bytes.to_string()},
                        {"name": "LOCUS_SAMPLE_SHUTDOWN_TIMEOUT", "value": "100s"},
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": "http"},
                        "periodSeconds": 1,
                    },
                }],
            }},
        },
    })
}

/// What the benchmark reads off the service's pod.
#[derive(Debug, Clone)]
pub(crate) struct PodView {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) ip: String,
    pub(crate) restarts: i32,
    pub(crate) ready: bool,
    pub(crate) image: String,
    /// The node agent's container id is `locus://<pid>`.
    pub(crate) pid: Option<i32>,
}

pub(crate) fn view(pod: &Pod) -> PodView {
    let status = pod.status.clone().unwrap_or_default();
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.name == SERVICE))
        .cloned();
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ip: status.pod_ip.clone().unwrap_or_default(),
        restarts: container.as_ref().map_or(0, |c| c.restart_count),
        ready: is_ready(pod),
        image: container
            .as_ref()
            .map(|c| c.image.clone())
            .unwrap_or_default(),
        pid: container
            .as_ref()
            .and_then(|c| c.container_id.as_deref())
            .and_then(|id| id.strip_prefix("locus://"))
            .and_then(|pid| pid.parse().ok()),
    }
}

/// The cluster objects of the run.
pub(crate) struct Service {
    pub(crate) namespace: String,
    pub(crate) services: Api<DynamicObject>,
    pub(crate) pods: Api<Pod>,
    pub(crate) maps: Api<ConfigMap>,
    /// The node agent's run directory (pod logs), on the local cluster.
    pub(crate) node_run_dir: Option<PathBuf>,
}

impl Service {
    pub(crate) async fn apply(&self, manifest: &Value) -> Result<(), ReportError> {
        self.services
            .patch(
                SERVICE,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(manifest),
            )
            .await
            .map_err(api(format!(
                "apply StatefulService {}/{SERVICE}",
                self.namespace
            )))?;
        Ok(())
    }

    /// The service's pod once it is converged: phase `Stable`, not progressing, one Ready pod,
    /// a ring naming that pod.
    pub(crate) async fn converged_now(&self) -> Result<Option<Pod>, kube::Error> {
        let service = self.services.get(SERVICE).await?;
        let status = service.data.get("status").unwrap_or(&Value::Null);
        if !is_settled(status, service.metadata.generation) {
            return Ok(None);
        }
        let pods = live_pods(&self.pods, SERVICE).await?;
        let [pod] = pods.as_slice() else {
            return Ok(None);
        };
        let pod_view = view(pod);
        if !pod_view.ready {
            return Ok(None);
        }
        let ring = read_ring(&self.maps, SERVICE).await?;
        let named = ring.is_some_and(|ring| {
            ring.slots()
                .iter()
                .any(|s| s.pod.name == pod_view.name && s.pod.uid == pod_view.uid)
        });
        Ok(named.then(|| pod.clone()))
    }

    pub(crate) async fn converged(&self, operator: &mut HostOperator) -> Result<Pod, ReportError> {
        let started = Instant::now();
        let mut last_error = String::new();
        loop {
            match self.converged_now().await {
                Ok(Some(pod)) => return Ok(pod),
                Ok(None) => {}
                Err(e) => last_error = e.to_string(),
            }
            operator.check()?;
            if started.elapsed() > LONG_WAIT {
                return Err(ReportError::Setup(format!(
                    "{}/{SERVICE} did not converge within {LONG_WAIT:?} {last_error}",
                    self.namespace
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits (a watch) until pod `name` — still `uid` — runs its container for the
/// `restarts`-th time and is Ready; returns when it saw that.
pub(crate) async fn ready_after_restart(
    pods: Api<Pod>,
    name: String,
    uid: String,
    restarts: i32,
) -> Result<Instant, ReportError> {
    let stream = watcher(
        pods,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .applied_objects();
    let mut stream = std::pin::pin!(stream);
    let wait = async {
        while let Some(pod) = stream
            .try_next()
            .await
            .map_err(|e| ReportError::Setup(format!("watching pod {name}: {e}")))?
        {
            let seen = view(&pod);
            if seen.uid != uid {
                return Err(ReportError::Setup(format!(
                    "pod {name} was replaced (uid {uid} → {}): not an in-place restart",
                    seen.uid
                )));
            }
            if seen.restarts >= restarts && seen.ready {
                return Ok(Instant::now());
            }
        }
        Err(ReportError::Setup(format!("the watch of pod {name} ended")))
    };
    tokio::time::timeout(LONG_WAIT, wait).await.map_err(|_| {
        ReportError::Setup(format!("pod {name} not Ready again within {LONG_WAIT:?}"))
    })?
}

/// Polls `url` (`/readyz`, or a session's read with its `session` header) every 10 ms until
/// it fails at least once and then answers 200; returns when it first failed and when it
/// answered again.
pub(crate) async fn serving_again(
    http: reqwest::Client,
    url: String,
    session: Option<String>,
) -> Result<(Instant, Instant), ReportError> {
    let started = Instant::now();
    let mut down_at = None;
    loop {
        let mut request = http.get(&url).timeout(Duration::from_secs(1));
        if let Some(session) = &session {
            request = request.header(locus::headers::SESSION, session);
        }
        let ok = matches!(request.send().await, Ok(r) if r.status() == reqwest::StatusCode::OK);
        let now = Instant::now();
        match (ok, down_at) {
            (false, None) => down_at = Some(now),
            (true, Some(down)) => return Ok((down, now)),
            _ => {}
        }
        if started.elapsed() > LONG_WAIT {
            return Err(ReportError::Setup(format!(
                "{url} did not {} within {LONG_WAIT:?}",
                if down_at.is_none() {
                    "go down"
                } else {
                    "answer 200 again"
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
