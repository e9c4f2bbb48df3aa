//! The first touch of a gained key: make it resident before the request is
//! served, from the best source that is safe.
//!
//! In a Switch ring, for a key this pod owns now and another pod (the
//! *previous owner*) served before the switch, and that is not in this
//! pod's store yet, under the key's lock:
//!
//! 1. a record the previous owner already handed to this pod (parked by a
//!    push that arrived before this pod owned the key) is installed;
//! 2. otherwise the previous owner is asked for a **transfer**, with the
//!    version this pod pre-copied, if any. Its answer is final — it handed
//!    the key off under the key's lock and left a tombstone:
//!    * the state → installed (`transferred`);
//!    * "unchanged since v" → the pre-copy is installed (`unchanged`);
//!    * "not resident" → the persistence holds the latest state (`loaded`);
//!    * refused (the key is busy, its ring cannot tell) or no answer → asked
//!      again after a pause;
//! 3. the key is loaded from the persistence without an answer (`cold`)
//!    only once the previous owner is **fenced**: this pod holds a ring
//!    newer than the Switch. The operator publishes the ring that settles a
//!    Switch only when every losing pod reported drained (each lost key
//!    acknowledged by its new owner or written through the persistence) or
//!    its pod is gone (`docs/adr/0001-fencing.md`). No timeout, and no
//!    refused connection (a partition looks the same), hands a key over.
//!
//! A request that waits longer than
//! [`first_touch_wait`](crate::handoff::HandoffConfig::first_touch_wait)
//! gets 503 with `Retry-After`; the transfer goes on with the next attempt.
//! So until this pod has the key's latest state, or the previous owner is
//! fenced, nobody here mutates the key: the single-writer invariant.
//! Unavailability (503 for the moved keys of an unreachable previous owner)
//! is the price, reported in `locus_handoff_call_errors_total`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::plan;
use crate::handoff::keeping::Cached;
use crate::handoff::{HandoffError, HandoffState, TransferAnswer};
use crate::progress::TakeoverPath;
use crate::ring::{Pod, Ring};
use crate::store::SessionRecord;

/// How a first touch made the key resident; also the value of the
/// [`x-locus-handoff`](super::HANDOFF_HEADER) response header.
pub(crate) type TouchPath = &'static str;

/// Why a request could not be served yet.
#[derive(Debug)]
pub(crate) enum TouchError {
    /// Try again shortly (503 with `Retry-After`).
    Retry(String),
}

/// Makes `key` resident if this pod gained it in the Switch `ring` (or in
/// the Switch that `ring` settles, until its deadline) and does not hold it
/// yet. `Ok(None)`: nothing to do.
pub(crate) async fn ensure(
    state: &HandoffState,
    ring: &Arc<Ring>,
    key: &[u8],
) -> Result<Option<TouchPath>, TouchError> {
    let newest = state.takeover_ring(ring, key).and_then(|switch| {
        let previous = plan::gained_from(&switch, &state.pod, key)?.clone();
        let epoch = state.epoch(switch.version());
        Some((switch, epoch, previous))
    });
    // Gained in an earlier Switch, still under its deadline, and not touched
    // before a newer Switch arrived: taken over under that one (its previous
    // owner is fenced: a newer step began only after it settled).
    let Some((switch, epoch, previous)) = newest.or_else(|| state.earlier_switch(ring, key)) else {
        return adopt_parked(state, ring, key).await;
    };
    let (ring, previous) = (switch.as_ref(), &previous);
    if state.settled.contains(epoch, key) || state.store.version_of(key).await.is_some() {
        return Ok(None);
    }
    let patience = Instant::now() + state.config.first_touch_wait;
    let Ok(_lock) = tokio::time::timeout_at(patience, state.keys.lock(key)).await else {
        return Err(TouchError::Retry(
            "another request is taking this session over".into(),
        ));
    };
    if state.settled.contains(epoch, key) || state.store.version_of(key).await.is_some() {
        return Ok(None);
    }
    let cached = state.cache.get(key).filter(|c| *c.from == previous.name);
    if let Some(parked) = cached.as_ref().filter(|c| c.last) {
        install(
            state,
            epoch,
            key,
            &parked.record,
            previous,
            TakeoverPath::Promoted,
        )
        .await?;
        state.metrics.first_touch("promoted");
        return Ok(Some("promoted"));
    }
    let precopy = cached.filter(|c| !c.last);
    transfer(state, ring, epoch, key, previous, precopy, patience).await
}

/// Outside a Switch: a record parked here by the pod that owned `key` under
/// the ring before `ring` (this pod did not see the Switch that moved the key
/// here — a relist, or it was not Ready — so nothing promoted it) is the
/// key's latest state: install it before the store could load an older one
/// from the persistence. The driver promotes such records in bulk when the
/// ring arrives ([`promote_from`]); this covers a request that gets there
/// first.
async fn adopt_parked(
    state: &HandoffState,
    ring: &Arc<Ring>,
    key: &[u8],
) -> Result<Option<TouchPath>, TouchError> {
    if state.cache.is_empty() || ring.owner(key).pod.name != state.pod {
        return Ok(None);
    }
    let Some(prior) = state.ring_before(ring.version()) else {
        return Ok(None);
    };
    let previous = &prior.owner(key).pod;
    if previous.name == state.pod {
        return Ok(None);
    }
    let Ok(_lock) = tokio::time::timeout(state.config.first_touch_wait, state.keys.lock(key)).await
    else {
        return Err(TouchError::Retry(
            "another request is taking this session over".into(),
        ));
    };
    if state.store.version_of(key).await.is_some() {
        return Ok(None);
    }
    let Some(parked) = state
        .cache
        .get(key)
        .filter(|c| c.last && *c.from == previous.name)
    else {
        return Ok(None);
    };
    install(
        state,
        ring.version(),
        key,
        &parked.record,
        previous,
        TakeoverPath::Promoted,
    )
    .await?;
    state.metrics.first_touch("promoted");
    Ok(Some("promoted"))
}

/// Installs the records parked here by the owners of their keys under
/// `prior` for the keys this pod owns under `ring` (a ring that is not a
/// Switch: this pod skipped the Switch that moved them); returns how many.
pub(crate) async fn promote_from(state: &HandoffState, prior: &Ring, ring: &Ring) -> u64 {
    let pod = &state.pod;
    let moved_here = |key: &[u8], from: &str| {
        ring.owner(key).pod.name == *pod && {
            let before = &prior.owner(key).pod.name;
            before != pod && before == from
        }
    };
    let mut promoted = 0;
    for key in state.cache.finals(moved_here) {
        let _lock = state.keys.lock(&key).await;
        if state.store.version_of(&key).await.is_some() {
            continue;
        }
        let Some(parked) = state.cache.get(&key).filter(|c| c.last) else {
            continue;
        };
        if !moved_here(&key, &parked.from) {
            continue;
        }
        let previous = prior.owner(&key).pod.clone();
        if install(
            state,
            ring.version(),
            &key,
            &parked.record,
            &previous,
            TakeoverPath::Promoted,
        )
        .await
        .is_ok()
        {
            promoted += 1;
        }
    }
    promoted
}

/// True once this pod holds a ring newer than the Switch `ring` in which
/// `key` is no longer being taken over from `previous`: the operator settled
/// the Switch, so `previous` is fenced (drained or gone). The same Switch
/// published again at a higher version (its `ConfigMap` was recreated)
/// settles nothing.
fn fenced(state: &HandoffState, ring: &Ring, key: &[u8], previous: &Pod) -> bool {
    state.ring.latest().is_some_and(|latest| {
        latest.version() > ring.version()
            && plan::gained_from(&latest, &state.pod, key).is_none_or(|p| p.name != previous.name)
    })
}

#[allow(
    clippy::too_many_arguments,
    reason = "the first touch's state, passed down once"
)]
async fn transfer(
    state: &HandoffState,
    ring: &Ring,
    epoch: u64,
    key: &[u8],
    previous: &Pod,
    precopy: Option<Cached>,
    patience: Instant,
) -> Result<Option<TouchPath>, TouchError> {
    let known = precopy.as_ref().map(|c| c.record.version);
    let wants = [(Bytes::copy_from_slice(key), known)];
    let mut backoff = state.config.retry_backoff;
    let mut attempts = 0u32;
    loop {
        let now = Instant::now();
        // Checked before the first attempt too: a request admitted under
        // the Switch can get here after the ring that settles it, and by
        // then this pod may have served the key under that ring and written
        // it back; the previous owner's copy (kept for retries) is older.
        if fenced(state, ring, key, previous) {
            if attempts > 0 {
                tracing::warn!(
                    pod = %state.pod, previous = %previous.name,
                    "no transfer from the previous owner, which is fenced (the switch settled): loading cold"
                );
                state.metrics.rolled_forward("transfer");
                return cold(state, epoch, key, "cold", TakeoverPath::RolledForward).await;
            }
            return cold(state, epoch, key, "loaded", TakeoverPath::FencedLoad).await;
        }
        attempts += 1;
        if now >= patience {
            return Err(TouchError::Retry(format!(
                "waiting for pod {} to hand this session over",
                previous.name
            )));
        }
        let budget = state
            .config
            .transfer_timeout
            .min(patience - now)
            .max(Duration::from_millis(1));
        match state
            .client
            .transfer(previous, ring.version(), &wants, budget)
            .await
        {
            Ok(mut answers) => {
                let Some((_, answer)) = answers.pop() else {
                    continue;
                };
                match answer {
                    TransferAnswer::State(record) => {
                        state.metrics.records("transfer", "received", 1);
                        install(
                            state,
                            epoch,
                            key,
                            &record,
                            previous,
                            TakeoverPath::Transferred,
                        )
                        .await?;
                        state.metrics.first_touch("transferred");
                        return Ok(Some("transferred"));
                    }
                    TransferAnswer::Unchanged(version) => {
                        state.metrics.records("transfer", "received", 1);
                        match &precopy {
                            Some(c) if c.record.version == version => {
                                let path = TakeoverPath::Precopied;
                                install(state, epoch, key, &c.record, previous, path).await?;
                                state.metrics.first_touch("unchanged");
                                return Ok(Some("unchanged"));
                            }
                            _ => {
                                // Cannot happen with a consistent peer: it
                                // said "unchanged" for a version we do not
                                // hold. The state is gone from memory.
                                tracing::error!(
                                    pod = %state.pod, previous = %previous.name, version,
                                    "transfer answered unchanged for a version this pod does not hold"
                                );
                                state.metrics.rolled_forward("transfer");
                                let path = TakeoverPath::RolledForward;
                                return cold(state, epoch, key, "cold", path).await;
                            }
                        }
                    }
                    TransferAnswer::NotResident => {
                        return cold(state, epoch, key, "loaded", TakeoverPath::Absent).await;
                    }
                    TransferAnswer::Refused(reason, message) => {
                        tracing::debug!(
                            pod = %state.pod, previous = %previous.name,
                            reason = reason.as_str(), %message, "transfer refused; asking again"
                        );
                    }
                }
            }
            Err(error) => {
                if let HandoffError::Unauthorized { .. } = error {
                    tracing::error!(pod = %state.pod, %error, "handoff secret mismatch");
                } else {
                    // Even "connection refused" proves nothing: a partition,
                    // or the previous owner's process restarting in its pod.
                    tracing::debug!(pod = %state.pod, %error, "transfer failed; asking again");
                }
                state.metrics.call_error("transfer", error.metric_label());
            }
        }
        super::retry_pause(&mut backoff, patience).await;
    }
}

/// Installs a record this pod now owns, taken over by `path`. If the store
/// refuses it (full), the record is parked again so the next attempt can
/// install it: it was handed off, so nobody else has it.
pub(crate) async fn install(
    state: &HandoffState,
    epoch: u64,
    key: &[u8],
    record: &SessionRecord,
    previous: &Pod,
    path: TakeoverPath,
) -> Result<(), TouchError> {
    match state.store.install_record(record).await {
        Ok(_) => {
            state.take_over(epoch, key, path);
            Ok(())
        }
        Err(error) => {
            state.cache.insert(
                record.clone(),
                &previous.name,
                true,
                state.config.parked_ttl,
            );
            Err(TouchError::Retry(format!(
                "cannot install the session taken over: {error}"
            )))
        }
    }
}

/// Lets the store load `key` from the persistence: drops the pre-copy and any
/// tombstone this pod left on the key when it handed it off before.
async fn cold(
    state: &HandoffState,
    epoch: u64,
    key: &[u8],
    touch: TouchPath,
    path: TakeoverPath,
) -> Result<Option<TouchPath>, TouchError> {
    clear_tombstone(state, key).await;
    // Loaded now, under the key's lock, as the request would: a version of 0
    // means nothing was stored for the key anywhere (a new session), which
    // the report tells apart from a session that lost its previous owner's
    // answer. A failed load is the request's to report.
    let created = matches!(state.store.load_version(key).await, Ok(0));
    if state.take_over(epoch, key, path) && created {
        state.moved.created(epoch);
    }
    state.metrics.first_touch(touch);
    Ok(Some(touch))
}

/// Removes the tombstone this pod left on `key` when it handed the key off
/// earlier, if it still stands (the caller holds the key's lock). While a
/// tombstone stands nothing loads the key, so the key is not resident and
/// not loading: a hand-off to this pod with a zero lifetime then replaces
/// the tombstone with one that has already expired, and the next access
/// loads the key from the persistence.
pub(crate) async fn clear_tombstone(state: &HandoffState, key: &[u8]) {
    if !state.tombstones.take(key) {
        return;
    }
    if let Err(error) = state
        .store
        .hand_off(key, None, &state.pod, Duration::ZERO)
        .await
    {
        tracing::warn!(pod = %state.pod, %error, "cannot clear a tombstone");
    }
}
