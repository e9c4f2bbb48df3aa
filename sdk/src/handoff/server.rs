//! [`HandoffService`]: the answering side of the handoff endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{StreamExt as _, stream};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use tower::Service;

use super::keeping::CacheInsert;
use super::wire::{self, AckOutcome, Frame, Refusal, WireRecord};
use super::{
    HANDOFF_PATH_PREFIX, HandoffBody, HandoffState, PRECOPY_PATH, PUSH_PATH, PrecopyRequest,
    TRANSFER_PATH,
};
use crate::ring::{MAX_SHARDS, Ring, ShardCount};
use crate::store::{HandOff, Installed, SessionRecord, StoreError};
use crate::{BoxError, headers};

/// Largest pre-copy request body (a shard list).
const MAX_PRECOPY_REQUEST: usize = 1 << 20;

/// The handoff endpoints of one pod, as a tower service; see the
/// [module docs](super). Built by
/// [`Member`](crate::server::session::Member), served by its layer under
/// [`HANDOFF_PATH_PREFIX`].
#[derive(Clone)]
pub struct HandoffService {
    state: Arc<HandoffState>,
}

impl std::fmt::Debug for HandoffService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandoffService")
            .field("pod", &self.state.pod)
            .finish_non_exhaustive()
    }
}

fn full(bytes: impl Into<Bytes>) -> HandoffBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn plain(
    state: &HandoffState,
    status: StatusCode,
    message: impl Into<String>,
) -> Response<HandoffBody> {
    let mut response = Response::new(full(message.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(headers::POD, state.pod_header.clone());
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let seconds = state.config.retry_after.as_secs().max(1);
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn frames_response(state: &HandoffState, body: HandoffBody) -> Response<HandoffBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(headers::POD, state.pod_header.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(wire::CONTENT_TYPE));
    response
}

/// The asking pod and its ring version, from the request headers.
fn asker(parts: &http::request::Parts) -> Option<(String, u64)> {
    let pod = parts.headers.get(headers::POD)?.to_str().ok()?;
    let version = parts
        .headers
        .get(headers::RING_VERSION)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (!pod.is_empty()).then(|| (pod.to_owned(), version))
}

impl HandoffService {
    pub(crate) fn new(state: Arc<HandoffState>) -> Self {
        Self { state }
    }
}

impl<B> Service<Request<B>> for HandoffService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<HandoffBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<HandoffBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move { Ok(handle(state, request).await) })
    }
}

async fn handle<B>(state: Arc<HandoffState>, request: Request<B>) -> Response<HandoffBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let known = [PRECOPY_PATH, TRANSFER_PATH, PUSH_PATH].contains(&path);
    if !known {
        return plain(
            &state,
            StatusCode::NOT_FOUND,
            format!("no handoff endpoint at {path} (this pod speaks {HANDOFF_PATH_PREFIX})"),
        );
    }
    if parts.method != Method::POST {
        let mut response = plain(&state, StatusCode::METHOD_NOT_ALLOWED, "use POST");
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if !state.secret.verify(parts.headers.get(AUTHORIZATION)) {
        state.metrics.refused("unauthorized");
        tracing::warn!(pod = %state.pod, path, "handoff request with a missing or wrong secret");
        let mut response = plain(
            &state,
            StatusCode::UNAUTHORIZED,
            "missing or wrong handoff secret",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let Some((from, version)) = asker(&parts) else {
        state.metrics.refused("bad_request");
        return plain(
            &state,
            StatusCode::BAD_REQUEST,
            "x-locus-pod and x-locus-ring-version are required",
        );
    };
    let limit = match path {
        PRECOPY_PATH => MAX_PRECOPY_REQUEST,
        TRANSFER_PATH => {
            state.config.max_transfer_keys * (wire::FRAME_HEADER_BYTES + 2 + wire::MAX_WIRE_KEY + 9)
                + 13
        }
        _ => state
            .config
            .batch_bytes
            .max(state.config.max_frame_bytes)
            .saturating_mul(2),
    };
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                state.metrics.refused("too_large");
                plain(
                    &state,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("handoff request body over {limit} bytes"),
                )
            } else {
                plain(
                    &state,
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {error}"),
                )
            };
        }
    };
    if path == PRECOPY_PATH {
        return precopy(&state, &from, &bytes);
    }
    let frames = match wire::decode_body(&bytes, state.config.max_frame_bytes) {
        Ok(frames) => frames,
        Err(error) => {
            state.metrics.refused("bad_request");
            return plain(
                &state,
                StatusCode::BAD_REQUEST,
                format!("bad frames: {error}"),
            );
        }
    };
    if path == TRANSFER_PATH {
        transfer(&state, &from, version, frames).await
    } else {
        push(&state, &from, version, frames).await
    }
}

/// Streams the resident sessions of the asked shards, in chunks of at most
/// `batch_records` records / `batch_bytes` bytes, through a channel of two
/// chunks: the producer never runs ahead of the network by more than that.
fn precopy(state: &Arc<HandoffState>, from: &str, body: &[u8]) -> Response<HandoffBody> {
    let request: PrecopyRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            state.metrics.refused("bad_request");
            return plain(
                state,
                StatusCode::BAD_REQUEST,
                format!("bad pre-copy request: {error}"),
            );
        }
    };
    let Ok(shards) = ShardCount::new(request.shard_count) else {
        state.metrics.refused("bad_request");
        return plain(
            state,
            StatusCode::BAD_REQUEST,
            format!("shard count must be a power of two up to {MAX_SHARDS}"),
        );
    };
    let mut wanted = vec![false; shards.len()];
    for &shard in &request.shards {
        let Some(slot) = wanted.get_mut(shard as usize) else {
            state.metrics.refused("bad_request");
            return plain(
                state,
                StatusCode::BAD_REQUEST,
                format!("shard {shard} out of range"),
            );
        };
        *slot = true;
    }
    tracing::debug!(pod = %state.pod, %from, shards = request.shards.len(), "pre-copy asked");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(2);
    let producer = Arc::clone(state);
    tokio::spawn(async move {
        let state = producer;
        let mut chunk = BytesMut::new();
        let (mut frames, mut in_chunk) = (0u64, 0usize);
        // Only the asked shards' keys, from the store's shard index.
        for (_, key) in state.store.keys_in_shards(shards, &wanted).await {
            let record = match state.store.export(&key).await {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "pre-copy: cannot export a session; skipped");
                    continue;
                }
            };
            let frame = Frame::Record(WireRecord {
                record,
                last: false,
            });
            if frame.encode(&mut chunk).is_err() {
                continue;
            }
            frames += 1;
            in_chunk += 1;
            if in_chunk >= state.config.batch_records || chunk.len() >= state.config.batch_bytes {
                state.metrics.records("precopy", "sent", in_chunk as u64);
                in_chunk = 0;
                if tx.send(Ok(chunk.split().freeze())).await.is_err() {
                    return;
                }
            }
        }
        state.metrics.records("precopy", "sent", in_chunk as u64);
        if (Frame::End { frames }).encode(&mut chunk).is_ok() {
            let _ = tx.send(Ok(chunk.freeze())).await;
        }
    });
    let chunks =
        stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|chunk| chunk.map(http_body::Frame::data));
    frames_response(state, StreamBody::new(chunks).boxed_unsync())
}

fn refusal_of(error: &StoreError) -> Refusal {
    match error.status() {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Refusal::Busy,
        _ => Refusal::Failed,
    }
}

/// This pod's ring once it is at least `version`, waiting a bounded time.
async fn ring_at_least(state: &HandoffState, version: u64) -> Option<Arc<Ring>> {
    state
        .ring
        .wait_for_version(version, state.config.ring_wait)
        .await
}

async fn transfer(
    state: &Arc<HandoffState>,
    from: &str,
    version: u64,
    frames: Vec<Frame>,
) -> Response<HandoffBody> {
    if frames.len() > state.config.max_transfer_keys {
        state.metrics.refused("too_large");
        return plain(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("more than {} keys", state.config.max_transfer_keys),
        );
    }
    let mut wants = Vec::with_capacity(frames.len());
    for frame in frames {
        let Frame::Want { key, known } = frame else {
            state.metrics.refused("bad_request");
            return plain(
                state,
                StatusCode::BAD_REQUEST,
                "a transfer takes want frames",
            );
        };
        wants.push((key, known));
    }
    let ring = ring_at_least(state, version).await;
    let mut answers = Vec::with_capacity(wants.len());
    for (key, known) in wants {
        answers.push(transfer_one(state, ring.as_deref(), from, version, key, known).await);
    }
    match wire::encode_body(&answers) {
        Ok(bytes) => frames_response(state, full(bytes)),
        Err(error) => plain(state, StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

/// Hands one key over to `from` if `from` owns it under this pod's ring.
async fn transfer_one(
    state: &HandoffState,
    ring: Option<&Ring>,
    from: &str,
    version: u64,
    key: Bytes,
    known: Option<u64>,
) -> Frame {
    let refuse = |reason: Refusal, message: String| {
        state.metrics.refused(reason.as_str());
        Frame::Refused {
            key: key.clone(),
            reason,
            message,
        }
    };
    if let Some(ring) = ring {
        let owner = ring.owner(&key);
        if owner.pod.name != from {
            return refuse(
                Refusal::NotOwner,
                format!(
                    "under ring version {} the owner is {}, not {from}",
                    ring.version(),
                    owner.pod.name
                ),
            );
        }
    } else {
        // This pod's ring is behind the asker's (its ring source is cut off
        // from the API server, or slow). A session resident here (or handed
        // off already) is the latest state of the key: hand it over on the
        // asker's word rather than keep the new owner answering 503. "Not
        // resident" cannot be answered without the ring: the key may have
        // come to this pod in a switch it has not seen yet.
        let held =
            state.outbox.get(&key, from).is_some() || state.store.version_of(&key).await.is_some();
        if !held {
            return refuse(
                Refusal::RingBehind,
                format!(
                    "pod {} has not reached ring version {version} yet",
                    state.pod
                ),
            );
        }
        tracing::info!(
            pod = %state.pod, %from, version,
            "ring behind the asker: handing a resident session over on its word"
        );
    }
    let _lock = state.keys.lock(&key).await;
    if let Some(record) = state.outbox.get(&key, from) {
        // Handed off already (a retry, or the drain got there first).
        state.metrics.records("transfer", "sent", 1);
        return answer(key, known, record);
    }
    let ttl = state.config.tombstone_ttl;
    state.tombstones.handed(&key, ttl);
    // Always the state (not "unchanged" from the store): it is written
    // through before the answer leaves, see `write_through`.
    match state.store.hand_off(&key, None, from, ttl).await {
        Ok(HandOff::State(record)) => {
            state.metrics.records("transfer", "sent", 1);
            // Into the outbox before anything is awaited: the session has
            // left the store, and this handler is dropped if the asker gives
            // up (its call timed out, its connection closed) while the
            // record is written through. Kept here, a retry still gets the
            // record and the drain still owes it.
            let kept =
                state
                    .outbox
                    .insert(&key, record.clone(), from, version, state.config.outbox_ttl);
            if !kept {
                tracing::warn!(pod = %state.pod, "outbox full: a transfer answer is not kept for retries");
            }
            write_through(state, &record).await;
            answer(key, known, record)
        }
        Ok(HandOff::Unchanged { version: v }) => {
            // Not asked for (no known version was passed); answered as such.
            state.metrics.records("transfer", "sent", 1);
            Frame::Unchanged { key, version: v }
        }
        Ok(HandOff::NotResident) => Frame::NotResident { key },
        Err(error) => refuse(refusal_of(&error), error.to_string()),
    }
}

/// The answer for a key handed off as `record`: "unchanged" if the asker
/// pre-copied that version, else the state.
fn answer(key: Bytes, known: Option<u64>, record: SessionRecord) -> Frame {
    if known == Some(record.version) {
        Frame::Unchanged {
            key,
            version: record.version,
        }
    } else {
        Frame::Record(WireRecord { record, last: true })
    }
}

/// A transfer answer has no acknowledgement: if it is lost in transit (the
/// asker's call timed out) and this pod is fenced before the asker asks
/// again, the asker loads the key from the persistence. So a changed session
/// is written through before its hand-off is answered (conditionally: the
/// new owner's later writes win). The write is counted as owed before it
/// starts and the count taken back once it succeeded, so a failed write, or
/// one whose handler was dropped half-way, is remembered, and the drain
/// writes the outbox through again before it reports drained.
async fn write_through(state: &HandoffState, record: &SessionRecord) {
    if !record.dirty {
        return;
    }
    state
        .unpersisted
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    match state.store.write_record(record).await {
        Ok(_) => state.settle_unpersisted(1),
        Err(error) => {
            tracing::warn!(pod = %state.pod, %error, "cannot write a session handed off through; the drain retries");
        }
    }
}

async fn push(
    state: &Arc<HandoffState>,
    from: &str,
    version: u64,
    frames: Vec<Frame>,
) -> Response<HandoffBody> {
    let mut records = Vec::with_capacity(frames.len());
    for frame in frames {
        let Frame::Record(WireRecord { record, last: true }) = frame else {
            state.metrics.refused("bad_request");
            return plain(
                state,
                StatusCode::BAD_REQUEST,
                "a push takes final record frames",
            );
        };
        records.push(record);
    }
    state
        .metrics
        .records("push", "received", records.len() as u64);
    let ring = ring_at_least(state, version)
        .await
        .or_else(|| state.ring.latest());
    // The Switch the push belongs to, however many times it was published.
    let epoch = state.epoch(version);
    let mut acks = Vec::with_capacity(records.len());
    for record in records {
        let _lock = state.keys.lock(&record.key).await;
        let owned = ring
            .as_ref()
            .is_some_and(|ring| ring.owner(&record.key).pod.name == state.pod);
        let outcome = if owned && state.settled.contains(epoch, &record.key) {
            // Taken over already in this switch (maybe evicted since, with
            // its newer state written back): this copy is not newer.
            AckOutcome::Stale
        } else if owned {
            match state.store.install_record(&record).await {
                Ok(Installed::Inserted | Installed::Replaced { .. }) => {
                    let path = crate::progress::TakeoverPath::Pushed;
                    state.take_over(epoch, &record.key, path);
                    AckOutcome::Installed
                }
                Ok(Installed::Stale { .. }) => {
                    state.settled.mark(epoch, &record.key);
                    AckOutcome::Stale
                }
                Err(error) => {
                    tracing::warn!(pod = %state.pod, %from, %error, "pushed session refused");
                    AckOutcome::Refused
                }
            }
        } else {
            match state
                .cache
                .insert(record.clone(), from, true, state.config.parked_ttl)
            {
                CacheInsert::Kept | CacheInsert::Superseded => AckOutcome::Parked,
                CacheInsert::Full => AckOutcome::Refused,
            }
        };
        acks.push(Frame::Ack {
            key: record.key,
            outcome,
        });
    }
    match wire::encode_body(&acks) {
        Ok(bytes) => frames_response(state, full(bytes)),
        Err(error) => plain(state, StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use tokio::sync::watch;

    use super::*;
    use crate::handoff::{HandoffConfig, HandoffMetrics, HandoffSecret, HttpTransport};
    use crate::ring::{Assignment, Pod, RingParts, Slot, SlotState, Transition};
    use crate::source::{RingSource as _, StaticRingSource};
    use crate::store::{JsonCodec, Persistence, SessionStore, Stamp, Stored, Versioned};

    /// A persistence whose stores wait until `open` is set, and count
    /// what they applied.
    #[derive(Clone)]
    struct Held {
        open: watch::Sender<bool>,
        started: watch::Sender<usize>,
        rows: Arc<Mutex<Vec<Stamp>>>,
    }

    impl Persistence<String> for Held {
        type Error = Infallible;

        async fn load(&self, _key: &[u8]) -> Result<Option<Stored<String>>, Infallible> {
            Ok(None)
        }

        async fn store(
            &self,
            _key: &[u8],
            stamp: Stamp,
            _value: &String,
        ) -> Result<(), Infallible> {
            self.started.send_modify(|n| *n += 1);
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
            self.rows.lock().unwrap().push(stamp);
            Ok(())
        }
    }

    fn pod(name: &str, last: u8) -> Pod {
        Pod {
            name: name.into(),
            uid: format!("uid-{name}"),
            address: std::net::SocketAddr::from(([127, 0, 0, last], 9)),
        }
    }

    /// Two slots; slot 1 (`pod-b`) owns every shard.
    fn ring() -> Ring {
        let slot = |index: u16, pod| Slot {
            index,
            pod,
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        };
        Ring::new(RingParts {
            namespace: "ns".into(),
            service: "svc".into(),
            version: 5,
            shards: ShardCount::new(4).unwrap(),
            vnodes: 8,
            slots: vec![slot(0, pod("pod-a", 1)), slot(1, pod("pod-b", 2))],
            current: Assignment::new(vec![1; 4]).unwrap(),
            transition: Transition::Stable,
        })
        .unwrap()
    }

    /// A transfer handler dropped while it writes its answer through (the
    /// asker gave up) must leave the record in the outbox, owed: the next
    /// try gets the state, not "not resident".
    #[tokio::test]
    async fn a_transfer_dropped_while_written_through_keeps_its_record() {
        let held = Held {
            open: watch::Sender::new(false),
            started: watch::Sender::new(0),
            rows: Arc::default(),
        };
        let store = SessionStore::builder(JsonCodec, String::len)
            .persistence(held.clone())
            .build()
            .unwrap();
        store
            .install(b"k", Versioned::new(3, "state".into()))
            .await
            .unwrap();
        let source = StaticRingSource::with_ring(ring());
        let state = HandoffState::new(
            "pod-a".into(),
            HeaderValue::from_static("pod-a"),
            source.watch(),
            Arc::new(store.clone()),
            HandoffSecret::new("a-test-secret-of-some-length").unwrap(),
            Arc::new(HttpTransport::default()),
            HandoffConfig::default(),
            HandoffMetrics::default(),
        );
        let ring = ring();
        let key = Bytes::from_static(b"k");
        let first = transfer_one(&state, Some(&ring), "pod-b", 5, key.clone(), None);
        let mut first = Box::pin(first);
        // Run it until its write-through waits on the persistence, then drop it.
        let mut started = held.started.subscribe();
        tokio::select! {
            _ = &mut first => panic!("the write-through was not held"),
            _ = started.wait_for(|n| *n == 1) => {}
        }
        drop(first);
        assert_eq!(
            store.version_of(b"k").await,
            None,
            "the session left the store"
        );
        let kept = state.outbox.get(b"k", "pod-b").expect("the record is owed");
        assert_eq!(kept.version, 3);
        assert_eq!(state.unpersisted.load(Ordering::Acquire), 1);
        // The asker tries again: it gets the state.
        held.open.send_replace(true);
        match transfer_one(&state, Some(&ring), "pod-b", 5, key, None).await {
            Frame::Record(WireRecord { record, .. }) => assert_eq!(record.version, 3),
            other => panic!("expected the record, got {other:?}"),
        }
    }
}
