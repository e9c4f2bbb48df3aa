//! The index: what the store knows about every key, and its accounting.
//!
//! A key is *resident* (its entry is in memory, with a weight), *loading* (one
//! load is in flight; callers wait on its flight handle) or *moved* (handed
//! off; a tombstone names the new owner until it expires). The index keeps the
//! exact sums the bounds are checked against — resident bytes, resident plus
//! loading sessions, loads in flight, tombstones — and the order of last
//! access that eviction and passivation walk, least recent first.
//!
//! Pressure eviction is coordinated here. A request that needs room *claims*
//! victims ([`Index::claim`]): a claimed session is skipped by every other
//! claim, so concurrent requests evict distinct sessions. The room a claimed
//! eviction frees is not returned to the pool but *reserved* for the request
//! that evicted it (its [`Room`]); only that request's next bound check counts
//! it as free, so a concurrent request cannot take it. The request spends its
//! room when its session, load or growth fits, or releases it when it gives up.
//!
//! It is plain synchronous data behind the store's mutex and never calls user
//! code, so every method leaves it consistent. Bound checks and the changes
//! they guard happen in the same call: a caller that gets `Ok` holds the room
//! it asked for.
//!
//! Why one file of about 700 lines: the index is one data structure whose
//! sums must stay exact across every method (the invariants below); each
//! method changes several of them at once, so they are read and checked
//! together. Its test-only checker, `check`, is 60 of those lines.
//!
//! Invariants (checked by [`Index::check`] in tests):
//! * `bytes` is the sum of the weights of resident slots, and `bytes` plus the
//!   reserved bytes never exceeds `max_total_bytes`;
//! * `resident + loading` plus the reserved sessions never exceeds
//!   `max_sessions`, `loading` never exceeds `max_loads`;
//! * `evicting` counts exactly the claimed resident slots;
//! * `lru` holds exactly the resident keys, ordered by last access;
//! * `by_hash` holds exactly the resident keys, each with its ring hash
//!   ([`hash_key`]), ordered by that hash (the *shard index*);
//! * `tombs` holds exactly the moved keys, ordered by expiry.
//!
//! The shard index answers "the resident keys of shard `i` at shard count
//! `S`" without a scan: a shard is the contiguous hash range
//! `i << (64 - log2 S) .. (i + 1) << (64 - log2 S)`, so its keys are one
//! range of `by_hash`, found in O(log n) and read in O(keys in the shard),
//! at any `S` (a doubling of `S` needs no re-index). Keys with equal hashes
//! are told apart by their bytes.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::ring::{ShardCount, hash_key};

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

/// Room evicted for one request and held for it: counted against the bounds
/// for everybody else, free for the request holding it. Spent by the index
/// call that fits the request, or given back with [`Index::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Room {
    /// Session places held.
    pub sessions: usize,
    /// Bytes held.
    pub bytes: usize,
}

impl Room {
    /// Whether it holds nothing.
    pub fn is_empty(self) -> bool {
        self == Self::default()
    }
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

/// The ring hashes of a run of consecutive shards `first..end` at some shard
/// count: `start..end` (`end` `None`: through `u64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HashSpan {
    start: u64,
    end: Option<u64>,
}

impl HashSpan {
    /// The hashes of shards `first..end` at `shards` (`first < end <= S`).
    pub fn of_shards(shards: ShardCount, first: u32, end: u32) -> Self {
        debug_assert!(first < end && end <= shards.get(), "not a run of shards");
        Self {
            start: shards.start(first),
            end: (end < shards.get()).then(|| shards.start(end)),
        }
    }

    /// The runs of consecutive shards `wanted` selects (`wanted[i]`: shard
    /// `i` at `shards`), in shard order.
    pub fn runs(shards: ShardCount, wanted: &[bool]) -> Vec<Self> {
        let mut runs = Vec::new();
        let mut first = None;
        for shard in 0..shards.get() {
            let on = wanted.get(shard as usize).copied().unwrap_or(false);
            match (on, first) {
                (true, None) => first = Some(shard),
                (false, Some(begun)) => {
                    runs.push(Self::of_shards(shards, begun, shard));
                    first = None;
                }
                _ => {}
            }
        }
        if let Some(begun) = first {
            runs.push(Self::of_shards(shards, begun, shards.get()));
        }
        runs
    }

    /// The span's bounds in `by_hash`, resuming after `after` if given.
    fn bounds(self, after: Option<&Hashed>) -> (Bound<Hashed>, Bound<Hashed>) {
        let start = match after {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Included((self.start, Bytes::new())),
        };
        let end = match self.end {
            Some(end) => Bound::Excluded((end, Bytes::new())),
            None => Bound::Unbounded,
        };
        (start, end)
    }
}

/// A key of the shard index: its ring hash, then its bytes.
type Hashed = (u64, Bytes);

/// Where a paged walk over [`HashSpan`]s stands: the span it is in and the
/// last key it returned there.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanCursor {
    span: usize,
    after: Option<(u64, Bytes)>,
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
    /// A request is evicting it (see [`Index::claim`]).
    claimed: bool,
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
    /// The shard index: resident keys by ring hash.
    by_hash: BTreeSet<(u64, Bytes)>,
    tombs: BTreeMap<(Instant, u64), Bytes>,
    seq: u64,
    bytes: usize,
    resident: usize,
    loading: usize,
    /// Room held by requests (sum of their [`Room`]s).
    reserved: Room,
    /// Claimed resident slots.
    evicting: usize,
}

impl<T, F: Clone> Index<T, F> {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            map: HashMap::new(),
            lru: BTreeMap::new(),
            by_hash: BTreeSet::new(),
            tombs: BTreeMap::new(),
            seq: 0,
            bytes: 0,
            resident: 0,
            loading: 0,
            reserved: Room::default(),
            evicting: 0,
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

    /// Room held by requests, not yet spent.
    #[cfg(test)]
    pub fn reserved(&self) -> Room {
        self.reserved
    }

    /// Resident sessions claimed by a pressure eviction in progress.
    #[cfg(test)]
    pub fn evicting(&self) -> usize {
        self.evicting
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
    /// `room` (held by the caller) counts as free; on success it is spent
    /// (its bytes go back to the pool).
    pub fn begin_load(
        &mut self,
        key: &[u8],
        flight: F,
        room: &mut Room,
    ) -> Result<(), LoadRefused> {
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
        let sessions = self.sessions_short(*room);
        if sessions > 0 {
            return Err(LoadRefused::Short(Shortfall { sessions, bytes: 0 }));
        }
        self.release(room);
        self.remove_tombstone(key);
        self.map
            .insert(Bytes::copy_from_slice(key), Slot::Loading(flight));
        self.loading += 1;
        Ok(())
    }

    /// Turns the loading key `key` resident with `entry` of `weight` bytes,
    /// if the bytes fit (`room` counting as free; spent on success).
    pub fn finish_load(
        &mut self,
        key: &Bytes,
        entry: Arc<T>,
        weight: usize,
        now: Instant,
        room: &mut Room,
    ) -> Result<(), Shortfall> {
        debug_assert!(matches!(self.map.get(key), Some(Slot::Loading(_))));
        let short = self.bytes_short(weight, *room);
        if short > 0 {
            return Err(Shortfall {
                sessions: 0,
                bytes: short,
            });
        }
        self.release(room);
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
    /// bytes must fit (`room` counting as free). Used by installs, followed
    /// by [`insert`](Self::insert) under the same lock.
    pub fn admit(
        &self,
        key: &[u8],
        weight: usize,
        version: u64,
        now: Instant,
        room: Room,
    ) -> Result<(), InsertRefused> {
        match self.map.get(key) {
            Some(Slot::Resident(_) | Slot::Loading(_)) => return Err(InsertRefused::Occupied),
            Some(Slot::Moved(tomb)) if tomb.expires > now && tomb.version > version => {
                return Err(InsertRefused::Stale { held: tomb.version });
            }
            Some(Slot::Moved(_)) | None => {}
        }
        let sessions = self.sessions_short(room);
        let bytes = self.bytes_short(weight, room);
        if sessions > 0 || bytes > 0 {
            return Err(InsertRefused::Short(Shortfall { sessions, bytes }));
        }
        Ok(())
    }

    /// Makes `key` resident with `entry` of `weight` bytes, replacing a
    /// tombstone, and spends `room`. Only after [`admit`](Self::admit) said
    /// yes (with the same room) under the same lock.
    pub fn insert(
        &mut self,
        key: &[u8],
        entry: Arc<T>,
        weight: usize,
        now: Instant,
        room: &mut Room,
    ) {
        debug_assert!(
            !matches!(
                self.map.get(key),
                Some(Slot::Resident(_) | Slot::Loading(_))
            ),
            "insert on an occupied key"
        );
        self.release(room);
        self.remove_tombstone(key);
        self.put_resident(Bytes::copy_from_slice(key), entry, weight, now);
    }

    /// [`insert`](Self::insert) of a key the caller already owns (a bulk
    /// restore copies its keys off the lock), with no room held. Only after
    /// [`admit`](Self::admit) said yes (with no room) under the same lock.
    pub fn insert_owned(&mut self, key: Bytes, entry: Arc<T>, weight: usize, now: Instant) {
        debug_assert!(
            !matches!(
                self.map.get(&key),
                Some(Slot::Resident(_) | Slot::Loading(_))
            ),
            "insert on an occupied key"
        );
        self.remove_tombstone(&key);
        self.put_resident(key, entry, weight, now);
    }

    /// Makes room in the map for `additional` more keys (no more than the
    /// session bound lets in), so that a bulk restore does not rehash it
    /// while it fills it.
    pub fn reserve(&mut self, additional: usize) {
        let room = self.bounds.sessions.saturating_sub(self.map.len());
        self.map.reserve(additional.min(room));
    }

    fn put_resident(&mut self, key: Bytes, entry: Arc<T>, weight: usize, now: Instant) {
        let seq = self.next_seq();
        self.lru.insert(seq, key.clone());
        self.by_hash.insert((hash_key(&key), key.clone()));
        self.map.insert(
            key,
            Slot::Resident(Resident {
                entry,
                weight,
                seq,
                last_access: now,
                backoff_until: None,
                claimed: false,
            }),
        );
        self.resident += 1;
        self.bytes += weight;
    }

    /// Sessions missing for one more, `room` counting as free.
    fn sessions_short(&self, room: Room) -> usize {
        (self.resident + self.loading + self.reserved.sessions + 1)
            .saturating_sub(room.sessions)
            .saturating_sub(self.bounds.sessions)
    }

    /// Bytes missing for `extra` more, `room` counting as free.
    fn bytes_short(&self, extra: usize, room: Room) -> usize {
        (self.bytes + self.reserved.bytes)
            .saturating_add(extra)
            .saturating_sub(room.bytes)
            .saturating_sub(self.bounds.total_bytes)
    }

    /// Gives the room a request held back to the pool.
    pub fn release(&mut self, room: &mut Room) {
        debug_assert!(
            room.sessions <= self.reserved.sessions && room.bytes <= self.reserved.bytes,
            "releasing room that was never reserved"
        );
        self.reserved.sessions -= room.sessions;
        self.reserved.bytes -= room.bytes;
        *room = Room::default();
    }

    /// Changes the weight of the resident `entry` of `key` to `weight`, if the
    /// growth fits (`room` counting as free; spent on success). Returns the
    /// previous weight. `None` if `entry` is not the resident entry of `key`
    /// (a caller bug; nothing changes).
    pub fn resize(
        &mut self,
        key: &[u8],
        entry: &Arc<T>,
        weight: usize,
        room: &mut Room,
    ) -> Option<Result<usize, Shortfall>> {
        let old = match self.map.get(key) {
            Some(Slot::Resident(resident)) if Arc::ptr_eq(&resident.entry, entry) => {
                resident.weight
            }
            _ => return None,
        };
        if weight > old {
            let short = self.bytes_short(weight - old, *room);
            if short > 0 {
                return Some(Err(Shortfall {
                    sessions: 0,
                    bytes: short,
                }));
            }
        }
        self.release(room);
        if let Some(Slot::Resident(resident)) = self.map.get_mut(key) {
            resident.weight = weight;
        }
        self.bytes = self.bytes - old + weight;
        Some(Ok(old))
    }

    /// Removes the resident `entry` of `key`, unless it was accessed after
    /// `idle_before` (when given). Returns the freed weight. The freed room
    /// goes to `into` (held back for the request evicting for it) when given,
    /// to the pool otherwise.
    pub fn remove(
        &mut self,
        key: &[u8],
        entry: &Arc<T>,
        idle_before: Option<Instant>,
        into: Option<&mut Room>,
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
        let (seq, weight, claimed) = (resident.seq, resident.weight, resident.claimed);
        if let Some((stored, _)) = self.map.remove_entry(key) {
            self.by_hash.remove(&(hash_key(key), stored));
        }
        self.lru.remove(&seq);
        self.resident -= 1;
        self.bytes -= weight;
        if claimed {
            self.evicting -= 1;
        }
        if let Some(room) = into {
            room.sessions += 1;
            room.bytes += weight;
            self.reserved.sessions += 1;
            self.reserved.bytes += weight;
        }
        Some(weight)
    }

    /// Claims victims to cover `short`, least recently used first: at most
    /// `limit` resident entries that no one else claimed, that are not backed
    /// off at `now` and that `skip` does not rule out (in use, already tried).
    /// Each claimed entry is skipped by every later claim until
    /// [`unclaim`](Self::unclaim)ed or removed, so concurrent requests never
    /// pick the same victim.
    ///
    /// `Err` (nothing claimed) carries how many entries others are evicting
    /// right now: room that may come free soon.
    pub fn claim(
        &mut self,
        short: Shortfall,
        limit: usize,
        now: Instant,
        skip: impl Fn(&Bytes, &T) -> bool,
    ) -> Result<Vec<(Bytes, Arc<T>)>, usize> {
        let mut chosen = Vec::new();
        let (mut sessions, mut bytes) = (0, 0);
        for key in self.lru.values() {
            if chosen.len() >= limit || (sessions >= short.sessions && bytes >= short.bytes) {
                break;
            }
            let Some(Slot::Resident(resident)) = self.map.get(key) else {
                continue;
            };
            if resident.claimed
                || resident.backoff_until.is_some_and(|until| until > now)
                || skip(key, &resident.entry)
            {
                continue;
            }
            sessions += 1;
            bytes += resident.weight;
            chosen.push((key.clone(), Arc::clone(&resident.entry)));
        }
        if chosen.is_empty() {
            return Err(self.evicting);
        }
        for (key, _) in &chosen {
            if let Some(Slot::Resident(resident)) = self.map.get_mut(key) {
                resident.claimed = true;
            }
        }
        self.evicting += chosen.len();
        Ok(chosen)
    }

    /// Ends the claim on the resident `entry` of `key` (its eviction did not
    /// happen); nothing if it is no longer resident.
    pub fn unclaim(&mut self, key: &[u8], entry: &Arc<T>) {
        if let Some(Slot::Resident(resident)) = self.map.get_mut(key)
            && Arc::ptr_eq(&resident.entry, entry)
            && resident.claimed
        {
            resident.claimed = false;
            self.evicting -= 1;
        }
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

    /// Whether a resident key lies in one of `spans`: O(log n) per span.
    pub fn holds_any_in(&self, spans: &[HashSpan]) -> bool {
        spans
            .iter()
            .any(|span| self.by_hash.range(span.bounds(None)).next().is_some())
    }

    /// Appends to `out` up to `limit` resident keys (with their ring hashes)
    /// of `spans`, in span order and hash order within a span, from where
    /// `cursor` stands, and moves `cursor` past them. Returns true when the
    /// walk has reached the end of the last span. O(log n) per span visited
    /// plus O(keys returned): a walk over every span costs O(spans · log n +
    /// keys in them), whatever the other keys.
    pub fn resident_in(
        &self,
        spans: &[HashSpan],
        cursor: &mut SpanCursor,
        limit: usize,
        out: &mut Vec<(u64, Bytes)>,
    ) -> bool {
        let mut taken = 0;
        while let Some(span) = spans.get(cursor.span) {
            // The last key taken from this span in this call: where the
            // next call resumes (cloned once per page, not per key).
            let mut last = None;
            for item in self.by_hash.range(span.bounds(cursor.after.as_ref())) {
                if taken >= limit {
                    if let Some(last) = last {
                        cursor.after = Some(Hashed::clone(last));
                    }
                    return false;
                }
                out.push(item.clone());
                last = Some(item);
                taken += 1;
            }
            cursor.span += 1;
            cursor.after = None;
        }
        true
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
        let (mut resident, mut loading, mut moved, mut claimed) = (0, 0, 0, 0);
        for (key, slot) in &self.map {
            match slot {
                Slot::Resident(r) => {
                    resident += 1;
                    bytes += r.weight;
                    claimed += usize::from(r.claimed);
                    if self.lru.get(&r.seq) != Some(key) {
                        return Err(format!("lru misses resident key {key:?}"));
                    }
                    if !self.by_hash.contains(&(hash_key(key), key.clone())) {
                        return Err(format!("the shard index misses resident key {key:?}"));
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
        if bytes + self.reserved.bytes > self.bounds.total_bytes {
            return Err(format!(
                "bytes {bytes} + reserved {} over the bound",
                self.reserved.bytes
            ));
        }
        if claimed != self.evicting {
            return Err(format!(
                "{claimed} claimed slots but evicting {}",
                self.evicting
            ));
        }
        if resident != self.resident || loading != self.loading {
            return Err(format!(
                "counts {}/{} but slots {resident}/{loading}",
                self.resident, self.loading
            ));
        }
        if resident + loading + self.reserved.sessions > self.bounds.sessions
            || loading > self.bounds.loads
        {
            return Err("session or load bound exceeded".into());
        }
        if self.lru.len() != resident || self.by_hash.len() != resident || self.tombs.len() != moved
        {
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
        index
            .begin_load(key.as_bytes(), 0, &mut Room::default())
            .unwrap();
        index
            .finish_load(
                &Bytes::from(key.to_owned()),
                entry.clone(),
                weight,
                now,
                &mut Room::default(),
            )
            .unwrap();
        entry
    }

    #[test]
    fn loads_count_as_sessions_and_are_bounded() {
        let now = Instant::now();
        let mut index = TestIndex::new(bounds());
        index.begin_load(b"a", 1, &mut Room::default()).unwrap();
        index.begin_load(b"b", 1, &mut Room::default()).unwrap();
        assert_eq!(
            index.begin_load(b"c", 1, &mut Room::default()),
            Err(LoadRefused::Saturated)
        );
        index
            .finish_load(
                &Bytes::from_static(b"a"),
                Arc::new(1),
                10,
                now,
                &mut Room::default(),
            )
            .unwrap();
        index.begin_load(b"c", 1, &mut Room::default()).unwrap();
        // a resident, b and c loading: the session bound (3) is reached.
        index.cancel_load(b"b");
        assert!(matches!(index.lookup(b"b", now), Lookup::Absent));
        index.begin_load(b"d", 1, &mut Room::default()).unwrap();
        assert_eq!(
            index.begin_load(b"e", 1, &mut Room::default()),
            Err(LoadRefused::Saturated),
            "two loads in flight"
        );
        index
            .finish_load(
                &Bytes::from_static(b"c"),
                Arc::new(1),
                10,
                now,
                &mut Room::default(),
            )
            .unwrap();
        assert_eq!(
            index.begin_load(b"e", 1, &mut Room::default()),
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
        index.begin_load(b"b", 0, &mut Room::default()).unwrap();
        assert_eq!(
            index.finish_load(
                &Bytes::from_static(b"b"),
                Arc::new(0),
                50,
                now,
                &mut Room::default()
            ),
            Err(Shortfall {
                sessions: 0,
                bytes: 10
            })
        );
        index.cancel_load(b"b");
        assert_eq!(
            index.resize(b"a", &a, 101, &mut Room::default()),
            Some(Err(Shortfall {
                sessions: 0,
                bytes: 1
            }))
        );
        assert_eq!(
            index.resize(b"a", &a, 100, &mut Room::default()),
            Some(Ok(60))
        );
        assert_eq!(index.bytes(), 100);
        assert_eq!(
            index.resize(b"a", &a, 5, &mut Room::default()),
            Some(Ok(100))
        );
        assert_eq!(
            index.resize(b"a", &Arc::new(0), 5, &mut Room::default()),
            None,
            "not this entry"
        );
        let b = load(&mut index, "b", 95, now);
        assert_eq!(index.bytes(), 100);
        assert_eq!(index.remove(b"b", &b, None, None), Some(95));
        assert_eq!(index.bytes(), 5);
        index.check().unwrap();
    }

    fn keys(claimed: &[(Bytes, Arc<u32>)]) -> Vec<Bytes> {
        claimed.iter().map(|(key, _)| key.clone()).collect()
    }

    fn unclaim_all(index: &mut TestIndex, claimed: &[(Bytes, Arc<u32>)]) {
        for (key, entry) in claimed {
            index.unclaim(key, entry);
        }
    }

    #[test]
    fn claims_follow_least_recent_access_and_skip_busy_and_backed_off() {
        let t0 = Instant::now();
        let mut index = TestIndex::new(bounds());
        let _a = load(&mut index, "a", 10, t0);
        let b = load(&mut index, "b", 20, t0);
        let _c = load(&mut index, "c", 30, t0);
        // Touch a: order is now b, c, a.
        assert!(matches!(index.lookup(b"a", t0), Lookup::Resident(_)));
        let need = Shortfall {
            sessions: 1,
            bytes: 40,
        };
        let claim = |index: &mut TestIndex, limit, now, skip: &dyn Fn(&u32) -> bool| {
            let claimed = index.claim(need, limit, now, |_, e| skip(e)).unwrap();
            unclaim_all(index, &claimed);
            keys(&claimed)
        };
        assert_eq!(claim(&mut index, 10, t0, &|_| false), ["b", "c"]);
        assert_eq!(claim(&mut index, 1, t0, &|_| false), ["b"]);
        let busy_b = |e: &u32| std::ptr::eq(e, Arc::as_ptr(&b));
        assert_eq!(claim(&mut index, 10, t0, &busy_b), ["c", "a"]);
        index.back_off(
            b"c",
            &index.peek(b"c").unwrap(),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(claim(&mut index, 10, t0, &|_| false), ["b", "a"]);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(claim(&mut index, 10, later, &|_| false), ["b", "c"]);
        assert_eq!(index.evicting(), 0);
        index.check().unwrap();
    }

    #[test]
    fn concurrent_claims_get_distinct_victims_until_none_is_left() {
        let now = Instant::now();
        let mut index = TestIndex::new(bounds());
        for key in ["a", "b", "c"] {
            load(&mut index, key, 10, now);
        }
        let one = Shortfall {
            sessions: 1,
            bytes: 0,
        };
        let first = index.claim(one, 8, now, |_, _| false).unwrap();
        let second = index.claim(one, 8, now, |_, _| false).unwrap();
        let third = index.claim(one, 8, now, |_, _| false).unwrap();
        assert_eq!(
            [keys(&first), keys(&second), keys(&third)],
            [["a"], ["b"], ["c"]]
        );
        assert_eq!(index.evicting(), 3);
        // Nothing left to claim: the answer says three evictions are running.
        assert_eq!(index.claim(one, 8, now, |_, _| false), Err(3));
        index.check().unwrap();
        // An eviction that did not happen frees its victim for the next claim;
        // one that happened ends its claim by removing the victim.
        unclaim_all(&mut index, &second);
        let (key, entry) = &first[0];
        assert_eq!(index.remove(key, entry, None, None), Some(10));
        assert_eq!(index.evicting(), 1);
        assert_eq!(
            keys(&index.claim(one, 8, now, |_, _| false).unwrap()),
            ["b"]
        );
        // A removal by someone else (a handoff) also ends the claim.
        let (key, entry) = &third[0];
        assert_eq!(index.remove(key, entry, None, None), Some(10));
        assert_eq!(index.evicting(), 1);
        index.check().unwrap();
    }

    #[test]
    fn evicted_room_is_held_for_the_request_that_evicted_it() {
        let now = Instant::now();
        let mut index = TestIndex::new(bounds());
        let a = load(&mut index, "a", 40, now);
        load(&mut index, "b", 30, now);
        load(&mut index, "c", 20, now);
        let (mut mine, mut none) = (Room::default(), Room::default());
        index
            .claim(
                Shortfall {
                    sessions: 1,
                    bytes: 0,
                },
                1,
                now,
                |_, _| false,
            )
            .unwrap();
        assert_eq!(index.remove(b"a", &a, None, Some(&mut mine)), Some(40));
        assert_eq!(
            mine,
            Room {
                sessions: 1,
                bytes: 40
            }
        );
        assert_eq!((index.resident(), index.bytes()), (2, 50));
        assert_eq!(index.reserved(), mine);
        index.check().unwrap();
        // Anybody else still finds the bounds reached...
        assert_eq!(
            index.begin_load(b"x", 0, &mut none),
            Err(LoadRefused::Short(Shortfall {
                sessions: 1,
                bytes: 0
            }))
        );
        assert_eq!(
            index.admit(b"x", 20, 1, now, none),
            Err(InsertRefused::Short(Shortfall {
                sessions: 1,
                bytes: 10
            }))
        );
        let b = index.peek(b"b").unwrap();
        assert_eq!(
            index.resize(b"b", &b, 60, &mut none),
            Some(Err(Shortfall {
                sessions: 0,
                bytes: 20
            }))
        );
        // ...while the holder fits, and spends its room doing so: the bytes
        // it did not use go back to the pool.
        assert_eq!(index.admit(b"x", 20, 1, now, mine), Ok(()));
        index.begin_load(b"x", 0, &mut mine).unwrap();
        assert!(mine.is_empty());
        assert_eq!(index.reserved(), Room::default());
        assert_eq!(index.resize(b"b", &b, 60, &mut none), Some(Ok(30)));
        index.check().unwrap();
        // Room given back unspent returns to the pool as well.
        index.cancel_load(b"x");
        let c = index.peek(b"c").unwrap();
        index.remove(b"c", &c, None, Some(&mut mine));
        index.release(&mut mine);
        assert!(mine.is_empty());
        assert_eq!(
            (index.resident(), index.bytes(), index.reserved()),
            (1, 60, Room::default())
        );
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
        assert_eq!(index.remove(b"a", &a, Some(t0), None), None);
        assert_eq!(index.remove(b"a", &a, Some(t1), None), Some(1));
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
            index.admit(b"a", 40, 4, now, Room::default()),
            Err(InsertRefused::Stale { held: 5 })
        );
        // An expired tombstone no longer protects anything.
        assert_eq!(index.admit(b"a", 40, 4, soon, Room::default()), Ok(()));
        assert_eq!(index.admit(b"a", 40, 5, now, Room::default()), Ok(()));
        index.insert(b"a", Arc::new(1), 40, now, &mut Room::default());
        assert_eq!(index.tombstones(), 0);
        assert_eq!(
            index.admit(b"a", 1, 9, now, Room::default()),
            Err(InsertRefused::Occupied)
        );
        assert_eq!(
            index.admit(b"b", 61, 1, now, Room::default()),
            Err(InsertRefused::Short(Shortfall {
                sessions: 0,
                bytes: 1
            }))
        );
        index.insert(b"b", Arc::new(1), 10, now, &mut Room::default());
        index.insert(b"c", Arc::new(1), 10, now, &mut Room::default());
        assert_eq!(
            index.admit(b"d", 10, 1, now, Room::default()),
            Err(InsertRefused::Short(Shortfall {
                sessions: 1,
                bytes: 0
            }))
        );
        assert_eq!(index.resident(), 3);
        assert_eq!(index.bytes(), 60);
        index.check().unwrap();
    }

    /// A small deterministic generator (xorshift64*), enough to mix
    /// operations.
    struct Mix(u64);

    impl Mix {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The keys of the shards `wanted` selects, through the shard index,
    /// read `page` keys at a time.
    fn indexed(index: &TestIndex, shards: ShardCount, wanted: &[bool], page: usize) -> Vec<Bytes> {
        walk(index, &HashSpan::runs(shards, wanted), page)
    }

    /// The keys of `spans`, read `page` keys at a time.
    fn walk(index: &TestIndex, spans: &[HashSpan], page: usize) -> Vec<Bytes> {
        let (mut cursor, mut out) = (SpanCursor::default(), Vec::new());
        while !index.resident_in(spans, &mut cursor, page, &mut out) {}
        assert_eq!(
            index.holds_any_in(spans),
            !out.is_empty(),
            "holds_any_in agrees with the walk"
        );
        out.into_iter()
            .map(|(hash, key)| {
                assert_eq!(hash, hash_key(&key));
                key
            })
            .collect()
    }

    /// The same keys found the slow way: every resident key, filtered by
    /// its shard, in (hash, key) order.
    fn brute_force(index: &TestIndex, shards: ShardCount, wanted: &[bool]) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = index
            .entries()
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| wanted[shards.shard_of(key) as usize])
            .collect();
        keys.sort_by_cached_key(|key| (hash_key(key), key.clone()));
        keys
    }

    /// Checks every shard alone at `shards`, and a few multi-shard masks.
    fn check_shards(index: &TestIndex, shards: ShardCount, mix: &mut Mix) {
        let mut by_shard = vec![Vec::new(); shards.len()];
        for (key, _) in index.entries() {
            by_shard[shards.shard_of(&key) as usize].push(key);
        }
        for (shard, expected) in by_shard.iter_mut().enumerate() {
            expected.sort_by_cached_key(|key| (hash_key(key), key.clone()));
            let shard = shard as u32;
            let one = HashSpan::of_shards(shards, shard, shard + 1);
            assert_eq!(
                &walk(index, &[one], 3),
                expected,
                "shard {shard} of {}",
                shards.get()
            );
        }
        for _ in 0..4 {
            let wanted: Vec<bool> = (0..shards.len()).map(|_| mix.below(3) == 0).collect();
            for page in [1, 5, 1024] {
                assert_eq!(
                    indexed(index, shards, &wanted, page),
                    brute_force(index, shards, &wanted),
                    "a mask of {} shards, page {page}",
                    shards.get()
                );
            }
        }
        let all = vec![true; shards.len()];
        assert_eq!(indexed(index, shards, &all, 64).len(), index.resident());
    }

    #[test]
    fn the_shard_index_lists_each_shards_resident_keys_at_any_shard_count() {
        let t0 = Instant::now();
        let mut index = TestIndex::new(Bounds {
            sessions: 400,
            total_bytes: 1 << 20,
            loads: 8,
            tombstones: 50,
        });
        let mut mix = Mix(0x9e37_79b9_7f4a_7c15);
        let counts: Vec<ShardCount> = [1, 2, 8, 64, 4096, 65_536]
            .into_iter()
            .map(|n| ShardCount::new(n).unwrap())
            .collect();
        for round in 0..6 {
            // Inserts, loads, evictions, hand-offs (removal then tombstone),
            // restores (owned inserts) and tombstones replaced by inserts.
            for _ in 0..150 {
                let key = format!("session-{}", mix.below(500));
                let now = t0 + Duration::from_millis(mix.next() % 1000);
                let resident = index.peek(key.as_bytes());
                match (mix.below(6), resident) {
                    (0 | 1, None) => {
                        if index.admit(key.as_bytes(), 1, 1, now, Room::default()) == Ok(()) {
                            index.insert(key.as_bytes(), Arc::new(1), 1, now, &mut Room::default());
                        }
                    }
                    (2, None) => {
                        if index.admit(key.as_bytes(), 1, 9, now, Room::default()) == Ok(()) {
                            index.insert_owned(Bytes::from(key), Arc::new(2), 1, now);
                        }
                    }
                    (3, None) => {
                        let mut room = Room::default();
                        if index.begin_load(key.as_bytes(), 0, &mut room).is_ok() {
                            let key = Bytes::from(key);
                            if mix.below(4) == 0 {
                                index.cancel_load(&key);
                            } else {
                                index
                                    .finish_load(&key, Arc::new(3), 1, now, &mut room)
                                    .unwrap();
                            }
                        }
                    }
                    (4, Some(entry)) => {
                        index.remove(key.as_bytes(), &entry, None, None).unwrap();
                        let expires = now + Duration::from_secs(1);
                        index.tombstone(key.as_bytes(), "pod-1".into(), 1, expires, now);
                    }
                    (_, Some(entry)) => {
                        index.remove(key.as_bytes(), &entry, None, None).unwrap();
                    }
                    (_, None) => {}
                }
            }
            if round == 3 {
                // A pressure eviction of the least recently used.
                let need = Shortfall {
                    sessions: 40,
                    bytes: 0,
                };
                for (key, entry) in index.claim(need, 40, t0, |_, _| false).unwrap() {
                    index.remove(&key, &entry, None, None).unwrap();
                }
            }
            index.check().unwrap();
            for &shards in &counts {
                check_shards(&index, shards, &mut mix);
            }
        }
        assert!(index.resident() > 50, "the test keeps sessions resident");
    }

    #[test]
    fn a_shard_run_ending_at_the_last_shard_reaches_the_top_hash() {
        let shards = ShardCount::new(4).unwrap();
        let last = HashSpan::of_shards(shards, 3, 4);
        assert_eq!(last.end, None);
        assert_eq!(last.start, 3 << 62);
        assert_eq!(
            HashSpan::runs(shards, &[true, true, false, true]),
            [
                HashSpan::of_shards(shards, 0, 2),
                HashSpan::of_shards(shards, 3, 4)
            ]
        );
        assert_eq!(HashSpan::runs(shards, &[false; 4]), []);
        // A mask shorter than S selects nothing past its end.
        assert_eq!(
            HashSpan::runs(shards, &[true]),
            [HashSpan::of_shards(shards, 0, 1)]
        );
    }
}
