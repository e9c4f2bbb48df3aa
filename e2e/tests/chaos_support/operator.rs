//! The operator side of the chaos scenarios: who leads (the coordination `Lease`), the
//! operator's `Deployment`, a standby operator run as a host process (optionally with its
//! wall clock shifted by libfaketime), and an audit of every write of the ring `ConfigMap`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use locus::ring::RingDocument;
use serde::Serialize;

use super::secs;

/// The chart's default Lease name (in the release's namespace).
pub const LEASE: &str = "locus-operator";
/// The operator container's name in the chart.
pub const OPERATOR_CONTAINER: &str = "operator";

/// The holder of the operator's Lease in `namespace`, if any.
pub async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(LEASE)
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits (bounded) until the Lease has a holder for which `wanted` holds; returns it.
pub async fn wait_holder(
    client: &Client,
    namespace: &str,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(holder) = lease_holder(client, namespace).await
            && wanted(&holder)
        {
            return Some(holder);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Sets the replicas of every `Deployment` in `namespace` (in a chaos namespace: only the
/// operator's chart makes one; the sample's pods belong to the operator).
pub async fn scale_operator_deployment(
    client: &Client,
    namespace: &str,
    replicas: i32,
) -> Result<Vec<String>, kube::Error> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let mut scaled = Vec::new();
    for deployment in api.list(&ListParams::default()).await? {
        let name = deployment.metadata.name.unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await?;
        scaled.push(name);
    }
    Ok(scaled)
}

/// The shared object of libfaketime (Debian's `libfaketime`), if installed.
pub fn libfaketime() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib").ok()?;
    lib.filter_map(Result::ok)
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.is_file())
}

/// A `locus-operator` process on the host (outside the cluster, through the admin
/// kubeconfig), standing by for the same Lease as the chart's operator. Killed on drop.
pub struct HostOperator {
    child: Child,
    /// Its Lease identity.
    pub identity: String,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// Host wall clock when it was started.
    started: SystemTime,
}

impl HostOperator {
    /// Starts `bin_dir/locus-operator` watching `namespace` with leader election on the
    /// chart's Lease. `clock_ahead`: run it under libfaketime with its clocks that far ahead
    /// (`LD_PRELOAD`, `FAKETIME=+<seconds>`).
    pub fn start(
        bin_dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        work: &Path,
        clock_ahead: Option<Duration>,
    ) -> Result<Self, String> {
        let exe = bin_dir.join("locus-operator");
        if !exe.is_file() {
            return Err(format!(
                "{} is missing: build it first (cargo build -p locus-operator)",
                exe.display()
            ));
        }
        std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        let log = work.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&exe);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("POD_NAMESPACE", namespace)
            .env("LOCUS_OPERATOR_WATCH_NAMESPACE", namespace)
            .env("LOCUS_OPERATOR_LEADER_ELECTION", "true")
            .env("LOCUS_OPERATOR_LEASE_NAME", LEASE)
            .env("LOCUS_OPERATOR_METRICS_ADDR", "off")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(ahead) = clock_ahead {
            let lib = libfaketime().ok_or_else(|| {
                "libfaketime is not installed (apt-get install libfaketime; `make chaos` does)"
                    .to_owned()
            })?;
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME", format!("+{}", ahead.as_secs()));
        }
        let started = SystemTime::now();
        let child = command
            .spawn()
            .map_err(|e| format!("start {}: {e}", exe.display()))?;
        Ok(Self {
            child,
            identity: identity.to_owned(),
            log,
            started,
        })
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) until its log holds `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// How far its wall clock is ahead of the host's: the timestamp of its first log line
    /// minus the host's clock when it was started (an upper bound off by its start-up time).
    pub fn clock_ahead_s(&self) -> Option<f64> {
        let text = self.log_text();
        let stamp = text
            .lines()
            .find_map(|l| parse_rfc3339(l.split_whitespace().next()?))?;
        let started = self.started.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        Some(stamp - started)
    }
}

impl Drop for HostOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as `tracing` prints it
/// (`2026-12-06T12:50:01.123456Z`).
#[allow(
    clippy::many_single_char_names,
    reason = "the civil-date arithmetic reads best in its usual short names"
)]
fn parse_rfc3339(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let s: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (proleptic Gregorian), 1970-01-01 = 0.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds since 1970 fit an f64 exactly"
    )]
    let whole = (days * 86_400 + h * 3600 + min * 60) as f64;
    Some(whole + s)
}

/// What [`RingAudit`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RingAuditReport {
    /// Writes of the ring `ConfigMap` seen (each new `resourceVersion` with a document).
    pub writes: usize,
    /// Distinct ring versions seen.
    pub versions: usize,
    /// A version published below one seen before, or one version published twice with
    /// different documents.
    pub problems: Vec<String>,
}

#[derive(Default)]
struct AuditState {
    report: RingAuditReport,
    documents: BTreeMap<u64, String>,
    highest: u64,
    last_resource_version: Option<String>,
}

/// Watches the ring `ConfigMap` and checks every write: ring versions never go back, and a
/// version is never published with two different documents (what a deposed leader writing
/// from a stale read would do).
pub struct RingAudit {
    state: Arc<Mutex<AuditState>>,
    task: tokio::task::JoinHandle<()>,
}

impl RingAudit {
    pub fn start(client: &Client, namespace: &str, service: &str, clock: Instant) -> Self {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!(
            "metadata.name={}",
            RingDocument::config_map_name(service)
        ));
        let state: Arc<Mutex<AuditState>> = Arc::default();
        let sink = state.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(maps, config)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                let Ok(map) = event else { continue };
                let Some(text) = map.data.as_ref().and_then(|d| d.get("ring.json")) else {
                    continue;
                };
                let Ok(mut state) = sink.lock() else { return };
                if state.last_resource_version == map.metadata.resource_version {
                    continue;
                }
                state
                    .last_resource_version
                    .clone_from(&map.metadata.resource_version);
                let at = secs(clock.elapsed());
                let Ok(ring) = RingDocument::from_json(text.as_bytes()) else {
                    state
                        .report
                        .problems
                        .push(format!("t={at:.1}s: a ring document that does not parse"));
                    continue;
                };
                let version = ring.version();
                state.report.writes += 1;
                if version < state.highest {
                    let highest = state.highest;
                    state.report.problems.push(format!(
                        "t={at:.1}s: ring v{version} published after v{highest}"
                    ));
                }
                state.highest = state.highest.max(version);
                match state.documents.get(&version) {
                    Some(before) if before != text => state.report.problems.push(format!(
                        "t={at:.1}s: ring v{version} published again with a different document"
                    )),
                    Some(_) => {}
                    None => {
                        state.documents.insert(version, text.clone());
                        state.report.versions += 1;
                    }
                }
            }
        });
        Self { state, task }
    }

    pub fn finish(self) -> RingAuditReport {
        self.task.abort();
        self.state
            .lock()
            .map(|s| s.report.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn tracing_timestamps_are_read() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
        assert_eq!(parse_rfc3339("not a time"), None);
    }
}
