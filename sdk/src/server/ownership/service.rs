//! [`Ownership`]: the service that serves, forwards or redirects each request.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Either};
use tower::Service;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::forward::ForwardError;
use super::layer::Shared;
use super::response::{self, LocalBody};
use super::{MissingKey, Mode};
use crate::metrics::Side;
use crate::ring::{Pod, Ring, SlotState};
use crate::{BoxError, headers};

/// Body of the ownership layer's responses: the inner service's own
/// (`Left`), or one the layer produced or relayed from the owner (`Right`).
pub type OwnershipBody<B> = Either<B, LocalBody>;

/// The ownership check in front of a service; built by
/// [`OwnershipLayer`](super::OwnershipLayer).
pub struct Ownership<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Ownership<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Ownership<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ownership")
            .field("inner", &self.inner)
            .field("pod", &self.shared.pod)
            .finish_non_exhaustive()
    }
}

impl<S> Ownership<S> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the layer.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What to do with one request.
enum Decision {
    /// Call the inner service; the label says why.
    Serve(&'static str),
    /// Answer with this response.
    Respond(Response<LocalBody>, &'static str),
    /// Forward to the owner.
    Forward { owner: Pod, version: u64 },
    /// The caller's ring is newer: wait for ours to reach this version.
    AwaitRing(u64),
}

impl Shared {
    fn record(&self, outcome: &'static str, started: Instant) {
        if let Some(metrics) = &self.metrics {
            metrics.request(Side::Server, outcome, started.elapsed());
            match outcome {
                "misdirected" => metrics.misdirected_sent(),
                "forwarded" => metrics.forwarded(),
                _ => {}
            }
        }
    }

    fn misdirected(&self, owner: Option<&Pod>, version: Option<u64>) -> Decision {
        Decision::Respond(
            response::misdirected(&self.pod_header, &self.pod, owner, version),
            "misdirected",
        )
    }

    /// The ownership decision, without I/O. `may_wait`: whether a caller's
    /// newer ring may make us wait for ours (once per request).
    fn decide(
        &self,
        parts: &Parts,
        ring: Option<&Ring>,
        may_wait: bool,
        span: &tracing::Span,
    ) -> Decision {
        let path = parts.uri.path();
        if path.starts_with(&self.reserved_prefix)
            || self.pass_through_paths.iter().any(|p| p == path)
        {
            return Decision::Serve("passthrough");
        }
        if let Some(target) = parts.headers.get(headers::FANOUT) {
            return if target.as_bytes() == self.pod.as_bytes() {
                Decision::Serve("fanout")
            } else {
                self.misdirected(None, ring.map(Ring::version))
            };
        }
        let Some(key) = self.key.extract(parts) else {
            return match self.missing_key {
                MissingKey::PassThrough => Decision::Serve("passthrough"),
                MissingKey::Reject => Decision::Respond(
                    response::plain(
                        StatusCode::BAD_REQUEST,
                        &self.pod_header,
                        "the request has no session key".to_owned(),
                    ),
                    "no_key",
                ),
            };
        };
        if key.len() > self.max_key_bytes {
            return Decision::Respond(
                response::plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &self.pod_header,
                    format!(
                        "session key is {} bytes, more than the limit of {}",
                        key.len(),
                        self.max_key_bytes
                    ),
                ),
                "key_too_long",
            );
        }
        let Some(ring) = ring else {
            return Decision::Respond(
                response::unavailable(
                    &self.pod_header,
                    self.retry_after,
                    "this pod has no ring yet".to_owned(),
                ),
                "no_ring",
            );
        };
        let owner = ring.owner(&key);
        span.record("ring_version", ring.version());
        span.record("shard", ring.shard_of(&key));
        span.record("slot", owner.index);
        span.record("owner", owner.pod.name.as_str());
        if owner.pod.name == self.pod {
            return Decision::Serve("served");
        }
        if may_wait
            && let Some(theirs) = parts
                .headers
                .get(headers::RING_VERSION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            && theirs > ring.version()
        {
            return Decision::AwaitRing(theirs);
        }
        if owner.state == SlotState::Unavailable {
            return Decision::Respond(
                response::unavailable(
                    &self.pod_header,
                    self.retry_after,
                    format!(
                        "slot {} (pod {}) that owns this key is unavailable",
                        owner.index, owner.pod.name
                    ),
                ),
                "owner_unavailable",
            );
        }
        if parts.headers.contains_key(headers::HOP) || self.mode == Mode::Redirect421 {
            return self.misdirected(Some(&owner.pod), Some(ring.version()));
        }
        Decision::Forward {
            owner: owner.pod.clone(),
            version: ring.version(),
        }
    }
}

fn label(decision: &Decision) -> &'static str {
    match decision {
        Decision::Serve(outcome) | Decision::Respond(_, outcome) => outcome,
        Decision::Forward { .. } => "forwarded",
        Decision::AwaitRing(_) => "await_ring",
    }
}

impl<S, B, RB> Service<Request<B>> for Ownership<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<OwnershipBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let span = tracing::debug_span!(
            "locus.ownership",
            pod = %self.shared.pod,
            ring_version = Empty,
            shard = Empty,
            slot = Empty,
            owner = Empty,
            decision = Empty,
        );
        let (parts, body) = request.into_parts();
        let ring = self.shared.ring.latest();
        let decision = self.shared.decide(&parts, ring.as_deref(), true, &span);
        span.record("decision", label(&decision));
        if let Decision::Respond(response, outcome) = decision {
            self.shared.record(outcome, started);
            return Box::pin(std::future::ready(Ok(response.map(Either::Right))));
        }
        let request = Request::from_parts(parts, body);
        // The ready service serves this call; the clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(execute(shared, inner, request, decision, started, span.clone()).instrument(span))
    }
}

async fn execute<S, B, RB>(
    shared: Arc<Shared>,
    mut inner: S,
    mut request: Request<B>,
    mut decision: Decision,
    started: Instant,
    span: tracing::Span,
) -> Result<Response<OwnershipBody<RB>>, S::Error>
where
    S: Service<Request<B>, Response = Response<RB>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    loop {
        match decision {
            Decision::AwaitRing(version) => {
                // Our ring is older than the caller's: give the source a
                // bounded moment to catch up, then decide once more.
                let ring = shared
                    .ring
                    .wait_for_version(version, shared.ring_wait)
                    .await
                    .or_else(|| shared.ring.latest());
                let (parts, body) = request.into_parts();
                decision = shared.decide(&parts, ring.as_deref(), false, &span);
                span.record("decision", label(&decision));
                request = Request::from_parts(parts, body);
            }
            Decision::Respond(response, outcome) => {
                shared.record(outcome, started);
                return Ok(response.map(Either::Right));
            }
            Decision::Serve(outcome) => {
                let mut response = inner.call(request).await?;
                response
                    .headers_mut()
                    .entry(headers::POD)
                    .or_insert_with(|| shared.pod_header.clone());
                shared.record(outcome, started);
                return Ok(response.map(Either::Left));
            }
            Decision::Forward { owner, version } => {
                let forwarded = shared
                    .forwarder
                    .forward(request, &owner, &shared.pod_header, version)
                    .await;
                return Ok(match forwarded {
                    Ok(response) => {
                        shared.record("forwarded", started);
                        let mut response = response
                            .map(|body| Either::Right(body.map_err(Into::into).boxed_unsync()));
                        response
                            .headers_mut()
                            .insert(headers::FORWARDED_BY, shared.pod_header.clone());
                        response
                    }
                    Err(error) => {
                        tracing::warn!(%error, owner = %owner.name, "forwarding to the owner failed");
                        shared.record("forward_failed", started);
                        let status = match error {
                            ForwardError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
                            ForwardError::Failed(..) => StatusCode::BAD_GATEWAY,
                        };
                        let mut response =
                            response::plain(status, &shared.pod_header, error.to_string());
                        if let Ok(name) = HeaderValue::from_str(&owner.name) {
                            response.headers_mut().insert(headers::OWNER, name);
                        }
                        response.map(Either::Right)
                    }
                });
            }
        }
    }
}
