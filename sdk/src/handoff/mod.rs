//! The handoff protocol between the pods of one service: pre-copy, transfer
//! and drain push, over authenticated HTTP endpoints.
//!
//! Endpoints (all `POST`, under
//! [`RESERVED_PATH_PREFIX`](crate::RESERVED_PATH_PREFIX), which the
//! ownership layer passes through unchecked):
//!
//! | path | body | answer |
//! |---|---|---|
//! | `/_locus/handoff/v1/precopy` | JSON (shard count, shards) | a stream of `record` frames (not final), then `end` |
//! | `/_locus/handoff/v1/transfer` | `want` frames (key, known version) | per key: `record` (final), `unchanged`, `not resident` or `refused`, then `end` |
//! | `/_locus/handoff/v1/push` | `record` frames (final) | per key: `ack` (installed, stale, parked, refused), then `end` |
//!
//! Every request carries `authorization: Bearer <secret>` ([`HandoffSecret`];
//! 401 without it or with another value), the asking pod's name in
//! [`x-locus-pod`](crate::headers::POD) and its ring version in
//! [`x-locus-ring-version`](crate::headers::RING_VERSION). The frame format
//! and `docs/handoff.md` are the guide.
//!
//! The protocol is the SDK's own business: its client, server, frame format
//! and transport are not public API. A service author configures it
//! ([`HandoffConfig`], [`HandoffSecret`]) and reads its counters
//! ([`HandoffStats`]); the crate's own tests reach the rest through the
//! hidden `locus::internal` module.
//!
//! The answering pod first waits (bounded by [`HandoffConfig::ring_wait`](HandoffConfig::ring_wait()))
//! until its own ring is at least the asker's, then checks every key against
//! it: a transfer is granted only to the key's owner under that ring. The
//! hand-off itself happens under the session's exclusive lock
//! ([`SessionStore::hand_off`](crate::store::SessionStore::hand_off)) and
//! leaves a tombstone, so a straggler request that reaches the old owner gets
//! `421` with the new owner instead of a second writer.

pub(crate) mod client;
mod config;
mod error;
pub(crate) mod keeping;
mod metrics;
mod secret;
mod server;

pub(crate) mod tally;
pub(crate) mod transport;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderValue;

pub(crate) use self::client::{HandoffClient, PrecopyRequest, TransferAnswer};
pub use self::config::{HandoffConfig, HandoffConfigBuilder, HandoffConfigError};
pub use self::error::HandoffError;
pub use self::metrics::HandoffStats;
pub use self::secret::{
    DEFAULT_SECRET_FILE, HandoffSecret, MIN_SECRET_BYTES, SECRET_FILE_ENV, SecretError,
};
pub(crate) use self::server::HandoffService;
pub use self::transport::HandoffBody;
pub(crate) use self::transport::{HttpTransport, Transport};
pub(crate) use crate::store::SessionTable;

pub(crate) use self::metrics::HandoffMetrics;

use self::keeping::{KeyLocks, Outbox, Settled, Tombstones, WarmCache};
use crate::progress::TakeoverPath;
use crate::ring::{Phase, Pod, Ring};
use crate::source::RingWatch;

/// Prefix of every handoff endpoint.
pub(crate) const HANDOFF_PATH_PREFIX: &str = "/_locus/handoff/v1/";
/// Pre-copy: stream the resident sessions of some shards.
pub(crate) const PRECOPY_PATH: &str = "/_locus/handoff/v1/precopy";
/// Transfer: hand given keys over to the asker, their new owner.
pub(crate) const TRANSFER_PATH: &str = "/_locus/handoff/v1/transfer";
/// Drain push: take records handed off by the sender.
pub(crate) const PUSH_PATH: &str = "/_locus/handoff/v1/push";

/// How many earlier Switch rings a pod keeps for late takeovers.
const EARLIER_SWITCHES: usize = 3;

/// What the handoff endpoints, the driver and the session layer of one pod
/// share.
pub(crate) struct HandoffState {
    pub pod: String,
    pub pod_header: HeaderValue,
    pub ring: RingWatch,
    pub store: Arc<dyn SessionTable>,
    pub secret: HandoffSecret,
    pub client: HandoffClient,
    pub config: HandoffConfig,
    pub outbox: Outbox,
    pub cache: WarmCache,
    pub keys: KeyLocks,
    pub settled: Settled,
    pub tombstones: Tombstones,
    pub metrics: HandoffMetrics,
    /// How the sessions taken over in recent transitions arrived.
    pub moved: tally::MovedTally,
    /// The keys taken over whose first request was not served yet.
    pub unserved: tally::Unserved,
    /// When this pod first saw each recent ring version (phase deadlines).
    seen: Mutex<BTreeMap<u64, tokio::time::Instant>>,
    /// The newest Switch ring this pod saw: its takeovers go on after the
    /// ring that settles it arrives, until the handoff deadline. With it,
    /// the version of the first ring of its step this pod saw (the step's
    /// *epoch*: a Switch published again at a new version is the same step).
    switch: Mutex<Option<(Arc<Ring>, u64)>>,
    /// The Switch rings of the steps before it (newest last, a few), with
    /// their epochs: a key gained in one and not touched before the next
    /// step began is still taken over under it until its deadline.
    earlier: Mutex<Vec<(Arc<Ring>, u64)>>,
    /// True while `earlier` holds a Switch (written under its lock): the
    /// steady state, with none kept, reads it and takes no lock.
    earlier_kept: AtomicBool,
    /// Transfer answers whose write-through failed, or has not succeeded
    /// yet, since the drain last wrote the outbox through: the pod does not
    /// report drained until it could.
    pub unpersisted: std::sync::atomic::AtomicU64,
    /// The last two rings the driver saw, oldest first: who owned a key
    /// before a ring that moved it, when this pod did not see the Switch.
    rings: Mutex<[Option<Arc<Ring>>; 2]>,
}

impl HandoffState {
    #[allow(clippy::too_many_arguments, reason = "an internal constructor")]
    pub(crate) fn new(
        pod: String,
        pod_header: HeaderValue,
        ring: RingWatch,
        store: Arc<dyn SessionTable>,
        secret: HandoffSecret,
        transport: Arc<dyn Transport>,
        config: HandoffConfig,
        metrics: HandoffMetrics,
    ) -> Self {
        let client = HandoffClient::new(transport, &secret, &pod_header, config.max_frame_bytes);
        let limits = store.limits();
        let settled = Settled::new(limits.max_sessions.saturating_mul(4).max(1 << 16));
        let unserved = tally::Unserved::new(limits.max_sessions.max(1 << 16));
        let tombstones = Tombstones::new(limits.max_tombstones);
        Self {
            settled,
            tombstones,
            outbox: Outbox::new(config.max_outbox_bytes),
            cache: WarmCache::new(config.max_cache_bytes),
            keys: KeyLocks::default(),
            pod,
            pod_header,
            ring,
            store,
            secret,
            client,
            config,
            metrics,
            moved: tally::MovedTally::default(),
            unserved,
            seen: Mutex::new(BTreeMap::new()),
            switch: Mutex::new(None),
            earlier: Mutex::new(Vec::new()),
            earlier_kept: AtomicBool::new(false),
            rings: Mutex::new([None, None]),
            unpersisted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes back `n` owed write-throughs (never below zero: the drain may
    /// have written a record through while its own write was running).
    pub(crate) fn settle_unpersisted(&self, n: u64) {
        let _ = self.unpersisted.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |owed| Some(owed.saturating_sub(n)),
        );
    }

    /// The ring under which a request admitted under `ring` takes `key`
    /// over: `ring` itself if it is a Switch, else the newest Switch ring
    /// seen, while its handoff deadline runs and if `key`'s owner did not
    /// change since. A Stable ring settling a Switch can arrive while a
    /// transfer of that Switch is still under way; without this, a request
    /// under the Stable ring would load the key cold beside it.
    pub(crate) fn takeover_ring(&self, ring: &Arc<Ring>, key: &[u8]) -> Option<Arc<Ring>> {
        let mut held = self.switch.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.phase() == Phase::Switch {
            match held.as_ref() {
                Some((h, start)) if ring.version() > h.version() => {
                    let start = if ring.same_step(h) {
                        *start
                    } else {
                        let mut earlier =
                            self.earlier.lock().unwrap_or_else(PoisonError::into_inner);
                        earlier.push((Arc::clone(h), *start));
                        if earlier.len() > EARLIER_SWITCHES {
                            earlier.remove(0);
                        }
                        self.earlier_kept.store(true, Ordering::Release);
                        ring.version()
                    };
                    *held = Some((Arc::clone(ring), start));
                }
                Some(_) => {}
                None => *held = Some((Arc::clone(ring), ring.version())),
            }
            return Some(Arc::clone(ring));
        }
        let (switch, _) = held.as_ref()?;
        if switch.version() > ring.version()
            || switch.owner(key).pod.name != ring.owner(key).pod.name
        {
            return None;
        }
        let switch = Arc::clone(switch);
        drop(held);
        let deadline = self.first_seen(switch.version()) + self.config.handoff_deadline;
        (tokio::time::Instant::now() < deadline).then_some(switch)
    }

    /// An earlier Switch (see [`takeover_ring`](Self::takeover_ring)) in
    /// which this pod gained `key` and still owns it under `ring`, while its
    /// handoff deadline runs: the newest such, with its epoch and the pod
    /// that served `key` before it (where the key is taken over from).
    ///
    /// Called on nearly every request (every first touch outside a Switch's
    /// own window), so it is cheap when there is nothing to find: earlier
    /// Switches whose deadline has passed are dropped here, and while none
    /// is kept a flag answers without a lock.
    pub(crate) fn earlier_switch(&self, ring: &Ring, key: &[u8]) -> Option<(Arc<Ring>, u64, Pod)> {
        if !self.earlier_kept.load(Ordering::Acquire) || ring.owner(key).pod.name != self.pod {
            return None;
        }
        let now = tokio::time::Instant::now();
        let mut earlier = self.earlier.lock().unwrap_or_else(PoisonError::into_inner);
        // Lock order: `switch`, then `earlier`, then `seen`.
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let running = |switch: &Ring| {
            seen.get(&switch.version())
                .map(|at| now < *at + self.config.handoff_deadline)
        };
        // A Switch whose deadline has passed never runs again (a Switch not
        // seen yet by `first_seen` is kept: it has no deadline to pass).
        earlier.retain(|(switch, _)| running(switch) != Some(false));
        self.earlier_kept
            .store(!earlier.is_empty(), Ordering::Release);
        earlier.iter().rev().find_map(|(switch, epoch)| {
            if switch.version() >= ring.version() || running(switch) != Some(true) {
                return None;
            }
            let previous = crate::pod_plan::gained_from(switch, &self.pod, key)?;
            Some((Arc::clone(switch), *epoch, previous.clone()))
        })
    }

    /// The key is this pod's now (the caller holds its lock): forget the side
    /// copies and the hand-offs of it, and never take it over again in this
    /// switch. The one place a takeover is counted, once per key and epoch, by
    /// `path` ([`crate::progress::MovedReport`]); returns whether it was counted.
    pub(crate) fn take_over(&self, epoch: u64, key: &[u8], path: TakeoverPath) -> bool {
        self.cache.remove(key);
        self.outbox.remove(key);
        self.tombstones.take(key);
        let new = self.settled.mark(epoch, key);
        if new {
            self.metrics.takeover(path);
            // Announced to the first request: counted as served while the
            // transition's report can still count it, else as late.
            let now = tokio::time::Instant::now();
            if self.moved.count(epoch, path, now) {
                self.unserved.insert(key, epoch, path);
            } else {
                self.unserved.insert_late(key, epoch, path, now);
            }
        }
        new
    }

    /// The epoch of the Switch of ring `version`: the version of the first
    /// ring of its step this pod saw, when it is the step of the newest
    /// Switch seen and was published again since (its `ConfigMap` was
    /// deleted and recreated); else `version`. Keys taken over are marked
    /// with it, so a key taken over under one version of a step is not taken
    /// over again under the next.
    pub(crate) fn epoch(&self, version: u64) -> u64 {
        let held = self.switch.lock().unwrap_or_else(PoisonError::into_inner);
        match held.as_ref() {
            Some((ring, start)) if (*start..=ring.version()).contains(&version) => *start,
            _ => version,
        }
    }

    /// Records `ring` as the newest ring the driver saw; returns the one it
    /// saw before, if any.
    pub(crate) fn note_ring(&self, ring: &Arc<Ring>) -> Option<Arc<Ring>> {
        let mut rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        if rings[1]
            .as_ref()
            .is_none_or(|last| last.version() < ring.version())
        {
            rings[0] = rings[1].replace(Arc::clone(ring));
        }
        rings[0].clone()
    }

    /// The newest ring the driver saw that is older than `version`.
    pub(crate) fn ring_before(&self, version: u64) -> Option<Arc<Ring>> {
        let rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        rings
            .iter()
            .rev()
            .flatten()
            .find(|ring| ring.version() < version)
            .cloned()
    }

    /// When this pod first saw ring `version` (now, if never before).
    pub(crate) fn first_seen(&self, version: u64) -> tokio::time::Instant {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let at = *seen
            .entry(version)
            .or_insert_with(tokio::time::Instant::now);
        // Keep the last few versions only.
        while seen.len() > 16 {
            seen.pop_first();
        }
        at
    }
}
