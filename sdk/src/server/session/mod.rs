//! The pod side of a Locus service beyond the ownership check: the session
//! layer, the handoff endpoints, the transition driver, progress reports,
//! shutdown and fast restarts, tied together by [`Member`].
//!
//! * [`Member`]: built from the pod's name, its ring source and its
//!   [`SessionStore`](crate::store::SessionStore); [`Member::start`] restores
//!   a snapshot and starts the [transition driver](crate::driver);
//!   [`Member::layer`] is the middleware; [`Member::shutdown`] is what the
//!   service calls on SIGTERM.
//! * [`SessionLayer`] / [`SessionService`]: the middleware (see
//!   [`service`](self::SessionService) for the per-request steps).
//! * [`ShutdownIntent`] (restart in the same pod, or the pod goes away) and
//!   where shutdown learns it ([`ShutdownIntentSource`], [`KubePodIntent`]):
//!   a snapshot is written only for a restart; see [`ShutdownIntentSource`].
//!
//! The stack of a pod, outermost first:
//!
//! ```text
//! OwnershipLayer   forward / 421 for keys owned elsewhere; /_locus/ passes through
//! SessionLayer     handoff endpoints; in-flight gate; take over gained keys
//! application      handlers using the SessionStore
//! ```

mod builder;
mod inner;
mod lifecycle;
mod member;
pub mod pod;
mod response;
mod service;
mod shutdown;

pub use self::builder::{
    DEFAULT_COORDINATION_WAIT, DEFAULT_INTENT_TIMEOUT, MemberBuilder, MemberError,
};
pub use self::lifecycle::StartReport;
pub use self::member::Member;
pub use self::pod::{MemberLayer, MemberPod, MemberPodBuilder, PodError, Readiness};
pub use self::service::{SessionBody, SessionLayer, SessionService};
pub use self::shutdown::{ShutdownPath, ShutdownReport};
pub use crate::intent::{IntentError, KubePodIntent, ShutdownIntent, ShutdownIntentSource};
