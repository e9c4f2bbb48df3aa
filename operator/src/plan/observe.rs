//! Turning API objects into the planner's input: a `Pod` into an [`ObservedPod`], the ring
//! `ConfigMap` into a [`PublishedRing`].

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use locus_contract::ring::{RingDocument, RingError, annotations};

use super::{
    ANNOTATION_RING_META, ANNOTATION_SHAPE, LABEL_REVISION, LABEL_SLOT, ObservedPod, Progress,
    PublishedRing, RingMeta,
};

/// Why the ring `ConfigMap` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The `ConfigMap` has no `ring.json`.
    #[error("the ConfigMap has no key {}", RingDocument::CONFIG_MAP_KEY)]
    MissingRingKey,
    /// The document is not a valid ring.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// True if `status` (what the node reports running) is `spec` (what the pod asks for). Real
/// nodes may report a normalized reference (`docker.io/library/app:1` for `app:1`, a `:latest`
/// tag added).
fn same_image(spec: &str, status: &str) -> bool {
    let matches = |spec: &str| status == spec || status.ends_with(&format!("/{spec}"));
    matches(spec) || (!spec.contains(':') && matches(&format!("{spec}:latest")))
}

/// The pod's progress: a version annotation that cannot be read is no report; unreadable
/// moved-sessions counts are kept as such (`Err` with the bounded reason): the status names the
/// pod.
fn progress(pod: &Pod) -> Progress {
    let Some(values) = pod.metadata.annotations.as_ref() else {
        return Progress::default();
    };
    let (read, unreadable) = locus_contract::progress::Progress::from_annotations(values);
    let moved = match unreadable
        .into_iter()
        .find(|u| u.name == annotations::MOVED_SESSIONS)
    {
        Some(unreadable) => Some(Err(unreadable.reason)),
        None => read.moved.map(Ok),
    };
    let load = values.get(annotations::SHARD_LOAD).map(|text| {
        locus_contract::progress::ShardLoadReport::from_annotation(text)
            .map_err(|e| e.to_string().chars().take(256).collect())
    });
    Progress {
        observed: read.observed,
        warmed: read.warmed,
        drained: read.drained,
        moved,
        load,
    }
}

/// The planner's view of `pod`, or `None` if the pod is not one of the service's: not
/// controlled by the object with UID `service_uid`, or without a valid slot or revision label.
/// `port` is the name of the session port (`spec.port`); the address uses its number.
pub fn observe_pod(pod: &Pod, service_uid: &str, port: &str) -> Option<ObservedPod> {
    let meta = &pod.metadata;
    let controlled = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == service_uid);
    if !controlled {
        return None;
    }
    let labels = meta.labels.as_ref()?;
    let slot: u16 = labels.get(LABEL_SLOT)?.parse().ok()?;
    let revision = labels.get(LABEL_REVISION)?.clone();
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let port_number = spec.and_then(|s| {
        s.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(port))
            .and_then(|p| u16::try_from(p.container_port).ok())
    });
    let ip: Option<IpAddr> = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let address = ip
        .zip(port_number)
        .map(|(ip, port)| SocketAddr::new(ip, port));
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let ready = ready_condition.is_some_and(|c| c.status == "True");
    let ready_changed_at = ready_condition
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    let terminal = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Failed" || p == "Succeeded");
    let images_current = match status.and_then(|s| s.container_statuses.as_ref()) {
        None => true,
        Some(statuses) if statuses.is_empty() => true,
        Some(statuses) => spec.is_none_or(|spec| {
            spec.containers.iter().all(|c| {
                let wanted = c.image.as_deref().unwrap_or_default();
                statuses
                    .iter()
                    .find(|s| s.name == c.name)
                    .is_some_and(|s| same_image(wanted, &s.image))
            })
        }),
    };
    Some(ObservedPod {
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        slot,
        revision,
        shape: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SHAPE))
            .cloned(),
        address,
        ready,
        ready_changed_at,
        created_at: meta
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
        deleting: meta.deletion_timestamp.is_some(),
        terminal,
        images_current,
        progress: progress(pod),
    })
}

/// The ring a `ConfigMap` holds, with the operator's bookkeeping (an unreadable bookkeeping
/// annotation counts as missing; an unreadable ring is an error: the operator will not
/// overwrite a ring it cannot read, since readers only accept newer versions).
pub fn published_ring(config_map: &ConfigMap) -> Result<PublishedRing, ObserveError> {
    let document = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(RingDocument::CONFIG_MAP_KEY))
        .ok_or(ObserveError::MissingRingKey)?;
    let ring = RingDocument::from_json(document.as_bytes())?;
    let meta = config_map
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_RING_META))
        .and_then(|m| serde_json::from_str::<RingMeta>(m).ok());
    Ok(PublishedRing { ring, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_match_their_normalized_forms() {
        assert!(same_image("app:1", "app:1"));
        assert!(same_image("app:1", "docker.io/library/app:1"));
        assert!(same_image("app", "docker.io/library/app:latest"));
        assert!(!same_image("app:2", "docker.io/library/app:1"));
        assert!(!same_image("app:1", "otherapp:1"));
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "metadata": {
                "name": "chat-1-abcde", "uid": "u1",
                "creationTimestamp": "2030-01-01T00:00:00Z",
                "labels": {"locus.dev/slot": "1", "locus.dev/revision": "r1"},
                "annotations": {"locus.dev/observed-ring-version": "7", "locus.dev/warmed-ring-version": "x"},
                "ownerReferences": [{"apiVersion": "locus.dev/v1alpha1", "kind": "StatefulService",
                    "name": "chat", "uid": "svc", "controller": true}]
            },
            "spec": {"containers": [{"name": "app", "image": "app:2",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.9",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2030-01-01T00:00:05Z"}],
                "containerStatuses": [{"name": "app", "image": "app:1", "imageID": "", "ready": true, "restartCount": 0}]}
        })
    }

    #[test]
    fn a_pod_of_the_service_is_read_with_address_readiness_and_progress() {
        let observed = observe_pod(&pod(base()), "svc", "http").unwrap();
        assert_eq!(observed.slot, 1);
        assert_eq!(observed.revision, "r1");
        assert_eq!(observed.address, Some("10.0.0.9:8080".parse().unwrap()));
        assert!(observed.ready && observed.healthy());
        assert_eq!(
            observed.ready_changed_at,
            Some("2030-01-01T00:00:05Z".parse().unwrap())
        );
        assert_eq!(observed.progress.observed, Some(7));
        assert_eq!(
            observed.progress.warmed, None,
            "an unparsable value is no report"
        );
        assert!(!observed.images_current, "status still runs app:1");
        assert_eq!(observed.progress.moved, None);

        let mut json = base();
        json["metadata"]["annotations"]["locus.dev/moved-sessions"] = "7:120:2".into();
        let moved = observe_pod(&pod(json), "svc", "http")
            .unwrap()
            .progress
            .moved;
        let report = moved.unwrap().unwrap();
        let m = report.get(7).unwrap();
        assert_eq!((m.warm.total(), m.cold.total()), (120, 2));
        let mut json = base();
        json["metadata"]["annotations"]["locus.dev/moved-sessions"] =
            r#"{"9":{"warm":{"pushed":3},"cold":{"fencedLoad":1},"state":"final"}}"#.into();
        let moved = observe_pod(&pod(json), "svc", "http")
            .unwrap()
            .progress
            .moved;
        let report = moved.unwrap().unwrap();
        assert_eq!(report.get(9).map(|m| m.cold.fenced_load), Some(1));
        let mut json = base();
        json["metadata"]["annotations"]["locus.dev/moved-sessions"] = "7:lots:2".into();
        let observed = observe_pod(&pod(json), "svc", "http").unwrap();
        let error = observed.progress.moved.unwrap().unwrap_err();
        assert!(
            error.contains("7:lots:2"),
            "unreadable counts say why: {error}"
        );
    }

    #[test]
    fn pods_of_other_owners_or_without_labels_are_not_the_services() {
        assert!(observe_pod(&pod(base()), "other", "http").is_none());
        let mut json = base();
        json["metadata"]["labels"]["locus.dev/slot"] = "x".into();
        assert!(observe_pod(&pod(json), "svc", "http").is_none());
    }

    #[test]
    fn an_unknown_port_name_leaves_the_address_unknown() {
        let observed = observe_pod(&pod(base()), "svc", "grpc").unwrap();
        assert_eq!(observed.address, None);
    }

    #[test]
    fn failed_and_deleted_pods_are_not_live() {
        let mut json = base();
        json["status"]["phase"] = "Failed".into();
        json["metadata"]["deletionTimestamp"] = "2030-01-01T00:01:00Z".into();
        let observed = observe_pod(&pod(json), "svc", "http").unwrap();
        assert!(observed.terminal && observed.deleting && !observed.live());
    }

    #[test]
    fn a_config_map_without_the_key_or_with_garbage_is_an_error() {
        let empty = ConfigMap::default();
        assert!(matches!(
            published_ring(&empty),
            Err(ObserveError::MissingRingKey)
        ));
        let garbage = ConfigMap {
            data: Some([("ring.json".to_owned(), "{".to_owned())].into()),
            ..ConfigMap::default()
        };
        assert!(matches!(
            published_ring(&garbage),
            Err(ObserveError::Ring(_))
        ));
    }
}
