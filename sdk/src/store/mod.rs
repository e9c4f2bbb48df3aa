//! The session store: each session's state in this pod's memory, bounded,
//! versioned, loaded once, written back before it is evicted.
//!
//! A [`SessionStore<V, P>`] keeps sessions of the service's type `V` by key
//! (raw bytes, as the ring hashes them). What it guarantees:
//!
//! * **One mutation at a time per session.** [`update`](SessionStore::update)
//!   runs the caller's closure under the session's exclusive lock; reads
//!   ([`read`](SessionStore::read), [`get`](SessionStore::get)) share it. An
//!   update works on a copy that is committed only if the closure returns and
//!   the new state fits its bounds, so a refused write (or a panicking
//!   closure, or a cancelled async update) leaves the previous state intact.
//! * **Versions.** Every committed write adds 1 to the session's version,
//!   returned with every value ([`Versioned`]). Installs only take a version
//!   newer than the one held, so handoffs can say "unchanged since v".
//! * **Bounded everything** ([`Limits`]): sessions, bytes per session, total
//!   bytes (sum of the weigher's answers, exact), queued updates per session,
//!   concurrent loads, tombstones, key length. Past a bound the caller gets a
//!   typed [`StoreError`] mapped to 429, 503 or 413, never unbounded growth.
//! * **Single-flight loads.** The first request for a missing session starts
//!   one load through the [`Persistence`] in a task of its own; concurrent
//!   requests wait for it; the load finishes and the session becomes resident
//!   even if every caller gave up, so the retry finds it warm.
//! * **Write-back before eviction.** Idle sessions (passivation) and, under
//!   memory pressure, ones not touched lately (by a clock: see
//!   `index`) are stored through the persistence, if changed since their last write-back, and only then
//!   evicted. A failed write-back keeps the session.
//! * **Handoff hooks.** [`export`](SessionStore::export),
//!   [`hand_off`](SessionStore::hand_off) (export and leave a tombstone, so
//!   later requests get [`StoreError::Moved`]),
//!   [`install`](SessionStore::install), [`snapshot`](SessionStore::snapshot)
//!   and [`restore`](SessionStore::restore), all through the store's
//!   [`SessionCodec`].
//!
//! ```
//! use locus::store::{JsonCodec, Limits, SessionStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), locus::store::StoreError> {
//! // Sessions are shopping carts; a cart weighs 16 bytes per item.
//! let store = SessionStore::builder(JsonCodec, |cart: &Vec<String>| 16 * cart.len())
//!     .limits(Limits::builder().max_session_bytes(1024).build()?)
//!     .build()?;
//! let added = store.update(b"cart-7", |cart| cart.push("apple".into())).await?;
//! assert_eq!(added.version, 1);
//! let cart = store.get(b"cart-7").await?;
//! assert_eq!(cart.value, ["apple"]);
//! assert_eq!(store.total_bytes(), 16);
//! # Ok(())
//! # }
//! ```
//!
//! The guide, with the HTTP mapping and the persistence contract, is
//! `docs/session-store.md`.
//!
//! Why this file is past 600 lines (module docs included): it holds the
//! store's request path — `update`, `try_update`, `update_async`, `read`,
//! `get` and the single-flight load they share — around one lock protocol
//! (admit, reserve room, load, commit or give the room back). Those functions
//! share private helpers and the same reservation type; split, a reader would
//! check the protocol across files. The other concerns already have their own
//! files: bounds (`limits`), the index and its accounting (`index`), eviction
//! and passivation (`evict`), hand-offs and installs (`transfer`), the
//! snapshot's bulk paths (`bulk`), the resident keys of some shards
//! (`shards`).

mod bulk;
mod clock;
mod codec;
mod entry;
mod error;
mod evict;
mod index;
mod limits;
mod memory;
mod metrics;
mod persistence;
mod shards;
mod table;
mod transfer;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub(crate) use bulk::{PreparedChunk, RawRecord, ResidentSessions};
pub use clock::{Clock, ManualClock, TokioClock};
pub use codec::{CodecError, JsonCodec, SessionCodec};
pub use error::{SharedError, StoreError};
pub use evict::{Flush, FlushPace, Passivation};
pub use limits::{Limits, LimitsBuilder};
pub use memory::{
    MEMORY_LIMIT_ENV, MemoryBudget, SESSION_OVERHEAD_BYTES, memory_limit, memory_limit_from,
};
pub use persistence::{NoPersistence, Persistence, Stamp, Stored, Versioned};
pub(crate) use table::SessionTable;
pub use transfer::{HandOff, Installed, Restore, SessionRecord};

use entry::{Entry, Pinned, State, Value};
use error::display_key;
use index::{Bounds, Index, LoadRefused, Lookup, Shortfall};
use metrics::{LoadResult, Op, StoreMetrics};

/// How many times an operation looks a key up again after finding its entry
/// evicted or handed off between lookup and lock (churn; rare).
const MAX_RELOOKUPS: usize = 8;

/// How many rounds of eviction one operation runs to make room before it
/// gives up with [`StoreError::Full`].
const MAX_EVICTION_ROUNDS: usize = 4;

/// A load's outcome, shared by every caller waiting on it. `None` while the
/// load runs. A loaded session stays pinned (not evictable) until the last
/// waiter is done with the outcome, and the waiters hold the pin on until
/// they have the session's lock.
type Outcome<V> = Option<Result<Arc<Pinned<V>>, StoreError>>;
type Flight<V> = watch::Receiver<Outcome<V>>;

type Weigher<V> = Box<dyn Fn(&V) -> usize + Send + Sync>;

/// Decides whether this pod may load a session that is not resident:
/// `Ok(epoch)` to load it and write it back under that ownership epoch (the
/// version of the ring that makes this pod its owner), or `Err` with the name
/// of the pod that owns it (the load is refused with [`StoreError::Moved`]
/// naming that pod). See [`SessionStore::guard_loads`].
pub type LoadGuard = Arc<dyn Fn(&[u8]) -> Result<u64, Arc<str>> + Send + Sync>;
type Factory<V> = Box<dyn Fn(&[u8]) -> V + Send + Sync>;

/// Bounded, versioned, in-memory session state with write-back persistence.
/// Clones share the same store. See the [module docs](self).
pub struct SessionStore<V, P = NoPersistence> {
    inner: Arc<Inner<V, P>>,
}

impl<V, P> Clone for SessionStore<V, P> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<V, P> {
    limits: Limits,
    persistence: P,
    codec: Box<dyn SessionCodec<V>>,
    weigher: Weigher<V>,
    factory: Factory<V>,
    clock: Arc<dyn Clock>,
    index: Mutex<Index<Entry<V>, Flight<V>>>,
    /// Counts pressure evictions that ended (evicted or not), for requests
    /// waiting for room that other requests' evictions may free.
    evictions: watch::Sender<u64>,
    metrics: StoreMetrics,
    /// Set once by the handoff member: loads only of keys this pod owns.
    guard: std::sync::OnceLock<LoadGuard>,
}

/// What is held right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Resident sessions.
    pub sessions: usize,
    /// Loads in flight (each counts against `max_sessions`).
    pub loading: usize,
    /// Weight of the resident sessions: exactly the sum of the weigher's
    /// answers for them, never above `max_total_bytes`.
    pub bytes: usize,
    /// Tombstones held.
    pub tombstones: usize,
}

/// Builds a [`SessionStore`]: codec and weigher are required, the rest has
/// defaults ([`Limits::default`], [`NoPersistence`], [`TokioClock`]).
pub struct StoreBuilder<V, P = NoPersistence> {
    limits: Limits,
    persistence: P,
    codec: Box<dyn SessionCodec<V>>,
    weigher: Weigher<V>,
    factory: Factory<V>,
    clock: Arc<dyn Clock>,
}

impl<V> SessionStore<V, NoPersistence>
where
    V: Clone + Send + Sync + 'static,
{
    /// A builder for sessions that start as `V::default()`.
    ///
    /// `weigher` tells how many bytes a session state takes; the store's byte
    /// bounds are only as good as it is.
    pub fn builder(
        codec: impl SessionCodec<V>,
        weigher: impl Fn(&V) -> usize + Send + Sync + 'static,
    ) -> StoreBuilder<V>
    where
        V: Default,
    {
        Self::builder_with_factory(codec, weigher, |_| V::default())
    }

    /// A builder for sessions that start as `factory(key)`.
    pub fn builder_with_factory(
        codec: impl SessionCodec<V>,
        weigher: impl Fn(&V) -> usize + Send + Sync + 'static,
        factory: impl Fn(&[u8]) -> V + Send + Sync + 'static,
    ) -> StoreBuilder<V> {
        StoreBuilder {
            limits: Limits::default(),
            persistence: NoPersistence,
            codec: Box::new(codec),
            weigher: Box::new(weigher),
            factory: Box::new(factory),
            clock: Arc::new(TokioClock),
        }
    }
}

impl<V, P> StoreBuilder<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    /// Sets the bounds and timings.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets where sessions are loaded from and written back to.
    pub fn persistence<Q: Persistence<V>>(self, persistence: Q) -> StoreBuilder<V, Q> {
        StoreBuilder {
            limits: self.limits,
            persistence,
            codec: self.codec,
            weigher: self.weigher,
            factory: self.factory,
            clock: self.clock,
        }
    }

    /// Sets how a session missing from the persistence starts.
    #[must_use]
    pub fn factory(mut self, factory: impl Fn(&[u8]) -> V + Send + Sync + 'static) -> Self {
        self.factory = Box::new(factory);
        self
    }

    /// Sets the clock idle times and tombstone expiry are measured with.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the store, refusing limits that cannot work.
    pub fn build(self) -> Result<SessionStore<V, P>, StoreError> {
        self.limits.validate()?;
        let bounds = Bounds {
            sessions: self.limits.max_sessions,
            total_bytes: self.limits.max_total_bytes,
            loads: self.limits.max_concurrent_loads,
            tombstones: self.limits.max_tombstones,
        };
        Ok(SessionStore {
            inner: Arc::new(Inner {
                limits: self.limits,
                persistence: self.persistence,
                codec: self.codec,
                weigher: self.weigher,
                factory: self.factory,
                clock: self.clock,
                index: Mutex::new(Index::new(bounds)),
                evictions: watch::Sender::new(0),
                metrics: StoreMetrics::new(),
                guard: std::sync::OnceLock::new(),
            }),
        })
    }
}

impl<V, P> SessionStore<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    /// Runs `f` on the session's state under its exclusive lock and commits
    /// the change: the version goes up by 1 and the session is marked changed.
    /// Returns the new version and what `f` returned.
    ///
    /// `f` works on a copy of the state (so `V` should be cheap to clone); the
    /// copy replaces the state only if its weight fits `max_session_bytes`
    /// ([`StoreError::TooLarge`] otherwise) and the total bound, after
    /// evicting idle sessions if needed ([`StoreError::Full`] otherwise).
    /// Past `max_pending_updates` queued updates on this session the call
    /// fails at once with [`StoreError::Busy`].
    pub async fn update<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<Versioned<R>, StoreError> {
        let outcome = self
            .try_update(key, |state| Ok::<R, std::convert::Infallible>(f(state)))
            .await?;
        match outcome {
            Ok(done) => Ok(done),
            Err(never) => match never {},
        }
    }

    /// Like [`update`](Self::update), but `f` may refuse: on `Err(e)` nothing
    /// is committed and the version stays; the outer result carries the
    /// store's own refusals.
    pub async fn try_update<R, E>(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut V) -> Result<R, E>,
    ) -> Result<Result<Versioned<R>, E>, StoreError> {
        let started = std::time::Instant::now();
        let mut cold = false;
        let result = self.try_update_inner(key, f, &mut cold).await;
        self.observe(Op::Update, started, cold, result)
    }

    async fn try_update_inner<R, E>(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut V) -> Result<R, E>,
        cold: &mut bool,
    ) -> Result<Result<Versioned<R>, E>, StoreError> {
        for _ in 0..MAX_RELOOKUPS {
            let found = self.resident(key, cold).await?;
            let entry = &found.entry;
            let Some(_queued) = entry.enter(self.inner.limits.max_pending_updates) else {
                return Err(self.busy(key));
            };
            let mut state = entry.state.write().await;
            if state.retired {
                continue;
            }
            let Some(value) = self.decoded(key, entry, &mut state).await? else {
                continue;
            };
            let mut work = value.clone();
            let output = match f(&mut work) {
                Ok(output) => output,
                Err(refused) => return Ok(Err(refused)),
            };
            self.commit(key, entry, &mut state, work).await?;
            return Ok(Ok(
                Versioned::new(state.version, output).with_epoch(state.epoch)
            ));
        }
        Err(self.busy(key))
    }

    /// Like [`try_update`](Self::try_update) with an async closure: `f` gets
    /// a copy of the state and gives back the new state with its output. The
    /// session stays locked until `f`'s future completes; if the caller drops
    /// this future first, nothing is committed.
    ///
    /// ```
    /// # use locus::store::{JsonCodec, SessionStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), locus::store::StoreError> {
    /// let store = SessionStore::builder(JsonCodec, |n: &u64| 8).build()?;
    /// let done = store
    ///     .update_async(b"k", |n| async move {
    ///         tokio::task::yield_now().await; // e.g. call another service
    ///         Ok::<_, std::convert::Infallible>((n + 5, n + 5))
    ///     })
    ///     .await?;
    /// assert_eq!(done.unwrap().value, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_async<R, E, F, Fut>(
        &self,
        key: &[u8],
        f: F,
    ) -> Result<Result<Versioned<R>, E>, StoreError>
    where
        F: FnOnce(V) -> Fut,
        Fut: Future<Output = Result<(V, R), E>>,
    {
        let started = std::time::Instant::now();
        let mut cold = false;
        let result = async {
            for _ in 0..MAX_RELOOKUPS {
                let found = self.resident(key, &mut cold).await?;
                let entry = &found.entry;
                let Some(_queued) = entry.enter(self.inner.limits.max_pending_updates) else {
                    return Err(self.busy(key));
                };
                let mut state = entry.state.write().await;
                if state.retired {
                    continue;
                }
                let Some(value) = self.decoded(key, entry, &mut state).await? else {
                    continue;
                };
                let (work, output) = match f(value.clone()).await {
                    Ok(done) => done,
                    Err(refused) => return Ok(Err(refused)),
                };
                self.commit(key, entry, &mut state, work).await?;
                return Ok(Ok(
                    Versioned::new(state.version, output).with_epoch(state.epoch)
                ));
            }
            Err(self.busy(key))
        }
        .await;
        self.observe(Op::Update, started, cold, result)
    }

    /// Commits `value` as the next version of the locked `state`, if it fits.
    async fn commit(
        &self,
        key: &[u8],
        entry: &Arc<Entry<V>>,
        state: &mut State<V>,
        value: V,
    ) -> Result<(), StoreError> {
        let weight = self.weigh(key, &value)?;
        self.resize(key, entry, weight).await?;
        state.value = Value::Decoded(value);
        state.version += 1;
        state.dirty = true;
        Ok(())
    }

    /// The locked `state`'s value, decoded first if a restore left it
    /// encoded (`docs/adr/0005-restore-without-building-the-heap.md`): once,
    /// under the exclusive lock the caller holds, then weighed by the
    /// weigher and the index's sums corrected (evicting idle sessions if it
    /// grew past the room left; `Full` otherwise, the state left encoded).
    ///
    /// `None`: the bytes do not decode, or decode to a state heavier than
    /// `max_session_bytes`. The session was clean, so the persistence holds
    /// this version: it is dropped from memory (retired, not written back),
    /// the failure logged and counted, and the caller looks the key up
    /// again, which loads it through the persistence.
    async fn decoded<'s>(
        &self,
        key: &[u8],
        entry: &Arc<Entry<V>>,
        state: &'s mut State<V>,
    ) -> Result<Option<&'s V>, StoreError> {
        if let Value::Encoded(bytes) = &state.value {
            match self.decode_weighed(key, bytes) {
                Ok((weight, value)) => {
                    self.resize(key, entry, weight).await?;
                    state.value = Value::Decoded(value);
                }
                Err(error) => {
                    self.drop_undecodable(key, entry, state, &error)?;
                    return Ok(None);
                }
            }
        }
        Ok(state.value.decoded())
    }

    /// A restored session's `bytes` decoded and weighed; refused if they do
    /// not decode or weigh more than `max_session_bytes`.
    fn decode_weighed(&self, key: &[u8], bytes: &[u8]) -> Result<(usize, V), StoreError> {
        let value = self.decode_value(key, bytes)?;
        Ok((self.weigh(key, &value)?, value))
    }

    /// `bytes`, the state of `key`, decoded with the store's codec.
    pub(super) fn decode_value(&self, key: &[u8], bytes: &[u8]) -> Result<V, StoreError> {
        self.inner
            .codec
            .decode(bytes)
            .map_err(|source| StoreError::Codec {
                key: display_key(key),
                action: "decode",
                source: source.into(),
            })
    }

    /// Drops the locked, clean, restored session whose bytes failed to
    /// decode (see [`decoded`](Self::decoded)).
    fn drop_undecodable(
        &self,
        key: &[u8],
        entry: &Arc<Entry<V>>,
        state: &mut State<V>,
        error: &StoreError,
    ) -> Result<(), StoreError> {
        if self
            .with_index(|index| index.remove(key, entry, None, None))
            .is_none()
        {
            tracing::error!(key = %display_key(key), "locked session is not resident");
            return Err(StoreError::Interrupted {
                key: display_key(key),
                retry_after: self.inner.limits.retry_after,
            });
        }
        state.retired = true;
        self.inner.metrics.deferred_decode_failure();
        tracing::warn!(
            key = %display_key(key),
            version = state.version,
            %error,
            "a restored session does not decode; dropped from memory, loading it from the persistence"
        );
        Ok(())
    }

    /// Runs `f` on the session's state under its shared lock. Returns the
    /// session's version with what `f` returned.
    pub async fn read<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&V) -> R,
    ) -> Result<Versioned<R>, StoreError> {
        let started = std::time::Instant::now();
        let mut cold = false;
        let result = async {
            for _ in 0..MAX_RELOOKUPS {
                let found = self.resident(key, &mut cold).await?;
                let mut state = found.entry.state.read().await;
                if state.retired {
                    continue;
                }
                if state.value.decoded().is_none() {
                    // Restored encoded: decode under the exclusive lock,
                    // then read under it downgraded.
                    drop(state);
                    let mut exclusive = found.entry.state.write().await;
                    if exclusive.retired
                        || self
                            .decoded(key, &found.entry, &mut exclusive)
                            .await?
                            .is_none()
                    {
                        continue;
                    }
                    state = exclusive.downgrade();
                }
                let Some(value) = state.value.decoded() else {
                    continue;
                };
                return Ok(Versioned::new(state.version, f(value)).with_epoch(state.epoch));
            }
            Err(self.busy(key))
        }
        .await;
        self.observe(Op::Read, started, cold, result)
    }

    /// A copy of the session's state with its version.
    pub async fn get(&self, key: &[u8]) -> Result<Versioned<V>, StoreError> {
        self.read(key, V::clone).await
    }

    /// The resident entry of `key`, loading it first if needed (single
    /// flight). Sets `cold` if it waited for a load. Keep the answer until
    /// the entry's lock is taken: it holds the load's pin.
    async fn resident(&self, key: &[u8], cold: &mut bool) -> Result<Found<V>, StoreError> {
        self.check_key(key)?;
        // The pin of the load this request waited for, if any.
        let mut loaded = None;
        let mut eviction_rounds = 0;
        // Room evicted for this request: spent by the load it starts, given
        // back if the key turns up resident, loading or moved meanwhile.
        let mut reserved = self.reservation();
        for _ in 0..MAX_RELOOKUPS {
            let now = self.inner.clock.now();
            let room = &mut reserved.room;
            let step = self.with_index(|index| {
                let step = match index.lookup(key, now) {
                    Lookup::Resident(entry) => Step::Ready(entry),
                    Lookup::Loading(flight) => Step::Wait(flight),
                    Lookup::Moved { owner, .. } => Step::Moved(owner),
                    Lookup::Absent if let Some(owner) = self.foreign_owner(key) => {
                        Step::Moved(owner)
                    }
                    Lookup::Absent => {
                        let (done, flight) = watch::channel(None);
                        match index.begin_load(key, flight.clone(), room) {
                            Ok(()) => Step::Start(done, flight),
                            Err(LoadRefused::Saturated) => Step::Saturated,
                            Err(LoadRefused::Short(short)) => Step::Evict(short),
                        }
                    }
                };
                if !matches!(step, Step::Evict(_)) {
                    index.release(room);
                }
                step
            });
            match step {
                Step::Ready(entry) => {
                    return Ok(Found {
                        entry,
                        _loaded: loaded,
                    });
                }
                Step::Moved(owner) => {
                    return Err(StoreError::Moved {
                        key: display_key(key),
                        owner: owner.to_string(),
                    });
                }
                Step::Saturated => {
                    return Err(StoreError::LoadsSaturated {
                        max: self.inner.limits.max_concurrent_loads,
                        retry_after: self.inner.limits.retry_after,
                    });
                }
                Step::Start(done, flight) => {
                    *cold = true;
                    self.spawn_load(Bytes::copy_from_slice(key), done);
                    loaded = Some(self.wait(key, flight).await?);
                }
                Step::Wait(flight) => {
                    *cold = true;
                    loaded = Some(self.wait(key, flight).await?);
                }
                Step::Evict(short) => {
                    eviction_rounds += 1;
                    if eviction_rounds > MAX_EVICTION_ROUNDS
                        || self.evict_for(short, &mut reserved).await == 0
                    {
                        return Err(self.full("sessions"));
                    }
                }
            }
        }
        Err(self.full("sessions"))
    }

    /// Waits for a load to end; its error, if any, is this caller's. On
    /// success, returns the pin that keeps the loaded session resident.
    async fn wait(&self, key: &[u8], mut flight: Flight<V>) -> Result<Arc<Pinned<V>>, StoreError> {
        let interrupted = || StoreError::Interrupted {
            key: display_key(key),
            retry_after: self.inner.limits.retry_after,
        };
        match flight.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(interrupted())),
            Err(_) => Err(interrupted()),
        }
    }

    /// Runs the load of `key` in a task of its own, so that it completes (and
    /// the session becomes resident) even if every caller gives up.
    fn spawn_load(&self, key: Bytes, done: watch::Sender<Outcome<V>>) {
        let store = self.clone();
        tokio::spawn(async move {
            // Forgets the load if this task dies before it ends (a panic in
            // user code, runtime shutdown); waiters then see `Interrupted`.
            let mut guard = CancelLoad {
                store: &store,
                key: &key,
                armed: true,
            };
            let result = store.load_and_admit(&key).await;
            if result.is_err() {
                store.with_index(|index| index.cancel_load(&key));
            }
            guard.armed = false;
            done.send_replace(Some(result));
        });
    }

    /// Loads `key` through the persistence (or the factory) and makes it
    /// resident, evicting idle sessions if its bytes do not fit. Returns the
    /// pin that keeps it resident for the requests waiting for it.
    async fn load_and_admit(&self, key: &Bytes) -> Result<Arc<Pinned<V>>, StoreError> {
        let limits = &self.inner.limits;
        let loaded =
            tokio::time::timeout(limits.persistence_timeout, self.inner.persistence.load(key))
                .await;
        let loaded = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(error)) => {
                self.inner.metrics.load(LoadResult::Failed);
                tracing::warn!(key = %display_key(key), %error, "session load failed");
                return Err(StoreError::Persistence {
                    key: display_key(key),
                    action: "load",
                    source: Arc::new(error),
                    retry_after: limits.retry_after,
                });
            }
            Err(_elapsed) => {
                self.inner.metrics.load(LoadResult::Failed);
                tracing::warn!(key = %display_key(key), "session load timed out");
                return Err(StoreError::PersistenceTimeout {
                    key: display_key(key),
                    action: "load",
                    after: limits.persistence_timeout,
                    retry_after: limits.retry_after,
                });
            }
        };
        // The ring may have moved on while the load ran: ask again.
        let own = match self.claim(key) {
            Ok(own) => own,
            Err(owner) => {
                return Err(StoreError::Moved {
                    key: display_key(key),
                    owner: owner.to_string(),
                });
            }
        };
        let (stamp, value) = if let Some(found) = loaded {
            self.inner.metrics.load(LoadResult::Found);
            (found.stamp, found.value)
        } else {
            self.inner.metrics.load(LoadResult::New);
            (Stamp::default(), (self.inner.factory)(key))
        };
        // A stored epoch above this pod's ring: a pod took the session over
        // under a ring this one has not seen. Serving it here would start a
        // second history beside that owner's.
        if let Some(own) = own
            && stamp.epoch > own
        {
            tracing::warn!(key = %display_key(key), stored = stamp.epoch, own, "session stored under a newer ownership epoch; not loaded");
            return Err(StoreError::Fenced {
                key: display_key(key),
                stored: stamp.epoch,
                own,
                retry_after: limits.retry_after,
            });
        }
        let epoch = own.unwrap_or(0).max(stamp.epoch);
        let version = stamp.version;
        let weight = self.weigh(key, &value)?;
        let entry = Arc::new(Entry::new(value, version, epoch, false));
        let pinned = Arc::new(entry.pin());
        let mut reserved = self.reservation();
        for _ in 0..MAX_EVICTION_ROUNDS {
            let now = self.inner.clock.now();
            let room = &mut reserved.room;
            match self
                .with_index(|index| index.finish_load(key, Arc::clone(&entry), weight, now, room))
            {
                Ok(()) => return Ok(pinned),
                Err(short) => {
                    if self.evict_for(short, &mut reserved).await == 0 {
                        break;
                    }
                }
            }
        }
        Err(self.full("total bytes"))
    }

    /// Sets the weight of the locked resident `entry`, evicting idle sessions
    /// if the growth does not fit.
    async fn resize(
        &self,
        key: &[u8],
        entry: &Arc<Entry<V>>,
        weight: usize,
    ) -> Result<(), StoreError> {
        let mut reserved = self.reservation();
        for _ in 0..MAX_EVICTION_ROUNDS {
            let room = &mut reserved.room;
            match self.with_index(|index| index.resize(key, entry, weight, room)) {
                Some(Ok(_previous)) => return Ok(()),
                Some(Err(short)) => {
                    if self.evict_for(short, &mut reserved).await == 0 {
                        break;
                    }
                }
                None => {
                    // The entry's lock is held, so it cannot have left the
                    // index; refuse rather than corrupt the accounting.
                    tracing::error!(key = %display_key(key), "locked session is not resident");
                    return Err(StoreError::Interrupted {
                        key: display_key(key),
                        retry_after: self.inner.limits.retry_after,
                    });
                }
            }
        }
        Err(self.full("total bytes"))
    }

    /// The weight of `value`, refused past the per-session bound.
    fn weigh(&self, key: &[u8], value: &V) -> Result<usize, StoreError> {
        self.bounded(key, (self.inner.weigher)(value))
    }

    /// `size`, refused past the per-session bound.
    fn bounded(&self, key: &[u8], size: usize) -> Result<usize, StoreError> {
        let max = self.inner.limits.max_session_bytes;
        if size > max {
            return Err(StoreError::TooLarge {
                key: display_key(key),
                size,
                max,
            });
        }
        Ok(size)
    }

    /// The pod that owns `key` if the load guard says it is not this pod.
    fn foreign_owner(&self, key: &[u8]) -> Option<Arc<str>> {
        self.claim(key).err()
    }

    /// What the load guard says of `key`: `Ok(Some(epoch))` if this pod owns
    /// it under the ring of that version, `Ok(None)` without a guard, `Err`
    /// naming the owner otherwise.
    pub(crate) fn claim(&self, key: &[u8]) -> Result<Option<u64>, Arc<str>> {
        match self.inner.guard.get() {
            Some(guard) => guard(key).map(Some),
            None => Ok(None),
        }
    }

    /// Refuses, from now on, every load of a key `guard` says another pod
    /// owns ([`StoreError::Moved`] naming it). The handoff member sets it
    /// to "owned under this pod's latest ring": a request admitted under an
    /// older ring that reaches the store after the key was handed off and
    /// its tombstone expired must not load the key beside its new owner.
    /// Resident sessions, installs and restores are not affected. Returns
    /// `false` (and changes nothing) if a guard was set already.
    pub fn guard_loads(&self, guard: LoadGuard) -> bool {
        self.inner.guard.set(guard).is_ok()
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        let max = self.inner.limits.max_key_bytes;
        if key.len() > max {
            return Err(StoreError::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn busy(&self, key: &[u8]) -> StoreError {
        StoreError::Busy {
            key: display_key(key),
            queued: self.inner.limits.max_pending_updates,
            retry_after: self.inner.limits.retry_after,
        }
    }

    fn full(&self, limit: &'static str) -> StoreError {
        StoreError::Full {
            limit,
            retry_after: self.inner.limits.retry_after,
        }
    }

    /// Records an access's latency, or its refusal.
    fn observe<T>(
        &self,
        op: Op,
        started: std::time::Instant,
        cold: bool,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.inner.metrics.access(op, cold, started.elapsed()),
            Err(error) => self.inner.metrics.rejection(error.metric_label()),
        }
        result
    }

    /// Runs `f` on the index under its mutex, then refreshes the gauges.
    fn with_index<R>(&self, f: impl FnOnce(&mut Index<Entry<V>, Flight<V>>) -> R) -> R {
        let mut index = self
            .inner
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut index);
        self.inner.metrics.gauges(
            index.resident(),
            index.bytes(),
            index.loading(),
            index.tombstones(),
        );
        result
    }

    /// What is held right now.
    pub fn stats(&self) -> StoreStats {
        self.with_index(|index| StoreStats {
            sessions: index.resident(),
            loading: index.loading(),
            bytes: index.bytes(),
            tombstones: index.tombstones(),
        })
    }

    /// Weight of the resident sessions, never above `max_total_bytes`.
    pub fn total_bytes(&self) -> usize {
        self.with_index(|index| index.bytes())
    }

    /// Weighs every resident session again and returns the sum (a session
    /// a snapshot restore left encoded weighs its encoded length until its
    /// first use); with no write in flight it equals
    /// [`total_bytes`](Self::total_bytes). A
    /// diagnostic (it takes every session's shared lock in turn), not for the
    /// request path.
    pub async fn recount_bytes(&self) -> usize {
        let entries = self.with_index(|index| index.entries());
        let mut sum = 0;
        for (_, entry) in entries {
            let state = entry.state.read().await;
            if !state.retired {
                sum += self.weight_of(&state.value);
            }
        }
        sum
    }

    /// What `value` weighs: the weigher's answer, or its encoded length
    /// while a restore leaves it encoded.
    fn weight_of(&self, value: &Value<V>) -> usize {
        match value {
            Value::Decoded(value) => (self.inner.weigher)(value),
            Value::Encoded(bytes) => bytes.len(),
        }
    }

    /// The store's bounds and timings.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Registers the store's metrics (see the `metrics` table in
    /// `docs/session-store.md`) into `registry`, usually the process's
    /// `locus`-prefixed one.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
    }
}

/// What [`SessionStore::resident`] found: the entry, and the pin of the load
/// the request waited for (held until the request has the entry's lock).
struct Found<V> {
    entry: Arc<Entry<V>>,
    _loaded: Option<Arc<Pinned<V>>>,
}

/// The next move of [`SessionStore::resident`].
enum Step<V> {
    Ready(Arc<Entry<V>>),
    Wait(Flight<V>),
    Start(watch::Sender<Outcome<V>>, Flight<V>),
    Moved(Arc<str>),
    Saturated,
    Evict(Shortfall),
}

/// Forgets a load whose task ends before the load does.
struct CancelLoad<'a, V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    store: &'a SessionStore<V, P>,
    key: &'a Bytes,
    armed: bool,
}

impl<V, P> Drop for CancelLoad<'_, V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    fn drop(&mut self) {
        if self.armed {
            self.store.with_index(|index| index.cancel_load(self.key));
        }
    }
}

impl<V, P> fmt::Debug for SessionStore<V, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self
            .inner
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("SessionStore")
            .field("sessions", &index.resident())
            .field("loading", &index.loading())
            .field("bytes", &index.bytes())
            .field("tombstones", &index.tombstones())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}
