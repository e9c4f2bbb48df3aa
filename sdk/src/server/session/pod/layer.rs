//! [`MemberLayer`]: the one layer a member pod puts around its application.

use std::fmt;

use tower::Layer;

use crate::server::ownership::{Ownership, OwnershipLayer};
use crate::server::session::{SessionLayer, SessionService};

/// The whole server side of a member pod as one tower layer; get it from
/// [`MemberPod::layer`](super::MemberPod::layer) and put it around the
/// application last (with axum: `router.layer(pod.layer())` after every
/// route and `merge`, so that it also sees requests no route matches).
///
/// The stack it builds, outermost first:
///
/// 1. the ownership check ([`OwnershipLayer`]): forward (or answer 421 for)
///    keys this pod does not own. Paths under `/_locus/` and the probe
///    paths (`/healthz`, `/readyz`, `/livez`, `/metrics` by default) pass
///    through: they carry no session key;
/// 2. the session layer ([`SessionLayer`]): answers the handoff endpoints
///    under `/_locus/` itself — no route of the application is needed for
///    them — then the in-flight gate and the take-over of gained keys;
/// 3. the application.
#[derive(Clone)]
pub struct MemberLayer {
    ownership: OwnershipLayer,
    session: SessionLayer,
}

impl fmt::Debug for MemberLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberLayer")
            .field("ownership", &self.ownership)
            .field("session", &self.session)
            .finish()
    }
}

impl MemberLayer {
    pub(super) fn new(ownership: OwnershipLayer, session: SessionLayer) -> Self {
        Self { ownership, session }
    }
}

impl<S> Layer<S> for MemberLayer {
    type Service = Ownership<SessionService<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        // Outermost: the ownership decision comes before any session work.
        self.ownership.layer(self.session.layer(inner))
    }
}
