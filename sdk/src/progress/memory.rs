//! [`MemoryProgressReporter`]: progress in a watch channel, for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Progress, ProgressError, ProgressReporter, ShardLoadReport};

/// Keeps the last report in memory; clones share it. A test playing the
/// operator awaits conditions on it ([`wait_for`](Self::wait_for)), and on
/// the load reports ([`wait_for_load`](Self::wait_for_load)).
#[derive(Debug, Clone)]
pub struct MemoryProgressReporter {
    latest: Arc<watch::Sender<Progress>>,
    reports: Arc<AtomicU64>,
    load: Arc<watch::Sender<Option<ShardLoadReport>>>,
    load_reports: Arc<AtomicU64>,
}

impl Default for MemoryProgressReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryProgressReporter {
    /// A reporter holding no report yet.
    pub fn new() -> Self {
        Self {
            latest: Arc::new(watch::Sender::new(Progress::default())),
            reports: Arc::new(AtomicU64::new(0)),
            load: Arc::new(watch::Sender::new(None)),
            load_reports: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The last load report, if any.
    pub fn latest_load(&self) -> Option<ShardLoadReport> {
        self.load.borrow().clone()
    }

    /// How many load reports were received.
    pub fn load_reports(&self) -> u64 {
        self.load_reports.load(Ordering::Acquire)
    }

    /// Waits until `condition` holds on the last load report, for at most
    /// `within`. True if it held.
    pub async fn wait_for_load(
        &self,
        mut condition: impl FnMut(&ShardLoadReport) -> bool,
        within: Duration,
    ) -> bool {
        let mut rx = self.load.subscribe();
        let held = rx.wait_for(|load| load.as_ref().is_some_and(&mut condition));
        matches!(tokio::time::timeout(within, held).await, Ok(Ok(_)))
    }

    /// The last report (element-wise maximum of all reports).
    pub fn latest(&self) -> Progress {
        *self.latest.borrow()
    }

    /// How many reports were received.
    pub fn reports(&self) -> u64 {
        self.reports.load(Ordering::Acquire)
    }

    /// Waits until `condition` holds on the reported progress, for at most
    /// `within`. True if it held.
    pub async fn wait_for(
        &self,
        condition: impl FnMut(&Progress) -> bool,
        within: Duration,
    ) -> bool {
        let mut rx = self.latest.subscribe();
        matches!(
            tokio::time::timeout(within, rx.wait_for(condition)).await,
            Ok(Ok(_))
        )
    }

    /// A receiver of the reported progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.latest.subscribe()
    }
}

impl ProgressReporter for MemoryProgressReporter {
    fn report<'a>(&'a self, progress: &'a Progress) -> BoxFuture<'a, Result<(), ProgressError>> {
        self.latest.send_modify(|held| *held = held.max(*progress));
        self.reports.fetch_add(1, Ordering::AcqRel);
        Box::pin(std::future::ready(Ok(())))
    }

    fn takes_load(&self) -> bool {
        true
    }

    fn report_load<'a>(
        &'a self,
        load: &'a ShardLoadReport,
    ) -> BoxFuture<'a, Result<(), ProgressError>> {
        self.load_reports.fetch_add(1, Ordering::AcqRel);
        self.load.send_replace(Some(load.clone()));
        Box::pin(std::future::ready(Ok(())))
    }
}
