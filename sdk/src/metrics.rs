//! Prometheus metrics of every Locus part, under the prefix `locus`, and
//! the service's own metrics beside them.
//!
//! One [`Metrics`] value is shared (cheap clones) by the ring source, the
//! router, the ownership layer and fan-out of a process; [`Metrics::encode`]
//! renders the registry in the Prometheus text format for a `/metrics`
//! endpoint ([`Metrics::CONTENT_TYPE`]).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `locus_requests_total` | counter | `side` (`client`, `server`), `outcome` |
//! | `locus_request_duration_seconds` | histogram | `side` |
//! | `locus_forwarded_total` | counter | — |
//! | `locus_misdirected_total` | counter | `direction` (`sent`, `received`) |
//! | `locus_ring_version` | gauge | — |
//! | `locus_ring_age_seconds` | gauge (computed at scrape) | — |
//! | `locus_ring_documents_rejected_total` | counter | `reason` |
//! | `locus_fanout_members_total` | counter | `outcome` |
//! | `locus_snapshot_*` | see [`SnapshotMetrics`](crate::snapshot::SnapshotMetrics) | |
//!
//! Client outcomes are [`RouteError::metric_label`](crate::RouteError::metric_label)
//! or `ok`; server outcomes are `served`, `forwarded`, `passthrough`,
//! `fanout`, `misdirected`, `no_key`, `key_too_long`, `no_ring`,
//! `owner_unavailable`, `forward_failed`. Rejection reasons are
//! [`Rejection::metric_label`](crate::source::Rejection::metric_label).
//!
//! # The service's metrics
//!
//! A service serves one `/metrics` page from the same [`Metrics`]: one
//! registry, encoded once, with one `# EOF`.
//!
//! | what | how |
//! |---|---|
//! | the service's metrics, at any time | [`Metrics::register_with`]: the closure gets the registry's root, e.g. `registry.sub_registry_with_prefix("myservice")` |
//! | other Locus parts that register into a `&mut Registry` ([`SessionStore::register_metrics`](crate::SessionStore::register_metrics), [`Member::register_metrics`](crate::server::session::Member::register_metrics)) | the same, under prefix `locus` |
//! | values computed at scrape time | [`Registry::register_collector`] inside [`Metrics::register_with`] |
//! | labels on every metric (e.g. the service's name) | [`Metrics::from_registry`] with [`Registry::with_labels`] |
//! | another format (protobuf) | [`Metrics::with_registry`] |
//!
//! The registry sits behind a lock held only while a closure registers or
//! while the page is encoded into a `String`, never while it is written to
//! a client. The registry does not check names: a family registered twice
//! is rendered twice, so register each once, under a prefix of the
//! service's own (`locus` is the SDK's).
//!
//! ```
//! use prometheus_client::metrics::counter::Counter;
//!
//! let metrics = locus::Metrics::new();
//! let orders = Counter::<u64>::default();
//! metrics.register_with(|registry| {
//!     registry
//!         .sub_registry_with_prefix("shop")
//!         .register("orders", "Orders placed", orders.clone());
//! });
//! orders.inc();
//! let text = metrics.encode();
//! assert!(text.contains("# TYPE locus_ring_version gauge"));
//! assert!(text.contains("shop_orders_total 1"));
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Label = (&'static str, &'static str);

/// Which side of a hop a request metric was recorded on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A caller's router.
    Client,
    /// A service pod's ownership layer.
    Server,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// The metrics of one process's Locus parts; clones share the counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Locked only to register or to encode into a `String`.
    registry: Mutex<Registry>,
    requests: Family<[Label; 2], Counter>,
    durations: Family<[Label; 1], Histogram, fn() -> Histogram>,
    forwarded: Counter,
    misdirected: Family<[Label; 1], Counter>,
    ring_version: Gauge,
    ring_received: Arc<Mutex<Option<Instant>>>,
    rejected: Family<[Label; 1], Counter>,
    fanout_members: Family<[Label; 1], Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s in 16 doubling buckets.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Computes `locus_ring_age_seconds` at scrape time from when the held ring
/// was received.
#[derive(Debug)]
struct RingAge {
    received: Arc<Mutex<Option<Instant>>>,
}

impl Collector for RingAge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let received = *self.received.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(received) = received {
            let gauge = ConstGauge::new(received.elapsed().as_secs_f64());
            let metric = encoder.encode_descriptor(
                "ring_age",
                "Time since the ring this process routes by was received",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Content type of [`Metrics::encode`]'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Metrics in a registry of their own with prefix `locus`.
    pub fn new() -> Self {
        Self::from_registry(Registry::default())
    }

    /// Metrics registered under prefix `locus` in `registry`, which may
    /// already hold the service's own metrics and carry labels for every
    /// metric (e.g. the service's name, [`Registry::with_labels`]);
    /// [`Metrics::encode`] then renders all of it. Metrics made later are
    /// added with [`Metrics::register_with`].
    pub fn from_registry(mut registry: Registry) -> Self {
        let sub = registry.sub_registry_with_prefix("locus");
        let requests = Family::<[Label; 2], Counter>::default();
        sub.register(
            "requests",
            "Requests by side (client router or server ownership layer) and outcome",
            requests.clone(),
        );
        let durations: Family<[Label; 1], Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        sub.register_with_unit(
            "request_duration",
            "Time spent in the router (client) or the ownership layer and what it wraps (server)",
            Unit::Seconds,
            durations.clone(),
        );
        let forwarded = Counter::default();
        sub.register(
            "forwarded",
            "Requests a pod forwarded to the owner of their key",
            forwarded.clone(),
        );
        let misdirected = Family::<[Label; 1], Counter>::default();
        sub.register(
            "misdirected",
            "421 Misdirected Request answers, sent by pods or received by routers",
            misdirected.clone(),
        );
        let ring_version = Gauge::default();
        sub.register(
            "ring_version",
            "Version of the ring this process routes by (0: none yet)",
            ring_version.clone(),
        );
        let ring_received = Arc::new(Mutex::new(None));
        sub.register_collector(Box::new(RingAge {
            received: Arc::clone(&ring_received),
        }));
        let rejected = Family::<[Label; 1], Counter>::default();
        sub.register(
            "ring_documents_rejected",
            "Ring documents refused by this process's ring source, by reason",
            rejected.clone(),
        );
        // Process-wide: what this process's snapshot restore and write did.
        crate::snapshot::SnapshotMetrics::process().register(sub);
        let fanout_members = Family::<[Label; 1], Counter>::default();
        sub.register(
            "fanout_members",
            "Fan-out member requests by outcome (answered, timeout, upstream, status, unavailable)",
            fanout_members.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                durations,
                forwarded,
                misdirected,
                ring_version,
                ring_received,
                rejected,
                fanout_members,
            }),
        }
    }

    /// Registers metrics of the service (or of other Locus parts) into this
    /// registry, at any time: `f` gets its root, where the SDK's metrics sit
    /// under prefix `locus`, and its return value is passed back. Every
    /// later [`Metrics::encode`] renders what it registered, on the same
    /// page.
    ///
    /// The registry is locked while `f` runs: `f` must only register (no
    /// I/O, no call back into this `Metrics` or its clones, which would
    /// deadlock). Each family must be registered once: the registry keeps
    /// duplicates and renders them all.
    ///
    /// ```
    /// use prometheus_client::metrics::counter::Counter;
    /// use prometheus_client::metrics::family::Family;
    ///
    /// // Built first, then handed to the ring source, router and layers.
    /// let metrics = locus::Metrics::new();
    ///
    /// // Later: the service's own counters, under its own prefix.
    /// let carts = Family::<[(&'static str, &'static str); 1], Counter>::default();
    /// metrics.register_with(|registry| {
    ///     registry.sub_registry_with_prefix("shop").register(
    ///         "carts",
    ///         "Carts by outcome",
    ///         carts.clone(),
    ///     );
    /// });
    /// carts.get_or_create(&[("outcome", "paid")]).inc();
    ///
    /// let text = metrics.encode();
    /// assert!(text.contains("shop_carts_total{outcome=\"paid\"} 1"));
    /// assert_eq!(text.matches("# EOF").count(), 1);
    /// ```
    pub fn register_with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock_registry())
    }

    /// Runs `f` on the registry, e.g. to encode it in another format; the
    /// registry is locked meanwhile, so `f` should encode into memory and
    /// return, leaving the I/O to the caller.
    pub fn with_registry<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        f(&self.lock_registry())
    }

    /// Renders every metric in the Prometheus (`OpenMetrics`) text format:
    /// the SDK's and all [registered](Metrics::register_with) ones, ending
    /// in one `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in
        // a metric, and a partial page is the most useful answer then.
        let encoded = {
            let registry = self.lock_registry();
            prometheus_client::encoding::text::encode(&mut out, &registry)
        };
        if let Err(error) = encoded {
            tracing::warn!(%error, "encoding metrics failed");
        }
        out
    }

    /// The registry, locked. A panic while it was held (in a caller's
    /// closure) leaves it usable: registering only appends.
    fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request by side and outcome, and its duration.
    pub(crate) fn request(&self, side: Side, outcome: &'static str, elapsed: Duration) {
        self.inner
            .requests
            .get_or_create(&[("side", side.as_str()), ("outcome", outcome)])
            .inc();
        self.inner
            .durations
            .get_or_create(&[("side", side.as_str())])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a request forwarded to its owner.
    pub(crate) fn forwarded(&self) {
        self.inner.forwarded.inc();
    }

    /// Counts a 421 sent by this pod.
    pub(crate) fn misdirected_sent(&self) {
        self.inner
            .misdirected
            .get_or_create(&[("direction", "sent")])
            .inc();
    }

    /// Counts a 421 received by this router.
    pub(crate) fn misdirected_received(&self) {
        self.inner
            .misdirected
            .get_or_create(&[("direction", "received")])
            .inc();
    }

    /// Records that a ring of `version` became the held ring now.
    pub(crate) fn ring_accepted(&self, version: u64, received: Instant) {
        self.inner
            .ring_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        *self
            .inner
            .ring_received
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(received);
    }

    /// Counts a refused ring document.
    pub(crate) fn ring_rejected(&self, reason: &'static str) {
        self.inner
            .rejected
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts one fan-out member request by outcome.
    pub(crate) fn fanout_member(&self, outcome: &'static str) {
        self.inner
            .fanout_members
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Current value of `locus_requests_total{side, outcome}` (for tests and
    /// health checks).
    pub fn requests_total(&self, side: Side, outcome: &'static str) -> u64 {
        self.inner
            .requests
            .get_or_create(&[("side", side.as_str()), ("outcome", outcome)])
            .get()
    }

    /// Current value of `locus_ring_documents_rejected_total{reason}`.
    pub fn rejected_total(&self, reason: &'static str) -> u64 {
        self.inner
            .rejected
            .get_or_create(&[("reason", reason)])
            .get()
    }

    /// Current value of `locus_misdirected_total{direction="received"}`.
    pub fn misdirected_received_total(&self) -> u64 {
        self.inner
            .misdirected
            .get_or_create(&[("direction", "received")])
            .get()
    }

    /// Current value of `locus_misdirected_total{direction="sent"}`.
    pub fn misdirected_sent_total(&self) -> u64 {
        self.inner
            .misdirected
            .get_or_create(&[("direction", "sent")])
            .get()
    }

    /// Current value of `locus_forwarded_total`.
    pub fn forwarded_total(&self) -> u64 {
        self.inner.forwarded.get()
    }

    /// Current value of `locus_ring_version`.
    pub fn ring_version(&self) -> i64 {
        self.inner.ring_version.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_rendered_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.request(Side::Client, "ok", Duration::from_millis(3));
        metrics.request(Side::Server, "forwarded", Duration::from_millis(1));
        metrics.forwarded();
        metrics.misdirected_sent();
        metrics.misdirected_received();
        metrics.ring_accepted(7, Instant::now());
        metrics.ring_rejected("malformed");
        metrics.fanout_member("timeout");
        let text = metrics.encode();
        for line in [
            "locus_requests_total{side=\"client\",outcome=\"ok\"} 1",
            "locus_requests_total{side=\"server\",outcome=\"forwarded\"} 1",
            "locus_forwarded_total 1",
            "locus_misdirected_total{direction=\"sent\"} 1",
            "locus_misdirected_total{direction=\"received\"} 1",
            "locus_ring_version 7",
            "locus_ring_documents_rejected_total{reason=\"malformed\"} 1",
            "locus_fanout_members_total{outcome=\"timeout\"} 1",
            "locus_request_duration_seconds_count{side=\"client\"} 1",
            "# TYPE locus_ring_age_seconds gauge",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert_eq!(metrics.ring_version(), 7);
        assert_eq!(metrics.rejected_total("malformed"), 1);
        // The encoder ends every help text with a period of its own.
        for help in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(!help.ends_with(".."), "{help}");
        }
    }

    #[test]
    fn ring_age_is_absent_until_a_ring_is_held_and_grows_after() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("locus_ring_age_seconds"));
        let received = Instant::now().checked_sub(Duration::from_secs(5)).unwrap();
        metrics.ring_accepted(1, received);
        let text = metrics.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("locus_ring_age_seconds "))
            .unwrap();
        let age: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((5.0..60.0).contains(&age), "{line}");
    }

    #[test]
    fn a_shared_registry_keeps_the_service_metrics() {
        let mut registry = Registry::default();
        let own = Counter::<u64>::default();
        registry.register("chat_messages", "Messages.", own.clone());
        own.inc();
        let metrics = Metrics::from_registry(registry);
        metrics.forwarded();
        let text = metrics.encode();
        assert!(text.contains("chat_messages_total 1"), "{text}");
        assert!(text.contains("locus_forwarded_total 1"), "{text}");
    }

    /// The SDK's families, fed the same requests in every test below.
    /// The page without the process-wide `locus_snapshot_*` lines, which
    /// other tests of this process change at any time.
    fn without_process_metrics(page: &str) -> String {
        page.lines()
            .filter(|l| !l.contains("locus_snapshot_"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn recorded() -> Metrics {
        let metrics = Metrics::new();
        metrics.request(Side::Server, "served", Duration::from_millis(2));
        metrics.forwarded();
        metrics.misdirected_sent();
        metrics.ring_rejected("malformed");
        metrics.fanout_member("answered");
        metrics
    }

    #[test]
    fn a_service_metric_registered_later_is_rendered_once_beside_the_sdk_ones() {
        let metrics = recorded();
        let before = metrics.encode();
        let jobs = Family::<[Label; 1], Counter>::default();
        // Through a clone: every clone shares the one registry.
        metrics.clone().register_with(|registry| {
            registry.sub_registry_with_prefix("svc").register(
                "jobs",
                "Jobs by outcome",
                jobs.clone(),
            );
        });
        jobs.get_or_create(&[("outcome", "done")]).inc();
        let text = metrics.encode();

        assert_eq!(
            text.matches("# TYPE svc_jobs counter\n").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("# HELP svc_jobs Jobs by outcome.\n").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("svc_jobs_total{outcome=\"done\"} 1\n").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        // The SDK's families are rendered as before, the service's added.
        let sdk_only: Vec<&str> = text.lines().filter(|l| !l.contains("svc_jobs")).collect();
        assert_eq!(
            without_process_metrics(&sdk_only.join("\n")),
            without_process_metrics(&before)
        );
        assert_eq!(metrics.forwarded_total(), 1);
    }

    #[test]
    fn a_collector_registered_later_is_computed_at_every_scrape() {
        #[derive(Debug)]
        struct Queue(Arc<Mutex<i64>>);
        impl Collector for Queue {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
                let depth = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
                let metric = encoder.encode_descriptor(
                    "svc_queue_depth",
                    "Queued jobs",
                    None,
                    MetricType::Gauge,
                )?;
                ConstGauge::new(depth).encode(metric)
            }
        }
        let metrics = recorded();
        let depth = Arc::new(Mutex::new(3));
        metrics.register_with(|registry| {
            registry.register_collector(Box::new(Queue(Arc::clone(&depth))));
        });
        assert!(metrics.encode().contains("\nsvc_queue_depth 3\n"));
        *depth.lock().unwrap() = 5;
        let text = metrics.encode();
        assert_eq!(text.matches("svc_queue_depth 5\n").count(), 1, "{text}");
        assert!(!text.contains("svc_queue_depth 3"), "{text}");
        assert!(text.contains("locus_forwarded_total 1\n"), "{text}");
        assert!(text.ends_with("\n# EOF\n"), "{text}");
    }

    #[test]
    fn registration_returns_the_closures_value_and_survives_a_panicking_one() {
        let metrics = recorded();
        let before = without_process_metrics(&metrics.encode());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            metrics.register_with(|_| panic!("a service bug while registering"));
        }));
        assert!(panicked.is_err());
        assert_eq!(
            without_process_metrics(&metrics.encode()),
            before,
            "the lock was poisoned, not the page"
        );
        let gauge = metrics.register_with(|registry| {
            let gauge = Gauge::<i64>::default();
            registry.register("svc_up", "Whether the service is up", gauge.clone());
            gauge
        });
        gauge.set(1);
        let text = metrics.encode();
        assert!(text.contains("\nsvc_up 1\n"), "{text}");
        let size = metrics.with_registry(|registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, registry).map(|()| out.len())
        });
        assert_eq!(size, Ok(text.len()));
    }
}
