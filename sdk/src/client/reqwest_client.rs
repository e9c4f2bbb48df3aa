//! [`ReqwestClient`]: the default inner service of a router, a reqwest
//! client as a tower service over `http` types.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use crate::BoxError;

/// A reqwest client as a `Service<http::Request<B>>`, answering
/// `http::Response<reqwest::Body>`.
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

impl<B> Service<Request<B>> for ReqwestClient
where
    B: Body + Send + Sync + 'static,
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
            let request = reqwest::Request::try_from(request.map(reqwest::Body::wrap))?;
            let response = client.execute(request).await?;
            Ok(response.into())
        })
    }
}
