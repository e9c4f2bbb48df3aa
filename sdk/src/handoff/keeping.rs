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

/// What this pod answered when it handed a key off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handed {
    /// The state, as sent.
    Record(SessionRecord),
    /// "Unchanged since this version" (the new owner holds the state).
    Unchanged(u64),
}

impl Handed {
    fn bytes(&self) -> usize {
        match self {
            Self::Record(record) => record_bytes(record),
            Self::Unchanged(_) => 8,
        }
    }
}

struct OutboxEntry {
    handed: Handed,
    to: Arc<str>,
    /// Ring version of the hand-off.
    version: u64,
    expires: Instant,
}

#[derive(Default)]
struct OutboxInner {
    map: HashMap<Bytes, OutboxEntry>,
    bytes: usize,
}

/// Records handed off and not yet acknowledged; see the [module docs](self).
pub(crate) struct Outbox {
    inner: Mutex<OutboxInner>,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(OutboxInner::default()),
            max_bytes,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut OutboxInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Keeps `handed` for `to` until `ttl` passes or it is acknowledged.
    /// Returns `false` (and keeps nothing) when the outbox is at its byte
    /// bound even after dropping expired entries.
    pub(crate) fn insert(
        &self,
        key: &Bytes,
        handed: Handed,
        to: &str,
        version: u64,
        ttl: Duration,
    ) -> bool {
        let now = Instant::now();
        let size = handed.bytes() + key.len();
        self.with(|inner| {
            if inner.bytes + size > self.max_bytes {
                purge(inner, now);
            }
            if inner.bytes + size > self.max_bytes {
                return false;
            }
            let entry = OutboxEntry {
                handed,
                to: to.into(),
                version,
                expires: now + ttl,
            };
            if let Some(old) = inner.map.insert(key.clone(), entry) {
                inner.bytes -= old.handed.bytes() + key.len();
            }
            inner.bytes += size;
            true
        })
    }

    /// What was handed to `to` for `key`, if still kept.
    pub(crate) fn get(&self, key: &[u8], to: &str) -> Option<Handed> {
        self.with(|inner| {
            inner
                .map
                .get(key)
                .filter(|e| &*e.to == to && e.expires > Instant::now())
                .map(|e| e.handed.clone())
        })
    }

    /// Forgets `key` (its new owner acknowledged it).
    pub(crate) fn remove(&self, key: &[u8]) {
        self.with(|inner| {
            if let Some(old) = inner.map.remove(key) {
                inner.bytes -= old.handed.bytes() + key.len();
            }
        });
    }

    /// Drops expired entries; returns how many records (not "unchanged"
    /// markers) were dropped unacknowledged.
    pub(crate) fn purge(&self) -> usize {
        self.with(|inner| purge(inner, Instant::now()))
    }

    /// Drops the entries of hand-offs under rings older than `version` (a
    /// new transition started: they belong to a finished one); returns how
    /// many records were dropped unacknowledged.
    pub(crate) fn drop_older_than(&self, version: u64) -> usize {
        self.with(|inner| {
            let mut dropped = 0;
            let mut freed = 0;
            inner.map.retain(|key, entry| {
                let keep = entry.version >= version;
                if !keep {
                    freed += entry.handed.bytes() + key.len();
                    dropped += usize::from(matches!(entry.handed, Handed::Record(_)));
                }
                keep
            });
            inner.bytes -= freed;
            dropped
        })
    }

    /// Entries kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.with(|inner| inner.map.len())
    }
}

fn purge(inner: &mut OutboxInner, now: Instant) -> usize {
    let mut dropped = 0;
    let mut freed = 0;
    inner.map.retain(|key, entry| {
        let keep = entry.expires > now;
        if !keep {
            freed += entry.handed.bytes() + key.len();
            dropped += usize::from(matches!(entry.handed, Handed::Record(_)));
        }
        keep
    });
    inner.bytes -= freed;
    dropped
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

#[derive(Default)]
struct CacheInner {
    map: HashMap<Bytes, Cached>,
    bytes: usize,
}

/// Pre-copies and parked records; see the [module docs](self).
pub(crate) struct WarmCache {
    inner: Mutex<CacheInner>,
    max_bytes: usize,
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
            inner: Mutex::new(CacheInner::default()),
            max_bytes,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut CacheInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
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
        self.with(|inner| {
            if let Some(held) = inner.map.get(&record.key)
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
            let old = inner
                .map
                .get(&record.key)
                .map_or(0, |c| record_bytes(&c.record));
            if inner.bytes - old + size > self.max_bytes {
                purge_cache(inner, now);
                let old = inner
                    .map
                    .get(&record.key)
                    .map_or(0, |c| record_bytes(&c.record));
                if inner.bytes - old + size > self.max_bytes {
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
            if let Some(old) = inner.map.insert(key, cached) {
                inner.bytes -= record_bytes(&old.record);
            }
            inner.bytes += size;
            CacheInsert::Kept
        })
    }

    /// The unexpired record of `key`, if any, without removing it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Cached> {
        let now = Instant::now();
        self.with(|inner| inner.map.get(key).filter(|c| c.expires > now).cloned())
    }

    /// Removes the record of `key`.
    pub(crate) fn remove(&self, key: &[u8]) {
        self.with(|inner| {
            if let Some(old) = inner.map.remove(key) {
                inner.bytes -= record_bytes(&old.record);
            }
        });
    }

    /// Keys of the unexpired final records for which `wanted(key, from)`.
    pub(crate) fn finals(&self, wanted: impl Fn(&[u8], &str) -> bool) -> Vec<Bytes> {
        let now = Instant::now();
        self.with(|inner| {
            inner
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
        self.with(|inner| {
            let before = inner.map.len();
            let mut freed = 0;
            inner.map.retain(|_, c| {
                let keep = c.last && c.expires > now;
                if !keep {
                    freed += record_bytes(&c.record);
                }
                keep
            });
            inner.bytes -= freed;
            before - inner.map.len()
        })
    }

    /// Drops the parked final records: a final record applies only to the
    /// next Switch that makes its sender this pod's previous owner.
    pub(crate) fn drop_finals(&self) -> usize {
        self.with(|inner| {
            let before = inner.map.len();
            let mut freed = 0;
            inner.map.retain(|_, c| {
                if c.last {
                    freed += record_bytes(&c.record);
                }
                !c.last
            });
            inner.bytes -= freed;
            before - inner.map.len()
        })
    }

    /// Records kept and their bytes.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        self.with(|inner| (inner.map.len(), inner.bytes))
    }
}

fn purge_cache(inner: &mut CacheInner, now: Instant) {
    let mut freed = 0;
    inner.map.retain(|_, c| {
        let keep = c.expires > now;
        if !keep {
            freed += record_bytes(&c.record);
        }
        keep
    });
    inner.bytes -= freed;
}

/// Keys made resident here by a handoff (transfer, push, promotion, or a
/// load the previous owner pointed to) during one Switch: such a key is never
/// taken over again in that Switch. If this pod evicts it (writing it back),
/// the persistence holds its latest state; asking the previous owner again
/// could bring back an older copy.
pub(crate) struct Settled {
    inner: Mutex<(u64, std::collections::HashSet<Bytes>)>,
    max: usize,
}

impl Settled {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new((0, std::collections::HashSet::new())),
            max,
        }
    }

    /// Records `key` as settled in the Switch of ring `version`.
    pub(crate) fn mark(&self, version: u64, key: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if version > inner.0 {
            *inner = (version, std::collections::HashSet::new());
        }
        if version == inner.0 {
            if inner.1.len() >= self.max {
                tracing::error!(
                    max = self.max,
                    "too many sessions taken over in one switch; forgetting which (a session evicted and touched again may be taken over twice)"
                );
                inner.1.clear();
            }
            inner.1.insert(Bytes::copy_from_slice(key));
        }
    }

    /// True if `key` was settled in the Switch of ring `version`.
    pub(crate) fn contains(&self, version: u64, key: &[u8]) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.0 == version && inner.1.contains(key)
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
            Handed::Record(record("a", 3, 40)),
            "pod-b",
            5,
            TTL
        ));
        assert_eq!(
            outbox.get(b"a", "pod-b"),
            Some(Handed::Record(record("a", 3, 40)))
        );
        assert_eq!(outbox.get(b"a", "pod-c"), None);
        assert!(!outbox.insert(
            &Bytes::from_static(b"b"),
            Handed::Record(record("b", 1, 80)),
            "pod-b",
            5,
            TTL
        ));
        assert!(outbox.insert(
            &Bytes::from_static(b"c"),
            Handed::Unchanged(9),
            "pod-b",
            5,
            Duration::from_secs(1)
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(outbox.get(b"c", "pod-b"), None, "expired");
        assert_eq!(outbox.purge(), 0, "only an unchanged marker expired");
        outbox.remove(b"a");
        assert_eq!(outbox.len(), 0);
        assert!(outbox.insert(
            &Bytes::from_static(b"b"),
            Handed::Record(record("b", 1, 80)),
            "pod-b",
            5,
            TTL
        ));
        assert_eq!(outbox.drop_older_than(5), 0);
        assert_eq!(outbox.drop_older_than(6), 1);
        assert_eq!(outbox.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn settled_keys_belong_to_one_switch_and_tombstones_expire() {
        let settled = Settled::new(2);
        settled.mark(7, b"a");
        assert!(settled.contains(7, b"a"));
        assert!(!settled.contains(8, b"a"));
        settled.mark(6, b"b");
        assert!(!settled.contains(6, b"b"), "an older switch is ignored");
        settled.mark(8, b"b");
        assert!(!settled.contains(7, b"a"), "a new switch starts afresh");
        assert!(settled.contains(8, b"b"));

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
        assert_eq!(
            cache.insert(record("a", 3, 10), "p1", false, TTL),
            CacheInsert::Kept
        );
        assert_eq!(
            cache.insert(record("a", 2, 10), "p1", false, TTL),
            CacheInsert::Superseded
        );
        assert_eq!(
            cache.insert(record("a", 5, 10), "p1", true, TTL),
            CacheInsert::Kept
        );
        assert_eq!(
            cache.insert(record("a", 9, 10), "p1", false, TTL),
            CacheInsert::Superseded,
            "a pre-copy never replaces a final record"
        );
        assert_eq!(cache.get(b"a").unwrap().record.version, 5);
        assert_eq!(
            cache.insert(record("b", 1, 95), "p1", false, TTL),
            CacheInsert::Full
        );
        assert_eq!(
            cache.insert(record("c", 1, 10), "p2", false, TTL),
            CacheInsert::Kept
        );
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
