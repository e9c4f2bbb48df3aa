//! Handing keys over in bulk: hand each key off under its lock, push the
//! records to their new owner in bounded batches, retry until acknowledged
//! or the deadline passes. Used by the drain after a Switch and by the
//! SIGTERM drain.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream;
use tokio::time::Instant;

use crate::handoff::{HandoffState, SessionTable};
use crate::ring::{Pod, ShardCount};
use crate::store::{HandOff, SessionRecord};

/// What a bulk hand-over did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Records handed off here and acknowledged by their new owner.
    pub delivered: usize,
    /// Records handed off here, not acknowledged by their new owner before
    /// the deadline (or their new owner was gone), and written through the
    /// persistence instead (conditionally: a newer stored version wins).
    /// They stay in the outbox, so a transfer can still be answered.
    pub persisted: usize,
    /// Records handed off here, not acknowledged, and not durable anywhere
    /// (no persistence, or its write failed): taken back into this pod's
    /// store, to be handed over by a later drain round.
    pub undelivered: usize,
    /// Keys that were no longer resident when their turn came (handed off by
    /// a transfer first, or evicted).
    pub skipped: usize,
    /// Keys whose hand-off failed in the store (they stay here).
    pub failed: usize,
}

impl DrainReport {
    fn add(&mut self, other: DrainReport) {
        self.delivered += other.delivered;
        self.persisted += other.persisted;
        self.undelivered += other.undelivered;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }

    /// True if every record handed off was acknowledged or written through
    /// the persistence, and no hand-off failed: the pod may report drained.
    pub fn complete(&self) -> bool {
        self.undelivered == 0 && self.failed == 0
    }
}

/// Keys grouped by the pod they go to.
pub(crate) type Destinations = BTreeMap<String, (Pod, Vec<Bytes>)>;

/// The resident keys of every shard `owner` names a pod for (at `shards`
/// shards), grouped by that pod. Reads only those shards' keys from the
/// store's shard index: O(shards + keys handed over), not O(sessions).
pub(crate) async fn destinations<'a>(
    store: &dyn SessionTable,
    shards: ShardCount,
    owner: impl Fn(u32) -> Option<&'a Pod>,
) -> Destinations {
    let owners: Vec<Option<&Pod>> = (0..shards.get()).map(owner).collect();
    let wanted: Vec<bool> = owners.iter().map(Option::is_some).collect();
    let mut destinations = Destinations::new();
    for (shard, key) in store.keys_in_shards(shards, &wanted).await {
        if let Some(Some(pod)) = owners.get(shard as usize) {
            destinations
                .entry(pod.name.clone())
                .or_insert_with(|| ((*pod).clone(), Vec::new()))
                .1
                .push(key);
        }
    }
    destinations
}

/// Hands every key of `destinations` off to its pod and pushes it there,
/// `push_concurrency` pods at a time, until `deadline`. `version` is the
/// ring version the destinations were computed under; `op` labels metrics
/// (`push` or `shutdown`).
pub(crate) async fn hand_over(
    state: &HandoffState,
    destinations: Destinations,
    version: u64,
    deadline: Instant,
    op: &'static str,
) -> DrainReport {
    let reports: Vec<DrainReport> = stream::iter(destinations.into_values())
        .map(|(pod, keys)| to_one(state, pod, keys, version, deadline, op))
        .buffer_unordered(state.config.push_concurrency.max(1))
        .collect()
        .await;
    let mut total = DrainReport::default();
    for report in reports {
        total.add(report);
    }
    total
}

async fn to_one(
    state: &HandoffState,
    pod: Pod,
    keys: Vec<Bytes>,
    version: u64,
    deadline: Instant,
    op: &'static str,
) -> DrainReport {
    let mut report = DrainReport::default();
    let mut gone = false;
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        // One batch: hand off up to the batch bounds.
        let mut batch: Vec<SessionRecord> = Vec::new();
        let mut bytes = 0;
        while let Some(key) = keys.peek() {
            if batch.len() >= state.config.batch_records || bytes >= state.config.batch_bytes {
                break;
            }
            let key = key.clone();
            keys.next();
            match hand_off(state, &key, &pod, version).await {
                Ok(Some(record)) => {
                    bytes += record.key.len() + record.value.len();
                    batch.push(record);
                }
                Ok(None) => report.skipped += 1,
                Err(()) => report.failed += 1,
            }
        }
        if batch.is_empty() {
            continue;
        }
        // Past the deadline, or with the new owner gone, the rest is handed
        // off and written through without trying to push it.
        let (delivered, undelivered) = if gone || Instant::now() >= deadline {
            (0, batch)
        } else {
            push(state, &pod, version, batch, deadline, op, &mut gone).await
        };
        report.delivered += delivered;
        if !undelivered.is_empty() {
            let kept = persist(state, &pod, undelivered).await;
            report.persisted += kept.persisted;
            report.undelivered += kept.undelivered;
        }
    }
    report
}

/// Records their new owner did not acknowledge (unreachable, slow, or gone):
/// written through the persistence, so that the pod may report drained and
/// whoever takes the keys over once the switch settles loads their latest
/// state. They stay in the outbox and tombstoned here: a late transfer is
/// still answered with them. What cannot be made durable is taken back into
/// this pod's store (see [`take_back`]).
async fn persist(state: &HandoffState, pod: &Pod, records: Vec<SessionRecord>) -> DrainReport {
    let mut report = DrainReport::default();
    let mut back = Vec::new();
    for record in records {
        match state.store.write_record(&record).await {
            Ok(true) => report.persisted += 1,
            Ok(false) => back.push(record),
            Err(error) => {
                tracing::warn!(pod = %state.pod, to = %pod.name, %error, "cannot write an undelivered session through");
                back.push(record);
            }
        }
    }
    if report.persisted > 0 {
        tracing::warn!(
            pod = %state.pod, to = %pod.name, records = report.persisted,
            "new owner did not acknowledge: sessions written through the persistence"
        );
    }
    if !back.is_empty() {
        report.undelivered = back.len();
        take_back(state, &back).await;
    }
    report
}

/// Records that were not delivered and could not be made durable exist
/// nowhere else: installs them back here (this pod does not serve them, it
/// does not own them) so that a later drain round, or a transfer, hands
/// them to their owner. The pod does not report drained meanwhile.
async fn take_back(state: &HandoffState, records: &[SessionRecord]) {
    for record in records {
        let _lock = state.keys.lock(&record.key).await;
        match state.store.install_record(record).await {
            Ok(_) => {
                state.outbox.remove(&record.key);
                state.tombstones.take(&record.key);
            }
            Err(error) => {
                tracing::error!(pod = %state.pod, %error, "cannot take back a session whose new owner is gone");
            }
        }
    }
    tracing::warn!(
        pod = %state.pod, records = records.len(),
        "sessions not delivered and not durable: taken back to hand over later"
    );
}

/// Hands one key off to `pod` under the key's lock and keeps the record in
/// the outbox until acknowledged. `Ok(None)`: not resident any more.
async fn hand_off(
    state: &HandoffState,
    key: &Bytes,
    pod: &Pod,
    version: u64,
) -> Result<Option<SessionRecord>, ()> {
    let _lock = state.keys.lock(key).await;
    if let Some(record) = state.outbox.get(key, &pod.name) {
        return Ok(Some(record));
    }
    let ttl = state.config.tombstone_ttl;
    state.tombstones.handed(key, ttl);
    match state.store.hand_off(key, None, &pod.name, ttl).await {
        Ok(HandOff::State(record)) => {
            let kept = state.outbox.insert(
                key,
                record.clone(),
                &pod.name,
                version,
                state.config.drain_timeout + state.config.outbox_ttl,
            );
            if !kept {
                tracing::warn!(pod = %state.pod, "outbox full: a drained record is kept only until pushed");
            }
            Ok(Some(record))
        }
        Ok(HandOff::Unchanged { .. } | HandOff::NotResident) => Ok(None),
        Err(error) => {
            tracing::warn!(pod = %state.pod, to = %pod.name, %error, "cannot hand a session off; it stays here");
            Err(())
        }
    }
}

/// Pushes `batch` to `pod` until every record is acknowledged, the deadline
/// passes or `pod` is gone (`gone` set). Returns the number delivered and
/// the records not delivered.
async fn push(
    state: &HandoffState,
    pod: &Pod,
    version: u64,
    mut batch: Vec<SessionRecord>,
    deadline: Instant,
    op: &'static str,
    gone: &mut bool,
) -> (usize, Vec<SessionRecord>) {
    let mut delivered = 0;
    let mut backoff = state.config.retry_backoff;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let budget = state
            .config
            .push_timeout
            .min(deadline - now)
            .max(Duration::from_millis(1));
        match state.client.push(pod, version, &batch, budget).await {
            Ok(acks) => {
                let mut refused = Vec::new();
                let mut taken = 0;
                for ((key, outcome), record) in acks.into_iter().zip(batch) {
                    if outcome.delivered() {
                        state.outbox.remove(&key);
                        taken += 1;
                    } else {
                        refused.push(record);
                    }
                }
                delivered += taken;
                state.metrics.records(op, "sent", taken as u64);
                batch = refused;
                if batch.is_empty() {
                    return (delivered, batch);
                }
            }
            Err(error) => {
                state.metrics.call_error(op, error.metric_label());
                if error.is_gone() {
                    *gone = true;
                    break;
                }
                tracing::debug!(pod = %state.pod, to = %pod.name, %error, "push failed; retrying");
            }
        }
        super::retry_pause(&mut backoff, deadline).await;
    }
    (delivered, batch)
}
