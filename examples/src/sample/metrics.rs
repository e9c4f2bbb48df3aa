//! The sample's own metrics, beside the SDK's and the store's.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sample_appends_total` | counter | `outcome` (`applied`, `duplicate`, or the refusal's label) |
//! | `sample_reads_total` | counter | `outcome` (`ok`, or the refusal's label) |
//! | `sample_sessions_served_total` | counter | `cache` (`warm`, `cold`, `stateless`) |

use locus::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::handlers::Cache;

type Label = (&'static str, &'static str);

/// Counters of the sample's requests; clones share them.
#[derive(Debug, Clone, Default)]
pub struct SampleMetrics {
    appends: Family<[Label; 1], Counter>,
    reads: Family<[Label; 1], Counter>,
    served: Family<[Label; 1], Counter>,
}

impl SampleMetrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the counters under prefix `sample` into the process's
    /// metrics, beside the SDK's (`/metrics` renders them all). Call it
    /// once.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register_with(|registry| {
            let registry = registry.sub_registry_with_prefix("sample");
            registry.register(
                "appends",
                "Appends by outcome: applied, duplicate, or why they were refused",
                self.appends.clone(),
            );
            registry.register(
                "reads",
                "Session reads by outcome: ok, or why they were refused",
                self.reads.clone(),
            );
            registry.register(
                "sessions_served",
                "Answered session requests by where the session was: warm (in memory), cold (loaded or created), stateless (PostgreSQL)",
                self.served.clone(),
            );
        });
    }

    pub(crate) fn append(&self, outcome: &'static str) {
        self.appends.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub(crate) fn read(&self, outcome: &'static str) {
        self.reads.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub(crate) fn cache(&self, cache: Cache) {
        self.served
            .get_or_create(&[("cache", cache.as_str())])
            .inc();
    }

    /// Appends counted with `outcome` so far.
    pub fn appends_total(&self, outcome: &'static str) -> u64 {
        self.appends.get_or_create(&[("outcome", outcome)]).get()
    }
}
