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
//!
//! Under pressure, concurrent requests must not compete for one victim (the
//! losers would find it locked by the winner's write-back and give up while
//! other idle sessions wait to be evicted), nor for the room a victim leaves
//! (a request that evicted would find its room taken). So a request that
//! needs room:
//!
//! 1. *claims* its victims in the index, by the clock (a session touched
//!    since the clock hand last passed it gets a second chance; see
//!    `Index::claim`): claimed sessions are skipped by other claims, so each
//!    request evicts distinct ones;
//! 2. evicts them into its own [`Reservation`]: the freed room is held back
//!    for it, and its next bound check is the only one that counts it free;
//! 3. when a victim turns out to be in use, claims the next candidate;
//! 4. when no candidate is left but other requests' evictions are running,
//!    waits for one of them to end (each ends within `persistence_timeout`)
//!    and looks again, a bounded number of times.
//!
//! It answers [`StoreError::Full`](super::StoreError::Full) only when no
//! resident session can be claimed: each is in use, being evicted for
//! another request, or backed off after a failed write-back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, FuturesUnordered};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::clock::later;
use super::entry::{Entry, State};
use super::error::display_key;
use super::index::{Room, Shortfall, SlabCursor};
use super::metrics::Eviction;
use super::{Persistence, SessionStore, Stamp, StoreError};

/// Most sessions one round of pressure eviction tries to evict.
const MAX_VICTIMS: usize = 64;

/// Index nodes one passivation sweep looks at per hold of the index lock.
const IDLE_PAGE: usize = 16_384;

/// How many times one round of pressure eviction, finding no candidate, waits
/// for another request's eviction to end (or, with candidates that were in
/// use when tried, lets other tasks run) before it looks again.
const MAX_EVICTION_WAITS: usize = 4;

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

/// What a [paced flush](SessionStore::flush_paced) does before its next
/// write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPace {
    /// Start it once fewer than this many write-backs run.
    Run(usize),
    /// Wait this long first (then ask again).
    Pause(Duration),
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
    /// Room held for one request, given back when it is dropped unspent.
    pub(super) fn reservation(&self) -> Reservation<'_, V, P> {
        Reservation {
            store: self,
            room: Room::default(),
        }
    }

    /// One round of pressure eviction: evicts idle sessions not touched
    /// since the clock hand last passed them into `reserved` until it holds `short` more than it did (see
    /// the [module docs](self)). Returns how many sessions it evicted; the
    /// caller checks its bound again (with its room) if any.
    pub(super) async fn evict_for(
        &self,
        short: Shortfall,
        reserved: &mut Reservation<'_, V, P>,
    ) -> usize {
        let mut freed = Shortfall::default();
        // Candidates found in use when tried, skipped until the next wait.
        let mut in_use: HashSet<Bytes> = HashSet::new();
        let (mut tried, mut waits) = (0, 0);
        while (freed.sessions < short.sessions || freed.bytes < short.bytes) && tried < MAX_VICTIMS
        {
            // Subscribed before looking, so an eviction that ends after the
            // look wakes the wait below.
            let mut ended = self.inner.evictions.subscribe();
            let remaining = Shortfall {
                sessions: short.sessions.saturating_sub(freed.sessions),
                bytes: short.bytes.saturating_sub(freed.bytes),
            };
            let now = self.inner.clock.now();
            let claimed = self.with_index(|index| {
                index.claim(remaining, MAX_VICTIMS - tried, now, |key, entry| {
                    entry.in_use() || in_use.contains(key)
                })
            });
            let victims = match claimed {
                Ok(victims) => victims,
                Err(_) if waits >= MAX_EVICTION_WAITS => break,
                Err(evicting) if evicting > 0 => {
                    waits += 1;
                    let timeout = self.inner.limits.persistence_timeout;
                    if tokio::time::timeout(timeout, ended.changed())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    in_use.clear();
                    continue;
                }
                Err(_) if !in_use.is_empty() => {
                    waits += 1;
                    tokio::task::yield_now().await;
                    in_use.clear();
                    continue;
                }
                Err(_) => break,
            };
            // Each claim ends when its guard drops: after its eviction, or
            // unused if the room is covered first (or this future is dropped).
            let claims: Vec<Claim<'_, V, P>> = victims
                .into_iter()
                .map(|(key, entry)| Claim {
                    store: self,
                    key,
                    entry,
                })
                .collect();
            for claim in claims {
                if freed.sessions >= short.sessions && freed.bytes >= short.bytes {
                    break;
                }
                tried += 1;
                let room = Some(&mut reserved.room);
                match self
                    .evict(&claim.key, &claim.entry, Eviction::Pressure, None, room)
                    .await
                {
                    Evicted::Freed(weight) => {
                        freed.sessions += 1;
                        freed.bytes += weight;
                    }
                    Evicted::InUse => {
                        in_use.insert(claim.key.clone());
                    }
                    // Backed off: no later claim picks it.
                    Evicted::WriteBackFailed => {}
                }
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
    /// it. The freed room goes to `into` if given (a request's reservation),
    /// to the pool otherwise.
    async fn evict(
        &self,
        key: &Bytes,
        entry: &Arc<Entry<V>>,
        reason: Eviction,
        idle_before: Option<Instant>,
        into: Option<&mut Room>,
    ) -> Evicted {
        let Ok(mut state) = entry.state.try_write() else {
            return Evicted::InUse;
        };
        if state.retired || entry.in_use() {
            return Evicted::InUse;
        }
        if state.dirty && self.write_back(key, &mut state).await.is_err() {
            let until = later(self.inner.clock.now(), self.inner.limits.write_back_backoff);
            self.with_index(|index| index.back_off(key, entry, until));
            return Evicted::WriteBackFailed;
        }
        match self.with_index(|index| index.remove(key, entry, idle_before, into)) {
            Some(weight) => {
                state.retired = true;
                self.inner.metrics.eviction(reason);
                Evicted::Freed(weight)
            }
            None => Evicted::InUse,
        }
    }

    /// Stores the locked `state` through the persistence; marks it clean on
    /// success. Only a changed state is written back, and a changed state is
    /// decoded (a restore leaves only clean ones encoded: `entry`); bytes
    /// that were never decoded are never written.
    async fn write_back(&self, key: &[u8], state: &mut State<V>) -> Result<(), StoreError> {
        let stamp = Stamp::new(state.epoch, state.version);
        let Some(value) = state.value.decoded() else {
            tracing::error!(key = %display_key(key), "a changed session is still encoded; not written back");
            return Err(StoreError::Interrupted {
                key: display_key(key),
                retry_after: self.inner.limits.retry_after,
            });
        };
        let stored = self.store_through(key, stamp, value).await;
        match &stored {
            Ok(()) => state.dirty = false,
            Err(error) => tracing::warn!(
                key = %display_key(key),
                version = state.version,
                %error,
                "session write-back failed; the session stays in memory"
            ),
        }
        self.inner.metrics.write_back(stored.is_ok());
        stored
    }

    /// One bounded [`Persistence::store`] call, its failure as a
    /// [`StoreError`].
    pub(super) async fn store_through(
        &self,
        key: &[u8],
        stamp: Stamp,
        value: &V,
    ) -> Result<(), StoreError> {
        let limits = &self.inner.limits;
        let stored = tokio::time::timeout(
            limits.persistence_timeout,
            self.inner.persistence.store(key, stamp, value),
        )
        .await;
        match stored {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StoreError::Persistence {
                key: display_key(key),
                action: "store",
                source: Arc::new(error),
                retry_after: limits.retry_after,
            }),
            Err(_elapsed) => Err(StoreError::PersistenceTimeout {
                key: display_key(key),
                action: "store",
                after: limits.persistence_timeout,
                retry_after: limits.retry_after,
            }),
        }
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
        report.tombstones_expired = self.with_index(|index| index.purge_tombstones(now));
        // The idle sessions, a page of the index at a time (each page one
        // short hold of its lock), other tasks running between pages.
        let mut idle = Vec::new();
        let mut cursor = SlabCursor::default();
        while !self.with_index(|index| index.idle(cutoff, &mut cursor, IDLE_PAGE, &mut idle)) {
            tokio::task::yield_now().await;
        }
        let outcomes: Vec<Evicted> = stream::iter(idle)
            .map(|(key, entry)| async move {
                self.evict(&key, &entry, Eviction::Idle, Some(cutoff), None)
                    .await
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
    /// a shutdown that has no other pod to hand its sessions to), at most
    /// `write_back_concurrency` at once. Waits for each session's exclusive
    /// lock in turn.
    pub async fn flush(&self) -> Flush {
        let concurrency = self.inner.limits.write_back_concurrency;
        self.flush_paced(&move || FlushPace::Run(concurrency)).await
    }

    /// [`flush`](Self::flush), paced by `pace`, asked again before each
    /// write-back starts: how many may run at once (at least one, at most
    /// `write_back_concurrency`), or a pause first (the write-backs already
    /// running go on meanwhile). A background write-back that yields to the
    /// requests a pod serves.
    pub async fn flush_paced(&self, pace: &(dyn Fn() -> FlushPace + Send + Sync)) -> Flush {
        let entries = self.with_index(|index| index.entries());
        let most = self.inner.limits.write_back_concurrency;
        let mut running = FuturesUnordered::new();
        let mut report = Flush::default();
        let mut count = |outcome: Option<bool>| match outcome {
            Some(true) => report.written += 1,
            Some(false) => report.failed += 1,
            None => report.clean += 1,
        };
        for (key, entry) in entries {
            loop {
                match pace() {
                    FlushPace::Run(n) if running.len() < n.clamp(1, most) => break,
                    FlushPace::Run(_) => {
                        if let Some(outcome) = running.next().await {
                            count(outcome);
                        }
                    }
                    FlushPace::Pause(pause) => {
                        let pause = tokio::time::sleep(pause);
                        tokio::pin!(pause);
                        loop {
                            tokio::select! {
                                () = &mut pause => break,
                                Some(outcome) = running.next(), if !running.is_empty() => {
                                    count(outcome);
                                }
                            }
                        }
                    }
                }
            }
            running.push(async move {
                let mut state = entry.state.write().await;
                if state.retired || !state.dirty {
                    return None;
                }
                Some(self.write_back(&key, &mut state).await.is_ok())
            });
        }
        while let Some(outcome) = running.next().await {
            count(outcome);
        }
        report
    }
}

/// Room evicted for one request (see the [module docs](self)), held until the
/// index call that fits the request spends it; given back to the pool if the
/// request drops it unspent (gave up, failed, was cancelled).
pub(super) struct Reservation<'a, V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    store: &'a SessionStore<V, P>,
    /// The room held; index calls spend it.
    pub(super) room: Room,
}

impl<V, P> Drop for Reservation<'_, V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    fn drop(&mut self) {
        if !self.room.is_empty() {
            self.store.with_index(|index| index.release(&mut self.room));
        }
    }
}

/// A victim claimed by one request. Dropping it ends the claim (a no-op if
/// the victim was evicted) and wakes requests waiting for an eviction to end.
struct Claim<'a, V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    store: &'a SessionStore<V, P>,
    key: Bytes,
    entry: Arc<Entry<V>>,
}

impl<V, P> Drop for Claim<'_, V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    fn drop(&mut self) {
        self.store
            .with_index(|index| index.unclaim(&self.key, &self.entry));
        self.store
            .inner
            .evictions
            .send_modify(|ended| *ended = ended.wrapping_add(1));
    }
}
