//! What a pod keeps on the side during a transition, all bounded:
//!
//! * [`KeyLocks`]: one async lock per key *being handed over*, so a first-touch
//!   transfer, a received push and (on the losing side) a drain hand-off and a
//!   transfer answer of the same key never interleave. Entries exist only
//!   while someone holds or waits for them.
//! * [`Outbox`] (losing side): records this pod handed off and that their new
//!   owner has not acknowledged yet. A transfer retried after a lost answer,
//!   or racing the drain's push, is answered from here instead of "not
//!   resident", which would send the new owner to a stale persistence.
//! * [`WarmCache`] (gaining side): pre-copied records (possibly stale; used as
//!   the "known version" of a transfer) and *parked* final records (handed
//!   off to this pod before it owns the key, e.g. by a SIGTERM drain), both
//!   outside the session store until this pod owns the key.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::store::SessionRecord;

fn record_bytes(record: &SessionRecord) -> usize {
    record.key.len() + record.value.len()
}

/// Per-key async locks; see the [module docs](self).
#[derive(Clone, Default)]
pub(crate) struct KeyLocks {
    map: Arc<Mutex<HashMap<Bytes, Arc<AsyncMutex<()>>>>>,
}

/// A held key lock; released (and forgotten if nobody waits) on drop.
pub(crate) struct KeyGuard {
    locks: KeyLocks,
    key: Bytes,
    mutex: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Waits for the lock of `key`.
    pub(crate) async fn lock(&self, key: &[u8]) -> KeyGuard {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                map.entry(Bytes::copy_from_slice(key))
                    .or_insert_with(|| Arc::new(AsyncMutex::new(()))),
            )
        };
        let guard = Arc::clone(&mutex).lock_owned().await;
        KeyGuard {
            locks: self.clone(),
            key: Bytes::copy_from_slice(key),
            mutex,
            guard: Some(guard),
        }
    }

    /// Keys with a holder or a waiter (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&self.mutex) == 2 {
            map.remove(&self.key);
        }
    }
}

/// Entries by key and the bytes they count, under one lock, with a bound
/// on those bytes: the storage of the [`Outbox`] and the [`WarmCache`].
struct Bounded<V> {
    inner: Mutex<Entries<V>>,
    max_bytes: usize,
}

struct Entries<V> {
    map: HashMap<Bytes, V>,
    bytes: usize,
}

/// What an entry counts against its map's byte bound.
trait Weight {
    fn weight(&self, key: &[u8]) -> usize;
}

impl<V: Weight> Bounded<V> {
    fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Entries<V>) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Forgets `key`.
    fn remove(&self, key: &[u8]) {
        self.with(|entries| {
            if let Some(old) = entries.map.remove(key) {
                entries.bytes -= old.weight(key);
            }
        });
    }
}

impl<V: Weight> Entries<V> {
    /// Puts `value` under `key`, in place of any entry there.
    fn insert(&mut self, key: Bytes, value: V) {
        let added = value.weight(&key);
        match self.map.entry(key) {
            Entry::Occupied(mut entry) => {
                let old = entry.insert(value);
                self.bytes -= old.weight(entry.key());
            }
            Entry::Vacant(entry) => {
                entry.insert(value);
            }
        }
        self.bytes += added;
    }

    /// Drops the entries `drop` picks; returns how many it dropped.
    fn drop_where(&mut self, mut drop: impl FnMut(&V) -> bool) -> usize {
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|key, value| {
            let dropped = drop(value);
            if dropped {
                freed += value.weight(key);
            }
            !dropped
        });
        self.bytes -= freed;
        before - self.map.len()
    }
}

struct OutboxEntry {
    /// The state handed off, as sent.
    record: SessionRecord,
    to: Arc<str>,
    /// Ring version of the hand-off.
    version: u64,
    expires: Instant,
}

impl Weight for OutboxEntry {
    fn weight(&self, key: &[u8]) -> usize {
        record_bytes(&self.record) + key.len()
    }
}

/// Records handed off and not yet acknowledged; see the [module docs](self).
pub(crate) struct Outbox {
    entries: Bounded<OutboxEntry>,
}

impl Outbox {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            entries: Bounded::new(max_bytes),
        }
    }

    /// Keeps `record` for `to` until `ttl` passes or it is acknowledged.
    /// Returns `false` (and keeps nothing) when the outbox is at its byte
    /// bound even after dropping expired entries.
    pub(crate) fn insert(
        &self,
        key: &Bytes,
        record: SessionRecord,
        to: &str,
        version: u64,
        ttl: Duration,
    ) -> bool {
        let now = Instant::now();
        let size = record_bytes(&record) + key.len();
        let max_bytes = self.entries.max_bytes;
        self.entries.with(|entries| {
            if entries.bytes + size > max_bytes {
                drop_records(entries, |entry| entry.expires <= now);
            }
            if entries.bytes + size > max_bytes {
                return false;
            }
            let entry = OutboxEntry {
                record,
                to: to.into(),
                version,
                expires: now + ttl,
            };
            entries.insert(key.clone(), entry);
            true
        })
    }

    /// What was handed to `to` for `key`, if still kept.
    pub(crate) fn get(&self, key: &[u8], to: &str) -> Option<SessionRecord> {
        self.entries.with(|entries| {
            entries
                .map
                .get(key)
                .filter(|e| &*e.to == to && e.expires > Instant::now())
                .map(|e| e.record.clone())
        })
    }

    /// Forgets `key` (its new owner acknowledged it).
    pub(crate) fn remove(&self, key: &[u8]) {
        self.entries.remove(key);
    }

    /// The records kept.
    pub(crate) fn records(&self) -> Vec<SessionRecord> {
        self.entries
            .with(|entries| entries.map.values().map(|e| e.record.clone()).collect())
    }

    /// Drops expired entries; returns how many were dropped unacknowledged.
    pub(crate) fn purge(&self) -> usize {
        self.entries.with(|entries| {
            let now = Instant::now();
            drop_records(entries, |entry| entry.expires <= now)
        })
    }

    /// Drops the entries of hand-offs under rings older than `version` (a
    /// new transition started: they belong to a finished one); returns how
    /// many records were dropped unacknowledged.
    pub(crate) fn drop_older_than(&self, version: u64) -> usize {
        self.entries
            .with(|entries| drop_records(entries, |entry| entry.version < version))
    }

    /// Entries kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.with(|entries| entries.map.len())
    }
}

/// Drops the outbox entries `drop` picks; returns how many it dropped.
fn drop_records(entries: &mut Entries<OutboxEntry>, drop: impl Fn(&OutboxEntry) -> bool) -> usize {
    entries.drop_where(drop)
}

/// A record kept on the gaining side.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub record: SessionRecord,
    /// The pod it came from.
    pub from: Arc<str>,
    /// Handed off by `from` (authoritative once this pod owns the key with
    /// `from` as previous owner), or a pre-copy (possibly stale).
    pub last: bool,
    expires: Instant,
}

impl Weight for Cached {
    fn weight(&self, _key: &[u8]) -> usize {
        record_bytes(&self.record)
    }
}

/// Pre-copies and parked records; see the [module docs](self).
pub(crate) struct WarmCache {
    entries: Bounded<Cached>,
}

/// What [`WarmCache::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheInsert {
    /// Kept.
    Kept,
    /// A better record (final, or newer from the same pod) is already held.
    Superseded,
    /// The cache is at its byte bound.
    Full,
}

impl WarmCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            entries: Bounded::new(max_bytes),
        }
    }

    /// Keeps `record` from `from` for `ttl`. A final record replaces a
    /// pre-copy; a pre-copy never replaces a final record; between two of
    /// the same kind the higher version wins.
    pub(crate) fn insert(
        &self,
        record: SessionRecord,
        from: &str,
        last: bool,
        ttl: Duration,
    ) -> CacheInsert {
        let now = Instant::now();
        let max_bytes = self.entries.max_bytes;
        self.entries.with(|entries| {
            if let Some(held) = entries.map.get(&record.key)
                && held.expires > now
            {
                let better = match (held.last, last) {
                    (true, false) => true,
                    (false, true) => false,
                    _ => &*held.from == from && held.record.version >= record.version,
                };
                if better {
                    return CacheInsert::Superseded;
                }
            }
            let size = record_bytes(&record);
            let old = |entries: &Entries<Cached>| {
                entries
                    .map
                    .get(&record.key)
                    .map_or(0, |c| record_bytes(&c.record))
            };
            if entries.bytes - old(entries) + size > max_bytes {
                entries.drop_where(|c| c.expires <= now);
                if entries.bytes - old(entries) + size > max_bytes {
                    return CacheInsert::Full;
                }
            }
            let key = record.key.clone();
            let cached = Cached {
                record,
                from: from.into(),
                last,
                expires: now + ttl,
            };
            entries.insert(key, cached);
            CacheInsert::Kept
        })
    }

    /// The unexpired record of `key`, if any, without removing it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Cached> {
        let now = Instant::now();
        self.entries
            .with(|entries| entries.map.get(key).filter(|c| c.expires > now).cloned())
    }

    /// Removes the record of `key`.
    pub(crate) fn remove(&self, key: &[u8]) {
        self.entries.remove(key);
    }

    /// True if nothing is kept (a cheap test before a lookup).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.with(|entries| entries.map.is_empty())
    }

    /// Keys of the unexpired final records for which `wanted(key, from)`.
    pub(crate) fn finals(&self, wanted: impl Fn(&[u8], &str) -> bool) -> Vec<Bytes> {
        let now = Instant::now();
        self.entries.with(|entries| {
            entries
                .map
                .iter()
                .filter(|(key, c)| c.last && c.expires > now && wanted(key, &c.from))
                .map(|(key, _)| key.clone())
                .collect()
        })
    }

    /// Drops the pre-copies (not the parked final records) and expired
    /// records; returns how many records were dropped.
    pub(crate) fn drop_precopies(&self) -> usize {
        let now = Instant::now();
        self.entries
            .with(|entries| entries.drop_where(|c| !(c.last && c.expires > now)))
    }

    /// Drops the parked final records: a final record applies only to the
    /// next Switch that makes its sender this pod's previous owner.
    pub(crate) fn drop_finals(&self) -> usize {
        self.entries.with(|entries| entries.drop_where(|c| c.last))
    }

    /// Records kept and their bytes.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        self.entries
            .with(|entries| (entries.map.len(), entries.bytes))
    }
}

/// Keys made resident here by a handoff (transfer, push, promotion, or a
/// load the previous owner pointed to), each with the ring version (the
/// *epoch*) it was taken over at: such a key is never taken over again, and
/// no pushed copy of it installed, in a Switch of that epoch or an older one.
/// If this pod evicted it (writing it back), the persistence holds its
/// latest state; a copy from the previous owner could be older.
///
/// An epoch marks every older Switch too: a pod that skipped a Switch takes
/// its keys over under the ring that settles it (a higher version), and a
/// push or a request of the skipped Switch can still arrive afterwards.
/// Bounded: past `max` keys the oldest epoch is forgotten (logged).
pub(crate) struct Settled {
    inner: Mutex<HashMap<Bytes, u64>>,
    max: usize,
}

impl Settled {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Records `key` as taken over at epoch `version`; true if it was not
    /// taken over at that epoch or a later one before (the one place that
    /// decides whether a takeover is counted).
    pub(crate) fn mark(&self, version: u64, key: &[u8]) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(epoch) = inner.get_mut(key) {
            let new = *epoch < version;
            *epoch = (*epoch).max(version);
            return new;
        }
        if inner.len() >= self.max {
            let oldest = inner.values().copied().min().unwrap_or(version);
            let newest = inner.values().copied().max().unwrap_or(version);
            if oldest < newest {
                inner.retain(|_, epoch| *epoch > oldest);
            } else {
                inner.clear();
            }
            tracing::error!(
                max = self.max,
                forgotten_epoch = oldest,
                "too many sessions taken over; forgetting the oldest (a session evicted and touched again may be taken over twice)"
            );
        }
        inner.insert(Bytes::copy_from_slice(key), version);
        true
    }

    /// True if `key` was taken over at epoch `version` or later.
    pub(crate) fn contains(&self, version: u64, key: &[u8]) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.get(key).is_some_and(|epoch| *epoch >= version)
    }
}

/// The keys this pod handed off recently, so it knows which of them carry a
/// tombstone in its store. A key only ever gets its tombstone cleared through
/// here: while the tombstone stands nothing can load the key, so clearing it
/// cannot race a load. Entries expire a little before the tombstone itself.
pub(crate) struct Tombstones {
    inner: Mutex<HashMap<Bytes, Instant>>,
    max: usize,
}

impl Tombstones {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Records a hand-off of `key` that starts now with a tombstone of `ttl`.
    pub(crate) fn handed(&self, key: &[u8], ttl: Duration) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.len() >= self.max {
            inner.retain(|_, expires| *expires > now);
        }
        if inner.len() < self.max {
            inner.insert(Bytes::copy_from_slice(key), now + ttl);
        }
    }

    /// Forgets `key`; true if it had an unexpired entry (its tombstone may
    /// still stand).
    pub(crate) fn take(&self, key: &[u8]) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .remove(key)
            .is_some_and(|expires| expires > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &'static str, version: u64, size: usize) -> SessionRecord {
        SessionRecord {
            key: Bytes::from_static(key.as_bytes()),
            version,
            epoch: 1,
            dirty: true,
            value: Bytes::from(vec![0; size]),
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn key_locks_serialise_and_forget_idle_keys() {
        let locks = KeyLocks::default();
        let first = locks.lock(b"k").await;
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _second = locks.lock(b"k").await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(locks.len(), 1);
        drop(first);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0, "no holder, no waiter: forgotten");
        let _other = locks.lock(b"x").await;
        let _again = locks.lock(b"y").await;
        assert_eq!(locks.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_outbox_answers_only_the_recipient_and_is_bounded() {
        let outbox = Outbox::new(100);
        assert!(outbox.insert(
            &Bytes::from_static(b"a"),
            record("a", 3, 40),
            "pod-b",
            5,
            TTL
        ));
        assert_eq!(outbox.get(b"a", "pod-b"), Some(record("a", 3, 40)));
        assert_eq!(outbox.get(b"a", "pod-c"), None);
        assert!(!outbox.insert(
            &Bytes::from_static(b"b"),
            record("b", 1, 80),
            "pod-b",
            5,
            TTL
        ));
        assert!(outbox.insert(
            &Bytes::from_static(b"c"),
            record("c", 9, 10),
            "pod-b",
            5,
            Duration::from_secs(1)
        ));
        assert_eq!(outbox.records().len(), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(outbox.get(b"c", "pod-b"), None, "expired");
        assert_eq!(outbox.purge(), 1, "only c expired");
        outbox.remove(b"a");
        assert_eq!(outbox.len(), 0);
        assert!(outbox.insert(
            &Bytes::from_static(b"b"),
            record("b", 1, 80),
            "pod-b",
            5,
            TTL
        ));
        assert_eq!(outbox.drop_older_than(5), 0);
        assert_eq!(outbox.drop_older_than(6), 1);
        assert_eq!(outbox.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_outbox_entry_counts_once_against_the_bound() {
        let outbox = Outbox::new(100);
        let keep = |key: &'static str, size| {
            let handed = record(key, 1, size);
            outbox.insert(&Bytes::from_static(key.as_bytes()), handed, "pod-b", 5, TTL)
        };
        // Each entry counts its record (key and value) and its key: 42 bytes.
        for _ in 0..3 {
            assert!(keep("a", 40));
        }
        assert!(!keep("b", 57), "42 + 59 bytes is over the bound");
        assert!(keep("b", 56), "42 + 58 bytes is within it");
        outbox.remove(b"a");
        assert!(keep("c", 40), "the removed entry's bytes are free again");
    }

    #[tokio::test(start_paused = true)]
    async fn settled_epochs_cover_older_switches_and_tombstones_expire() {
        let settled = Settled::new(2);
        assert!(settled.mark(7, b"a"), "a first takeover is new");
        assert!(!settled.mark(7, b"a"), "the same epoch again is not");
        assert!(!settled.mark(6, b"a"), "nor an older one");
        assert!(settled.contains(7, b"a"));
        assert!(
            settled.contains(6, b"a"),
            "an epoch marks the older switches too (a skipped switch settled later)"
        );
        assert!(
            !settled.contains(8, b"a"),
            "a later switch takes it over again"
        );
        assert!(settled.mark(6, b"b"));
        assert!(settled.contains(6, b"b"));
        assert!(!settled.contains(7, b"b"));
        assert!(settled.mark(8, b"b"), "a later switch's takeover is new");
        assert!(
            settled.contains(8, b"b"),
            "the newest epoch of a key counts"
        );
        assert!(settled.mark(9, b"c"));
        assert!(
            !settled.contains(7, b"a"),
            "over the bound the oldest epoch goes"
        );
        assert!(settled.contains(8, b"b") && settled.contains(9, b"c"));

        let tombstones = Tombstones::new(10);
        tombstones.handed(b"k", Duration::from_secs(5));
        assert!(tombstones.take(b"k"));
        assert!(!tombstones.take(b"k"), "taken once");
        tombstones.handed(b"k", Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!tombstones.take(b"k"), "expired with its tombstone");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_prefers_final_then_newer_records_and_is_bounded() {
        let cache = WarmCache::new(100);
        // (key, version, size, from, final, what the cache does)
        for (key, version, size, from, last, expected) in [
            ("a", 3, 10, "p1", false, CacheInsert::Kept),
            ("a", 2, 10, "p1", false, CacheInsert::Superseded),
            ("a", 5, 10, "p1", true, CacheInsert::Kept),
            // A pre-copy never replaces a final record.
            ("a", 9, 10, "p1", false, CacheInsert::Superseded),
            ("b", 1, 95, "p1", false, CacheInsert::Full),
            ("c", 1, 10, "p2", false, CacheInsert::Kept),
        ] {
            let inserted = cache.insert(record(key, version, size), from, last, TTL);
            assert_eq!(inserted, expected, "{key} v{version}");
        }
        assert_eq!(cache.get(b"a").unwrap().record.version, 5);
        assert_eq!(
            cache.finals(|_, from| from == "p1"),
            vec![Bytes::from_static(b"a")]
        );
        assert_eq!(cache.drop_precopies(), 1);
        assert_eq!(cache.size(), (1, 11));
        assert_eq!(
            cache.insert(record("d", 1, 10), "p1", false, TTL),
            CacheInsert::Kept
        );
        assert_eq!(cache.drop_finals(), 1);
        assert!(cache.get(b"a").is_none());
        cache.insert(record("a", 5, 10), "p1", true, TTL);
        cache.remove(b"d");
        assert_eq!(cache.size(), (1, 11));
        cache.remove(b"a");
        assert_eq!(cache.size(), (0, 0));
    }
}
