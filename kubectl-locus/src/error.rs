//! The plugin's one error type: what could not be read, naming the object.

use std::path::PathBuf;

/// Why the status could not be shown. Each message names what failed; the binary prints it
/// after `error: ` and exits with code 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `StatefulService` of that name in that namespace.
    #[error("statefulservice {namespace}/{name} not found")]
    NotFound {
        /// The namespace looked in.
        namespace: String,
        /// The service's name.
        name: String,
    },
    /// The kubeconfig given with `--kubeconfig` could not be read or used.
    #[error("cannot use kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No configuration found: no `--kubeconfig`, no usable `KUBECONFIG` or `~/.kube/config`,
    /// not in a cluster.
    #[error("cannot find a cluster to talk to: {source}")]
    Infer {
        /// The cause.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The configuration did not make a client (bad TLS material, bad proxy).
    #[error("cannot build a client for the cluster: {source}")]
    Client {
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A request to the API server failed.
    #[error("cannot {action}: {source}")]
    Api {
        /// What was being read, with the object's namespace and name.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The report could not be encoded as JSON (not expected: every field is plain data).
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The result of the plugin's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
