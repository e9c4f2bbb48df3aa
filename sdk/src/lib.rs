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
//! * [`handoff`]: the protocol that moves sessions between pods (pre-copy,
//!   transfer, drain push) over authenticated endpoints under `/_locus/`.
//! * [`driver`]: what a pod does on each ring version (warm, take over,
//!   drain, settle) and the rules that keep one writer per session.
//! * [`progress`]: how a pod reports observed / warmed / drained versions
//!   (its own annotations in Kubernetes).
//! * [`snapshot`]: fast restarts through a memory-backed directory.
//! * [`server::session`]: [`Member`], one pod of the service, tying the
//!   store, the handoff endpoints, the driver, progress and shutdown into a
//!   layer for the pod's HTTP stack.
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
//! A pod of a service keeping shopping carts: an axum application over a
//! [`SessionStore`] with a [`Persistence`](store::Persistence), the
//! [`Member`]'s layer (handoff endpoints, take-over of gained keys, in-flight
//! bound) inside the [`OwnershipLayer`], a caller routing to it, and the
//! SIGTERM shutdown. In Kubernetes the pod name comes from `POD_NAME`, the
//! ring from [`KubeRingSource`], the secret from
//! [`HandoffSecret::from_env`], progress goes to
//! [`KubeProgressReporter::from_env`](progress::KubeProgressReporter::from_env)
//! and fast restarts are enabled by
//! [`MemberBuilder::snapshot_dir_from_env`](server::session::MemberBuilder::snapshot_dir_from_env);
//! here everything is in memory and the pod serves on 127.0.0.1.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//! use std::time::Duration;
//!
//! use axum::extract::State;
//! use axum::http::HeaderMap;
//! use axum::response::{IntoResponse, Response};
//! use locus::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
//! use locus::store::{JsonCodec, Persistence, SessionStore, Stamp, Stored};
//! use locus::{HandoffSecret, Member, OwnershipLayer, ReqwestClient, RouterLayer, StaticRingSource};
//! use tower::{Layer, ServiceExt};
//!
//! type Cart = Vec<String>;
//!
//! /// Where carts live when they are not in memory (a database in a real service).
//! #[derive(Default)]
//! struct CartTable(Mutex<HashMap<Vec<u8>, Stored<Cart>>>);
//!
//! impl Persistence<Cart> for CartTable {
//!     type Error = std::convert::Infallible;
//!
//!     async fn load(&self, key: &[u8]) -> Result<Option<Stored<Cart>>, Self::Error> {
//!         Ok(self.0.lock().unwrap().get(key).cloned())
//!     }
//!
//!     async fn store(&self, key: &[u8], stamp: Stamp, cart: &Cart) -> Result<(), Self::Error> {
//!         let mut rows = self.0.lock().unwrap();
//!         // Never an older (epoch, version) over a newer one.
//!         if rows.get(key).is_none_or(|held| held.stamp <= stamp) {
//!             rows.insert(key.to_vec(), Stored::new(stamp, cart.clone()));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct App {
//!     carts: SessionStore<Cart, CartTable>,
//!     member: Member,
//! }
//!
//! /// `POST /cart` with the item as body, the cart in `x-locus-session`.
//! async fn add(State(app): State<App>, headers: HeaderMap, item: String) -> Response {
//!     let key = headers[locus::headers::SESSION].as_bytes();
//!     let added = app.carts.update(key, |cart| {
//!         cart.push(item);
//!         cart.len()
//!     });
//!     match added.await {
//!         Ok(done) => format!("{} items (version {})", done.value, done.version).into_response(),
//!         // 429 / 503 with Retry-After, 413, or 421 naming the new owner.
//!         Err(error) => app.member.error_response(&error).into_response(),
//!     }
//! }
//!
//! /// A one-slot ring (the operator publishes the real one).
//! fn ring(pod: &str, address: std::net::SocketAddr) -> Ring {
//!     let slot = Slot {
//!         index: 0,
//!         pod: Pod { name: pod.into(), uid: "uid-0".into(), address },
//!         state: SlotState::Active,
//!         successor: None,
//!         predecessor: None,
//!     };
//!     let shards = ShardCount::new(16).unwrap();
//!     Ring::new(RingParts {
//!         namespace: "shop".into(),
//!         service: "carts".into(),
//!         version: 1,
//!         shards,
//!         vnodes: 16,
//!         slots: vec![slot],
//!         current: Assignment::new(vec![0; 16]).unwrap(),
//!         transition: Transition::Stable,
//!     })
//!     .unwrap()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), locus::BoxError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let pod = "carts-0-x7k2p";
//! let source = StaticRingSource::with_ring(ring(pod, listener.local_addr()?));
//!
//! let carts = SessionStore::builder(JsonCodec, |cart: &Cart| cart.iter().map(String::len).sum())
//!     .persistence(CartTable::default())
//!     .build()?;
//! let member = Member::builder(pod, &source, carts.clone())
//!     .secret(HandoffSecret::new("7f3a9c0e5b2d4f6a8c1e3b5d7f9a2c4e")?)
//!     // How long a SIGTERM waits for the operator to retire this pod before
//!     // handing the sessions over on its own (default 5 s).
//!     .coordination_wait(Duration::ZERO)
//!     .build()?;
//! // Restores a snapshot if one is configured, starts the transition driver.
//! member.start().await;
//!
//! let app = axum::Router::new()
//!     .route("/cart", axum::routing::post(add))
//!     .with_state(App { carts: carts.clone(), member: member.clone() })
//!     // Inner: handoff endpoints, in-flight bound, take-over of gained keys.
//!     .layer(member.layer())
//!     // Outer: forward (or answer 421 for) keys this pod does not own.
//!     .layer(OwnershipLayer::new(pod, &source)?);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(async move {
//!     let stopped = async { stopped.await.unwrap_or(()) };
//!     axum::serve(listener, app).with_graceful_shutdown(stopped).await
//! });
//!
//! // A caller routes by the same ring to the session's owner.
//! let router = RouterLayer::new(&source).layer(ReqwestClient::new());
//! let request = http::Request::post("/cart")
//!     .header(locus::headers::SESSION, "cart-7")
//!     .body("apple".to_owned())?;
//! let response = router.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! let body = http_body_util::BodyExt::collect(response.into_body()).await?;
//! assert_eq!(&body.to_bytes()[..], b"1 items (version 1)");
//!
//! // On SIGTERM (tokio::signal::unix::signal(SignalKind::terminate())):
//! // snapshot, or wait for the operator's transition, or hand the sessions
//! // to their next owners — here, with no other pod, write them back.
//! let report = member.shutdown(Duration::from_secs(25)).await;
//! assert_eq!(report.flushed.map(|f| f.written), Some(1));
//! stop.send(()).ok();
//! server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! The guides are `docs/sdk.md`, `docs/session-store.md` and
//! `docs/handoff.md`.

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
pub use handoff::{HandoffConfig, HandoffSecret};
pub use metrics::Metrics;
pub use server::ownership::{MissingKey, Mode, Ownership, OwnershipLayer};
pub use server::session::{Member, MemberPod, SessionLayer};
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
