//! Forwarding a request to the owner of its key: one hop, marked so it is
//! never forwarded again.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::response::LocalBody;
use crate::ring::Pod;
use crate::{BoxError, headers};

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no response from {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("forwarding to {0} failed: {1}")]
    Failed(String, #[source] BoxError),
}

/// A plain-HTTP client to the service's other pods.
#[derive(Clone, Debug)]
pub(crate) struct Forwarder {
    client: Client<HttpConnector, LocalBody>,
    timeout: Duration,
}

/// Headers that describe one connection, not the message.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

impl Forwarder {
    pub(crate) fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(2))));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self { client, timeout }
    }

    /// Sends `request` to `owner` as this pod's one hop.
    pub(crate) async fn forward<B>(
        &self,
        request: Request<B>,
        owner: &Pod,
        pod: &HeaderValue,
        ring_version: u64,
    ) -> Result<Response<Incoming>, ForwardError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let target = owner.address.to_string();
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority = Authority::try_from(target.as_str())
            .map_err(|e| ForwardError::Failed(target.clone(), e.into()))?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = Some(path);
        parts.uri =
            Uri::from_parts(uri).map_err(|e| ForwardError::Failed(target.clone(), e.into()))?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(HOST);
        parts
            .headers
            .insert(headers::HOP, HeaderValue::from_static("1"));
        parts.headers.insert(headers::FORWARDED_BY, pod.clone());
        parts
            .headers
            .insert(headers::RING_VERSION, HeaderValue::from(ring_version));
        let body = body.map_err(Into::into).boxed_unsync();
        let sent = self.client.request(Request::from_parts(parts, body));
        let mut response = match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(ForwardError::Failed(target, error.into())),
            Err(_) => return Err(ForwardError::Timeout(target, self.timeout)),
        };
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-locus-session", HeaderValue::from_static("k"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-locus-session"], "k");
    }
}
