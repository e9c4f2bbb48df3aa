//! Fast restarts: the pod's sessions written to a memory-backed directory on
//! SIGTERM and read back when the same slot's pod starts again (the
//! "fast restarts" trick of Facebook's Scuba: the state outlives the
//! process, not the machine).
//!
//! The operator mounts a memory `emptyDir` at `/var/run/locus/snapshot`
//! (`LOCUS_SNAPSHOT_DIR`) when `spec.snapshot` is set; an in-place restart
//! (image-only change) keeps the pod, so the directory survives the
//! container.
//!
//! # File (`sessions.snapshot`)
//!
//! Every format starts with the magic `"LOCUSSNP"` and a big-endian `u32`
//! format version. [`write()`] writes format 2 (`snapshot/chunked.rs`: large chunks, each
//! with its own checksum, checked and decoded in parallel, for memory speed);
//! [`restore()`] reads format 2 and format 1 (`snapshot/v1.rs`, the first format, one
//! checksum over a stream of records).
//!
//! The file is written to `sessions.snapshot.tmp`, synced, then renamed, so a
//! snapshot is either complete or absent. A snapshot that is corrupt,
//! truncated, from another service or slot, or from a newer ring than the
//! pod's is logged and ignored: nothing of it is installed (every chunk is
//! checked before the first record is), and the pod starts cold, its sessions
//! loaded from the persistence as requests come. In every case the file is
//! removed so that it is never restored twice. Records of keys the slot no
//! longer owns under the current ring are skipped.
//!
//! The file work runs on tokio's blocking pool (`spawn_blocking`), never on
//! the async worker threads.
//!
//! What a restore or a write did is recorded in the process's
//! [`SnapshotMetrics`] (the `locus_snapshot_*` metrics of every
//! [`Metrics`](crate::Metrics) registry) besides the returned report.

mod chunked;
mod metrics;
mod v1;

pub use self::metrics::SnapshotMetrics;

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ring::Ring;
use crate::store::{Restore, SessionTable};

/// Environment variable naming the snapshot directory.
pub const SNAPSHOT_DIR_ENV: &str = "LOCUS_SNAPSHOT_DIR";

/// The snapshot's file name in its directory.
pub const SNAPSHOT_FILE: &str = "sessions.snapshot";

const MAGIC: &[u8; 8] = b"LOCUSSNP";
const END_MAGIC: &[u8; 8] = b"LOCUSEND";
const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// Who a snapshot belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotHeader {
    /// Namespace of the service.
    pub namespace: String,
    /// Name of the service.
    pub service: String,
    /// The slot the pod served.
    pub slot: u16,
    /// The pod's name.
    pub pod: String,
    /// The ring version the pod held when it wrote the snapshot.
    pub ring_version: u64,
    /// Milliseconds since the Unix epoch when writing started.
    pub created_unix_ms: u64,
}

impl SnapshotHeader {
    /// The header for `pod` serving `slot` under `ring`, now.
    pub fn new(ring: &Ring, slot: u16, pod: &str) -> Self {
        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            namespace: ring.namespace().to_owned(),
            service: ring.service().to_owned(),
            slot,
            pod: pod.to_owned(),
            ring_version: ring.version(),
            created_unix_ms,
        }
    }
}

/// Why a snapshot was not written or not restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a complete, intact snapshot.
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot is intact but belongs to another service, slot or ring.
    #[error("snapshot {path} is not this pod's: {reason}")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Whose it is.
        reason: String,
    },
    /// The writer task ended early.
    #[error("snapshot writer stopped: {reason}")]
    Writer {
        /// Why.
        reason: String,
    },
}

/// What [`write()`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The file.
    pub path: PathBuf,
    /// Sessions written.
    pub records: u64,
    /// Of those, sessions not written back to the persistence yet (the
    /// restored process writes them back as usual).
    pub dirty: u64,
    /// Sessions that could not be encoded (left out).
    pub skipped: u64,
    /// File size.
    pub bytes: u64,
    /// Time taken.
    pub took: Duration,
}

/// What [`restore`] found and did.
#[derive(Debug)]
pub struct SnapshotRestore {
    /// The snapshot's header.
    pub header: SnapshotHeader,
    /// Records in the file.
    pub records: u64,
    /// Of those, records its writer had not written back to the persistence.
    pub dirty: u64,
    /// Records of keys this pod does not own under the current ring.
    pub not_owned: u64,
    /// What the store did with the others.
    pub restore: Restore,
    /// File size.
    pub bytes: u64,
    /// The file's format version.
    pub format: u32,
    /// Time to read and check the file before the first record is
    /// installed (format 1: the first pass; format 2: reading, checking and
    /// decoding every chunk).
    pub check_took: Duration,
    /// Time to check and install.
    pub took: Duration,
}

/// The snapshot file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Removes the snapshot in `dir` and a left-over temporary file, if any;
/// true if a snapshot was there. A pod that is going away writes none and
/// leaves none behind: a later process under the same pod name and
/// directory (outside Kubernetes, where the directory may outlive the pod)
/// must not restore sessions that were handed to other pods since.
pub fn discard(dir: &Path) -> Result<bool, SnapshotError> {
    let path = path_in(dir);
    let _ = std::fs::remove_file(dir.join(format!("{SNAPSHOT_FILE}.tmp")));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io_error(&path)(error)),
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes every resident session of `store` to `dir` in the current format
/// (format 2, see the [module docs](self)). Recorded in
/// [`SnapshotMetrics::process`].
pub async fn write(
    store: &dyn SessionTable,
    dir: &Path,
    header: &SnapshotHeader,
) -> Result<SnapshotWritten, SnapshotError> {
    let result = chunked::write_file(store, dir, header).await;
    match &result {
        Ok(written) => SnapshotMetrics::process().written(written),
        Err(_) => SnapshotMetrics::process().write_failed(),
    }
    result
}

/// not own under `ring` are skipped. `Ok(None)`: no snapshot. The file is
/// removed afterwards, whatever the outcome. Recorded in
/// [`SnapshotMetrics::process`].
pub async fn restore(
    store: Arc<dyn SessionTable>,
    dir: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<Option<SnapshotRestore>, SnapshotError> {
    let path = path_in(dir);
    // An error other than "absent" (permissions, say) shows in the restore.
    if !tokio::fs::try_exists(&path).await.unwrap_or(true) {
        return Ok(None);
    }
    let result = restore_file(store, &path, ring, pod).await;
    if let Err(error) = tokio::fs::remove_file(&path).await {
        tracing::warn!(path = %path.display(), %error, "cannot remove the snapshot after reading it");
    }
    match &result {
        Ok(report) => {
            SnapshotMetrics::process().restored(report);
            tracing::info!(
            path = %path.display(),
            records = report.records,
            dirty = report.dirty,
            restored = report.restore.inserted + report.restore.replaced,
            not_owned = report.not_owned,
            failed = report.restore.failed,
            bytes = report.bytes,
            took = ?report.took,
            "snapshot restored"
            );
        }
        Err(error) => {
            SnapshotMetrics::process().ignored();
            tracing::warn!(%error, "snapshot ignored; starting cold");
        }
    }
    result.map(Some)
}

/// Checks that the snapshot is this pod's: same service, the slot it
/// serves, a ring no newer than the pod's.
fn belongs(
    header: &SnapshotHeader,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<(), SnapshotError> {
    let foreign = |reason: String| SnapshotError::Foreign {
        path: path.to_owned(),
        reason,
    };
    if header.namespace != ring.namespace() || header.service != ring.service() {
        return Err(foreign(format!(
            "it is for service {}/{}, this pod serves {}/{}",
            header.namespace,
            header.service,
            ring.namespace(),
            ring.service()
        )));
    }
    let slot = crate::driver::plan::serving_slot(ring, pod);
    if slot != Some(header.slot) {
        return Err(foreign(format!(
            "it is for slot {}, this pod serves {slot:?}",
            header.slot
        )));
    }
    if header.ring_version > ring.version() {
        return Err(foreign(format!(
            "it was written under ring version {}, newer than this pod's {}",
            header.ring_version,
            ring.version()
        )));
    }
    Ok(())
}

/// The format version of the snapshot at `path`, after its magic.
fn format_of(path: &Path) -> Result<u32, SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut start = [0u8; 12];
    let mut read = 0;
    while read < start.len() {
        match file.read(&mut start[read..]) {
            Ok(0) => return Err(corrupt("shorter than a header and a trailer")),
            Ok(n) => read += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(io_error(path)(error)),
        }
    }
    if &start[..8] != MAGIC {
        return Err(corrupt("not a Locus snapshot (bad magic)"));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&start[8..]);
    Ok(u32::from_be_bytes(version))
}

async fn restore_file(
    store: Arc<dyn SessionTable>,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<SnapshotRestore, SnapshotError> {
    let probe = path.to_owned();
    let format = tokio::task::spawn_blocking(move || format_of(&probe))
        .await
        .map_err(|e| SnapshotError::Writer {
            reason: e.to_string(),
        })??;
    match format {
        chunked::FORMAT_VERSION => chunked::restore_file(store, path, ring, pod).await,
        v1::FORMAT_VERSION => v1::restore_file(store, path, ring, pod).await,
        other => Err(SnapshotError::Corrupt {
            path: path.to_owned(),
            reason: format!("format version {other} is not supported"),
        }),
    }
}

#[cfg(test)]
mod tests {
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
}
