//! Why a pod is stopping: [`ShutdownIntent`], and where
//! [`Member::shutdown`](crate::server::session::Member::shutdown) learns it
//! ([`ShutdownIntentSource`], whose docs tell the order).
//!
//! The public names are re-exported from
//! [`server::session`](crate::server::session). The module sits beside
//! [`progress`](crate::progress) rather than in `server::session`: the
//! progress reporter gives an intent source, and the session layer uses the
//! progress reporter, so neither imports the other.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;

use crate::own_pod::OwnPod;

/// Why this pod's process is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownIntent {
    /// The process starts again in the same pod (a container restart: an
    /// in-place image update, a failed liveness probe): the pod's volumes,
    /// the snapshot volume among them, are still there when it does. The
    /// snapshot then holds the unsaved sessions until the next process has
    /// written them back, so say it only when it is known.
    Restart,
    /// The pod itself is going away (eviction, node drain, deletion,
    /// replacement, scale-down): what is on its volumes goes with it, so its
    /// sessions are handed to their next owners.
    Retire,
}

impl ShutdownIntent {
    /// The intent a pod object shows: [`Retire`](Self::Retire) once
    /// `metadata.deletionTimestamp` is set (the API server sets it before the
    /// containers get SIGTERM), else [`Restart`](Self::Restart).
    pub fn of_pod(pod: &Pod) -> Self {
        if pod.metadata.deletion_timestamp.is_some() {
            Self::Retire
        } else {
            Self::Restart
        }
    }

    /// True if a snapshot written now will be read back by this pod.
    pub fn keeps_volumes(self) -> bool {
        self == Self::Restart
    }
}

/// Why the intent could not be found; [`Member::shutdown`](crate::server::session::Member::shutdown)
/// then writes the sessions back and the snapshot, and logs this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntentError {
    /// Nothing can tell: no source was given and the progress reporter does
    /// not read the pod (not on Kubernetes, or no client configured).
    #[error("no shutdown intent source: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The pod could not be read (API server down, not allowed, ...).
    #[error("cannot read pod {namespace}/{pod}: {source}")]
    Lookup {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The source did not answer in time.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Tells [`Member::shutdown`] why the process is stopping.
///
/// A snapshot written on SIGTERM (fast restart) only helps if the same pod
/// starts again: the snapshot volume is a memory-backed `emptyDir`, which
/// survives a container restart inside the pod (an in-place update, a failed
/// liveness probe) and dies with the pod. When the pod itself is going away
/// (eviction, node drain, `kubectl delete pod`, replacement, scale-down) its
/// sessions must go to their next owners instead.
///
/// Kubernetes says which one it is on the pod object: a pod being deleted
/// has `metadata.deletionTimestamp` set before its containers get SIGTERM,
/// a container restarted in place does not. [`KubePodIntent`] reads the
/// pod's own Pod and answers accordingly ([`ShutdownIntent::of_pod`]).
///
/// Where the answer comes from, first match wins:
///
/// 1. the source given to
///    [`MemberBuilder::shutdown_intent`](crate::server::session::MemberBuilder::shutdown_intent)
///    — a fixed [`ShutdownIntent`] for a process outside Kubernetes that knows
///    which it is, or any [`ShutdownIntentSource`];
/// 2. the progress reporter's
///    [`intent_source`](crate::progress::ProgressReporter::intent_source):
///    [`KubeProgressReporter`](crate::progress::KubeProgressReporter) writes to
///    the pod's own Pod and reads it back for this;
/// 3. none: the intent is unknown.
///
/// The lookup is bounded (`MemberBuilder::intent_timeout`, 2 s by default).
/// Only a positive [`ShutdownIntent::Restart`] lets shutdown skip the
/// write-back: the snapshot then carries the unsaved sessions and the next
/// process writes them back in the background
/// (`docs/adr/0004-in-place-restart-durability.md`). When the intent is
/// unknown — no source, the API server does not answer, the pod cannot be
/// read — shutdown writes the changed sessions back first (while still
/// serving), then the snapshot, and logs why at `warn`: a restart in place
/// keeps its sessions, a deleted pod keeps those the write-back reached.
/// [`Member::shutdown_as`] takes the intent from the caller instead.
///
/// [`Member::shutdown`]: crate::server::session::Member::shutdown
/// [`Member::shutdown_as`]: crate::server::session::Member::shutdown_as
///
/// A [`ShutdownIntent`] is itself a source that always gives that answer.
pub trait ShutdownIntentSource: Send + Sync + 'static {
    /// Finds out why the process is stopping. Called once, on shutdown, with
    /// a deadline around it; may be slow.
    fn shutdown_intent(&self) -> BoxFuture<'_, Result<ShutdownIntent, IntentError>>;
}

impl ShutdownIntentSource for ShutdownIntent {
    fn shutdown_intent(&self) -> BoxFuture<'_, Result<ShutdownIntent, IntentError>> {
        Box::pin(std::future::ready(Ok(*self)))
    }
}

impl<T: ShutdownIntentSource + ?Sized> ShutdownIntentSource for Arc<T> {
    fn shutdown_intent(&self) -> BoxFuture<'_, Result<ShutdownIntent, IntentError>> {
        (**self).shutdown_intent()
    }
}

/// Reads the pod's own Pod: [`ShutdownIntent::of_pod`], and
/// [`Retire`](ShutdownIntent::Retire) if the Pod no longer exists. The pods'
/// Role the operator makes allows `get` on the service's pods.
#[derive(Clone, Debug)]
pub struct KubePodIntent {
    pod: OwnPod,
}

impl KubePodIntent {
    /// Reads pod `pod` in `namespace` through `client`.
    pub fn new(client: kube::Client, namespace: impl Into<String>, pod: impl Into<String>) -> Self {
        Self::of(OwnPod::new(client, namespace.into(), pod.into()))
    }

    pub(crate) fn of(pod: OwnPod) -> Self {
        Self { pod }
    }

    /// Reads the pod named by `POD_NAME` in `POD_NAMESPACE`, with the
    /// in-cluster client (the pod's service account).
    pub async fn from_env() -> Result<Self, IntentError> {
        let pod = OwnPod::from_env()
            .await
            .map_err(|reason| IntentError::Unavailable { reason })?;
        Ok(Self::of(pod))
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        &self.pod.namespace
    }

    /// The pod's name.
    pub fn pod(&self) -> &str {
        &self.pod.name
    }
}

impl ShutdownIntentSource for KubePodIntent {
    fn shutdown_intent(&self) -> BoxFuture<'_, Result<ShutdownIntent, IntentError>> {
        Box::pin(async move {
            let pod = &self.pod;
            let found = pod
                .api
                .get_opt(&pod.name)
                .await
                .map_err(|source| IntentError::Lookup {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    source,
                })?;
            // A Pod already gone from the API server was deleted without a
            // grace period: it is going away all the more.
            let intent = found
                .as_ref()
                .map_or(ShutdownIntent::Retire, ShutdownIntent::of_pod);
            tracing::debug!(pod = %pod.name, exists = found.is_some(), ?intent, "pod read on shutdown");
            Ok(intent)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_pod_with_a_deletion_timestamp_is_retiring() {
        let deleting = pod(serde_json::json!({
            "metadata": {
                "name": "chat-0-abcde",
                "deletionTimestamp": "2030-01-01T00:00:30Z",
                "deletionGracePeriodSeconds": 30,
            },
        }));
        assert_eq!(ShutdownIntent::of_pod(&deleting), ShutdownIntent::Retire);
        assert!(!ShutdownIntent::of_pod(&deleting).keeps_volumes());
    }

    #[test]
    fn a_pod_without_one_restarts_in_place() {
        // An in-place update: the image changed, the container restarts.
        let restarting = pod(serde_json::json!({
            "metadata": {"name": "chat-0-abcde", "uid": "u-1"},
            "spec": {"containers": [{"name": "app", "image": "app:2"}]},
            "status": {"containerStatuses": [{
                "name": "app", "image": "app:1", "imageID": "", "ready": false,
                "restartCount": 0,
            }]},
        }));
        assert_eq!(ShutdownIntent::of_pod(&restarting), ShutdownIntent::Restart);
        assert!(ShutdownIntent::of_pod(&restarting).keeps_volumes());
    }

    #[tokio::test]
    async fn a_fixed_intent_is_its_own_source() {
        for intent in [ShutdownIntent::Restart, ShutdownIntent::Retire] {
            assert_eq!(intent.shutdown_intent().await.unwrap(), intent);
            let shared: Arc<dyn ShutdownIntentSource> = Arc::new(intent);
            assert_eq!(shared.shutdown_intent().await.unwrap(), intent);
        }
    }
}
