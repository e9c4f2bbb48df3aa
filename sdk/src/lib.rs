//! Locus: tower middleware for sticky stateful services.
//!
//! A Locus service keeps each session's state in the memory of one pod. The
//! operator publishes a *ring* (which slot, and so which pod, owns which
//! shard of the key space); this crate reads that ring, routes every request of
//! a session to its owner (client side) and checks ownership, keeps bounded
//! session state and hands sessions over when ownership moves (server side).
//!
//! The parts, from the ring outwards:
//!
//! * [`ring`]: the ring model, its document codec and the operator's planner.
//! * [`source`]: where a process gets its ring from — [`KubeRingSource`] (a
//!   watch of the ring `ConfigMap`), [`FileRingSource`] (a `ring.json` on disk)
//!   or [`StaticRingSource`] (in memory, for tests). Every source hands out a
//!   [`RingWatch`]: a lock-free-for-readers snapshot of the last good ring plus
//!   change notification. Routing never waits on I/O.
//! * [`client`]: [`RouterLayer`] / [`Router`], the caller's tower middleware
//!   that sends each request to the pod owning its session key, with a default
//!   reqwest-based inner service [`ReqwestClient`].
//! * [`server`]: [`OwnershipLayer`], the service's own middleware that serves
//!   keys this pod owns and forwards (or answers 421 for) the others.
//! * [`fanout`]: [`FanOut`], a request to every member with a deadline and a
//!   completeness fraction.
//! * [`metrics`]: [`Metrics`], the Prometheus registry (prefix `locus`) all of
//!   the above report into.
//! * [`headers`]: the HTTP header names the parts use to talk to each other.
//! * [`store`]: [`SessionStore`], the pod's bounded, versioned session state
//!   with single-flight loads and write-back passivation.
//!
//! A caller routing to a service whose ring lives in a file:
//!
//! ```no_run
//! use locus::{FileRingSource, ReqwestClient, RouterLayer};
//! use tower::{Layer, ServiceExt};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let source = FileRingSource::open("/etc/chat/ring.json").await;
//! let router = RouterLayer::new(&source).layer(ReqwestClient::new());
//! let request = http::Request::builder()
//!     .uri("/rooms/7/messages")
//!     .header(locus::headers::SESSION, "room-7")
//!     .body(String::new())?;
//! let response = router.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! The guide is `docs/sdk.md`.

pub mod client;
pub mod driver;
pub mod fanout;
pub mod handoff;
pub mod metrics;
pub mod progress;
pub mod ring;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod store;

pub use client::{ReqwestClient, RouteError, Router, RouterLayer, SessionKey};
pub use fanout::{FanOut, FanOutError, FanOutResult};
pub use metrics::Metrics;
pub use server::ownership::{MissingKey, Mode, Ownership, OwnershipLayer};
pub use source::{
    FileRingSource, KubeRingSource, RingSource, RingWatch, SourceStatus, StaticRingSource,
};
pub use store::{SessionStore, StoreError};

/// A boxed, thread-safe error, as tower and hyper use.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest session key, in bytes, unless configured otherwise. A longer key is
/// refused: [`RouteError::KeyTooLong`] on the client, 413 on the server.
pub const DEFAULT_MAX_KEY_BYTES: usize = 256;

/// Path prefix the ownership layer never checks: requests under it (the
/// handoff endpoints, `/_locus/...`) pass through untouched.
pub const RESERVED_PATH_PREFIX: &str = "/_locus/";

/// Names of the HTTP headers Locus reads and writes.
///
/// | header | on | meaning |
/// |---|---|---|
/// | [`SESSION`] | request | the session key (default key source) |
/// | [`RING_VERSION`] | request, 421 | the sender's ring version (decimal) |
/// | [`OWNER`] | 421 | pod name of the owner under the answering pod's ring |
/// | [`OWNER_ADDRESS`] | 421 | `ip:port` of that owner |
/// | [`POD`] | response | name of the pod that produced the response |
/// | [`HOP`] | request | `1` on a request a pod forwarded; never forwarded again |
/// | [`FORWARDED_BY`] | request, response | name of the pod that forwarded it |
/// | [`FANOUT`] | request | a fan-out request for exactly this pod (by name) |
///
/// [`SESSION`]: headers::SESSION
/// [`RING_VERSION`]: headers::RING_VERSION
/// [`OWNER`]: headers::OWNER
/// [`OWNER_ADDRESS`]: headers::OWNER_ADDRESS
/// [`POD`]: headers::POD
/// [`HOP`]: headers::HOP
/// [`FORWARDED_BY`]: headers::FORWARDED_BY
/// [`FANOUT`]: headers::FANOUT
pub mod headers {
    use http::HeaderName;

    /// The session key, when the default key source is used.
    pub const SESSION: HeaderName = HeaderName::from_static("x-locus-session");
    /// A ring version in decimal: on requests, the router's; on a 421, the
    /// answering pod's.
    pub const RING_VERSION: HeaderName = HeaderName::from_static("x-locus-ring-version");
    /// On a 421: the pod name of the key's owner under the answering pod's ring.
    pub const OWNER: HeaderName = HeaderName::from_static("x-locus-owner");
    /// On a 421: the owner's `ip:port` (IPv6 as `[ip]:port`).
    pub const OWNER_ADDRESS: HeaderName = HeaderName::from_static("x-locus-owner-address");
    /// On responses: the pod that produced the response.
    pub const POD: HeaderName = HeaderName::from_static("x-locus-pod");
    /// On a forwarded request: the hop count (`1`). A pod never forwards a
    /// request that carries it; it answers 421 instead.
    pub const HOP: HeaderName = HeaderName::from_static("x-locus-hop");
    /// On a forwarded request and its response: the pod that forwarded it.
    pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-locus-forwarded-by");
    /// On a fan-out request: the pod it is meant for. That pod serves it
    /// without an ownership check; any other pod answers 421.
    pub const FANOUT: HeaderName = HeaderName::from_static("x-locus-fanout");
}
