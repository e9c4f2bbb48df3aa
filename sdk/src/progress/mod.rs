//! Progress reports: how a pod tells the operator where it is in a
//! transition.
//!
//! A pod reports three ring versions (`docs/ring-format.md` §10): the newest
//! ring it *observed* (loaded and routes by), the Warm version it *warmed*
//! (pre-copied every shard it gains) and the Switch version it *drained*
//! (handed over every key it lost). Values only ever go up.
//!
//! * [`Progress`], [`MovedReport`] and its parts: what is reported, and its annotations (the
//!   `locus-contract` crate's types, re-exported: the operator reads them too).
//! * [`ProgressReporter`]: where reports go.
//! * [`KubeProgressReporter`]: server-side apply of the pod's own annotations
//!   ([`annotations`](crate::ring::annotations)), field manager `locus-pod`;
//!   the [load report](crate::load) goes to its own annotation with field
//!   manager [`LOAD_FIELD_MANAGER`], so neither apply removes the other's.
//!   It also reads the pod back on SIGTERM
//!   ([`ProgressReporter::intent_source`]): a pod being deleted hands its
//!   sessions over instead of writing a snapshot that would die with it.
//! * [`MemoryProgressReporter`]: a watch channel, for tests (the test plays
//!   the operator and awaits conditions on it).
//! * [`ProgressTracker`]: keeps the maxima and sends them from a background
//!   task, latest value wins, retrying failed reports with backoff, so the
//!   transition driver never waits on the API server.

mod kube_reporter;
mod memory;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
pub use locus_contract::progress::{
    ColdTakeovers, LoadReportError, MovedReport, MovedSessions, MovedSessionsError, Progress,
    ReportState, ServedTakeovers, ShardLoad, ShardLoadReport, TakeoverPath, UnreadableAnnotation,
    WarmTakeovers,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::kube_reporter::{FIELD_MANAGER, KubeProgressReporter, LOAD_FIELD_MANAGER};
pub use self::memory::MemoryProgressReporter;
use crate::intent::ShutdownIntentSource;
pub use crate::own_pod::NAMESPACE_ENV;

/// Why a report failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgressError {
    /// The API server refused or did not answer.
    #[error("cannot patch pod {namespace}/{pod}: {source}")]
    Patch {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The reporter could not be set up (missing environment, no client).
    #[error("progress reporter setup: {reason}")]
    Setup {
        /// Why.
        reason: String,
    },
}

/// Where progress reports go.
pub trait ProgressReporter: Send + Sync + 'static {
    /// Records `progress` (every field that is `Some`). Called from the
    /// tracker's background task with growing values; may be slow.
    fn report<'a>(&'a self, progress: &'a Progress) -> BoxFuture<'a, Result<(), ProgressError>>;

    /// A reporter that writes to the pod's own object can also read it back
    /// on SIGTERM, to tell a pod being deleted from a container restarted in
    /// place ([`ShutdownIntentSource`]). A
    /// [`Member`](crate::server::session::Member) given no source of its own
    /// uses this one. Default: none.
    fn intent_source(&self) -> Option<Arc<dyn ShutdownIntentSource>> {
        None
    }

    /// Whether [`report_load`](Self::report_load) goes anywhere: a member
    /// runs its [load reports](crate::load) only for a reporter that takes
    /// them. Default: false.
    fn takes_load(&self) -> bool {
        false
    }

    /// Records the pod's per-shard load of the last window (replacing the
    /// previous report). Called from the member's load report task, once per
    /// interval at most; may be slow (the task waits at most one interval).
    /// Default: drops it.
    fn report_load<'a>(
        &'a self,
        load: &'a ShardLoadReport,
    ) -> BoxFuture<'a, Result<(), ProgressError>> {
        let _ = load;
        Box::pin(std::future::ready(Ok(())))
    }
}

impl<T: ProgressReporter + ?Sized> ProgressReporter for Arc<T> {
    fn report<'a>(&'a self, progress: &'a Progress) -> BoxFuture<'a, Result<(), ProgressError>> {
        (**self).report(progress)
    }

    fn intent_source(&self) -> Option<Arc<dyn ShutdownIntentSource>> {
        (**self).intent_source()
    }

    fn takes_load(&self) -> bool {
        (**self).takes_load()
    }

    fn report_load<'a>(
        &'a self,
        load: &'a ShardLoadReport,
    ) -> BoxFuture<'a, Result<(), ProgressError>> {
        (**self).report_load(load)
    }
}

/// A reporter that drops every report (a pod outside Kubernetes, with no
/// operator to tell).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgressReporter;

impl ProgressReporter for NoProgressReporter {
    fn report<'a>(&'a self, _progress: &'a Progress) -> BoxFuture<'a, Result<(), ProgressError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Keeps a pod's progress maxima and reports them in the background; see
/// the [module docs](self). Clones share the state.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    wanted: watch::Sender<Progress>,
    reported: watch::Receiver<Progress>,
}

impl ProgressTracker {
    /// Starts the reporting task; it ends when every tracker clone is dropped.
    pub fn spawn(reporter: impl ProgressReporter, retry: Duration) -> (Self, JoinHandle<()>) {
        let (desired, mut targets) = watch::channel(Progress::default());
        let (confirmed, acknowledged) = watch::channel(Progress::default());
        let task = tokio::spawn(async move {
            let mut sent = Progress::default();
            let mut backoff = retry;
            loop {
                let target = *targets.borrow_and_update();
                if target != sent {
                    match reporter.report(&target).await {
                        Ok(()) => {
                            sent = target;
                            confirmed.send_replace(sent);
                            backoff = retry;
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "progress report failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                            continue;
                        }
                    }
                }
                if targets.changed().await.is_err() {
                    return;
                }
            }
        });
        (
            Self {
                wanted: desired,
                reported: acknowledged,
            },
            task,
        )
    }

    fn raise(&self, change: &Progress) {
        self.wanted.send_if_modified(|held| {
            let next = held.max(*change);
            let modified = next != *held;
            *held = next;
            modified
        });
    }

    /// Reports that ring `version` was observed.
    pub fn observed(&self, version: u64) {
        self.raise(&Progress {
            observed: Some(version),
            ..Progress::default()
        });
    }

    /// Reports that the Warm ring `version` was warmed.
    pub fn warmed(&self, version: u64) {
        self.raise(&Progress {
            warmed: Some(version),
            ..Progress::default()
        });
    }

    /// Reports that the Switch ring `version` was drained.
    pub fn drained(&self, version: u64) {
        self.raise(&Progress {
            drained: Some(version),
            ..Progress::default()
        });
    }

    /// Reports how the sessions taken over in the last transitions arrived.
    pub fn moved(&self, moved: MovedReport) {
        self.raise(&Progress {
            moved: Some(moved),
            ..Progress::default()
        });
    }

    /// What the tracker wants reported.
    pub fn wanted(&self) -> Progress {
        *self.wanted.borrow()
    }

    /// What the reporter last confirmed.
    pub fn reported(&self) -> Progress {
        *self.reported.borrow()
    }

    /// Waits until the reporter confirmed at least `wanted` (or `within`
    /// passes); true if it did.
    pub async fn wait_reported(&self, wanted: Progress, within: Duration) -> bool {
        let mut rx = self.reported.clone();
        let ok = rx.wait_for(|p| p.max(wanted) == *p);
        matches!(tokio::time::timeout(within, ok).await, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Flaky {
        inner: MemoryProgressReporter,
        failures: AtomicUsize,
    }

    impl ProgressReporter for Flaky {
        fn report<'a>(
            &'a self,
            progress: &'a Progress,
        ) -> BoxFuture<'a, Result<(), ProgressError>> {
            if self
                .failures
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                return Box::pin(std::future::ready(Err(ProgressError::Setup {
                    reason: "flaky".into(),
                })));
            }
            self.inner.report(progress)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn maxima_are_reported_and_failures_retried() {
        let memory = MemoryProgressReporter::new();
        let reporter = Flaky {
            inner: memory.clone(),
            failures: AtomicUsize::new(2),
        };
        let (tracker, _task) = ProgressTracker::spawn(reporter, Duration::from_millis(50));
        tracker.observed(5);
        tracker.warmed(5);
        tracker.observed(4);
        let moved = MovedReport::new([MovedSessions {
            version: 5,
            warm: WarmTakeovers {
                pushed: 10,
                ..WarmTakeovers::default()
            },
            ..MovedSessions::default()
        }]);
        tracker.moved(moved);
        tracker.moved(MovedReport::new([MovedSessions {
            version: 3,
            ..MovedSessions::default()
        }]));
        let want = Progress {
            observed: Some(5),
            warmed: Some(5),
            drained: None,
            moved: Some(moved),
        };
        assert!(tracker.wait_reported(want, Duration::from_secs(5)).await);
        assert_eq!(memory.latest(), want);
        assert!(memory.reports() >= 1);
        tracker.drained(6);
        assert!(
            memory
                .wait_for(|p| p.drained == Some(6), Duration::from_secs(5))
                .await
        );
        assert_eq!(memory.latest().observed, Some(5), "never goes down");
        assert_eq!(
            memory.latest().moved,
            Some(moved),
            "an older transition's counts are ignored"
        );
    }
}
