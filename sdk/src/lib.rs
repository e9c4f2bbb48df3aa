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
//! * [`ring`]: the ring model, its document codec and the operator's planner
//!   (the `locus-contract` crate's, re-exported).
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
//! * [`handoff`]: the protocol that moves sessions between pods (pre-copy,
//!   transfer, drain push) over authenticated endpoints under `/_locus/`.
//! * [`driver`]: what a pod does on each ring version (warm, take over,
//!   drain, settle) and the rules that keep one writer per session.
//! * [`progress`]: how a pod reports observed / warmed / drained versions
//!   (its own annotations in Kubernetes).
//! * [`snapshot`]: fast restarts through a memory-backed directory.
//! * [`server::session`]: [`Member`], one pod of the service, tying the
//!   store, the handoff endpoints, the driver, progress and shutdown into a
//!   layer for the pod's HTTP stack; [`MemberPod`], the one entry point that
//!   builds it from the pod's environment.
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
//! # A complete service
//!
//! A member pod of a service keeping shopping carts: an axum application
//! over a [`SessionStore`] with a [`Persistence`](store::Persistence), and
//! [`MemberPod`], the one entry point — it reads the pod's environment
//! (`POD_NAME`, `POD_NAMESPACE`, `LOCUS_RING_CONFIGMAP`,
//! `LOCUS_HANDOFF_SECRET_FILE`, `LOCUS_SNAPSHOT_DIR`: what the operator
//! sets), opens the ring, reports progress, restores a snapshot, and gives
//! the one layer, the readiness probe, the metrics and the SIGTERM
//! sequence. In a pod, `MemberPod::from_env(carts.clone()).build().await?`
//! and `pod.shutdown_on_signal()` are all it takes; here the environment is
//! a lookup, the ring is in memory and the pod serves on 127.0.0.1.
//!
//! ```
//! # use std::collections::HashMap;
//! # use std::sync::Mutex;
//! use axum::extract::State;
//! use axum::http::{HeaderMap, StatusCode};
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::{get_service, post};
//! use locus::store::{JsonCodec, Persistence, SessionStore, Stamp, Stored};
//! use locus::{HandoffSecret, MemberPod, ReqwestClient, RouterLayer, StaticRingSource};
//! use tower::{Layer, ServiceExt};
//!
//! type Cart = Vec<String>;
//! # /// Where carts live when they are not in memory (a database in a real service).
//! # #[derive(Default)]
//! # struct CartTable(Mutex<HashMap<Vec<u8>, Stored<Cart>>>);
//! # impl Persistence<Cart> for CartTable {
//! #     type Error = std::convert::Infallible;
//! #     async fn load(&self, key: &[u8]) -> Result<Option<Stored<Cart>>, Self::Error> {
//! #         Ok(self.0.lock().unwrap().get(key).cloned())
//! #     }
//! #     async fn store(&self, key: &[u8], stamp: Stamp, cart: &Cart) -> Result<(), Self::Error> {
//! #         let mut rows = self.0.lock().unwrap();
//! #         if rows.get(key).is_none_or(|held| held.stamp <= stamp) {
//! #             rows.insert(key.to_vec(), Stored::new(stamp, cart.clone()));
//! #         }
//! #         Ok(())
//! #     }
//! # }
//! # fn ring(pod: &str, address: std::net::SocketAddr) -> locus::ring::Ring {
//! #     use locus::ring::*;
//! #     let pod = Pod { name: pod.into(), uid: "uid-0".into(), address };
//! #     let slot = Slot { index: 0, pod, state: SlotState::Active, successor: None, predecessor: None };
//! #     let (shards, current) = (ShardCount::new(16).unwrap(), Assignment::new(vec![0; 16]).unwrap());
//! #     let (namespace, service) = ("shop".into(), "carts".into());
//! #     let transition = Transition::Stable;
//! #     let parts = RingParts { namespace, service, version: 1, shards, vnodes: 16, slots: vec![slot], current, transition };
//! #     Ring::new(parts).unwrap()
//! # }
//! #[derive(Clone)]
//! struct App {
//!     carts: SessionStore<Cart, CartTable>,
//!     member: locus::Member,
//! }
//!
//! /// `POST /cart` with the item as body, the cart in `x-locus-session`.
//! async fn add(State(app): State<App>, headers: HeaderMap, item: String) -> Response {
//!     // A fan-out request may come without a session key.
//!     let Some(key) = headers.get(locus::headers::SESSION) else {
//!         return (StatusCode::BAD_REQUEST, "which cart?").into_response();
//!     };
//!     match app.carts.update(key.as_bytes(), |cart| { cart.push(item); cart.len() }).await {
//!         Ok(done) => format!("{} items (version {})", done.value, done.version).into_response(),
//!         // 429 / 503 with Retry-After, 413, or 421 naming the new owner.
//!         Err(error) => app.member.error_response(&error).into_response(),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), locus::BoxError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let source = StaticRingSource::with_ring(ring("carts-0-x7k2p", listener.local_addr()?));
//! let carts = SessionStore::builder(JsonCodec, |cart: &Cart| cart.iter().map(String::len).sum())
//!     .persistence(CartTable::default())
//!     .build()?;
//! // In a pod: MemberPod::from_env(carts.clone()).build().await?
//! let env = |name: &str| (name == "POD_NAME").then(|| "carts-0-x7k2p".to_owned());
//! let pod = MemberPod::from_lookup(carts.clone(), env)
//!     .ring_source(source.clone())
//!     .secret(HandoffSecret::new("7f3a9c0e5b2d4f6a8c1e3b5d7f9a2c4e")?)
//!     .build()
//!     .await?;
//! let app = axum::Router::new()
//!     .route("/cart", post(add))
//!     .with_state(App { carts, member: pod.member().clone() })
//!     .route("/readyz", get_service(pod.readiness()))
//!     // Last, around everything: ownership, handoff endpoints, take-overs.
//!     .layer(pod.layer());
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(async move {
//!     // In a pod: .with_graceful_shutdown(async { pod.shutdown_on_signal().await.ok(); })
//!     let stopped = async { stopped.await.unwrap_or(()) };
//!     axum::serve(listener, app).with_graceful_shutdown(stopped).await
//! });
//! # // The caller below; then the shutdown a signal would run.
//! # let router = RouterLayer::new(&source).layer(ReqwestClient::new());
//! # let request = http::Request::post("/cart").header(locus::headers::SESSION, "cart-7").body("apple".to_owned())?;
//! # let response = router.oneshot(request).await?;
//! # assert_eq!(response.status(), 200);
//! # let body = http_body_util::BodyExt::collect(response.into_body()).await?;
//! # assert_eq!(&body.to_bytes()[..], b"1 items (version 1)");
//! # let report = pod.shutdown_within(std::time::Duration::from_secs(1)).await;
//! # assert_eq!(report.flushed.map(|f| f.written), Some(1));
//! # stop.send(()).ok();
//! # server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! A caller routes by the same ring to the session's owner:
//!
//! ```no_run
//! # use locus::{ReqwestClient, RouterLayer, StaticRingSource};
//! # use tower::{Layer, ServiceExt};
//! # async fn example(source: StaticRingSource) -> Result<(), locus::BoxError> {
//! let router = RouterLayer::new(&source).layer(ReqwestClient::new());
//! let request = http::Request::post("/cart")
//!     .header(locus::headers::SESSION, "cart-7")
//!     .body("apple".to_owned())?;
//! let response = router.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! The guides are `docs/sdk.md`, `docs/session-store.md` and
//! `docs/handoff.md`.

#[macro_use]
mod config_fields;

pub mod client;
pub mod driver;
pub mod fanout;
pub mod handoff;
mod intent;
pub mod load;
pub mod metrics;
mod own_pod;
mod pod_plan;
pub mod progress;
pub use locus_contract::ring;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod store;

pub use client::{ReqwestClient, RouteError, Router, RouterLayer, SessionKey};
pub use fanout::{FanOut, FanOutError, FanOutResult};
pub use handoff::{HandoffConfig, HandoffSecret};
pub use metrics::Metrics;
pub use server::ownership::{MissingKey, Mode, Ownership, OwnershipLayer};
pub use server::session::{Member, MemberPod, SessionLayer};
pub use source::{
    FileRingSource, KubeRingSource, RingSource, RingWatch, SourceStatus, StaticRingSource,
};
pub use store::{SessionStore, StoreError};

/// Not part of the supported API, and not covered by semantic versioning:
/// what the crate's own integration tests, benches and simulation need of
/// its protocol internals. Anything here may change or go in any release.
/// A service author needs none of it.
#[doc(hidden)]
pub mod internal {
    pub use crate::handoff::client::{HandoffClient, PrecopyRequest, TransferAnswer};
    pub use crate::handoff::transport::{HttpTransport, Transport, TransportError};
    pub use crate::pod_plan::previous_pod;
}

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
