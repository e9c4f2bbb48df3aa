//! The index: what the store knows about every key, and its accounting.
//!
//! A key is *resident* (its entry is in memory, with a weight), *loading* (one
//! load is in flight; callers wait on its flight handle) or *moved* (handed
//! off; a tombstone names the new owner until it expires). The index keeps the
//! exact sums the bounds are checked against — resident bytes, resident plus
//! loading sessions, loads in flight, tombstones — and the order of last
//! access that eviction and passivation walk, least recent first.
//!
//! It is plain synchronous data behind the store's mutex and never calls user
//! code, so every method leaves it consistent. Bound checks and the changes
//! they guard happen in the same call: a caller that gets `Ok` holds the room
//! it asked for.
//!
//! Invariants (checked by [`Index::check`] in tests):
//! * `bytes` is the sum of the weights of resident slots, and never exceeds
//!   `max_total_bytes`;
//! * `resident + loading` never exceeds `max_sessions`, `loading` never
//!   exceeds `max_loads`;
//! * `lru` holds exactly the resident keys, ordered by last access;
//! * `tombs` holds exactly the moved keys, ordered by expiry.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

/// The bounds the index enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Most sessions resident or loading.
    pub sessions: usize,
    /// Most resident bytes.
    pub total_bytes: usize,
    /// Most loads in flight.
    pub loads: usize,
    /// Most tombstones.
    pub tombstones: usize,
}

/// What is missing for a request to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Shortfall {
    /// Sessions that must go.
    pub sessions: usize,
    /// Bytes that must be freed.
    pub bytes: usize,
}

/// Why a load could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadRefused {
    /// `max_loads` loads are in flight.
    Saturated,
    /// The session bound is reached.
    Short(Shortfall),
}

/// Why an install could not insert a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertRefused {
    /// The key is resident or loading: replace under the entry's lock.
    Occupied,
    /// The key was handed off at a newer version than the one offered.
    Stale { held: u64 },
    /// A session or the bytes do not fit.
    Short(Shortfall),
}

/// What a key is, as seen by a request.
pub(crate) enum Lookup<T, F> {
    Resident(Arc<T>),
    Loading(F),
    Moved { owner: Arc<str>, version: u64 },
    Absent,
}

struct Resident<T> {
    entry: Arc<T>,
    weight: usize,
    seq: u64,
    last_access: Instant,
    backoff_until: Option<Instant>,
}

struct Tombstone {
    owner: Arc<str>,
    version: u64,
    expires: Instant,
    seq: u64,
}

enum Slot<T, F> {
    Resident(Resident<T>),
    Loading(F),
    Moved(Tombstone),
}

/// The index over entries `T` with flight handles `F`.
pub(crate) struct Index<T, F> {
    bounds: Bounds,
    map: HashMap<Bytes, Slot<T, F>>,
    lru: BTreeMap<u64, Bytes>,
    tombs: BTreeMap<(Instant, u64), Bytes>,
    seq: u64,
    bytes: usize,
    resident: usize,
    loading: usize,
}

impl<T, F: Clone> Index<T, F> {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            map: HashMap::new(),
            lru: BTreeMap::new(),
            tombs: BTreeMap::new(),
            seq: 0,
            bytes: 0,
            resident: 0,
            loading: 0,
        }
    }

    /// Resident bytes (sum of weights).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Resident sessions.
    pub fn resident(&self) -> usize {
        self.resident
    }

    /// Loads in flight.
    pub fn loading(&self) -> usize {
        self.loading
    }

    /// Tombstones held (expired ones included until purged).
    pub fn tombstones(&self) -> usize {
        self.tombs.len()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Looks `key` up; a resident key counts as accessed at `now`, an expired
    /// tombstone is dropped.
    pub fn lookup(&mut self, key: &[u8], now: Instant) -> Lookup<T, F> {
        let seq = self.next_seq();
        let expired = match self.map.get_mut(key) {
            None => return Lookup::Absent,
            Some(Slot::Loading(flight)) => return Lookup::Loading(flight.clone()),
            Some(Slot::Resident(resident)) => {
                if let Some(key) = self.lru.remove(&resident.seq) {
                    self.lru.insert(seq, key);
                }
                resident.seq = seq;
                resident.last_access = now;
                return Lookup::Resident(Arc::clone(&resident.entry));
            }
            Some(Slot::Moved(tomb)) => {
                if tomb.expires > now {
                    return Lookup::Moved {
                        owner: Arc::clone(&tomb.owner),
                        version: tomb.version,
                    };
                }
                (tomb.expires, tomb.seq)
            }
        };
        self.tombs.remove(&expired);
        self.map.remove(key);
        Lookup::Absent
    }

    /// The resident entry of `key` without counting an access.
    pub fn peek(&self, key: &[u8]) -> Option<Arc<T>> {
        match self.map.get(key) {
            Some(Slot::Resident(resident)) => Some(Arc::clone(&resident.entry)),
            _ => None,
        }
    }

    /// Starts a load of the absent key `key`: it counts as a session from now.
    pub fn begin_load(&mut self, key: &[u8], flight: F) -> Result<(), LoadRefused> {
        debug_assert!(
            !matches!(
                self.map.get(key),
                Some(Slot::Resident(_) | Slot::Loading(_))
            ),
            "begin_load on an occupied key"
        );
        if self.loading >= self.bounds.loads {
            return Err(LoadRefused::Saturated);
        }
        if self.resident + self.loading >= self.bounds.sessions {
            return Err(LoadRefused::Short(Shortfall {
                sessions: self.resident + self.loading + 1 - self.bounds.sessions,
                bytes: 0,
            }));
        }
        self.remove_tombstone(key);
        self.map
            .insert(Bytes::copy_from_slice(key), Slot::Loading(flight));
        self.loading += 1;
        Ok(())
    }

    /// Turns the loading key `key` resident with `entry` of `weight` bytes,
    /// if the bytes fit.
    pub fn finish_load(
        &mut self,
        key: &Bytes,
        entry: Arc<T>,
        weight: usize,
        now: Instant,
    ) -> Result<(), Shortfall> {
        debug_assert!(matches!(self.map.get(key), Some(Slot::Loading(_))));
        let short = self.bytes_short(weight);
        if short > 0 {
            return Err(Shortfall {
                sessions: 0,
                bytes: short,
            });
        }
        self.loading -= 1;
        self.put_resident(key.clone(), entry, weight, now);
        Ok(())
    }

    /// Forgets the load of `key` (failed, refused or interrupted).
    pub fn cancel_load(&mut self, key: &[u8]) {
        if let MapEntry::Occupied(slot) = self.map.entry(Bytes::copy_from_slice(key))
            && matches!(slot.get(), Slot::Loading(_))
        {
            slot.remove();
            self.loading -= 1;
        }
    }

    /// Whether `key` can become resident at `version` with `weight` bytes:
    /// it must be absent or moved (an unexpired tombstone only gives way to a
    /// version at least as new as the one handed off), and a session and the
    /// bytes must fit. Used by installs, followed by [`insert`](Self::insert)
    /// under the same lock.
    pub fn admit(
        &self,
        key: &[u8],
        weight: usize,
        version: u64,
        now: Instant,
    ) -> Result<(), InsertRefused> {
        match self.map.get(key) {
            Some(Slot::Resident(_) | Slot::Loading(_)) => return Err(InsertRefused::Occupied),
            Some(Slot::Moved(tomb)) if tomb.expires > now && tomb.version > version => {
                return Err(InsertRefused::Stale { held: tomb.version });
            }
            Some(Slot::Moved(_)) | None => {}
        }
        let sessions = (self.resident + self.loading + 1).saturating_sub(self.bounds.sessions);
        let bytes = self.bytes_short(weight);
        if sessions > 0 || bytes > 0 {
            return Err(InsertRefused::Short(Shortfall { sessions, bytes }));
        }
        Ok(())
    }

    /// Makes `key` resident with `entry` of `weight` bytes, replacing a
    /// tombstone. Only after [`admit`](Self::admit) said yes under the same
    /// lock.
    pub fn insert(&mut self, key: &[u8], entry: Arc<T>, weight: usize, now: Instant) {
        debug_assert!(
            !matches!(
                self.map.get(key),
                Some(Slot::Resident(_) | Slot::Loading(_))
            ),
            "insert on an occupied key"
        );
        self.remove_tombstone(key);
        self.put_resident(Bytes::copy_from_slice(key), entry, weight, now);
    }

    fn put_resident(&mut self, key: Bytes, entry: Arc<T>, weight: usize, now: Instant) {
        let seq = self.next_seq();
        self.lru.insert(seq, key.clone());
        self.map.insert(
            key,
            Slot::Resident(Resident {
                entry,
                weight,
                seq,
                last_access: now,
                backoff_until: None,
            }),
        );
        self.resident += 1;
        self.bytes += weight;
    }

    fn bytes_short(&self, extra: usize) -> usize {
        self.bytes
            .saturating_add(extra)
            .saturating_sub(self.bounds.total_bytes)
    }

    /// Changes the weight of the resident `entry` of `key` to `weight`, if the
    /// growth fits. Returns the previous weight. `None` if `entry` is not the
    /// resident entry of `key` (a caller bug; nothing changes).
    pub fn resize(
        &mut self,
        key: &[u8],
        entry: &Arc<T>,
        weight: usize,
    ) -> Option<Result<usize, Shortfall>> {
        let Some(Slot::Resident(resident)) = self.map.get_mut(key) else {
            return None;
        };
        if !Arc::ptr_eq(&resident.entry, entry) {
            return None;
        }
        let old = resident.weight;
        if weight > old {
            let short = (self.bytes + (weight - old)).saturating_sub(self.bounds.total_bytes);
            if short > 0 {
                return Some(Err(Shortfall {
                    sessions: 0,
                    bytes: short,
                }));
            }
        }
        resident.weight = weight;
        self.bytes = self.bytes - old + weight;
        Some(Ok(old))
    }

    /// Removes the resident `entry` of `key`, unless it was accessed after
    /// `idle_before` (when given). Returns the freed weight.
    pub fn remove(
        &mut self,
        key: &[u8],
        entry: &Arc<T>,
        idle_before: Option<Instant>,
    ) -> Option<usize> {
        let Some(Slot::Resident(resident)) = self.map.get(key) else {
            return None;
        };
        if !Arc::ptr_eq(&resident.entry, entry) {
            return None;
        }
        if idle_before.is_some_and(|cutoff| resident.last_access > cutoff) {
            return None;
        }
        let (seq, weight) = (resident.seq, resident.weight);
        self.map.remove(key);
        self.lru.remove(&seq);
        self.resident -= 1;
        self.bytes -= weight;
        Some(weight)
    }

    /// Marks the resident `entry` of `key` as not worth another write-back
    /// attempt under pressure until `until`.
    pub fn back_off(&mut self, key: &[u8], entry: &Arc<T>, until: Instant) {
        if let Some(Slot::Resident(resident)) = self.map.get_mut(key)
            && Arc::ptr_eq(&resident.entry, entry)
        {
            resident.backoff_until = Some(until);
        }
    }

    /// Leaves a tombstone on `key` (absent or already moved): requests get
    /// "moved to `owner`" until `expires`. At the tombstone bound, expired
    /// tombstones go first, then those closest to expiry. Returns how many
    /// unexpired tombstones were dropped to make room.
    pub fn tombstone(
        &mut self,
        key: &[u8],
        owner: Arc<str>,
        version: u64,
        expires: Instant,
        now: Instant,
    ) -> usize {
        debug_assert!(
            !matches!(
                self.map.get(key),
                Some(Slot::Resident(_) | Slot::Loading(_))
            ),
            "tombstone on an occupied key"
        );
        self.remove_tombstone(key);
        let mut dropped = 0;
        if self.tombs.len() >= self.bounds.tombstones {
            self.purge_tombstones(now);
        }
        while self.tombs.len() >= self.bounds.tombstones {
            let Some((_, oldest)) = self.tombs.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
            dropped += 1;
        }
        let seq = self.next_seq();
        let key = Bytes::copy_from_slice(key);
        self.tombs.insert((expires, seq), key.clone());
        self.map.insert(
            key,
            Slot::Moved(Tombstone {
                owner,
                version,
                expires,
                seq,
            }),
        );
        dropped
    }

    fn remove_tombstone(&mut self, key: &[u8]) {
        if let Some(Slot::Moved(tomb)) = self.map.get(key) {
            let at = (tomb.expires, tomb.seq);
            self.tombs.remove(&at);
            self.map.remove(key);
        }
    }

    /// Drops expired tombstones; returns how many.
    pub fn purge_tombstones(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        while let Some(entry) = self.tombs.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.map.remove(&key);
            purged += 1;
        }
        purged
    }

    /// Resident entries worth evicting to cover `short`, least recently used
    /// first: at most `limit`, skipping those backed off at `now` and those
    /// `busy` says are in use.
    pub fn victims(
        &self,
        short: Shortfall,
        limit: usize,
        now: Instant,
        busy: impl Fn(&T) -> bool,
    ) -> Vec<(Bytes, Arc<T>)> {
        let mut chosen = Vec::new();
        let (mut sessions, mut bytes) = (0, 0);
        for key in self.lru.values() {
            if chosen.len() >= limit || (sessions >= short.sessions && bytes >= short.bytes) {
                break;
            }
            let Some(Slot::Resident(resident)) = self.map.get(key) else {
                continue;
            };
            if resident.backoff_until.is_some_and(|until| until > now) || busy(&resident.entry) {
                continue;
            }
            sessions += 1;
            bytes += resident.weight;
            chosen.push((key.clone(), Arc::clone(&resident.entry)));
        }
        chosen
    }

    /// Resident entries last accessed at or before `cutoff`, least recent
    /// first, at most `limit`.
    pub fn idle(&self, cutoff: Instant, limit: usize) -> Vec<(Bytes, Arc<T>)> {
        let mut idle = Vec::new();
        for key in self.lru.values() {
            if idle.len() >= limit {
                break;
            }
            let Some(Slot::Resident(resident)) = self.map.get(key) else {
                continue;
            };
            if resident.last_access > cutoff {
                break;
            }
            idle.push((key.clone(), Arc::clone(&resident.entry)));
        }
        idle
    }

    /// Every resident entry, least recently used first.
    pub fn entries(&self) -> Vec<(Bytes, Arc<T>)> {
        self.lru
            .values()
            .filter_map(|key| match self.map.get(key) {
                Some(Slot::Resident(resident)) => Some((key.clone(), Arc::clone(&resident.entry))),
                _ => None,
            })
            .collect()
    }

    /// Checks every invariant; `Err` names the first broken one.
    #[cfg(test)]
    pub fn check(&self) -> Result<(), String> {
        let mut bytes = 0;
        let (mut resident, mut loading, mut moved) = (0, 0, 0);
        for (key, slot) in &self.map {
            match slot {
                Slot::Resident(r) => {
                    resident += 1;
                    bytes += r.weight;
                    if self.lru.get(&r.seq) != Some(key) {
                        return Err(format!("lru misses resident key {key:?}"));
                    }
                }
                Slot::Loading(_) => loading += 1,
                Slot::Moved(t) => {
                    moved += 1;
                    if self.tombs.get(&(t.expires, t.seq)) != Some(key) {
                        return Err(format!("tombs misses moved key {key:?}"));
                    }
                }
            }
        }
        if bytes != self.bytes {
            return Err(format!("bytes {} but weights sum to {bytes}", self.bytes));
        }
        if bytes > self.bounds.total_bytes {
            return Err(format!("bytes {bytes} over the bound"));
        }
        if resident != self.resident || loading != self.loading {
            return Err(format!(
                "counts {}/{} but slots {resident}/{loading}",
                self.resident, self.loading
            ));
        }
        if resident + loading > self.bounds.sessions || loading > self.bounds.loads {
            return Err("session or load bound exceeded".into());
        }
        if self.lru.len() != resident || self.tombs.len() != moved {
            return Err("order maps hold stale keys".into());
        }
        if moved > self.bounds.tombstones {
            return Err("tombstone bound exceeded".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type TestIndex = Index<u32, u8>;

    fn bounds() -> Bounds {
        Bounds {
            sessions: 3,
            total_bytes: 100,
            loads: 2,
            tombstones: 2,
        }
    }

    fn load(index: &mut TestIndex, key: &str, weight: usize, now: Instant) -> Arc<u32> {
        let entry = Arc::new(0);
        index.begin_load(key.as_bytes(), 0).unwrap();
        index
            .finish_load(&Bytes::from(key.to_owned()), entry.clone(), weight, now)
            .unwrap();
        entry
    }

    #[test]
    fn loads_count_as_sessions_and_are_bounded() {
        let now = Instant::now();
        let mut index = TestIndex::new(bounds());
        index.begin_load(b"a", 1).unwrap();
        index.begin_load(b"b", 1).unwrap();
        assert_eq!(index.begin_load(b"c", 1), Err(LoadRefused::Saturated));
        index
            .finish_load(&Bytes::from_static(b"a"), Arc::new(1), 10, now)
            .unwrap();
        index.begin_load(b"c", 1).unwrap();
        // a resident, b and c loading: the session bound (3) is reached.
        index.cancel_load(b"b");
        assert!(matches!(index.lookup(b"b", now), Lookup::Absent));
        index.begin_load(b"d", 1).unwrap();
        assert_eq!(
            index.begin_load(b"e", 1),
            Err(LoadRefused::Saturated),
            "two loads in flight"
        );
        index
            .finish_load(&Bytes::from_static(b"c"), Arc::new(1), 10, now)
            .unwrap();
        assert_eq!(
            index.begin_load(b"e", 1),
            Err(LoadRefused::Short(Shortfall {
                sessions: 1,
                bytes: 0
            }))
        );
        index.check().unwrap();
    }

    #[test]
    fn bytes_are_exact_and_never_exceed_the_bound() {
        let now = Instant::now();
        let mut index = TestIndex::new(bounds());
        let a = load(&mut index, "a", 60, now);
        index.begin_load(b"b", 0).unwrap();
        assert_eq!(
            index.finish_load(&Bytes::from_static(b"b"), Arc::new(0), 50, now),
            Err(Shortfall {
                sessions: 0,
                bytes: 10
            })
        );
        index.cancel_load(b"b");
        assert_eq!(
            index.resize(b"a", &a, 101),
            Some(Err(Shortfall {
                sessions: 0,
                bytes: 1
            }))
        );
        assert_eq!(index.resize(b"a", &a, 100), Some(Ok(60)));
        assert_eq!(index.bytes(), 100);
        assert_eq!(index.resize(b"a", &a, 5), Some(Ok(100)));
        assert_eq!(index.resize(b"a", &Arc::new(0), 5), None, "not this entry");
        let b = load(&mut index, "b", 95, now);
        assert_eq!(index.bytes(), 100);
        assert_eq!(index.remove(b"b", &b, None), Some(95));
        assert_eq!(index.bytes(), 5);
        index.check().unwrap();
    }

    #[test]
    fn victims_follow_least_recent_access_and_skip_busy_and_backed_off() {
        let t0 = Instant::now();
        let mut index = TestIndex::new(bounds());
        let a = load(&mut index, "a", 10, t0);
        let b = load(&mut index, "b", 20, t0);
        let _c = load(&mut index, "c", 30, t0);
        // Touch a: order is now b, c, a.
        assert!(matches!(index.lookup(b"a", t0), Lookup::Resident(_)));
        let need = Shortfall {
            sessions: 1,
            bytes: 40,
        };
        let keys = |v: Vec<(Bytes, Arc<u32>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(index.victims(need, 10, t0, |_| false)), ["b", "c"]);
        assert_eq!(keys(index.victims(need, 1, t0, |_| false)), ["b"]);
        let busy_b = |e: &u32| std::ptr::eq(e, Arc::as_ptr(&b));
        assert_eq!(keys(index.victims(need, 10, t0, busy_b)), ["c", "a"]);
        index.back_off(
            b"c",
            &index.peek(b"c").unwrap(),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(keys(index.victims(need, 10, t0, |_| false)), ["b", "a"]);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(keys(index.victims(need, 10, later, |_| false)), ["b", "c"]);
        let _ = a;
        index.check().unwrap();
    }

    #[test]
    fn idle_lists_sessions_untouched_since_the_cutoff() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut index = TestIndex::new(bounds());
        let a = load(&mut index, "a", 1, t0);
        let _b = load(&mut index, "b", 1, t0);
        assert!(matches!(index.lookup(b"b", t1), Lookup::Resident(_)));
        let idle = index.idle(t0, 10);
        assert_eq!(idle.len(), 1);
        assert_eq!(idle[0].0, "a");
        // An access after the cutoff protects a session from idle removal.
        assert!(matches!(index.lookup(b"a", t1), Lookup::Resident(_)));
        assert_eq!(index.remove(b"a", &a, Some(t0)), None);
        assert_eq!(index.remove(b"a", &a, Some(t1)), Some(1));
        index.check().unwrap();
    }

    #[test]
    fn tombstones_expire_and_are_bounded() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut index = TestIndex::new(bounds());
        index.tombstone(b"a", "pod-1".into(), 4, t0 + secs(10), t0);
        match index.lookup(b"a", t0) {
            Lookup::Moved { owner, version } => {
                assert_eq!(&*owner, "pod-1");
                assert_eq!(version, 4);
            }
            _ => panic!("expected moved"),
        }
        index.tombstone(b"b", "pod-2".into(), 1, t0 + secs(20), t0);
        // At the bound: the tombstone closest to expiry (a) makes room.
        assert_eq!(
            index.tombstone(b"c", "pod-3".into(), 1, t0 + secs(30), t0),
            1
        );
        assert!(matches!(index.lookup(b"a", t0), Lookup::Absent));
        assert_eq!(index.tombstones(), 2);
        // Expired tombstones vanish on lookup and on purge.
        assert!(matches!(index.lookup(b"b", t0 + secs(20)), Lookup::Absent));
        assert_eq!(index.purge_tombstones(t0 + secs(30)), 1);
        assert_eq!(index.tombstones(), 0);
        index.check().unwrap();
    }

    #[test]
    fn insert_replaces_a_tombstone_only_with_a_version_at_least_as_new() {
        let now = Instant::now();
        let mut index = TestIndex::new(bounds());
        let soon = now + Duration::from_secs(9);
        index.tombstone(b"a", "pod-1".into(), 5, soon, now);
        assert_eq!(
            index.admit(b"a", 40, 4, now),
            Err(InsertRefused::Stale { held: 5 })
        );
        // An expired tombstone no longer protects anything.
        assert_eq!(index.admit(b"a", 40, 4, soon), Ok(()));
        assert_eq!(index.admit(b"a", 40, 5, now), Ok(()));
        index.insert(b"a", Arc::new(1), 40, now);
        assert_eq!(index.tombstones(), 0);
        assert_eq!(index.admit(b"a", 1, 9, now), Err(InsertRefused::Occupied));
        assert_eq!(
            index.admit(b"b", 61, 1, now),
            Err(InsertRefused::Short(Shortfall {
                sessions: 0,
                bytes: 1
            }))
        );
        index.insert(b"b", Arc::new(1), 10, now);
        index.insert(b"c", Arc::new(1), 10, now);
        assert_eq!(
            index.admit(b"d", 10, 1, now),
            Err(InsertRefused::Short(Shortfall {
                sessions: 1,
                bytes: 0
            }))
        );
        assert_eq!(index.resident(), 3);
        assert_eq!(index.bytes(), 60);
        index.check().unwrap();
    }
}
