//! [`ReqwestClient`]: the default inner service of a router, a reqwest
//! client as a tower service over `http` types.

use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::Service;

use crate::BoxError;

/// A reqwest client as a `Service<http::Request<B>>`, answering
/// `http::Response<reqwest::Body>`.
///
/// Any `Send` body will do, `Sync` or not (axum's and hyper's bodies are
/// not `Sync`; reqwest wants it, so the body is put behind an uncontended
/// mutex).
///
/// [`ReqwestClient::new`] never uses a proxy (pod-to-pod traffic goes
/// direct), gives up connecting after 2 s and disables Nagle's algorithm;
/// bring your own client with [`ReqwestClient::from_client`]. Clones share the
/// connection pool.
#[derive(Debug, Clone)]
pub struct ReqwestClient {
    client: reqwest::Client,
}

impl Default for ReqwestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ReqwestClient {
    /// A client for plain-HTTP pod-to-pod traffic.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self { client }
    }

    /// Wraps an existing client.
    pub fn from_client(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The wrapped client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// Makes a `Send` body `Sync`: only `poll_frame` (through `&mut`) touches
/// it, so the lock is never contended.
struct SyncBody<B>(Mutex<Pin<Box<B>>>);

impl<B: Body> Body for SyncBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
    }
}

impl<B> Service<Request<B>> for ReqwestClient
where
    B: Body + Send + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = BoxFuture<'static, Result<Response<reqwest::Body>, reqwest::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let request = reqwest::Request::try_from(
                request.map(|body| reqwest::Body::wrap(SyncBody(Mutex::new(Box::pin(body))))),
            )?;
            let response = client.execute(request).await?;
            Ok(response.into())
        })
    }
}
