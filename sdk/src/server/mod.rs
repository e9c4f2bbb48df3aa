//! Server side: middleware for the service's own HTTP stack (axum, hyper).
//!
//! * [`ownership`]: serve the keys this pod owns; forward the others to their
//!   owner, or answer 421 with an owner hint.
//! * [`session`]: the session layer, handoff endpoints, transition driver and
//!   shutdown of a pod, tied together by [`Member`](session::Member).
//!
//! The session store, handoff endpoints (under
//! [`RESERVED_PATH_PREFIX`](crate::RESERVED_PATH_PREFIX)) and drain gate
//! join as sibling modules.

pub mod ownership;
pub mod session;

pub use crate::own_pod::POD_NAME_ENV;

/// The pod's own name from [`POD_NAME_ENV`].
pub fn pod_name_from_env() -> Result<String, ownership::OwnershipError> {
    match std::env::var(POD_NAME_ENV) {
        Ok(name) if !name.is_empty() => Ok(name),
        _ => Err(ownership::OwnershipError::NoPodName { env: POD_NAME_ENV }),
    }
}
