//! The load report task of a member pod: every interval, one
//! [`LoadWindow`](super::LoadWindow) taken and handed to the progress reporter
//! ([`ProgressReporter::report_load`]), unless it is
//! [`unchanged`](super::unchanged) from the last one written and the window
//! before it was written: at most one window in a row is skipped, so the
//! annotation's window never ended more than two intervals (and a write)
//! ago while the reporter lives. The operator refuses reports older than
//! three windows (`docs/adr/0002-load-aware-placement.md`, amendment 1).
//!
//! A window is cut at each change of the ring the pod holds: what was counted
//! under the ring before is dropped (a report names one ring version, and the
//! operator reads reports by ring), and a full interval under the new ring
//! follows before the next report.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::ReportOutcome;
use super::{LoadWindow, PodLoad, ShardLoadReport, unchanged};
use crate::progress::ProgressReporter;
use crate::source::RingWatch;

/// What the task needs.
pub(crate) struct LoadReporting {
    pub(crate) load: Arc<PodLoad>,
    pub(crate) ring: RingWatch,
    pub(crate) pod: String,
    pub(crate) reporter: Arc<dyn ProgressReporter>,
    pub(crate) interval: Duration,
    pub(crate) tolerance: f64,
}

fn now() -> std::time::Instant {
    // Tokio's clock, so that tests on a paused clock see whole windows.
    tokio::time::Instant::now().into_std()
}

impl LoadReporting {
    /// Runs until aborted. A report never waits longer than one interval;
    /// a failed one is logged, counted and replaced by the next window's.
    pub(crate) async fn run(self) {
        let start = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval_at(start + self.interval, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut window = LoadWindow::new(start.into_std());
        let mut last: Option<ShardLoadReport> = None;
        // The window before this one was skipped as unchanged: this one is written.
        let mut skipped = false;
        let mut rings = self.ring.clone();
        let mut held = rings.version();
        let mut watching = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = rings.changed(), if watching => {
                    watching = changed;
                    let version = rings.version();
                    if version != held {
                        held = version;
                        // Counted under the ring before: not this ring's load.
                        window.take(&self.load.counters, None, &self.pod, now());
                        ticker.reset();
                    }
                    continue;
                }
            }
            let ring = self.ring.latest();
            let report = window.take(&self.load.counters, ring.as_deref(), &self.pod, now());
            self.load.metrics.window(&report);
            if ring.is_none() {
                // Nothing to place yet: the operator reads reports by ring.
                continue;
            }
            if let Err(error) = report.validate() {
                self.load.metrics.outcome(ReportOutcome::Failed);
                tracing::warn!(pod = %self.pod, %error, "load report not sent: it does not hold together");
                continue;
            }
            if !skipped
                && last
                    .as_ref()
                    .is_some_and(|last| unchanged(last, &report, self.tolerance))
            {
                self.load.metrics.outcome(ReportOutcome::Unchanged);
                skipped = true;
                continue;
            }
            skipped = false;
            let sent = tokio::time::timeout(self.interval, self.reporter.report_load(&report));
            match sent.await {
                Ok(Ok(())) => {
                    self.load.metrics.outcome(ReportOutcome::Patched);
                    tracing::debug!(pod = %self.pod, requests = report.requests, hot = report.hot.len(), "load reported");
                    last = Some(report);
                }
                Ok(Err(error)) => {
                    self.load.metrics.outcome(ReportOutcome::Failed);
                    tracing::warn!(pod = %self.pod, %error, "load report failed; the next window retries");
                }
                Err(_) => {
                    self.load.metrics.outcome(ReportOutcome::Failed);
                    tracing::warn!(pod = %self.pod, interval = ?self.interval, "load report timed out; the next window retries");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::future::BoxFuture;

    use super::*;
    use crate::StaticRingSource;
    use crate::progress::{MemoryProgressReporter, Progress, ProgressError};
    use crate::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
    use crate::source::RingSource as _;

    const POD: &str = "svc-0-x";

    fn ring(version: u64) -> Ring {
        Ring::new(RingParts {
            namespace: "default".into(),
            service: "svc".into(),
            version,
            shards: ShardCount::new(64).unwrap(),
            vnodes: 16,
            slots: vec![Slot {
                index: 0,
                pod: Pod {
                    name: POD.into(),
                    uid: "uid-0".into(),
                    address: SocketAddr::from(([127, 0, 0, 1], 8000)),
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            }],
            current: Assignment::new(vec![0; 64]).unwrap(),
            transition: Transition::Stable,
        })
        .unwrap()
    }

    /// The memory reporter, whose load reports fail while `down` is set.
    #[derive(Clone)]
    struct Flaky {
        memory: MemoryProgressReporter,
        down: Arc<AtomicBool>,
    }

    impl ProgressReporter for Flaky {
        fn report<'a>(
            &'a self,
            progress: &'a Progress,
        ) -> BoxFuture<'a, Result<(), ProgressError>> {
            self.memory.report(progress)
        }

        fn takes_load(&self) -> bool {
            self.memory.takes_load()
        }

        fn report_load<'a>(
            &'a self,
            load: &'a ShardLoadReport,
        ) -> BoxFuture<'a, Result<(), ProgressError>> {
            if self.down.load(Ordering::Acquire) {
                return Box::pin(std::future::ready(Err(ProgressError::Setup {
                    reason: "the API server is down".into(),
                })));
            }
            self.memory.report_load(load)
        }
    }

    fn count(load: &PodLoad, ring: &Ring, requests: u32) {
        for i in 0..requests {
            load.counters.record(ring.shards(), i % 4, 10);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn windows_are_reported_unless_unchanged_and_failures_are_counted() {
        let source = StaticRingSource::with_ring(ring(1));
        let load = Arc::new(PodLoad::default());
        let memory = MemoryProgressReporter::new();
        let down = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(
            LoadReporting {
                load: Arc::clone(&load),
                ring: source.watch(),
                pod: POD.into(),
                reporter: Arc::new(Flaky {
                    memory: memory.clone(),
                    down: Arc::clone(&down),
                }),
                interval: Duration::from_secs(10),
                tolerance: 0.1,
            }
            .run(),
        );
        let tick = || tokio::time::sleep(Duration::from_millis(10_001));
        let outcomes = |outcome| load.metrics.outcomes(outcome);

        count(&load, &ring(1), 1000);
        tick().await;
        let first = memory.latest_load().expect("the first window is reported");
        assert_eq!((first.ring_version, first.shards), (1, 64));
        assert_eq!((first.window_seconds, first.requests), (10, 1000));
        assert_eq!(first.bytes, 10_000);
        assert_eq!(first.owned_shards, 64);
        assert_eq!(first.hot.len(), 4);
        first.validate().unwrap();

        // The same rate again: not sent.
        count(&load, &ring(1), 1040);
        tick().await;
        assert_eq!(memory.load_reports(), 1);
        assert_eq!(outcomes(ReportOutcome::Unchanged), 1);

        // The same rate a third time: sent, so that the operator sees a live report (it
        // refuses one whose window ended more than three windows ago).
        count(&load, &ring(1), 1000);
        tick().await;
        assert_eq!(memory.load_reports(), 2);
        let refreshed = memory.latest_load().unwrap();
        assert!(
            refreshed.window_end_ms >= first.window_end_ms,
            "{refreshed:?}"
        );
        assert!(refreshed.window_end_ms >= 10_000, "the wall clock's");

        // Three times the rate: sent.
        count(&load, &ring(1), 3000);
        tick().await;
        assert_eq!(memory.load_reports(), 3);
        assert_eq!(memory.latest_load().unwrap().requests, 3000);

        // A new ring mid-window: what was counted before it is dropped, and a whole window
        // under the new ring follows; the same rate, sent: the operator reads it by its ring.
        tokio::time::sleep(Duration::from_secs(4)).await;
        count(&load, &ring(1), 500);
        source.publish(ring(2)).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        count(&load, &ring(2), 3000);
        tick().await;
        assert_eq!(memory.load_reports(), 4);
        let report = memory.latest_load().unwrap();
        assert_eq!((report.ring_version, report.requests), (2, 3000));
        assert_eq!(report.window_seconds, 10);

        // The API server down: counted as failed, and the next window retries.
        down.store(true, Ordering::Release);
        count(&load, &ring(2), 100);
        tick().await;
        assert_eq!(outcomes(ReportOutcome::Failed), 1);
        down.store(false, Ordering::Release);
        count(&load, &ring(2), 100);
        tick().await;
        assert_eq!(memory.load_reports(), 5);
        assert_eq!(memory.latest_load().unwrap().requests, 100);
        assert_eq!(outcomes(ReportOutcome::Patched), 5);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_reported_before_a_ring() {
        let source = StaticRingSource::new();
        let load = Arc::new(PodLoad::default());
        let memory = MemoryProgressReporter::new();
        let task = tokio::spawn(
            LoadReporting {
                load: Arc::clone(&load),
                ring: source.watch(),
                pod: POD.into(),
                reporter: Arc::new(memory.clone()),
                interval: Duration::from_secs(1),
                tolerance: 0.1,
            }
            .run(),
        );
        load.counters.record(ShardCount::DEFAULT, 1, 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(memory.load_reports(), 0);
        task.abort();
    }
}
