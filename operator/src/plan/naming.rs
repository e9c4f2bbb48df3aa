//! Names, labels and hashes that tie pods to their service, slot and template.
//!
//! Everything here is a pure function of its inputs, so a planner that runs again after a
//! restart (or on a stale cache) derives the same names and hashes and its writes stay
//! idempotent.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use locus_contract::ring::hash_key;

/// Label: the name of the `StatefulService` (common Kubernetes label).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label: the component managing the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "locus-operator";
/// Label: the `StatefulService` a pod belongs to (the selector of its pods).
pub const LABEL_SERVICE: &str = "locus.dev/service";
/// Label: the slot a pod serves.
pub const LABEL_SLOT: &str = "locus.dev/slot";
/// Label: the revision (hash of the pod template) a pod was created from.
pub const LABEL_REVISION: &str = "locus.dev/revision";
/// Annotation: the hash of the pod template with every container image blanked. Two
/// templates with the same shape differ only in images, which an in-place update can apply.
pub const ANNOTATION_SHAPE: &str = "locus.dev/template-shape";
/// Annotation on the ring `ConfigMap`: the operator's bookkeeping of the ring (publish time,
/// transition record), JSON. See [`super::RingMeta`].
pub const ANNOTATION_RING_META: &str = "locus.dev/ring-meta";

/// Characters of generated name suffixes: those Kubernetes uses for `generateName`, without
/// vowels and look-alikes, so suffixes never spell words.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Encodes `value` as `len` characters of [`SUFFIX_ALPHABET`].
fn encode(mut value: u64, len: usize) -> String {
    let base = SUFFIX_ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = SUFFIX_ALPHABET[(value % base) as usize];
            value /= base;
            char::from(c)
        })
        .collect()
}

/// Hash of a template, stable across runs: its JSON (fields in declaration order, maps sorted)
/// hashed with the ring's xxh3-64.
fn template_hash(template: &PodTemplateSpec) -> String {
    // Serializing a k8s-openapi type into memory cannot fail: every field is a plain value.
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    encode(hash_key(&bytes), 10)
}

/// The revision of a pod template: a 10-character hash, used as the `locus.dev/revision` label.
pub fn revision(template: &PodTemplateSpec) -> String {
    template_hash(template)
}

/// The shape of a pod template: the hash of the template with every container image blanked.
/// Equal shapes with different revisions mean "only images changed".
pub fn shape(template: &PodTemplateSpec) -> String {
    let mut blank = template.clone();
    if let Some(spec) = blank.spec.as_mut() {
        for container in &mut spec.containers {
            container.image = None;
        }
        for container in spec.init_containers.iter_mut().flatten() {
            container.image = None;
        }
    }
    template_hash(&blank)
}

/// The name of the pod a slot gets: `<service>-<slot>-<suffix>`, the suffix five characters
/// derived from the service's UID, the slot, the revision and `attempt`. The planner picks the
/// smallest `attempt` whose name no known pod uses, so a replacement never reuses the name of
/// a pod that still exists, and planning twice before the new pod shows up yields the same
/// name (the create is idempotent).
pub fn pod_name(
    service: &str,
    service_uid: &str,
    slot: u16,
    revision: &str,
    attempt: u32,
) -> String {
    let seed = format!("{service_uid}/{slot}/{revision}/{attempt}");
    format!("{service}-{slot}-{}", encode(hash_key(seed.as_bytes()), 5))
}

/// The label selector of a service's pods, as `kubectl --selector` takes it.
pub fn selector(service: &str) -> String {
    format!("{LABEL_SERVICE}={service}")
}

/// Name of the per-service `ServiceAccount`, `Role` and `RoleBinding` of the pods.
pub fn pod_account(service: &str) -> String {
    format!("{service}-pod")
}

/// Name of the handoff `Secret`.
pub fn handoff_secret(service: &str) -> String {
    format!("{service}-handoff")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str, env: Option<&str>) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    env: env.map(|value| {
                        vec![k8s_openapi::api::core::v1::EnvVar {
                            name: "MODE".into(),
                            value: Some(value.into()),
                            value_from: None,
                        }]
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn revision_changes_with_the_image_but_shape_does_not() {
        let a = template("app:1", None);
        let b = template("app:2", None);
        assert_ne!(revision(&a), revision(&b));
        assert_eq!(shape(&a), shape(&b));
        assert_eq!(revision(&a), revision(&a.clone()));
        assert_eq!(revision(&a).len(), 10);
    }

    #[test]
    fn any_other_change_changes_the_shape() {
        let a = template("app:1", None);
        let c = template("app:1", Some("fast"));
        assert_ne!(shape(&a), shape(&c));
    }

    #[test]
    fn pod_names_are_deterministic_and_vary_with_every_input() {
        let name = pod_name("chat", "uid-1", 3, "rev", 0);
        assert!(name.starts_with("chat-3-"), "{name}");
        assert_eq!(name.len(), "chat-3-".len() + 5);
        assert!(name.bytes().skip(7).all(|c| SUFFIX_ALPHABET.contains(&c)));
        assert_eq!(name, pod_name("chat", "uid-1", 3, "rev", 0));
        let others = [
            pod_name("chat", "uid-2", 3, "rev", 0),
            pod_name("chat", "uid-1", 4, "rev", 0),
            pod_name("chat", "uid-1", 3, "rev2", 0),
            pod_name("chat", "uid-1", 3, "rev", 1),
        ];
        for other in others {
            assert_ne!(
                other[other.rfind('-').unwrap_or(0)..],
                name[name.rfind('-').unwrap_or(0)..]
            );
        }
    }
}
