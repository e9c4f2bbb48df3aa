//! Metrics of the handoff protocol and the transition driver.
//!
//! Registered by [`Member::register_metrics`](crate::server::session::Member::register_metrics)
//! (names below assume the registry prefix `locus`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `locus_handoff_records_total` | counter | `op` (`precopy`, `transfer`, `push`, `shutdown`, `promote`), `direction` (`sent`, `received`) |
//! | `locus_handoff_first_touch_total` | counter | `path` (`unchanged`, `transferred`, `promoted`, `loaded`, `cold`) |
//! | `locus_handoff_takeovers_total` | counter | `path` ([`TakeoverPath`](crate::progress::TakeoverPath): `precopied`, `transferred`, `pushed`, `promoted`, `absent`, `rolledForward`, `fencedLoad`), `cache` (`warm`, `cold`) |
//! | `locus_handoff_takeovers_served_total` | counter | `cache` (`warm`, `cold`): the first request served for a key taken over |
//! | `locus_handoff_rolled_forward_total` | counter | `phase` (`warm`, `transfer`, `drain`, `shutdown`) |
//! | `locus_handoff_refused_total` | counter | `reason` (`unauthorized`, `not_owner`, `ring_behind`, `busy`, `failed`, `too_large`, `bad_request`) |
//! | `locus_handoff_call_errors_total` | counter | `op`, `error` ([`HandoffError::metric_label`](super::HandoffError::metric_label)) |
//! | `locus_handoff_records_dropped_total` | counter | — (handed off, never acknowledged by the new owner) |
//! | `locus_handoff_phase_seconds` | histogram | `phase` (`warm`, `drain`, `shutdown`) |
//!
//! A first touch is the first request for a key this pod gained at a Switch
//! that found it not in memory: `unchanged` (the pre-copy was current),
//! `transferred` (the previous owner sent the state), `promoted` (a record
//! pushed here earlier was installed), `loaded` (the previous owner did not
//! hold it: the persistence has the latest state), `cold` (the previous owner
//! was gone or did not answer before the deadline: loaded from the
//! persistence, unpersisted writes of that owner are lost).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Label = (&'static str, &'static str);

fn cache(path: crate::progress::TakeoverPath) -> &'static str {
    if path.is_warm() { "warm" } else { "cold" }
}

fn phase_histogram() -> Histogram {
    // 1 ms … ~65 s in 17 doublings.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The handoff metrics; clones share the values.
#[derive(Clone)]
pub(crate) struct HandoffMetrics {
    records: Family<[Label; 2], Counter>,
    first_touch: Family<[Label; 1], Counter>,
    takeovers: Family<[Label; 2], Counter>,
    served: Family<[Label; 1], Counter>,
    rolled_forward: Family<[Label; 1], Counter>,
    refused: Family<[Label; 1], Counter>,
    call_errors: Family<[Label; 2], Counter>,
    dropped: Counter,
    phase: Family<[Label; 1], Histogram, fn() -> Histogram>,
}

impl Default for HandoffMetrics {
    fn default() -> Self {
        Self {
            records: Family::default(),
            first_touch: Family::default(),
            takeovers: Family::default(),
            served: Family::default(),
            rolled_forward: Family::default(),
            refused: Family::default(),
            call_errors: Family::default(),
            dropped: Counter::default(),
            phase: Family::new_with_constructor(phase_histogram),
        }
    }
}

/// Counts of what the handoff code of one pod did, read from its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandoffStats {
    /// Records received by pre-copy.
    pub precopied: u64,
    /// Records this pod sent in answer to pre-copies.
    pub precopy_sent: u64,
    /// Records (or "unchanged") this pod handed off in answer to transfers.
    pub transfer_sent: u64,
    /// Records received by transfer.
    pub transfer_received: u64,
    /// Records this pod pushed (drain and SIGTERM drain).
    pub pushed: u64,
    /// Records pushed to this pod.
    pub push_received: u64,
    /// Records pushed here before this pod owned their keys, installed at
    /// the switch that made it their owner.
    pub promoted: u64,
    /// First touches that found the pre-copy current.
    pub first_touch_unchanged: u64,
    /// First touches that received the state by transfer.
    pub first_touch_transferred: u64,
    /// First touches served from a record pushed here before.
    pub first_touch_promoted: u64,
    /// First touches the previous owner did not hold in memory.
    pub first_touch_loaded: u64,
    /// First touches that rolled forward to a cold load.
    pub first_touch_cold: u64,
    /// Phases that rolled forward on a timeout or a gone peer.
    pub rolled_forward: u64,
    /// Handoff requests refused by this pod, any reason.
    pub refused: u64,
    /// Records handed off and never acknowledged.
    pub dropped: u64,
}

impl HandoffMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "handoff_records",
            "Session records moved by the handoff protocol",
            self.records.clone(),
        );
        registry.register(
            "handoff_first_touch",
            "First requests for a gained key that was not in memory, by how it got here",
            self.first_touch.clone(),
        );
        registry.register(
            "handoff_takeovers",
            "Keys taken over in a transition, counted once each, by the path that brought them",
            self.takeovers.clone(),
        );
        registry.register(
            "handoff_takeovers_served",
            "First requests served for keys taken over, by whether they arrived warm",
            self.served.clone(),
        );
        registry.register(
            "handoff_rolled_forward",
            "Transition phases that rolled forward on a timeout or a gone peer",
            self.rolled_forward.clone(),
        );
        registry.register(
            "handoff_refused",
            "Handoff requests refused by this pod",
            self.refused.clone(),
        );
        registry.register(
            "handoff_call_errors",
            "Failed handoff calls to other pods",
            self.call_errors.clone(),
        );
        registry.register(
            "handoff_records_dropped",
            "Records handed off and never acknowledged by their new owner",
            self.dropped.clone(),
        );
        registry.register_with_unit(
            "handoff_phase",
            "Duration of the pre-copy, drain and shutdown phases",
            Unit::Seconds,
            self.phase.clone(),
        );
    }

    pub(crate) fn records(&self, op: &'static str, direction: &'static str, n: u64) {
        self.records
            .get_or_create(&[("op", op), ("direction", direction)])
            .inc_by(n);
    }

    pub(crate) fn first_touch(&self, path: &'static str) {
        self.first_touch.get_or_create(&[("path", path)]).inc();
    }

    pub(crate) fn takeover(&self, path: crate::progress::TakeoverPath) {
        self.takeovers
            .get_or_create(&[("path", path.as_str()), ("cache", cache(path))])
            .inc();
    }

    pub(crate) fn served(&self, path: crate::progress::TakeoverPath) {
        self.served.get_or_create(&[("cache", cache(path))]).inc();
    }

    pub(crate) fn rolled_forward(&self, phase: &'static str) {
        self.rolled_forward.get_or_create(&[("phase", phase)]).inc();
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&[("reason", reason)]).inc();
    }

    pub(crate) fn call_error(&self, op: &'static str, error: &'static str) {
        self.call_errors
            .get_or_create(&[("op", op), ("error", error)])
            .inc();
    }

    pub(crate) fn dropped(&self, n: u64) {
        self.dropped.inc_by(n);
    }

    pub(crate) fn phase(&self, phase: &'static str, took: Duration) {
        self.phase
            .get_or_create(&[("phase", phase)])
            .observe(took.as_secs_f64());
    }

    fn count2(&self, op: &'static str, direction: &'static str) -> u64 {
        self.records
            .get_or_create(&[("op", op), ("direction", direction)])
            .get()
    }

    pub(crate) fn stats(&self) -> HandoffStats {
        let touch = |path| self.first_touch.get_or_create(&[("path", path)]).get();
        let phases = ["warm", "transfer", "drain", "shutdown"];
        let reasons = [
            "unauthorized",
            "not_owner",
            "ring_behind",
            "busy",
            "failed",
            "too_large",
            "bad_request",
        ];
        HandoffStats {
            precopied: self.count2("precopy", "received"),
            precopy_sent: self.count2("precopy", "sent"),
            transfer_sent: self.count2("transfer", "sent"),
            transfer_received: self.count2("transfer", "received"),
            pushed: self.count2("push", "sent") + self.count2("shutdown", "sent"),
            push_received: self.count2("push", "received"),
            promoted: self.count2("promote", "received"),
            first_touch_unchanged: touch("unchanged"),
            first_touch_transferred: touch("transferred"),
            first_touch_promoted: touch("promoted"),
            first_touch_loaded: touch("loaded"),
            first_touch_cold: touch("cold"),
            rolled_forward: phases
                .iter()
                .map(|p| self.rolled_forward.get_or_create(&[("phase", p)]).get())
                .sum(),
            refused: reasons
                .iter()
                .map(|r| self.refused.get_or_create(&[("reason", r)]).get())
                .sum(),
            dropped: self.dropped.get(),
        }
    }
}
