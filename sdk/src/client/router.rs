//! [`Router`]: the service that sends each request to the owner of its key.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body;
use tower::{Service, ServiceExt as _};
use tracing::Instrument as _;

use super::body::RouterBody;
use super::layer::Config;
use super::limit::OwnerPermit;
use super::{RouteError, RouterLayer};
use crate::metrics::Side;
use crate::ring::{Ring, Slot, SlotState};
use crate::source::{RingSource, RingWatch};
use crate::{BoxError, headers};

/// Sends each request to the pod that owns its session key.
///
/// For every request: take the current ring (an `Arc` snapshot, no I/O),
/// extract the key, look up the owner (`ring.owner(key)`), rewrite the URI to
/// `http://<owner address><path?query>`, add
/// [`x-locus-ring-version`](crate::headers::RING_VERSION), and call the inner
/// service. If the pod answers 421 (it does not own the key under its newer
/// ring), wait up to `misdirect_wait` for the ring source to catch up, then
/// retry once at the owner (from the refreshed ring, or the pod's
/// [`x-locus-owner-address`](crate::headers::OWNER_ADDRESS) hint), if the
/// body is replayable and the retry budget allows.
///
/// Build it with [`RouterLayer`].
pub struct Router<S> {
    inner: S,
    /// Shared with every clone and every call in flight: a call takes one
    /// reference count, not a new watch receiver.
    ring: Arc<RingWatch>,
    config: Arc<Config>,
}

impl<S: Clone> Clone for Router<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            ring: Arc::clone(&self.ring),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("inner", &self.inner)
            .field("ring_version", &self.ring.version())
            .finish_non_exhaustive()
    }
}

impl<S> Router<S> {
    /// A router over `inner` with the default options; see [`RouterLayer`]
    /// for the others.
    pub fn new(inner: S, source: impl RingSource) -> Self {
        tower::Layer::layer(&RouterLayer::new(source), inner)
    }

    pub(crate) fn from_parts(inner: S, ring: RingWatch, config: Arc<Config>) -> Self {
        Self {
            inner,
            ring: Arc::new(ring),
            config,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the router.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The ring this router routes by.
    pub fn ring(&self) -> &RingWatch {
        &self.ring
    }
}

/// The owner a request is sent to, with its place in the owner's limit
/// (which also holds its address formatted as a URI authority).
struct Target {
    pod: String,
    address: SocketAddr,
    permit: OwnerPermit,
}

/// What a 421 answer said.
#[derive(Debug, Default)]
struct Hint {
    owner: Option<String>,
    address: Option<SocketAddr>,
    version: Option<u64>,
}

impl Hint {
    fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        Self {
            owner: text(&headers::OWNER).map(str::to_owned),
            address: text(&headers::OWNER_ADDRESS).and_then(|a| a.parse().ok()),
            version: text(&headers::RING_VERSION).and_then(|v| v.parse().ok()),
        }
    }
}

/// A slot that serves requests under `current`.
fn serving(slot: &Slot) -> bool {
    matches!(slot.state, SlotState::Active | SlotState::Leaving)
}

impl Config {
    /// Picks the owner of the request under `ring` and takes its place in
    /// the owner's limit. Runs in `call`, before any I/O.
    fn target(&self, ring: &Ring, parts: &Parts) -> Result<(Target, tracing::Span), RouteError> {
        let (slot, shard) = match self.key.extract(parts) {
            Some(key) if key.len() > self.max_key_bytes => {
                return Err(RouteError::KeyTooLong {
                    len: key.len(),
                    max: self.max_key_bytes,
                });
            }
            Some(key) => (ring.owner(&key), Some(ring.shard_of(&key))),
            None if self.require_key => return Err(RouteError::NoKey),
            None => {
                let slots = ring.slots();
                let start = self.next_member.fetch_add(1, Ordering::Relaxed);
                let slot = (0..slots.len())
                    .map(|i| &slots[(start + i) % slots.len()])
                    .find(|slot| serving(slot))
                    .unwrap_or(&slots[0]);
                (slot, None)
            }
        };
        let span = tracing::debug_span!(
            "locus.route",
            ring_version = ring.version(),
            shard,
            slot = slot.index,
            pod = %slot.pod.name,
        );
        if slot.state == SlotState::Unavailable {
            return Err(RouteError::OwnerUnavailable {
                slot: slot.index,
                pod: slot.pod.name.clone(),
            });
        }
        let target = self.reserve(slot.pod.name.clone(), slot.pod.address)?;
        Ok((target, span))
    }

    /// Takes a place in the limit of the owner `pod` at `address`.
    fn reserve(&self, pod: String, address: SocketAddr) -> Result<Target, RouteError> {
        match self.limits.try_acquire(address) {
            Some(permit) => Ok(Target {
                pod,
                address,
                permit,
            }),
            None => Err(RouteError::OwnerOverloaded {
                pod,
                address,
                limit: self.limits.limit(),
            }),
        }
    }

    fn record<T>(&self, started: Instant, result: &Result<T, RouteError>) {
        if let Some(metrics) = &self.metrics {
            let outcome = match result {
                Ok(_) => "ok",
                Err(error) => error.metric_label(),
            };
            metrics.request(Side::Client, outcome, started.elapsed());
        }
    }
}

/// The request for the owner at `authority` (its `ip:port`, formatted once
/// per owner by the limits): same method, path, query, headers and
/// extensions; absolute URI `http://<address><path?query>`.
fn owner_request<B>(
    mut parts: Parts,
    authority: &Authority,
    ring_version: u64,
    body: RouterBody<B>,
) -> Result<Request<RouterBody<B>>, RouteError> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(path);
    parts.uri = Uri::from_parts(uri).map_err(http::Error::from)?;
    parts
        .headers
        .insert(headers::RING_VERSION, HeaderValue::from(ring_version));
    Ok(Request::from_parts(parts, body))
}

fn upstream(target: &Target, error: impl Into<BoxError>) -> RouteError {
    RouteError::Upstream {
        pod: target.pod.clone(),
        address: target.address,
        source: error.into(),
    }
}

impl<S, B, RB> Service<Request<B>> for Router<S>
where
    S: Service<Request<RouterBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = RouteError;
    type Future = BoxFuture<'static, Result<Response<RB>, RouteError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RouteError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| RouteError::NotReady(e.into()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let routed = match self.ring.latest() {
            None => Err(RouteError::NoRing),
            Some(ring) => self
                .config
                .target(&ring, &parts)
                .map(|(target, span)| (ring.version(), target, span)),
        };
        let (version, target, span) = match routed {
            Ok(routed) => routed,
            Err(error) => {
                tracing::debug!(%error, "request refused before sending");
                let result = Err(error);
                self.config.record(started, &result);
                return Box::pin(std::future::ready(result));
            }
        };
        // The ready service serves this call; the clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        let ring = Arc::clone(&self.ring);
        Box::pin(
            async move {
                let timeout = config.timeout;
                let sent = send(inner, &config, &ring, parts, body, target, version);
                let result = match tokio::time::timeout(timeout, sent).await {
                    Ok(result) => result,
                    Err(_) => Err(RouteError::Timeout { after: timeout }),
                };
                if let Err(error) = &result {
                    tracing::debug!(%error, "request failed");
                }
                config.record(started, &result);
                result
            }
            .instrument(span),
        )
    }
}

/// Sends the request to its owner and follows one 421.
async fn send<S, B, RB>(
    mut inner: S,
    config: &Config,
    ring: &RingWatch,
    parts: Parts,
    body: B,
    target: Target,
    version: u64,
) -> Result<Response<RB>, RouteError>
where
    S: Service<Request<RouterBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (body, replay) = RouterBody::prepare(body, config.max_replay_bytes)
        .await
        .map_err(RouteError::Body)?;
    // Only a replayable body can be retried: only then keep the head.
    let retry_parts = replay.as_ref().map(|_| parts.clone());
    config.budget.deposit();
    let request = owner_request(parts, target.permit.authority(), version, body)?;
    let response = inner
        .call(request)
        .await
        .map_err(|e| upstream(&target, e))?;
    if response.status() != StatusCode::MISDIRECTED_REQUEST {
        return Ok(response);
    }

    // The pod holds a ring in which it does not own the key.
    if let Some(metrics) = &config.metrics {
        metrics.misdirected_received();
    }
    let hint = Hint::from_headers(response.headers());
    drop(response);
    tracing::debug!(?hint, "421 from {}", target.pod);
    let misdirected = |pod: &str, hint: &Hint, reason| RouteError::Misdirected {
        pod: pod.to_owned(),
        owner: hint.owner.clone(),
        ring_version: hint.version,
        reason,
    };
    let (Some(replay), Some(parts)) = (replay, retry_parts) else {
        return Err(misdirected(
            &target.pod,
            &hint,
            "the request body cannot be replayed",
        ));
    };
    if !config.budget.withdraw() {
        return Err(misdirected(&target.pod, &hint, "retry budget exhausted"));
    }
    // Wait (bounded, on the source's change notification) for a ring at
    // least as new as the pod's, and route by it; else trust the hint.
    let refreshed = match hint.version {
        Some(v) => ring.wait_for_version(v, config.misdirect_wait).await,
        None => None,
    };
    let key = config.key.extract(&parts);
    let (pod, address, version) = match (refreshed, key) {
        (Some(ring), Some(key)) => {
            let owner = ring.owner(&key);
            if owner.state == SlotState::Unavailable {
                return Err(RouteError::OwnerUnavailable {
                    slot: owner.index,
                    pod: owner.pod.name.clone(),
                });
            }
            (owner.pod.name.clone(), owner.pod.address, ring.version())
        }
        _ => match hint.address {
            Some(address) => (hint.owner.clone().unwrap_or_default(), address, version),
            None => {
                return Err(misdirected(
                    &target.pod,
                    &hint,
                    "no owner hint and no newer ring",
                ));
            }
        },
    };
    drop(target);
    let target = config.reserve(pod, address)?;
    tracing::debug!(pod = %target.pod, %address, version, "retrying at the owner");
    let request = owner_request(
        parts,
        target.permit.authority(),
        version,
        RouterBody::buffered(replay),
    )?;
    let response = inner
        .ready()
        .await
        .map_err(|e| RouteError::NotReady(e.into()))?
        .call(request)
        .await
        .map_err(|e| upstream(&target, e))?;
    if response.status() == StatusCode::MISDIRECTED_REQUEST {
        if let Some(metrics) = &config.metrics {
            metrics.misdirected_received();
        }
        let hint = Hint::from_headers(response.headers());
        return Err(misdirected(
            &target.pod,
            &hint,
            "misdirected again after following the hint",
        ));
    }
    Ok(response)
}
