//! The snapshot's tests: round trips of both formats, refusals (corrupt,
//! truncated, foreign), and the store's bounds and fields across a restore.

use super::*;
use crate::ring::{Assignment, Pod, RingParts, ShardCount, Slot, SlotState, Transition};
use crate::store::{
    CodecError, FlushPace, HandOff, JsonCodec, Limits, Persistence, SessionCodec, SessionStore,
    Stamp, StoreError, Stored, Versioned,
};

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
        report.pending_write_back && restored_path_in(&dir).exists(),
        "kept for the write-back of its unsaved records"
    );
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
    assert!(
        !path_in(&dir).exists(),
        "a refused snapshot is not left to restore"
    );
    assert_eq!(kept_in(&dir).len(), 1, "a refused snapshot is kept aside");
    std::fs::remove_dir_all(&dir).unwrap();
    error
}

/// The files kept aside in `dir`.
fn kept_in(dir: &Path) -> Vec<PathBuf> {
    let mut kept: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(salvage::KEPT_PREFIX))
        })
        .collect();
    kept.sort();
    kept
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
    assert_eq!(restored.stats().sessions, original.stats().sessions);
    let (mut got, mut held) = (restored.resident_keys(), original.resident_keys());
    got.sort();
    held.sort();
    assert_eq!(got, held, "the same sessions");
    for i in 0..3000u64 {
        let key = format!("k{i}");
        let got = restored.get(key.as_bytes()).await.unwrap();
        assert_eq!(got, original.get(key.as_bytes()).await.unwrap());
        assert_eq!((got.version, got.epoch), (i % 3 + 1, 7));
    }
    // Decoded on first use, the clean half weighs what the weigher says.
    assert_eq!(restored.stats(), original.stats());
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
    assert!(!path.exists(), "a refused snapshot is not left to restore");
    assert_eq!(kept_in(&dir).len(), 1, "a refused snapshot is kept aside");
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

/// [`Memory`] whose next `failing` stores fail.
#[derive(Clone, Default)]
struct Flaky {
    db: Memory,
    failing: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
#[error("the database is unavailable")]
struct Unavailable;

impl Persistence<String> for Flaky {
    type Error = Unavailable;

    async fn load(&self, key: &[u8]) -> Result<Option<Stored<String>>, Self::Error> {
        Ok(self.db.load(key).await.unwrap_or_else(|e| match e {}))
    }

    async fn store(&self, key: &[u8], stamp: Stamp, value: &String) -> Result<(), Self::Error> {
        use std::sync::atomic::Ordering;
        let failing = self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Unavailable);
        }
        self.db
            .store(key, stamp, value)
            .await
            .unwrap_or_else(|e| match e {});
        Ok(())
    }
}

/// A store over `db`.
fn over(db: &Flaky) -> SessionStore<String, Flaky> {
    SessionStore::builder(JsonCodec, String::len)
        .persistence(db.clone())
        .build()
        .unwrap()
}

/// `sessions` sessions of about `size` bytes (epoch 7) snapshotted by pod
/// `svc-0-x` of slot 0 (owning everything) without any write-back, as a
/// restart in place writes them: every record unsaved, the database empty.
async fn unsaved_snapshot(name: &str, sessions: usize, size: usize) -> (PathBuf, Ring, Flaky) {
    let dir = dir(name);
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Flaky::default();
    let writer = over(&db);
    for i in 0..sessions {
        let key = format!("k{i}");
        writer
            .install(
                key.as_bytes(),
                Versioned::new(i as u64 % 3 + 1, format!("{i}:{}", "x".repeat(size))).with_epoch(7),
            )
            .await
            .unwrap();
    }
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    let done = write(&writer, &dir, &header).await.unwrap();
    assert_eq!(
        (done.records, done.dirty),
        (sessions as u64, sessions as u64)
    );
    assert!(db.db.0.lock().unwrap().is_empty());
    (dir, ring, db)
}

/// The value session `i` of [`unsaved_snapshot`] holds.
fn value_of(i: usize, size: usize) -> String {
    format!("{i}:{}", "x".repeat(size))
}

#[tokio::test]
async fn restored_unsaved_sessions_are_written_back_in_the_background_then_the_file_goes() {
    let (dir, ring, db) = unsaved_snapshot("background", 500, 100).await;
    let restored = over(&db);
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.dirty, report.unsaved_installed()), (500, 500));
    assert!(report.pending_write_back);
    // Serving now, nothing written back yet: the file is the durable copy.
    assert!(!path_in(&dir).exists());
    assert!(restored_path_in(&dir).exists());
    assert!(db.db.0.lock().unwrap().is_empty());
    // The persistence fails the first writes: retried, the file stays
    // meanwhile.
    db.failing.store(20, std::sync::atomic::Ordering::SeqCst);
    let done = write_back_restored(
        Arc::new(restored.clone()),
        dir.clone(),
        500,
        Arc::new(|| FlushPace::Run(usize::MAX)),
    )
    .await;
    assert!(done.rounds >= 2, "{done:?}");
    assert_eq!(done.written, 500, "{done:?}");
    assert!(
        !restored_path_in(&dir).exists(),
        "removed once written back"
    );
    let rows = db.db.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 500);
    for i in 0..500usize {
        let (stamp, value) = &rows[format!("k{i}").as_bytes()];
        assert_eq!(value, &value_of(i, 100));
        assert_eq!(stamp.version, i as u64 % 3 + 1);
        assert!(
            stamp.epoch >= 7,
            "written under the record's epoch or higher"
        );
    }
    // Clean now: nothing left to write.
    assert_eq!(restored.flush().await.written, 0);
    assert!(kept_in(&dir).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_crash_during_the_write_back_leaves_the_file_and_the_next_process_writes_it_back_first() {
    let (dir, ring, db) = unsaved_snapshot("crash", 300, 100).await;
    let crashed = over(&db);
    let report = restore(Arc::new(crashed.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert!(report.pending_write_back);
    // The process served a newer write of k1 and wrote it back, then
    // crashed before its background write-back ran.
    crashed
        .update(b"k1", |value| value.push_str(" and more"))
        .await
        .unwrap();
    assert_eq!(crashed.flush().await.written, 300);
    let newer = db.db.0.lock().unwrap()[b"k1".as_slice()].clone();
    db.db.0.lock().unwrap().retain(|key, _| key == b"k1");
    drop(crashed);
    assert!(restored_path_in(&dir).exists());

    let next = over(&db);
    let again = restore(Arc::new(next.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap();
    assert!(again.is_none(), "no snapshot to restore");
    assert_eq!(
        next.stats().sessions,
        0,
        "a restored file is never installed again"
    );
    assert!(!restored_path_in(&dir).exists());
    assert_eq!(kept_in(&dir).len(), 1, "kept aside after its write-back");
    let rows = db.db.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 300, "every unsaved record written back");
    assert_eq!(
        rows[b"k1".as_slice()],
        newer,
        "the newer write is not replaced"
    );
    for i in 2..300usize {
        assert_eq!(rows[format!("k{i}").as_bytes()].1, value_of(i, 100));
    }
    // Served from the persistence: the latest of each.
    assert_eq!(next.get(b"k1").await.unwrap().value, newer.1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_failed_restore_keeps_the_file_aside_and_writes_back_the_chunks_that_check() {
    // About 12 MiB: several chunks. One bit of the last chunk's last record.
    let (dir, ring, db) = unsaved_snapshot("salvage", 3000, 4000).await;
    let path = path_in(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 41;
    bytes[at] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let target = over(&db);
    let error = restore(Arc::new(target.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
    assert_eq!(target.stats().sessions, 0, "nothing installed");
    assert!(!path.exists());
    let kept = kept_in(&dir);
    assert_eq!(kept.len(), 1, "kept aside, never deleted");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), bytes, "kept as it was");
    let rows = db.db.0.lock().unwrap().clone();
    assert!(
        rows.len() > 1500 && rows.len() < 3000,
        "the records of every chunk but the damaged one: {}",
        rows.len()
    );
    for (key, (stamp, value)) in &rows {
        let i: usize = std::str::from_utf8(&key[1..]).unwrap().parse().unwrap();
        assert_eq!(value, &value_of(i, 4000));
        assert_eq!(*stamp, Stamp::new(7, i as u64 % 3 + 1));
    }
    // Cold from here: what was written back is served.
    let (key, (_, value)) = rows.iter().next().unwrap();
    assert_eq!(&target.get(key).await.unwrap().value, value);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_snapshot_cut_short_by_a_killed_writer_gives_its_complete_chunks() {
    let (dir, ring, db) = unsaved_snapshot("killed", 3000, 4000).await;
    // The writer was killed in the middle of the file: no rename, no trailer.
    let bytes = std::fs::read(path_in(&dir)).unwrap();
    std::fs::write(salvage::tmp_path_in(&dir), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(path_in(&dir)).unwrap();
    let target = over(&db);
    assert!(
        restore(Arc::new(target.clone()), &dir, &ring, "svc-0-x")
            .await
            .unwrap()
            .is_none()
    );
    let rows = db.db.0.lock().unwrap().len();
    assert!(rows > 0 && rows < 3000, "{rows}");
    assert!(!salvage::tmp_path_in(&dir).exists());
    assert_eq!(kept_in(&dir).len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_format_this_build_cannot_read_is_kept_aside_untouched() {
    let (dir, ring, db) = unsaved_snapshot("unknown-format", 50, 10).await;
    let path = path_in(&dir);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&9u32.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let error = restore(Arc::new(over(&db)), &dir, &ring, "svc-0-x")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("format version 9"), "{error}");
    let kept = kept_in(&dir);
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0]).unwrap(), bytes);
    assert!(
        db.db.0.lock().unwrap().is_empty(),
        "nothing of it can be trusted"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn unsaved_records_of_keys_no_longer_owned_are_written_back_before_the_restore_returns() {
    let (dir, _, db) = unsaved_snapshot("not-owned", 200, 10).await;
    // Slot 0 now owns only shard 0 of 2.
    let ring = ring("svc", 5, vec![0, 1]);
    let target = over(&db);
    let report = restore(Arc::new(target.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert!(report.not_owned > 0);
    assert_eq!(report.not_owned_written_back, report.not_owned);
    let rows = db.db.0.lock().unwrap().clone();
    assert_eq!(rows.len() as u64, report.not_owned);
    for key in rows.keys() {
        assert_eq!(ring.owner(key).index, 1, "only keys another slot owns");
    }
    assert_eq!(report.unsaved_installed(), 200 - report.not_owned);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_session_restored_unsaved_is_written_back_before_it_is_evicted() {
    let (dir, ring, db) = unsaved_snapshot("evict", 100, 10).await;
    let clock = crate::store::ManualClock::new();
    let restored = SessionStore::builder(JsonCodec, String::len)
        .persistence(db.clone())
        .limits(
            Limits::builder()
                .idle_timeout(std::time::Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .clock(clock.clone())
        .build()
        .unwrap();
    restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    // The database refuses the first writes: a session whose write-back
    // fails is not evicted.
    db.failing.store(30, std::sync::atomic::Ordering::SeqCst);
    clock.advance(std::time::Duration::from_secs(5));
    let sweep = restored.passivate_idle().await;
    assert_eq!(sweep.write_back_failed, 30, "{sweep:?}");
    assert_eq!(sweep.evicted, 70, "{sweep:?}");
    assert_eq!(restored.stats().sessions, 30);
    assert_eq!(
        db.db.0.lock().unwrap().len(),
        70,
        "every evicted session was written first"
    );
    clock.advance(std::time::Duration::from_secs(600));
    let sweep = restored.passivate_idle().await;
    assert_eq!(sweep.evicted, 30, "{sweep:?}");
    let rows = db.db.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 100);
    for i in 0..100usize {
        assert_eq!(rows[format!("k{i}").as_bytes()].1, value_of(i, 10));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A snapshot in a fresh `dir(name)` of the pod `svc-0-x` (one slot owning
/// every shard) of [`filled`]'s sessions (even ones written back to the
/// returned persistence, odd ones not; all of them if `flushed`), with the
/// store it was written from.
async fn durable_snapshot(
    name: &str,
    sessions: usize,
    size: usize,
    flushed: bool,
) -> (PathBuf, Ring, Memory, SessionStore<String, Memory>) {
    let dir = dir(name);
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = filled(&db, sessions, size).await;
    if flushed {
        original.flush().await;
    }
    write(&original, &dir, &SnapshotHeader::new(&ring, 0, "svc-0-x"))
        .await
        .unwrap();
    (dir, ring, db, original)
}

/// A store of strings over `db` with `codec`.
fn durable_store(db: &Memory, codec: impl SessionCodec<String>) -> SessionStore<String, Memory> {
    SessionStore::builder(codec, String::len)
        .persistence(db.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn clean_sessions_stay_encoded_until_first_use_and_dirty_ones_are_decoded() {
    // Even sessions written back (clean), odd ones not (dirty).
    let (dir, ring, db, original) = durable_snapshot("deferred", 400, 100, false).await;
    let restored = durable_store(&db, JsonCodec);
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.restore.inserted, report.dirty), (400, 200));
    assert_eq!(
        restored.encoded_sessions().await,
        200,
        "the clean half stays encoded, the dirty half is decoded"
    );
    // Encoded, a session weighs its bytes: the recount agrees with the index.
    assert_eq!(restored.total_bytes(), restored.recount_bytes().await);
    restored.check_index().unwrap();

    // A read decodes once and answers the value and version written.
    let got = restored.get(b"k0").await.unwrap();
    assert_eq!(got, original.get(b"k0").await.unwrap());
    assert_eq!((got.version, got.epoch), (1, 7));
    assert_eq!(restored.encoded_sessions().await, 199);
    // An update of a session still encoded works and is written back with
    // its stamp; the sessions nobody changed are not.
    let updated = restored
        .update(b"k2", |value| value.push_str(" and more"))
        .await
        .unwrap();
    assert_eq!((updated.version, updated.epoch), (4, 7));
    // A hand-off of a session still encoded gives the bytes the codec made.
    let HandOff::State(record) = restored
        .hand_off(b"k4", None, "svc-1-x", Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("k4 is resident");
    };
    let was = original.get(b"k4").await.unwrap();
    assert_eq!(record.value, JsonCodec.encode(&was.value).unwrap());
    assert_eq!(
        (record.version, record.epoch, record.dirty),
        (was.version, 7, false)
    );
    assert_eq!(
        restored.encoded_sessions().await,
        197,
        "k0 read, k2 updated, k4 handed off"
    );
    db.0.lock().unwrap().clear();
    let flushed = restored.flush().await;
    assert_eq!(flushed.written, 201, "{flushed:?}");
    let rows = db.0.lock().unwrap().clone();
    assert_eq!(
        rows[b"k2".as_slice()],
        (Stamp::new(7, 4), format!("2:{} and more", "x".repeat(100)))
    );
    assert!(!rows.contains_key(b"k0".as_slice()) && !rows.contains_key(b"k4".as_slice()));

    // Every session decoded: the index weighs what the weigher says.
    for i in (0..400).filter(|&i| i != 4) {
        let key = format!("k{i}");
        let got = restored.get(key.as_bytes()).await.unwrap();
        if i != 2 {
            assert_eq!(got, original.get(key.as_bytes()).await.unwrap());
        }
    }
    assert_eq!(restored.encoded_sessions().await, 0);
    let mut weighed = 0;
    for i in (0..400).filter(|&i| i != 4) {
        let key = format!("k{i}");
        weighed += restored
            .read(key.as_bytes(), String::len)
            .await
            .unwrap()
            .value;
    }
    assert_eq!(restored.total_bytes(), weighed);
    assert_eq!(restored.recount_bytes().await, weighed);
    restored.check_index().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn without_a_durable_persistence_every_record_is_decoded_at_restore() {
    let dir = dir("eager");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = filled(&db, 100, 10).await;
    write(&original, &dir, &SnapshotHeader::new(&ring, 0, "svc-0-x"))
        .await
        .unwrap();
    let restored = store();
    restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restored.stats().sessions, 100);
    assert_eq!(restored.encoded_sessions().await, 0);
    assert_eq!(restored.stats(), original.stats());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// JSON, refusing to decode strings that contain "poison" (a codec change
/// that cannot read what the old one wrote).
struct Picky;

impl SessionCodec<String> for Picky {
    fn encode(&self, value: &String) -> Result<bytes::Bytes, CodecError> {
        JsonCodec.encode(value)
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
        let value: String = JsonCodec.decode(bytes)?;
        if value.contains("poison") {
            return Err("this build cannot read it".into());
        }
        Ok(value)
    }
}

#[tokio::test]
async fn a_clean_session_that_does_not_decode_is_loaded_from_the_persistence() {
    let dir = dir("undecodable");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = durable_store(&db, JsonCodec);
    for (key, version) in [("good", 2), ("bad", 5)] {
        let value = format!("{key} poison");
        let value = if key == "good" { key.to_owned() } else { value };
        original
            .install(key.as_bytes(), Versioned::new(version, value).with_epoch(3))
            .await
            .unwrap();
    }
    assert_eq!(original.flush().await.written, 2);
    write(&original, &dir, &SnapshotHeader::new(&ring, 0, "svc-0-x"))
        .await
        .unwrap();
    // The persistence's copy of "bad" is one the new codec never has to read.
    let stored = (Stamp::new(3, 5), String::from("bad poison"));
    assert_eq!(db.0.lock().unwrap()[b"bad".as_slice()], stored);

    let restored = durable_store(&db, Picky);
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.restore.inserted, report.restore.failed), (2, 0));
    assert_eq!(restored.encoded_sessions().await, 2);
    db.0.lock().unwrap().clear();
    db.0.lock().unwrap().insert(b"bad".to_vec(), stored.clone());
    let got = restored.get(b"bad").await.unwrap();
    assert_eq!((got.version, got.epoch, &got.value), (5, 3, &stored.1));
    assert_eq!(restored.deferred_decode_failures(), 1);
    assert_eq!(restored.get(b"good").await.unwrap().value, "good");
    assert_eq!(restored.deferred_decode_failures(), 1);
    // Nothing written from the bytes that did not decode, nor from the
    // session loaded in their place (clean).
    assert_eq!(restored.flush().await.written, 0);
    assert_eq!(db.0.lock().unwrap().len(), 1);
    assert_eq!(db.0.lock().unwrap()[b"bad".as_slice()], stored);
    assert_eq!(restored.stats().sessions, 2);
    assert_eq!(restored.total_bytes(), restored.recount_bytes().await);
    restored.check_index().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_restored_session_heavier_than_the_bound_once_decoded_is_reloaded_and_refused() {
    let dir = dir("heavy");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = durable_store(&db, JsonCodec);
    original
        .install(b"k", Versioned::new(1, "x".repeat(100)))
        .await
        .unwrap();
    original.flush().await;
    write(&original, &dir, &SnapshotHeader::new(&ring, 0, "svc-0-x"))
        .await
        .unwrap();
    // Encoded it weighs 102 bytes; decoded, by this weigher, 300.
    let restored = SessionStore::builder(JsonCodec, |value: &String| 3 * value.len())
        .persistence(db.clone())
        .limits(Limits::builder().max_session_bytes(200).build().unwrap())
        .build()
        .unwrap();
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.restore.inserted, 1);
    let error = restored.get(b"k").await.unwrap_err();
    assert!(matches!(error, StoreError::TooLarge { .. }), "{error}");
    assert_eq!(restored.deferred_decode_failures(), 1);
    assert_eq!(restored.stats().sessions, 0);
    restored.check_index().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sessions_still_encoded_are_snapshotted_and_exported_as_they_were_written() {
    let dir = dir("encoded-again");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = filled(&db, 3000, 1000).await;
    original.flush().await;
    let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
    write(&original, &dir, &header).await.unwrap();
    let first = durable_store(&db, JsonCodec);
    restore(Arc::new(first.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.encoded_sessions().await, 3000);
    // A handoff export gives the bytes the codec made, without decoding.
    let exported = first.export(b"k7").await.unwrap().unwrap();
    let value = original.get(b"k7").await.unwrap();
    assert_eq!(exported.value, JsonCodec.encode(&value.value).unwrap());
    assert_eq!(
        (exported.version, exported.epoch, exported.dirty),
        (value.version, 7, false)
    );
    assert_eq!(first.encoded_sessions().await, 3000);
    // Snapshotted again while still encoded, then restored again.
    write(&first, &dir, &header).await.unwrap();
    assert_eq!(first.encoded_sessions().await, 3000);
    let second = durable_store(&db, JsonCodec);
    let report = restore(Arc::new(second.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.restore.inserted, report.dirty), (3000, 0));
    for i in 0..3000 {
        let key = format!("k{i}");
        assert_eq!(
            second.get(key.as_bytes()).await.unwrap(),
            original.get(key.as_bytes()).await.unwrap()
        );
    }
    assert_eq!(second.stats(), original.stats());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_uses_of_an_encoded_session_decode_it_once_and_lose_no_update() {
    let (dir, ring, db, _) = durable_snapshot("racing", 200, 50, true).await;
    let restored = durable_store(&db, JsonCodec);
    restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restored.encoded_sessions().await, 200);
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        for n in 0..6 {
            let store = restored.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("k{i}");
                if n % 3 == 0 {
                    store
                        .update(key.as_bytes(), |value| value.push('+'))
                        .await
                        .unwrap();
                } else {
                    let read = store.read(key.as_bytes(), String::len).await.unwrap();
                    assert!(read.version > i % 3, "never older than restored");
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(restored.encoded_sessions().await, 0);
    assert_eq!(restored.deferred_decode_failures(), 0);
    for i in 0..200u64 {
        let got = restored.get(format!("k{i}").as_bytes()).await.unwrap();
        assert_eq!(got.version, i % 3 + 3, "both updates kept");
        assert!(got.value.ends_with("++"));
    }
    assert_eq!(restored.total_bytes(), restored.recount_bytes().await);
    restored.check_index().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_sessions_left_encoded_are_decoded_in_the_background() {
    let dir = dir("decode-left");
    let ring = ring("svc", 4, vec![0, 0]);
    let db = Memory::default();
    let original = filled(&db, 3000, 1000).await;
    original
        .install(b"poisoned", Versioned::new(9, "poison".into()))
        .await
        .unwrap();
    original.flush().await;
    write(&original, &dir, &SnapshotHeader::new(&ring, 0, "svc-0-x"))
        .await
        .unwrap();
    let restored = durable_store(&db, Picky);
    restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restored.encoded_sessions().await, 3001);
    // Some used already: only the others are left to decode.
    for i in 0..10 {
        restored.get(format!("k{i}").as_bytes()).await.unwrap();
    }
    let decoded = decode_left(Arc::new(restored.clone()), Duration::ZERO).await;
    assert_eq!(decoded, 2990);
    assert_eq!(restored.encoded_sessions().await, 0);
    // The one that does not decode is dropped, as on first use.
    assert_eq!(restored.deferred_decode_failures(), 1);
    assert_eq!(restored.stats().sessions, 3000);
    restored.check_index().unwrap();
    assert_eq!(restored.total_bytes(), restored.recount_bytes().await);
    assert_eq!(
        restored.total_bytes(),
        original.total_bytes() - "poison".len(),
        "decoded, the sessions weigh what they weighed before the snapshot"
    );
    assert_eq!(restored.get(b"poisoned").await.unwrap().value, "poison");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The lines of this process's memory map that map `path` (an unlinked
/// file's name ends in " (deleted)").
fn mappings_of(path: &Path) -> Vec<String> {
    let path = path.display().to_string();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&path))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_restore_maps_the_file_and_serves_every_session_after_it_is_renamed_and_unlinked() {
    // Even sessions clean (left encoded, slices of the mapping), odd ones
    // dirty (decoded, written back, then the file goes).
    let (dir, ring, db, original) = durable_snapshot("mapped-unlinked", 2000, 300, false).await;
    let dir = std::fs::canonicalize(dir).unwrap();
    let restored = durable_store(&db, JsonCodec);
    let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.restore.inserted, report.dirty), (2000, 1000));
    // Renamed for its write-back, as the SDK does.
    assert!(report.pending_write_back);
    let renamed = restored_path_in(&dir);
    assert!(!path_in(&dir).exists() && renamed.exists());
    assert!(
        !mappings_of(&renamed).is_empty(),
        "the restore mapped the file"
    );
    let done = write_back_restored(
        Arc::new(restored.clone()),
        dir.clone(),
        1000,
        Arc::new(|| FlushPace::Run(usize::MAX)),
    )
    .await;
    assert_eq!(done.written, 1000, "{done:?}");
    assert!(!renamed.exists(), "unlinked once written back");
    // Unlinked, its pages stay mapped while the encoded sessions hold them.
    let mapped = mappings_of(&renamed);
    assert!(
        !mapped.is_empty() && mapped.iter().all(|line| line.ends_with("(deleted)")),
        "{mapped:?}"
    );
    assert_eq!(restored.encoded_sessions().await, 1000);

    // Every session answers the value and stamp written, the clean ones
    // decoded from the unlinked file's pages.
    for i in 0..2000usize {
        let key = format!("k{i}");
        let got = restored.get(key.as_bytes()).await.unwrap();
        assert_eq!(got, original.get(key.as_bytes()).await.unwrap(), "{key}");
        assert_eq!((got.version, got.epoch), (i as u64 % 3 + 1, 7), "{key}");
    }
    assert_eq!(restored.encoded_sessions().await, 0);
    assert!(
        mappings_of(&renamed).is_empty(),
        "the last slice dropped, the mapping goes"
    );
    restored.check_index().unwrap();
    assert_eq!(restored.total_bytes(), original.total_bytes());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_file_that_cannot_be_mapped_is_read_chunk_by_chunk_and_restores_the_same() {
    let (dir, ring, db, original) = durable_snapshot("not-mapped", 2000, 300, false).await;
    let dir = std::fs::canonicalize(dir).unwrap();
    let path = path_in(&dir);
    let restored = durable_store(&db, JsonCodec);
    let (report, not_owned) =
        chunked::restore_file_with(Arc::new(restored.clone()), &path, &ring, "svc-0-x", |_| {
            Err(io::Error::other("this file system cannot map"))
        })
        .await
        .unwrap();
    assert!(mappings_of(&path).is_empty(), "read, not mapped");
    assert!(not_owned.is_empty());
    assert_eq!((report.records, report.dirty), (2000, 1000));
    assert_eq!((report.restore.inserted, report.restore.failed), (2000, 0));
    assert_eq!(restored.encoded_sessions().await, 1000);
    std::fs::remove_dir_all(&dir).unwrap();
    for i in 0..2000usize {
        let key = format!("k{i}");
        let got = restored.get(key.as_bytes()).await.unwrap();
        assert_eq!(got, original.get(key.as_bytes()).await.unwrap(), "{key}");
    }
    restored.check_index().unwrap();
    assert_eq!(restored.total_bytes(), original.total_bytes());

    // The same checks refuse a damaged chunk read this way.
    let damaged = super::tests::dir("not-mapped-corrupt");
    write(
        &original,
        &damaged,
        &SnapshotHeader::new(&ring, 0, "svc-0-x"),
    )
    .await
    .unwrap();
    let path = path_in(&damaged);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let error = chunked::restore_file_with(
        Arc::new(durable_store(&db, JsonCodec)),
        &path,
        &ring,
        "svc-0-x",
        |_| Err(io::Error::other("this file system cannot map")),
    )
    .await
    .err()
    .unwrap();
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
    std::fs::remove_dir_all(&damaged).unwrap();
}
