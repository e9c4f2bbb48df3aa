//! What reconciles read from the watch caches (kube-runtime reflector stores fed by the very
//! watches that trigger them), and the checks that say when a cached view may be planned from
//! and when it must be read fresh instead. See the [`controller`](crate::controller) docs for
//! the safety argument.
//!
//! - [`PodWrites`]: the pod creations and deletions this process made that a cached pod list
//!   must already show (else the pods are listed fresh once).
//! - [`ring_is_behind`]: whether a cached ring is older than the ring this process last wrote
//!   or saw (else the ring `ConfigMap` is read fresh once).
//! - [`Inputs`]: a fingerprint of everything a plan reads, so that a service whose inputs have
//!   not changed since an idle plan is not planned again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::crd::StatefulService;
use crate::plan::LABEL_SERVICE;

/// The caches of one controller run: every pod and ring `ConfigMap` carrying the
/// `locus.dev/service` label, in the watched namespace(s).
#[derive(Clone)]
pub struct Caches {
    /// The pods.
    pub pods: Store<Pod>,
    /// The `ConfigMap`s (the rings).
    pub config_maps: Store<ConfigMap>,
}

impl Caches {
    /// The cached pods of service `name` in `namespace`.
    pub fn pods_of(&self, namespace: &str, name: &str) -> Vec<Arc<Pod>> {
        self.pods.state_filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(namespace)
                && pod.labels().get(LABEL_SERVICE).map(String::as_str) == Some(name)
        })
    }

    /// The cached `ConfigMap` `name` in `namespace`.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }
}

/// Pod writes this process made for one service that a pod list must show before a plan is
/// made from it: the pods it created (by name) and deleted (by UID).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodWrites {
    /// Names of pods created (applied) since the last list that showed them.
    pub created: Vec<String>,
    /// UIDs of pods deleted since the last list that showed them gone or terminating.
    pub deleted: Vec<String>,
}

impl PodWrites {
    /// True when nothing is expected.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.deleted.is_empty()
    }

    /// Adds the writes of `other`.
    pub fn extend(&mut self, other: PodWrites) {
        self.created.extend(other.created);
        self.deleted.extend(other.deleted);
    }

    /// True when `pods` shows every write: each created pod exists (whatever became of it
    /// since), and each deleted pod is gone or terminating.
    pub fn shown_by(&self, pods: &[Arc<Pod>]) -> bool {
        let created = self.created.iter().all(|name| {
            pods.iter()
                .any(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        });
        let deleted = self.deleted.iter().all(|uid| {
            pods.iter().all(|p| {
                p.metadata.uid.as_deref() != Some(uid.as_str())
                    || p.metadata.deletion_timestamp.is_some()
            })
        });
        created && deleted
    }
}

/// True when the cached ring (version `cached`, `None`: no ring `ConfigMap` cached) is older
/// than the highest ring version this process wrote or saw (`remembered`), or missing while
/// one was remembered: the cache has not caught up yet.
pub fn ring_is_behind(cached: Option<u64>, remembered: Option<u64>) -> bool {
    match (cached, remembered) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(cached), Some(remembered)) => cached < remembered,
    }
}

/// A fingerprint of everything a plan of one service reads: the service's `resourceVersion`
/// (its spec, generation and status), each pod's UID and `resourceVersion`, and the ring
/// `ConfigMap`'s `resourceVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs(u64);

impl Inputs {
    /// The fingerprint of `svc`, `pods` and `ring`.
    pub fn of(svc: &StatefulService, pods: &[Arc<Pod>], ring: Option<&ConfigMap>) -> Self {
        let mut versions: Vec<(Option<&str>, Option<&str>)> = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.uid.as_deref(),
                    p.metadata.resource_version.as_deref(),
                )
            })
            .collect();
        versions.sort_unstable();
        let mut hasher = DefaultHasher::new();
        svc.metadata.uid.hash(&mut hasher);
        svc.metadata.resource_version.hash(&mut hasher);
        versions.hash(&mut hasher);
        ring.and_then(|m| m.metadata.resource_version.as_deref())
            .hash(&mut hasher);
        Self(hasher.finish())
    }
}

/// The last plan of a service that was idle with no deadline pending: its inputs and when.
#[derive(Clone, Copy, Debug)]
pub struct Settled {
    /// What the plan read.
    pub inputs: Inputs,
    /// When it was made.
    pub at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, uid: &str, terminating: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(uid.into()),
                deletion_timestamp: terminating.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }

    #[test]
    fn a_pod_list_must_show_this_process_s_creations_and_deletions() {
        let writes = PodWrites {
            created: vec!["chat-2-new".into()],
            deleted: vec!["uid-old".into()],
        };
        // The cache has not seen the creation yet.
        assert!(!writes.shown_by(&[pod("chat-0-a", "uid-a", false)]));
        // Nor the deletion.
        assert!(!writes.shown_by(&[
            pod("chat-2-new", "uid-new", false),
            pod("chat-1-old", "uid-old", false)
        ]));
        // Both: the deleted pod terminating, or gone.
        assert!(writes.shown_by(&[
            pod("chat-2-new", "uid-new", false),
            pod("chat-1-old", "uid-old", true)
        ]));
        assert!(writes.shown_by(&[pod("chat-2-new", "uid-new", false)]));
        assert!(PodWrites::default().shown_by(&[]));
    }

    #[test]
    fn a_cached_ring_older_than_the_remembered_one_is_behind() {
        assert!(!ring_is_behind(None, None));
        assert!(!ring_is_behind(Some(3), None));
        assert!(ring_is_behind(None, Some(3)));
        assert!(ring_is_behind(Some(2), Some(3)));
        assert!(!ring_is_behind(Some(3), Some(3)));
        assert!(!ring_is_behind(Some(4), Some(3)));
    }

    #[test]
    fn inputs_change_with_any_resource_version_and_not_with_pod_order() {
        let svc = |rv: &str| {
            let spec = serde_json::from_value(serde_json::json!({
                "replicas": 1,
                "port": "http",
                "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}}
            }))
            .unwrap();
            let mut s = StatefulService::new("chat", spec);
            s.metadata.uid = Some("uid-1".into());
            s.metadata.resource_version = Some(rv.into());
            s
        };
        let with_rv = |p: &Arc<Pod>, rv: &str| {
            let mut p = (**p).clone();
            p.metadata.resource_version = Some(rv.into());
            Arc::new(p)
        };
        let (a, b) = (
            with_rv(&pod("a", "ua", false), "1"),
            with_rv(&pod("b", "ub", false), "2"),
        );
        let ring = ConfigMap {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let base = Inputs::of(&svc("5"), &[a.clone(), b.clone()], Some(&ring));
        assert_eq!(
            base,
            Inputs::of(&svc("5"), &[b.clone(), a.clone()], Some(&ring))
        );
        assert_ne!(
            base,
            Inputs::of(&svc("6"), &[a.clone(), b.clone()], Some(&ring))
        );
        assert_ne!(
            base,
            Inputs::of(&svc("5"), &[a.clone(), with_rv(&b, "3")], Some(&ring))
        );
        assert_ne!(
            base,
            Inputs::of(&svc("5"), std::slice::from_ref(&a), Some(&ring))
        );
        assert_ne!(base, Inputs::of(&svc("5"), &[a, b], None));
    }
}
