//! A ring source watching the ring `ConfigMap` through the API server.
//!
//! The source runs a kube-rs [`watcher`] on the single `ConfigMap`
//! `<service>-ring` of a namespace (field selector `metadata.name`) and offers
//! the document under key `ring.json` (in `data`, or `binaryData`) on every
//! add or update. The watcher relists and rewatches by itself; errors (API
//! server unreachable, watch expired, RBAC) are retried with the watcher's
//! default exponential backoff while the last good ring keeps serving. A
//! deleted `ConfigMap` leaves the last good ring in place, too: routing on a
//! slightly stale ring beats refusing every request.
//!
//! The pod needs `get`, `list` and `watch` on that `ConfigMap` (the per-service
//! Role the operator creates grants exactly that).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Rejection, RingPublisher, RingSource, RingWatch, SourceStatus};
use crate::metrics::Metrics;
use crate::ring::RingDocument;

/// A ring source fed by the ring `ConfigMap`. Dropping it stops the watch;
/// handles from [`RingSource::watch`] keep the last ring.
pub struct KubeRingSource {
    publisher: Arc<RingPublisher>,
    config_map: String,
    task: JoinHandle<()>,
}

impl fmt::Debug for KubeRingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeRingSource")
            .field("config_map", &self.config_map)
            .field("version", &self.publisher.watch().version())
            .finish_non_exhaustive()
    }
}

impl Drop for KubeRingSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options of a [`KubeRingSource`].
#[derive(Clone)]
pub struct KubeRingSourceBuilder {
    client: Client,
    namespace: String,
    service: String,
    metrics: Option<Metrics>,
}

impl fmt::Debug for KubeRingSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeRingSourceBuilder")
            .field("namespace", &self.namespace)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl KubeRingSourceBuilder {
    /// Counts loads and rejections into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Starts the watch in a background task; returns at once (the first
    /// ring arrives asynchronously: await it with
    /// [`RingWatch::wait_for_ring`]). Must be called within a tokio runtime.
    pub fn spawn(self) -> KubeRingSource {
        let name = RingDocument::config_map_name(&self.service);
        let config_map = format!("{}/{name}", self.namespace);
        let publisher = Arc::new(RingPublisher::new(
            format!("configmap {config_map}"),
            Some((self.namespace.clone(), self.service)),
            self.metrics,
        ));
        let api: Api<ConfigMap> = Api::namespaced(self.client, &self.namespace);
        let task = tokio::spawn(run(api, name, config_map.clone(), Arc::clone(&publisher)));
        KubeRingSource {
            publisher,
            config_map,
            task,
        }
    }
}

impl KubeRingSource {
    /// Options for a source reading the ring of `service` in `namespace`.
    pub fn builder(
        client: Client,
        namespace: impl Into<String>,
        service: impl Into<String>,
    ) -> KubeRingSourceBuilder {
        KubeRingSourceBuilder {
            client,
            namespace: namespace.into(),
            service: service.into(),
            metrics: None,
        }
    }

    /// Starts watching the ring of `service` in `namespace` with the default
    /// options.
    pub fn spawn(client: Client, namespace: impl Into<String>, service: impl Into<String>) -> Self {
        Self::builder(client, namespace, service).spawn()
    }

    /// `namespace/name` of the watched `ConfigMap`.
    pub fn config_map(&self) -> &str {
        &self.config_map
    }

    /// What the source has done so far.
    pub fn status(&self) -> watch::Receiver<SourceStatus> {
        self.publisher.status()
    }
}

impl RingSource for KubeRingSource {
    fn watch(&self) -> RingWatch {
        self.publisher.watch()
    }
}

async fn run(api: Api<ConfigMap>, name: String, config_map: String, publisher: Arc<RingPublisher>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if failing {
                    tracing::info!(%config_map, "ring watch recovered");
                    failing = false;
                }
                handle(&publisher, &config_map, event);
            }
            Err(error) => {
                // Logged at warn and counted once per outage, then retried
                // quietly with backoff.
                if failing {
                    tracing::debug!(%config_map, %error, "ring watch still failing");
                } else {
                    failing = true;
                    publisher.fetch_failed(&error);
                }
            }
        }
    }
}

/// Applies one watch event to the publisher.
fn handle(publisher: &RingPublisher, config_map: &str, event: Event<ConfigMap>) {
    match event {
        Event::Apply(object) | Event::InitApply(object) => match document_of(&object, config_map) {
            // Refusals are logged and counted by the publisher.
            Ok(document) => drop(publisher.offer_document(&document)),
            Err(rejection) => publisher.refused(&rejection),
        },
        Event::Delete(object) => {
            tracing::warn!(
                config_map,
                uid = ?object.uid(),
                held_version = ?publisher.watch().version(),
                "ring ConfigMap deleted; keeping the last good ring"
            );
        }
        Event::Init | Event::InitDone => {}
    }
}

/// The ring document in a ring `ConfigMap`.
fn document_of<'a>(object: &'a ConfigMap, config_map: &str) -> Result<Cow<'a, [u8]>, Rejection> {
    let key = RingDocument::CONFIG_MAP_KEY;
    if let Some(text) = object.data.as_ref().and_then(|data| data.get(key)) {
        return Ok(Cow::Borrowed(text.as_bytes()));
    }
    if let Some(bytes) = object.binary_data.as_ref().and_then(|data| data.get(key)) {
        return Ok(Cow::Borrowed(&bytes.0));
    }
    Err(Rejection::MissingKey {
        name: config_map.to_owned(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::source::publisher::tests::ring;

    fn config_map(data: Option<&[u8]>, binary: bool) -> ConfigMap {
        let mut object = ConfigMap {
            metadata: ObjectMeta {
                name: Some("chat-ring".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        if let Some(data) = data {
            if binary {
                object.binary_data = Some(BTreeMap::from([(
                    "ring.json".to_owned(),
                    ByteString(data.to_vec()),
                )]));
            } else {
                object.data = Some(BTreeMap::from([(
                    "ring.json".to_owned(),
                    String::from_utf8(data.to_vec()).unwrap(),
                )]));
            }
        }
        object
    }

    fn document(version: u64, pods: &[&str]) -> Vec<u8> {
        RingDocument::to_json(&ring("chat", version, pods)).unwrap()
    }

    #[test]
    fn events_drive_the_last_good_ring() {
        let metrics = Metrics::new();
        let publisher = RingPublisher::new(
            "test".into(),
            Some(("default".into(), "chat".into())),
            Some(metrics.clone()),
        );
        let watch = publisher.watch();
        let cm = "default/chat-ring";
        handle(&publisher, cm, Event::Init);
        handle(
            &publisher,
            cm,
            Event::InitApply(config_map(Some(&document(3, &["a", "b"])), false)),
        );
        handle(&publisher, cm, Event::InitDone);
        assert_eq!(watch.version(), Some(3));
        // Garbage: rejected, ring 3 stays.
        handle(
            &publisher,
            cm,
            Event::Apply(config_map(Some(b"{\"schema\": 1, \"version\":"), false)),
        );
        assert_eq!(watch.version(), Some(3));
        assert_eq!(metrics.rejected_total("malformed"), 1);
        // No key at all: rejected.
        handle(&publisher, cm, Event::Apply(config_map(None, false)));
        assert_eq!(metrics.rejected_total("missing_key"), 1);
        // Older: rejected. Same again after a relist: unchanged, not counted.
        handle(
            &publisher,
            cm,
            Event::Apply(config_map(Some(&document(2, &["x"])), false)),
        );
        assert_eq!(metrics.rejected_total("older"), 1);
        handle(
            &publisher,
            cm,
            Event::InitApply(config_map(Some(&document(3, &["a", "b"])), false)),
        );
        assert_eq!(publisher.status().borrow().unchanged, 1);
        // Deleted: ring 3 stays.
        handle(&publisher, cm, Event::Delete(config_map(None, false)));
        assert_eq!(watch.version(), Some(3));
        // Newer, in binaryData: taken.
        handle(
            &publisher,
            cm,
            Event::Apply(config_map(Some(&document(4, &["c"])), true)),
        );
        assert_eq!(watch.version(), Some(4));
        assert_eq!(watch.latest().unwrap().slots()[0].pod.name, "c");
        assert_eq!(publisher.status().borrow().rejected, 3);
    }
}
