//! The node of the local cluster, tested as Kubernetes users see it: Deployments become
//! Available through the real scheduler and controllers, pods get real addresses and serve
//! from their own network namespaces, deletion is graceful, pods act under their own
//! ServiceAccount's RBAC, and an image the node cannot run is reported, not ignored.
//!
//! Each test works in its own namespace and waits on conditions. On an external cluster
//! (`LOCUS_E2E_KUBECONFIG`, e.g. kind) pods are reached through the API server's pod proxy
//! and container logs are not read.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use locus_e2e::cluster::Cluster;
use locus_e2e::support::wait;
use serde_json::{Value, json};

const IMAGE: &str = "locus/test-server:dev";
const TIMEOUT: Duration = Duration::from_secs(90);

/// Helpers return errors; the tests themselves unwrap them.
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The test server's container: port 8080 named `http`, ready on `/healthz`, told its own
/// name, namespace and address through the downward API.
fn server_container(extra_env: &[(&str, &str)]) -> Value {
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v})),
    );
    json!({
        "name": "server",
        "image": IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 1,
        },
    })
}

fn deployment(name: &str, replicas: i32, extra_env: &[(&str, &str)]) -> Res<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 20,
                    "containers": [server_container(extra_env)],
                },
            },
        },
    }))?)
}

fn available(d: &Deployment, replicas: i32) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    let condition = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True");
    condition
        && status.ready_replicas == Some(replicas)
        && status.updated_replicas == Some(replicas)
        && status.replicas == Some(replicas)
}

/// Ready and not being deleted.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && locus_e2e::support::service::is_ready(pod)
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Waits until Deployment `name` is Available with all replicas ready; returns how long
/// that took.
async fn await_available(client: &Client, ns: &str, name: &str, replicas: i32) -> Res<Duration> {
    let start = Instant::now();
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait::until(
        TIMEOUT,
        &format!("deployment {ns}/{name} to be Available"),
        || {
            let api = api.clone();
            async move {
                Ok::<_, kube::Error>(api.get_opt(name).await?.filter(|d| available(d, replicas)))
            }
        },
    )
    .await?;
    Ok(start.elapsed())
}

/// The ready pods of `app`, exactly `count` of them.
async fn ready_pods(client: &Client, ns: &str, app: &str, count: usize) -> Res<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("app={app}");
    let pods = wait::until(
        TIMEOUT,
        &format!("{count} ready pods of {ns}/{app}"),
        || {
            let api = api.clone();
            let lp = ListParams::default().labels(&selector);
            async move {
                let pods = api.list(&lp).await?.items;
                let ready: Vec<Pod> = pods.iter().filter(|p| is_ready(p)).cloned().collect();
                Ok::<_, kube::Error>((ready.len() == count && pods.len() == count).then_some(ready))
            }
        },
    )
    .await?;
    Ok(pods)
}

/// `GET path` on port 8080 of `pod`: straight to the pod's address on the local cluster
/// (the test runs on the node), through the API server's pod proxy elsewhere.
async fn get_from_pod(
    cluster: &Cluster,
    client: &Client,
    pod: &Pod,
    path: &str,
) -> Result<(u16, String), String> {
    if cluster.node_run_dir().is_some() {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("http://{}:8080{path}", pod_ip(pod));
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        return Ok((status, body));
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uri = format!(
        "/api/v1/namespaces/{ns}/pods/{}:8080/proxy{path}",
        name_of(pod)
    );
    let req = http::Request::get(uri)
        .body(kube::client::Body::from(Vec::new()))
        .map_err(|e| e.to_string())?;
    let resp = client.send(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn in_pod_range(cidr: &str, ip: &str) -> bool {
    // The local cluster's pod range is a /24: compare the first three octets.
    let prefix = |s: &str| s.rsplit_once('.').map(|(net, _)| net.to_string());
    cidr.ends_with("/24") && prefix(cidr.trim_end_matches("/24")) == prefix(ip)
}

#[tokio::test]
async fn deployment_of_two_servers_becomes_available_and_each_pod_serves_from_its_own_address() {
    let cluster = Cluster::shared().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = cluster.namespace("node-deploy").await.unwrap();
    let ns = ns.name();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(&PostParams::default(), &deployment("web", 2, &[]).unwrap())
        .await
        .unwrap();
    let took = await_available(&client, ns, "web", 2).await.unwrap();
    eprintln!("deployment of 2 test servers: created -> Available in {took:?}");

    let pods = ready_pods(&client, ns, "web", 2).await.unwrap();
    let ips: BTreeSet<String> = pods.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 2, "two pods, two distinct addresses: {ips:?}");
    for ip in &ips {
        let addr: std::net::Ipv4Addr = ip.parse().unwrap();
        assert!(!addr.is_loopback() && !addr.is_unspecified(), "{ip}");
        if cluster.node_run_dir().is_some() {
            assert!(
                in_pod_range(&cluster.info().pod_cidr, ip),
                "{ip} is outside the pod range {}",
                cluster.info().pod_cidr
            );
        }
    }

    // Each pod answers on the same port from its own network namespace, as itself.
    for pod in &pods {
        let (status, body) = get_from_pod(cluster, &client, pod, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let who: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(who["pod"], name_of(pod), "{body}");
        assert_eq!(who["namespace"], ns, "{body}");
        assert_eq!(who["ip"], pod_ip(pod), "{body}");
    }

    // A Service over them: the EndpointSlice controller lists both ready addresses.
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let listed = wait::until(
        TIMEOUT,
        "the EndpointSlice of service web to list both pods",
        || {
            let slices = slices.clone();
            let ips = ips.clone();
            async move {
                let lp = ListParams::default().labels("kubernetes.io/service-name=web");
                let ready: BTreeSet<String> = slices
                    .list(&lp)
                    .await?
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter().flatten())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .flat_map(|e| e.addresses.iter().cloned())
                    .collect();
                Ok::<_, kube::Error>((ready == ips).then_some(ready))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(listed, ips);
}

#[tokio::test]
async fn deleted_pods_stop_gracefully_are_replaced_and_go_with_their_deployment() {
    let cluster = Cluster::shared().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = cluster.namespace("node-delete").await.unwrap();
    let ns = ns.name();
    // The server keeps serving 500 ms after SIGTERM: a graceful stop cannot be faster.
    let term_delay = Duration::from_millis(500);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("grace", 2, &[("TERM_DELAY_MS", "500")]).unwrap(),
        )
        .await
        .unwrap();
    await_available(&client, ns, "grace", 2).await.unwrap();
    let before = ready_pods(&client, ns, "grace", 2).await.unwrap();
    let victim = before[0].clone();
    let victim_name = name_of(&victim);
    let victim_uid = victim.metadata.uid.clone().unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    pods.delete(&victim_name, &DeleteParams::default())
        .await
        .unwrap();
    wait::until(TIMEOUT, &format!("pod {victim_name} to be gone"), || {
        let pods = pods.clone();
        let name = victim_name.clone();
        let uid = victim_uid.clone();
        async move {
            let current = pods.get_opt(&name).await?;
            let gone = current.is_none_or(|p| p.metadata.uid.as_deref() != Some(uid.as_str()));
            Ok::<_, kube::Error>(gone.then_some(()))
        }
    })
    .await
    .unwrap();
    let took = start.elapsed();
    eprintln!("graceful pod deletion: delete -> gone in {took:?}");
    assert!(
        took >= term_delay,
        "the pod was gone after {took:?}, before its container finished its {term_delay:?} shutdown"
    );

    // The container saw SIGTERM (its log is kept after the pod is gone).
    if let Some(run_dir) = cluster.node_run_dir() {
        let log = run_dir
            .join("pods")
            .join(format!("{ns}_{victim_name}_{victim_uid}"))
            .join("server.log");
        let text = std::fs::read_to_string(&log)
            .unwrap_or_else(|e| panic!("reading {}: {e}", log.display()));
        assert!(
            text.contains("received SIGTERM"),
            "{} does not show a graceful stop:\n{text}",
            log.display()
        );
    }

    // The ReplicaSet replaces it.
    let after = ready_pods(&client, ns, "grace", 2).await.unwrap();
    assert!(
        after
            .iter()
            .all(|p| p.metadata.uid.as_deref() != Some(victim_uid.as_str())),
        "the deleted pod is still listed"
    );

    // Deleting the Deployment garbage-collects its ReplicaSet and pods.
    let foreground = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    deployments.delete("grace", &foreground).await.unwrap();
    wait::until(TIMEOUT, "every pod of deployment grace to be gone", || {
        let pods = pods.clone();
        async move {
            let left = pods
                .list(&ListParams::default().labels("app=grace"))
                .await?
                .items
                .len();
            Ok::<_, kube::Error>((left == 0).then_some(()))
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_pod_acts_with_its_service_account_and_gets_only_what_its_role_allows() {
    let cluster = Cluster::shared().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = cluster.namespace("node-rbac").await.unwrap();
    let ns = ns.name();
    let pp = PostParams::default();

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "x"}, "data": {"greeting": "hello from x"},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&pp, &cm)
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hidden"}, "stringData": {"password": "nope"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&pp, &secret)
        .await
        .unwrap();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "reader"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&pp, &sa)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "get-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&pp, &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "get-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&pp, &binding)
        .await
        .unwrap();

    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "reader", "labels": {"app": "reader"}},
        "spec": {"serviceAccountName": "reader", "containers": [server_container(&[])]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    pods.create(&pp, &pod).await.unwrap();
    let pod = ready_pods(&client, ns, "reader", 1)
        .await
        .unwrap()
        .remove(0);
    eprintln!("pod create -> Ready in {:?}", start.elapsed());

    let (status, body) = get_from_pod(cluster, &client, &pod, "/configmap/x")
        .await
        .unwrap();
    assert_eq!(status, 200, "reading configmap x: {body}");
    let data: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(data["greeting"], "hello from x", "{body}");

    let (status, body) = get_from_pod(cluster, &client, &pod, "/secrets")
        .await
        .unwrap();
    assert_eq!(status, 403, "listing secrets must be forbidden: {body}");
    assert!(
        body.contains(&format!("system:serviceaccount:{ns}:reader")),
        "the refusal names the pod's own identity: {body}"
    );
}

#[tokio::test]
async fn an_image_the_node_cannot_run_waits_with_a_pull_error_naming_it() {
    let cluster = Cluster::shared().await.unwrap();
    let client = cluster.client().await.unwrap();
    let ns = cluster.namespace("node-image").await.unwrap();
    let ns = ns.name();
    let image = "registry.invalid/locus/not-mapped:0.0.1";
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unmapped"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let (reason, message) = wait::until(TIMEOUT, "a pull error on pod unmapped", || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("unmapped").await?;
            let waiting = pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|cs| cs.into_iter().next())
                .and_then(|c| c.state)
                .and_then(|s| s.waiting);
            Ok::<_, kube::Error>(waiting.and_then(|w| {
                let reason = w.reason.unwrap_or_default();
                matches!(reason.as_str(), "ErrImagePull" | "ImagePullBackOff")
                    .then(|| (reason, w.message.unwrap_or_default()))
            }))
        }
    })
    .await
    .unwrap();
    assert!(
        message.contains(image),
        "the {reason} message should name the image: {message:?}"
    );
    let phase = pods
        .get("unmapped")
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"));
}
