//! The snapshot's tests: round trips of both formats, refusals (corrupt,
//! truncated, foreign), and the store's bounds and fields across a restore.

use super::*;
use crate::ring::{Assignment, Pod, RingParts, ShardCount, Slot, SlotState, Transition};
use crate::store::{JsonCodec, Limits, Persistence, SessionStore, Stamp, Stored, Versioned};

fn ring(service: &str, version: u64, table: Vec<u16>) -> Ring {
    let slot = |index: u16| Slot {
        index,
        pod: Pod {
            name: format!("svc-{index}-x"),
            uid: format!("uid-{index}"),
            address: format!("10.0.0.{}:80", index + 1).parse().unwrap(),
        },
        state: SlotState::Active,
        successor: None,
        predecessor: None,
    };
    Ring::new(RingParts {
        namespace: "ns".into(),
        service: service.into(),
        version,
        shards: ShardCount::new(table.len() as u32).unwrap(),
        vnodes: 8,
        slots: vec![slot(0), slot(1)],
        current: Assignment::new(table).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

fn store() -> SessionStore<String> {
    SessionStore::builder(JsonCodec, String::len)
        .build()
        .unwrap()
}

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("locus-snap-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A store with 50 sessions (versions 1..=3, some clean), snapshotted
/// by pod `svc-0-x` of slot 0 under a ring where slot 0 owns everything.
async fn written(name: &str) -> (PathBuf, Ring, SessionStore<String>) {
    let dir = dir(name);
    let ring = ring("svc", 4, vec![0, 0]);
    let store = store();
    for i in 0..50 {
        let key = format!("k{i}");
        store
            .install(
                key.as_bytes(),
                Versioned::new(i % 3 + 1, format!("value {i}")),
            )
            .await
            .unwrap();
    }
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    let done = write(&store, &dir, &header).await.unwrap();
    assert_eq!((done.records, done.skipped), (50, 0));
    assert_eq!(done.bytes, std::fs::metadata(path_in(&dir)).unwrap().len());
    (dir, ring, store)
}

#[tokio::test]
async fn a_snapshot_restores_every_session_with_its_version_once() {
    let (dir, ring, original) = written("round").await;
    let restored = store();
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.records, 50);
    assert_eq!(report.restore.inserted, 50);
    assert_eq!(report.header.slot, 0);
    for i in 0..50u64 {
        let key = format!("k{i}");
        let got = restored.get(key.as_bytes()).await.unwrap();
        assert_eq!(got, original.get(key.as_bytes()).await.unwrap());
        assert_eq!(got.version, i % 3 + 1);
    }
    assert!(!path_in(&dir).exists(), "a snapshot is restored only once");
    assert!(
        restore(Arc::new(store()), &dir, &ring, "svc-0-x")
            .await
            .unwrap()
            .is_none()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn refused(
    name: &str,
    damage: impl FnOnce(&Path),
    pod: &str,
    ring: Option<Ring>,
) -> SnapshotError {
    let (dir, own_ring, _) = written(name).await;
    damage(&path_in(&dir));
    let target = store();
    let ring = ring.unwrap_or(own_ring);
    let error = restore(Arc::new(target.clone()), &dir, &ring, pod)
        .await
        .unwrap_err();
    assert_eq!(
        target.stats().sessions,
        0,
        "nothing installed from a refused snapshot"
    );
    assert!(!path_in(&dir).exists(), "a refused snapshot is removed");
    std::fs::remove_dir_all(&dir).unwrap();
    error
}

#[tokio::test]
async fn a_restore_and_a_write_are_recorded_in_the_process_metrics() {
    let process = SnapshotMetrics::process();
    let (written_before, restored_before) = (process.written_total(), process.restored_total());
    let (dir, ring, _) = written("metrics").await;
    assert!(process.written_total() > written_before);
    let report = restore(Arc::new(store()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    // Installed, never written back: every record is dirty.
    assert_eq!((report.records, report.dirty), (50, 50));
    assert!(process.restored_total() > restored_before);
    // Every Metrics registry renders them: the sample's /metrics page has them.
    let page = crate::Metrics::new().encode();
    for family in [
        "locus_snapshot_restores_total{outcome=\"restored\"}",
        "locus_snapshot_restore_records ",
        "locus_snapshot_restore_seconds ",
        "locus_snapshot_write_seconds ",
    ] {
        assert!(page.contains(family), "missing `{family}` in\n{page}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_corrupt_snapshot_is_detected_and_ignored() {
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(path, bytes).unwrap();
    };
    let error = refused("corrupt", flip, "svc-0-x", None).await;
    assert!(matches!(error, SnapshotError::Corrupt { .. }), "{error}");
    let magic = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[0] = b'X';
        std::fs::write(path, bytes).unwrap();
    };
    let error = refused("magic", magic, "svc-0-x", None).await;
    assert!(error.to_string().contains("bad magic"), "{error}");
}

#[tokio::test]
async fn a_truncated_snapshot_is_detected_and_ignored() {
    for cut in [1, 20, 33, 500] {
        let truncate = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            std::fs::write(path, &bytes[..bytes.len() - cut]).unwrap();
        };
        let error = refused(&format!("cut{cut}"), truncate, "svc-0-x", None).await;
        assert!(
            matches!(error, SnapshotError::Corrupt { .. }),
            "cut {cut}: {error}"
        );
    }
    let header_only = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        std::fs::write(path, &bytes[..60]).unwrap();
    };
    let error = refused("header", header_only, "svc-0-x", None).await;
    assert!(matches!(error, SnapshotError::Corrupt { .. }), "{error}");
}

#[tokio::test]
async fn a_foreign_snapshot_is_detected_and_ignored() {
    let keep = |_: &Path| {};
    let other_service = refused(
        "service",
        keep,
        "svc-0-x",
        Some(ring("other", 4, vec![0, 0])),
    )
    .await;
    assert!(
        matches!(other_service, SnapshotError::Foreign { .. }),
        "{other_service}"
    );
    let other_slot = refused("slot", keep, "svc-1-x", None).await;
    assert!(other_slot.to_string().contains("slot 0"), "{other_slot}");
    let older_ring = refused("newer", keep, "svc-0-x", Some(ring("svc", 3, vec![0, 0]))).await;
    assert!(older_ring.to_string().contains("newer"), "{older_ring}");
}

#[tokio::test]
async fn records_of_shards_the_slot_lost_are_skipped() {
    let (dir, _, _) = written("moved").await;
    // Slot 0 now owns only shard 0 of 2.
    let ring = ring("svc", 5, vec![0, 1]);
    let target = store();
    let report = restore(Arc::new(target.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.records, 50);
    assert!(report.not_owned > 0 && report.restore.inserted > 0);
    assert_eq!(report.not_owned + report.restore.inserted as u64, 50);
    for key in target.resident_keys() {
        assert_eq!(ring.owner(&key).index, 0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_discarded_snapshot_is_gone_and_never_restored() {
    let (dir, ring, _) = written("discard").await;
    std::fs::write(dir.join(format!("{SNAPSHOT_FILE}.tmp")), b"partial").unwrap();
    assert!(discard(&dir).unwrap());
    assert!(!path_in(&dir).exists());
    assert!(!dir.join(format!("{SNAPSHOT_FILE}.tmp")).exists());
    assert!(!discard(&dir).unwrap(), "nothing left to discard");
    let restored = restore(Arc::new(store()), &dir, &ring, "svc-0-x")
        .await
        .unwrap();
    assert!(restored.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A database's rows.
type Rows = std::collections::HashMap<Vec<u8>, (Stamp, String)>;

/// Sessions kept in memory, standing for a database.
#[derive(Clone, Default)]
struct Memory(Arc<std::sync::Mutex<Rows>>);

impl Persistence<String> for Memory {
    type Error = std::convert::Infallible;

    async fn load(&self, key: &[u8]) -> Result<Option<Stored<String>>, Self::Error> {
        let held = self.0.lock().unwrap();
        Ok(held
            .get(key)
            .map(|(stamp, value)| Stored::new(*stamp, value.clone())))
    }

    async fn store(&self, key: &[u8], stamp: Stamp, value: &String) -> Result<(), Self::Error> {
        let mut held = self.0.lock().unwrap();
        if held.get(key).is_none_or(|(old, _)| *old <= stamp) {
            held.insert(key.to_vec(), (stamp, value.clone()));
        }
        Ok(())
    }
}

/// `sessions` sessions of about `size` bytes (epoch 7, versions 1..=3)
/// in a store over `db`; those with an even index are written back
/// (clean), the others are not (dirty).
async fn filled(db: &Memory, sessions: usize, size: usize) -> SessionStore<String, Memory> {
    let store = SessionStore::builder(JsonCodec, String::len)
        .persistence(db.clone())
        .build()
        .unwrap();
    for odd in [false, true] {
        for i in (usize::from(odd)..sessions).step_by(2) {
            let key = format!("k{i}");
            let value = format!("{i}:{}", "x".repeat(size));
            store
                .install(
                    key.as_bytes(),
                    Versioned::new(i as u64 % 3 + 1, value).with_epoch(7),
                )
                .await
                .unwrap();
        }
        if !odd {
            store.flush().await;
        }
    }
    store
}

#[tokio::test]
async fn versions_epochs_and_dirty_flags_survive_a_restore_across_chunks() {
    let dir = dir("fields");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    // About 12 MiB: several chunks.
    let original = filled(&db, 3000, 4000).await;
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    let done = write(&original, &dir, &header).await.unwrap();
    assert_eq!((done.records, done.dirty), (3000, 1500));
    let restored = SessionStore::builder(JsonCodec, String::len)
        .persistence(db.clone())
        .build()
        .unwrap();
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.format, chunked::FORMAT_VERSION);
    assert_eq!((report.records, report.dirty), (3000, 1500));
    assert_eq!(report.restore.inserted, 3000);
    assert_eq!(restored.stats(), original.stats());
    assert_eq!(
        restored.resident_keys(),
        original.resident_keys(),
        "same order of last use"
    );
    for i in 0..3000u64 {
        let key = format!("k{i}");
        let got = restored.get(key.as_bytes()).await.unwrap();
        assert_eq!(got, original.get(key.as_bytes()).await.unwrap());
        assert_eq!((got.version, got.epoch), (i % 3 + 1, 7));
    }
    // Only the dirty half is written back by the restored store.
    db.0.lock().unwrap().clear();
    let flushed = restored.flush().await;
    assert_eq!(db.0.lock().unwrap().len(), 1500, "{flushed:?}");
    assert!(db.0.lock().unwrap().keys().all(|k| {
        let i: usize = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
        i % 2 == 1
    }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_corrupted_chunk_is_refused_whole_and_the_sessions_come_from_the_persistence() {
    let dir = dir("chunk");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = filled(&db, 3000, 4000).await;
    // Everything written back, as a pod does before its snapshot.
    original.flush().await;
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    write(&original, &dir, &header).await.unwrap();
    // One bit of the last chunk's last record.
    let path = path_in(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 41;
    bytes[at] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
    let cold = SessionStore::builder(JsonCodec, String::len)
        .persistence(db.clone())
        .build()
        .unwrap();
    let error = restore(Arc::new(cold.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, SnapshotError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("chunk") && text.contains("checksum mismatch"),
        "{text}"
    );
    assert_eq!(
        cold.stats().sessions,
        0,
        "nothing installed from a refused snapshot"
    );
    assert!(!path.exists(), "a refused snapshot is removed");
    for i in 0..3000 {
        let key = format!("k{i}");
        let got = cold.get(key.as_bytes()).await.unwrap();
        assert_eq!(got.value, original.get(key.as_bytes()).await.unwrap().value);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_format_1_snapshot_is_still_restored() {
    let dir = dir("format1");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = filled(&db, 200, 100).await;
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    let done = v1::writer::write(&original, &dir, &header).await.unwrap();
    assert_eq!((done.records, done.dirty), (200, 100));
    let restored = store();
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.format, v1::FORMAT_VERSION);
    assert_eq!((report.records, report.dirty), (200, 100));
    assert_eq!(report.restore.inserted, 200);
    for i in 0..200 {
        let key = format!("k{i}");
        let got = restored.get(key.as_bytes()).await.unwrap();
        let was = original.get(key.as_bytes()).await.unwrap();
        // Format 1 keeps no epoch.
        assert_eq!((got.version, &got.value), (was.version, &was.value));
    }
    assert!(!path_in(&dir).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_restore_beyond_the_bounds_ends_where_the_per_record_path_ends() {
    // The same sessions restored from both formats into stores too small
    // for them: format 1 installs record by record, format 2 in bulk
    // until the bounds, then record by record (evicting idle sessions).
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = filled(&db, 300, 100).await;
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    let small = || {
        SessionStore::builder(JsonCodec, String::len)
            .limits(
                Limits::builder()
                    .max_sessions(120)
                    .max_session_bytes(1000)
                    .max_total_bytes(100 * 110)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let mut ends = Vec::new();
    for format in [1, 2] {
        let dir = dir(&format!("bounds{format}"));
        if format == 1 {
            v1::writer::write(&original, &dir, &header).await.unwrap();
        } else {
            write(&original, &dir, &header).await.unwrap();
        }
        let target = small();
        let report = restore(Arc::new(target.clone()), &dir, &ring, "svc-0-x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.format, format);
        let stats = target.stats();
        assert!(
            stats.sessions <= 120 && stats.bytes <= 100 * 110,
            "{stats:?}"
        );
        assert_eq!(stats.bytes, target.recount_bytes().await);
        ends.push((
            report.restore.inserted,
            report.restore.failed,
            report.restore.stale,
        ));
        target.check_index().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Format 1 installs with several tasks at once, so which sessions
    // stay differs; how many went in and were refused does not.
    assert_eq!(ends[0], ends[1]);
    assert_eq!(ends[1], (300, 0, 0));
}

#[tokio::test]
async fn an_empty_store_writes_a_snapshot_that_restores_nothing() {
    let dir = dir("empty");
    let ring = ring("svc", 4, vec![0, 0]);
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    let done = write(&store(), &dir, &header).await.unwrap();
    assert_eq!(
        (done.records, done.bytes),
        (0, std::fs::metadata(path_in(&dir)).unwrap().len())
    );
    let target = store();
    let report = restore(Arc::new(target.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.records, report.restore.inserted), (0, 0));
    assert_eq!(target.stats().sessions, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
