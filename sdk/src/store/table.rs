//! [`SessionTable`]: the session store as the handoff protocol and the snapshot see it.
//!
//! The handoff endpoints, the transition driver and the snapshot code need a
//! handful of the store's calls (export, hand-off, install, snapshot, flush)
//! and nothing of its value type. This object-safe trait gives them those
//! calls over encoded [`SessionRecord`]s, so they are written once, not per
//! `SessionStore<V, P>`. It is implemented for every
//! [`SessionStore`](crate::store::SessionStore).

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};

use crate::ring::ShardCount;
use crate::store::{
    Flush, FlushPace, HandOff, Installed, Limits, LoadGuard, Persistence, PreparedChunk, RawRecord,
    ResidentSessions, Restore, SessionRecord, SessionStore, StoreError,
};

/// The store calls the handoff protocol makes; see the [module docs](self).
pub trait SessionTable: Send + Sync + 'static {
    /// Resident sessions: O(1).
    fn len(&self) -> usize;

    /// True if no session is resident: O(1).
    fn is_empty(&self) -> bool;

    /// Keys of the resident sessions of the shards `wanted` selects at
    /// `shards`, each with its shard: O(runs · log n + keys returned),
    /// yielding to other tasks between pages.
    fn keys_in_shards<'a>(
        &'a self,
        shards: ShardCount,
        wanted: &'a [bool],
    ) -> BoxFuture<'a, Vec<(u32, Bytes)>>;

    /// True if a session of a shard `wanted` selects is resident.
    fn holds_keys_in(&self, shards: ShardCount, wanted: &[bool]) -> bool;

    /// The resident version of `key`, if resident.
    fn version_of<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Option<u64>>;

    /// Makes `key` resident (loading or creating it) and returns its
    /// version; 0 for a new session.
    fn load_version<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The resident session encoded (pre-copy), if resident.
    fn export<'a>(
        &'a self,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>>;

    /// Hands the session over to `owner` and leaves a tombstone for `ttl`.
    fn hand_off<'a>(
        &'a self,
        key: &'a [u8],
        known: Option<u64>,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<HandOff, StoreError>>;

    /// Installs `record` if newer than what is held.
    fn install_record<'a>(
        &'a self,
        record: &'a SessionRecord,
    ) -> BoxFuture<'a, Result<Installed, StoreError>>;

    /// Writes every changed session back through the persistence.
    fn flush(&self) -> BoxFuture<'_, Flush>;

    /// [`flush`](Self::flush) with as many write-backs at once as `pace`
    /// says (asked before each; see [`SessionStore::flush_paced`]).
    fn flush_paced<'a>(
        &'a self,
        pace: &'a (dyn Fn() -> FlushPace + Send + Sync),
    ) -> BoxFuture<'a, Flush>;

    /// Writes a handed-off record through the persistence (conditional on
    /// its version); `Ok(false)` if the persistence keeps nothing.
    fn write_record<'a>(
        &'a self,
        record: &'a SessionRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Refuses loads of keys `guard` says another pod owns.
    fn guard_loads(&self, guard: LoadGuard) -> bool;

    /// Every resident session, encoded.
    fn snapshot(&self) -> BoxStream<'static, Result<SessionRecord, StoreError>>;

    /// Installs every record of `records`.
    fn restore<'a>(&'a self, records: BoxStream<'a, SessionRecord>) -> BoxFuture<'a, Restore>;

    /// The resident sessions, to be encoded off the store's lock (a
    /// snapshot's writer).
    fn resident_sessions(&self) -> Box<dyn ResidentSessions>;

    /// Decodes a chunk of records, borrowed from `chunk`, off the store's
    /// lock (a snapshot's reader, from any thread); clean records may stay
    /// encoded, as slices of `chunk`.
    fn prepare_chunk(&self, chunk: &Bytes, records: &[RawRecord<'_>]) -> PreparedChunk;

    /// Installs prepared chunks in order, one lock per chunk.
    fn install_prepared(&self, chunks: Vec<PreparedChunk>) -> BoxFuture<'_, Restore>;

    /// Decodes the restored sessions left encoded that no request used yet;
    /// returns how many.
    fn decode_left(&self) -> BoxFuture<'_, usize>;

    /// The store's bounds.
    fn limits(&self) -> &Limits;
}

impl<V, P> SessionTable for SessionStore<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    fn len(&self) -> usize {
        SessionStore::len(self)
    }

    fn is_empty(&self) -> bool {
        SessionStore::is_empty(self)
    }

    fn keys_in_shards<'a>(
        &'a self,
        shards: ShardCount,
        wanted: &'a [bool],
    ) -> BoxFuture<'a, Vec<(u32, Bytes)>> {
        SessionStore::keys_in_shards_async(self, shards, wanted).boxed()
    }

    fn holds_keys_in(&self, shards: ShardCount, wanted: &[bool]) -> bool {
        SessionStore::holds_keys_in(self, shards, wanted)
    }

    fn version_of<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Option<u64>> {
        SessionStore::version_of(self, key).boxed()
    }

    fn load_version<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<u64, StoreError>> {
        SessionStore::load_version(self, key).boxed()
    }

    fn export<'a>(
        &'a self,
        key: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        SessionStore::export(self, key).boxed()
    }

    fn hand_off<'a>(
        &'a self,
        key: &'a [u8],
        known: Option<u64>,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<HandOff, StoreError>> {
        SessionStore::hand_off(self, key, known, owner, ttl).boxed()
    }

    fn install_record<'a>(
        &'a self,
        record: &'a SessionRecord,
    ) -> BoxFuture<'a, Result<Installed, StoreError>> {
        SessionStore::install_record(self, record).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Flush> {
        SessionStore::flush(self).boxed()
    }

    fn flush_paced<'a>(
        &'a self,
        pace: &'a (dyn Fn() -> FlushPace + Send + Sync),
    ) -> BoxFuture<'a, Flush> {
        SessionStore::flush_paced(self, pace).boxed()
    }

    fn write_record<'a>(
        &'a self,
        record: &'a SessionRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        SessionStore::write_record(self, record).boxed()
    }

    fn guard_loads(&self, guard: LoadGuard) -> bool {
        SessionStore::guard_loads(self, guard)
    }

    fn snapshot(&self) -> BoxStream<'static, Result<SessionRecord, StoreError>> {
        SessionStore::snapshot(self).boxed()
    }

    fn restore<'a>(&'a self, records: BoxStream<'a, SessionRecord>) -> BoxFuture<'a, Restore> {
        SessionStore::restore(self, records).boxed()
    }

    fn resident_sessions(&self) -> Box<dyn ResidentSessions> {
        SessionStore::resident_sessions(self)
    }

    fn prepare_chunk(&self, chunk: &Bytes, records: &[RawRecord<'_>]) -> PreparedChunk {
        SessionStore::prepare_chunk(self, chunk, records)
    }

    fn install_prepared(&self, chunks: Vec<PreparedChunk>) -> BoxFuture<'_, Restore> {
        SessionStore::install_prepared(self, chunks).boxed()
    }

    fn decode_left(&self) -> BoxFuture<'_, usize> {
        SessionStore::decode_left(self).boxed()
    }

    fn limits(&self) -> &Limits {
        SessionStore::limits(self)
    }
}
