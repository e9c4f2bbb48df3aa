//! Leaving memory: write-back, pressure eviction, idle passivation, flush.
//!
//! A session is evicted only by a holder of its exclusive lock, taken without
//! waiting (a session in use is never a victim), and only after a changed
//! session was stored through the persistence. A failed write-back keeps the
//! session resident, counts `store_write_backs_total{result="failed"}` and
//! logs a warning; under pressure the session is then skipped for
//! [`Limits::write_back_backoff`](super::Limits::write_back_backoff), so a
//! persistence outage does not turn every admission into a round of failing
//! writes.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::clock::later;
use super::entry::{Entry, State};
use super::error::display_key;
use super::index::Shortfall;
use super::metrics::Eviction;
use super::{Persistence, SessionStore, StoreError};

/// Most sessions one pressure round considers.
const MAX_VICTIMS: usize = 64;

/// What one passivation sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Passivation {
    /// Idle sessions written back (if changed) and evicted.
    pub evicted: usize,
    /// Bytes those sessions weighed.
    pub bytes_freed: usize,
    /// Idle sessions kept because their write-back failed.
    pub write_back_failed: usize,
    /// Idle sessions skipped because they were in use (or touched) when the
    /// sweep reached them.
    pub in_use: usize,
    /// Expired tombstones dropped.
    pub tombstones_expired: usize,
}

/// What one [`flush`](SessionStore::flush) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flush {
    /// Changed sessions stored.
    pub written: usize,
    /// Changed sessions whose write-back failed (they stay changed).
    pub failed: usize,
    /// Sessions with nothing to store.
    pub clean: usize,
}

/// How one eviction attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evicted {
    Freed(usize),
    InUse,
    WriteBackFailed,
}

impl<V, P> SessionStore<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    /// Evicts least recently used idle sessions until `short` is covered (or
    /// the candidates run out). Returns how many were evicted.
    pub(super) async fn evict_for(&self, short: Shortfall) -> usize {
        let now = self.inner.clock.now();
        let victims = self.with_index(|index| {
            index.victims(short, MAX_VICTIMS, now, |entry| entry.pending() > 0)
        });
        let mut freed = Shortfall::default();
        for (key, entry) in victims {
            if freed.sessions >= short.sessions && freed.bytes >= short.bytes {
                break;
            }
            if let Evicted::Freed(weight) = self.evict(&key, &entry, Eviction::Pressure, None).await
            {
                freed.sessions += 1;
                freed.bytes += weight;
            }
        }
        if freed.sessions > 0 {
            tracing::debug!(
                sessions = freed.sessions,
                bytes = freed.bytes,
                "evicted sessions under memory pressure"
            );
        }
        freed.sessions
    }

    /// Writes `entry` back if changed, then removes it from the index — if it
    /// is not in use and, when `idle_before` is given, was not accessed after
    /// it.
    async fn evict(
        &self,
        key: &Bytes,
        entry: &Arc<Entry<V>>,
        reason: Eviction,
        idle_before: Option<Instant>,
    ) -> Evicted {
        let Ok(mut state) = entry.state.try_write() else {
            return Evicted::InUse;
        };
        if state.retired || entry.pending() > 0 {
            return Evicted::InUse;
        }
        if state.dirty && self.write_back(key, &mut state).await.is_err() {
            let until = later(self.inner.clock.now(), self.inner.limits.write_back_backoff);
            self.with_index(|index| index.back_off(key, entry, until));
            return Evicted::WriteBackFailed;
        }
        match self.with_index(|index| index.remove(key, entry, idle_before)) {
            Some(weight) => {
                state.retired = true;
                self.inner.metrics.eviction(reason);
                Evicted::Freed(weight)
            }
            None => Evicted::InUse,
        }
    }

    /// Stores the locked `state` through the persistence; marks it clean on
    /// success.
    async fn write_back(&self, key: &[u8], state: &mut State<V>) -> Result<(), StoreError> {
        let limits = &self.inner.limits;
        let stored = tokio::time::timeout(
            limits.persistence_timeout,
            self.inner
                .persistence
                .store(key, state.version, &state.value),
        )
        .await;
        let error = match stored {
            Ok(Ok(())) => {
                state.dirty = false;
                self.inner.metrics.write_back(true);
                return Ok(());
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    key = %display_key(key),
                    version = state.version,
                    %error,
                    "session write-back failed; the session stays in memory"
                );
                StoreError::Persistence {
                    key: display_key(key),
                    action: "store",
                    source: Arc::new(error),
                    retry_after: limits.retry_after,
                }
            }
            Err(_elapsed) => {
                tracing::warn!(
                    key = %display_key(key),
                    version = state.version,
                    "session write-back timed out; the session stays in memory"
                );
                StoreError::PersistenceTimeout {
                    key: display_key(key),
                    action: "store",
                    after: limits.persistence_timeout,
                    retry_after: limits.retry_after,
                }
            }
        };
        self.inner.metrics.write_back(false);
        Err(error)
    }

    /// One passivation sweep: every session idle for `idle_timeout` or more
    /// is written back (if changed) and evicted, `write_back_concurrency` at
    /// a time; expired tombstones are dropped. The passivation task
    /// ([`spawn_passivation`](Self::spawn_passivation)) calls this every
    /// `sweep_interval`; tests and shutdown code may call it directly.
    pub async fn passivate_idle(&self) -> Passivation {
        let limits = &self.inner.limits;
        let now = self.inner.clock.now();
        let mut report = Passivation::default();
        let Some(cutoff) = now.checked_sub(limits.idle_timeout) else {
            return report;
        };
        let (idle, expired) = self.with_index(|index| {
            (
                index.idle(cutoff, limits.max_sessions),
                index.purge_tombstones(now),
            )
        });
        report.tombstones_expired = expired;
        let outcomes: Vec<Evicted> = stream::iter(idle)
            .map(|(key, entry)| async move {
                self.evict(&key, &entry, Eviction::Idle, Some(cutoff)).await
            })
            .buffer_unordered(limits.write_back_concurrency)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Evicted::Freed(weight) => {
                    report.evicted += 1;
                    report.bytes_freed += weight;
                }
                Evicted::InUse => report.in_use += 1,
                Evicted::WriteBackFailed => report.write_back_failed += 1,
            }
        }
        if report != Passivation::default() {
            tracing::debug!(?report, "passivation sweep");
        }
        report
    }

    /// Starts the passivation task: [`passivate_idle`](Self::passivate_idle)
    /// every `sweep_interval`, until the last handle to the store is dropped
    /// (or the returned handle is aborted).
    pub fn spawn_passivation(&self) -> JoinHandle<()> {
        let store = Arc::downgrade(&self.inner);
        let every = self.inner.limits.sweep_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(later(Instant::now(), every), every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = store.upgrade() else {
                    return;
                };
                SessionStore { inner }.passivate_idle().await;
            }
        })
    }

    /// Writes every changed resident session back, without evicting any (for
    /// a shutdown that has no other pod to hand its sessions to). Waits for
    /// each session's exclusive lock in turn.
    pub async fn flush(&self) -> Flush {
        let entries = self.with_index(|index| index.entries());
        let concurrency = self.inner.limits.write_back_concurrency;
        let outcomes: Vec<Option<bool>> = stream::iter(entries)
            .map(|(key, entry)| async move {
                let mut state = entry.state.write().await;
                if state.retired || !state.dirty {
                    return None;
                }
                Some(self.write_back(&key, &mut state).await.is_ok())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut report = Flush::default();
        for outcome in outcomes {
            match outcome {
                Some(true) => report.written += 1,
                Some(false) => report.failed += 1,
                None => report.clean += 1,
            }
        }
        report
    }
}
