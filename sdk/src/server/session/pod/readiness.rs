//! [`Readiness`]: the readiness probe of a member pod.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Request, Response, StatusCode, header};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::source::RingWatch;

/// Longest wait for the API server when looking whether the ring
/// `ConfigMap` exists.
const CONFIG_MAP_CHECK: Duration = Duration::from_secs(2);

/// The readiness probe (`/readyz`) of a member pod; clones share it. Get it
/// from [`MemberPod::readiness`](super::MemberPod::readiness); with axum:
/// `.route("/readyz", axum::routing::get_service(pod.readiness()))`.
///
/// | state | answer |
/// |---|---|
/// | shut down ([`MemberPod::shutdown`](super::MemberPod::shutdown) done) | 503 |
/// | a ring held | 200 |
/// | no ring, ring from the `ConfigMap`, which does not exist yet | 200: the operator publishes the first ring only once the first pods are ready |
/// | no ring otherwise (published but not loaded, API server silent, another source) | 503 |
///
/// Readiness goes off only at the *end* of the shutdown: while the pod
/// hands its sessions over it still serves, and the operator treats a
/// Ready pod being deleted as an eviction to coordinate.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    shut: AtomicBool,
    ring: RingWatch,
    /// The ring `ConfigMap`, when the ring comes from it.
    config_map: Option<(Api<ConfigMap>, String)>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("shut", &self.is_shut())
            .field("ring_version", &self.inner.ring.version())
            .finish_non_exhaustive()
    }
}

impl Readiness {
    pub(super) fn new(ring: RingWatch, config_map: Option<(Api<ConfigMap>, String)>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shut: AtomicBool::new(false),
                ring,
                config_map,
            }),
        }
    }

    /// From now on the probe answers 503. The shutdown does it; call it
    /// yourself only for a process that stops serving another way.
    pub fn shut(&self) {
        self.inner.shut.store(true, Ordering::SeqCst);
    }

    /// Whether readiness is off for good.
    pub fn is_shut(&self) -> bool {
        self.inner.shut.load(Ordering::SeqCst)
    }

    /// The probe's answer now (see the table above): status and a line of
    /// text saying why.
    pub async fn check(&self) -> (StatusCode, String) {
        if self.is_shut() {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        }
        if let Some(version) = self.inner.ring.version() {
            return (StatusCode::OK, format!("ready, ring version {version}\n"));
        }
        let Some((config_maps, name)) = &self.inner.config_map else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "no ring loaded yet\n".into(),
            );
        };
        match tokio::time::timeout(CONFIG_MAP_CHECK, config_maps.get_opt(name)).await {
            Ok(Ok(None)) => (
                StatusCode::OK,
                "ready, no ring published yet (the operator publishes it once its pods are ready)\n"
                    .into(),
            ),
            Ok(Ok(Some(_))) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ring published but not loaded yet\n".into(),
            ),
            Ok(Err(error)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ring yet; cannot check the ring ConfigMap: {error}\n"),
            ),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no ring yet; the API server did not answer in time\n".into(),
            ),
        }
    }

    /// [`check`](Self::check) as an HTTP response.
    pub async fn response(&self) -> Response<String> {
        let (status, text) = self.check().await;
        let mut response = Response::new(text);
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl<B> tower::Service<Request<B>> for Readiness {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let readiness = self.clone();
        Box::pin(async move { Ok(readiness.response().await) })
    }
}
