//! Errors of handoff calls to another pod.

use std::time::Duration;

use http::StatusCode;

use super::wire::WireError;
use crate::BoxError;

/// Why a handoff call to another pod failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// Nothing listens at the pod's address (connection refused). Not proof
    /// that the pod is gone (its process may be restarting, or a partition
    /// rejects): first touches keep asking; a drain writes what it could not
    /// deliver through the persistence.
    #[error("pod {pod} is unreachable (nothing listens at its address): {source}")]
    Unreachable {
        /// The pod called.
        pod: String,
        /// The transport's error.
        source: BoxError,
    },
    /// The call failed in transit (reset, broken connection, ...); it may be
    /// retried.
    #[error("handoff call to pod {pod} failed: {source}")]
    Failed {
        /// The pod called.
        pod: String,
        /// The transport's error.
        source: BoxError,
    },
    /// No complete answer within the call's timeout.
    #[error("pod {pod} did not answer the handoff call within {after:?}")]
    Timeout {
        /// The pod called.
        pod: String,
        /// The timeout.
        after: Duration,
    },
    /// The pod refused the shared secret (401): the pods disagree on it.
    #[error("pod {pod} refused the handoff secret")]
    Unauthorized {
        /// The pod called.
        pod: String,
    },
    /// The pod answered another status than 200.
    #[error("pod {pod} answered {status}: {message}")]
    Status {
        /// The pod called.
        pod: String,
        /// Its status.
        status: StatusCode,
        /// The start of its answer.
        message: String,
    },
    /// The answer is not valid handoff frames (or was cut short).
    #[error("invalid handoff answer from pod {pod}: {source}")]
    Protocol {
        /// The pod called.
        pod: String,
        /// What was wrong.
        source: WireError,
    },
    /// The request could not be built or encoded.
    #[error("cannot build the handoff request for pod {pod}: {reason}")]
    Request {
        /// The pod called.
        pod: String,
        /// Why.
        reason: String,
    },
}

impl HandoffError {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Failed { .. } => "failed",
            Self::Timeout { .. } => "timeout",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Status { .. } => "status",
            Self::Protocol { .. } => "protocol",
            Self::Request { .. } => "request",
        }
    }

    /// True if the pod is known to be gone (nothing listens at its address).
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}
