//! How handoff requests reach another pod: a [`Transport`].
//!
//! [`HttpTransport`] (the default) sends them over plain HTTP/1.1 to the pod's
//! address with a pooled hyper client. Tests that drive the protocol without a
//! network (the deterministic simulation) implement the trait over in-memory
//! calls to the other pods' handoff services.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::BoxError;

/// The body of handoff requests and responses.
pub type HandoffBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a transport could not deliver a request.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing listens at the address: the pod is gone.
    #[error("unreachable: {0}")]
    Unreachable(#[source] BoxError),
    /// Any other failure (reset, timeout while connecting, broken pipe).
    #[error("failed: {0}")]
    Failed(#[source] BoxError),
}

/// Delivers one handoff request to the pod at an address.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` (its URI holds only the path) to the pod at `to`.
    fn send(
        &self,
        to: SocketAddr,
        request: Request<HandoffBody>,
    ) -> BoxFuture<'static, Result<Response<HandoffBody>, TransportError>>;
}

/// Plain HTTP/1.1 to the pod's address, pooled connections, no proxy.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    client: Client<HttpConnector, HandoffBody>,
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl HttpTransport {
    /// A transport that gives up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self { client }
    }
}

/// True if the error chain holds a refused connection.
fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = e.source();
    }
    false
}

impl Transport for HttpTransport {
    fn send(
        &self,
        to: SocketAddr,
        request: Request<HandoffBody>,
    ) -> BoxFuture<'static, Result<Response<HandoffBody>, TransportError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let authority = Authority::try_from(to.to_string())
                .map_err(|e| TransportError::Failed(e.into()))?;
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            uri.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(uri).map_err(|e| TransportError::Failed(e.into()))?;
            match client.request(Request::from_parts(parts, body)).await {
                Ok(response) => Ok(response.map(|b| b.map_err(Into::into).boxed_unsync())),
                Err(error) if error.is_connect() && refused(&error) => {
                    Err(TransportError::Unreachable(error.into()))
                }
                Err(error) => Err(TransportError::Failed(error.into())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind then drop a listener: nothing listens on that port any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let request = Request::post("/_locus/handoff/v1/transfer")
            .body(
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap();
        let result = HttpTransport::default().send(address, request).await;
        assert!(
            matches!(result, Err(TransportError::Unreachable(_))),
            "{result:?}"
        );
    }
}
