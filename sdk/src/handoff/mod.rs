//! The handoff protocol between the pods of one service: pre-copy, transfer
//! and drain push, over authenticated HTTP endpoints.
//!
//! Endpoints (all `POST`, under
//! [`RESERVED_PATH_PREFIX`](crate::RESERVED_PATH_PREFIX), which the
//! ownership layer passes through unchecked):
//!
//! | path | body | answer |
//! |---|---|---|
//! | [`PRECOPY_PATH`] | JSON [`PrecopyRequest`] (shard count, shards) | a stream of `record` frames (not final), then `end` |
//! | [`TRANSFER_PATH`] | `want` frames (key, known version) | per key: `record` (final), `unchanged`, `not resident` or `refused`, then `end` |
//! | [`PUSH_PATH`] | `record` frames (final) | per key: `ack` (installed, stale, parked, refused), then `end` |
//!
//! Every request carries `authorization: Bearer <secret>` ([`HandoffSecret`];
//! 401 without it or with another value), the asking pod's name in
//! [`x-locus-pod`](crate::headers::POD) and its ring version in
//! [`x-locus-ring-version`](crate::headers::RING_VERSION). The frame format is
//! in [`wire`]; `docs/handoff.md` is the guide.
//!
//! The answering pod first waits (bounded by [`HandoffConfig::ring_wait`])
//! until its own ring is at least the asker's, then checks every key against
//! it: a transfer is granted only to the key's owner under that ring. The
//! hand-off itself happens under the session's exclusive lock
//! ([`SessionStore::hand_off`](crate::store::SessionStore::hand_off)) and
//! leaves a tombstone, so a straggler request that reaches the old owner gets
//! `421` with the new owner instead of a second writer.

mod client;
mod error;
pub(crate) mod keeping;
mod metrics;
mod secret;
mod server;
mod table;
pub(crate) mod tally;
mod transport;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::HeaderValue;

pub use self::client::{HandoffClient, PrecopyRequest, TransferAnswer};
pub use self::error::HandoffError;
pub use self::metrics::HandoffStats;
pub use self::secret::{
    DEFAULT_SECRET_FILE, HandoffSecret, MIN_SECRET_BYTES, SECRET_FILE_ENV, SecretError,
};
pub use self::server::HandoffService;
pub use self::table::SessionTable;
pub use self::transport::{HandoffBody, HttpTransport, Transport, TransportError};

pub(crate) use self::metrics::HandoffMetrics;

use self::keeping::{KeyLocks, Outbox, Settled, Tombstones, WarmCache};
use crate::progress::TakeoverPath;
use crate::ring::{Phase, Pod, Ring};
use crate::source::RingWatch;

/// Prefix of every handoff endpoint.
pub const HANDOFF_PATH_PREFIX: &str = "/_locus/handoff/v1/";
/// Pre-copy: stream the resident sessions of some shards.
pub const PRECOPY_PATH: &str = "/_locus/handoff/v1/precopy";
/// Transfer: hand given keys over to the asker, their new owner.
pub const TRANSFER_PATH: &str = "/_locus/handoff/v1/transfer";
/// Drain push: take records handed off by the sender.
pub const PUSH_PATH: &str = "/_locus/handoff/v1/push";

/// Timings and bounds of the handoff protocol and the transition driver.
///
/// Every wait is bounded; past a phase's bound the pod rolls forward and
/// counts it in `locus_handoff_rolled_forward_total{phase}` — but no bound
/// hands a key to a new owner: a key loads cold only once its previous owner
/// is fenced (`docs/adr/0001-fencing.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffConfig {
    /// Longest pre-copy (Warm step) before reporting warmed anyway.
    /// Default 30 s (the operator's `timeouts.warm`).
    pub warm_timeout: Duration,
    /// Longest single transfer call. Default 5 s.
    pub transfer_timeout: Duration,
    /// From the moment this pod sees a Switch ring: how long first touches
    /// go through the previous owner (parked record, then a transfer) after
    /// the ring that settles the switch arrived — it may still hold a key's
    /// state in its outbox. Past it, keys not taken over load from the
    /// persistence directly. Default 30 s. It never lets a key load cold
    /// while the switch is not settled: until the operator settles it (every
    /// losing pod drained or gone), an unreachable previous owner's keys
    /// answer 503 (`docs/adr/0001-fencing.md`).
    pub handoff_deadline: Duration,
    /// Longest a request waits for its key's first-touch transfer before it
    /// gets 503 with `Retry-After` (the next attempt continues). Default 5 s.
    pub first_touch_wait: Duration,
    /// Longest drain (Switch step) before reporting drained anyway. Default
    /// 30 s (the operator's `timeouts.drain`).
    pub drain_timeout: Duration,
    /// Longest single push call. Default 10 s.
    pub push_timeout: Duration,
    /// Longest wait for this pod's ring to reach an asker's version. Default 2 s.
    pub ring_wait: Duration,
    /// How long a handed-off key answers 421 with its new owner here.
    /// Default 60 s. It outlives the requests admitted before the ring
    /// changed; later ones are redirected by the ownership check itself.
    pub tombstone_ttl: Duration,
    /// How long a handed-off record stays answerable to a retried transfer.
    /// Default 60 s.
    pub outbox_ttl: Duration,
    /// How long a parked record (handed to this pod before it owns the key)
    /// and a pre-copy are kept. Default 5 minutes.
    pub parked_ttl: Duration,
    /// After a Stable ring, how long pre-copies are kept before being
    /// dropped. Default 30 s.
    pub settle_grace: Duration,
    /// Most records per pushed batch and per pre-copy chunk. Default 256.
    pub batch_records: usize,
    /// Most bytes per pushed batch and per pre-copy chunk. Default 1 MiB.
    pub batch_bytes: usize,
    /// Most keys per transfer request. Default 256.
    pub max_transfer_keys: usize,
    /// Largest frame accepted (a session plus its key and header). Default
    /// 16 MiB + 64 KiB.
    pub max_frame_bytes: usize,
    /// Bound of the warm cache (pre-copies and parked records). Default 256 MiB.
    pub max_cache_bytes: usize,
    /// Bound of the outbox (records handed off, not yet acknowledged).
    /// Default 256 MiB.
    pub max_outbox_bytes: usize,
    /// Pre-copies (one per source pod) run at once. Default 4.
    pub precopy_concurrency: usize,
    /// Pushes (one per destination pod) run at once. Default 4.
    pub push_concurrency: usize,
    /// Requests served at once by the session layer; past it, 503 with
    /// `Retry-After`. Default 1024.
    pub max_in_flight: usize,
    /// Pause between retries of a failed call. Default 100 ms.
    pub retry_backoff: Duration,
    /// `Retry-After` of the 503 answers. Default 1 s.
    pub retry_after: Duration,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            warm_timeout: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(5),
            handoff_deadline: Duration::from_secs(30),
            first_touch_wait: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            push_timeout: Duration::from_secs(10),
            ring_wait: Duration::from_secs(2),
            tombstone_ttl: Duration::from_secs(60),
            outbox_ttl: Duration::from_secs(60),
            parked_ttl: Duration::from_secs(300),
            settle_grace: Duration::from_secs(30),
            batch_records: 256,
            batch_bytes: 1 << 20,
            max_transfer_keys: 256,
            max_frame_bytes: (16 << 20) + (64 << 10),
            max_cache_bytes: 256 << 20,
            max_outbox_bytes: 256 << 20,
            precopy_concurrency: 4,
            push_concurrency: 4,
            max_in_flight: 1024,
            retry_backoff: Duration::from_millis(100),
            retry_after: Duration::from_secs(1),
        }
    }
}

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
            // Announced to the first request only while the transition's report
            // can still count it as served.
            if self.moved.count(epoch, path, tokio::time::Instant::now()) {
                self.unserved.insert(key, epoch, path);
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
