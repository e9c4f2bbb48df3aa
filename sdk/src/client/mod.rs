//! Client side: route each request to the pod that owns its session key.
//!
//! [`RouterLayer`] builds [`Router`]s over an inner HTTP service (by default
//! [`ReqwestClient`]). Per request, before any I/O: snapshot the ring, extract
//! the [`SessionKey`], refuse keys over the bound, find the owner, fail fast if
//! its slot is unavailable or if it already has the per-owner limit of
//! requests in flight. Then send to `http://<owner address><path?query>` under
//! a timeout, and follow one 421 (see [`Router`]).
//!
//! Replay rule: a body of known size up to `max_replay_bytes` (64 KiB by
//! default) is read into memory before sending, so it can be sent again
//! after a 421; larger or streaming bodies are sent once, and a 421 on them
//! is returned as [`RouteError::Misdirected`]. See [`RouterBody`].
//!
//! ```no_run
//! use std::time::Duration;
//! use locus::{Metrics, ReqwestClient, RouterLayer, StaticRingSource};
//! use tower::{Layer, ServiceExt};
//!
//! # async fn example(source: StaticRingSource) -> Result<(), locus::RouteError> {
//! let router = RouterLayer::new(&source)
//!     .timeout(Duration::from_secs(2))
//!     .owner_concurrency(64)
//!     .metrics(Metrics::new())
//!     .layer(ReqwestClient::new());
//! let request = http::Request::post("/rooms/7/messages")
//!     .header(locus::headers::SESSION, "room-7")
//!     .body("hello".to_owned())
//!     .unwrap();
//! let response = router.oneshot(request).await?;
//! println!("{}", response.status());
//! # Ok(())
//! # }
//! ```

mod body;
mod budget;
mod error;
mod key;
mod layer;
mod limit;
mod reqwest_client;
mod router;

pub use self::body::RouterBody;
pub use self::error::RouteError;
pub use self::key::SessionKey;
pub use self::layer::{
    DEFAULT_MAX_REPLAY_BYTES, DEFAULT_MISDIRECT_WAIT, DEFAULT_OWNER_CONCURRENCY, DEFAULT_TIMEOUT,
    RouterLayer,
};
pub use self::reqwest_client::ReqwestClient;
pub use self::router::Router;
