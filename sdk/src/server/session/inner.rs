//! What every clone of a [`Member`](super::Member) and its layers share:
//! the handoff state, the in-flight gate, the session key, the load
//! counters, the shutdown options and the running tasks. A module of its own so that the member,
//! its lifecycle, its shutdown and the session layer all depend on it and
//! none of them on another.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::client::SessionKey;
use crate::driver::gate::Gate;
use crate::driver::{AbortOnDrop, Driver};
use crate::handoff::HandoffState;
use crate::intent::ShutdownIntentSource;
use crate::load::PodLoad;
use crate::progress::{ProgressReporter, ProgressTracker};

/// What every clone of a member and its layers share.
pub(crate) struct MemberInner {
    pub(crate) state: Arc<HandoffState>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) key: SessionKey,
    /// The per-shard load counters (the session layer counts).
    pub(crate) load: Arc<PodLoad>,
    /// Time between load reports; zero: none.
    pub(super) load_report_interval: Duration,
    pub(super) snapshot_dir: Option<PathBuf>,
    pub(super) coordination_wait: Duration,
    pub(super) intent: Option<Arc<dyn ShutdownIntentSource>>,
    pub(super) intent_timeout: Duration,
    pub(super) reporter: Arc<dyn ProgressReporter>,
    pub(super) running: Mutex<Option<Running>>,
    /// Held for the whole of [`Member::start`](super::Member::start): a
    /// second call waits for the first, then finds it done (`true`).
    pub(super) started: tokio::sync::Mutex<bool>,
}

/// The tasks of a started member.
pub(super) struct Running {
    pub(super) driver: Arc<Driver>,
    pub(super) tracker: ProgressTracker,
    /// Aborted when dropped.
    pub(super) _tasks: Vec<AbortOnDrop>,
}

impl MemberInner {
    /// The running tasks, locked. A panic while it was held leaves it
    /// usable: it only holds handles.
    pub(super) fn lock_running(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
