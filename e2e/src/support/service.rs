//! A `StatefulService` read back from the API server: the kind for untyped access, whether
//! its status is settled, its published ring, its live pods, and whether they serve the ring.
//! The demo, the fault-injection suite, the operator's tests and the restart report all decide
//! "converged" with these.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ApiResource, GroupVersionKind, ListParams};
use locus::ring::{Ring, RingDocument};
use serde_json::Value;

/// The `StatefulService` kind, for dynamic (untyped) API access.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("locus.dev", "v1alpha1", "StatefulService"),
        "statefulservices",
    )
}

/// True if the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// True if a `StatefulService` status (as JSON) is settled: phase `Stable`, not
/// `Progressing`, and observed at `generation`.
pub fn is_settled(status: &Value, generation: Option<i64>) -> bool {
    let progressing = status["conditions"].as_array().is_some_and(|conditions| {
        conditions
            .iter()
            .any(|c| c["type"] == "Progressing" && c["status"] == "True")
    });
    !progressing
        && status["phase"] == "Stable"
        && status["observedGeneration"].as_i64() == generation
}

/// True if every slot of `ring` is served by one of `pods`: the same name and UID, Ready,
/// at the slot's address.
pub fn serves(ring: &Ring, pods: &[Pod]) -> bool {
    ring.slots().iter().all(|slot| {
        pods.iter().any(|p| {
            p.metadata.name.as_deref() == Some(slot.pod.name.as_str())
                && p.metadata.uid.as_deref() == Some(slot.pod.uid.as_str())
                && is_ready(p)
                && p.status.as_ref().and_then(|s| s.pod_ip.clone())
                    == Some(slot.pod.address.ip().to_string())
        })
    })
}

/// The ring published for `service` in the `ConfigMap`s of `maps`: `None` while there is no
/// ring `ConfigMap` or its document does not parse.
pub async fn read_ring(maps: &Api<ConfigMap>, service: &str) -> Result<Option<Ring>, kube::Error> {
    let Some(map) = maps
        .get_opt(&RingDocument::config_map_name(service))
        .await?
    else {
        return Ok(None);
    };
    Ok(map
        .data
        .as_ref()
        .and_then(|d| d.get(RingDocument::CONFIG_MAP_KEY))
        .and_then(|text| RingDocument::from_json(text.as_bytes()).ok()))
}

/// Shards whose owner pod differs between `before` and `after`.
pub fn shards_moved(before: &Ring, after: &Ring) -> u32 {
    if before.shards() != after.shards() {
        return 0;
    }
    (0..before.shards().get())
        .filter(|&shard| {
            let a = before.owner_of_shard(shard).map(|s| &s.pod.name);
            let b = after.owner_of_shard(shard).map(|s| &s.pod.name);
            a != b
        })
        .count()
        .try_into()
        .unwrap_or(u32::MAX)
}

/// The pods of `service` (label `locus.dev/service`) that are not being deleted.
pub async fn live_pods(pods: &Api<Pod>, service: &str) -> Result<Vec<Pod>, kube::Error> {
    Ok(pods
        .list(&ListParams::default().labels(&format!("locus.dev/service={service}")))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}
