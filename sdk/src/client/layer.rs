//! [`RouterLayer`]: the router's configuration, shared by every [`Router`]
//! it builds.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tower::Layer;

use super::budget::RetryBudget;
use super::limit::OwnerLimits;
use super::{Router, SessionKey};
use crate::metrics::Metrics;
use crate::source::{RingSource, RingWatch};

/// Default total time for one routed request, 421 detour included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for a newer ring after a 421.
pub const DEFAULT_MISDIRECT_WAIT: Duration = Duration::from_secs(1);
/// Default largest body kept in memory so it can be sent again after a 421.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 * 1024;
/// Default number of requests in flight to one owner pod.
pub const DEFAULT_OWNER_CONCURRENCY: usize = 256;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) key: SessionKey,
    pub(crate) require_key: bool,
    pub(crate) max_key_bytes: usize,
    pub(crate) timeout: Duration,
    pub(crate) misdirect_wait: Duration,
    pub(crate) max_replay_bytes: usize,
    pub(crate) limits: Arc<OwnerLimits>,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) metrics: Option<Metrics>,
    /// Round-robin position for keyless requests.
    pub(crate) next_member: Arc<AtomicUsize>,
}

fn default_budget() -> RetryBudget {
    // Retries may add 20 % to the request rate, plus 10 per second so a
    // quiet router can still follow a 421; deposits count for 10 s.
    RetryBudget::new(Duration::from_secs(10), 10, 0.2)
}

/// Builds [`Router`]s: routes each request to the pod that owns its session
/// key under the ring of a [`RingSource`].
///
/// Defaults: key from header [`x-locus-session`](crate::headers::SESSION),
/// required, at most [`DEFAULT_MAX_KEY_BYTES`](crate::DEFAULT_MAX_KEY_BYTES);
/// timeout [`DEFAULT_TIMEOUT`]; 421 wait [`DEFAULT_MISDIRECT_WAIT`]; replay
/// bodies up to [`DEFAULT_MAX_REPLAY_BYTES`]; [`DEFAULT_OWNER_CONCURRENCY`]
/// requests in flight per owner; retry budget 20 % + 10/s over 10 s.
///
/// Routers built by one layer (and their clones) share the per-owner limits
/// and the retry budget.
#[derive(Clone)]
pub struct RouterLayer {
    ring: RingWatch,
    config: Config,
}

impl fmt::Debug for RouterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterLayer")
            .field("key", &self.config.key)
            .field("require_key", &self.config.require_key)
            .field("max_key_bytes", &self.config.max_key_bytes)
            .field("timeout", &self.config.timeout)
            .field("misdirect_wait", &self.config.misdirect_wait)
            .field("max_replay_bytes", &self.config.max_replay_bytes)
            .field("owner_concurrency", &self.config.limits.limit())
            .finish_non_exhaustive()
    }
}

impl RouterLayer {
    /// A layer routing by the ring of `source`, with the defaults.
    pub fn new(source: impl RingSource) -> Self {
        Self {
            ring: source.watch(),
            config: Config {
                key: SessionKey::default(),
                require_key: true,
                max_key_bytes: crate::DEFAULT_MAX_KEY_BYTES,
                timeout: DEFAULT_TIMEOUT,
                misdirect_wait: DEFAULT_MISDIRECT_WAIT,
                max_replay_bytes: DEFAULT_MAX_REPLAY_BYTES,
                limits: Arc::new(OwnerLimits::new(DEFAULT_OWNER_CONCURRENCY)),
                budget: Arc::new(default_budget()),
                metrics: None,
                next_member: Arc::new(AtomicUsize::new(0)),
            },
        }
    }

    /// Where the session key comes from.
    #[must_use]
    pub fn session_key(mut self, key: SessionKey) -> Self {
        self.config.key = key;
        self
    }

    /// Whether a request without a key fails with
    /// [`RouteError::NoKey`](super::RouteError::NoKey) (`true`, the default)
    /// or goes to any serving member, round robin (`false`).
    #[must_use]
    pub fn require_key(mut self, required: bool) -> Self {
        self.config.require_key = required;
        self
    }

    /// Longest session key accepted, in bytes.
    #[must_use]
    pub fn max_key_bytes(mut self, max: usize) -> Self {
        self.config.max_key_bytes = max;
        self
    }

    /// Total time for one request, including a 421 detour.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Longest wait, after a 421, for the ring source to deliver a ring at
    /// least as new as the answering pod's (default 1 s). Past it the router
    /// retries at the owner the pod named.
    #[must_use]
    pub fn misdirect_wait(mut self, wait: Duration) -> Self {
        self.config.misdirect_wait = wait;
        self
    }

    /// Largest request body kept in memory so the request can be retried
    /// after a 421; with 0 only requests with an empty body are retried.
    #[must_use]
    pub fn max_replay_bytes(mut self, max: usize) -> Self {
        self.config.max_replay_bytes = max;
        self
    }

    /// Requests in flight to one owner before new ones fail with
    /// [`RouteError::OwnerOverloaded`](super::RouteError::OwnerOverloaded).
    #[must_use]
    pub fn owner_concurrency(mut self, limit: usize) -> Self {
        self.config.limits = Arc::new(OwnerLimits::new(limit));
        self
    }

    /// The retry budget (the rule of tower's `TpsBudget`): deposits count for `ttl`,
    /// at least `min_per_sec` retries per second, plus `retry_percent` of the
    /// request rate (0.2 = 20 %). Values outside what the budget accepts are
    /// clamped: `ttl` to 1–60 s, `retry_percent` to 0–1000, `min_per_sec`
    /// below `i32::MAX`.
    #[must_use]
    pub fn retry_budget(mut self, ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let retry_percent = if retry_percent.is_nan() {
            0.0
        } else {
            retry_percent.clamp(0.0, 1000.0)
        };
        let min_per_sec = min_per_sec.min(i32::MAX.unsigned_abs() - 1);
        self.config.budget = Arc::new(RetryBudget::new(ttl, min_per_sec, retry_percent));
        self
    }

    /// Counts requests, outcomes and 421s into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.config.metrics = Some(metrics);
        self
    }
}

impl<S> Layer<S> for RouterLayer {
    type Service = Router<S>;

    fn layer(&self, inner: S) -> Router<S> {
        Router::from_parts(inner, self.ring.clone(), Arc::new(self.config.clone()))
    }
}
