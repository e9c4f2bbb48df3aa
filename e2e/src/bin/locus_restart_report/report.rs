//! What the run produces: one line per case, the comparison, the settings and the machine.

use std::fmt::Write as _;
use std::time::SystemTime;

use locus_examples::loadgen::{Summary, Verification};

use crate::Setup;
use crate::host::fs_type;
use crate::settings::Settings;

/// One restart, measured.
#[derive(Debug)]
pub(crate) struct CaseReport {
    pub(crate) name: &'static str,
    /// Change → the old process stops answering `/readyz`.
    pub(crate) down_s: f64,
    /// Change → a session read first fails (the old process no longer serves sessions; it
    /// keeps serving them after `/readyz` turned 503, while it writes its sessions back).
    pub(crate) sessions_down_s: f64,
    /// Change → the new process answers `/readyz`.
    pub(crate) serving_s: f64,
    /// Change → the pod is Ready again (Kubernetes).
    pub(crate) ready_s: f64,
    /// `locus_store_sessions` when the new process first answered.
    pub(crate) resident_at_start: Option<f64>,
    /// The read of every session once.
    pub(crate) read: Summary,
    /// Its duration.
    pub(crate) read_all_s: f64,
    /// `locus_store_write_backs_total{result="ok"}` of the new process right after it: how
    /// far its background write-back of the restored sessions got meanwhile.
    pub(crate) written_back_during_reads: Option<f64>,
    /// Change → every session answered once.
    pub(crate) total_s: f64,
    /// The second read of every session, against the acknowledged appends.
    pub(crate) verification: Verification,
    /// Wall clock of the change (the facts' timestamps are wall-clock).
    pub(crate) changed_at: SystemTime,
    /// Case-specific facts, `key=value`.
    pub(crate) facts: Vec<(String, String)>,
    /// Load average when the case started.
    pub(crate) load_average: String,
}

impl CaseReport {
    /// From a session read first failing to every session served once.
    pub(crate) fn stopped_to_all_served_s(&self) -> f64 {
        (self.total_s - self.sessions_down_s).max(0.0)
    }

    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "case={} restart_to_serving_s={:.2} restart_to_ready_s={:.2} old_process_down_s={:.2} \
             sessions_down_s={:.2} \
             resident_at_start={} read_all_s={:.2} written_back_during_reads={} read_rps={:.0} read_p50_ms={:.2} read_p99_ms={:.2} \
             read_max_ms={:.1} warm={} cold={} read_errors={} restart_to_all_served_s={:.2} \
             stopped_to_all_served_s={:.2} lost_writes={} stale_sessions={} unreadable={}",
            self.name,
            self.serving_s,
            self.ready_s,
            self.down_s,
            self.sessions_down_s,
            self.resident_at_start
                .map_or_else(|| "?".to_owned(), |v| format!("{v:.0}")),
            self.read_all_s,
            self.written_back_during_reads
                .map_or_else(|| "?".to_owned(), |v| format!("{v:.0}")),
            self.read.throughput_rps,
            self.read.read_latency_ms.p50,
            self.read.read_latency_ms.p99,
            self.read.read_latency_ms.max,
            self.read.cache.warm,
            self.read.cache.cold,
            self.read.errors,
            self.total_s,
            self.stopped_to_all_served_s(),
            self.verification.lost_writes,
            self.verification.stale_sessions,
            self.verification.sessions_unreadable,
        );
        for (key, value) in &self.facts {
            let _ = write!(line, " {key}={value}");
        }
        let _ = write!(line, " loadavg={}", self.load_average);
        line
    }
}

/// The whole run.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) settings: Vec<String>,
    pub(crate) machine: Vec<String>,
    pub(crate) load: String,
    pub(crate) cases: Vec<CaseReport>,
    pub(crate) load_average_end: String,
}

impl Report {
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\nsettings: {}", self.settings.join(" "));
        let _ = writeln!(out, "machine: {}", self.machine.join(" "));
        let _ = writeln!(out, "load: {}", self.load);
        for case in &self.cases {
            let _ = writeln!(out, "restart: {}", case.line());
        }
        if let [snapshot, cold] = self.cases.as_slice() {
            let ratio = |a: f64, b: f64| a / b.max(1e-9);
            let _ = write!(
                out,
                "comparison: restart_to_all_served_s snapshot={:.2} cold={:.2} cold_over_snapshot={:.2} \
                 read_all_s snapshot={:.2} cold={:.2} cold_over_snapshot={:.2}",
                snapshot.total_s,
                cold.total_s,
                ratio(cold.total_s, snapshot.total_s),
                snapshot.read_all_s,
                cold.read_all_s,
                ratio(cold.read_all_s, snapshot.read_all_s),
            );
            // The snapshot case's old process serves while it writes its sessions back; from
            // when it stops serving sessions to every session served once more:
            let _ = write!(
                out,
                " stopped_to_all_served_s snapshot={:.2} cold={:.2} cold_over_snapshot={:.2}",
                snapshot.stopped_to_all_served_s(),
                cold.stopped_to_all_served_s(),
                ratio(
                    cold.stopped_to_all_served_s(),
                    snapshot.stopped_to_all_served_s()
                ),
            );
            let _ = writeln!(out, " loadavg_end={}", self.load_average_end);
        }
        out
    }

    pub(crate) fn consistent(&self) -> bool {
        self.cases.iter().all(|c| {
            c.verification.lost_writes == 0
                && c.verification.stale_sessions == 0
                && c.verification.sessions_unreadable == 0
                && c.read.stale_reads == 0
                && c.read.version_conflicts == 0
        })
    }
}

pub(crate) fn or_unknown<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// The settings line's fields.
pub(crate) fn settings_fields(
    settings: &Settings,
    setup: &Setup,
    sizes: (Option<u64>, Option<f64>, Option<f64>),
) -> Vec<String> {
    let (session_bytes, resident, resident_bytes) = sizes;
    vec![
        format!("sessions={}", settings.sessions),
        format!("appends_per_session={}", settings.appends),
        format!("note_bytes={}", settings.note_bytes),
        format!("session_json_bytes={}", or_unknown(session_bytes)),
        format!("resident_sessions={}", or_unknown(resident)),
        format!("resident_bytes={}", or_unknown(resident_bytes)),
        "replicas=1".to_owned(),
        format!("load_concurrency={}", settings.load_concurrency),
        format!("read_concurrency={}", settings.read_concurrency),
        format!("pg_pool={}", settings.pg_pool),
        "idle_timeout=1h shards=4096 readiness_period_s=1".to_owned(),
        format!(
            "postgres={} fsync=off listen={}:{}",
            setup.pg.version(),
            setup.gateway,
            setup.pg.addr().port()
        ),
        format!(
            "snapshot_volume_fs={}",
            setup
                .service
                .node_run_dir
                .as_deref()
                .map_or_else(|| "?".to_owned(), fs_type)
        ),
        format!("binaries={}", setup.bin_dir.display()),
    ]
}
