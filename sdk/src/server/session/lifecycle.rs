//! Starting a [`Member`]: restore the snapshot of an in-place restart (and
//! write its unsaved sessions back in the background), then start the
//! transition driver, the progress reports and the load reports — once,
//! even when called twice at the same time.

use std::sync::Arc;
use std::time::Duration;

use super::inner::Running;
use super::member::Member;
use crate::driver::{AbortOnDrop, Driver};
use crate::load::DEFAULT_LOAD_TOLERANCE;
use crate::load::reporting::LoadReporting;
use crate::progress::ProgressTracker;
use crate::snapshot::{self, Salvaged, SnapshotError, SnapshotRestore};

/// Longest wait for a ring to check a snapshot against.
const SNAPSHOT_RING_WAIT: Duration = Duration::from_secs(10);
/// The background write-back of restored sessions while the pod serves
/// requests (some in flight or arrived within [`WRITE_BACK_QUIET`]): this
/// many at once for [`WRITE_BACK_WORK`], then a pause of
/// [`WRITE_BACK_REST`], a quarter of the time; the rest of the cores go to
/// the first requests after a restart. While it serves none, the store's
/// `write_back_concurrency` at once, no pause.
const WRITE_BACK_WHILE_SERVING: usize = 4;
/// See [`WRITE_BACK_WHILE_SERVING`].
const WRITE_BACK_WORK: Duration = Duration::from_millis(5);
/// See [`WRITE_BACK_WHILE_SERVING`].
const WRITE_BACK_REST: Duration = Duration::from_millis(15);
/// The pod serves until this long passed without a request.
const WRITE_BACK_QUIET: Duration = Duration::from_millis(100);

/// What [`Member::start`] did.
#[derive(Debug)]
pub struct StartReport {
    /// The snapshot restored, if one was found and accepted.
    pub snapshot: Option<SnapshotRestore>,
    /// Why a snapshot found was ignored.
    pub snapshot_ignored: Option<SnapshotError>,
    /// Files salvaged without a ring to check the snapshot against (their
    /// unsaved records written back, the files kept aside).
    pub salvaged: Vec<Salvaged>,
}

impl Member {
    /// Restores the snapshot if one is configured and present (waiting up to
    /// 10 s for a ring to check it against), then starts the transition
    /// driver, the progress reports and the [load reports](crate::load).
    /// Call it before serving.
    ///
    /// A restored snapshot's unsaved sessions stay dirty in the store and
    /// are written back in the background ([`snapshot::write_back_restored`],
    /// stopped by [`shutdown`](Self::shutdown)), paced to about a quarter of
    /// the time while the pod serves requests, at full speed otherwise; its
    /// file is kept until they are. The sessions it left encoded are decoded
    /// in the background a minute later ([`snapshot::decode_left`], stopped
    /// by the shutdown too). A snapshot that cannot be restored, and files an earlier process
    /// left, have their unsaved records written back before this returns
    /// (see `docs/adr/0004-in-place-restart-durability.md`).
    ///
    /// It runs once: a second call — even one made while the first is still
    /// restoring — waits for the first to finish and returns an empty
    /// report, so a snapshot is never restored twice.
    pub async fn start(&self) -> StartReport {
        let mut report = StartReport {
            snapshot: None,
            snapshot_ignored: None,
            salvaged: Vec::new(),
        };
        // Held until the driver runs: checking and acting under one lock.
        let mut started = self.inner.started.lock().await;
        if *started {
            return report;
        }
        *started = true;
        let mut tasks = Vec::new();
        if let Some(dir) = &self.inner.snapshot_dir
            && snapshot::files_in(dir).await
        {
            let state = &self.inner.state;
            if let Some(ring) = state.ring.wait_for_ring(SNAPSHOT_RING_WAIT).await {
                match snapshot::restore(Arc::clone(&state.store), dir, &ring, &state.pod).await {
                    Ok(Some(restored)) => {
                        if restored.restore.inserted + restored.restore.replaced > 0 {
                            // The sessions left encoded, decoded a minute on
                            // (ADR 0005); stopped by the shutdown.
                            let left = snapshot::decode_left(
                                Arc::clone(&state.store),
                                snapshot::DECODE_LEFT_AFTER,
                            );
                            tasks.push(AbortOnDrop(tokio::spawn(async move {
                                left.await;
                            })));
                        }
                        if restored.pending_write_back {
                            let gate = Arc::clone(&self.inner.gate);
                            let admitted = std::sync::Mutex::new(0);
                            let duty = snapshot::DutyCycle::new(
                                WRITE_BACK_WORK,
                                WRITE_BACK_REST,
                                WRITE_BACK_QUIET,
                                WRITE_BACK_WHILE_SERVING,
                            );
                            let write_back = snapshot::write_back_restored(
                                Arc::clone(&state.store),
                                dir.clone(),
                                restored.unsaved_installed(),
                                Arc::new(move || {
                                    let mut admitted = admitted
                                        .lock()
                                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                                    let serving = gate.serving_since(&mut admitted);
                                    duty.pace(serving, tokio::time::Instant::now())
                                }),
                            );
                            tasks.push(AbortOnDrop(tokio::spawn(async move {
                                write_back.await;
                            })));
                        }
                        report.snapshot = Some(restored);
                    }
                    Ok(None) => {}
                    Err(error) => report.snapshot_ignored = Some(error),
                }
            } else {
                tracing::warn!(
                    wait = ?SNAPSHOT_RING_WAIT,
                    "no ring in time: the snapshot is not restored; writing its unsaved \
                     sessions back and keeping it aside"
                );
                report.salvaged = snapshot::salvage_all(&state.store, dir, &state.pod).await;
            }
        }
        let (tracker, reporting) =
            ProgressTracker::spawn(Arc::clone(&self.inner.reporter), Duration::from_millis(200));
        let driver = Driver::new(
            Arc::clone(&self.inner.state),
            tracker.clone(),
            Arc::clone(&self.inner.gate),
        );
        let task = tokio::spawn(Arc::clone(&driver).run());
        tasks.extend([AbortOnDrop(task), AbortOnDrop(reporting)]);
        let interval = self.inner.load_report_interval;
        if !interval.is_zero() && self.inner.reporter.takes_load() {
            let load = LoadReporting {
                load: Arc::clone(&self.inner.load),
                ring: self.inner.state.ring.clone(),
                pod: self.inner.state.pod.clone(),
                reporter: Arc::clone(&self.inner.reporter),
                interval,
                tolerance: DEFAULT_LOAD_TOLERANCE,
            };
            tasks.push(AbortOnDrop(tokio::spawn(load.run())));
        }
        *self.inner.lock_running() = Some(Running {
            driver,
            tracker,
            _tasks: tasks,
        });
        report
    }
}
