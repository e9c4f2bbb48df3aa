//! The two restarts, each measured on one clock from the change: the in-place update that
//! restores the snapshot, and the SIGKILL that leaves every session to PostgreSQL.

use std::time::{Duration, Instant, SystemTime};

use locus::RingWatch;
use locus_e2e::support::prometheus::{scrape, value};
use locus_examples::loadgen::{LoadConfig, LoadGenerator, Stop, Summary, Target};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::facts::{cold_facts, snapshot_facts};
use crate::host::load_average;
use crate::report::CaseReport;
use crate::service::{PodView, Service, manifest, ready_after_restart, serving_again, view};
use crate::settings::Settings;
use crate::{IMAGE_V1, IMAGE_V2, PORT, ReportError, Setup, api, io, progress};

/// Runs `work`, printing a line every 10 s while it runs.
pub(crate) async fn with_ticker<F: Future>(what: &str, work: F) -> F::Output {
    let started = Instant::now();
    let mut work = std::pin::pin!(work);
    let every = Duration::from_secs(10);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => progress(&format!("{what}: {:.0} s so far", started.elapsed().as_secs_f64())),
        }
    }
}

/// A task aborted when its handle is dropped (a case that fails leaves no watcher behind).
pub(crate) struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What both cases share.
pub(crate) struct Bench<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) service: &'a Service,
    pub(crate) http: reqwest::Client,
    pub(crate) watch: RingWatch,
    pub(crate) prefix: String,
}

impl Bench<'_> {
    /// Reads every session once through a fresh generator (reads only, the same sessions).
    pub(crate) async fn read_all(&self) -> Result<Summary, ReportError> {
        let mut reader = LoadGenerator::new(LoadConfig {
            sessions: self.settings.sessions,
            concurrency: self.settings.read_concurrency,
            read_percent: 100,
            timeout: Duration::from_secs(10),
            prefix: self.prefix.clone(),
            ..LoadConfig::new(Target::Ring(self.watch.clone()))
        })?;
        let reads = Stop::Requests(u64::from(self.settings.sessions));
        Ok(with_ticker("reading every session", reader.phase("read-all", reads)).await)
    }

    /// Times one restart: `change` makes it happen; then every session is read.
    pub(crate) async fn measure(
        &self,
        name: &'static str,
        load: &LoadGenerator,
        before: &PodView,
        change: impl Future<Output = Result<(), ReportError>>,
    ) -> Result<CaseReport, ReportError> {
        let load_average = load_average();
        let mut ready = Aborting(tokio::spawn(ready_after_restart(
            self.service.pods.clone(),
            before.name.clone(),
            before.uid.clone(),
            before.restarts + 1,
        )));
        let mut serving = Aborting(tokio::spawn(serving_again(
            self.http.clone(),
            format!("http://{}:{PORT}/readyz", before.ip),
            None,
        )));
        // One session, read straight from the pod.
        let session = format!("{}-0", self.prefix);
        let mut sessions = Aborting(tokio::spawn(serving_again(
            self.http.clone(),
            format!("http://{}:{PORT}/sessions/{session}", before.ip),
            Some(session),
        )));
        let started = Instant::now();
        let changed_at = SystemTime::now();
        change.await?;
        let joined = |e: tokio::task::JoinError| ReportError::Setup(e.to_string());
        let (down, up) = (&mut serving.0).await.map_err(joined)??;
        let (sessions_down, _) = (&mut sessions.0).await.map_err(joined)??;
        progress(&format!(
            "{name}: the new process answers after {:.2} s; reading every session",
            (up - started).as_secs_f64()
        ));
        let resident = value(
            &scrape(&self.http, &format!("{}:{PORT}", before.ip)).await,
            "locus_store_sessions",
            None,
        );
        let read_started = Instant::now();
        let read = self.read_all().await?;
        let done = Instant::now();
        let written_back_during_reads = value(
            &scrape(&self.http, &format!("{}:{PORT}", before.ip)).await,
            "locus_store_write_backs_total",
            Some("result=\"ok\""),
        );
        let ready_at = (&mut ready.0).await.map_err(joined)??;
        progress(&format!(
            "{name}: read every session in {:.2} s ({} warm, {} cold, {} errors); checking the acknowledged appends",
            (done - read_started).as_secs_f64(),
            read.cache.warm,
            read.cache.cold,
            read.errors
        ));
        let verification = with_ticker("checking every session", load.verify()).await;
        Ok(CaseReport {
            name,
            down_s: (down - started).as_secs_f64(),
            sessions_down_s: (sessions_down - started).as_secs_f64(),
            serving_s: (up - started).as_secs_f64(),
            ready_s: (ready_at - started).as_secs_f64(),
            resident_at_start: resident,
            read,
            read_all_s: (done - read_started).as_secs_f64(),
            written_back_during_reads,
            total_s: (done - started).as_secs_f64(),
            verification,
            changed_at,
            facts: Vec::new(),
            load_average,
        })
    }

    pub(crate) async fn pod(&self, name: &str) -> Result<PodView, ReportError> {
        let pod = self
            .service
            .pods
            .get(name)
            .await
            .map_err(api(format!("read pod {name}")))?;
        Ok(view(&pod))
    }
}

/// Loads `settings.appends` acknowledged appends into each session, in ten steps.
pub(crate) async fn load_sessions(load: &mut LoadGenerator, settings: &Settings) -> String {
    let total = u64::from(settings.sessions) * u64::from(settings.appends);
    let steps = total.min(10);
    let started = Instant::now();
    let (mut sent, mut acked, mut errors) = (0u64, 0u64, 0u64);
    for step in 1..=steps {
        let chunk = total * step / steps - sent;
        let summary = load.phase("load", Stop::Requests(chunk)).await;
        sent += chunk;
        acked += summary.appends_acked;
        errors += summary.errors;
        progress(&format!(
            "loading: {sent}/{total} appends sent, {acked} acknowledged, {errors} errors ({:.0} s)",
            started.elapsed().as_secs_f64()
        ));
    }
    let total_summary = load.total("load", None);
    format!(
        "appends={} acknowledged={} errors={} elapsed_s={:.1} rps={:.0} append_p50_ms={:.2} append_p99_ms={:.2} errors_by_kind={:?}",
        total_summary.requests,
        total_summary.appends_acked,
        total_summary.errors,
        total_summary.elapsed_s,
        total_summary.throughput_rps,
        total_summary.append_latency_ms.p50,
        total_summary.append_latency_ms.p99,
        total_summary.errors_by_kind,
    )
}

/// Checks that `pid` is the container of pod `name` in `namespace` (its environment says so).
pub(crate) fn check_process(pid: i32, namespace: &str, name: &str) -> Result<(), ReportError> {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(io(format!("read the environment of process {pid}")))?;
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    let has = |var: String| vars.contains(&var.as_bytes());
    if has(format!("POD_NAME={name}")) && has(format!("POD_NAMESPACE={namespace}")) {
        Ok(())
    } else {
        Err(ReportError::Setup(format!(
            "process {pid} is not the container of pod {namespace}/{name}"
        )))
    }
}

/// Case 1: the in-place update; the pod snapshots on SIGTERM and restores at start.
pub(crate) async fn snapshot_case(
    bench: &Bench<'_>,
    load: &LoadGenerator,
    setup: &Setup,
) -> Result<CaseReport, ReportError> {
    let first = &setup.first;
    progress(&format!(
        "snapshot: {IMAGE_V1} → {IMAGE_V2} (in-place update)"
    ));
    let v2 = manifest(
        &setup.service.namespace,
        bench.settings,
        &setup.database_url,
        IMAGE_V2,
    );
    let mut case = bench
        .measure("snapshot", load, first, setup.service.apply(&v2))
        .await?;
    let after = bench.pod(&first.name).await?;
    if after.uid != first.uid || after.image != IMAGE_V2 {
        return Err(ReportError::Setup(format!(
            "the update was not in place: pod {} uid {} image {}",
            after.name, after.uid, after.image
        )));
    }
    let page = written_back(bench, &format!("{}:{PORT}", after.ip)).await;
    case.facts = snapshot_facts(&page, case.changed_at);
    case.facts.push((
        "restarts".into(),
        format!("{}→{}", first.restarts, after.restarts),
    ));
    Ok(case)
}

/// The restored process's `/metrics` page once its background write-back of the restored
/// unsaved sessions finished (`locus_snapshot_unsaved_records` 0), waited for at most 120 s;
/// at once when the page has no such gauge (a build that writes back before it stops). The
/// cold case that follows kills the process: it must not take the write-back with it.
async fn written_back(bench: &Bench<'_>, address: &str) -> String {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let page = scrape(&bench.http, address).await;
        match value(&page, "locus_snapshot_unsaved_records", None) {
            Some(pending) if pending > 0.0 && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => return page,
        }
    }
}

/// Case 2: with every session in PostgreSQL, SIGKILL: no snapshot, each session loaded on
/// its first read.
pub(crate) async fn cold_case(
    bench: &Bench<'_>,
    load: &LoadGenerator,
    setup: &Setup,
    sessions: u64,
) -> Result<CaseReport, ReportError> {
    let (rows, _) = setup.pg.sessions(&bench.prefix)?;
    if rows < sessions {
        return Err(ReportError::Setup(format!(
            "only {rows} of {sessions} sessions are in PostgreSQL: the cold case would lose writes"
        )));
    }
    let before = bench.pod(&setup.first.name).await?;
    let pid = before.pid.ok_or_else(|| {
        ReportError::Setup(format!(
            "pod {} has no locus://<pid> container id",
            before.name
        ))
    })?;
    check_process(pid, &setup.service.namespace, &before.name)?;
    progress(&format!(
        "cold: {rows} sessions in PostgreSQL; SIGKILL to the container's process {pid}"
    ));
    let sigkill = async {
        kill(Pid::from_raw(pid), Signal::SIGKILL)
            .map_err(|e| ReportError::Setup(format!("SIGKILL to process {pid}: {e}")))
    };
    let mut case = bench.measure("cold", load, &before, sigkill).await?;
    let after = bench.pod(&setup.first.name).await?;
    if after.uid != before.uid {
        return Err(ReportError::Setup(
            "the pod was replaced after SIGKILL".into(),
        ));
    }
    let page = scrape(&bench.http, &format!("{}:{PORT}", after.ip)).await;
    case.facts = cold_facts(&page);
    case.facts.extend([
        ("postgres_rows".into(), rows.to_string()),
        (
            "restarts".into(),
            format!("{}→{}", before.restarts, after.restarts),
        ),
    ]);
    Ok(case)
}
