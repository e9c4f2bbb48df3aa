//! The chaos scenarios' harness: the demo's sample service and load generator (deployed by
//! [`Demo::deploy`](locus_e2e::demo::Demo::deploy)), a scale-up applied here so that faults
//! can be timed against it, load run in one-second windows throughout (so the seconds
//! during which requests got 503 can be counted), a timeline of the ring versions the
//! operator published, and a report that is printed before it is asserted on.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use locus::ring::{Ring, RingDocument};
use locus_e2e::accounting::{self, HandoffCheck};
use locus_e2e::chaos::ChaosPod;
use locus_e2e::cluster::ClusterInfo;
use locus_e2e::demo::{self, DemoOptions};
use locus_examples::loadgen::{LoadGenerator, Stop, Summary, Verification};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

pub mod operator;
pub mod persistence;

use operator::RingAuditReport;

/// Length of one load window: the resolution of the 503 seconds.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Field manager of the scenario's applies (the demo applies as `locus-demo`).
const MANAGER: &str = "locus-chaos";
/// The template revision [`Demo::deploy`](locus_e2e::demo::Demo::deploy) applies first.
const FIRST_REVISION: u32 = 1;
/// The sample's switch for its test stall hook.
const TEST_STALL_ENV: &str = "LOCUS_SAMPLE_TEST_STALL";
/// Environment variable naming the scenarios to run (comma list); unset: all.
pub const SCENARIOS_VAR: &str = "LOCUS_CHAOS_SCENARIOS";

/// Whether scenario `name` is selected by [`SCENARIOS_VAR`] (unset, empty or `all`: every
/// scenario).
pub fn selected(name: &str) -> bool {
    let Ok(list) = std::env::var(SCENARIOS_VAR) else {
        return true;
    };
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    names.is_empty() || names.iter().any(|n| *n == name || *n == "all")
}

/// The sample service seen through the admin client, for the scenario's own applies and
/// waits (the demo's are tied to its own phases).
pub struct Service {
    pub client: Client,
    pub info: ClusterInfo,
    options: DemoOptions,
    /// Keep the demo's liveness probe in the template (see [`Service::drop_liveness_probe`]).
    liveness: bool,
    /// Turn the sample's test stall on in the template (see [`Service::enable_test_stall`]).
    test_stall: bool,
    /// More environment for the sample's container (see [`Service::set_env`]).
    extra_env: Vec<(String, String)>,
    services: Api<DynamicObject>,
    maps: Api<ConfigMap>,
    pods: Api<Pod>,
}

impl Service {
    pub fn new(client: Client, info: ClusterInfo, options: &DemoOptions) -> Self {
        Self {
            services: Api::namespaced_with(
                client.clone(),
                &options.namespace,
                &locus_e2e::support::service::resource(),
            ),
            maps: Api::namespaced(client.clone(), &options.namespace),
            pods: Api::namespaced(client.clone(), &options.namespace),
            client,
            info,
            options: options.clone(),
            liveness: true,
            test_stall: false,
            extra_env: Vec::new(),
        }
    }

    /// The demo's manifest with `replicas`, as this harness applies it.
    fn manifest(&self, replicas: u16) -> Value {
        let mut manifest = demo::manifest(&self.options, replicas, FIRST_REVISION);
        if let Some(containers) = manifest
            .pointer_mut("/spec/template/spec/containers")
            .and_then(Value::as_array_mut)
        {
            for container in containers {
                let Some(container) = container.as_object_mut() else {
                    continue;
                };
                if !self.liveness {
                    container.remove("livenessProbe");
                }
                if let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) {
                    if self.test_stall {
                        env.push(serde_json::json!({"name": TEST_STALL_ENV, "value": "true"}));
                    }
                    for (name, value) in &self.extra_env {
                        env.push(serde_json::json!({"name": name, "value": value}));
                    }
                }
            }
        }
        manifest
    }

    /// Turns the sample's test stall on in the pods' template (`LOCUS_SAMPLE_TEST_STALL`; a
    /// surge rollout of every pod) and waits until the service converged on `replicas`
    /// slots again; later scales keep it on.
    pub async fn enable_test_stall(&mut self, replicas: u16, timeout: Duration) -> bool {
        self.test_stall = true;
        self.patch_containers(replicas, timeout).await
    }

    /// Adds `env` to the sample's container in the pods' template (a surge rollout of every
    /// pod) and waits until the service converged on `replicas` slots again; later scales
    /// keep it.
    pub async fn set_env(
        &mut self,
        env: &[(&str, &str)],
        replicas: u16,
        timeout: Duration,
    ) -> bool {
        self.extra_env
            .extend(env.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
        self.patch_containers(replicas, timeout).await
    }

    /// Waits (bounded, polling every 50 ms) for a ring newer than `after` in its Switch
    /// phase and deletes its `ConfigMap`, on the condition that it still holds that ring
    /// (a newer one is left alone and the wait goes on); returns the version deleted.
    pub async fn delete_switch_ring(&self, after: u64, timeout: Duration) -> Option<u64> {
        let name = RingDocument::config_map_name(&self.options.service);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(map)) = self.maps.get_opt(&name).await
                && let Some(ring) = map
                    .data
                    .as_ref()
                    .and_then(|d| d.get(RingDocument::CONFIG_MAP_KEY))
                    .and_then(|text| RingDocument::from_json(text.as_bytes()).ok())
                && ring.version() > after
                && ring.phase().as_str() == "switch"
            {
                let only_this = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: map.metadata.resource_version.clone(),
                        uid: map.metadata.uid.clone(),
                    }),
                    ..DeleteParams::default()
                };
                if self.maps.delete(&name, &only_this).await.is_ok() {
                    return Some(ring.version());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Removes the demo's liveness probe from the pods' template (a surge rollout of every
    /// pod) and waits until the service converged on `replicas` slots again; later scales
    /// keep it out. A paused pod then stays paused instead of being killed by the node
    /// agent after the probe's failures (SIGTERM, then SIGKILL after the grace period).
    pub async fn drop_liveness_probe(&mut self, replicas: u16, timeout: Duration) -> bool {
        self.liveness = false;
        self.patch_containers(replicas, timeout).await
    }

    /// Replaces the template's containers with this harness's and waits for convergence.
    async fn patch_containers(&self, replicas: u16, timeout: Duration) -> bool {
        let containers = self.manifest(replicas)["spec"]["template"]["spec"]["containers"].clone();
        // A JSON merge patch replaces the list, whoever applied it.
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": containers}}}});
        let patched = self
            .services
            .patch(
                &self.options.service,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
        let Ok(patched) = patched else {
            return false;
        };
        let generation = patched.metadata.generation.unwrap_or_default();
        self.wait_converged(replicas, generation, timeout).await
    }

    /// Applies the demo's manifest with `replicas`; returns the new generation.
    pub async fn scale(&self, replicas: u16) -> Result<i64, kube::Error> {
        let applied = self
            .services
            .patch(
                &self.options.service,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(self.manifest(replicas)),
            )
            .await?;
        Ok(applied.metadata.generation.unwrap_or_default())
    }

    pub async fn ring(&self) -> Result<Option<Ring>, kube::Error> {
        locus_e2e::support::service::read_ring(&self.maps, &self.options.service).await
    }

    /// Waits (bounded) until the ring is in its Switch phase or past it (a newer version
    /// than `after` that is not Warm); returns whether it saw one.
    pub async fn wait_switch(&self, after: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(ring)) = self.ring().await
                && ring.version() > after
                && ring.phase().as_str() != "warm"
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// The pod serving `slot` under the current ring.
    pub async fn pod_of_slot(&self, slot: u16) -> Option<String> {
        let ring = self.ring().await.ok().flatten()?;
        ring.slot(slot).map(|s| s.pod.name.clone())
    }

    /// `pod` resolved for fault injection.
    pub async fn chaos_pod(&self, pod: &str) -> ChaosPod {
        match ChaosPod::find(&self.client, &self.info, &self.options.namespace, pod).await {
            Ok(found) => found,
            Err(error) => panic!("cannot inject faults into {pod}: {error}"),
        }
    }

    /// Restarts of `pod`'s containers, if the pod is still there.
    pub async fn restarts(&self, pod: &str) -> Option<i32> {
        let pod = self.pods.get_opt(pod).await.ok().flatten()?;
        pod.status?
            .container_statuses
            .map(|c| c.iter().map(|c| c.restart_count).sum())
    }

    /// True once the service is converged on `replicas` slots for `generation` (as the demo
    /// defines it: settled status, the ring naming exactly the wanted slots, each served by
    /// a Ready pod at its address).
    pub async fn converged_now(&self, replicas: u16, generation: i64) -> Result<bool, kube::Error> {
        let service = self.services.get(&self.options.service).await?;
        let status = service.data.get("status").cloned().unwrap_or(Value::Null);
        if !locus_e2e::support::service::is_settled(&status, Some(generation)) {
            return Ok(false);
        }
        let Some(ring) = self.ring().await? else {
            return Ok(false);
        };
        let pods =
            locus_e2e::support::service::live_pods(&self.pods, &self.options.service).await?;
        let wanted = usize::from(replicas);
        Ok(ring.slots().len() == wanted
            && pods.len() == wanted
            && locus_e2e::support::service::serves(&ring, &pods))
    }

    /// Waits (bounded) until converged; `true` if it did.
    pub async fn wait_converged(&self, replicas: u16, generation: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .converged_now(replicas, generation)
                .await
                .unwrap_or(false)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// The service's namespace (the operator's release is installed there too).
    pub fn namespace(&self) -> &str {
        &self.options.namespace
    }

    /// Waits (at most [`accounting::REPORTS_WITHIN`]) until the pods' reports of the last
    /// transition, one that ended after ring `since`, are complete or known missing; then
    /// holds the operator's sums against the takeovers the load generator saw (`windows` and
    /// the read-back).
    pub async fn handoff_check(
        &self,
        since: u64,
        windows: &[Window],
        verification: &Verification,
    ) -> Option<HandoffCheck> {
        let status = accounting::wait_reported(
            &self.services,
            &self.options.service,
            since,
            accounting::REPORTS_WITHIN,
        )
        .await?;
        let record = status
            .last_transition
            .as_ref()
            .filter(|r| r.to_version > since)?;
        let seen = windows
            .iter()
            .map(|w| &w.summary.takeovers)
            .chain([&verification.takeovers]);
        Some(HandoffCheck::of(&status, record, seen))
    }

    /// The service's `status` now.
    pub async fn status(&self) -> Option<Value> {
        let service = self.services.get(&self.options.service).await.ok()?;
        service.data.get("status").cloned()
    }
}

/// One ring version as first seen.
#[derive(Debug, Clone, Serialize)]
pub struct RingSeen {
    /// Seconds since the scenario's clock started.
    pub at_s: f64,
    pub version: u64,
    pub phase: String,
    pub slots: usize,
}

/// What the observer saw change, besides the ring: the victim pod's state and the
/// operator's `status.lastTransition`.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub at_s: f64,
    pub what: String,
}

/// What [`Observer`] recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    pub ring: Vec<RingSeen>,
    pub events: Vec<Seen>,
}

/// Polls the ring, the victim pod and the service's last transition every 250 ms and
/// records each change, until stopped.
pub struct Observer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Observed>,
}

/// The victim pod's state in a word.
fn pod_state(pod: Option<&Pod>) -> String {
    match pod {
        None => "gone".to_owned(),
        Some(p) if p.metadata.deletion_timestamp.is_some() => "terminating".to_owned(),
        Some(p) => {
            let restarts: i32 = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            format!(
                "{}{}",
                if locus_e2e::support::service::is_ready(p) {
                    "Ready"
                } else {
                    "not Ready"
                },
                if restarts > 0 {
                    format!(", {restarts} restarts")
                } else {
                    String::new()
                }
            )
        }
    }
}

/// `status.lastTransition` in a few words.
fn transition_state(status: Option<&Value>) -> Option<String> {
    let last = status?.get("lastTransition")?;
    Some(format!(
        "{} v{}→v{}{}",
        last.get("kind")?.as_str()?,
        last.get("fromVersion")?.as_u64()?,
        last.get("toVersion")?.as_u64()?,
        if last.get("finishedAt").is_some() {
            " finished"
        } else {
            " in progress"
        }
    ))
}

impl Observer {
    pub fn start(service: &Service, victim: &str, clock: Instant) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let maps = service.maps.clone();
        let pods = service.pods.clone();
        let services = service.services.clone();
        let name = service.options.service.clone();
        let victim = victim.to_owned();
        let task = tokio::spawn(async move {
            let mut seen = Observed::default();
            let mut last_pod = String::new();
            let mut last_transition = None;
            loop {
                let at_s = secs(clock.elapsed());
                if let Ok(Some(ring)) = locus_e2e::support::service::read_ring(&maps, &name).await
                    && seen.ring.last().is_none_or(|l| l.version != ring.version())
                {
                    seen.ring.push(RingSeen {
                        at_s,
                        version: ring.version(),
                        phase: ring.phase().as_str().to_owned(),
                        slots: ring.slots().len(),
                    });
                }
                if let Ok(pod) = pods.get_opt(&victim).await {
                    let state = pod_state(pod.as_ref());
                    if state != last_pod {
                        seen.events.push(Seen {
                            at_s,
                            what: format!("victim {state}"),
                        });
                        last_pod = state;
                    }
                }
                if let Ok(svc) = services.get(&name).await {
                    let transition = transition_state(svc.data.get("status"));
                    if transition.is_some() && transition != last_transition {
                        seen.events.push(Seen {
                            at_s,
                            what: format!("transition {}", transition.clone().unwrap_or_default()),
                        });
                        last_transition = transition;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stopped.changed() => break,
                }
            }
            seen
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Observed {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

/// One load window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Seconds since the scenario's clock started.
    pub start_s: f64,
    pub end_s: f64,
    pub summary: Summary,
}

impl Window {
    fn seconds(&self) -> f64 {
        self.end_s - self.start_s
    }

    fn had(&self, kind: &str) -> bool {
        self.summary
            .errors_by_kind
            .get(kind)
            .is_some_and(|&n| n > 0)
    }
}

/// Runs `driver` while the load generator runs in [`WINDOW`]s; the load stops when the
/// driver is done (requests in flight complete).
pub async fn load_during<T>(
    load: &mut LoadGenerator,
    name: &str,
    clock: Instant,
    driver: impl Future<Output = T>,
) -> (T, Vec<Window>) {
    let (done_tx, done_rx) = watch::channel(false);
    let driver = async move {
        let out = driver.await;
        done_tx.send_replace(true);
        out
    };
    let windows = async {
        let mut windows = Vec::new();
        while !*done_rx.borrow() {
            let start_s = secs(clock.elapsed());
            let mut done = done_rx.clone();
            let summary = load
                .phase_until(name, Stop::Duration(WINDOW), async move {
                    let _ = done.wait_for(|d| *d).await;
                })
                .await;
            windows.push(Window {
                start_s,
                end_s: secs(clock.elapsed()),
                summary,
            });
        }
        windows
    };
    tokio::join!(driver, windows)
}

/// Runs load in [`WINDOW`]s for at least `min`, until the last `clean` windows had no
/// failed request, at most `max`: a service that just changed (a rollout) settles before a
/// scenario starts.
pub async fn load_until_clean(
    load: &mut LoadGenerator,
    name: &str,
    clock: Instant,
    min: Duration,
    clean: usize,
    max: Duration,
) -> Vec<Window> {
    let started = Instant::now();
    let mut windows: Vec<Window> = Vec::new();
    loop {
        let start_s = secs(clock.elapsed());
        let summary = load.phase(name, Stop::Duration(WINDOW)).await;
        windows.push(Window {
            start_s,
            end_s: secs(clock.elapsed()),
            summary,
        });
        let settled = windows.len() >= clean
            && windows[windows.len() - clean..]
                .iter()
                .all(|w| w.summary.errors == 0);
        if (started.elapsed() >= min && settled) || started.elapsed() >= max {
            return windows;
        }
    }
}

/// Consecutive windows with failed requests: when, and the failures by kind.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSpan {
    pub from_s: f64,
    pub to_s: f64,
    pub errors: BTreeMap<String, u64>,
}

fn error_spans(windows: &[Window]) -> Vec<ErrorSpan> {
    let mut spans: Vec<ErrorSpan> = Vec::new();
    let mut open = false;
    for w in windows {
        if w.summary.errors == 0 {
            open = false;
            continue;
        }
        if !open {
            spans.push(ErrorSpan {
                from_s: w.start_s,
                to_s: w.end_s,
                errors: BTreeMap::new(),
            });
            open = true;
        }
        if let Some(span) = spans.last_mut() {
            span.to_s = w.end_s;
            for (k, n) in &w.summary.errors_by_kind {
                *span.errors.entry(k.clone()).or_default() += n;
            }
        }
    }
    spans
}

/// The windows' counts added up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub ok: u64,
    pub appends_acked: u64,
    pub reads_ok: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub stale_reads: u64,
    pub version_conflicts: u64,
    /// Sessions two pods acknowledged over overlapping version ranges (each counted in the
    /// window that first saw it), and up to 5 of them.
    pub double_writers: u64,
    pub double_writer_examples: Vec<String>,
    pub not_owner: u64,
    pub forwarded: u64,
    pub moved_warm: u64,
    pub moved_cold: u64,
    /// Moved sessions whose first answer from the new pod announced no takeover.
    pub moved_unannounced: u64,
    pub first_touches: BTreeMap<String, u64>,
    pub by_pod: BTreeMap<String, u64>,
}

impl Totals {
    pub fn of(windows: &[Window]) -> Self {
        let mut t = Self::default();
        for w in windows {
            let s = &w.summary;
            t.requests += s.requests;
            t.ok += s.ok;
            t.appends_acked += s.appends_acked;
            t.reads_ok += s.reads_ok;
            t.duplicates += s.duplicates;
            t.errors += s.errors;
            for (k, n) in &s.errors_by_kind {
                *t.errors_by_kind.entry(k.clone()).or_default() += n;
            }
            t.stale_reads += s.stale_reads;
            t.version_conflicts += s.version_conflicts;
            t.double_writers += s.double_writers;
            let room = 5usize.saturating_sub(t.double_writer_examples.len());
            t.double_writer_examples
                .extend(s.double_writer_examples.iter().take(room).cloned());
            t.not_owner += s.not_owner;
            t.forwarded += s.forwarded;
            t.moved_warm += s.moved.warm;
            t.moved_cold += s.moved.cold;
            t.moved_unannounced += s.moved.unannounced;
            for (k, n) in &s.handoff {
                *t.first_touches.entry(k.clone()).or_default() += n;
            }
            for (k, n) in &s.by_pod {
                *t.by_pod.entry(k.clone()).or_default() += n;
            }
        }
        t
    }
}

/// Seconds of the windows in which some request failed with `kind`, and the first and last
/// such window's start.
fn seconds_with(
    windows: &[Window],
    pred: impl Fn(&Window) -> bool,
) -> (f64, Option<f64>, Option<f64>) {
    let hit: Vec<&Window> = windows.iter().filter(|w| pred(w)).collect();
    let total = hit.iter().fold(0.0, |sum, w| sum + w.seconds());
    (
        round1(total),
        hit.first().map(|w| w.start_s),
        hit.last().map(|w| w.end_s),
    )
}

/// What a scenario did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub fault: String,
    pub victim: String,
    /// Seconds since the scenario's clock started (the clock starts with the steady load).
    pub scale_applied_s: f64,
    pub fault_from_s: f64,
    pub fault_to_s: f64,
    /// When the service was seen converged on the new size (after the fault ended);
    /// `None`: not within the bound.
    pub converged_s: Option<f64>,
    /// When a ring with the new number of slots was first published as Stable.
    pub stable_ring_s: Option<f64>,
    pub totals: Totals,
    /// Seconds (of load windows) during which some request got 503.
    pub unavailable_503_s: f64,
    pub first_503_s: Option<f64>,
    pub last_503_s: Option<f64>,
    /// Seconds during which some request failed for any reason.
    pub any_error_s: f64,
    pub load_s: f64,
    /// When requests failed, and how.
    pub error_spans: Vec<ErrorSpan>,
    pub verification: Verification,
    pub ring: Vec<RingSeen>,
    /// The victim pod's states and the operator's transitions, as they changed.
    pub events: Vec<Seen>,
    pub victim_restarts: Option<i32>,
    pub last_transition: Option<Value>,
    /// The victim's log lines about hand-offs, drains and warnings (printed when the
    /// scenario broke an invariant).
    pub victim_log: Vec<String>,
    pub notes: Vec<String>,
    /// The scenario's own checks that failed.
    pub scenario_failures: Vec<String>,
    /// The scenario's own figures.
    pub scenario_figures: BTreeMap<String, Value>,
    /// Every write of the ring `ConfigMap`, checked.
    pub ring_audit: RingAuditReport,
}

/// What the scenario's driver reports to [`ScenarioReport::new`].
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// What the fault hit, when not slot 0's pod (the operator scenarios).
    pub victim: Option<String>,
    pub scale_applied_s: f64,
    pub fault_from_s: f64,
    pub fault_to_s: f64,
    pub converged_s: Option<f64>,
    pub notes: Vec<String>,
    /// The scenario's own checks that failed, in words.
    pub failures: Vec<String>,
    /// The scenario's own figures, added to the `CHAOS-RESULT` line.
    pub figures: BTreeMap<String, Value>,
}

impl ScenarioReport {
    #[allow(clippy::too_many_arguments, reason = "one report from its parts")]
    pub fn new(
        scenario: &str,
        fault: &str,
        victim: &str,
        timeline: Timeline,
        windows: &[Window],
        verification: Verification,
        observed: Observed,
        replicas: u16,
    ) -> Self {
        let Observed { ring, events } = observed;
        let (unavailable_503_s, first_503_s, last_503_s) =
            seconds_with(windows, |w| w.had("http_503"));
        let (any_error_s, _, _) = seconds_with(windows, |w| w.summary.errors > 0);
        let load_s = round1(windows.iter().fold(0.0, |sum, w| sum + w.seconds()));
        let stable_ring_s = ring
            .iter()
            .find(|r| {
                r.phase == "stable"
                    && r.slots == usize::from(replicas)
                    && r.at_s > timeline.scale_applied_s
            })
            .map(|r| r.at_s);
        Self {
            scenario: scenario.to_owned(),
            fault: fault.to_owned(),
            victim: timeline.victim.unwrap_or_else(|| victim.to_owned()),
            scale_applied_s: timeline.scale_applied_s,
            fault_from_s: timeline.fault_from_s,
            fault_to_s: timeline.fault_to_s,
            converged_s: timeline.converged_s,
            stable_ring_s,
            totals: Totals::of(windows),
            unavailable_503_s,
            first_503_s,
            last_503_s,
            any_error_s,
            load_s,
            error_spans: error_spans(windows),
            verification,
            ring,
            events,
            victim_restarts: None,
            last_transition: None,
            victim_log: Vec::new(),
            notes: timeline.notes,
            scenario_failures: timeline.failures,
            scenario_figures: timeline.figures,
            ring_audit: RingAuditReport::default(),
        }
    }

    /// The report for people, then one JSON line (`CHAOS-RESULT {...}`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let _ = writeln!(out, "==== chaos scenario {} ====", self.scenario);
        let _ = writeln!(
            out,
            "fault: {} on {} from t={:.1}s to t={:.1}s ({:.1} s); scale applied at t={:.1}s",
            self.fault,
            self.victim,
            self.fault_from_s,
            self.fault_to_s,
            self.fault_to_s - self.fault_from_s,
            self.scale_applied_s
        );
        self.render_timeline(&mut out);
        let _ = writeln!(
            out,
            "load ({:.1} s): requests {}  ok {}  acknowledged appends {}  reads {}  errors {} {:?}",
            self.load_s, t.requests, t.ok, t.appends_acked, t.reads_ok, t.errors, t.errors_by_kind
        );
        let _ = writeln!(
            out,
            "unavailability: 503s during {:.1} s (first t={}, last t={}); any error during {:.1} s",
            self.unavailable_503_s,
            self.first_503_s
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s")),
            self.last_503_s
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s")),
            self.any_error_s
        );
        for span in &self.error_spans {
            let _ = writeln!(
                out,
                "  failures t={:.1}–{:.1}s: {:?}",
                span.from_s, span.to_s, span.errors
            );
        }
        self.render_checks(&mut out);
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(
            out,
            "ring ConfigMap: {} writes, {} versions; problems {:?}",
            self.ring_audit.writes, self.ring_audit.versions, self.ring_audit.problems
        );
        for failure in self
            .scenario_failures
            .iter()
            .chain(&self.ring_audit.problems)
        {
            let _ = writeln!(out, "FAILED: {failure}");
        }
        if let Some(last) = &self.last_transition {
            let _ = writeln!(out, "status.lastTransition: {last}");
        }
        if !self.safe() && !self.victim_log.is_empty() {
            let _ = writeln!(
                out,
                "victim log (hand-offs, drains, warnings; last {}):",
                self.victim_log.len()
            );
            for line in &self.victim_log {
                let _ = writeln!(out, "  | {line}");
            }
        }
        let _ = writeln!(
            out,
            "CHAOS-RESULT {}",
            serde_json::to_string(&self.figures()).unwrap_or_default()
        );
        out
    }

    /// Moved sessions, the read-back and the checks made during the load.
    fn render_checks(&self, out: &mut String) {
        let t = &self.totals;
        let v = &self.verification;
        let _ = writeln!(
            out,
            "moved sessions warm {} cold {} ({} without a takeover announced); first touches {:?}; not owner {}, forwarded {}",
            t.moved_warm,
            t.moved_cold,
            t.moved_unannounced,
            t.first_touches,
            t.not_owner,
            t.forwarded
        );
        let _ = writeln!(
            out,
            "read back {} sessions: {} acknowledged appends (whole run), LOST {}, stale sessions {}, unreadable {} ({} appends unverified) {:?}",
            v.sessions_checked,
            v.acked_appends,
            v.lost_writes,
            v.stale_sessions,
            v.sessions_unreadable,
            v.unverified_appends,
            v.read_errors
        );
        let _ = writeln!(
            out,
            "checks during load: stale reads {}, version conflicts (two writers) {}, double writers (overlapping pods) {}, duplicates {}",
            t.stale_reads, t.version_conflicts, t.double_writers, t.duplicates
        );
        if !t.double_writer_examples.is_empty() {
            let _ = writeln!(out, "double writers, e.g.: {:?}", t.double_writer_examples);
        }
        if !v.lost_examples.is_empty() {
            let _ = writeln!(out, "lost, e.g.: {:?}", v.lost_examples);
        }
        match self.victim_restarts {
            Some(r) => {
                let _ = writeln!(out, "victim container restarts: {r}");
            }
            None => {
                let _ = writeln!(out, "victim pod: gone by the end (replaced or deleted)");
            }
        }
    }

    /// The ring's versions and when the service converged.
    fn render_timeline(&self, out: &mut String) {
        let ring: Vec<String> = self
            .ring
            .iter()
            .map(|r| {
                format!(
                    "v{} {} ({} slots) t={:.1}",
                    r.version, r.phase, r.slots, r.at_s
                )
            })
            .collect();
        let _ = writeln!(out, "ring: {}", ring.join(" → "));
        let events: Vec<String> = self
            .events
            .iter()
            .map(|e| format!("t={:.1} {}", e.at_s, e.what))
            .collect();
        let _ = writeln!(out, "seen: {}", events.join("; "));
        let _ = writeln!(
            out,
            "converged: {}; stable ring with the new size published: {}",
            self.converged_s.map_or_else(
                || "NO (not within the bound)".to_owned(),
                |s| format!("t={s:.1}s")
            ),
            self.stable_ring_s.map_or_else(
                || "never".to_owned(),
                |s| format!(
                    "t={s:.1}s ({} the heal)",
                    if s < self.fault_to_s {
                        "BEFORE"
                    } else {
                        "after"
                    }
                )
            )
        );
    }

    /// The figures of the scenario table.
    pub fn figures(&self) -> Value {
        let mut figures = serde_json::json!({
            "scenario": self.scenario,
            "requests": self.totals.requests,
            "acknowledged": self.totals.appends_acked,
            "acknowledged_whole_run": self.verification.acked_appends,
            "errors": self.totals.errors,
            "errors_by_kind": self.totals.errors_by_kind,
            "lost": self.verification.lost_writes,
            "stale_sessions": self.verification.stale_sessions,
            "unreadable_sessions": self.verification.sessions_unreadable,
            "version_conflicts": self.totals.version_conflicts,
            "double_writers": self.totals.double_writers,
            "stale_reads": self.totals.stale_reads,
            "duplicates": self.totals.duplicates,
            "unavailable_503_s": self.unavailable_503_s,
            "any_error_s": self.any_error_s,
            "fault_s": round1(self.fault_to_s - self.fault_from_s),
            "converged_s": self.converged_s,
            "stable_ring_before_heal": self.stable_ring_s.is_some_and(|s| s < self.fault_to_s),
            "moved_warm": self.totals.moved_warm,
            "moved_cold": self.totals.moved_cold,
            "first_touches": self.totals.first_touches,
            "victim_restarts": self.victim_restarts,
            "ring_writes": self.ring_audit.writes,
            "ring_versions": self.ring_audit.versions,
        });
        if let Some(map) = figures.as_object_mut() {
            for (k, v) in &self.scenario_figures {
                map.insert(k.clone(), v.clone());
            }
        }
        figures
    }

    /// The invariants: nothing acknowledged lost, no stale session or read, no two writers,
    /// every session readable, and the service converged once the fault was gone.
    /// Unavailability (503s) is reported, not asserted.
    pub fn assert_safe(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "scenario {}: {}",
            self.scenario,
            failures.join("; ")
        );
    }

    /// True if no invariant was broken.
    pub fn safe(&self) -> bool {
        self.failures().is_empty()
    }

    /// The invariants broken, in words.
    fn failures(&self) -> Vec<String> {
        let v = &self.verification;
        let mut failures = self.scenario_failures.clone();
        failures.extend(self.ring_audit.problems.iter().cloned());
        if v.lost_writes > 0 {
            failures.push(format!(
                "{} of {} acknowledged appends lost (e.g. {:?})",
                v.lost_writes, v.acked_appends, v.lost_examples
            ));
        }
        if v.stale_sessions > 0 {
            failures.push(format!("{} stale sessions", v.stale_sessions));
        }
        if v.sessions_unreadable > 0 {
            failures.push(format!(
                "{} sessions unreadable after the scenario: {:?}",
                v.sessions_unreadable, v.read_errors
            ));
        }
        if self.totals.version_conflicts > 0 {
            failures.push(format!(
                "{} version conflicts (two writers of one session)",
                self.totals.version_conflicts
            ));
        }
        if self.totals.double_writers > 0 {
            failures.push(format!(
                "{} sessions with two pods acknowledging overlapping versions (e.g. {:?})",
                self.totals.double_writers, self.totals.double_writer_examples
            ));
        }
        if self.totals.stale_reads > 0 {
            failures.push(format!("{} stale reads", self.totals.stale_reads));
        }
        if self.converged_s.is_none() {
            failures.push("the service did not converge after the fault ended".to_owned());
        }
        if v.sessions_checked == 0 || v.acked_appends == 0 {
            failures.push("no acknowledged append was read back: the load did not run".to_owned());
        }
        failures
    }
}

/// Runs `f` on the blocking pool (fault injection runs commands and may wait).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out,
        Err(error) => panic!("blocking task failed: {error}"),
    }
}

pub fn secs(d: Duration) -> f64 {
    round1(d.as_secs_f64())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
