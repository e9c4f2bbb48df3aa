//! The router's error: why a request was not (or could not be) answered by
//! the owner of its key.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::BoxError;

/// Why the router failed a request. Every variant names what failed; the
/// variants that fail fast (before any I/O) are `NoRing`, `NoKey`,
/// `KeyTooLong`, `OwnerUnavailable` and `OwnerOverloaded`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The ring source has not delivered a ring yet.
    #[error("no ring yet: the ring source has not delivered a valid ring")]
    NoRing,
    /// The request has no session key and the router requires one.
    #[error("the request has no session key")]
    NoKey,
    /// The session key is longer than the configured bound.
    #[error("session key is {len} bytes, more than the limit of {max}")]
    KeyTooLong {
        /// Key length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The owner's slot is marked unavailable in the ring (policy `Wait`:
    /// its pod is not Ready); the request was not sent.
    #[error("slot {slot} (pod {pod}) that owns the key is unavailable")]
    OwnerUnavailable {
        /// The owner slot.
        slot: u16,
        /// Its pod.
        pod: String,
    },
    /// The router already has the configured number of requests in flight to
    /// the owner; the request was not sent (no queueing).
    #[error("owner pod {pod} ({address}) already has {limit} requests in flight")]
    OwnerOverloaded {
        /// The owner pod.
        pod: String,
        /// Its address.
        address: SocketAddr,
        /// The per-owner limit.
        limit: usize,
    },
    /// A pod answered 421 Misdirected Request and the router could not follow
    /// the hint (second 421, body not replayable, retry budget spent, no hint).
    #[error(
        "pod {pod} does not own the key (owner hint {owner:?}, ring version {ring_version:?}): {reason}"
    )]
    Misdirected {
        /// The pod that answered 421 last.
        pod: String,
        /// Its owner hint (pod name).
        owner: Option<String>,
        /// Its ring version.
        ring_version: Option<u64>,
        /// Why the router gave up.
        reason: &'static str,
    },
    /// The request did not complete within the router's timeout.
    #[error("no response within {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// The inner service failed to send the request or receive the response
    /// (connection refused, reset, …).
    #[error("request to pod {pod} ({address}) failed: {source}")]
    Upstream {
        /// The owner pod.
        pod: String,
        /// Its address.
        address: SocketAddr,
        /// The inner service's error.
        #[source]
        source: BoxError,
    },
    /// The inner service failed to become ready.
    #[error("the inner service is not ready: {0}")]
    NotReady(#[source] BoxError),
    /// Reading the request body (to keep a copy for a retry) failed.
    #[error("cannot read the request body: {0}")]
    Body(#[source] BoxError),
    /// The request could not be rewritten for the owner (invalid path).
    #[error("cannot build the request for the owner: {0}")]
    Request(#[from] http::Error),
}

impl RouteError {
    /// A short, stable label for `locus_requests_total{side="client",outcome}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoRing => "no_ring",
            Self::NoKey => "no_key",
            Self::KeyTooLong { .. } => "key_too_long",
            Self::OwnerUnavailable { .. } => "owner_unavailable",
            Self::OwnerOverloaded { .. } => "owner_overloaded",
            Self::Misdirected { .. } => "misdirected",
            Self::Timeout { .. } => "timeout",
            Self::Upstream { .. } => "upstream",
            Self::NotReady(_) => "not_ready",
            Self::Body(_) => "body",
            Self::Request(_) => "request",
        }
    }

    /// The HTTP status a gateway built on the router should answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoKey | Self::Request(_) | Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::KeyTooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRing
            | Self::OwnerUnavailable { .. }
            | Self::OwnerOverloaded { .. }
            | Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misdirected { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// True if the request was refused before anything was sent.
    pub fn is_fail_fast(&self) -> bool {
        matches!(
            self,
            Self::NoRing
                | Self::NoKey
                | Self::KeyTooLong { .. }
                | Self::OwnerUnavailable { .. }
                | Self::OwnerOverloaded { .. }
        )
    }
}
