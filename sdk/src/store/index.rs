//! The index: what the store knows about every key, and its accounting.
//!
//! A key is *resident* (its entry is in memory, with a weight), *loading* (one
//! load is in flight; callers wait on its flight handle) or *moved* (handed
//! off; a tombstone names the new owner until it expires). The index keeps the
//! exact sums the bounds are checked against — resident bytes, resident plus
//! loading sessions, loads in flight, tombstones — and what eviction and
//! passivation need: a reference bit and the last access of every resident
//! session.
//!
//! Layout (chosen for memory: at a million sessions every byte per session is
//! a megabyte): every key has one *node* in a slab (a `Vec`, freed nodes
//! reused through a free list), which holds the key (inline up to 22 bytes)
//! and what the key is. A table of chain heads finds it: a keyed hash of the
//! key (xxh3 with a random seed per index, so keys cannot be chosen to
//! collide) picks one of a power of two of buckets, whose nodes are chained
//! through the slab; the table doubles (relinking every chain) when there are
//! half as many keys as buckets, so a chain holds half a node on average
//! (a lookup reads few nodes besides its own). A bucket is
//! a 4-byte node number, where a map of hashes to nodes took 17 bytes a slot
//! and two cache misses a lookup (measured: most of a restore's install).
//! The key is stored once, in its node; the other structures name the node
//! by its place.
//!
//! Pressure eviction is coordinated here. A request that needs room *claims*
//! victims ([`Index::claim`]), by the clock: a hand goes round the slab, a
//! session touched since the hand last passed it gets a second chance, the
//! others are taken (an approximation of least recently used that costs a
//! read nothing but setting a bit). A claimed session is skipped by every
//! other claim, so concurrent requests evict distinct sessions. The room a
//! claimed eviction frees is not returned to the pool but *reserved* for the
//! request that evicted it (its [`Room`]); only that request's next bound
//! check counts it as free, so a concurrent request cannot take it. The
//! request spends its room when its session, load or growth fits, or
//! releases it when it gives up.
//!
//! It is plain synchronous data behind the store's mutex and never calls user
//! code, so every method leaves it consistent. Bound checks and the changes
//! they guard happen in the same call: a caller that gets `Ok` holds the room
//! it asked for.
//!
//! Why one file of about 900 lines: the index is one data structure whose
//! sums must stay exact across every method (the invariants below); each
//! method changes several of them at once, so they are read and checked
//! together. Its test-only checker, `check`, is 100 of those lines.
//!
//! Invariants (checked by [`Index::check`] in tests):
//! * every node in use is found by its key, and no other node by it; the
//!   free list holds exactly the free nodes;
//! * `bytes` is the sum of the weights of resident nodes, and `bytes` plus the
//!   reserved bytes never exceeds `max_total_bytes`;
//! * `resident + loading` plus the reserved sessions never exceeds
//!   `max_sessions`, `loading` never exceeds `max_loads`;
//! * `evicting` counts exactly the claimed resident nodes;
//! * `by_hash` holds exactly the resident nodes, each with the ring hash of
//!   its key ([`hash_key`]), ordered by that hash (the *shard index*);
//! * `tombs` holds exactly the moved nodes, ordered by expiry.
//!
//! The shard index answers "the resident keys of shard `i` at shard count
//! `S`" without a scan: a shard is the contiguous hash range
//! `i << (64 - log2 S) .. (i + 1) << (64 - log2 S)`, so its keys are one
//! range of `by_hash`, found in O(log n) and read in O(keys in the shard),
//! at any `S` (a doubling of `S` needs no re-index). Keys with equal hashes
//! are told apart by their nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64_with_seed;

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
    fn bounds(self, after: Option<Hashed>) -> (Bound<Hashed>, Bound<Hashed>) {
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included((self.start, 0)),
        };
        let end = match self.end {
            Some(end) => Bound::Excluded((end, 0)),
            None => Bound::Unbounded,
        };
        (start, end)
    }
}

/// The hashes of a key an insert needs: its bucket in the index's map and
/// its ring hash (its place in the shard index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyHashes {
    bucket: u64,
    /// The key's ring hash ([`hash_key`]).
    pub ring: u64,
}

/// Hashes keys the way one index does, off its lock ([`Index::hasher`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHasher {
    seed: u64,
}

impl KeyHasher {
    fn bucket(self, key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, self.seed)
    }

    /// Both hashes of `key`.
    pub fn hashes(self, key: &[u8]) -> KeyHashes {
        KeyHashes {
            bucket: self.bucket(key),
            ring: hash_key(key),
        }
    }
}

/// A key of the shard index: its ring hash, then the slab place of its node
/// (which tells apart keys of equal hashes).
type Hashed = (u64, u32);

/// Where a paged walk over [`HashSpan`]s stands: the span it is in and the
/// last key it returned there.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanCursor {
    span: usize,
    after: Option<Hashed>,
}

/// Where a paged walk over the resident sessions ([`Index::idle`]) stands.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SlabCursor(usize);

/// What a key is, as seen by a request.
pub(crate) enum Lookup<T, F> {
    Resident(Arc<T>),
    Loading(F),
    Moved { owner: Arc<str>, version: u64 },
    Absent,
}

/// The end of a chain of nodes (no next node).
const NIL: u32 = u32::MAX;

/// Keys up to this long are kept inside their node, longer ones in a
/// buffer of their own.
const INLINE_KEY: usize = 22;

/// How many nodes one claim passes over honouring the reference bits
/// (second chances) before it takes the next candidate whatever its bit:
/// bounds the work of one claim under the index lock when most sessions
/// were touched since the hand last passed.
const CLOCK_BUDGET: usize = 4096;

/// How many candidates the hand gathers before it claims the least recently
/// accessed of them (so that among sessions the clock cannot tell apart,
/// the older access goes first).
const CLOCK_SAMPLE: usize = 8;

/// A key, inline if short (no allocation of its own).
#[derive(Debug)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    pub fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            Self::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(key.into())
        }
    }

    fn empty() -> Self {
        Self::Inline {
            len: 0,
            bytes: [0; INLINE_KEY],
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_slice())
    }
}

struct Resident<T> {
    entry: Arc<T>,
    weight: usize,
    last_access: Instant,
    /// Skipped by claims until then (boxed: rare, and the node stays small).
    backoff_until: Option<Box<Instant>>,
}

struct Tombstone {
    owner: Arc<str>,
    version: u64,
    expires: Instant,
    seq: u64,
}

enum Kind<T, F> {
    /// On the free list.
    Free,
    Resident(Resident<T>),
    Loading(F),
    Moved(Box<Tombstone>),
}

/// One key's place in the slab.
struct Node<T, F> {
    key: Key,
    /// The next node of the same bucket (or of the free list), [`NIL`] at
    /// the end.
    next: u32,
    /// A request is evicting it (see [`Index::claim`]); resident only.
    claimed: bool,
    /// Accessed since the clock hand last passed it; resident only.
    referenced: bool,
    kind: Kind<T, F>,
}

/// Buckets of a new index (it doubles from there).
const FIRST_BUCKETS: usize = 16;

/// The index over entries `T` with flight handles `F`.
pub(crate) struct Index<T, F> {
    bounds: Bounds,
    /// The key of the bucket hash (random per index, so that nobody can
    /// choose keys that share a bucket).
    seed: u64,
    /// The most buckets: unbounded, but tests keep a few to make keys
    /// share them.
    max_buckets: usize,
    /// Bucket (the bucket hash's low bits) → the first node of its chain,
    /// [`NIL`] if empty; a power of two long.
    heads: Vec<u32>,
    /// Nodes in chains (resident, loading or moved).
    chained: usize,
    /// Every key's node: resident, loading, moved, or free.
    nodes: Vec<Node<T, F>>,
    /// The first free node, [`NIL`] if none.
    free: u32,
    /// The clock hand: the node the next claim looks at first.
    hand: usize,
    /// The shard index: resident keys by ring hash.
    by_hash: BTreeSet<Hashed>,
    /// Moved keys by expiry.
    tombs: BTreeMap<(Instant, u64), u32>,
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
            seed: RandomState::new().hash_one(0_u64),
            max_buckets: usize::MAX,
            heads: vec![NIL; FIRST_BUCKETS],
            chained: 0,
            nodes: Vec::new(),
            free: NIL,
            hand: 0,
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

    /// The same index with 8 buckets at most, so that its keys share
    /// buckets (and their chains are exercised).
    #[cfg(test)]
    pub fn with_few_buckets(mut self) -> Self {
        self.max_buckets = 8;
        self.heads = vec![NIL; 8];
        self
    }

    fn bucket_of(&self, key: &[u8]) -> u64 {
        self.hasher().bucket(key)
    }

    /// The hashes a key's insert needs, computable off the lock (a bulk
    /// restore hashes its keys on the threads that check its chunks).
    pub fn hasher(&self) -> KeyHasher {
        KeyHasher { seed: self.seed }
    }

    /// The bucket of bucket hash `hash`.
    fn bucket(&self, hash: u64) -> usize {
        // The table's length is a power of two within `usize`.
        (hash as usize) & (self.heads.len() - 1)
    }

    /// Makes the table at least `wanted` buckets long (a power of two, up
    /// to `max_buckets`), relinking every chain: O(nodes), paid at each
    /// doubling, so O(1) a key over the table's growth.
    fn grow_to(&mut self, wanted: usize) {
        let len = wanted
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1)
            .min(self.max_buckets);
        if len <= self.heads.len() {
            return;
        }
        self.heads = vec![NIL; len];
        let hasher = self.hasher();
        for at in 0..self.nodes.len() {
            if matches!(self.nodes[at].kind, Kind::Free) {
                continue;
            }
            let bucket = self.bucket(hasher.bucket(self.nodes[at].key.as_slice()));
            self.nodes[at].next = std::mem::replace(&mut self.heads[bucket], at as u32);
        }
    }

    /// The node of `key`, if it has one.
    fn find(&self, key: &[u8]) -> Option<usize> {
        self.find_in(self.bucket_of(key), key)
    }

    /// The node of `key`, whose bucket hash is `bucket`, if it has one.
    fn find_in(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let mut at = self.heads[self.bucket(hash)];
        while at != NIL {
            let node = &self.nodes[at as usize];
            if node.key.as_slice() == key {
                return Some(at as usize);
            }
            at = node.next;
        }
        None
    }

    /// A new node for `key` (which has none), in its bucket's chain.
    fn add(&mut self, key: &[u8], kind: Kind<T, F>) -> usize {
        self.add_in(self.bucket_of(key), key, kind)
    }

    /// [`add`](Self::add) of a key whose bucket hash is `hash`.
    fn add_in(&mut self, hash: u64, key: &[u8], kind: Kind<T, F>) -> usize {
        self.add_key_in(hash, Key::new(key), kind)
    }

    /// [`add_in`](Self::add_in) of a key made already.
    fn add_key_in(&mut self, hash: u64, key: Key, kind: Kind<T, F>) -> usize {
        if self.chained >= self.heads.len() / 2 {
            self.grow_to(self.heads.len() * 2);
        }
        let reused = self.free != NIL;
        let at = if reused {
            self.free as usize
        } else {
            assert!(
                self.nodes.len() < NIL as usize,
                "the index holds at most u32::MAX - 1 keys"
            );
            self.nodes.len()
        };
        let bucket = self.bucket(hash);
        let head = &mut self.heads[bucket];
        let node = Node {
            key,
            next: std::mem::replace(head, at as u32),
            claimed: false,
            referenced: false,
            kind,
        };
        if reused {
            self.free = self.nodes[at].next;
            self.nodes[at] = node;
        } else {
            self.nodes.push(node);
        }
        self.chained += 1;
        at
    }

    /// Takes the node at `at` out of its bucket's chain and puts it on the
    /// free list; returns what it held.
    fn free_node(&mut self, at: usize) -> Kind<T, F> {
        let bucket = self.bucket(self.bucket_of(self.nodes[at].key.as_slice()));
        let next = self.nodes[at].next;
        let head = self.heads[bucket];
        if head as usize == at {
            self.heads[bucket] = next;
        } else {
            let mut before = head;
            while before != NIL && self.nodes[before as usize].next as usize != at {
                before = self.nodes[before as usize].next;
            }
            debug_assert!(before != NIL, "a node in use outside its bucket");
            if before != NIL {
                self.nodes[before as usize].next = next;
            }
        }
        self.chained -= 1;
        let node = std::mem::replace(
            &mut self.nodes[at],
            Node {
                key: Key::empty(),
                next: self.free,
                claimed: false,
                referenced: false,
                kind: Kind::Free,
            },
        );
        self.free = at as u32;
        node.kind
    }

    fn resident_at(&self, at: usize) -> Option<&Resident<T>> {
        match &self.nodes[at].kind {
            Kind::Resident(resident) => Some(resident),
            _ => None,
        }
    }

    /// The node of `key` if it holds exactly `entry`, resident.
    fn find_entry(&self, key: &[u8], entry: &Arc<T>) -> Option<usize> {
        let at = self.find(key)?;
        let resident = self.resident_at(at)?;
        Arc::ptr_eq(&resident.entry, entry).then_some(at)
    }

    /// Looks `key` up; a resident key counts as accessed at `now`, an expired
    /// tombstone is dropped.
    pub fn lookup(&mut self, key: &[u8], now: Instant) -> Lookup<T, F> {
        let Some(at) = self.find(key) else {
            return Lookup::Absent;
        };
        let node = &mut self.nodes[at];
        let expired = match &mut node.kind {
            Kind::Free => return Lookup::Absent,
            Kind::Loading(flight) => return Lookup::Loading(flight.clone()),
            Kind::Resident(resident) => {
                node.referenced = true;
                resident.last_access = now;
                return Lookup::Resident(Arc::clone(&resident.entry));
            }
            Kind::Moved(tomb) => {
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
        self.free_node(at);
        Lookup::Absent
    }

    /// The resident entry of `key` without counting an access.
    pub fn peek(&self, key: &[u8]) -> Option<Arc<T>> {
        let resident = self.resident_at(self.find(key)?)?;
        Some(Arc::clone(&resident.entry))
    }

    fn occupied(&self, key: &[u8]) -> bool {
        self.find(key)
            .is_some_and(|at| matches!(self.nodes[at].kind, Kind::Resident(_) | Kind::Loading(_)))
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
        debug_assert!(!self.occupied(key), "begin_load on an occupied key");
        if self.loading >= self.bounds.loads {
            return Err(LoadRefused::Saturated);
        }
        let sessions = self.sessions_short(*room);
        if sessions > 0 {
            return Err(LoadRefused::Short(Shortfall { sessions, bytes: 0 }));
        }
        self.release(room);
        self.remove_tombstone(key);
        self.add(key, Kind::Loading(flight));
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
        debug_assert!(
            self.find(key)
                .is_some_and(|at| matches!(self.nodes[at].kind, Kind::Loading(_))),
            "finish_load of a key not loading"
        );
        let short = self.bytes_short(weight, *room);
        if short > 0 {
            return Err(Shortfall {
                sessions: 0,
                bytes: short,
            });
        }
        self.release(room);
        self.loading -= 1;
        self.put_resident(key, entry, weight, now);
        Ok(())
    }

    /// Forgets the load of `key` (failed, refused or interrupted).
    pub fn cancel_load(&mut self, key: &[u8]) {
        if let Some(at) = self.find(key)
            && matches!(self.nodes[at].kind, Kind::Loading(_))
        {
            self.free_node(at);
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
        if let Some(at) = self.find(key) {
            match &self.nodes[at].kind {
                Kind::Resident(_) | Kind::Loading(_) => return Err(InsertRefused::Occupied),
                Kind::Moved(tomb) if tomb.expires > now && tomb.version > version => {
                    return Err(InsertRefused::Stale { held: tomb.version });
                }
                Kind::Moved(_) | Kind::Free => {}
            }
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
        debug_assert!(!self.occupied(key), "insert on an occupied key");
        self.release(room);
        self.remove_tombstone(key);
        self.put_resident(key, entry, weight, now);
    }

    /// [`insert`](Self::insert) of a key the caller already owns (a bulk
    /// restore copies its keys off the lock), with no room held. Only after
    /// [`admit`](Self::admit) said yes (with no room) under the same lock.
    pub fn insert_owned(&mut self, key: &[u8], entry: Arc<T>, weight: usize, now: Instant) {
        debug_assert!(!self.occupied(key), "insert on an occupied key");
        self.remove_tombstone(key);
        self.put_resident(key, entry, weight, now);
    }

    /// [`admit`](Self::admit) and [`insert_owned`](Self::insert_owned) in one
    /// step, for a bulk restore that made `key` and its `hashes` off the
    /// lock (with this index's [`hasher`](Self::hasher)): the key is looked
    /// up once, and an absent key gets its node without a second look or a
    /// copy. On a refusal nothing changed and `key` and `entry` are given
    /// back.
    pub fn insert_hashed(
        &mut self,
        key: Key,
        hashes: KeyHashes,
        entry: Arc<T>,
        weight: usize,
        version: u64,
        now: Instant,
    ) -> Result<(), (InsertRefused, Key, Arc<T>)> {
        let bytes = key.as_slice();
        debug_assert_eq!(
            hashes,
            self.hasher().hashes(bytes),
            "hashed by another index"
        );
        if self.find_in(hashes.bucket, bytes).is_some() {
            // Held, loading or moved: the general path decides.
            if let Err(refused) = self.admit(bytes, weight, version, now, Room::default()) {
                return Err((refused, key, entry));
            }
            self.insert_owned(bytes, entry, weight, now);
            return Ok(());
        }
        let sessions = self.sessions_short(Room::default());
        let short = self.bytes_short(weight, Room::default());
        if sessions > 0 || short > 0 {
            let short = Shortfall {
                sessions,
                bytes: short,
            };
            return Err((InsertRefused::Short(short), key, entry));
        }
        let resident = Kind::Resident(Resident {
            entry,
            weight,
            last_access: now,
            backoff_until: None,
        });
        let at = self.add_key_in(hashes.bucket, key, resident);
        self.nodes[at].referenced = true;
        self.by_hash.insert((hashes.ring, at as u32));
        self.resident += 1;
        self.bytes += weight;
        Ok(())
    }

    /// Reads the buckets of keys about to be inserted, and the first node of
    /// each, one key after the other without waiting for any: their cache
    /// misses overlap, where the inserts, one after the other, would each
    /// wait for their own (measured: most of a restore's install was that
    /// wait). Changes nothing.
    pub fn touch(&self, hashes: impl Iterator<Item = KeyHashes>) {
        let mut seen = 0;
        for hash in hashes {
            let head = self.heads[self.bucket(hash.bucket)];
            if let Some(node) = self.nodes.get(head as usize) {
                seen ^= node.next;
            }
        }
        std::hint::black_box(seen);
    }

    /// Makes room for `additional` more keys (no more than the session bound
    /// lets in), so that a bulk restore does not grow the tables while it
    /// fills them.
    pub fn reserve(&mut self, additional: usize) {
        let held = self.resident + self.loading;
        let room = self.bounds.sessions.saturating_sub(held);
        let additional = additional.min(room);
        self.grow_to(2 * (self.chained + additional));
        self.nodes.reserve(additional);
    }

    /// Makes `key` resident: its loading node turns resident, or (absent)
    /// it gets a node. New sessions start with a second chance.
    fn put_resident(&mut self, key: &[u8], entry: Arc<T>, weight: usize, now: Instant) {
        let resident = Kind::Resident(Resident {
            entry,
            weight,
            last_access: now,
            backoff_until: None,
        });
        let at = match self.find(key) {
            Some(at) => {
                debug_assert!(matches!(self.nodes[at].kind, Kind::Loading(_)));
                self.nodes[at].kind = resident;
                at
            }
            None => self.add(key, resident),
        };
        let node = &mut self.nodes[at];
        node.claimed = false;
        node.referenced = true;
        self.by_hash.insert((hash_key(key), at as u32));
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
        let at = self.find_entry(key, entry)?;
        let old = self.resident_at(at)?.weight;
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
        if let Kind::Resident(resident) = &mut self.nodes[at].kind {
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
        let at = self.find_entry(key, entry)?;
        let resident = self.resident_at(at)?;
        if idle_before.is_some_and(|cutoff| resident.last_access > cutoff) {
            return None;
        }
        let (weight, claimed) = (resident.weight, self.nodes[at].claimed);
        self.by_hash.remove(&(hash_key(key), at as u32));
        self.free_node(at);
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

    /// Claims victims to cover `short`, by the clock: the hand passes over
    /// the nodes in slab order, gives a session touched since it last passed
    /// a second chance (clears its reference bit) and claims the first ones
    /// it finds untouched — at most `limit` resident entries that no one
    /// else claimed, that are not backed off at `now` and that `skip` does
    /// not rule out (in use, already tried). Past [`CLOCK_BUDGET`] nodes in
    /// one claim, reference bits are no longer honoured, so one claim passes
    /// over at most that many sessions for their bits (and at most twice
    /// every node in all). Each claimed entry is skipped by every later
    /// claim until [`unclaim`](Self::unclaim)ed or removed, so concurrent
    /// requests never pick the same victim.
    ///
    /// `Err` (nothing claimed) carries how many entries others are evicting
    /// right now: room that may come free soon.
    pub fn claim(
        &mut self,
        short: Shortfall,
        limit: usize,
        now: Instant,
        skip: impl Fn(&[u8], &T) -> bool,
    ) -> Result<Vec<(Bytes, Arc<T>)>, usize> {
        let mut chosen = Vec::new();
        // Candidates the hand found, the least recently accessed of which
        // is claimed when there are `CLOCK_SAMPLE` of them.
        let mut window: Vec<usize> = Vec::with_capacity(CLOCK_SAMPLE);
        let (mut sessions, mut bytes) = (0, 0);
        let count = self.nodes.len();
        let mut steps = 0;
        while steps < 2 * count {
            if chosen.len() >= limit || (sessions >= short.sessions && bytes >= short.bytes) {
                break;
            }
            let second_chances = steps < CLOCK_BUDGET.min(count);
            steps += 1;
            let at = self.hand % count;
            self.hand = (at + 1) % count;
            let node = &mut self.nodes[at];
            let Kind::Resident(resident) = &node.kind else {
                continue;
            };
            if node.claimed
                || resident
                    .backoff_until
                    .as_deref()
                    .is_some_and(|until| *until > now)
                || skip(node.key.as_slice(), &resident.entry)
            {
                continue;
            }
            if node.referenced && second_chances {
                node.referenced = false;
                continue;
            }
            if !window.contains(&at) {
                window.push(at);
            }
            if window.len() >= CLOCK_SAMPLE
                && let Some(weight) = self.claim_oldest(&mut window, &mut chosen)
            {
                sessions += 1;
                bytes += weight;
            }
        }
        while !window.is_empty()
            && chosen.len() < limit
            && (sessions < short.sessions || bytes < short.bytes)
        {
            if let Some(weight) = self.claim_oldest(&mut window, &mut chosen) {
                sessions += 1;
                bytes += weight;
            }
        }
        // Candidates gathered but not claimed are looked at first next time
        // (the hand goes back to the earliest), not skipped for a round.
        if let Some(&first) = window.first() {
            self.hand = first;
        }
        if chosen.is_empty() {
            return Err(self.evicting);
        }
        self.evicting += chosen.len();
        Ok(chosen)
    }

    /// Claims the least recently accessed node of `window` (the first of
    /// equals) and takes it out; returns its weight. Nodes of the window no
    /// longer resident leave it too, so `None` comes with an empty window (the
    /// callers loop while it is not).
    fn claim_oldest(
        &mut self,
        window: &mut Vec<usize>,
        chosen: &mut Vec<(Bytes, Arc<T>)>,
    ) -> Option<usize> {
        window.retain(|&at| self.resident_at(at).is_some());
        let (place, _) = window
            .iter()
            .enumerate()
            .filter_map(|(place, &at)| Some((place, self.resident_at(at)?.last_access)))
            .min_by_key(|&(_, last_access)| last_access)?;
        let at = window.remove(place);
        let node = &mut self.nodes[at];
        let Kind::Resident(resident) = &node.kind else {
            return None;
        };
        node.referenced = false;
        node.claimed = true;
        chosen.push((node.key.to_bytes(), Arc::clone(&resident.entry)));
        Some(resident.weight)
    }

    /// Ends the claim on the resident `entry` of `key` (its eviction did not
    /// happen); nothing if it is no longer resident.
    pub fn unclaim(&mut self, key: &[u8], entry: &Arc<T>) {
        if let Some(at) = self.find_entry(key, entry)
            && self.nodes[at].claimed
        {
            self.nodes[at].claimed = false;
            self.evicting -= 1;
        }
    }

    /// Marks the resident `entry` of `key` as not worth another write-back
    /// attempt under pressure until `until`.
    pub fn back_off(&mut self, key: &[u8], entry: &Arc<T>, until: Instant) {
        if let Some(at) = self.find_entry(key, entry)
            && let Kind::Resident(resident) = &mut self.nodes[at].kind
        {
            resident.backoff_until = Some(Box::new(until));
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
        debug_assert!(!self.occupied(key), "tombstone on an occupied key");
        self.remove_tombstone(key);
        let mut dropped = 0;
        if self.tombs.len() >= self.bounds.tombstones {
            self.purge_tombstones(now);
        }
        while self.tombs.len() >= self.bounds.tombstones {
            let Some((_, oldest)) = self.tombs.pop_first() else {
                break;
            };
            self.free_node(oldest as usize);
            dropped += 1;
        }
        let seq = self.next_seq();
        let at = self.add(
            key,
            Kind::Moved(Box::new(Tombstone {
                owner,
                version,
                expires,
                seq,
            })),
        );
        self.tombs.insert((expires, seq), at as u32);
        dropped
    }

    fn remove_tombstone(&mut self, key: &[u8]) {
        if let Some(at) = self.find(key)
            && let Kind::Moved(tomb) = &self.nodes[at].kind
        {
            let expiry = (tomb.expires, tomb.seq);
            self.tombs.remove(&expiry);
            self.free_node(at);
        }
    }

    /// Drops expired tombstones; returns how many.
    pub fn purge_tombstones(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        while let Some(entry) = self.tombs.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let at = entry.remove();
            self.free_node(at as usize);
            purged += 1;
        }
        purged
    }

    /// Appends to `out` the resident entries last accessed at or before
    /// `cutoff` among the next `scan` nodes from `cursor` (in slab order),
    /// and moves `cursor` past them. Returns true when the walk has passed
    /// the last node. A walk in pages keeps each hold of the lock short.
    pub fn idle(
        &self,
        cutoff: Instant,
        cursor: &mut SlabCursor,
        scan: usize,
        out: &mut Vec<(Bytes, Arc<T>)>,
    ) -> bool {
        let end = cursor.0.saturating_add(scan).min(self.nodes.len());
        for node in self.nodes.get(cursor.0..end).unwrap_or_default() {
            if let Kind::Resident(resident) = &node.kind
                && resident.last_access <= cutoff
            {
                out.push((node.key.to_bytes(), Arc::clone(&resident.entry)));
            }
        }
        cursor.0 = end;
        end >= self.nodes.len()
    }

    /// Appends to `out` the resident entries `keep` accepts among the next
    /// `scan` nodes from `cursor` (in slab order), and moves `cursor` past
    /// them. Returns true when the walk has passed the last node.
    pub fn resident_where(
        &self,
        cursor: &mut SlabCursor,
        scan: usize,
        keep: impl Fn(&T) -> bool,
        out: &mut Vec<(Bytes, Arc<T>)>,
    ) -> bool {
        let end = cursor.0.saturating_add(scan).min(self.nodes.len());
        for node in self.nodes.get(cursor.0..end).unwrap_or_default() {
            if let Kind::Resident(resident) = &node.kind
                && keep(&resident.entry)
            {
                out.push((node.key.to_bytes(), Arc::clone(&resident.entry)));
            }
        }
        cursor.0 = end;
        end >= self.nodes.len()
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
    ///
    /// Keys of equal ring hash are ordered by their node, so a key removed
    /// and added again between two pages may come twice (see
    /// `ShardWalk::page`, which drops the repeat).
    pub fn resident_in(
        &self,
        spans: &[HashSpan],
        cursor: &mut SpanCursor,
        limit: usize,
        out: &mut Vec<(u64, Bytes)>,
    ) -> bool {
        let mut taken = 0;
        while let Some(span) = spans.get(cursor.span) {
            for &(hash, at) in self.by_hash.range(span.bounds(cursor.after)) {
                if taken >= limit {
                    return false;
                }
                out.push((hash, self.nodes[at as usize].key.to_bytes()));
                cursor.after = Some((hash, at));
                taken += 1;
            }
            cursor.span += 1;
            cursor.after = None;
        }
        true
    }

    /// Every resident entry, in slab order.
    pub fn entries(&self) -> Vec<(Bytes, Arc<T>)> {
        let mut entries = Vec::with_capacity(self.resident);
        for node in &self.nodes {
            if let Kind::Resident(resident) = &node.kind {
                entries.push((node.key.to_bytes(), Arc::clone(&resident.entry)));
            }
        }
        entries
    }

    /// Checks every invariant; `Err` names the first broken one.
    #[cfg(test)]
    pub fn check(&self) -> Result<(), String> {
        let mut bytes = 0;
        let (mut resident, mut loading, mut moved, mut claimed, mut free) = (0, 0, 0, 0, 0);
        for (at, node) in self.nodes.iter().enumerate() {
            let key = node.key.as_slice();
            if !matches!(node.kind, Kind::Free) && self.find(key) != Some(at) {
                return Err(format!("key {key:?} is not found at its node"));
            }
            if !matches!(node.kind, Kind::Resident(_)) && (node.claimed || node.referenced) {
                return Err(format!("node {at} is marked but not resident"));
            }
            match &node.kind {
                Kind::Free => free += 1,
                Kind::Resident(r) => {
                    resident += 1;
                    bytes += r.weight;
                    claimed += usize::from(node.claimed);
                    if !self.by_hash.contains(&(hash_key(key), at as u32)) {
                        return Err(format!("the shard index misses resident key {key:?}"));
                    }
                }
                Kind::Loading(_) => loading += 1,
                Kind::Moved(t) => {
                    moved += 1;
                    if self.tombs.get(&(t.expires, t.seq)) != Some(&(at as u32)) {
                        return Err(format!("tombs misses moved key {key:?}"));
                    }
                }
            }
        }
        let mut listed = 0;
        let mut at = self.free;
        while at != NIL {
            if !matches!(self.nodes[at as usize].kind, Kind::Free) {
                return Err(format!("node {at} on the free list is in use"));
            }
            listed += 1;
            at = self.nodes[at as usize].next;
        }
        if listed != free {
            return Err(format!("{free} free nodes, {listed} on the free list"));
        }
        let chained: usize = self
            .heads
            .iter()
            .map(|&head| {
                let (mut n, mut at) = (0, head);
                while at != NIL {
                    n += 1;
                    at = self.nodes[at as usize].next;
                }
                n
            })
            .sum();
        if chained != self.nodes.len() - free || chained != self.chained {
            return Err(format!(
                "{chained} nodes in buckets, {} in use, {} counted",
                self.nodes.len() - free,
                self.chained
            ));
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
        if self.by_hash.len() != resident || self.tombs.len() != moved {
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
    fn the_table_of_chain_heads_grows_and_every_key_stays_found() {
        let now = Instant::now();
        let mut index = TestIndex::new(Bounds {
            sessions: 100_000,
            total_bytes: 100_000,
            loads: 100_000,
            tombstones: 10,
        });
        let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
        let entries: Vec<Arc<u32>> = keys
            .iter()
            .map(|key| load(&mut index, key, 1, now))
            .collect();
        index.check().unwrap();
        assert!(
            index.heads.len() >= 2 * keys.len(),
            "{} buckets for {} keys: more than half full",
            index.heads.len(),
            keys.len()
        );
        for (key, entry) in keys.iter().zip(&entries).step_by(2) {
            index.remove(key.as_bytes(), entry, None, None).unwrap();
        }
        index.check().unwrap();
        // Back through the bulk path, hashed as a restore hashes them.
        let hasher = index.hasher();
        for key in keys.iter().step_by(2) {
            let key = key.as_bytes();
            let inserted =
                index.insert_hashed(Key::new(key), hasher.hashes(key), Arc::new(1), 1, 1, now);
            assert!(inserted.is_ok(), "{key:?} refused");
        }
        index.check().unwrap();
        assert_eq!(index.resident(), keys.len());
        // A key held already is given back to the per-record path.
        let held = keys[1].as_bytes();
        let again =
            index.insert_hashed(Key::new(held), hasher.hashes(held), Arc::new(2), 1, 1, now);
        assert!(matches!(again, Err((InsertRefused::Occupied, _, _))));
        index.check().unwrap();
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
    fn claims_follow_the_clock_and_skip_busy_and_backed_off() {
        let t0 = Instant::now();
        let mut index = TestIndex::new(bounds());
        let _a = load(&mut index, "a", 10, t0);
        let b = load(&mut index, "b", 20, t0);
        let _c = load(&mut index, "c", 30, t0);
        let need = Shortfall {
            sessions: 1,
            bytes: 40,
        };
        let claim = |index: &mut TestIndex, limit, now, skip: &dyn Fn(&u32) -> bool| {
            let claimed = index.claim(need, limit, now, |_, e| skip(e)).unwrap();
            unclaim_all(index, &claimed);
            // Which sessions, not their order (ties go by the hand).
            let mut claimed = keys(&claimed);
            claimed.sort();
            claimed
        };
        // New sessions start with a second chance: the hand clears every
        // reference bit, comes round again and takes them in slab order.
        assert_eq!(claim(&mut index, 10, t0, &|_| false), ["a", "b", "c"]);
        // The hand is back at a. A session touched since the hand passed it
        // is passed over once (its bit cleared).
        assert!(matches!(index.lookup(b"a", t0), Lookup::Resident(_)));
        assert_eq!(claim(&mut index, 10, t0, &|_| false), ["b", "c"]);
        // Untouched since: a goes first now.
        assert_eq!(claim(&mut index, 1, t0, &|_| false), ["a"]);
        let busy_b = |e: &u32| std::ptr::eq(e, Arc::as_ptr(&b));
        assert_eq!(claim(&mut index, 10, t0, &busy_b), ["a", "c"]);
        index.back_off(
            b"c",
            &index.peek(b"c").unwrap(),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(claim(&mut index, 10, t0, &|_| false), ["a", "b"]);
        let later = t0 + Duration::from_secs(6);
        // Backed off no longer: c is a candidate again.
        assert!(claim(&mut index, 10, later, &|_| false).contains(&Bytes::from_static(b"c")));
        // Among candidates the clock cannot tell apart, the older access
        // goes first.
        assert!(matches!(index.lookup(b"a", later), Lookup::Resident(_)));
        assert!(matches!(index.lookup(b"b", t0), Lookup::Resident(_)));
        let mut oldest = claim(&mut index, 10, later, &|_| false);
        oldest.sort();
        assert_eq!(oldest, ["b", "c"]);
        assert_eq!(index.evicting(), 0);
        index.check().unwrap();
    }

    #[test]
    fn a_claim_passes_over_a_bounded_number_of_touched_sessions() {
        let t0 = Instant::now();
        let sessions = CLOCK_BUDGET + 10;
        let mut index = TestIndex::new(Bounds {
            sessions,
            total_bytes: sessions,
            loads: 1,
            tombstones: 1,
        });
        for i in 0..sessions {
            let key = format!("s{i}");
            index.insert(key.as_bytes(), Arc::new(0), 1, t0, &mut Room::default());
        }
        let one = Shortfall {
            sessions: 1,
            bytes: 0,
        };
        // Every session is touched: the first claim gives second chances
        // to CLOCK_BUDGET of them, then takes the next one all the same.
        let first = index.claim(one, 1, t0, |_, _| false).unwrap();
        assert_eq!(keys(&first), [format!("s{CLOCK_BUDGET}")]);
        // The next claim passes over the 9 touched sessions left, comes
        // round and takes the first whose second chance is spent.
        let second = index.claim(one, 1, t0, |_, _| false).unwrap();
        assert_eq!(keys(&second), ["s0"]);
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
        let mut idle = Vec::new();
        assert!(index.idle(t0, &mut SlabCursor::default(), 10, &mut idle));
        assert_eq!(keys(&idle), ["a"]);
        // The same a node at a time.
        let (mut cursor, mut paged) = (SlabCursor::default(), Vec::new());
        assert!(!index.idle(t0, &mut cursor, 1, &mut paged));
        assert!(index.idle(t0, &mut cursor, 1, &mut paged));
        assert_eq!(keys(&paged), ["a"]);
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
        // Few buckets: keys share them, so their chains are exercised
        // (added, found, unlinked at the head and in the middle).
        let mut index = TestIndex::new(Bounds {
            sessions: 400,
            total_bytes: 1 << 20,
            loads: 8,
            tombstones: 50,
        })
        .with_few_buckets();
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
                            index.insert_owned(key.as_bytes(), Arc::new(2), 1, now);
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
                // A pressure eviction by the clock.
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
