//! The objects the operator owns for each `StatefulService`, built as pure functions of the
//! service (and, for pods and the ring, of the plan):
//!
//! | object | name | purpose |
//! |---|---|---|
//! | Pod | `<name>-<slot>-<suffix>` | one per slot, plus surge and replacement pods |
//! | `ConfigMap` | `<name>-ring` | the ring document (`ring.json`) and the operator's bookkeeping |
//! | Service (headless) | `<name>` | DNS for the pods; routers use the ring, not the Service |
//! | `ServiceAccount` | `<name>-pod` | the pods' identity |
//! | Role, `RoleBinding` | `<name>-pod` | read the ring `ConfigMap`, patch the service's pods |
//! | Secret | `<name>-handoff` | the key that authenticates handoffs between the pods |
//! | `PodDisruptionBudget` | `<name>` | voluntary evictions one pod at a time |
//!
//! Every object carries the service as its controller `ownerReference`, so deleting the
//! service deletes them all.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
    PodSpec, ResourceFieldSelector, Secret, SecretVolumeSource, Service, ServiceAccount,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use locus_contract::ring::{RingDocument, RingError};
use serde_json::{Value, json};

use crate::crd::StatefulService;
use crate::plan::{
    ANNOTATION_RING_META, ANNOTATION_SHAPE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_REVISION,
    LABEL_SERVICE, LABEL_SLOT, MANAGED_BY, PodPlan, PublishedRing, handoff_secret, pod_account,
    shape,
};

/// Where the handoff Secret is mounted in every container.
pub const HANDOFF_DIR: &str = "/var/run/locus/handoff";
/// Key of the handoff Secret (and file name under [`HANDOFF_DIR`]): 64 hex characters.
pub const HANDOFF_KEY: &str = "key";
/// Where the snapshot volume is mounted when `spec.snapshot` is set.
pub const SNAPSHOT_DIR: &str = "/var/run/locus/snapshot";
/// Volume name of the handoff Secret.
const HANDOFF_VOLUME: &str = "locus-handoff";
/// Volume name of the snapshot `emptyDir`.
const SNAPSHOT_VOLUME: &str = "locus-snapshot";

/// Environment variables the operator sets in every container (a template's own variables of
/// the same names are replaced).
pub mod env {
    /// The pod's name (`fieldRef: metadata.name`).
    pub const POD_NAME: &str = "POD_NAME";
    /// The pod's namespace (`fieldRef: metadata.namespace`).
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The pod's IP (`fieldRef: status.podIP`).
    pub const POD_IP: &str = "POD_IP";
    /// Name of the `StatefulService`.
    pub const SERVICE: &str = "LOCUS_SERVICE";
    /// The slot the pod serves.
    pub const SLOT: &str = "LOCUS_SLOT";
    /// Name of the ring `ConfigMap`.
    pub const RING_CONFIGMAP: &str = "LOCUS_RING_CONFIGMAP";
    /// Path of the handoff key file.
    pub const HANDOFF_SECRET_FILE: &str = "LOCUS_HANDOFF_SECRET_FILE";
    /// Number of the session port (`spec.port`).
    pub const PORT: &str = "LOCUS_PORT";
    /// Directory of the snapshot volume, when `spec.snapshot` is set.
    pub const SNAPSHOT_DIR: &str = "LOCUS_SNAPSHOT_DIR";
    /// The container's memory limit in bytes, on containers that declare one.
    pub const MEMORY_LIMIT: &str = "LOCUS_MEMORY_LIMIT";
}

/// Namespace and name of a service (from the API server, both are set).
fn identity(svc: &StatefulService) -> (String, String) {
    (svc.namespace().unwrap_or_default(), svc.name_any())
}

/// Labels every owned object carries.
pub fn common_labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), service.to_owned()),
        (LABEL_SERVICE.to_owned(), service.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ])
}

fn metadata(svc: &StatefulService, name: String) -> ObjectMeta {
    let (namespace, service) = identity(svc);
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: Some(common_labels(&service)),
        owner_references: svc.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The number of the container port named `spec.port`, if the template has one.
pub fn session_port(svc: &StatefulService) -> Option<i32> {
    svc.spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(svc.spec.port.as_str()))
        .map(|p| p.container_port)
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// `LOCUS_MEMORY_LIMIT` for a container that declares a memory limit: the limit in bytes,
/// resolved by the kubelet (downward API), so the SDK can fit its session store inside it.
/// None without a limit (the downward API would then give the node's allocatable memory).
fn memory_limit_env(container: &Container) -> Option<EnvVar> {
    container
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")?;
    Some(EnvVar {
        name: env::MEMORY_LIMIT.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(container.name.clone()),
                divisor: None,
                resource: "limits.memory".to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    })
}

fn value_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The pod `plan` asks for, built from `spec.template` with the operator's labels,
/// environment, volumes and account added.
pub fn pod(svc: &StatefulService, plan: &PodPlan) -> Pod {
    let (_, service) = identity(svc);
    let template = &svc.spec.template;
    let mut meta = metadata(svc, plan.name.clone());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.extend(common_labels(&service));
    labels.insert(LABEL_SLOT.to_owned(), plan.slot.to_string());
    labels.insert(LABEL_REVISION.to_owned(), plan.revision.clone());
    meta.labels = Some(labels);
    let mut annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.insert(ANNOTATION_SHAPE.to_owned(), shape(template));
    meta.annotations = Some(annotations);

    let mut spec: PodSpec = template.spec.clone().unwrap_or_default();
    spec.service_account_name = Some(pod_account(&service));
    spec.subdomain = Some(service.clone());
    let mut env = vec![
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        field_env(env::POD_IP, "status.podIP"),
        value_env(env::SERVICE, service.clone()),
        value_env(env::SLOT, plan.slot.to_string()),
        value_env(env::RING_CONFIGMAP, RingDocument::config_map_name(&service)),
        value_env(
            env::HANDOFF_SECRET_FILE,
            format!("{HANDOFF_DIR}/{HANDOFF_KEY}"),
        ),
    ];
    if let Some(port) = session_port(svc) {
        env.push(value_env(env::PORT, port.to_string()));
    }
    let mut mounts = vec![VolumeMount {
        name: HANDOFF_VOLUME.to_owned(),
        mount_path: HANDOFF_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: HANDOFF_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(handoff_secret(&service)),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(snapshot) = &svc.spec.snapshot {
        env.push(value_env(env::SNAPSHOT_DIR, SNAPSHOT_DIR));
        mounts.push(VolumeMount {
            name: SNAPSHOT_VOLUME.to_owned(),
            mount_path: SNAPSHOT_DIR.to_owned(),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: SNAPSHOT_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: Some(Quantity(snapshot.size_limit.clone())),
            }),
            ..Volume::default()
        });
    }
    for container in &mut spec.containers {
        let mut ours = env.clone();
        if let Some(limit) = memory_limit_env(container) {
            ours.push(limit);
        }
        let mut own = container.env.take().unwrap_or_default();
        own.retain(|e| !ours.iter().any(|ours| ours.name == e.name));
        own.extend(ours);
        container.env = Some(own);
        let mut own_mounts = container.volume_mounts.take().unwrap_or_default();
        own_mounts.retain(|m| !mounts.iter().any(|ours| ours.mount_path == m.mount_path));
        own_mounts.extend(mounts.iter().cloned());
        container.volume_mounts = Some(own_mounts);
    }
    let mut own_volumes = spec.volumes.take().unwrap_or_default();
    own_volumes.retain(|v| !volumes.iter().any(|ours| ours.name == v.name));
    own_volumes.extend(volumes);
    spec.volumes = Some(own_volumes);

    Pod {
        metadata: meta,
        spec: Some(spec),
        status: None,
    }
}

/// The strategic-merge patch of an in-place update: the images of `spec.template` (the only
/// container fields a running pod accepts changes to), the new revision label and shape.
pub fn in_place_patch(svc: &StatefulService, plan: &PodPlan) -> Value {
    let template = &svc.spec.template;
    let images = |containers: &[k8s_openapi::api::core::v1::Container]| -> Vec<Value> {
        containers
            .iter()
            .map(|c| json!({ "name": c.name, "image": c.image }))
            .collect()
    };
    let spec = template.spec.as_ref();
    let mut patch_spec = json!({
        "containers": spec.map(|s| images(&s.containers)).unwrap_or_default(),
    });
    if let Some(init) = spec.and_then(|s| s.init_containers.as_deref()) {
        patch_spec["initContainers"] = Value::Array(images(init));
    }
    json!({
        "metadata": {
            "labels": { LABEL_REVISION: plan.revision },
            "annotations": { ANNOTATION_SHAPE: shape(template) },
        },
        "spec": patch_spec,
    })
}

/// The ring `ConfigMap`: the document under `ring.json`, the bookkeeping as an annotation.
pub fn ring_config_map(
    svc: &StatefulService,
    published: &PublishedRing,
) -> Result<ConfigMap, RingError> {
    let (_, service) = identity(svc);
    let document = RingDocument::to_json(&published.ring)?;
    let mut meta = metadata(svc, RingDocument::config_map_name(&service));
    if let Some(bookkeeping) = &published.meta {
        let text = serde_json::to_string(bookkeeping).map_err(RingError::Json)?;
        meta.annotations = Some(BTreeMap::from([(ANNOTATION_RING_META.to_owned(), text)]));
    }
    Ok(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            RingDocument::CONFIG_MAP_KEY.to_owned(),
            String::from_utf8_lossy(&document).into_owned(),
        )])),
        ..ConfigMap::default()
    })
}

/// The headless Service `<name>`: DNS names for the pods (`<pod>.<name>.<namespace>.svc`).
pub fn headless_service(svc: &StatefulService) -> Service {
    let (_, service) = identity(svc);
    Service {
        metadata: metadata(svc, service.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(BTreeMap::from([(LABEL_SERVICE.to_owned(), service)])),
            ports: session_port(svc).map(|port| {
                vec![ServicePort {
                    name: Some(svc.spec.port.clone()),
                    port,
                    target_port: Some(IntOrString::String(svc.spec.port.clone())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                }]
            }),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The pods' `ServiceAccount`.
pub fn service_account(svc: &StatefulService) -> ServiceAccount {
    let (_, service) = identity(svc);
    ServiceAccount {
        metadata: metadata(svc, pod_account(&service)),
        ..ServiceAccount::default()
    }
}

/// The pods' Role, limited by `resourceNames`: read (get, list, watch) the ring
/// `ConfigMap`, and patch the service's pods — named one by one, since pod names are
/// generated. RBAC cannot say "only your own pod": every pod of the service may patch every
/// other pod of the same service (see `docs/operator.md`, RBAC). With no pod yet, the pods
/// rule is left out (an empty `resourceNames` would mean every pod).
pub fn pod_role(svc: &StatefulService, pod_names: &[String]) -> Role {
    let (_, service) = identity(svc);
    let mut names = pod_names.to_vec();
    names.sort();
    names.dedup();
    let mut rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".to_owned()]),
        resource_names: Some(vec![RingDocument::config_map_name(&service)]),
        verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
        non_resource_urls: None,
    }];
    if !names.is_empty() {
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".to_owned()]),
            resource_names: Some(names),
            verbs: vec!["get".to_owned(), "patch".to_owned()],
            non_resource_urls: None,
        });
    }
    Role {
        metadata: metadata(svc, pod_account(&service)),
        rules: Some(rules),
    }
}

/// Binds the pods' Role to their `ServiceAccount`.
pub fn pod_role_binding(svc: &StatefulService) -> RoleBinding {
    let (namespace, service) = identity(svc);
    RoleBinding {
        metadata: metadata(svc, pod_account(&service)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: pod_account(&service),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: pod_account(&service),
            namespace: Some(namespace),
            api_group: None,
        }]),
    }
}

/// The handoff Secret with `key` (created once, never rewritten).
pub fn handoff_secret_object(svc: &StatefulService, key: &str) -> Secret {
    let (_, service) = identity(svc);
    Secret {
        metadata: metadata(svc, handoff_secret(&service)),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            HANDOFF_KEY.to_owned(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// A new random handoff key: 32 bytes from the operating system, as 64 hex characters.
///
/// Read through `tokio::fs` (a blocking-pool thread): it runs inside a reconcile, on the
/// runtime's worker threads.
pub async fn new_handoff_key() -> std::io::Result<String> {
    use tokio::io::AsyncReadExt as _;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 32];
    tokio::fs::File::open("/dev/urandom")
        .await?
        .read_exact(&mut bytes)
        .await?;
    Ok(bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect())
}

/// The `PodDisruptionBudget` `<name>`: voluntary evictions (node drains) one pod at a time, so
/// each evicted slot can hand over before the next goes.
pub fn disruption_budget(svc: &StatefulService) -> PodDisruptionBudget {
    let (_, service) = identity(svc);
    PodDisruptionBudget {
        metadata: metadata(svc, service.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL_SERVICE.to_owned(), service)])),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// True if every field `desired` sets has the same value in `observed`: objects key by key,
/// lists element by element (same length). Fields the API server adds (defaults, status,
/// metadata) are ignored, so an unchanged object compares equal and is not written again.
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(key, value)| match o.get(key) {
            Some(found) => is_subset(value, found),
            None => value.is_null(),
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(a, b)| is_subset(a, b))
        }
        (Value::Number(d), Value::Number(o)) => d.as_f64() == o.as_f64(),
        (d, o) => d == o,
    }
}

/// True if `observed` already has everything `desired` sets.
pub fn up_to_date<K: serde::Serialize>(desired: &K, observed: &K) -> bool {
    match (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) {
        (Ok(d), Ok(o)) => is_subset(&d, &o),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::StatefulServiceSpec;

    fn service() -> StatefulService {
        let spec: StatefulServiceSpec = serde_json::from_value(json!({
            "replicas": 2,
            "port": "http",
            "snapshot": {"sizeLimit": "64Mi"},
            "template": {
                "metadata": {"labels": {"team": "chat"}},
                "spec": {"containers": [{
                    "name": "app", "image": "app:1",
                    "env": [{"name": "LOCUS_SLOT", "value": "user value"}, {"name": "MODE", "value": "x"}],
                    "ports": [{"name": "http", "containerPort": 8080}]
                }]}
            }
        }))
        .unwrap();
        let mut svc = StatefulService::new("chat", spec);
        svc.metadata.namespace = Some("shop".into());
        svc.metadata.uid = Some("uid-1".into());
        svc
    }

    fn plan() -> PodPlan {
        PodPlan {
            name: "chat-1-abcde".into(),
            slot: 1,
            revision: "rev".into(),
        }
    }

    #[test]
    fn pods_carry_labels_owner_env_and_volumes() {
        let svc = service();
        let pod = pod(&svc, &plan());
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "chat");
        assert_eq!(labels[LABEL_NAME], "chat");
        assert_eq!(labels[LABEL_SERVICE], "chat");
        assert_eq!(labels[LABEL_SLOT], "1");
        assert_eq!(labels[LABEL_REVISION], "rev");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("chat-pod"));
        let env = spec.containers[0].env.as_ref().unwrap();
        let value = |name: &str| env.iter().find(|e| e.name == name).cloned().unwrap();
        assert_eq!(
            value("LOCUS_SLOT").value.as_deref(),
            Some("1"),
            "the operator's value wins"
        );
        assert_eq!(env.iter().filter(|e| e.name == "LOCUS_SLOT").count(), 1);
        assert_eq!(value("MODE").value.as_deref(), Some("x"));
        assert_eq!(
            value("LOCUS_RING_CONFIGMAP").value.as_deref(),
            Some("chat-ring")
        );
        assert_eq!(value("LOCUS_PORT").value.as_deref(), Some("8080"));
        assert_eq!(
            value("LOCUS_HANDOFF_SECRET_FILE").value.as_deref(),
            Some("/var/run/locus/handoff/key")
        );
        assert_eq!(
            value("POD_IP")
                .value_from
                .unwrap()
                .field_ref
                .unwrap()
                .field_path,
            "status.podIP"
        );
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("chat-handoff")
        );
        assert_eq!(
            volumes[1].empty_dir.as_ref().unwrap().medium.as_deref(),
            Some("Memory")
        );
    }

    #[test]
    fn a_container_with_a_memory_limit_is_told_it_and_one_without_is_not() {
        let mut svc = service();
        let template = svc.spec.template.spec.as_mut().unwrap();
        let mut sidecar = template.containers[0].clone();
        sidecar.name = "sidecar".into();
        template.containers[0].resources = Some(
            serde_json::from_value(json!({
                "limits": {"memory": "128Mi", "cpu": "1"}
            }))
            .unwrap(),
        );
        template.containers.push(sidecar);
        let pod = pod(&svc, &plan());
        let containers = &pod.spec.as_ref().unwrap().containers;
        let limit = |c: &Container| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == "LOCUS_MEMORY_LIMIT")
                .cloned()
        };
        let app = limit(&containers[0]).unwrap();
        let field = app.value_from.unwrap().resource_field_ref.unwrap();
        assert_eq!(field.container_name.as_deref(), Some("app"));
        assert_eq!(field.resource, "limits.memory");
        assert!(limit(&containers[1]).is_none(), "no limit, no variable");
    }

    #[test]
    fn the_pod_role_names_the_ring_and_the_pods_and_nothing_else() {
        let svc = service();
        let role = pod_role(&svc, &["b".into(), "a".into(), "b".into()]);
        let rules = role.rules.unwrap();
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["chat-ring".to_owned()][..])
        );
        assert_eq!(
            rules[1].resource_names.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        let empty = pod_role(&svc, &[]);
        assert_eq!(
            empty.rules.unwrap().len(),
            1,
            "no pods: no rule that would match them all"
        );
    }

    #[test]
    fn in_place_patch_changes_only_images_and_revision() {
        let patch = in_place_patch(&service(), &plan());
        assert_eq!(
            patch["spec"]["containers"],
            json!([{"name": "app", "image": "app:1"}])
        );
        assert_eq!(patch["metadata"]["labels"][LABEL_REVISION], "rev");
    }

    #[test]
    fn subset_ignores_server_added_fields_but_not_changes() {
        let desired = json!({"a": 1, "list": [{"x": "y"}], "gone": null});
        let observed = json!({"a": 1.0, "list": [{"x": "y", "default": true}], "extra": 2});
        assert!(is_subset(&desired, &observed));
        assert!(!is_subset(&json!({"a": 2}), &observed));
        assert!(!is_subset(
            &json!({"list": [{"x": "y"}, {"x": "z"}]}),
            &observed
        ));
        assert!(!is_subset(&json!({"missing": "v"}), &observed));
    }

    #[tokio::test]
    async fn handoff_keys_are_random_hex() {
        let a = new_handoff_key().await.unwrap();
        let b = new_handoff_key().await.unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
