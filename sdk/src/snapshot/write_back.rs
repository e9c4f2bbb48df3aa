//! The background write-back after a restore
//! (`docs/adr/0004-in-place-restart-durability.md`): a snapshot written
//! without a write-back first holds sessions the persistence does not have.
//! They are restored dirty; the process serves at once and writes every
//! changed session back in the background (the store's
//! [`flush`](crate::store::SessionStore::flush), `write_back_concurrency` at a
//! time), round after round with a growing pause while some fail, and only
//! then removes the file it restored them from ([`RESTORED_FILE`](super::RESTORED_FILE)).
//! Until then the file is the durable copy: a process that crashes in
//! between leaves it for the next one, which writes its records back before
//! it serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{SnapshotError, SnapshotMetrics, io_error, restored_path_in};
use crate::store::SessionTable;

/// First pause after a round in which some write-backs failed.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between rounds.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// What [`write_back_restored`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBack {
    /// Rounds of flush (1 when none failed).
    pub rounds: u32,
    /// Sessions written (the restored unsaved ones, and any changed since).
    pub written: usize,
    /// Time from the start of the write-back to its end.
    pub took: Duration,
}

/// Writes every changed session of `store` back (the restored unsaved
/// ones among them), retried until none fails, then removes the restored
/// snapshot in `dir` (see the `write_back` module's docs). `unsaved`: how many
/// unsaved records the restore installed (the pending gauge).
pub async fn write_back_restored(
    store: Arc<dyn SessionTable>,
    dir: PathBuf,
    unsaved: u64,
) -> WrittenBack {
    let metrics = SnapshotMetrics::process();
    metrics.write_back_started(unsaved);
    let started = Instant::now();
    let mut done = WrittenBack {
        rounds: 0,
        written: 0,
        took: Duration::ZERO,
    };
    let mut pause = FIRST_PAUSE;
    loop {
        let flush = store.flush().await;
        done.rounds += 1;
        done.written += flush.written;
        if flush.failed == 0 {
            break;
        }
        metrics.write_back_retried();
        tracing::warn!(
            failed = flush.failed,
            retry_in = ?pause,
            "restored sessions not all written back yet; the snapshot file stays until they are"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    done.took = started.elapsed();
    let path = restored_path_in(&dir);
    match release(&path).await {
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot remove the restored snapshot"),
    }
    metrics.write_back_done(done.took);
    tracing::info!(
        unsaved,
        written = done.written,
        rounds = done.rounds,
        took = ?done.took,
        "restored sessions written back; snapshot file removed"
    );
    done
}

/// Removes the restored snapshot in `dir` once its sessions are safe another
/// way: a shutdown wrote a complete snapshot of them, or wrote every changed
/// session back. True if one was there.
pub async fn release_restored(dir: &Path) -> Result<bool, SnapshotError> {
    release(&restored_path_in(dir)).await
}

async fn release(path: &Path) -> Result<bool, SnapshotError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io_error(path)(error)),
    }
}
