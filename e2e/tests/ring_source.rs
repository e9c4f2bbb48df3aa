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

/// The largest ring the operator writes (ADR 0003): 65 536 shards, 2048
/// slots, two tables, pod names of 74 bytes (`<63-byte service>-<slot>-<5>`),
/// UUIDs and the longest IPv6 addresses. It fits its `ConfigMap` on a real API
/// server and the SDK's source loads it.
#[tokio::test]
async fn the_largest_ring_the_operator_writes_is_stored_and_loaded() {
    use locus::ring::{MAX_DOCUMENT_BYTES, MAX_SHARDS, MAX_SLOTS};

    let cluster = Cluster::shared().await.unwrap();
    let ns = cluster.namespace("ring-large").await.unwrap();
    let client = cluster.client().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let service = format!("s{}", "x".repeat(62));
    assert_eq!(service.len(), 63, "the longest label value");

    let slots = MAX_SLOTS as u16;
    let slots: Vec<Slot> = (0..slots)
        .map(|index| Slot {
            index,
            pod: Pod {
                name: format!("{service}-{index:04}-bcdfg"),
                uid: format!("{index:08x}-1111-4222-8333-444455556666"),
                address: format!(
                    "[fd12:3456:789a:bcde:f012:3456:789a:{:04x}]:65535",
                    0x1000 + index
                )
                .parse()
                .unwrap(),
            },
            state: if usize::from(index) + 1 == MAX_SLOTS {
                SlotState::Joining
            } else {
                SlotState::Active
            },
            successor: None,
            predecessor: None,
        })
        .collect();
    let last = (MAX_SLOTS - 1) as u32;
    let current: Vec<u16> = (0..MAX_SHARDS).map(|s| (s % last) as u16).collect();
    let target: Vec<u16> = (0..MAX_SHARDS).map(|s| (s % (last + 1)) as u16).collect();
    let ring = Ring::new(RingParts {
        namespace: ns.name().to_owned(),
        service: service.clone(),
        version: 7,
        shards: ShardCount::new(MAX_SHARDS).unwrap(),
        vnodes: 128,
        slots,
        current: Assignment::new(current).unwrap(),
        transition: Transition::Warm {
            target: Assignment::new(target).unwrap(),
        },
    })
    .unwrap();
    let text = document(&ring);
    // Over the old limit (512 KiB), under today's.
    assert!(
        text.len() > 512 * 1024 && text.len() <= MAX_DOCUMENT_BYTES,
        "{} bytes",
        text.len()
    );

    api.create(
        &PostParams::default(),
        &config_map(&RingDocument::config_map_name(&service), &text),
    )
    .await
    .unwrap();
    let source = KubeRingSource::builder(client.clone(), ns.name(), &service).spawn();
    let loaded = source.watch().wait_for_version(7, WAIT).await.unwrap();
    assert_eq!(*loaded, ring);
}
