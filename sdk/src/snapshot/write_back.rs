//! The background write-back after a restore
//! (`docs/adr/0004-in-place-restart-durability.md`): a snapshot written
//! without a write-back first holds sessions the persistence does not have.
//! They are restored dirty; the process serves at once and writes every
//! changed session back in the background (the store's
//! [`flush_paced`](crate::store::SessionStore::flush_paced): as many at a
//! time as its pace says, `write_back_concurrency` at most, so that it can
//! yield to the requests the pod serves), round after round with a growing
//! pause while some fail, and only then removes the file it restored them
//! from ([`RESTORED_FILE`](super::RESTORED_FILE)).
//! Until then the file is the durable copy: a process that crashes in
//! between leaves it for the next one, which writes its records back before
//! it serves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{SnapshotError, SnapshotMetrics, io_error, restored_path_in};
use crate::store::{FlushPace, SessionTable};

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

/// What the write-back does before its next session, asked before each.
pub type WriteBackPace = Arc<dyn Fn() -> FlushPace + Send + Sync>;

/// The pace of a background write-back beside the requests a pod serves:
/// while it serves none, `write_back_concurrency` at once; while it serves,
/// `concurrency` at once for `work`, then a pause of `rest`, so that the
/// write-back takes about `work / (work + rest)` of the time and leaves the
/// rest of the cores to the requests. The pod counts as serving until
/// `quiet` passed without a request. Pure logic: the caller says whether
/// requests came since it last asked, and what time it is.
#[derive(Debug)]
pub struct DutyCycle {
    work: Duration,
    rest: Duration,
    quiet: Duration,
    concurrency: usize,
    state: Mutex<Cycle>,
}

#[derive(Debug, Default)]
struct Cycle {
    /// When the current working period began, if one did.
    working_since: Option<Instant>,
    /// When requests were last seen.
    last_request: Option<Instant>,
}

impl DutyCycle {
    /// See the [type docs](Self).
    pub fn new(work: Duration, rest: Duration, quiet: Duration, concurrency: usize) -> Self {
        Self {
            work,
            rest,
            quiet,
            concurrency,
            state: Mutex::new(Cycle::default()),
        }
    }

    /// The pace for the next write-back; `requests`: whether requests were
    /// in flight or arrived since the last call.
    pub fn pace(&self, requests: bool, now: Instant) -> FlushPace {
        let mut cycle = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if requests {
            cycle.last_request = Some(now);
        }
        let serving = cycle
            .last_request
            .is_some_and(|seen| now.saturating_duration_since(seen) < self.quiet);
        if !serving {
            cycle.working_since = None;
            return FlushPace::Run(usize::MAX);
        }
        match cycle.working_since {
            Some(began) if now.saturating_duration_since(began) >= self.work => {
                cycle.working_since = None;
                FlushPace::Pause(self.rest)
            }
            Some(_) => FlushPace::Run(self.concurrency),
            None => {
                cycle.working_since = Some(now);
                FlushPace::Run(self.concurrency)
            }
        }
    }
}

/// Writes every changed session of `store` back (the restored unsaved
/// ones among them), retried until none fails, then removes the restored
/// snapshot in `dir` (see the `write_back` module's docs). `unsaved`: how many
/// unsaved records the restore installed (the pending gauge); `pace`: how many
/// write-backs run at once (a member gives few while it serves requests).
pub async fn write_back_restored(
    store: Arc<dyn SessionTable>,
    dir: PathBuf,
    unsaved: u64,
    pace: WriteBackPace,
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
        let flush = store.flush_paced(pace.as_ref()).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_pod_gets_the_rest_of_each_cycle() {
        let duty = DutyCycle::new(
            Duration::from_millis(5),
            Duration::from_millis(15),
            Duration::from_millis(100),
            2,
        );
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Never a request: as many as the store allows, no pause.
        assert_eq!(duty.pace(false, at(0)), FlushPace::Run(usize::MAX));
        // Serving: a working period of 5 ms at 2 at once, then 15 ms of rest.
        assert_eq!(duty.pace(true, at(1)), FlushPace::Run(2));
        assert_eq!(duty.pace(true, at(5)), FlushPace::Run(2));
        assert_eq!(
            duty.pace(true, at(6)),
            FlushPace::Pause(Duration::from_millis(15))
        );
        // After the rest, a new working period; a moment without a request
        // between two is still serving.
        assert_eq!(duty.pace(false, at(21)), FlushPace::Run(2));
        assert_eq!(duty.pace(false, at(25)), FlushPace::Run(2));
        assert_eq!(
            duty.pace(true, at(26)),
            FlushPace::Pause(Duration::from_millis(15))
        );
        // 100 ms without a request: idle, full speed; the next request
        // starts a new working period.
        assert_eq!(duty.pace(false, at(125)), FlushPace::Run(2));
        assert_eq!(duty.pace(false, at(126)), FlushPace::Run(usize::MAX));
        assert_eq!(duty.pace(false, at(140)), FlushPace::Run(usize::MAX));
        assert_eq!(duty.pace(true, at(150)), FlushPace::Run(2));
        assert_eq!(duty.pace(false, at(154)), FlushPace::Run(2));
        assert_eq!(
            duty.pace(false, at(155)),
            FlushPace::Pause(Duration::from_millis(15))
        );
    }
}
