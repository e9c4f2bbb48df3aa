//! Shared setup of the operator's end-to-end tests: the CRD, a namespace, the operator running
//! in-process under the exact RBAC rules of the chart (`charts/locus-operator/files/
//! clusterrole-rules.yaml`, bound to a ServiceAccount whose token the operator's client
//! uses), a log of every request it sends, and helpers to read rings and wait on services.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use locus::ring::{Ring, RingDocument};
use locus_contract::crd::{PROGRESSING, Phase, StatefulService, StatefulServiceStatus};
use locus_e2e::cluster::{Cluster, TestNamespace};
use locus_e2e::support::service::serves;
use locus_e2e::support::wait;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Helpers return errors; tests unwrap them.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The probe image: `locus-ring-probe`, which reports ring progress like the SDK would.
pub const PROBE_IMAGE: &str = "locus/ring-probe:dev";
/// How long a service may take to converge in these tests.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// Every request the operator's client sent: `METHOD path?query`, in order.
#[derive(Clone, Default, Debug)]
pub struct RequestLog(Arc<Mutex<Vec<String>>>);

impl RequestLog {
    fn push(&self, line: String) {
        if let Ok(mut log) = self.0.lock() {
            log.push(line);
        }
    }

    /// A snapshot of the log.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How many requests so far.
    pub fn len(&self) -> usize {
        self.0.lock().map(|l| l.len()).unwrap_or_default()
    }

    /// Requests after the first `mark` that are not reads (GET).
    pub fn writes_since(&self, mark: usize) -> Vec<String> {
        self.lines()
            .into_iter()
            .skip(mark)
            .filter(|l| !l.starts_with("GET "))
            .collect()
    }
}

/// A tower layer recording every request into a [`RequestLog`].
#[derive(Clone)]
struct Record(RequestLog);

impl<S> tower::Layer<S> for Record {
    type Service = Recorded<S>;
    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            log: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Recorded<S> {
    inner: S,
    log: RequestLog,
}

impl<S, B> tower::Service<http::Request<B>> for Recorded<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let uri = request.uri();
        let path = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
        self.log.push(format!("{} {path}", request.method()));
        self.inner.call(request)
    }
}

/// One test's world: the shared cluster, an admin client, a fresh namespace and a client with
/// the operator's own (RBAC-limited) credentials.
pub struct Env {
    pub cluster: &'static Cluster,
    pub admin: Client,
    pub ns: TestNamespace,
    pub operator: Client,
    pub requests: RequestLog,
    token: String,
}

impl Env {
    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        self.ns.name()
    }

    /// Another client with the operator's credentials, with its own request log.
    pub async fn another_operator_client(&self) -> Res<(Client, RequestLog)> {
        client_with_token(self.cluster, self.namespace(), &self.token).await
    }

    /// The services of the namespace (admin).
    pub fn services(&self) -> Api<StatefulService> {
        Api::namespaced(self.admin.clone(), self.namespace())
    }

    /// The pods of the namespace (admin).
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), self.namespace())
    }
}

/// The rules of the operator's ClusterRole, from the chart.
pub fn operator_rules() -> Res<Vec<PolicyRule>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/locus-operator/files/clusterrole-rules.yaml"
    );
    Ok(serde_yaml::from_str(&std::fs::read_to_string(path)?)?)
}

/// The operator's identity: a ServiceAccount in `namespace` bound to a ClusterRole made of
/// the chart's rules; returns a token for it from the TokenRequest API.
async fn operator_account(admin: &Client, namespace: &str) -> Res<String> {
    let name = "locus-operator";
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    accounts.create(&PostParams::default(), &account).await?;
    let role_name = format!("locus-operator-{namespace}");
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some(role_name.clone()),
            labels: Some(BTreeMap::from([(
                "locus.dev/test".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        rules: Some(operator_rules()?),
        aggregation_rule: None,
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role_name, "labels": {"locus.dev/test": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?
        .status
        .ok_or("TokenRequest without status")?
        .token
        .ok_or("TokenRequest without a token")?;
    Ok(token)
}

/// A client authenticated with `token`, trusting the cluster CA; every request it sends is
/// recorded.
async fn client_with_token(
    cluster: &Cluster,
    namespace: &str,
    token: &str,
) -> Res<(Client, RequestLog)> {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig())?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.auth_info = serde_json::from_value::<AuthInfo>(json!({ "token": token }))?;
    namespace.clone_into(&mut config.default_namespace);
    let log = RequestLog::default();
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&Record(log.clone()))
        .build();
    Ok((client, log))
}

/// A fresh namespace, the CRD, and the operator's client.
pub async fn setup(prefix: &str) -> Res<Env> {
    let cluster = Cluster::shared().await?;
    let admin = cluster.client().await?;
    locus_e2e::support::crd::install(&admin).await?;
    let ns = cluster.namespace(prefix).await?;
    let token = operator_account(&admin, ns.name()).await?;
    let (operator, requests) = client_with_token(cluster, ns.name(), &token).await?;
    Ok(Env {
        cluster,
        admin,
        ns,
        operator,
        requests,
        token,
    })
}

/// The operator running in-process; stopped (abruptly) when dropped.
pub struct Operator {
    task: JoinHandle<locus_operator::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

/// The configuration of an in-process operator watching only `namespace`, without a Lease.
pub fn operator_config(namespace: &str) -> locus_operator::Config {
    locus_operator::Config {
        namespace: Some(namespace.to_owned()),
        metrics_addr: None,
        leader_election: None,
        instance: format!("e2e-{}", locus_e2e::cluster::random_suffix()),
    }
}

/// Reconciles the operator recorded into `metrics` so far (every reconcile, whether it
/// planned or found nothing changed).
pub fn reconciles(metrics: &locus_operator::metrics::Metrics) -> usize {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("locus_operator_reconcile_duration_seconds_count"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<usize>().ok())
        .sum()
}

impl Operator {
    /// Starts the operator with `client`, watching only `namespace`, without a Lease.
    pub fn start(client: Client, namespace: &str) -> Self {
        Self::start_with(client, operator_config(namespace))
    }

    /// Starts the operator with `config`.
    pub fn start_with(client: Client, config: locus_operator::Config) -> Self {
        Self::start_measured(client, config, Arc::default())
    }

    /// Starts the operator with `config`, recording into `metrics`.
    pub fn start_measured(
        client: Client,
        config: locus_operator::Config,
        metrics: Arc<locus_operator::metrics::Metrics>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(locus_operator::run_with_metrics(
            client,
            config,
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            task,
            stop: Some(stop),
        }
    }

    /// Kills it mid-flight, as a crash would (nothing is released).
    pub async fn kill(mut self) {
        self.stop.take();
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Stops it gracefully and returns its result.
    pub async fn shutdown(mut self) -> Res<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await??;
        Ok(())
    }

    /// True if it stopped by itself.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A StatefulService running the ring probe: `replicas` slots, 256 shards, short timeouts.
pub fn service(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "locus.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "shards": 256,
            "vnodes": 32,
            "port": "http",
            "unreadyGrace": "3s",
            "timeouts": {"warm": "20s", "drain": "20s", "settle": "30s"},
            "template": {"spec": {
                "terminationGracePeriodSeconds": 5,
                "containers": [probe_container(&[])],
            }},
        },
    })
}

/// The probe container with extra environment variables.
pub fn probe_container(env: &[(&str, &str)]) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "name": "probe",
        "image": PROBE_IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    })
}

/// Applies `manifest` as the test (field manager `locus-e2e`).
pub async fn apply(env: &Env, manifest: &Value) -> Res<StatefulService> {
    let name = manifest["metadata"]["name"].as_str().ok_or("no name")?;
    Ok(env
        .services()
        .patch(
            name,
            &PatchParams::apply("locus-e2e").force(),
            &Patch::Apply(manifest),
        )
        .await?)
}

/// The ring the operator published for `name`, if any.
pub async fn ring(env: &Env, name: &str) -> Res<Option<Ring>> {
    let maps: Api<ConfigMap> = Api::namespaced(env.admin.clone(), env.namespace());
    let Some(map) = maps.get_opt(&RingDocument::config_map_name(name)).await? else {
        return Ok(None);
    };
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(RingDocument::CONFIG_MAP_KEY))
        .ok_or("ring ConfigMap without ring.json")?;
    Ok(Some(RingDocument::from_json(text.as_bytes())?))
}

/// The service's pods that are not being deleted.
pub async fn live_pods(env: &Env, name: &str) -> Res<Vec<Pod>> {
    let list = env
        .pods()
        .list(&ListParams::default().labels(&format!("locus.dev/service={name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// The pods' names and UIDs, sorted: equal lists mean the same pods, none replaced.
pub fn identities(pods: &[Pod]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = pods
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect();
    ids.sort();
    ids
}

/// Waits until the service is converged on `replicas` slots — status Stable and not
/// Progressing for the current generation, the ring stable with exactly those slots, each
/// served by a Ready pod at its address, and no other pod — and returns the ring and status.
pub async fn converged(
    env: &Env,
    name: &str,
    replicas: usize,
) -> Res<(Ring, StatefulServiceStatus)> {
    converged_within(env, name, replicas, CONVERGE).await
}

/// [`converged`], waiting up to `limit`.
pub async fn converged_within(
    env: &Env,
    name: &str,
    replicas: usize,
    limit: Duration,
) -> Res<(Ring, StatefulServiceStatus)> {
    let what = format!("{name} converged on {replicas} slots");
    let found = wait::until(limit, &what, || async {
        let svc = env.services().get(name).await?;
        let Some(status) = svc.status.clone() else {
            return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(None);
        };
        let progressing = status
            .conditions
            .iter()
            .any(|c| c.type_ == PROGRESSING && c.status == "True");
        if progressing
            || status.phase != Phase::Stable
            || status.observed_generation != svc.metadata.generation
        {
            return Ok(None);
        }
        let Some(ring) = ring(env, name).await? else {
            return Ok(None);
        };
        let pods = live_pods(env, name).await?;
        if ring.slots().len() != replicas || pods.len() != replicas {
            return Ok(None);
        }
        Ok(serves(&ring, &pods).then_some((ring, status)))
    })
    .await?;
    Ok(found)
}

/// Asserts that every shard is assigned and the slots are balanced (floor/ceil).
pub fn assert_balanced(ring: &Ring, slots: usize) {
    let counts = ring.current().counts();
    assert_eq!(counts.len(), slots, "every slot holds shards: {counts:?}");
    let shards = ring.shards().get() as usize;
    assert_eq!(counts.values().map(|&c| c as usize).sum::<usize>(), shards);
    for (&slot, &count) in &counts {
        assert!(usize::from(slot) < slots, "{counts:?}");
        let count = count as usize;
        assert!(
            count == shards / slots || count == shards.div_ceil(slots),
            "slot {slot} holds {count}: {counts:?}"
        );
    }
}

/// Sends `POST path` to a pod's port 8080 through the API server's pod proxy.
pub async fn post_to_pod(env: &Env, pod: &str, path: &str) -> Res<String> {
    let url = format!(
        "/api/v1/namespaces/{}/pods/{pod}:8080/proxy{path}",
        env.namespace()
    );
    let request = http::Request::post(url).body(Vec::new())?;
    Ok(env.admin.request_text(request).await?)
}

/// Records every ring version published for a service, as a background watch sees them.
pub struct RingHistory {
    rings: Arc<Mutex<Vec<(Instant, Ring)>>>,
    task: JoinHandle<()>,
}

impl RingHistory {
    /// Starts watching the ring `ConfigMap` of `name`.
    pub fn watch(env: &Env, name: &str) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let maps: Api<ConfigMap> = Api::namespaced(env.admin.clone(), env.namespace());
        let config = watcher::Config::default().fields(&format!(
            "metadata.name={}",
            RingDocument::config_map_name(name)
        ));
        let rings: Arc<Mutex<Vec<(Instant, Ring)>>> = Arc::default();
        let sink = rings.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(maps, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(map)) = stream.next().await {
                let Some(text) = map.data.as_ref().and_then(|d| d.get("ring.json")) else {
                    continue;
                };
                let Ok(ring) = RingDocument::from_json(text.as_bytes()) else {
                    continue;
                };
                if let Ok(mut rings) = sink.lock()
                    && rings
                        .last()
                        .is_none_or(|(_, r)| r.version() < ring.version())
                {
                    rings.push((Instant::now(), ring));
                }
            }
        });
        Self { rings, task }
    }

    /// The rings seen so far.
    pub fn rings(&self) -> Vec<(Instant, Ring)> {
        self.rings.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for RingHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `future` with a deadline, failing with `what`.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> Res<T> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| format!("timed out after {limit:?}: {what}").into())
}

/// `kubectl apply` of `manifest` (JSON or YAML text) in the test namespace: (success, stderr).
pub async fn kubectl_apply(env: &Env, manifest: &str) -> (bool, String) {
    use std::io::Write as _;
    let manifest = manifest.to_owned();
    let mut command = env.cluster.kubectl();
    command
        .args(["apply", "-n", env.namespace(), "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The events with `reason` on the service `name`.
pub async fn events(
    env: &Env,
    name: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.admin.clone(), env.namespace());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(name))
        })
        .collect()
}
