//! [`SessionLayer`] / [`SessionService`]: the pod-side middleware that ties
//! the session store, the ownership decision and the handoff protocol
//! together for each request.
//!
//! Place it *inside* the [`OwnershipLayer`](crate::OwnershipLayer) (which
//! forwards or redirects requests for keys this pod does not own). For each
//! request:
//!
//! 1. a path under `/_locus/handoff/v1/` is answered by the handoff
//!    endpoints;
//! 2. a request without a session key, or a fan-out request, passes through;
//! 3. the request enters the in-flight gate (503 with `Retry-After` past
//!    [`max_in_flight`](crate::handoff::HandoffConfig::max_in_flight) or
//!    during shutdown), which reads the latest ring;
//! 4. under that ring this pod must own the key (else 421 with the owner:
//!    the ring changed since the ownership layer decided);
//! 5. in a Switch ring, a key this pod gained is taken over first (see the
//!    driver's first-touch rules); the response then carries
//!    [`x-locus-handoff`](crate::driver::HANDOFF_HEADER);
//! 6. the inner service (the application) runs; the first answer for a key
//!    taken over in a transition (by any path) carries
//!    [`x-locus-takeover`](crate::driver::TAKEOVER_HEADER) and is counted as
//!    served in the pod's report (announced `late` and not counted once the
//!    transition's report is final);
//! 7. the answered request is counted in the key's shard, with its request
//!    and response body bytes ([`load`](crate::load)).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::Either;
use tower::{Layer, Service};

use super::inner::MemberInner;
use super::response;
use crate::driver::gate::Refused;
use crate::driver::touch::{self, TouchError};
use crate::driver::{HANDOFF_HEADER, TAKEOVER_HEADER};
use crate::handoff::{HANDOFF_PATH_PREFIX, HandoffBody, HandoffService};
use crate::ring::{Ring, Slot};
use crate::{BoxError, headers};

/// Body of the session layer's responses: the application's (`Left`) or
/// one the layer produced (`Right`).
pub type SessionBody<B> = Either<B, HandoffBody>;

/// Builds [`SessionService`]s; get one from
/// [`Member::layer`](super::Member::layer).
#[derive(Clone)]
pub struct SessionLayer {
    member: Arc<MemberInner>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("pod", &self.member.state.pod)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    pub(crate) fn new(member: Arc<MemberInner>) -> Self {
        Self { member }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService {
            inner,
            member: Arc::clone(&self.member),
            handoff: HandoffService::new(Arc::clone(&self.member.state)),
        }
    }
}

/// The session layer's service; what it does per request is in the
/// [`session`](crate::server::session) module's docs.
pub struct SessionService<S> {
    inner: S,
    member: Arc<MemberInner>,
    handoff: HandoffService,
}

impl<S: Clone> Clone for SessionService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            member: Arc::clone(&self.member),
            handoff: self.handoff.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .field("pod", &self.member.state.pod)
            .finish_non_exhaustive()
    }
}

impl<S> SessionService<S> {
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

impl<S, B, RB> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body + Send + 'static,
{
    type Response = Response<SessionBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let member = &self.member;
        let pod = &member.state.pod_header;
        let respond = |response: Response<HandoffBody>| -> Self::Future {
            Box::pin(std::future::ready(Ok(response.map(Either::Right))))
        };
        if request.uri().path().starts_with(HANDOFF_PATH_PREFIX) {
            let answer = self.handoff.call(request);
            return Box::pin(async move {
                let Ok(response) = answer.await;
                Ok(response.map(Either::Right))
            });
        }
        let (parts, body) = request.into_parts();
        let key = if parts.headers.contains_key(headers::FANOUT) {
            None
        } else {
            member
                .key
                .extract(&parts)
                .map(|k| Bytes::copy_from_slice(&k))
        };
        let request = Request::from_parts(parts, body);
        // The ready service serves this call; the clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(key) = key else {
            return Box::pin(async move { Ok(inner.call(request).await?.map(Either::Left)) });
        };
        let (ring, pass) = match member.gate.enter(&member.state.ring) {
            Ok(admitted) => admitted,
            Err(Refused::Closed) => {
                return respond(response::unavailable(
                    pod,
                    member.state.config.retry_after,
                    format!("pod {} is shutting down", member.state.pod),
                ));
            }
            Err(Refused::Full) => {
                return respond(response::unavailable(
                    pod,
                    member.state.config.retry_after,
                    format!(
                        "pod {} serves {} requests already (the bound)",
                        member.state.pod, member.state.config.max_in_flight
                    ),
                ));
            }
        };
        let Some(ring) = ring else {
            return respond(response::unavailable(
                pod,
                member.state.config.retry_after,
                "this pod has no ring yet".to_owned(),
            ));
        };
        let (shard, owner) = shard_and_owner(&ring, &key);
        if owner.pod.name != member.state.pod {
            return respond(response::misdirected(
                pod,
                &owner.pod.name,
                Some(&owner.pod),
                Some(ring.version()),
            ));
        }
        let member = Arc::clone(member);
        Box::pin(async move {
            let _pass = pass;
            let path = match touch::ensure(&member.state, &ring, &key).await {
                Ok(path) => path,
                Err(TouchError::Retry(message)) => {
                    return Ok(response::unavailable(
                        &member.state.pod_header,
                        member.state.config.retry_after,
                        message,
                    )
                    .map(Either::Right));
                }
            };
            let request_bytes = body_length(request.body(), request.headers());
            let takeover = member.state.unserved.take(&key);
            if let Some(t) = takeover.filter(|t| !t.late) {
                member.state.moved.served(t.epoch, t.path);
                member.state.metrics.served(t.path);
            }
            let mut response = inner.call(request).await?;
            let bytes = request_bytes + body_length(response.body(), response.headers());
            member.load.counters.record(ring.shards(), shard, bytes);
            if let Some(path) = path {
                response
                    .headers_mut()
                    .insert(HANDOFF_HEADER, HeaderValue::from_static(path));
            }
            if let Some(t) = takeover
                && let Ok(value) = HeaderValue::from_str(&t.header())
            {
                response.headers_mut().insert(TAKEOVER_HEADER, value);
            }
            Ok(response.map(Either::Left))
        })
    }
}

/// The key's shard and its owner: one hash for the ownership check and the
/// load count.
fn shard_and_owner<'r>(ring: &'r Ring, key: &[u8]) -> (u32, &'r Slot) {
    let shard = ring.shard_of(key);
    let owner = ring
        .owner_of_shard(shard)
        .unwrap_or_else(|| ring.owner(key));
    (shard, owner)
}

/// A body's length without reading it: its exact size hint, else the
/// `Content-Length` header, else 0 (a stream of unknown length).
fn body_length(body: &impl Body, headers: &http::HeaderMap) -> u64 {
    body.size_hint().exact().unwrap_or_else(|| {
        headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}
