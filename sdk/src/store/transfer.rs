//! Sessions as bytes, for the handoff protocol and fast restarts.
//!
//! * [`export`](SessionStore::export): a resident session's version and
//!   encoded state, for pre-copy (the session stays and keeps serving).
//! * [`hand_off`](SessionStore::hand_off): under the session's exclusive lock,
//!   the latest state (or "unchanged since v"), then a tombstone naming the new
//!   owner, so later requests get [`StoreError::Moved`].
//! * [`install`](SessionStore::install) /
//!   [`install_record`](SessionStore::install_record): take a session at a
//!   version, only if newer than what is held.
//! * [`snapshot`](SessionStore::snapshot) / [`restore`](SessionStore::restore):
//!   every resident session out, and back in, for a restart that keeps the
//!   pod's state (the file format is the caller's).
//!
//! None of these loads a session that is not resident: a session that was
//! passivated lives in the persistence, and its next owner loads it from there.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};

use super::clock::later;
use super::entry::{Entry, State, Value};
use super::error::display_key;
use super::index::{InsertRefused, Lookup};
use super::metrics::Eviction;
use super::{
    MAX_EVICTION_ROUNDS, MAX_RELOOKUPS, Persistence, SessionStore, Stamp, StoreError, Versioned,
};

/// One session as bytes: what export, hand-off and snapshot produce and what
/// install and restore consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session key.
    pub key: Bytes,
    /// The session's version.
    pub version: u64,
    /// The ownership epoch the sender held it under (see [`Stamp`]): what a
    /// drain's write-through carries, and the least epoch its receiver
    /// installs it under.
    pub epoch: u64,
    /// Whether the state had changed since the persistence last stored it. A
    /// receiver sharing the same persistence keeps the flag, so a clean
    /// session is not written again.
    pub dirty: bool,
    /// The state, encoded by the store's codec.
    pub value: Bytes,
}

/// What [`hand_off`](SessionStore::hand_off) gives the new owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOff {
    /// The session's latest state.
    State(SessionRecord),
    /// The new owner already holds this version, which is the latest.
    Unchanged {
        /// The version both sides hold.
        version: u64,
    },
    /// The session was not in memory here (never loaded, passivated, already
    /// handed off): the new owner loads it from the persistence.
    NotResident,
}

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The key was not resident; the session is now, at the offered version.
    Inserted,
    /// An older version was resident and was replaced.
    Replaced {
        /// The version replaced.
        previous: u64,
    },
    /// The store holds this version or a newer one (or handed a newer one
    /// off); nothing changed.
    Stale {
        /// The version held (or handed off).
        held: u64,
    },
}

/// What a [`restore`](SessionStore::restore) did.
#[derive(Debug, Clone, Default)]
pub struct Restore {
    /// Records inserted.
    pub inserted: usize,
    /// Records that replaced an older resident version.
    pub replaced: usize,
    /// Records not newer than what was held.
    pub stale: usize,
    /// Records refused (too large, full, undecodable, ...).
    pub failed: usize,
    /// The first few refusals, with their keys.
    pub errors: Vec<(Bytes, StoreError)>,
}

/// How many refusals a [`Restore`] keeps in detail.
const RESTORE_ERRORS_KEPT: usize = 16;

impl Restore {
    /// Counts the outcome of one record's install; a refusal is kept in
    /// detail, with the record's key (`key` is called only then), while
    /// fewer than [`RESTORE_ERRORS_KEPT`] are.
    pub(super) fn count(
        &mut self,
        outcome: Result<Installed, StoreError>,
        key: impl FnOnce() -> Bytes,
    ) {
        match outcome {
            Ok(Installed::Inserted) => self.inserted += 1,
            Ok(Installed::Replaced { .. }) => self.replaced += 1,
            Ok(Installed::Stale { .. }) => self.stale += 1,
            Err(error) => {
                self.failed += 1;
                if self.errors.len() < RESTORE_ERRORS_KEPT {
                    self.errors.push((key(), error));
                }
            }
        }
    }

    /// Adds the counts of `other` (a part of the same restore).
    pub(super) fn merge(&mut self, other: Restore) {
        self.inserted += other.inserted;
        self.replaced += other.replaced;
        self.stale += other.stale;
        self.failed += other.failed;
        let room = RESTORE_ERRORS_KEPT.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
    }
}

impl<V, P> SessionStore<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    /// The keys of every resident session, in the index's order, without
    /// counting an access. O(sessions), under the index lock: to
    /// find the keys of some shards, use
    /// [`keys_in_shards`](Self::keys_in_shards).
    pub fn resident_keys(&self) -> Vec<Bytes> {
        self.with_index(|index| index.entries())
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// The resident session's version, without loading it or counting an
    /// access. `None` if it is not resident.
    pub async fn version_of(&self, key: &[u8]) -> Option<u64> {
        let entry = self.with_index(|index| index.peek(key))?;
        let state = entry.state.read().await;
        (!state.retired).then_some(state.version)
    }

    /// Makes `key` resident, loading it through the persistence (or creating
    /// it) if needed, as a request would; returns its version. 0: nothing
    /// was stored for it — a new session.
    pub async fn load_version(&self, key: &[u8]) -> Result<u64, StoreError> {
        let mut cold = false;
        let found = self.resident(key, &mut cold).await?;
        let state = found.entry.state.read().await;
        Ok(state.version)
    }

    /// The resident session encoded, for pre-copy: it stays here and keeps
    /// serving. `None` if it is not resident (nothing is loaded).
    pub async fn export(&self, key: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        let Some(entry) = self.with_index(|index| index.peek(key)) else {
            return Ok(None);
        };
        let state = entry.state.read().await;
        if state.retired {
            return Ok(None);
        }
        self.record(Bytes::copy_from_slice(key), &state).map(Some)
    }

    /// Hands the session over to `owner`: under its exclusive lock (after the
    /// updates queued before it), returns its latest state — or
    /// [`HandOff::Unchanged`] if `known` (the version the new owner holds) is
    /// the latest — then drops it from memory and leaves a tombstone, so that
    /// for `ttl` every request for the key gets [`StoreError::Moved`] naming
    /// `owner`. A session not resident here gets the tombstone too and
    /// [`HandOff::NotResident`]. Nothing is written back: the session is now
    /// the new owner's, with its `dirty` flag.
    ///
    /// If the state cannot be encoded the session stays, untouched.
    pub async fn hand_off(
        &self,
        key: &[u8],
        known: Option<u64>,
        owner: &str,
        ttl: Duration,
    ) -> Result<HandOff, StoreError> {
        self.check_key(key)?;
        let owner: std::sync::Arc<str> = owner.into();
        for _ in 0..MAX_RELOOKUPS {
            let now = self.inner.clock.now();
            let expires = later(now, ttl);
            let found = self.with_index(|index| match index.lookup(key, now) {
                Lookup::Resident(entry) => Some(Ok(entry)),
                Lookup::Loading(flight) => Some(Err(flight)),
                Lookup::Moved { version, .. } => {
                    index.tombstone(key, owner.clone(), version, expires, now);
                    None
                }
                Lookup::Absent => {
                    index.tombstone(key, owner.clone(), 0, expires, now);
                    None
                }
            });
            let entry = match found {
                None => return Ok(HandOff::NotResident),
                Some(Err(flight)) => {
                    // Let the load finish; its failure only means the session
                    // is not resident, which the next round handles.
                    let _ = self.wait(key, flight).await;
                    continue;
                }
                Some(Ok(entry)) => entry,
            };
            let _queued = entry.enter_unbounded();
            let mut state = entry.state.write().await;
            if state.retired {
                continue;
            }
            let version = state.version;
            let outcome = if known == Some(version) {
                HandOff::Unchanged { version }
            } else {
                HandOff::State(self.record(Bytes::copy_from_slice(key), &state)?)
            };
            let now = self.inner.clock.now();
            let removed = self.with_index(|index| {
                let removed = index.remove(key, &entry, None, None);
                if removed.is_some() {
                    index.tombstone(key, owner.clone(), version, later(now, ttl), now);
                }
                removed
            });
            if removed.is_none() {
                tracing::error!(key = %display_key(key), "locked session is not resident");
                return Err(StoreError::Interrupted {
                    key: display_key(key),
                    retry_after: self.inner.limits.retry_after,
                });
            }
            state.retired = true;
            self.inner.metrics.eviction(Eviction::Handoff);
            tracing::debug!(key = %display_key(key), version, %owner, "session handed off");
            return Ok(outcome);
        }
        Err(self.busy(key))
    }

    /// Writes a handed-off `record` straight through the persistence (it is
    /// not installed here): what a drain does with records their new owner
    /// did not acknowledge, so that they are durable before the pod reports
    /// drained. The write is conditional like every write-back (a higher
    /// stored version wins). `Ok(false)` if the persistence keeps nothing
    /// ([`Persistence::durable`]).
    pub async fn write_record(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        if !self.inner.persistence.durable() {
            return Ok(false);
        }
        let value = self.decode(record)?;
        self.store_through(
            &record.key,
            Stamp::new(record.epoch, record.version),
            &value,
        )
        .await
        .map(|()| true)
    }

    /// The state of `record`, decoded with the store's codec.
    fn decode(&self, record: &SessionRecord) -> Result<V, StoreError> {
        self.decode_value(&record.key, &record.value)
    }

    /// Installs `session` for `key` if its version is newer than the one held
    /// (or handed off). Marks it changed, so it is written back before it is
    /// ever evicted. Counts against `max_pending_updates` like an update, and
    /// against the session and byte bounds like a load (evicting idle
    /// sessions if needed). Its write-backs carry the higher of
    /// `session.epoch` and the ownership epoch the load guard gives.
    pub async fn install(
        &self,
        key: &[u8],
        session: Versioned<V>,
    ) -> Result<Installed, StoreError> {
        self.install_with(key, session.version, session.epoch, session.value, true)
            .await
    }

    /// Decodes `record` with the store's codec and installs it like
    /// [`install`](Self::install), keeping the record's `dirty` flag. Its
    /// write-backs carry the higher of the record's epoch and the one the
    /// load guard gives.
    pub async fn install_record(&self, record: &SessionRecord) -> Result<Installed, StoreError> {
        self.check_key(&record.key)?;
        let value = self.decode(record)?;
        self.install_with(
            &record.key,
            record.version,
            record.epoch,
            value,
            record.dirty,
        )
        .await
    }

    /// `floor` is the least epoch its write-backs carry; the load guard's
    /// epoch raises it if this pod owns the key under its latest ring.
    pub(super) async fn install_with(
        &self,
        key: &[u8],
        version: u64,
        floor: u64,
        value: V,
        dirty: bool,
    ) -> Result<Installed, StoreError> {
        self.check_key(key)?;
        let epoch = match self.claim(key) {
            Ok(Some(own)) => own.max(floor),
            Ok(None) | Err(_) => floor,
        };
        let weight = self.weigh(key, &value)?;
        let mut value = value;
        let mut eviction_rounds = 0;
        // Room evicted for this install: spent by its insert, given back if
        // the key turns out occupied or stale.
        let mut reserved = self.reservation();
        for _ in 0..MAX_RELOOKUPS {
            let now = self.inner.clock.now();
            let room = &mut reserved.room;
            let attempt = self.with_index(|index| {
                let refused = match index.admit(key, weight, version, now, *room) {
                    Ok(()) => {
                        let entry = Entry::new(value, version, epoch, dirty).into();
                        index.insert(key, entry, weight, now, room);
                        return Attempt::Inserted;
                    }
                    Err(refused) => refused,
                };
                if !matches!(refused, InsertRefused::Short(_)) {
                    index.release(room);
                }
                Attempt::Refused(refused, value)
            });
            let refused = match attempt {
                Attempt::Inserted => return Ok(Installed::Inserted),
                Attempt::Refused(refused, back) => {
                    value = back;
                    refused
                }
            };
            match refused {
                InsertRefused::Stale { held } => return Ok(Installed::Stale { held }),
                InsertRefused::Short(short) => {
                    eviction_rounds += 1;
                    if eviction_rounds > MAX_EVICTION_ROUNDS
                        || self.evict_for(short, &mut reserved).await == 0
                    {
                        let limit = if short.sessions > 0 {
                            "sessions"
                        } else {
                            "total bytes"
                        };
                        return Err(self.full(limit));
                    }
                }
                InsertRefused::Occupied => {
                    let found = self.with_index(|index| match index.lookup(key, now) {
                        Lookup::Resident(entry) => Some(Ok(entry)),
                        Lookup::Loading(flight) => Some(Err(flight)),
                        Lookup::Moved { .. } | Lookup::Absent => None,
                    });
                    match found {
                        None => {}
                        Some(Err(flight)) => {
                            let _ = self.wait(key, flight).await;
                        }
                        Some(Ok(entry)) => {
                            let Some(_queued) = entry.enter(self.inner.limits.max_pending_updates)
                            else {
                                return Err(self.busy(key));
                            };
                            let mut state = entry.state.write().await;
                            if state.retired {
                                continue;
                            }
                            let previous = state.version;
                            if version <= previous {
                                return Ok(Installed::Stale { held: previous });
                            }
                            self.resize(key, &entry, weight).await?;
                            state.value = Value::Decoded(value);
                            state.version = version;
                            state.epoch = state.epoch.max(epoch);
                            state.dirty = dirty;
                            return Ok(Installed::Replaced { previous });
                        }
                    }
                }
            }
        }
        Err(self.busy(key))
    }

    /// Every resident session, encoded, in the index's order. The set
    /// of keys is taken when the stream starts; sessions that leave memory
    /// before the stream reaches them are skipped. Each session is read under
    /// its shared lock, so the stream waits behind a running update.
    pub fn snapshot(
        &self,
    ) -> impl Stream<Item = Result<SessionRecord, StoreError>> + Send + 'static + use<V, P> {
        let entries = self.with_index(|index| index.entries());
        let store = self.clone();
        stream::iter(entries).filter_map(move |(key, entry)| {
            let store = store.clone();
            async move {
                let state = entry.state.read().await;
                if state.retired {
                    return None;
                }
                Some(store.record(key, &state))
            }
        })
    }

    /// Installs every record of `records` in turn (see
    /// [`install_record`](Self::install_record)) and reports the outcome;
    /// a refused record does not stop the others.
    pub async fn restore(&self, records: impl Stream<Item = SessionRecord>) -> Restore {
        let mut report = Restore::default();
        let mut records = std::pin::pin!(records);
        while let Some(record) = records.next().await {
            let outcome = self.install_record(&record).await;
            report.count(outcome, || record.key);
        }
        report
    }

    /// Encodes a locked session; one a snapshot restore left encoded gives
    /// its bytes as they are (what the codec made of it), copied out of the
    /// snapshot chunk they are a slice of, so that a record kept for long
    /// (a hand-off's outbox) does not hold the whole chunk in memory.
    pub(super) fn record(&self, key: Bytes, state: &State<V>) -> Result<SessionRecord, StoreError> {
        let value = match &state.value {
            Value::Encoded(bytes) => Bytes::copy_from_slice(bytes),
            Value::Decoded(value) => {
                self.inner
                    .codec
                    .encode(value)
                    .map_err(|source| StoreError::Codec {
                        key: display_key(&key),
                        action: "encode",
                        source: source.into(),
                    })?
            }
        };
        Ok(SessionRecord {
            key,
            version: state.version,
            epoch: state.epoch,
            dirty: state.dirty,
            value,
        })
    }
}

/// One try of an install's insert path.
enum Attempt<V> {
    Inserted,
    Refused(InsertRefused, V),
}
