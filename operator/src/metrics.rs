//! The operator's Prometheus metrics (prefix `locus_operator_`), served on `/metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `reconcile_duration_seconds` | histogram | `result` (`ok`, `error`) |
//! | `reconcile_errors_total` | counter | `error` ([`crate::Error::metric_label`]) |
//! | `transitions_total` | counter | `kind`, `step` |
//! | `shards_moved_total` | counter | `kind` |
//! | `phase_duration_seconds` | histogram | `phase` (`warm`, `switch`) |
//! | `ring_version` | gauge | `namespace`, `service` |
//! | `writes_total` | counter | `resource`, `verb` |
//! | `api_requests_total` | counter | `verb`, `resource` (every request, reads and watches too; [`crate::api_count`]) |
//! | `leader` | gauge | — (1 while this instance holds the Lease) |
//! | `rebalances_total` | counter | `namespace`, `service` (rebalances by load started) |
//! | `hot_shards` | gauge | `namespace`, `service` (shards too hot for any pod, `status.placement.hotShards`) |

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::plan::StepRecord;

/// Labels of the reconcile histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's metric label.
    pub error: &'static str,
}

/// Labels of the transition counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// What started the transition (`ScaleUp`, ...; `none` for single steps outside one).
    pub kind: String,
    /// The step (`warm`, `switch`, `settle`, ...).
    pub step: &'static str,
}

/// Labels of the shards-moved counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// What started the transition.
    pub kind: String,
}

/// Labels of the phase histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `warm` or `switch`.
    pub phase: &'static str,
}

/// Labels of per-service gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Namespace of the service.
    pub namespace: String,
    /// Name of the service.
    pub service: String,
}

/// Labels of the write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The kind written (`pods`, `configmaps`, `statefulservices/status`, ...).
    pub resource: &'static str,
    /// `apply`, `create`, `patch` or `delete`.
    pub verb: &'static str,
}

/// Labels of the API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `apply`, `patch`, ...).
    pub verb: &'static str,
    /// The resource, with its subresource if any (`pods`, `statefulservices/status`, ...).
    pub resource: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The operator's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Duration of each reconcile.
    pub reconcile_duration: HistogramFamily<ResultLabels>,
    /// Failed reconciles, by error.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Transition steps taken.
    pub transitions: Family<TransitionLabels, Counter>,
    /// Shards whose owner changed.
    pub shards_moved: Family<KindLabels, Counter>,
    /// Time a ring spent in the `Warm` or `Switch` phase.
    pub phase_duration: HistogramFamily<PhaseLabels>,
    /// The last published ring version of each service.
    pub ring_version: Family<ServiceLabels, Gauge<u64, AtomicU64>>,
    /// Writes to the API server.
    pub writes: Family<WriteLabels, Counter>,
    /// Requests sent to the API server (reads, watches and writes).
    pub api_requests: Family<ApiRequestLabels, Counter>,
    /// 1 while this instance leads.
    pub leader: Gauge,
    /// Rebalances by load started, per service.
    pub rebalances: Family<ServiceLabels, Counter>,
    /// Shards too hot for any pod, per service (placement by load).
    pub hot_shards: Family<ServiceLabels, Gauge>,
}

fn reconcile_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn phase_histogram() -> Histogram {
    // 50 ms .. ~14 min
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `locus_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("locus_operator");
        let reconcile_duration: HistogramFamily<ResultLabels> =
            Family::new_with_constructor(reconcile_histogram);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let shards_moved = Family::<KindLabels, Counter>::default();
        let phase_duration: HistogramFamily<PhaseLabels> =
            Family::new_with_constructor(phase_histogram);
        let ring_version = Family::<ServiceLabels, Gauge<u64, AtomicU64>>::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        let leader = Gauge::default();
        let rebalances = Family::<ServiceLabels, Counter>::default();
        let hot_shards = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile of a StatefulService",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error",
            reconcile_errors.clone(),
        );
        registry.register(
            "transitions",
            "Ring transition steps published, by transition kind and step",
            transitions.clone(),
        );
        registry.register(
            "shards_moved",
            "Shards whose owner changed at a switch, by transition kind",
            shards_moved.clone(),
        );
        registry.register(
            "phase_duration_seconds",
            "Time a ring spent in the Warm or Switch phase before the next step",
            phase_duration.clone(),
        );
        registry.register(
            "ring_version",
            "Version of the last ring published for a service",
            ring_version.clone(),
        );
        registry.register(
            "writes",
            "Writes the operator sent to the API server",
            writes.clone(),
        );
        registry.register(
            "api_requests",
            "Requests the operator sent to the API server, by verb and resource",
            api_requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "rebalances",
            "Rebalances by load started (spec.placement.balance Load)",
            rebalances.clone(),
        );
        registry.register(
            "hot_shards",
            "Shards too hot for any pod of a service (status.placement.hotShards)",
            hot_shards.clone(),
        );
        Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            transitions,
            shards_moved,
            phase_duration,
            ring_version,
            writes,
            api_requests,
            leader,
            rebalances,
            hot_shards,
        }
    }

    /// Records what a reconcile of service `labels` decided about placement by load: a
    /// rebalance started (a `Rebalance` transition's `Warm` step) and the hot shards in its
    /// status (`None`: not placing by load, the gauge reads 0).
    pub fn record_placement(
        &self,
        labels: &ServiceLabels,
        steps: &[StepRecord],
        placement: Option<&crate::crd::PlacementStatus>,
    ) {
        let started = steps
            .iter()
            .filter(|s| {
                s.kind == Some(crate::crd::TransitionKind::Rebalance)
                    && s.step == crate::plan::StepKind::Warm
            })
            .count();
        if started > 0 {
            self.rebalances.get_or_create(labels).inc_by(started as u64);
        }
        let hot = placement.map_or(0, |p| p.hot_shards.len());
        self.hot_shards
            .get_or_create(labels)
            .set(i64::try_from(hot).unwrap_or(i64::MAX));
    }

    /// Records the steps a reconcile took.
    pub fn record_steps(&self, steps: &[StepRecord]) {
        for step in steps {
            let kind = step
                .kind
                .map_or_else(|| "none".to_owned(), |k| format!("{k:?}"));
            self.transitions
                .get_or_create(&TransitionLabels {
                    kind: kind.clone(),
                    step: step.step.as_str(),
                })
                .inc();
            if step.shards_moved > 0 {
                self.shards_moved
                    .get_or_create(&KindLabels { kind })
                    .inc_by(u64::from(step.shards_moved));
            }
            if let (Some(seconds), Some(phase)) = (step.phase_seconds, step.left_phase) {
                self.phase_duration
                    .get_or_create(&PhaseLabels {
                        phase: phase.as_str(),
                    })
                    .observe(seconds);
            }
        }
    }

    /// Counts one write.
    pub fn write(&self, resource: &'static str, verb: &'static str) {
        self.writes
            .get_or_create(&WriteLabels { resource, verb })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TransitionKind;
    use crate::plan::StepKind;

    #[test]
    fn steps_show_up_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.record_steps(&[StepRecord {
            kind: Some(TransitionKind::ScaleUp),
            step: StepKind::Switch,
            shards_moved: 12,
            phase_seconds: Some(1.5),
            left_phase: Some(locus_contract::ring::Phase::Warm),
        }]);
        metrics.write("pods", "apply");
        let text = metrics.encode();
        assert!(
            text.contains(r#"locus_operator_transitions_total{kind="ScaleUp",step="switch"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"locus_operator_shards_moved_total{kind="ScaleUp"} 12"#),
            "{text}"
        );
        assert!(
            text.contains(r#"locus_operator_phase_duration_seconds_count{phase="warm"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"locus_operator_writes_total{resource="pods",verb="apply"} 1"#),
            "{text}"
        );
    }
}
