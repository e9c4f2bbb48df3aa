//! The crate's error: what failed while setting up or running the sample
//! service or the load generator.
//!
//! Request-level refusals are not errors of this type: the sample answers
//! them over HTTP (see [`crate::sample`]) and the load generator counts them
//! by kind (see [`crate::loadgen`]).

use std::net::SocketAddr;
use std::path::PathBuf;

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line flag or environment variable is missing or invalid.
    #[error("{what}: {reason}")]
    Config {
        /// The flag or variable (or the combination) at fault.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {}: {reason}", path.as_ref().map_or_else(|| "(inferred)".to_owned(), |p| p.display().to_string()))]
    Kubeconfig {
        /// The file given, if any.
        path: Option<PathBuf>,
        /// The loader's error.
        reason: String,
    },
    /// A Kubernetes client could not be built.
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// PostgreSQL could not be reached or set up.
    #[error(transparent)]
    Postgres(#[from] crate::postgres::PgError),
    /// The session store refused its configuration.
    #[error("session store: {0}")]
    Store(#[from] locus::StoreError),
    /// The ownership layer refused its configuration.
    #[error("ownership layer: {0}")]
    Ownership(#[from] locus::server::ownership::OwnershipError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
    /// The load generator's HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// A configuration error for `what`.
    pub fn config(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
