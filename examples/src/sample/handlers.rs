//! The sample's HTTP handlers and how each refusal is answered.
//!
//! Errors are JSON `{"error": "<label>", "message": "<text>"}` with the
//! status of their kind; transient refusals carry `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use locus::StoreError;
use locus::headers;
use serde::Serialize;

use super::{AppState, Backend, CACHE_HEADER, LedgerStore};
use crate::ledger::{AppendAnswer, Appended, Event, LedgerError, SessionView};
use crate::postgres::PgError;

/// How a session was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    /// Resident in memory.
    Warm,
    /// Not resident: loaded (or created) for this request.
    Cold,
    /// Read from PostgreSQL (stateless mode).
    Stateless,
}

impl Cache {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Cold => "cold",
            Self::Stateless => "stateless",
        }
    }
}

/// A refused request.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    label: &'static str,
    message: String,
    retry_after: Option<Duration>,
    owner: Option<String>,
    /// The owner's `ip:port` and the ring version saying so, when known.
    owner_hint: Option<(String, u64)>,
}

impl Refusal {
    fn new(status: StatusCode, label: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            label,
            message: message.into(),
            retry_after: None,
            owner: None,
            owner_hint: None,
        }
    }

    /// For a session handed to another pod: adds that pod's address from
    /// `state`'s ring, so a router whose ring lags can follow the 421.
    fn with_owner_address(mut self, state: &AppState) -> Self {
        let (Some(owner), Some(ring)) = (&self.owner, &state.ring) else {
            return self;
        };
        let Some(ring) = ring.latest() else {
            return self;
        };
        self.owner_hint = ring
            .slots()
            .iter()
            .map(|slot| &slot.pod)
            .find(|pod| pod.name == *owner)
            .map(|pod| (pod.address.to_string(), ring.version()));
        self
    }

    pub(crate) fn label(&self) -> &'static str {
        self.label
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let owner = match &error {
            StoreError::Moved { owner, .. } => Some(owner.clone()),
            _ => None,
        };
        Self {
            status: error.status(),
            label: error.metric_label(),
            message: error.to_string(),
            retry_after: error.retry_after(),
            owner,
            owner_hint: None,
        }
    }
}

impl From<LedgerError> for Refusal {
    fn from(error: LedgerError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            error.metric_label(),
            error.to_string(),
        )
    }
}

impl From<PgError> for Refusal {
    fn from(error: PgError) -> Self {
        tracing::warn!(%error, "PostgreSQL request failed");
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                error.metric_label(),
                error.to_string(),
            )
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.label,
            message: &self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if let Some(owner) = self.owner.and_then(|o| HeaderValue::from_str(&o).ok()) {
            response.headers_mut().insert(headers::OWNER, owner);
        }
        if let Some((address, version)) = self.owner_hint
            && let Ok(address) = HeaderValue::from_str(&address)
        {
            let map = response.headers_mut();
            map.insert(headers::OWNER_ADDRESS, address);
            map.insert(headers::RING_VERSION, HeaderValue::from(version));
        }
        response
    }
}

/// Checks that the path's id is the session key of the request.
fn check_key(state: &AppState, id: &str, request_headers: &HeaderMap) -> Result<(), Refusal> {
    if id.len() > state.max_key_bytes {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "key_too_long",
            format!(
                "session id is {} bytes, more than {}",
                id.len(),
                state.max_key_bytes
            ),
        ));
    }
    match request_headers.get(headers::SESSION) {
        Some(key) if key.as_bytes() == id.as_bytes() => Ok(()),
        Some(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "key_mismatch",
            format!(
                "the path's session id must equal the {} header",
                headers::SESSION
            ),
        )),
        None => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "no_key",
            format!("the {} header is required", headers::SESSION),
        )),
    }
}

/// The answer to a session request: the body with how the session was
/// found, or the refusal with the owner's address when known.
fn respond(state: &AppState, outcome: Result<(Cache, impl Serialize), Refusal>) -> Response {
    match outcome {
        Ok((cache, body)) => {
            state.sample.cache(cache);
            let mut response = axum::Json(body).into_response();
            response
                .headers_mut()
                .insert(CACHE_HEADER, HeaderValue::from_static(cache.as_str()));
            response
        }
        Err(refusal) => refusal.with_owner_address(state).into_response(),
    }
}

/// Whether the session of `key` is resident, without loading it.
async fn residency(store: &LedgerStore, key: &[u8]) -> Cache {
    if store.version_of(key).await.is_some() {
        Cache::Warm
    } else {
        Cache::Cold
    }
}

/// `POST /sessions/{id}/events`.
pub(crate) async fn append(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = append_inner(&state, &id, &request_headers, body).await;
    let label = match &outcome {
        Ok((_, answer)) if answer.applied => "applied",
        Ok(_) => "duplicate",
        Err(refusal) => refusal.label(),
    };
    state.sample.append(label);
    respond(&state, outcome)
}

async fn append_inner(
    state: &AppState,
    id: &str,
    request_headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Cache, AppendAnswer), Refusal> {
    check_key(state, id, request_headers)?;
    stall(state, request_headers).await;
    let body = body.map_err(|rejection| {
        let label = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        Refusal::new(rejection.status(), label, rejection.body_text())
    })?;
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    event.validate(&state.rules)?;
    let seq = event.seq;
    let key = id.as_bytes();
    match &state.backend {
        Backend::Memory(store) => {
            let cache = residency(store, key).await;
            let rules = state.rules;
            let applied = store
                .try_update(key, |ledger| match ledger.append(event, &rules)? {
                    Appended::Applied => Ok((ledger.events, ledger.total)),
                    // Nothing changed: refuse the commit so the version stays.
                    Appended::Duplicate => Err(None),
                })
                .await?;
            let answer = match applied {
                Ok(done) => AppendAnswer {
                    session: id.to_owned(),
                    version: done.version,
                    epoch: done.epoch,
                    applied: true,
                    seq,
                    events: done.value.0,
                    total: done.value.1,
                },
                Err(Some(refused)) => return Err(refused.into()),
                Err(None) => {
                    let current = store.read(key, |l| (l.events, l.total)).await?;
                    AppendAnswer {
                        session: id.to_owned(),
                        version: current.version,
                        epoch: current.epoch,
                        applied: false,
                        seq,
                        events: current.value.0,
                        total: current.value.1,
                    }
                }
            };
            Ok((cache, answer))
        }
        Backend::Stateless { pg, timeout } => {
            let done = tokio::time::timeout(*timeout, pg.append(key, event, &state.rules))
                .await
                .map_err(|_| pg_timeout(*timeout))???;
            Ok((
                Cache::Stateless,
                AppendAnswer {
                    session: id.to_owned(),
                    version: done.version,
                    epoch: 0,
                    applied: done.appended == Appended::Applied,
                    seq,
                    events: done.ledger.events,
                    total: done.ledger.total,
                },
            ))
        }
    }
}

/// The test stall ([`SampleConfig::test_stall`](super::SampleConfig::test_stall)):
/// waits as long as the request's [`STALL_HEADER`](super::STALL_HEADER) says.
async fn stall(state: &AppState, request_headers: &HeaderMap) {
    if !state.test_stall {
        return;
    }
    let Some(ms) = request_headers
        .get(super::STALL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let wait = Duration::from_millis(ms).min(super::MAX_STALL);
    tracing::info!(?wait, "test stall: the request waits after admission");
    tokio::time::sleep(wait).await;
}

fn pg_timeout(after: Duration) -> Refusal {
    Refusal {
        retry_after: Some(Duration::from_secs(1)),
        ..Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pg_timeout",
            format!("PostgreSQL did not answer within {after:?}"),
        )
    }
}

/// `GET /sessions/{id}`.
pub(crate) async fn read(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    let outcome = read_inner(&state, &id, &request_headers).await;
    state.sample.read(match &outcome {
        Ok(_) => "ok",
        Err(refusal) => refusal.label(),
    });
    respond(&state, outcome)
}

async fn read_inner(
    state: &AppState,
    id: &str,
    request_headers: &HeaderMap,
) -> Result<(Cache, SessionView), Refusal> {
    check_key(state, id, request_headers)?;
    let key = id.as_bytes();
    match &state.backend {
        Backend::Memory(store) => {
            let cache = residency(store, key).await;
            let view = store
                .read(key, |ledger| SessionView::new(id, 0, ledger))
                .await?;
            let mut body = view.value;
            body.version = view.version;
            Ok((cache, body))
        }
        Backend::Stateless { pg, timeout } => {
            let loaded = tokio::time::timeout(*timeout, pg.load(key))
                .await
                .map_err(|_| pg_timeout(*timeout))??;
            let loaded = loaded.unwrap_or_default();
            Ok((
                Cache::Stateless,
                SessionView::new(id, loaded.stamp.version, &loaded.value),
            ))
        }
    }
}

/// `GET /healthz`: the process runs.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, String) {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if let Some(readiness) = &state.readiness {
        // A Locus member: the SDK's probe (ring held, or none published).
        return readiness.check().await;
    }
    let (Backend::Memory(_), Some(ring)) = (&state.backend, &state.open_ring) else {
        // Stateless: PostgreSQL answered at start; nothing else to wait for.
        return (StatusCode::OK, "ready (stateless)\n".into());
    };
    if let Some(version) = locus::RingSource::watch(ring.as_ref()).version() {
        return (StatusCode::OK, format!("ready, ring version {version}\n"));
    }
    // No ring held. The operator publishes the first ring only once the
    // first pods are ready, so while no ring exists at all, say ready.
    let exists = tokio::time::timeout(Duration::from_secs(2), ring.config_map_exists()).await;
    match exists {
        Ok(Some(Ok(false))) => (
            StatusCode::OK,
            "ready, no ring published yet (the operator publishes it once its pods are ready)\n"
                .into(),
        ),
        Ok(Some(Ok(true))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ring published but not loaded yet\n".into(),
        ),
        Ok(Some(Err(error))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no ring yet; cannot check the ring ConfigMap: {error}\n"),
        ),
        Ok(None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no ring loaded yet\n".into(),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no ring yet; the API server did not answer in time\n".into(),
        ),
    }
}

/// `GET /metrics`: the one registry the SDK, the store, the member and the
/// sample register into.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let page = state.metrics.encode();
    ([(header::CONTENT_TYPE, locus::Metrics::CONTENT_TYPE)], page).into_response()
}

/// Stateless mode: stamps `x-locus-pod` on every session answer, as the
/// ownership layer does in memory mode.
pub(crate) async fn stamp_pod(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(headers::POD, state.pod.clone());
    response
}
