//! What this process's snapshot code did, as Prometheus metrics: the
//! snapshot restored at start (or ignored) and the one written at shutdown.
//!
//! A restore happens once per process and a write at its end, so these are
//! facts of the process: [`restore`](super::restore) and
//! [`write`](super::write) record into one process-wide [`SnapshotMetrics`]
//! ([`SnapshotMetrics::process`]), and every [`Metrics`](crate::Metrics)
//! registry renders it, so a service's `/metrics` page carries them with no
//! wiring of its own. (Several members in one process, as in the SDK's
//! multi-pod tests, add to the same values.)
//!
//! Names below assume the registry prefix `locus`:
//!
//! | metric | type | what |
//! |---|---|---|
//! | `locus_snapshot_restores_total` | counter, `outcome` (`restored`, `ignored`) | snapshots found at start: restored, or refused (corrupt, foreign, unreadable) |
//! | `locus_snapshot_restored_sessions_total` | counter | sessions installed from snapshots |
//! | `locus_snapshot_restore_records` | gauge | records in the last restored snapshot (what its writer wrote) |
//! | `locus_snapshot_restore_dirty_records` | gauge | of those, records not yet written back to the persistence by the writer |
//! | `locus_snapshot_restore_not_owned_records` | gauge | of those, records of keys this pod no longer owns (skipped) |
//! | `locus_snapshot_restore_bytes` | gauge | size of the last restored snapshot |
//! | `locus_snapshot_restore_seconds` | gauge | time the last restore took (check and install) |
//! | `locus_snapshot_restore_created_timestamp_seconds` | gauge | when the writer of the last restored snapshot started writing it (Unix time) |
//! | `locus_snapshot_writes_total` | counter, `outcome` (`written`, `failed`) | snapshots written at shutdown |
//! | `locus_snapshot_write_records` | gauge | records in the last snapshot written |
//! | `locus_snapshot_write_bytes` | gauge | size of the last snapshot written |
//! | `locus_snapshot_write_seconds` | gauge | time the last write took |
//! | `locus_snapshot_unsaved_records` | gauge | unsaved records of the last restored snapshot whose background write-back has not finished (its file is kept until 0) |
//! | `locus_snapshot_write_back_seconds` | gauge | time the last background write-back took, from its start (right after the restore) |
//! | `locus_snapshot_write_back_done_timestamp_seconds` | gauge | when it finished (Unix time) |
//! | `locus_snapshot_write_back_retries_total` | counter | background write-back rounds in which some write-back failed (retried) |
//! | `locus_snapshot_salvaged_records_total` | counter | unsaved records written back from a file that was not installed (kept aside, left over, keys no longer owned) |
//! | `locus_snapshot_salvage_failures_total` | counter | failed attempts to write such a record (retried before the pod serves) |
//! | `locus_snapshot_kept_aside_total` | counter | files kept aside (`sessions.snapshot.kept-*`): not restored, never deleted |
//! | `locus_snapshot_encoded_bytes` | gauge | bytes of restored snapshots still held: the whole mapped file while any session left encoded until its first use (`docs/adr/0005-restore-without-building-the-heap.md`) or a restore in progress holds a slice of it (on tmpfs these are the file's own pages, not fresh memory, and they stay after the file is unlinked); where a file could not be mapped, the chunk buffers read instead |

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::{SnapshotRestore, SnapshotWritten};

type Label = (&'static str, &'static str);
type Real = Gauge<f64, AtomicU64>;

/// The snapshot metrics; clones share the values.
#[derive(Debug, Clone, Default)]
pub struct SnapshotMetrics {
    restores: Family<[Label; 1], Counter>,
    restored_sessions: Counter,
    restore_records: Gauge,
    restore_dirty: Gauge,
    restore_not_owned: Gauge,
    restore_bytes: Gauge,
    restore_seconds: Real,
    restore_created: Real,
    writes: Family<[Label; 1], Counter>,
    write_records: Gauge,
    write_bytes: Gauge,
    write_seconds: Real,
    unsaved: Gauge,
    write_back_seconds: Real,
    write_back_done: Real,
    write_back_retries: Counter,
    salvaged: Counter,
    salvage_failures: Counter,
    kept_aside: Counter,
    encoded: Gauge,
}

static PROCESS: LazyLock<SnapshotMetrics> = LazyLock::new(SnapshotMetrics::default);

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SnapshotMetrics {
    /// The process's snapshot metrics, which [`restore`](super::restore)
    /// and [`write`](super::write) record into.
    pub fn process() -> &'static Self {
        &PROCESS
    }

    /// Registers the metrics into `registry` (the SDK registers them under
    /// the prefix `locus` in every [`Metrics`](crate::Metrics)).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("snapshot");
        sub.register(
            "restores",
            "Snapshots found at start, by outcome (restored, ignored)",
            self.restores.clone(),
        );
        sub.register(
            "restored_sessions",
            "Sessions installed from snapshots",
            self.restored_sessions.clone(),
        );
        sub.register(
            "restore_records",
            "Records in the last restored snapshot",
            self.restore_records.clone(),
        );
        sub.register(
            "restore_dirty_records",
            "Records of the last restored snapshot its writer had not written back to the persistence",
            self.restore_dirty.clone(),
        );
        sub.register(
            "restore_not_owned_records",
            "Records of the last restored snapshot skipped: keys this pod no longer owns",
            self.restore_not_owned.clone(),
        );
        sub.register_with_unit(
            "restore",
            "Size of the last restored snapshot",
            Unit::Bytes,
            self.restore_bytes.clone(),
        );
        sub.register_with_unit(
            "restore",
            "Time the last snapshot restore took (check and install)",
            Unit::Seconds,
            self.restore_seconds.clone(),
        );
        sub.register_with_unit(
            "restore_created_timestamp",
            "When the writer of the last restored snapshot started writing it (Unix time)",
            Unit::Seconds,
            self.restore_created.clone(),
        );
        sub.register(
            "writes",
            "Snapshots written, by outcome (written, failed)",
            self.writes.clone(),
        );
        sub.register(
            "write_records",
            "Records in the last snapshot written",
            self.write_records.clone(),
        );
        sub.register_with_unit(
            "write",
            "Size of the last snapshot written",
            Unit::Bytes,
            self.write_bytes.clone(),
        );
        sub.register_with_unit(
            "write",
            "Time the last snapshot write took",
            Unit::Seconds,
            self.write_seconds.clone(),
        );
        self.register_write_back(sub);
    }

    /// The background write-back's and the salvage's metrics.
    fn register_write_back(&self, sub: &mut Registry) {
        sub.register(
            "unsaved_records",
            "Unsaved records of the last restored snapshot not written back yet (its file is kept until 0)",
            self.unsaved.clone(),
        );
        sub.register_with_unit(
            "write_back",
            "Time the last background write-back after a restore took",
            Unit::Seconds,
            self.write_back_seconds.clone(),
        );
        sub.register_with_unit(
            "write_back_done_timestamp",
            "When the last background write-back after a restore finished (Unix time)",
            Unit::Seconds,
            self.write_back_done.clone(),
        );
        sub.register(
            "write_back_retries",
            "Background write-back rounds after a restore in which some write-back failed",
            self.write_back_retries.clone(),
        );
        sub.register(
            "salvaged_records",
            "Unsaved records written back from snapshot files that were not installed",
            self.salvaged.clone(),
        );
        sub.register(
            "salvage_failures",
            "Failed attempts to write back a salvaged record (retried)",
            self.salvage_failures.clone(),
        );
        sub.register(
            "kept_aside",
            "Snapshot files kept aside (not restored, never deleted)",
            self.kept_aside.clone(),
        );
        sub.register_with_unit(
            "encoded",
            "Restored snapshots still held by sessions left encoded (or by a restore in progress): whole mapped files, or the chunk buffers of files read",
            Unit::Bytes,
            self.encoded.clone(),
        );
    }

    /// The gauge of restored snapshot bytes held, mapped files or chunk
    /// buffers (`locus_snapshot_encoded_bytes`).
    pub(crate) fn encoded_bytes(&self) -> &Gauge {
        &self.encoded
    }

    /// Records a snapshot restored.
    pub(crate) fn restored(&self, report: &SnapshotRestore) {
        self.restores
            .get_or_create(&[("outcome", "restored")])
            .inc();
        self.restored_sessions
            .inc_by(report.restore.inserted as u64 + report.restore.replaced as u64);
        self.restore_records.set(gauge_value(report.records));
        self.restore_dirty.set(gauge_value(report.dirty));
        self.restore_not_owned.set(gauge_value(report.not_owned));
        self.restore_bytes.set(gauge_value(report.bytes));
        self.restore_seconds.set(report.took.as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // milliseconds since 1970 fit in f64's 53 bits
        self.restore_created
            .set(report.header.created_unix_ms as f64 / 1000.0);
    }

    /// Records a snapshot found and refused.
    pub(crate) fn ignored(&self) {
        self.restores.get_or_create(&[("outcome", "ignored")]).inc();
    }

    /// Records a snapshot written.
    pub(crate) fn written(&self, report: &SnapshotWritten) {
        self.writes.get_or_create(&[("outcome", "written")]).inc();
        self.write_records.set(gauge_value(report.records));
        self.write_bytes.set(gauge_value(report.bytes));
        self.write_seconds.set(report.took.as_secs_f64());
    }

    /// Records a snapshot that could not be written.
    pub(crate) fn write_failed(&self) {
        self.writes.get_or_create(&[("outcome", "failed")]).inc();
    }

    /// Records a background write-back of `unsaved` restored records started.
    pub(crate) fn write_back_started(&self, unsaved: u64) {
        self.unsaved.set(gauge_value(unsaved));
    }

    /// Records a background write-back round in which some failed.
    pub(crate) fn write_back_retried(&self) {
        self.write_back_retries.inc();
    }

    /// Records a background write-back finished after `took`.
    pub(crate) fn write_back_done(&self, took: std::time::Duration) {
        self.unsaved.set(0);
        self.write_back_seconds.set(took.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.write_back_done.set(now);
    }

    /// Records `n` salvaged records written back.
    pub(crate) fn salvaged(&self, n: u64) {
        self.salvaged.inc_by(n);
    }

    /// Records a failed attempt to write a salvaged record.
    pub(crate) fn salvage_failed(&self) {
        self.salvage_failures.inc();
    }

    /// Records a file kept aside.
    pub(crate) fn kept_aside(&self) {
        self.kept_aside.inc();
    }
}

#[cfg(test)]
impl SnapshotMetrics {
    /// Snapshots restored so far.
    pub(crate) fn restored_total(&self) -> u64 {
        self.restores
            .get_or_create(&[("outcome", "restored")])
            .get()
    }

    /// Snapshots written so far.
    pub(crate) fn written_total(&self) -> u64 {
        self.writes.get_or_create(&[("outcome", "written")]).get()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::snapshot::SnapshotHeader;
    use crate::store::Restore;

    fn encoded(metrics: &SnapshotMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(registry.sub_registry_with_prefix("locus"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn a_restore_and_a_write_are_rendered_with_their_figures() {
        let metrics = SnapshotMetrics::default();
        let header = SnapshotHeader {
            namespace: "ns".into(),
            service: "svc".into(),
            slot: 0,
            pod: "svc-0-x".into(),
            ring_version: 4,
            created_unix_ms: 1_700_000_000_500,
        };
        metrics.restored(&SnapshotRestore {
            header,
            format: 2,
            records: 50,
            dirty: 7,
            not_owned: 5,
            restore: Restore {
                inserted: 40,
                replaced: 5,
                ..Restore::default()
            },
            bytes: 4096,
            check_took: Duration::from_millis(10),
            took: Duration::from_millis(250),
            not_owned_written_back: 0,
            pending_write_back: true,
        });
        metrics.ignored();
        metrics.written(&SnapshotWritten {
            path: PathBuf::from("/s"),
            records: 3,
            dirty: 1,
            skipped: 0,
            bytes: 100,
            took: Duration::from_millis(1500),
        });
        let text = encoded(&metrics);
        for line in [
            "locus_snapshot_restores_total{outcome=\"restored\"} 1",
            "locus_snapshot_restores_total{outcome=\"ignored\"} 1",
            "locus_snapshot_restored_sessions_total 45",
            "locus_snapshot_restore_records 50",
            "locus_snapshot_restore_dirty_records 7",
            "locus_snapshot_restore_not_owned_records 5",
            "locus_snapshot_restore_bytes 4096",
            "locus_snapshot_restore_seconds 0.25",
            "locus_snapshot_restore_created_timestamp_seconds 1700000000.5",
            "locus_snapshot_writes_total{outcome=\"written\"} 1",
            "locus_snapshot_write_records 3",
            "locus_snapshot_write_bytes 100",
            "locus_snapshot_write_seconds 1.5",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
