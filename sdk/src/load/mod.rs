//! Per-shard load: what a member pod serves, counted per shard, and reported
//! to the operator for load-aware placement.
//!
//! * What is counted ([`ShardLoadCounters`]): each request the
//!   [session layer](crate::server::session::SessionLayer) hands to the
//!   application as the owner of its key — after the ownership check, the
//!   in-flight gate and any take-over — once the application answered. It
//!   counts one request and its body bytes: the request body's length plus
//!   the response body's, each from the body's exact size hint (what
//!   `Content-Length` says, or a full body's length) or the `Content-Length`
//!   header; a streamed body of unknown length counts 0. Requests forwarded
//!   to another pod, refused (421, 503) or without a session key (probes,
//!   fan-out) count nothing here. The cost per request: one atomic load and
//!   two relaxed atomic additions, no lock, no allocation.
//! * Windows ([`LoadWindow`]): every report interval the differences since
//!   the last window become a [`ShardLoadReport`]: pod totals and the
//!   [`HOT_SHARDS`] busiest shards of the ring the pod holds.
//! * Reports: the member's progress reporter writes it
//!   ([`ProgressReporter::report_load`](crate::progress::ProgressReporter::report_load));
//!   in Kubernetes that is the pod's own annotation
//!   [`SHARD_LOAD`](crate::ring::annotations::SHARD_LOAD), by server-side
//!   apply with a field manager of its own
//!   ([`LOAD_FIELD_MANAGER`](crate::progress::LOAD_FIELD_MANAGER)). A
//!   window within [`DEFAULT_LOAD_TOLERANCE`] of the last report written is
//!   not sent ([`unchanged`]), but never two in a row: each report carries
//!   its window's end, and the operator refuses one older than three
//!   windows. Default interval
//!   [`DEFAULT_LOAD_REPORT_INTERVAL`], set with
//!   [`MemberPodBuilder::load_report_interval`](crate::server::session::MemberPodBuilder::load_report_interval)
//!   or [`LOAD_REPORT_INTERVAL_ENV`]; zero turns reports off (counting
//!   stays).
//! * Metrics: pod totals, the last window's rates and the reports' outcomes
//!   (see [`metrics`]).

mod counters;
pub mod metrics;
pub(crate) mod reporting;
mod window;

use std::sync::Arc;
use std::time::Duration;

pub use locus_contract::progress::{ShardLoad, ShardLoadReport};

pub use self::counters::ShardLoadCounters;
pub(crate) use self::metrics::LoadMetrics;
pub use self::window::{HOT_SHARDS, LoadWindow, unchanged};

/// Default time between two load reports of a pod.
pub const DEFAULT_LOAD_REPORT_INTERVAL: Duration = Duration::from_secs(15);

/// Environment variable with the load report interval (`15s`, `500ms`,
/// `1m`, or whole seconds; `0` turns reports off), read by
/// [`MemberPod::from_env`](crate::server::session::MemberPod::from_env).
pub const LOAD_REPORT_INTERVAL_ENV: &str = "LOCUS_LOAD_REPORT_INTERVAL";

/// A window whose rates are within this fraction of the last report written
/// is not sent (see [`unchanged`]).
pub const DEFAULT_LOAD_TOLERANCE: f64 = 0.1;

/// A pod's counters and their metrics, shared by the session layer (which
/// counts) and the report task (which reads).
#[derive(Debug)]
pub(crate) struct PodLoad {
    pub(crate) counters: Arc<ShardLoadCounters>,
    pub(crate) metrics: LoadMetrics,
}

impl Default for PodLoad {
    fn default() -> Self {
        let counters = Arc::new(ShardLoadCounters::new());
        Self {
            metrics: LoadMetrics::new(Arc::clone(&counters)),
            counters,
        }
    }
}
