//! The pod's load as Prometheus metrics, pod totals only
//! (no label per shard: a page of 4096 series per pod would cost more than
//! the load it describes).
//!
//! Registered by [`Member::register_metrics`](crate::server::session::Member::register_metrics)
//! (names assume the registry prefix `locus`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `locus_load_requests_total` | counter (summed at scrape) | — |
//! | `locus_load_bytes_total` | counter (summed at scrape) | — |
//! | `locus_load_window_requests_per_second` | gauge | — (the last report window) |
//! | `locus_load_window_hottest_shard_requests_per_second` | gauge | — |
//! | `locus_load_reports_total` | counter | `outcome` (`patched`, `unchanged`, `failed`) |

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ShardLoadReport;
use super::counters::ShardLoadCounters;

type Label = (&'static str, &'static str);

/// What became of one report window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportOutcome {
    /// Written to the pod's annotation.
    Patched,
    /// Within the tolerance of the last one written: not sent.
    Unchanged,
    /// The write failed (retried with the next window).
    Failed,
}

impl ReportOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
        }
    }
}

/// See the [module docs](self); clones share the values.
#[derive(Clone)]
pub(crate) struct LoadMetrics {
    counters: Arc<ShardLoadCounters>,
    window_rate: Gauge<f64, AtomicU64>,
    hottest_rate: Gauge<f64, AtomicU64>,
    reports: Family<[Label; 1], Counter>,
}

impl fmt::Debug for LoadMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadMetrics").finish_non_exhaustive()
    }
}

/// Sums the counters at scrape time: nothing more on the request path.
#[derive(Debug)]
struct Totals(Arc<ShardLoadCounters>);

impl Collector for Totals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let (requests, bytes) = self.0.totals();
        let metric = encoder.encode_descriptor(
            "load_requests",
            "Requests this pod served as the owner of their key (the load it reports)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(requests).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "load_bytes",
            "Request and response body bytes of the requests counted in locus_load_requests_total",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(bytes).encode(metric)?;
        Ok(())
    }
}

impl LoadMetrics {
    pub(crate) fn new(counters: Arc<ShardLoadCounters>) -> Self {
        Self {
            counters,
            window_rate: Gauge::default(),
            hottest_rate: Gauge::default(),
            reports: Family::default(),
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(Totals(Arc::clone(&self.counters))));
        registry.register(
            "load_window_requests_per_second",
            "Requests per second this pod served as owner, over the last load report window",
            self.window_rate.clone(),
        );
        registry.register(
            "load_window_hottest_shard_requests_per_second",
            "Requests per second of this pod's busiest shard, over the last load report window",
            self.hottest_rate.clone(),
        );
        registry.register(
            "load_reports",
            "Load report windows by outcome: patched onto the pod, unchanged (not sent), failed",
            self.reports.clone(),
        );
    }

    /// Records a window's rates.
    pub(crate) fn window(&self, report: &ShardLoadReport) {
        let seconds = f64::from(report.window_seconds.max(1));
        #[allow(clippy::cast_precision_loss, reason = "a rate for a gauge")]
        let rate = |n: u64| n as f64 / seconds;
        self.window_rate.set(rate(report.requests));
        self.hottest_rate
            .set(report.hot.first().map_or(0.0, |l| rate(l.requests)));
    }

    /// Counts a window's outcome.
    pub(crate) fn outcome(&self, outcome: ReportOutcome) {
        self.reports
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
    }

    /// Windows with this outcome so far.
    #[cfg(test)]
    pub(crate) fn outcomes(&self, outcome: ReportOutcome) -> u64 {
        self.reports
            .get_or_create(&[("outcome", outcome.as_str())])
            .get()
    }
}
