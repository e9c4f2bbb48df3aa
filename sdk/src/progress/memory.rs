//! [`MemoryProgressReporter`]: progress in a watch channel, for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Progress, ProgressError, ProgressReporter};

/// Keeps the last report in memory; clones share it. A test playing the
/// operator awaits conditions on it ([`wait_for`](Self::wait_for)).
#[derive(Debug, Clone)]
pub struct MemoryProgressReporter {
    latest: Arc<watch::Sender<Progress>>,
    reports: Arc<AtomicU64>,
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
        }
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
}
