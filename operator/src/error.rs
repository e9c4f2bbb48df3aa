//! The operator's one error type. Every variant names the action that failed and the object
//! it failed on; [`Error::metric_label`] gives the short label the error counter uses.
//!
//! [`ConfigError`] apart: a configuration refused at start-up, before anything runs.

use std::net::SocketAddr;

use locus_contract::ring::RingError;

use crate::plan::ObserveError;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `StatefulService` without namespace, name or UID (not from the API server).
    #[error("StatefulService {name:?} has no namespace, name or UID")]
    MissingIdentity {
        /// Whatever name it has.
        name: String,
    },

    /// Reading an object failed.
    #[error("reading {kind} {namespace}/{name}: {source}")]
    Read {
        /// Kind of the object (or `pods` for the list).
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name (the service's, for the list of its pods).
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// A watch cache had not finished its first list in time (the reconcile is retried).
    #[error("the {kind} cache is not ready for {namespace}/{name}")]
    CacheNotReady {
        /// What the cache holds (`pods`, `ConfigMaps`).
        kind: &'static str,
        /// The service's namespace.
        namespace: String,
        /// The service's name.
        name: String,
    },

    /// A server-side apply (or create) failed.
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// Patching a pod's image for an in-place update failed.
    #[error("updating pod {namespace}/{name} in place: {source}")]
    UpdatePod {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// Deleting a pod failed.
    #[error("deleting pod {namespace}/{name}: {source}")]
    DeletePod {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// Writing the status failed.
    #[error("writing the status of StatefulService {namespace}/{name}: {source}")]
    Status {
        /// Namespace of the service.
        namespace: String,
        /// Name of the service.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// The ring `ConfigMap` holds something that is not a valid ring. The operator leaves it
    /// alone (readers only accept newer versions, so overwriting it blindly could strand them);
    /// delete the `ConfigMap` to start a new ring from the status' ring version.
    #[error("the ring ConfigMap {namespace}/{name} cannot be read and is left alone: {source}")]
    InvalidRing {
        /// Namespace of the `ConfigMap`.
        namespace: String,
        /// Name of the `ConfigMap`.
        name: String,
        /// Why it cannot be read.
        #[source]
        source: ObserveError,
    },

    /// The ring `ConfigMap` is not what the plan was made from any more: another writer
    /// created, changed or deleted it since it was read (a request with the `resourceVersion`
    /// read as a precondition, or a create, was refused). Nothing was written; the service is
    /// planned again from a fresh read.
    #[error(
        "the ring ConfigMap {namespace}/{name} changed since it was read (resourceVersion {}): not written, planning again: {source}",
        expected.as_deref().unwrap_or("none: it did not exist")
    )]
    RingConflict {
        /// Namespace of the `ConfigMap`.
        namespace: String,
        /// Name of the `ConfigMap`.
        name: String,
        /// The `resourceVersion` the plan was made from (`None`: it did not exist).
        expected: Option<String>,
        /// The refusal.
        #[source]
        source: kube::Error,
    },

    /// The ring planner refused the service's parameters.
    #[error("planning the ring of StatefulService {namespace}/{name}: {source}")]
    Plan {
        /// Namespace of the service.
        namespace: String,
        /// Name of the service.
        name: String,
        /// The cause.
        #[source]
        source: RingError,
    },

    /// The ring could not be encoded (it would exceed the document limit).
    #[error("encoding the ring of StatefulService {namespace}/{name}: {source}")]
    EncodeRing {
        /// Namespace of the service.
        namespace: String,
        /// Name of the service.
        name: String,
        /// The cause.
        #[source]
        source: RingError,
    },

    /// The handoff key could not be generated.
    #[error("generating the handoff key of StatefulService {namespace}/{name}: {source}")]
    HandoffKey {
        /// Namespace of the service.
        namespace: String,
        /// Name of the service.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// Leader election could not read or write its Lease.
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },

    /// The metrics and health server could not start.
    #[error("serving metrics and health checks on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A short, stable label for the error counter (`locus_operator_reconcile_errors_total`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingIdentity { .. } => "missing_identity",
            Self::Read { .. } => "read",
            Self::CacheNotReady { .. } => "cache_not_ready",
            Self::Apply { .. } => "apply",
            Self::UpdatePod { .. } => "update_pod",
            Self::DeletePod { .. } => "delete_pod",
            Self::Status { .. } => "status",
            Self::InvalidRing { .. } => "invalid_ring",
            Self::RingConflict { .. } => "ring_conflict",
            Self::Plan { .. } => "plan",
            Self::EncodeRing { .. } => "encode_ring",
            Self::HandoffKey { .. } => "handoff_key",
            Self::Lease { .. } => "lease",
            Self::Serve { .. } => "serve",
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object_and_labels_are_short() {
        let error = Error::InvalidRing {
            namespace: "shop".into(),
            name: "cart-ring".into(),
            source: ObserveError::MissingRingKey,
        };
        assert_eq!(
            error.to_string(),
            "the ring ConfigMap shop/cart-ring cannot be read and is left alone: the ConfigMap has no key ring.json"
        );
        assert_eq!(error.metric_label(), "invalid_ring");
    }
}

/// A variable of the operator's environment that [`Config::from_lookup`](crate::Config::from_lookup)
/// refuses; each variant names the variable, the value and what is allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `LOCUS_OPERATOR_METRICS_ADDR` is neither `off` nor a socket address.
    #[error(
        "LOCUS_OPERATOR_METRICS_ADDR={value:?} is not an address such as 0.0.0.0:8080 (or off): {source}"
    )]
    MetricsAddr {
        /// The value given.
        value: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// `LOCUS_OPERATOR_LEADER_ELECTION` is neither `true` nor `false`.
    #[error("LOCUS_OPERATOR_LEADER_ELECTION={value:?}: expected true or false")]
    LeaderElection {
        /// The value given.
        value: String,
    },
}

impl ConfigError {
    /// The environment variable refused.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::MetricsAddr { .. } => "LOCUS_OPERATOR_METRICS_ADDR",
            Self::LeaderElection { .. } => "LOCUS_OPERATOR_LEADER_ELECTION",
        }
    }
}
