//! [`OwnershipLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tower::Layer;

use super::forward::Forwarder;
use super::{MissingKey, Mode, Ownership, OwnershipError};
use crate::client::SessionKey;
use crate::metrics::Metrics;
use crate::source::{RingSource, RingWatch};

/// Default time a forwarded request may take until the owner's response head.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for this pod's ring to catch up with a caller's newer
/// ring before deciding ownership.
pub const DEFAULT_RING_WAIT: Duration = Duration::from_secs(1);

/// What every [`Ownership`] service built by one layer shares.
pub(crate) struct Shared {
    pub(crate) pod: String,
    pub(crate) pod_header: HeaderValue,
    pub(crate) ring: RingWatch,
    pub(crate) mode: Mode,
    pub(crate) missing_key: MissingKey,
    pub(crate) key: SessionKey,
    pub(crate) max_key_bytes: usize,
    pub(crate) reserved_prefix: String,
    pub(crate) pass_through_paths: Vec<String>,
    pub(crate) retry_after: Duration,
    pub(crate) ring_wait: Duration,
    pub(crate) forwarder: Forwarder,
    pub(crate) metrics: Option<Metrics>,
}

/// Checks that this pod owns each request's key; see the
/// [module docs](super) for the decision order.
#[derive(Clone)]
pub struct OwnershipLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for OwnershipLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnershipLayer")
            .field("pod", &self.shared.pod)
            .field("mode", &self.shared.mode)
            .field("missing_key", &self.shared.missing_key)
            .field("ring_version", &self.shared.ring.version())
            .finish_non_exhaustive()
    }
}

/// Options of an [`OwnershipLayer`].
#[derive(Debug, Clone)]
pub struct OwnershipLayerBuilder {
    pod: String,
    ring: RingWatch,
    mode: Mode,
    missing_key: MissingKey,
    key: SessionKey,
    max_key_bytes: usize,
    reserved_prefix: String,
    pass_through_paths: Vec<String>,
    retry_after: Duration,
    ring_wait: Duration,
    forward_timeout: Duration,
    metrics: Option<Metrics>,
}

impl OwnershipLayer {
    /// Options for pod `pod` (its own name, as in the ring) reading the ring
    /// of `source`.
    pub fn builder(pod: impl Into<String>, source: impl RingSource) -> OwnershipLayerBuilder {
        OwnershipLayerBuilder {
            pod: pod.into(),
            ring: source.watch(),
            mode: Mode::default(),
            missing_key: MissingKey::default(),
            key: SessionKey::default(),
            max_key_bytes: crate::DEFAULT_MAX_KEY_BYTES,
            reserved_prefix: crate::RESERVED_PATH_PREFIX.to_owned(),
            pass_through_paths: Vec::new(),
            retry_after: Duration::from_secs(1),
            ring_wait: DEFAULT_RING_WAIT,
            forward_timeout: DEFAULT_FORWARD_TIMEOUT,
            metrics: None,
        }
    }

    /// A layer with the default options: forward, key required, header key.
    pub fn new(pod: impl Into<String>, source: impl RingSource) -> Result<Self, OwnershipError> {
        Self::builder(pod, source).build()
    }

    /// This pod's name.
    pub fn pod(&self) -> &str {
        &self.shared.pod
    }
}

impl OwnershipLayerBuilder {
    /// Forward requests for keys owned elsewhere, or answer 421.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Pass keyless requests through, or answer 400.
    #[must_use]
    pub fn missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = missing_key;
        self
    }

    /// Where the key comes from (must match the callers' routers).
    #[must_use]
    pub fn session_key(mut self, key: SessionKey) -> Self {
        self.key = key;
        self
    }

    /// Longest key accepted (413 past it).
    #[must_use]
    pub fn max_key_bytes(mut self, max: usize) -> Self {
        self.max_key_bytes = max;
        self
    }

    /// Path prefix that passes through unchecked (default `/_locus/`).
    #[must_use]
    pub fn reserved_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.reserved_prefix = prefix.into();
        self
    }

    /// A path (exact match) that passes through unchecked, like the
    /// reserved prefix: the probes and `/metrics` of a layer that wraps the
    /// whole application. May be given several times.
    #[must_use]
    pub fn pass_through_path(mut self, path: impl Into<String>) -> Self {
        self.pass_through_paths.push(path.into());
        self
    }

    /// `Retry-After` on 503 answers (rounded up to whole seconds).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Longest wait for this pod's ring to reach a caller's newer version.
    #[must_use]
    pub fn ring_wait(mut self, wait: Duration) -> Self {
        self.ring_wait = wait;
        self
    }

    /// Time a forwarded request may take until the owner's response head.
    #[must_use]
    pub fn forward_timeout(mut self, timeout: Duration) -> Self {
        self.forward_timeout = timeout;
        self
    }

    /// Counts decisions, forwards and 421s into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Builds the layer; fails only if the pod name is not a valid header
    /// value (pod names are DNS names, so they always are).
    pub fn build(self) -> Result<OwnershipLayer, OwnershipError> {
        let pod_header =
            HeaderValue::from_str(&self.pod).map_err(|_| OwnershipError::InvalidPodName {
                name: self.pod.clone(),
            })?;
        Ok(OwnershipLayer {
            shared: Arc::new(Shared {
                pod: self.pod,
                pod_header,
                ring: self.ring,
                mode: self.mode,
                missing_key: self.missing_key,
                key: self.key,
                max_key_bytes: self.max_key_bytes,
                reserved_prefix: self.reserved_prefix,
                pass_through_paths: self.pass_through_paths,
                retry_after: self.retry_after,
                ring_wait: self.ring_wait,
                forwarder: Forwarder::new(self.forward_timeout),
                metrics: self.metrics,
            }),
        })
    }
}

impl<S> Layer<S> for OwnershipLayer {
    type Service = Ownership<S>;

    fn layer(&self, inner: S) -> Ownership<S> {
        Ownership::from_parts(inner, Arc::clone(&self.shared))
    }
}
