//! [`PodError`]: why a [`MemberPod`](super::MemberPod) could not be built or
//! run.

use crate::handoff::SecretError;
use crate::server::ownership::OwnershipError;
use crate::server::session::MemberError;

/// Why a [`MemberPod`](super::MemberPod) could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodError {
    /// A setting is missing: neither in the environment nor given to the
    /// builder.
    #[error("{what} is not set ({hint})")]
    Missing {
        /// The setting.
        what: &'static str,
        /// Where it comes from.
        hint: &'static str,
    },
    /// A setting is given but cannot be used.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The handoff secret could not be read or is not valid.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// No Kubernetes client for the ring `ConfigMap` and the progress
    /// reports (no in-cluster credentials, no kubeconfig).
    #[error("cannot create a Kubernetes client for the ring ConfigMap: {0}")]
    KubeClient(#[source] kube::Error),
    /// The member could not be built.
    #[error(transparent)]
    Member(#[from] MemberError),
    /// The ownership layer could not be built.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    /// The SIGTERM handler could not be installed.
    #[error("cannot listen for SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
}
