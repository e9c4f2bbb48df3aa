//! [`KubeProgressReporter`]: progress as annotations on the pod's own Pod.
//!
//! Each report is one server-side apply of the pod's annotations
//! ([`annotations`](crate::ring::annotations), written by
//! [`Progress::to_annotations`]), field manager `locus-pod`,
//! forced: this field manager owns exactly those annotations, so nothing
//! else on the pod is touched. The per-service Role grants `get` and `patch`
//! on the service's pods by name; `get` serves
//! [`KubeProgressReporter::pod_intent`], which reads the pod back on SIGTERM.
//!
//! The [load report](crate::load) is one more server-side apply, of the
//! [`SHARD_LOAD`](crate::ring::annotations::SHARD_LOAD) annotation alone,
//! with field manager [`LOAD_FIELD_MANAGER`]. Two managers, because an apply
//! removes the fields its manager owned and left out: one manager applying
//! the progress annotations without the load (or the reverse) would delete
//! the other's. Each manager owns its own annotations, and neither touches
//! the other's.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{Progress, ProgressError, ProgressReporter, ShardLoadReport};
use crate::intent::{KubePodIntent, ShutdownIntentSource};
use crate::own_pod::OwnPod;
use crate::ring::annotations::SHARD_LOAD;

/// Field manager of the pods' own applies of their progress annotations.
pub const FIELD_MANAGER: &str = "locus-pod";

/// Field manager of the pods' own applies of their load annotation.
pub const LOAD_FIELD_MANAGER: &str = "locus-pod-load";

/// Patches the pod's own annotations; see the `kube_reporter` module's docs.
#[derive(Clone, Debug)]
pub struct KubeProgressReporter {
    pod: OwnPod,
}

impl KubeProgressReporter {
    /// Reports onto pod `pod` in `namespace` through `client`.
    pub fn new(client: kube::Client, namespace: impl Into<String>, pod: impl Into<String>) -> Self {
        Self {
            pod: OwnPod::new(client, namespace.into(), pod.into()),
        }
    }

    /// Reports onto the pod named by `POD_NAME` in `POD_NAMESPACE`, with the
    /// in-cluster client (the pod's service account).
    pub async fn from_env() -> Result<Self, ProgressError> {
        let pod = OwnPod::from_env()
            .await
            .map_err(|reason| ProgressError::Setup { reason })?;
        Ok(Self { pod })
    }

    /// The same pod, read back to tell on SIGTERM whether it is being
    /// deleted ([`ShutdownIntent`](crate::server::session::ShutdownIntent)).
    pub fn pod_intent(&self) -> KubePodIntent {
        KubePodIntent::of(self.pod.clone())
    }

    /// The apply body for `progress`.
    pub fn apply_body(&self, progress: &Progress) -> serde_json::Value {
        annotations_body(&self.pod.namespace, &self.pod.name, progress)
    }

    /// The apply body for `load`.
    pub fn load_apply_body(&self, load: &ShardLoadReport) -> serde_json::Value {
        load_body(&self.pod.namespace, &self.pod.name, load)
    }

    async fn apply(&self, manager: &str, body: &serde_json::Value) -> Result<(), ProgressError> {
        let params = PatchParams::apply(manager).force();
        let pod = &self.pod;
        pod.api
            .patch(&pod.name, &params, &Patch::Apply(body))
            .await
            .map_err(|source| ProgressError::Patch {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                source,
            })?;
        Ok(())
    }
}

fn load_body(namespace: &str, pod: &str, load: &ShardLoadReport) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "annotations": {SHARD_LOAD: load.to_annotation()},
        },
    })
}

fn annotations_body(namespace: &str, pod: &str, progress: &Progress) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": namespace,
            "annotations": progress.to_annotations(),
        },
    })
}

impl ProgressReporter for KubeProgressReporter {
    fn report<'a>(&'a self, progress: &'a Progress) -> BoxFuture<'a, Result<(), ProgressError>> {
        Box::pin(async move {
            self.apply(FIELD_MANAGER, &self.apply_body(progress))
                .await?;
            tracing::debug!(pod = %self.pod.name, ?progress, "progress reported");
            Ok(())
        })
    }

    fn intent_source(&self) -> Option<Arc<dyn ShutdownIntentSource>> {
        Some(Arc::new(self.pod_intent()))
    }

    fn takes_load(&self) -> bool {
        true
    }

    fn report_load<'a>(
        &'a self,
        load: &'a ShardLoadReport,
    ) -> BoxFuture<'a, Result<(), ProgressError>> {
        Box::pin(async move {
            self.apply(LOAD_FIELD_MANAGER, &self.load_apply_body(load))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::ShardLoad;

    #[test]
    fn the_load_apply_body_names_only_the_load_annotation() {
        let load = ShardLoadReport {
            ring_version: 9,
            shards: 1024,
            window_seconds: 15,
            window_end_ms: 1_800_000_000_000,
            requests: 300,
            bytes: 4096,
            owned_shards: 341,
            hot: vec![ShardLoad {
                shard: 17,
                requests: 120,
                bytes: 1000,
            }],
        };
        let body = load_body("ns", "chat-0-abcde", &load);
        let annotations = body["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(annotations.len(), 1, "{body}");
        let value = annotations[SHARD_LOAD].as_str().unwrap();
        assert_eq!(ShardLoadReport::from_annotation(value).unwrap(), load);
        assert_ne!(LOAD_FIELD_MANAGER, FIELD_MANAGER);
    }
    use crate::progress::{ColdTakeovers, MovedReport, MovedSessions, ReportState, WarmTakeovers};

    #[test]
    fn the_apply_body_names_only_the_versions_set() {
        let body = annotations_body(
            "ns",
            "chat-0-abcde",
            &Progress {
                observed: Some(7),
                warmed: None,
                drained: Some(6),
                moved: Some(MovedReport::new([MovedSessions {
                    version: 7,
                    warm: WarmTakeovers {
                        transferred: 120,
                        ..WarmTakeovers::default()
                    },
                    cold: ColdTakeovers {
                        absent: 2,
                        ..ColdTakeovers::default()
                    },
                    state: ReportState::Final,
                    ..MovedSessions::default()
                }])),
            },
        );
        assert_eq!(
            body,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "chat-0-abcde",
                    "namespace": "ns",
                    "annotations": {
                        "locus.dev/observed-ring-version": "7",
                        "locus.dev/drained-ring-version": "6",
                        "locus.dev/moved-sessions": r#"{"7":{"warm":{"precopied":0,"transferred":120,"pushed":0,"promoted":0},"cold":{"absent":2,"rolledForward":0,"fencedLoad":0,"created":0},"served":{"warm":0,"cold":0},"state":"final"}}"#,
                    },
                },
            })
        );
    }
}
