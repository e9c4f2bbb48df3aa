//! The store's Prometheus metrics: cold and warm latency apart, evictions,
//! write-backs, refusals, loads, and gauges of what is held.
//!
//! Registered by [`SessionStore::register_metrics`](super::SessionStore::register_metrics)
//! into the caller's registry (names below assume the registry prefix `locus`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `locus_store_access_seconds` | histogram | `op` (`read`, `update`), `path` (`warm`, `cold`) |
//! | `locus_store_evictions_total` | counter | `reason` (`idle`, `pressure`, `handoff`) |
//! | `locus_store_write_backs_total` | counter | `result` (`ok`, `failed`) |
//! | `locus_store_rejections_total` | counter | `reason` ([`StoreError::metric_label`](super::StoreError::metric_label)) |
//! | `locus_store_loads_total` | counter | `result` (`found`, `new`, `failed`) |
//! | `locus_store_sessions` | gauge | — |
//! | `locus_store_resident_bytes` | gauge | — |
//! | `locus_store_loading` | gauge | — |
//! | `locus_store_tombstones` | gauge | — |
//! | `locus_snapshot_deferred_decode_failures_total` | counter | — |
//!
//! A *cold* access waited for a load through the persistence; a *warm* one
//! found the session in memory. Durations include waiting for the session's
//! lock and running the caller's closure.
//!
//! A *deferred decode failure* is a session a snapshot restore left encoded
//! whose bytes did not decode (or decoded too heavy) on first use: dropped
//! from memory and loaded from the persistence instead
//! (`docs/adr/0005-restore-without-building-the-heap.md`).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Label = (&'static str, &'static str);

/// Which operation an access was.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Read,
    Update,
}

/// Why a session left memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    Idle,
    Pressure,
    Handoff,
}

impl Eviction {
    fn label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Pressure => "pressure",
            Self::Handoff => "handoff",
        }
    }
}

/// How a load ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LoadResult {
    Found,
    New,
    Failed,
}

fn access_histogram() -> Histogram {
    // 50 µs .. about 1.6 s in 16 doublings.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The store's metrics; clones share the values.
#[derive(Clone)]
pub(crate) struct StoreMetrics {
    access: Family<[Label; 2], Histogram, fn() -> Histogram>,
    evictions: Family<[Label; 1], Counter>,
    write_backs: Family<[Label; 1], Counter>,
    rejections: Family<[Label; 1], Counter>,
    loads: Family<[Label; 1], Counter>,
    sessions: Gauge,
    bytes: Gauge,
    loading: Gauge,
    tombstones: Gauge,
    deferred_decode_failures: Counter,
    // Handles of the hot series, so the request path takes no family lock.
    read_warm: Histogram,
    read_cold: Histogram,
    update_warm: Histogram,
    update_cold: Histogram,
    write_back_ok: Counter,
    write_back_failed: Counter,
}

impl StoreMetrics {
    pub fn new() -> Self {
        let access = Family::<[Label; 2], Histogram, fn() -> Histogram>::new_with_constructor(
            access_histogram,
        );
        let series = |op, path| access.get_or_create_owned(&[("op", op), ("path", path)]);
        let (read_warm, read_cold) = (series("read", "warm"), series("read", "cold"));
        let (update_warm, update_cold) = (series("update", "warm"), series("update", "cold"));
        let write_backs = Family::<[Label; 1], Counter>::default();
        let write_back_ok = write_backs.get_or_create_owned(&[("result", "ok")]);
        let write_back_failed = write_backs.get_or_create_owned(&[("result", "failed")]);
        Self {
            access,
            evictions: Family::default(),
            write_backs,
            rejections: Family::default(),
            loads: Family::default(),
            sessions: Gauge::default(),
            bytes: Gauge::default(),
            loading: Gauge::default(),
            tombstones: Gauge::default(),
            deferred_decode_failures: Counter::default(),
            read_warm,
            read_cold,
            update_warm,
            update_cold,
            write_back_ok,
            write_back_failed,
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "store_access",
            "Time to read or update a session, cold (loaded) or warm (resident)",
            Unit::Seconds,
            self.access.clone(),
        );
        registry.register(
            "store_evictions",
            "Sessions that left memory, by reason",
            self.evictions.clone(),
        );
        registry.register(
            "store_write_backs",
            "Write-backs of changed sessions through the persistence, by result",
            self.write_backs.clone(),
        );
        registry.register(
            "store_rejections",
            "Store operations refused or failed, by reason",
            self.rejections.clone(),
        );
        registry.register(
            "store_loads",
            "Loads through the persistence, by result",
            self.loads.clone(),
        );
        registry.register(
            "store_sessions",
            "Sessions resident in memory",
            self.sessions.clone(),
        );
        registry.register_with_unit(
            "store_resident",
            "Weight of the resident sessions",
            Unit::Bytes,
            self.bytes.clone(),
        );
        registry.register("store_loading", "Loads in flight", self.loading.clone());
        registry.register(
            "store_tombstones",
            "Keys handed off to another owner, still answered with a redirect",
            self.tombstones.clone(),
        );
        registry.register(
            "snapshot_deferred_decode_failures",
            "Sessions a snapshot restore left encoded whose bytes did not decode on first use (loaded from the persistence instead)",
            self.deferred_decode_failures.clone(),
        );
    }

    pub fn access(&self, op: Op, cold: bool, took: Duration) {
        let series = match (op, cold) {
            (Op::Read, false) => &self.read_warm,
            (Op::Read, true) => &self.read_cold,
            (Op::Update, false) => &self.update_warm,
            (Op::Update, true) => &self.update_cold,
        };
        series.observe(took.as_secs_f64());
    }

    pub fn eviction(&self, reason: Eviction) {
        self.evictions
            .get_or_create(&[("reason", reason.label())])
            .inc();
    }

    pub fn write_back(&self, ok: bool) {
        if ok {
            self.write_back_ok.inc();
        } else {
            self.write_back_failed.inc();
        }
    }

    pub fn rejection(&self, reason: &'static str) {
        self.rejections.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn load(&self, result: LoadResult) {
        let label = match result {
            LoadResult::Found => "found",
            LoadResult::New => "new",
            LoadResult::Failed => "failed",
        };
        self.loads.get_or_create(&[("result", label)]).inc();
    }

    pub fn deferred_decode_failure(&self) {
        self.deferred_decode_failures.inc();
    }

    /// Deferred decodes that failed so far.
    #[cfg(test)]
    pub fn deferred_decode_failures(&self) -> u64 {
        self.deferred_decode_failures.get()
    }

    pub fn gauges(&self, sessions: usize, bytes: usize, loading: usize, tombstones: usize) {
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions.set(as_i64(sessions));
        self.bytes.set(as_i64(bytes));
        self.loading.set(as_i64(loading));
        self.tombstones.set(as_i64(tombstones));
    }
}
