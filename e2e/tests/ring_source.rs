//! `KubeRingSource` against a real API server: the ring `ConfigMap` is
//! loaded, garbage and stale updates are refused while the last good ring
//! stays, newer rings are taken, other `ConfigMap`s are not watched, and a
//! deleted and re-created `ConfigMap` is followed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use locus::ring::{
    Assignment, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState, Transition,
};
use locus::source::{RingSource, SourceStatus};
use locus::{KubeRingSource, Metrics};
use locus_e2e::cluster::Cluster;
use serde_json::json;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);

fn ring(namespace: &str, service: &str, version: u64, pods: &[&str]) -> Ring {
    let slots = pods
        .iter()
        .enumerate()
        .map(|(i, name)| Slot {
            index: i as u16,
            pod: Pod {
                name: (*name).to_owned(),
                uid: format!("uid-{name}"),
                address: format!("10.244.0.{}:8080", i + 2).parse().unwrap(),
            },
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        })
        .collect();
    let n = pods.len() as u16;
    Ring::new(RingParts {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        version,
        shards: ShardCount::new(64).unwrap(),
        vnodes: 16,
        slots,
        current: Assignment::new((0..64).map(|s| s % n).collect()).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

fn config_map(name: &str, document: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"ring.json": document},
    }))
    .unwrap()
}

fn document(ring: &Ring) -> String {
    String::from_utf8(RingDocument::to_json(ring).unwrap()).unwrap()
}

async fn set(api: &Api<ConfigMap>, name: &str, document: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ring.json": document}})),
    )
    .await
    .unwrap();
}

async fn await_status(
    mut status: watch::Receiver<SourceStatus>,
    what: &str,
    condition: impl Fn(&SourceStatus) -> bool,
) -> SourceStatus {
    let seen = tokio::time::timeout(WAIT, status.wait_for(condition))
        .await
        .map(|seen| seen.unwrap().clone());
    seen.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *status.borrow()))
}

#[tokio::test]
async fn the_ring_config_map_is_followed_and_bad_updates_keep_the_last_good_ring() {
    let cluster = Cluster::shared().await.unwrap();
    let ns = cluster.namespace("ring").await.unwrap();
    let client = cluster.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let ring = |version, pods: &[&str]| ring(ns.name(), "chat", version, pods);

    // Present before the source starts: loaded from the initial list.
    let v1 = ring(1, &["chat-0-a", "chat-1-b"]);
    api.create(
        &PostParams::default(),
        &config_map("chat-ring", &document(&v1)),
    )
    .await
    .unwrap();
    let metrics = Metrics::new();
    let source = KubeRingSource::builder(client.clone(), ns.name(), "chat")
        .metrics(metrics.clone())
        .spawn();
    let watch = source.watch();
    assert_eq!(*watch.wait_for_version(1, WAIT).await.unwrap(), v1);

    // Garbage: refused, ring 1 stays.
    set(&api, "chat-ring", "{\"schema\": 1, \"version\": 2").await;
    await_status(source.status(), "a rejection", |s| s.rejected >= 1).await;
    assert_eq!(metrics.rejected_total("malformed"), 1);
    assert_eq!(watch.version(), Some(1));

    // A ring of another service in our ConfigMap: refused.
    set(&api, "chat-ring", &document(&other_service_ring(ns.name()))).await;
    await_status(source.status(), "a second rejection", |s| s.rejected >= 2).await;
    assert_eq!(metrics.rejected_total("service"), 1);

    // Version 1 again with other content: a conflict, refused.
    set(&api, "chat-ring", &document(&ring(1, &["chat-0-z"]))).await;
    await_status(source.status(), "a third rejection", |s| s.rejected >= 3).await;
    assert_eq!(metrics.rejected_total("conflict"), 1);
    assert_eq!(*watch.latest().unwrap(), v1);

    // Newer: taken.
    let v2 = ring(2, &["chat-0-a", "chat-1-b", "chat-2-c"]);
    set(&api, "chat-ring", &document(&v2)).await;
    assert_eq!(*watch.wait_for_version(2, WAIT).await.unwrap(), v2);

    // Another ConfigMap in the namespace is not watched: its (much newer)
    // ring never reaches the source, while the next update of ours does.
    api.create(
        &PostParams::default(),
        &config_map("other-ring", &document(&ring(99, &["x"]))),
    )
    .await
    .unwrap();
    let v3 = ring(3, &["chat-0-a"]);
    set(&api, "chat-ring", &document(&v3)).await;
    assert_eq!(*watch.wait_for_version(3, WAIT).await.unwrap(), v3);
    assert_eq!(watch.version(), Some(3));
    assert_eq!(source.status().borrow().rejected, 3);

    // Deleted: the last good ring stays; re-created newer: followed.
    api.delete("chat-ring", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(watch.version(), Some(3));
    let v4 = ring(4, &["chat-0-a", "chat-1-d"]);
    api.create(
        &PostParams::default(),
        &config_map("chat-ring", &document(&v4)),
    )
    .await
    .unwrap();
    assert_eq!(*watch.wait_for_version(4, WAIT).await.unwrap(), v4);
    let status = source.status().borrow().clone();
    assert_eq!((status.accepted, status.rejected), (4, 3), "{status:?}");
    assert_eq!(metrics.ring_version(), 4);
}

/// A valid ring for service `other`, not `chat`.
fn other_service_ring(namespace: &str) -> Ring {
    ring(namespace, "other", 5, &["other-0-a"])
}
