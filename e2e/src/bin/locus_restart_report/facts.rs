//! The case facts, read off the restarted process's `/metrics` page: what the snapshot
//! restore found and did (the SDK's `locus_snapshot_*`) and what the store loaded from
//! PostgreSQL (`locus_store_loads_total`).
//!
//! The old process's own figures (how long its write-back and snapshot write took) leave
//! with it when it exits; what its snapshot holds, and when it started writing it, the
//! restore reads from the file and publishes.

use std::time::{SystemTime, UNIX_EPOCH};

use locus_e2e::support::prometheus::value;

/// A fact's value, `?` when the page does not have it.
fn or_unknown(v: Option<String>) -> String {
    v.unwrap_or_else(|| "?".to_owned())
}

fn whole(page: &str, name: &str) -> String {
    or_unknown(value(page, name, None).map(|v| format!("{v:.0}")))
}

fn seconds(v: Option<f64>) -> String {
    or_unknown(v.map(|s| format!("{s:.2}")))
}

/// `key=value` facts of the snapshot case from the new process's page; `changed_at`: the
/// wall clock of the change (the `StatefulService` apply).
///
/// `snapshot_records`, `snapshot_mb`: what the old process wrote; `snapshot_dirty`: of
/// those, records it had not written back to PostgreSQL; `snapshot_started_s`: change → it
/// started writing the snapshot (after its shutdown's write-back, if it did one);
/// `restored`, `not_owned`, `restore_s`: what the restore installed, skipped, and how long it
/// took; `unsaved_pending`, `written_back_s`, `write_back_s`: restored unsaved records not
/// written back yet when the page was read, change → the new process's background
/// write-back finished, and how long that write-back took (builds that write back before
/// stopping have none of these three).
pub(crate) fn snapshot_facts(page: &str, changed_at: SystemTime) -> Vec<(String, String)> {
    let changed_s = changed_at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let started = value(
        page,
        "locus_snapshot_restore_created_timestamp_seconds",
        None,
    )
    .filter(|created| *created > 0.0)
    .map(|created| created - changed_s);
    vec![
        (
            "snapshot_records".into(),
            whole(page, "locus_snapshot_restore_records"),
        ),
        (
            "snapshot_mb".into(),
            or_unknown(
                value(page, "locus_snapshot_restore_bytes", None)
                    .map(|b| format!("{:.1}", b / 1e6)),
            ),
        ),
        (
            "snapshot_dirty".into(),
            whole(page, "locus_snapshot_restore_dirty_records"),
        ),
        ("snapshot_started_s".into(), seconds(started)),
        (
            "restored".into(),
            whole(page, "locus_snapshot_restored_sessions_total"),
        ),
        (
            "not_owned".into(),
            whole(page, "locus_snapshot_restore_not_owned_records"),
        ),
        (
            "restore_s".into(),
            seconds(value(page, "locus_snapshot_restore_seconds", None)),
        ),
        (
            "unsaved_pending".into(),
            whole(page, "locus_snapshot_unsaved_records"),
        ),
        (
            "written_back_s".into(),
            seconds(
                value(
                    page,
                    "locus_snapshot_write_back_done_timestamp_seconds",
                    None,
                )
                .filter(|done| *done > 0.0)
                .map(|done| done - changed_s),
            ),
        ),
        (
            "write_back_s".into(),
            seconds(value(page, "locus_snapshot_write_back_seconds", None)),
        ),
    ]
}

/// `key=value` facts of the cold case from the new process's page: sessions loaded from
/// PostgreSQL, and snapshots restored by that process (0: the SIGKILL left none).
pub(crate) fn cold_facts(page: &str) -> Vec<(String, String)> {
    vec![
        (
            "loaded_from_postgres".into(),
            or_unknown(
                value(page, "locus_store_loads_total", Some("result=\"found\""))
                    .map(|v| format!("{v:.0}")),
            ),
        ),
        (
            "snapshot_restores".into(),
            // A process that found no snapshot has no `restored` sample yet: 0.
            format!(
                "{:.0}",
                value(
                    page,
                    "locus_snapshot_restores_total",
                    Some("outcome=\"restored\"")
                )
                .unwrap_or(0.0)
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A page as the sample serves it after a restore (the SDK's names and format).
    const RESTORED: &str = "\
# HELP locus_snapshot_restores Snapshots found at start, by outcome (restored, ignored).
# TYPE locus_snapshot_restores counter
locus_snapshot_restores_total{outcome=\"restored\"} 1
# TYPE locus_snapshot_restored_sessions counter
locus_snapshot_restored_sessions_total 1990
# TYPE locus_snapshot_restore_records gauge
locus_snapshot_restore_records 2000
locus_snapshot_restore_dirty_records 12
locus_snapshot_restore_not_owned_records 10
locus_snapshot_restore_bytes 2450000
locus_snapshot_restore_seconds 0.125
locus_snapshot_restore_created_timestamp_seconds 1700000003.5
locus_store_loads_total{result=\"found\"} 0
# EOF
";

    fn fact<'a>(facts: &'a [(String, String)], key: &str) -> &'a str {
        facts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn the_snapshot_case_reads_the_restore_metrics() {
        let changed = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
        let facts = snapshot_facts(RESTORED, changed);
        assert_eq!(fact(&facts, "snapshot_records"), "2000");
        assert_eq!(fact(&facts, "snapshot_mb"), "2.5");
        assert_eq!(fact(&facts, "snapshot_dirty"), "12");
        assert_eq!(fact(&facts, "snapshot_started_s"), "2.50");
        assert_eq!(fact(&facts, "restored"), "1990");
        assert_eq!(fact(&facts, "not_owned"), "10");
        assert_eq!(fact(&facts, "restore_s"), "0.12");
    }

    #[test]
    fn missing_metrics_read_as_unknown_and_no_restore_as_zero() {
        let facts = snapshot_facts("# EOF\n", SystemTime::now());
        assert!(facts.iter().all(|(_, v)| v == "?"), "{facts:?}");
        let cold = cold_facts("locus_store_loads_total{result=\"found\"} 2000\n# EOF\n");
        assert_eq!(fact(&cold, "loaded_from_postgres"), "2000");
        assert_eq!(fact(&cold, "snapshot_restores"), "0");
        assert_eq!(fact(&cold_facts(RESTORED), "snapshot_restores"), "1");
    }
}
