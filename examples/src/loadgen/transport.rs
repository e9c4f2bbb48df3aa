//! How the load generator reaches the service: through the SDK's
//! [`Router`] (each request to the owner of its session), or straight to one
//! URL (a load balancer, for the comparison without Locus routing).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use locus::{ReqwestClient, RingWatch, Router, RouterLayer, headers};
use tower::{Layer as _, ServiceExt as _};

use crate::Error;

/// An HTTP answer, body read.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Where requests go.
pub(crate) enum Transport {
    Routed {
        router: Router<ReqwestClient>,
        timeout: Duration,
    },
    Direct {
        client: reqwest::Client,
        base: String,
    },
}

impl Transport {
    /// Routed by `ring`; `concurrency` requests may go to one owner at once.
    pub(crate) fn routed(ring: RingWatch, timeout: Duration, concurrency: usize) -> Self {
        let router = RouterLayer::new(ring)
            .timeout(timeout)
            .owner_concurrency(concurrency.max(1))
            .layer(ReqwestClient::new());
        Self::Routed { router, timeout }
    }

    /// Straight to `base` (`http://host:port`).
    pub(crate) fn direct(base: &str, timeout: Duration) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Client)?;
        Ok(Self::Direct {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// `routed` or `direct`, for summaries.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Routed { .. } => "ring",
            Self::Direct { .. } => "direct",
        }
    }

    /// Sends one request for `session`; the error is its kind (a short
    /// label).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        session: &str,
        body: String,
    ) -> Result<Answer, &'static str> {
        match self {
            Self::Routed { router, timeout } => {
                let request = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(headers::SESSION, session)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .map_err(|_| "request")?;
                // The router bounds the time to the answer's head; the body
                // gets the same bound again.
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .map_err(|e| e.metric_label())?;
                let (parts, body) = response.into_parts();
                let body = tokio::time::timeout(*timeout, body.collect())
                    .await
                    .map_err(|_| "timeout")?
                    .map_err(|_| "body")?
                    .to_bytes();
                Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            }
            Self::Direct { client, base } => {
                let response = client
                    .request(method, format!("{base}{path}"))
                    .header(headers::SESSION, session)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| reqwest_kind(&e))?;
                // Take the head apart rather than copy its headers.
                let (parts, body) = http::Response::from(response).into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| reqwest_kind(&e))?
                    .to_bytes();
                Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            }
        }
    }
}

fn reqwest_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "upstream"
    }
}
