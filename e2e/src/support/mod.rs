//! What the end-to-end tests, the demo, the fault-injection suite and the binaries share:
//! one place for each helper that more than one of them needs.
//!
//! | module | what |
//! |---|---|
//! | [`crd`] | the `StatefulService` CRD installed and established |
//! | [`operator`] | `locus-operator` run as a host process (log file, leader election, a shifted clock) |
//! | [`service`] | reading a `StatefulService` back: status settled, its ring, its pods, convergence |
//! | [`prometheus`] | reading values off a Prometheus text page (a pod's `/metrics`) |
//! | [`logs`] | container logs the node agent keeps, a log file's last lines |
//! | [`wait`] | waiting on a condition with a deadline, instead of sleeping |
//!
//! The local cluster itself (starting it, namespaces, random suffixes, the control plane's
//! processes) is [`crate::cluster`]; PostgreSQL for the sample is [`crate::postgres`].

pub mod crd;
pub mod logs;
pub mod operator;
pub mod prometheus;
pub mod service;
pub mod wait;

/// What a shared helper can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A file or process operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A process this program started has exited.
    #[error("{name} exited ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// The process.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// Something needed is not there (a binary, a library).
    #[error("{0}")]
    Missing(String),
    /// A wait ran out.
    #[error("{0}")]
    Timeout(String),
}

/// Logs of a binary of this crate to stderr, filtered by `RUST_LOG` or else `default_filter`
/// (e.g. `"warn"`).
pub fn init_tracing(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
}
