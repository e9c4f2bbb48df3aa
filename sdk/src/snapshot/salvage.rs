//! What becomes of a snapshot file that cannot be restored, or that an
//! earlier process left behind (`docs/adr/0004-in-place-restart-durability.md`).
//!
//! Such a file may hold the only copy of writes its writer never wrote back
//! (an in-place restart skips the write-back). It is never installed — its
//! state may be older than what a process since served — and never deleted:
//! the unsaved records of every chunk that checks are written back through
//! the persistence, each with the stamp the file gives it (conditional, so
//! none replaces a newer write), retried until the persistence takes them;
//! then the file is renamed `sessions.snapshot.kept-<unix ms>` and left for
//! inspection. This runs before the pod serves.
//!
//! What can be trusted: a format 2 file chunk by chunk (each chunk has its
//! own checksum; no trailer needed, so a file cut short by a killed writer
//! gives its complete chunks); a format 1 file only whole (one checksum over
//! everything); a file whose header names another pod and another service,
//! or whose format this build cannot read, not at all (it is kept, nothing is
//! written back, and it is logged at `error`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use futures::stream;

use super::{
    SNAPSHOT_FILE, SnapshotError, SnapshotHeader, SnapshotMetrics, chunked, format_of, path_in, v1,
};
use crate::ring::Ring;
use crate::store::{SessionRecord, SessionTable, StoreError};

/// The name a restored snapshot takes while its unsaved records are written
/// back by the process that restored it.
pub const RESTORED_FILE: &str = "sessions.snapshot.restored";

/// Kept-aside files are named this, then the Unix time in milliseconds.
pub const KEPT_PREFIX: &str = "sessions.snapshot.kept-";

/// First pause after a round of write-backs that did not all succeed.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between rounds.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The restored snapshot in `dir` whose write-back has not finished.
pub fn restored_path_in(dir: &Path) -> PathBuf {
    dir.join(RESTORED_FILE)
}

/// The snapshot being written in `dir`.
pub(crate) fn tmp_path_in(dir: &Path) -> PathBuf {
    dir.join(format!("{SNAPSHOT_FILE}.tmp"))
}

/// What a salvage did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// Where the file is kept now.
    pub kept: PathBuf,
    /// Its format version, if it could be read.
    pub format: Option<u32>,
    /// Chunks (format 2) or files (format 1) that checked.
    pub chunks: u64,
    /// Chunks that did not (damaged, cut short).
    pub bad_chunks: u64,
    /// Unsaved records found in what checked.
    pub unsaved: u64,
    /// Of those, written back.
    pub written_back: u64,
    /// Of those, refused for good (the codec cannot decode them).
    pub refused: u64,
    /// Why nothing of the file could be trusted, if so.
    pub untrusted: Option<String>,
}

/// Writes back what can be trusted of every file an earlier process left
/// in `dir` — a restored snapshot whose write-back did not finish
/// ([`RESTORED_FILE`]), a snapshot whose writer was killed before it was
/// complete (`sessions.snapshot.tmp`) — and keeps them aside. `pod`, `ring`:
/// who asks (a file of another pod and another service is not written back).
pub async fn salvage_left_overs(
    store: &Arc<dyn SessionTable>,
    dir: &Path,
    pod: &str,
    ring: Option<&Ring>,
) -> Vec<Salvaged> {
    let mut done = Vec::new();
    for path in [restored_path_in(dir), tmp_path_in(dir)] {
        if tokio::fs::try_exists(&path).await.unwrap_or(true) {
            done.push(salvage_file(store, &path, dir, pod, ring).await);
        }
    }
    done
}

/// [`salvage_left_overs`], and the snapshot itself: for a process that
/// cannot restore it (no ring to check it against).
pub async fn salvage_all(store: &Arc<dyn SessionTable>, dir: &Path, pod: &str) -> Vec<Salvaged> {
    let mut done = salvage_left_overs(store, dir, pod, None).await;
    let path = path_in(dir);
    if tokio::fs::try_exists(&path).await.unwrap_or(true) {
        done.push(salvage_file(store, &path, dir, pod, None).await);
    }
    done
}

/// Writes back what can be trusted of the file at `path`, then keeps it
/// aside (see the [module docs](self)).
pub(crate) async fn salvage_file(
    store: &Arc<dyn SessionTable>,
    path: &Path,
    dir: &Path,
    pod: &str,
    ring: Option<&Ring>,
) -> Salvaged {
    let mut salvaged = write_back_file(store, path, pod, ring).await;
    salvaged.kept = keep_aside(path, dir).await;
    SnapshotMetrics::process().kept_aside();
    if let Some(reason) = &salvaged.untrusted {
        tracing::error!(
            file = %path.display(),
            kept = %salvaged.kept.display(),
            %reason,
            "snapshot kept aside; none of its records could be written back \
             (those it held unsaved are not in the persistence)"
        );
    } else {
        tracing::warn!(
            file = %path.display(),
            kept = %salvaged.kept.display(),
            chunks = salvaged.chunks,
            bad_chunks = salvaged.bad_chunks,
            unsaved = salvaged.unsaved,
            written_back = salvaged.written_back,
            refused = salvaged.refused,
            "snapshot salvaged: the unsaved records of every chunk that checks written back; \
             the file is kept aside"
        );
    }
    salvaged
}

/// Writes back the unsaved records of what checks in the file at `path`
/// (see the [module docs](self)); the file stays where it is.
pub(crate) async fn write_back_file(
    store: &Arc<dyn SessionTable>,
    path: &Path,
    pod: &str,
    ring: Option<&Ring>,
) -> Salvaged {
    let mut salvaged = Salvaged {
        kept: path.to_owned(),
        format: None,
        chunks: 0,
        bad_chunks: 0,
        unsaved: 0,
        written_back: 0,
        refused: 0,
        untrusted: None,
    };
    let reading = path.to_owned();
    let read = tokio::task::spawn_blocking(move || read_trusted(&reading))
        .await
        .map_err(|e| SnapshotError::Writer {
            reason: e.to_string(),
        })
        .and_then(|read| read);
    let (format, header, chunks, bad_chunks, unsaved) = match read {
        Ok(read) => read,
        Err(error) => {
            salvaged.untrusted = Some(error.to_string());
            return salvaged;
        }
    };
    salvaged.format = Some(format);
    salvaged.chunks = chunks;
    salvaged.bad_chunks = bad_chunks;
    let ours = header.as_ref().is_some_and(|header| {
        header.pod == pod
            || ring.is_some_and(|ring| {
                header.namespace == ring.namespace() && header.service == ring.service()
            })
    });
    if !ours {
        salvaged.untrusted = Some(match header {
            None => "its header cannot be read".to_owned(),
            Some(header) => format!(
                "it was written by pod {} of service {}/{}",
                header.pod, header.namespace, header.service
            ),
        });
        return salvaged;
    }
    salvaged.unsaved = unsaved.len() as u64;
    let (written, refused) = write_records(store.as_ref(), unsaved).await;
    salvaged.written_back = written;
    salvaged.refused = refused;
    salvaged
}

/// The file's format, header, chunks that check and do not, and the
/// unsaved records of those that check.
type Trusted = (u32, Option<SnapshotHeader>, u64, u64, Vec<SessionRecord>);

fn read_trusted(path: &Path) -> Result<Trusted, SnapshotError> {
    match format_of(path)? {
        chunked::FORMAT_VERSION => {
            let read = chunked::salvage_read(path)?;
            Ok((
                chunked::FORMAT_VERSION,
                read.header,
                read.chunks,
                read.bad_chunks,
                read.unsaved,
            ))
        }
        v1::FORMAT_VERSION => {
            let (header, unsaved) = v1::unsaved_records(path)?;
            Ok((v1::FORMAT_VERSION, Some(header), 1, 0, unsaved))
        }
        other => Err(SnapshotError::Corrupt {
            path: path.to_owned(),
            reason: format!("format version {other} is not supported by this build"),
        }),
    }
}

/// Renames `path` to a kept-aside name in `dir`; returns where it is (its
/// old name if the rename failed, logged).
async fn keep_aside(path: &Path, dir: &Path) -> PathBuf {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut kept = dir.join(format!("{KEPT_PREFIX}{millis}"));
    let mut n = 1;
    while tokio::fs::try_exists(&kept).await.unwrap_or(false) {
        kept = dir.join(format!("{KEPT_PREFIX}{millis}-{n}"));
        n += 1;
    }
    match tokio::fs::rename(path, &kept).await {
        Ok(()) => kept,
        Err(error) => {
            tracing::error!(file = %path.display(), %error, "cannot keep a snapshot aside");
            path.to_owned()
        }
    }
}

/// Whether a failed write-back may succeed later.
fn retryable(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Persistence { .. } | StoreError::PersistenceTimeout { .. }
    )
}

/// Writes `records` through the persistence (conditional on their stamps),
/// `write_back_concurrency` at a time; retries those that failed in rounds,
/// with a growing pause, until none fails but for good. Returns (written,
/// refused for good).
pub(crate) async fn write_records(
    store: &dyn SessionTable,
    mut records: Vec<SessionRecord>,
) -> (u64, u64) {
    let concurrency = store.limits().write_back_concurrency;
    let (mut written, mut refused) = (0u64, 0u64);
    let mut pause = FIRST_PAUSE;
    loop {
        let outcomes: Vec<(SessionRecord, Result<bool, StoreError>)> = stream::iter(records)
            .map(|record| async move {
                let done = store.write_record(&record).await;
                (record, done)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut again = Vec::new();
        let mut round = 0;
        for (record, done) in outcomes {
            match done {
                Ok(_) => round += 1,
                Err(error) if retryable(&error) => {
                    SnapshotMetrics::process().salvage_failed();
                    again.push(record);
                }
                Err(error) => {
                    tracing::error!(%error, "an unsaved snapshot record cannot be written back");
                    refused += 1;
                }
            }
        }
        written += round;
        SnapshotMetrics::process().salvaged(round);
        if again.is_empty() {
            return (written, refused);
        }
        tracing::warn!(
            failed = again.len(),
            retry_in = ?pause,
            "unsaved snapshot records not written back yet; the pod does not serve until they are"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
        records = again;
    }
}
