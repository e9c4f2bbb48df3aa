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
//! format version. [`write()`] writes format 2 (`snapshot/chunked/`: large chunks, each
//! with its own checksum, checked and decoded in parallel, for memory speed);
//! [`restore()`] reads format 2 and format 1 (`snapshot/v1.rs`, the first format, one
//! checksum over a stream of records).
//!
//! The file is written to `sessions.snapshot.tmp`, synced, then renamed, so a
//! snapshot is either complete or absent. Each record says whether its
//! writer had written it back (the dirty flag): a pod that positively
//! restarts in place writes nothing back before its snapshot, so the file is
//! then the only durable copy of those writes until the restoring process
//! has written them back. Hence (`docs/adr/0004-in-place-restart-durability.md`):
//!
//! * [`restore()`] installs the records (dirty ones stay dirty in the store,
//!   so eviction writes them back first), writes back at once the unsaved
//!   records of keys the slot no longer owns, and renames the file
//!   [`RESTORED_FILE`]; the caller serves and runs [`write_back_restored`] in
//!   the background, which removes the file once every changed session is
//!   written back. A file without unsaved records is removed at once. A
//!   snapshot is never installed twice.
//! * A snapshot that is corrupt, truncated, from another service or slot,
//!   from a newer ring than the pod's, or in a format this build cannot read
//!   is logged and not installed (every chunk is checked before the first
//!   record is); it is *salvaged* ([`salvage`]): the unsaved
//!   records of every chunk that checks are written back, and the file is
//!   kept aside (`sessions.snapshot.kept-<unix ms>`, never deleted). The pod
//!   starts cold, its sessions loaded from the persistence as requests come.
//! * A [`RESTORED_FILE`] or a `sessions.snapshot.tmp` left by an earlier
//!   process (crashed during its write-back; killed while writing) is
//!   salvaged the same way before anything is restored.
//!
//! Records of keys the slot no longer owns under the current ring are not
//! installed.
//!
//! With a durable persistence, the clean records of a format 2 file stay
//! encoded in the store until their first use
//! (`docs/adr/0005-restore-without-building-the-heap.md`); [`decode_left`],
//! run in the background, decodes those no request used within
//! [`DECODE_LEFT_AFTER`] of the restore.
//!
//! The file work runs on tokio's blocking pool (`spawn_blocking`), never on
//! the async worker threads.
//!
//! What a restore or a write did is recorded in the process's
//! [`SnapshotMetrics`] (the `locus_snapshot_*` metrics of every
//! [`Metrics`](crate::Metrics) registry) besides the returned report.

mod chunked;
mod mapped;
mod metrics;
pub mod salvage;
mod v1;
mod write_back;

pub use self::metrics::SnapshotMetrics;
pub use self::salvage::{
    RESTORED_FILE, Salvaged, restored_path_in, salvage_all, salvage_left_overs,
};
pub use self::write_back::{
    DutyCycle, WriteBackPace, WrittenBack, release_restored, write_back_restored,
};

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ring::Ring;
use crate::store::{Restore, SessionRecord, SessionTable};

/// How long after a restore [`decode_left`] starts decoding the sessions it
/// left encoded.
pub const DECODE_LEFT_AFTER: Duration = Duration::from_secs(60);

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
    /// Unsaved records of keys this pod does not own, written back before
    /// the restore returned (the pod that owns them may load them).
    pub not_owned_written_back: u64,
    /// True when unsaved records were installed: the file was renamed
    /// [`RESTORED_FILE`] and stays until [`write_back_restored`] has written
    /// them back. False: the file held none and was removed.
    pub pending_write_back: bool,
}

impl SnapshotRestore {
    /// Unsaved records installed (or refused by the store: then written back
    /// before the restore returned).
    pub fn unsaved_installed(&self) -> u64 {
        self.dirty.saturating_sub(self.not_owned_written_back)
    }
}

/// The snapshot file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// True if `dir` holds a snapshot, a restored snapshot whose write-back has
/// not finished, or a snapshot being written: something [`restore()`] acts on.
pub async fn files_in(dir: &Path) -> bool {
    for path in [
        path_in(dir),
        restored_path_in(dir),
        salvage::tmp_path_in(dir),
    ] {
        if tokio::fs::try_exists(&path).await.unwrap_or(true) {
            return true;
        }
    }
    false
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

/// Restores the snapshot in `dir` into `store`: the records of keys `pod`
/// owns under `ring` are installed, the others skipped (their unsaved ones
/// written back). `Ok(None)`: no snapshot. Left-overs of an earlier process
/// are salvaged first; a snapshot that cannot be restored is salvaged and
/// kept aside; a restored one with unsaved records is renamed
/// [`RESTORED_FILE`] for [`write_back_restored`] (see the [module
/// docs](self)). Recorded in [`SnapshotMetrics::process`].
pub async fn restore(
    store: Arc<dyn SessionTable>,
    dir: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<Option<SnapshotRestore>, SnapshotError> {
    salvage_left_overs(&store, dir, pod, Some(ring)).await;
    let path = path_in(dir);
    // An error other than "absent" (permissions, say) shows in the restore.
    if !tokio::fs::try_exists(&path).await.unwrap_or(true) {
        return Ok(None);
    }
    let (mut report, unsaved_not_owned) =
        match restore_file(Arc::clone(&store), &path, ring, pod).await {
            Ok(restored) => restored,
            Err(error) => {
                SnapshotMetrics::process().ignored();
                tracing::warn!(%error, "snapshot not restored; salvaging it and starting cold");
                salvage::salvage_file(&store, &path, dir, pod, Some(ring)).await;
                return Err(error);
            }
        };
    if !unsaved_not_owned.is_empty() {
        let (written, _refused) = salvage::write_records(store.as_ref(), unsaved_not_owned).await;
        report.not_owned_written_back = written;
    }
    if report.restore.failed > 0 && report.dirty > 0 {
        // The store refused some records (too large, undecodable, no room):
        // those unsaved are nowhere else. Write every unsaved record of the
        // file back now (conditional: the installed ones change nothing).
        let salvaged = salvage::write_back_file(&store, &path, pod, Some(ring)).await;
        tracing::warn!(
            refused = report.restore.failed,
            written_back = salvaged.written_back,
            "snapshot records refused by the store; the file's unsaved records written back"
        );
    }
    if report.unsaved_installed() > 0 {
        let restored = restored_path_in(dir);
        match tokio::fs::rename(&path, &restored).await {
            Ok(()) => report.pending_write_back = true,
            Err(error) => {
                // Never restored twice: a second restore after this process
                // served would bring older state back.
                tracing::error!(
                    path = %path.display(),
                    %error,
                    "cannot keep the restored snapshot for its write-back; removing it \
                     (its unsaved sessions are in memory only until written back)"
                );
                remove_restored_snapshot(&path).await;
            }
        }
    } else {
        remove_restored_snapshot(&path).await;
    }
    SnapshotMetrics::process().restored(&report);
    tracing::info!(
        path = %path.display(),
        records = report.records,
        dirty = report.dirty,
        restored = report.restore.inserted + report.restore.replaced,
        not_owned = report.not_owned,
        not_owned_written_back = report.not_owned_written_back,
        failed = report.restore.failed,
        pending_write_back = report.pending_write_back,
        bytes = report.bytes,
        took = ?report.took,
        "snapshot restored"
    );
    Ok(Some(report))
}

/// Waits `after`, then decodes the sessions a restore left encoded that no
/// request has used since, a page at a time off the request path, so that
/// the store's memory converges to what a decoded store holds; returns how
/// many it decoded. Run it in a task that the pod's shutdown aborts.
pub async fn decode_left(store: Arc<dyn SessionTable>, after: Duration) -> usize {
    tokio::time::sleep(after).await;
    store.decode_left().await
}

async fn remove_restored_snapshot(path: &Path) {
    if let Err(error) = tokio::fs::remove_file(path).await {
        tracing::warn!(path = %path.display(), %error, "cannot remove the snapshot after reading it");
    }
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
) -> Result<(SnapshotRestore, Vec<SessionRecord>), SnapshotError> {
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
mod tests;
