//! Errors building an ownership layer.

/// Why an [`OwnershipLayer`](super::OwnershipLayer) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnershipError {
    /// The pod name environment variable is unset or empty.
    #[error("environment variable {env} is unset or empty: it must hold this pod's name")]
    NoPodName {
        /// The variable.
        env: &'static str,
    },
    /// The pod name cannot be sent in an HTTP header.
    #[error("pod name `{name}` is not a valid HTTP header value")]
    InvalidPodName {
        /// The refused name.
        name: String,
    },
}
