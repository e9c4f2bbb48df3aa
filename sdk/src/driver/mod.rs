//! The transition driver: what one pod does on each new ring version.
//!
//! The driver watches the pod's [`RingWatch`](crate::RingWatch) and, for every new version `V`:
//!
//! * **observed** — reports `observed = V` at once;
//! * **Warm** (the ring has a `target` under which this pod gains shards: a
//!   joining slot, a slot inheriting shards, or a slot's `successor`) —
//!   pre-copies the resident sessions of the gained shards from the pods
//!   serving them now (`/_locus/handoff/v1/precopy`),
//!   keeps them in the warm cache (not in the store: they are not this pod's
//!   yet), then reports `warmed = V`. Bounded by
//!   [`warm_timeout`](crate::handoff::HandoffConfig::warm_timeout); on
//!   expiry it reports anyway and counts a roll-forward;
//! * **Switch** — the ownership layer routes by the new `current` at once.
//!   Records pushed to this pod before it owned their keys are installed
//!   (promotion); other gained keys are taken over on first touch
//!   (the `touch` module: transfer from the previous owner). Keys this pod lost
//!   are **drained**: after the requests admitted under older rings have
//!   finished (the `gate`), every resident key this pod no longer owns is
//!   handed off under its lock (tombstone: stragglers get 421 with the new
//!   owner) and pushed to its new owner in bounded batches; then
//!   `drained = V` is reported. Bounded by
//!   [`drain_timeout`](crate::handoff::HandoffConfig::drain_timeout);
//! * **Stable** — reports how the sessions this pod took over in the
//!   transition arrived ([`MovedSessions`](crate::progress::MovedSessions):
//!   warm with their state, or cold), and again if a late takeover of that
//!   transition changes the counts; after [`settle_grace`](crate::handoff::HandoffConfig::settle_grace),
//!   pre-copies and expired outbox entries are dropped. Tombstones expire
//!   by themselves ([`tombstone_ttl`](crate::handoff::HandoffConfig::tombstone_ttl)).
//!
//! The drain does not depend on having seen the Switch: any ring under
//! which this pod holds keys it does not own starts one, so a pod whose
//! ring source skipped a version still hands its keys over.

pub(crate) mod drain;
pub(crate) mod gate;
pub(crate) mod touch;

pub(crate) use crate::pod_plan as plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream;
use http::HeaderName;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::drain::DrainReport;

use crate::handoff::keeping::CacheInsert;
use crate::handoff::{HandoffState, PrecopyRequest};
use crate::progress::ProgressTracker;
use crate::ring::{Phase, Pod, Ring};

/// Response header set by the session layer on the first touch of a gained
/// key: how the key got here (`unchanged`, `transferred`, `promoted`,
/// `loaded`, `cold`).
pub const HANDOFF_HEADER: HeaderName = HeaderName::from_static("x-locus-handoff");

/// Response header set by the session layer on the first answer for a key
/// this pod took over in a transition, however it arrived (also by push or
/// promotion before any request): `<epoch>:<path>`, the `Switch` version and
/// the [`TakeoverPath`](crate::progress::TakeoverPath) name, e.g.
/// `14:pushed`. Each takeover is announced once; the pod counts it as served
/// ([`ServedTakeovers`](crate::progress::ServedTakeovers)), so a client can
/// check the pods' reports against what it saw. A first answer after the
/// transition's report became final says `<epoch>:<path>:late` (for up to
/// five minutes after that) and is not counted: a client can tell a late
/// first request from a move nobody announced.
pub const TAKEOVER_HEADER: HeaderName = HeaderName::from_static("x-locus-takeover");

/// Sleeps until `at`, or forever if `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The per-pod driver; see the [module docs](self).
pub(crate) struct Driver {
    pub state: Arc<HandoffState>,
    pub progress: ProgressTracker,
    pub gate: Arc<gate::Gate>,
    drain_wake: Notify,
}

impl Driver {
    pub(crate) fn new(
        state: Arc<HandoffState>,
        progress: ProgressTracker,
        gate: Arc<gate::Gate>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state,
            progress,
            gate,
            drain_wake: Notify::new(),
        })
    }

    /// Runs the driver until the ring source is gone; spawns its helpers.
    pub(crate) async fn run(self: Arc<Self>) {
        let drainer = tokio::spawn(Arc::clone(&self).drain_loop());
        let _drainer = AbortOnDrop(drainer);
        let mut watch = self.state.ring.clone();
        let mut last = 0;
        let mut warm: Option<(u64, AbortOnDrop)> = None;
        // Held only to be aborted when replaced or when the driver stops.
        let mut _settle: Option<AbortOnDrop> = None;
        loop {
            if let Some(ring) = watch.latest()
                && ring.version() > last
            {
                last = ring.version();
                self.state.first_seen(last);
                let prior = self.state.note_ring(&ring);
                self.progress.observed(last);
                tracing::debug!(pod = %self.state.pod, version = last, phase = %ring.phase(), "ring");
                let gained = plan::gained_shards(&ring, &self.state.pod);
                if gained.is_empty() {
                    warm = None;
                } else if warm.as_ref().is_none_or(|(v, _)| *v != last) {
                    let task = tokio::spawn(Arc::clone(&self).warm(Arc::clone(&ring), gained));
                    warm = Some((last, AbortOnDrop(task)));
                }
                _settle = None;
                let deadline = self.state.first_seen(last) + self.state.config.handoff_deadline;
                match ring.phase() {
                    Phase::Warm => self.state.moved.warm(),
                    Phase::Switch => {}
                    Phase::Stable => {
                        // Keys that moved here under a Switch this pod never
                        // saw were loaded uncounted: the counts are partial.
                        let skipped = prior.as_deref().is_some_and(|p| {
                            p.phase() != Phase::Switch
                                && plan::gained_between(p, &ring, &self.state.pod)
                        });
                        let not_before = Instant::now() + self.state.config.first_touch_wait;
                        let named = plan::names_pod(&ring, &self.state.pod);
                        let report = self
                            .state
                            .moved
                            .settled(last, named, skipped, deadline, not_before);
                        self.progress.moved(report);
                    }
                }
                match ring.phase() {
                    Phase::Switch => {
                        self.state.takeover_ring(&ring, &[]);
                        let epoch = self.state.epoch(last);
                        let named = plan::names_pod(&ring, &self.state.pod);
                        self.state.moved.switch(epoch, named, deadline);
                        // Records handed off in this Switch under an earlier
                        // version of it (published again) are still owed.
                        let dropped = self.state.outbox.drop_older_than(self.state.epoch(last));
                        self.state.metrics.dropped(dropped as u64);
                        self.promote(&ring).await;
                    }
                    Phase::Stable => {
                        self.promote_skipped(prior.as_deref(), &ring).await;
                        let task = tokio::spawn(Arc::clone(&self).settle());
                        _settle = Some(AbortOnDrop(task));
                    }
                    Phase::Warm => self.promote_skipped(prior.as_deref(), &ring).await,
                }
                self.drain_wake.notify_one();
            }
            let finish_at = match (
                self.state.moved.next_deadline(),
                self.state.unserved.next_expiry(),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                changed = watch.changed() => {
                    if !changed {
                        return;
                    }
                }
                () = self.state.moved.changed() => {
                    self.progress.moved(self.state.moved.report());
                }
                () = sleep_until_some(finish_at) => {
                    let now = Instant::now();
                    let finished = self.state.moved.finish(now);
                    self.state.unserved.finished(&finished, now);
                    self.progress.moved(self.state.moved.report());
                }
            }
        }
    }

    /// Pre-copies the shards this pod gains under the Warm `ring`
    /// ([`plan::gained_shards`]), from the pods serving them now.
    async fn warm(self: Arc<Self>, ring: Arc<Ring>, gained: BTreeMap<String, (Pod, Vec<u32>)>) {
        let state = &self.state;
        let started = Instant::now();
        let version = ring.version();
        let deadline = started + state.config.warm_timeout;
        let sources = gained.len();
        let this = &self;
        let copied: Vec<u64> = stream::iter(gained.into_values())
            .map(|(source, shards)| {
                let request = PrecopyRequest {
                    shard_count: ring.shards().get(),
                    shards,
                };
                async move {
                    this.precopy_from(&source, version, &request, deadline)
                        .await
                }
            })
            .buffer_unordered(state.config.precopy_concurrency.max(1))
            .collect()
            .await;
        let records: u64 = copied.iter().sum();
        let took = started.elapsed();
        state.metrics.phase("warm", took);
        tracing::info!(
            pod = %state.pod, version, sources, records, ?took, "pre-copy done; reporting warmed"
        );
        self.progress.warmed(version);
    }

    /// One source's pre-copy, retried until `deadline`.
    async fn precopy_from(
        &self,
        source: &Pod,
        version: u64,
        request: &PrecopyRequest,
        deadline: Instant,
    ) -> u64 {
        let state = &self.state;
        let mut backoff = state.config.retry_backoff;
        loop {
            let now = Instant::now();
            if now >= deadline {
                state.metrics.rolled_forward("warm");
                tracing::warn!(pod = %state.pod, from = %source.name, "pre-copy timed out; rolling forward");
                return 0;
            }
            let mut full = false;
            let ttl = state.config.parked_ttl;
            let result = state
                .client
                .precopy(
                    source,
                    version,
                    request,
                    deadline - now,
                    |record| match state.cache.insert(record, &source.name, false, ttl) {
                        CacheInsert::Full => {
                            full = true;
                            false
                        }
                        CacheInsert::Kept | CacheInsert::Superseded => true,
                    },
                )
                .await;
            match result {
                Ok(records) => {
                    state.metrics.records("precopy", "received", records);
                    if full {
                        tracing::warn!(pod = %state.pod, "warm cache full: the rest is taken over by transfer");
                    }
                    return records;
                }
                Err(error) => {
                    state.metrics.call_error("precopy", error.metric_label());
                    if error.is_gone() {
                        // Nothing to copy from a pod that is gone.
                        state.metrics.rolled_forward("warm");
                        return 0;
                    }
                    tracing::debug!(pod = %state.pod, %error, "pre-copy failed; retrying");
                }
            }
            retry_pause(&mut backoff, deadline).await;
        }
    }

    /// At a Switch: installs the records pushed here before this pod owned
    /// their keys, when their sender is the keys' previous owner; drops the
    /// other parked records (they belong to no transition any more).
    async fn promote(&self, ring: &Ring) {
        let state = &self.state;
        let pod = &state.pod;
        let keys = state.cache.finals(|key, from| {
            plan::gained_from(ring, pod, key).is_some_and(|previous| previous.name == from)
        });
        let mut promoted = 0;
        for key in keys {
            let _lock = state.keys.lock(&key).await;
            let Some(cached) = state.cache.get(&key).filter(|c| c.last) else {
                continue;
            };
            let Some(previous) = plan::gained_from(ring, pod, &key) else {
                continue;
            };
            let epoch = state.epoch(ring.version());
            let path = crate::progress::TakeoverPath::Promoted;
            if touch::install(state, epoch, &key, &cached.record, previous, path)
                .await
                .is_ok()
            {
                promoted += 1;
            }
        }
        let dropped = state.cache.drop_finals();
        if promoted > 0 || dropped > 0 {
            state.metrics.records("promote", "received", promoted);
            tracing::info!(pod = %state.pod, promoted, dropped, "parked records after the switch");
        }
    }

    /// Outside a Switch: installs the records parked here for keys that
    /// moved to this pod between the `prior` ring it saw and `ring` (it
    /// skipped the Switch that moved them, so [`promote`](Self::promote) did
    /// not run for them). Their senders counted them delivered.
    async fn promote_skipped(&self, prior: Option<&Ring>, ring: &Ring) {
        let Some(prior) = prior else {
            return;
        };
        if prior.phase() == Phase::Switch && prior.current() == ring.current() {
            return;
        }
        let promoted = touch::promote_from(&self.state, prior, ring).await;
        if promoted > 0 {
            self.state.metrics.records("promote", "received", promoted);
            tracing::info!(
                pod = %self.state.pod, promoted, version = ring.version(),
                "parked records promoted: this pod did not see the switch that moved them"
            );
        }
    }

    /// After a Stable ring and the grace: drops pre-copies and expired
    /// outbox entries.
    async fn settle(self: Arc<Self>) {
        tokio::time::sleep(self.state.config.settle_grace).await;
        let precopies = self.state.cache.drop_precopies();
        let dropped = self.state.outbox.purge();
        self.state.metrics.dropped(dropped as u64);
        if dropped > 0 {
            tracing::warn!(
                pod = %self.state.pod, dropped,
                "records handed off were never acknowledged by their new owner"
            );
        }
        tracing::debug!(pod = %self.state.pod, precopies, "settled");
    }

    /// Drains on every wake-up (a new ring), one drain at a time.
    /// A drain that could not hand everything over (nothing durable to write
    /// the rest to, or a hand-off failed) runs again after a pause.
    async fn drain_loop(self: Arc<Self>) {
        let mut again = false;
        let mut backoff = self.state.config.retry_backoff;
        loop {
            if again {
                let pause = Instant::now() + self.state.config.retry_after.max(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::select! {
                    () = self.drain_wake.notified() => {}
                    () = tokio::time::sleep_until(pause) => {}
                }
            } else {
                backoff = self.state.config.retry_backoff;
                self.drain_wake.notified().await;
            }
            let Some(ring) = self.state.ring.latest() else {
                continue;
            };
            again = !self.drain(&ring).await.complete();
        }
    }

    /// Hands every resident key this pod does not own under `ring` to its
    /// owner, then reports drained if this pod is a losing pod of a Switch
    /// and every key handed off was acknowledged or written through the
    /// persistence ([`DrainReport::complete`]): the operator settles the
    /// switch on that report, after which the new owners may load the keys
    /// they were not given from the persistence.
    pub(crate) async fn drain(&self, ring: &Ring) -> DrainReport {
        let state = &self.state;
        let version = ring.version();
        let losing = plan::is_losing(ring, &state.pod);
        let mut report = DrainReport::default();
        if self.holds_lost_keys(ring) {
            let started = Instant::now();
            // A later round (the first could not finish) gets a push timeout
            // of its own.
            let deadline = (state.first_seen(version) + state.config.drain_timeout)
                .max(Instant::now() + state.config.push_timeout);
            // Requests admitted under an older ring may still load or change
            // a lost key: let them finish first.
            let within = deadline.saturating_duration_since(Instant::now()) / 2;
            if !self.gate.wait_below(version, within).await {
                tracing::warn!(pod = %state.pod, "requests under an older ring still running; draining anyway");
            }
            let destinations = self.lost_keys(ring).await;
            let keys: usize = destinations.values().map(|(_, k)| k.len()).sum();
            report = drain::hand_over(state, destinations, version, deadline, "push").await;
            if !report.complete() {
                state.metrics.rolled_forward("drain");
            }
            let took = started.elapsed();
            state.metrics.phase("drain", took);
            tracing::info!(pod = %state.pod, version, keys, ?report, ?took, "drained");
        }
        if state.unpersisted.load(std::sync::atomic::Ordering::Acquire) > 0
            && !self.write_outbox_through().await
        {
            report.failed += 1;
        }
        if losing && report.complete() {
            self.progress.drained(version);
        } else if losing {
            tracing::warn!(
                pod = %state.pod, version, ?report,
                "not reporting drained: sessions handed off are neither acknowledged nor durable"
            );
        }
        report
    }

    /// Writes every record of the outbox through the persistence after a
    /// transfer answer's write-through failed; true if all were written.
    async fn write_outbox_through(&self) -> bool {
        let state = &self.state;
        let failures = state.unpersisted.load(std::sync::atomic::Ordering::Acquire);
        let mut ok = true;
        for record in state.outbox.records() {
            if let Err(error) = state.store.write_record(&record).await {
                tracing::warn!(pod = %state.pod, %error, "cannot write a session handed off through");
                ok = false;
            }
        }
        if ok {
            // Failures counted after the outbox was read stay counted.
            state.settle_unpersisted(failures);
        }
        ok
    }

    /// True if a resident key is owned elsewhere under `ring`: O(shards ·
    /// log n) through the store's shard index.
    fn holds_lost_keys(&self, ring: &Ring) -> bool {
        let lost: Vec<bool> = (0..ring.shards().get())
            .map(|shard| self.owner_elsewhere(ring, shard).is_some())
            .collect();
        self.state.store.holds_keys_in(ring.shards(), &lost)
    }

    /// Resident keys owned elsewhere under `ring`, by owner: O(shards +
    /// keys lost) through the store's shard index.
    async fn lost_keys(&self, ring: &Ring) -> drain::Destinations {
        drain::destinations(&*self.state.store, ring.shards(), |shard| {
            self.owner_elsewhere(ring, shard)
        })
        .await
    }

    /// The pod owning `shard` under `ring`, if not this one.
    fn owner_elsewhere<'a>(&self, ring: &'a Ring, shard: u32) -> Option<&'a Pod> {
        ring.owner_of_shard(shard)
            .map(|slot| &slot.pod)
            .filter(|pod| pod.name != self.state.pod)
    }
}

/// The pause between retries of a handoff call: sleeps for `backoff`, not
/// past `deadline`, then doubles `backoff` (up to 1 s).
pub(crate) async fn retry_pause(backoff: &mut Duration, deadline: Instant) {
    let pause = (*backoff).min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(pause).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
