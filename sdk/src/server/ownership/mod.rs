//! The ownership layer: a pod serves only the keys it owns under the ring it
//! holds.
//!
//! For each request, in this order:
//!
//! 1. a path under [`RESERVED_PATH_PREFIX`](crate::RESERVED_PATH_PREFIX)
//!    (`/_locus/`, the handoff endpoints), or one of the
//!    [pass-through paths](OwnershipLayerBuilder::pass_through_path)
//!    (probes, metrics), passes through untouched;
//! 2. a fan-out request ([`x-locus-fanout`](crate::headers::FANOUT)) naming
//!    this pod is served; naming another pod, it gets 421;
//! 3. no session key: passed through ([`MissingKey::PassThrough`]) or 400
//!    ([`MissingKey::Reject`], the default);
//! 4. a key over the bound (default 256 bytes): 413;
//! 5. no ring yet: 503 with `Retry-After`;
//! 6. this pod owns the key under its ring: served;
//! 7. the caller's ring ([`x-locus-ring-version`](crate::headers::RING_VERSION))
//!    is newer than ours: wait (bounded, default 1 s) for our source to catch
//!    up, then decide again;
//! 8. the owner's slot is unavailable: 503 with `Retry-After`;
//! 9. the request was already forwarded once ([`x-locus-hop`](crate::headers::HOP)):
//!    421, never a second hop;
//! 10. [`Mode::Forward`] (default): forwarded to the owner with
//!     `x-locus-hop: 1`; [`Mode::Redirect421`]: 421 with
//!     [`x-locus-owner`](crate::headers::OWNER),
//!     [`x-locus-owner-address`](crate::headers::OWNER_ADDRESS) and
//!     [`x-locus-ring-version`](crate::headers::RING_VERSION).
//!
//! Every response carries [`x-locus-pod`](crate::headers::POD): the pod that
//! produced it (a forwarded response keeps the owner's and adds
//! [`x-locus-forwarded-by`](crate::headers::FORWARDED_BY)). The layer never
//! fails a request with an error of its own, so it fits axum's `Router::layer`.
//!
//! ```no_run
//! use locus::{Mode, OwnershipLayer, StaticRingSource};
//!
//! # fn example(source: StaticRingSource) -> Result<(), locus::server::ownership::OwnershipError> {
//! let ownership = OwnershipLayer::builder(locus::server::pod_name_from_env()?, &source)
//!     .mode(Mode::Forward)
//!     .build()?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/rooms/{id}", axum::routing::get(|| async { "hello" }))
//!     .layer(ownership);
//! # Ok(())
//! # }
//! ```

mod error;
mod forward;
mod layer;
pub(crate) mod response;
mod service;

pub use self::error::OwnershipError;
pub use self::layer::{
    DEFAULT_FORWARD_TIMEOUT, DEFAULT_RING_WAIT, OwnershipLayer, OwnershipLayerBuilder,
};
pub use self::service::{Ownership, OwnershipBody};

/// What a pod does with a request for a key it does not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward it to the owner (one hop at most) and relay the answer.
    #[default]
    Forward,
    /// Answer 421 Misdirected Request with the owner hint; the caller's
    /// router refreshes its ring and retries there.
    Redirect421,
}

/// What a pod does with a request that has no session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingKey {
    /// Answer 400 Bad Request.
    #[default]
    Reject,
    /// Serve it locally without an ownership check.
    PassThrough,
}
