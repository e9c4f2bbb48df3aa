//! Fault injection on the local cluster (issue #10): Locus promises one writer per session
//! and no acknowledged write lost, also when pods are cut apart, paused or cut off from the
//! API server during a transition. Each scenario deploys the demo's set-up (the operator
//! installed with its Helm chart, the sample ledger as a `StatefulService` with 3 replicas,
//! the demo's load generator routed by the ring), runs load throughout, injects one fault
//! into one of the original pods around a scale 3 → 5, ends the fault, and then requires:
//!
//! * no acknowledged append lost (every session read back), no stale session, no stale
//!   read, no two appends of one session answered with one version (two writers);
//! * the service converged on 5 slots once the fault is gone.
//!
//! Requests answered 503 are allowed (failing closed is the promised price) and reported:
//! the seconds during which requests got 503 are counted in one-second load windows. Every
//! scenario prints its report (`--nocapture`) before asserting, and a `CHAOS-RESULT` JSON
//! line with the figures.
//!
//! | test | scenario name | fault on slot 0's pod (one of the 3 originals, a losing pod) |
//! |---|---|---|
//! | `partition_from_pods_across_a_scale_up` | `partition` | cut off from every other pod (not from the host: API server, probes, load generator), injected just before the scale |
//! | `pause_of_a_losing_pod_across_a_scale_up` | `pause` | SIGSTOP of all its processes right after the scale is applied, then SIGCONT |
//! | `cut_from_the_api_server_across_a_scale_up` | `apiserver-cut` | cut off from the API server only, injected just before the scale |
//! | `stalled_append_across_a_scale_up` | `stall` | none: one append to a session moving off it, sent straight to it with a 90 s stall (`x-sample-stall-ms`) as soon as the Warm ring is published |
//! | `ring_deleted_mid_switch` | `ring-deleted` | none: the ring `ConfigMap` deleted as soon as a ring in its Switch is published |
//! | `leader_operator_paused_during_warm` | `leader-pause` | none on the sample: the leading operator of two stopped (SIGSTOP) as soon as the Warm is published, continued once the other took the Lease over and published a ring of its own (at most 25 s) |
//! | `leader_killed_mid_switch_with_the_standby_clock_ahead` | `standby-skew` | none on the sample: the chart's one operator killed (SIGKILL, its `Deployment` at 0) as soon as the Switch is published; the standby, a host process under libfaketime, runs 60 s ahead |
//! | `slow_persistence_on_a_losing_pod_across_a_scale_up` | `slow-persistence` | with the sample writing sessions back to PostgreSQL (idle after 2 s) through a slow link: every query of slot 0's pod delayed 2 s from the Warm to 30 s past the Switch |
//!
//! Each fault holds through Warm and Switch: until the operator published the Switch, then
//! 40 s more — past the SDK's `handoff_deadline` (30 s from the moment a gaining pod sees
//! the Switch; the sample keeps the default), where an SDK before ADR 0001 loaded the keys
//! cold — at most 120 s; then it is healed (or the pod continued) and the transition must
//! finish. The report shows the ring versions, the victim pod's states and the operator's
//! transitions as they changed (`seen:`), so a settle before the heal is visible.
//!
//! `make test` runs the cheapest scenario, the API server cut (its Warm is not held up, so
//! its Switch comes early); the others are `#[ignore]`d and run by `make chaos`
//! (`--include-ignored`). `LOCUS_CHAOS_SCENARIOS=partition,pause` narrows either to the
//! named scenarios. The sample runs as the demo runs it, sessions in memory only, but for
//! `slow-persistence`: a private PostgreSQL on the bridge address behind a
//! [`SlowLink`](locus_e2e::slowlink::SlowLink) (the kernel has no netem), `DATABASE_URL` and a
//! 2 s idle timeout set in the template first (a rollout); its table is polled throughout and
//! a persisted (epoch, version) that goes back fails the run. For the pause, the demo's liveness probe is first removed
//! from the template (a rollout): with it, the node agent would SIGTERM the stopped process
//! after three failed probes and SIGKILL it 30 s later, turning the pause into a crash. (An
//! operator that deletes the paused, not-Ready pod does the same: the node agent kills it
//! at the end of its grace period, still stopped; `seen:` then shows it `terminating` and
//! `gone` before the fault's end.) The load generator is closed-loop, so for the pause it
//! runs 32 workers (still paced at the demo's rate) with a 5 s request timeout: requests to
//! the stopped pod time out (reported) while the other pods keep getting load.
//!
//! The last two inject no fault into a pod. `stall` first turns the sample's test stall on
//! in the template (`LOCUS_SAMPLE_TEST_STALL=true`, a rollout), gives 16 sessions of a
//! prefix the load generator does not use, owned by slot 0's pod, one append each, applies
//! the scale, and as soon as the Warm ring names the new owners sends one more append
//! (seq 2) to one of them that moves, straight to slot 0's pod, stalled 90 s after
//! admission: past the tombstone TTL (60 s), so only the store's load guard (ADR 0001 rule
//! 5) stands between it and a second writer. It also requires that the stalled append is
//! not answered 2xx (421 or 503 expected; what came is reported) and that the session read
//! from its owner under the final ring holds the first append and not the stalled one.
//! `ring-deleted` requires that the operator publishes a ring again, at a higher version
//! than the one deleted.
//!
//! Every scenario also audits the ring `ConfigMap` through a watch: each write is checked
//! (ring versions never go back; no version is published twice with different documents, as
//! a deposed leader writing from a stale read would). The two operator scenarios check that
//! the Lease changed hands, that the resumed leader said it stood down (`lost leadership` in
//! its log), and for the skew that the standby's clock really ran ahead (the timestamp of
//! its first log line against the host's clock).
//!
//! On an external cluster (kind) the scenarios say they are skipped and pass. Build first:
//! `cargo build -p locus-operator -p locus-examples -p locus-e2e --bins`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod chaos_support;
mod demo_support;

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use chaos_support::operator::{self, RingAudit};
use chaos_support::persistence::{PgAudit, PgAuditReport, SlowPostgres};
use chaos_support::*;
use demo_support::*;
use locus_e2e::accounting::HandoffCheck;
use locus_e2e::chaos::{self, ChaosPod, ClusterNet, NetFault, Paused};
use locus_e2e::demo::Demo;
use locus_e2e::support::logs;
use locus_e2e::support::operator::HostOperator;
use locus_examples::sample::STALL_HEADER;

/// Load before the fault: at least this long, until the last few windows had no failed
/// request (after the pause scenario's rollout the new pods may still be taking sessions
/// over), at most the bound.
const STEADY: Duration = Duration::from_secs(5);
const STEADY_CLEAN_WINDOWS: usize = 3;
const STEADY_BOUND: Duration = Duration::from_secs(60);
/// Replicas before and after the scale.
const FROM: u16 = 3;
const TO: u16 = 5;
/// The sample's port.
const PORT: u16 = 8080;
/// The sample's container name in the demo's manifest.
const CONTAINER: &str = "ledger";
/// Victim log lines (hand-offs, drains, warnings) kept in the report.
const VICTIM_LOG_LINES: usize = 40;
/// How long a fault holds once the Switch is published: the SDK's `handoff_deadline`
/// (30 s by default; the sample does not change it) plus a margin.
const PAST_HANDOFF_DEADLINE: Duration = Duration::from_secs(40);
/// Longest a fault holds.
const MAX_HOLD: Duration = Duration::from_secs(120);
/// Longest wait for the service to converge once the fault is gone.
const CONVERGE_BOUND: Duration = Duration::from_secs(240);
/// Load kept running once converged, so moved sessions get touched on their new pods.
const TAIL: Duration = Duration::from_secs(5);
/// Longest a whole scenario may take (deploy, load, fault, convergence, read-back).
const SCENARIO_BOUND: Duration = Duration::from_secs(900);

/// Which fault a scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Cut off from the other pods just before the scale.
    Partition,
    /// SIGSTOP right after the scale is applied.
    Pause,
    /// Cut off from the API server only, just before the scale.
    ApiServerCut,
    /// One append to a moving session, stalled in the handler of its original owner for
    /// [`STALL`] from the Warm on (no fault on a pod).
    Stall,
    /// The ring's `ConfigMap` deleted as soon as the Switch is published (no fault on a pod).
    RingDeleted,
    /// The leading operator (of the chart's two) stopped with SIGSTOP as soon as the Warm
    /// is published, continued once the other one took the Lease over and carried the
    /// transition on.
    LeaderPause,
    /// The leading operator (the chart's one) killed as soon as the Switch is published;
    /// the standby that takes over runs on the host with its clock 60 s ahead.
    StandbySkew,
    /// The sample writes sessions back to PostgreSQL (idle after 2 s); from the Warm on,
    /// every query slot 0's pod sends is delayed [`SLOW_PG_DELAY`], until
    /// [`SLOW_PG_AFTER_SWITCH`] after the Switch.
    SlowPersistence,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Self::Partition => "partition from the other pods (iptables in the pod's netns)",
            Self::Pause => "SIGSTOP of every process of the pod",
            Self::ApiServerCut => "cut from the API server only (iptables in the pod's netns)",
            Self::Stall => "one append to a moving session stalled 90 s after admission",
            Self::RingDeleted => "the ring ConfigMap deleted as soon as the Switch is published",
            Self::LeaderPause => {
                "SIGSTOP of the leading operator as soon as the Warm is published, SIGCONT once the standby took over"
            }
            Self::StandbySkew => {
                "the leading operator killed (SIGKILL) as soon as the Switch is published; the standby's clock is 60 s ahead"
            }
            Self::SlowPersistence => {
                "PostgreSQL write-backs and loads of the pod delayed 2 s each from the Warm to 30 s past the Switch"
            }
        }
    }
}

/// A fault in force; ended explicitly or when dropped.
enum Held {
    Net(NetFault),
    Paused(Paused),
}

impl Held {
    fn end(self) {
        match self {
            Self::Net(fault) => fault.heal().unwrap(),
            Self::Paused(paused) => paused.resume().unwrap(),
        }
    }
}

/// One scenario: its name (for `LOCUS_CHAOS_SCENARIOS`), the fault, and how long it holds.
struct Plan {
    name: &'static str,
    fault: Fault,
    /// The fault holds until the ring reached its Switch (or went past it), then this
    /// long: past the SDK's `handoff_deadline` (30 s, the sample's default), which runs from
    /// the moment a gaining pod sees the Switch.
    after_switch: Duration,
    /// ... but never longer than this from the fault's start.
    max_hold: Duration,
    /// Remove the demo's liveness probe first (a rollout), so that a paused pod is not
    /// killed by the node agent while paused.
    without_liveness: bool,
    /// Turn the sample's test stall on first (`LOCUS_SAMPLE_TEST_STALL=true`, a rollout).
    test_stall: bool,
    /// Load generator workers and per-request timeout, if not the demo harness's (8 and
    /// 20 s). The load generator is closed-loop: a worker whose request went to a paused
    /// pod waits for its timeout, so a pause needs more workers and a shorter timeout to
    /// keep load on the other pods.
    load: Option<(usize, Duration)>,
    /// Operator replicas of the chart (the demo harness installs one).
    operators: u8,
    /// Run a standby operator on the host with its clock this far ahead (libfaketime).
    skewed_standby: Option<Duration>,
    /// The sample writes sessions back to a private PostgreSQL behind a [`SlowLink`]
    /// (`DATABASE_URL` and a short idle timeout set in the template first, a rollout).
    ///
    /// [`SlowLink`]: locus_e2e::slowlink::SlowLink
    postgres: bool,
}

/// Probes the paths a network fault cuts or keeps: peer → victim, victim → API server,
/// host → victim (`None`: a connection opened; else why not). A path the fault should keep
/// is tried up to three times (on a loaded machine the probe itself can be slow to start); a
/// path it should cut, once.
fn probe_paths(fault: Fault, victim: &ChaosPod, peer: &ChaosPod) -> [Option<String>; 3] {
    let victim_http = SocketAddrV4::new(victim.ip, PORT);
    let api = SocketAddrV4::new(victim.net.gateway, victim.net.api_port);
    let wait = Duration::from_secs(3);
    let partition = fault == Fault::Partition;
    let tries = |keep: bool, probe: &dyn Fn() -> Option<String>| {
        let mut last = None;
        for _ in 0..if keep { 3 } else { 1 } {
            last = probe();
            if last.is_none() {
                break;
            }
        }
        last
    };
    [
        tries(!partition, &|| {
            peer.connect_failure(victim_http, wait).unwrap()
        }),
        tries(partition, &|| victim.connect_failure(api, wait).unwrap()),
        tries(true, &|| {
            TcpStream::connect_timeout(&SocketAddr::V4(victim_http), wait)
                .err()
                .map(|e| e.to_string())
        }),
    ]
}

/// Injects the plan's fault around the scale, holds it, ends it, waits for convergence
/// and the tail. Returns what happened when.
async fn drive(
    plan: &Plan,
    service: &Service,
    victim: &ChaosPod,
    peer: &ChaosPod,
    extras: &Extras,
    clock: Instant,
) -> Timeline {
    match plan.fault {
        Fault::Stall => Box::pin(drive_stall(service, victim, clock)).await,
        Fault::RingDeleted => Box::pin(drive_ring_deleted(service, clock)).await,
        Fault::LeaderPause => Box::pin(drive_leader_pause(service, extras, clock)).await,
        Fault::StandbySkew => Box::pin(drive_standby_skew(service, extras, clock)).await,
        Fault::SlowPersistence => {
            Box::pin(drive_slow_persistence(service, victim, extras, clock)).await
        }
        Fault::Partition | Fault::ApiServerCut | Fault::Pause => {
            Box::pin(drive_pod_fault(plan, service, victim, peer, clock)).await
        }
    }
}

/// [`drive`] for a fault on the victim pod.
async fn drive_pod_fault(
    plan: &Plan,
    service: &Service,
    victim: &ChaosPod,
    peer: &ChaosPod,
    clock: Instant,
) -> Timeline {
    let mut timeline = Timeline::default();
    let ring_before = service.ring().await.unwrap().unwrap().version();
    let (held, generation) = match plan.fault {
        Fault::Partition | Fault::ApiServerCut => {
            let pod = victim.clone();
            let fault = plan.fault;
            let held = blocking(move || match fault {
                Fault::Partition => chaos::partition_from_pods(&pod),
                _ => chaos::cut_from_api_server(&pod),
            })
            .await
            .unwrap();
            timeline.fault_from_s = secs(clock.elapsed());
            // The fault cuts what it says and nothing else.
            let (v, p) = (victim.clone(), peer.clone());
            let [peer_to_victim, victim_to_api, host_to_victim] =
                blocking(move || probe_paths(fault, &v, &p)).await;
            let (peer_to_victim, victim_to_api, host_to_victim) = (
                peer_to_victim.as_ref(),
                victim_to_api.as_ref(),
                host_to_victim.as_ref(),
            );
            let note = format!(
                "after the fault: peer {} → victim :{PORT} {}, victim → API server {}, host → victim :{PORT} {}",
                peer.name,
                open(peer_to_victim),
                open(victim_to_api),
                open(host_to_victim)
            );
            say(&note);
            timeline.notes.push(note);
            let partition = plan.fault == Fault::Partition;
            assert!(
                host_to_victim.is_none()
                    && peer_to_victim.is_none() != partition
                    && victim_to_api.is_none() == partition,
                "the fault must cut exactly what it says"
            );
            say(&format!(
                "{} on {victim}; scaling {FROM} → {TO}",
                plan.fault.describe()
            ));
            timeline.scale_applied_s = secs(clock.elapsed());
            (Held::Net(held), service.scale(TO).await.unwrap())
        }
        Fault::Pause
        | Fault::Stall
        | Fault::RingDeleted
        | Fault::LeaderPause
        | Fault::StandbySkew
        | Fault::SlowPersistence => {
            say(&format!(
                "scaling {FROM} → {TO}; then {} on {victim}",
                plan.fault.describe()
            ));
            timeline.scale_applied_s = secs(clock.elapsed());
            let generation = service.scale(TO).await.unwrap();
            let pod = victim.clone();
            let paused = blocking(move || chaos::pause(&pod)).await.unwrap();
            timeline.fault_from_s = secs(clock.elapsed());
            timeline
                .notes
                .push(format!("paused processes {:?}", paused.pids()));
            (Held::Paused(paused), generation)
        }
    };
    hold(plan, service, ring_before, clock, &mut timeline).await;
    blocking(move || held.end()).await;
    timeline.fault_to_s = secs(clock.elapsed());
    say(&format!(
        "fault ended on {victim}; waiting for the service to converge on {TO} slots"
    ));
    if converged(service, generation, clock, &mut timeline).await {
        tokio::time::sleep(TAIL).await;
    }
    timeline
}

/// Waits while the fault holds: until the ring reached its Switch, then the plan's time
/// past it, bounded by the plan's longest hold.
async fn hold(
    plan: &Plan,
    service: &Service,
    ring_before: u64,
    clock: Instant,
    timeline: &mut Timeline,
) {
    let bound = clock + Duration::from_secs_f64(timeline.fault_from_s) + plan.max_hold;
    if service
        .wait_switch(ring_before, bound.saturating_duration_since(Instant::now()))
        .await
    {
        let at = secs(clock.elapsed());
        timeline.notes.push(format!(
            "Switch (or later) seen at t={at:.1}s; the fault holds {:?} more",
            plan.after_switch
        ));
        let until = (Instant::now() + plan.after_switch).min(bound);
        tokio::time::sleep_until(until.into()).await;
    } else {
        timeline.notes.push(format!(
            "no Switch within {:?} of the fault's start",
            plan.max_hold
        ));
    }
}

/// How long the stalled append waits in the handler: longer than the tombstone TTL (60 s by
/// default), so that the tombstone of the moved key is gone when it goes on (ADR 0001
/// rule 5).
const STALL: Duration = Duration::from_secs(90);
/// Prefix of the stall scenario's sessions: not the load generator's.
const STALL_PREFIX: &str = "chaos-stall";
/// Sessions of the victim given one append before the scale; the stalled one is picked
/// among them once the Warm ring names their new owners.
const STALL_CANDIDATES: usize = 16;
/// `seq` of the first append and of the stalled one.
const FIRST_SEQ: u64 = 1;
const STALLED_SEQ: u64 = 2;

/// One append of `session` with `seq`, straight to `base` (a pod), stalled `stall` in the
/// handler if given: the status and the body, or why there was no answer.
async fn append(
    http: &reqwest::Client,
    base: &str,
    session: &str,
    seq: u64,
    stall: Option<Duration>,
) -> Result<(u16, String), String> {
    let body = serde_json::json!({"seq": seq, "kind": "chaos", "amount": 1}).to_string();
    let mut request = http
        .post(format!("{base}/sessions/{session}/events"))
        .header(locus::headers::SESSION, session)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(stall) = stall {
        request = request.header(STALL_HEADER, stall.as_millis().to_string());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((status, text))
}

/// `session` read from `base` (a pod): the status and the body.
async fn read_session(
    http: &reqwest::Client,
    base: &str,
    session: &str,
) -> Result<(u16, serde_json::Value), String> {
    let response = http
        .get(format!("{base}/sessions/{session}"))
        .header(locus::headers::SESSION, session)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}

/// The `seq`s of a session view's recent events.
fn seqs_of(view: &serde_json::Value) -> Vec<u64> {
    view.get("recent")
        .and_then(serde_json::Value::as_array)
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e.get("seq").and_then(serde_json::Value::as_u64))
                .collect()
        })
        .unwrap_or_default()
}

/// The stall scenario's session read from its owner under the ring now: its `seq`s (`None`:
/// not readable); the first append must be there, the stalled one not.
async fn read_back(
    http: &reqwest::Client,
    service: &Service,
    session: &str,
    timeline: &mut Timeline,
) -> Option<Vec<u64>> {
    let ring = service.ring().await.unwrap().unwrap();
    let owner = ring.owner(session.as_bytes()).clone();
    let read = read_session(http, &format!("http://{}", owner.pod.address), session).await;
    let seqs = match &read {
        Ok((200, view)) => Some(seqs_of(view)),
        _ => None,
    };
    let note = format!(
        "{session} read back from slot {} ({}) under ring v{}: {read:?}",
        owner.index,
        owner.pod.name,
        ring.version()
    );
    timeline.notes.push(note);
    match &seqs {
        None => timeline
            .failures
            .push(format!("{session} not readable from its new owner")),
        Some(seqs) => {
            if !seqs.contains(&FIRST_SEQ) {
                timeline.failures.push(format!(
                    "{session} lost its first (acknowledged) append: seqs {seqs:?}"
                ));
            }
            if seqs.contains(&STALLED_SEQ) {
                timeline
                    .failures
                    .push(format!("{session} holds the stalled append: seqs {seqs:?}"));
            }
        }
    }
    seqs
}

/// Sessions of the stall scenario's prefix owned by `victim` under `ring`, each given one
/// append (seq [`FIRST_SEQ`]) straight on the victim, so that its state is resident there.
async fn resident_sessions(
    http: &reqwest::Client,
    victim_base: &str,
    ring: &locus::ring::Ring,
    victim: &ChaosPod,
) -> Vec<String> {
    let candidates: Vec<String> = (0u32..)
        .map(|i| format!("{STALL_PREFIX}-{i}"))
        .filter(|id| ring.owner(id.as_bytes()).pod.name == victim.name)
        .take(STALL_CANDIDATES)
        .collect();
    for id in &candidates {
        let answer = append(http, victim_base, id, FIRST_SEQ, None).await;
        assert!(
            matches!(answer, Ok((200..=299, _))),
            "first append of {id} on {victim}: {answer:?}"
        );
    }
    candidates
}

/// Notes the stalled append's answer; a 2xx is a failure (421 or 503 expected). Returns
/// its status, if it was answered.
fn judge_stalled(
    answer: &Result<(u16, String), String>,
    waited: f64,
    timeline: &mut Timeline,
) -> Option<u16> {
    let (status, shown) = match answer {
        Ok((status, body)) => (Some(*status), format!("{status} {body}")),
        Err(why) => (None, format!("no answer ({why})")),
    };
    let note = format!("stalled append answered after {waited:.1} s: {shown}");
    say(&note);
    timeline.notes.push(note);
    match status {
        Some(s) if (200..300).contains(&s) => timeline.failures.push(format!(
            "the stalled append was answered {s}: admitted under the old ring, applied after its key moved"
        )),
        Some(421 | 503) => {}
        _ => timeline
            .notes
            .push("the stalled append got neither 421 nor 503".to_owned()),
    }
    status
}

/// The stall scenario: sessions of the victim (a prefix the load generator does not use)
/// get one append each; the scale is applied; as soon as the Warm ring names the new
/// owners, one append to a session that moves off the victim goes straight to the victim
/// with a 90 s stall. The scale completes meanwhile. The stalled append must not be
/// answered 2xx, and the session read from its new owner must hold the first append and
/// not the stalled one.
async fn drive_stall(service: &Service, victim: &ChaosPod, clock: Instant) -> Timeline {
    let mut timeline = Timeline::default();
    let before = service.ring().await.unwrap().unwrap();
    let http = reqwest::Client::builder()
        .timeout(STALL + Duration::from_secs(60))
        .build()
        .unwrap();
    let victim_base = format!("http://{}:{PORT}", victim.ip);
    let candidates = resident_sessions(&http, &victim_base, &before, victim).await;
    say(&format!(
        "{} sessions {STALL_PREFIX}-* resident on {victim}; scaling {FROM} → {TO}",
        candidates.len()
    ));
    timeline.scale_applied_s = secs(clock.elapsed());
    let generation = service.scale(TO).await.unwrap();
    // The first ring past the old one: the Warm (its target names the new owners), or, if
    // it was missed, a later one.
    let deadline = Instant::now() + MAX_HOLD;
    let next = loop {
        if let Ok(Some(ring)) = service.ring().await
            && ring.version() > before.version()
        {
            break Some(ring);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Some(next) = next else {
        timeline
            .failures
            .push(format!("no new ring within {MAX_HOLD:?} of the scale"));
        return timeline;
    };
    let new_owner = |id: &String| {
        next.target_owner(id.as_bytes())
            .unwrap_or_else(|| next.owner(id.as_bytes()))
            .clone()
    };
    let Some(session) = candidates
        .iter()
        .find(|id| new_owner(id).pod.name != victim.name)
        .cloned()
    else {
        timeline.failures.push(format!(
            "none of {} sessions of the victim moves in ring v{}",
            candidates.len(),
            next.version()
        ));
        return timeline;
    };
    let gaining = new_owner(&session);
    let phase_at_send = next.phase().as_str().to_owned();
    let sent_at = clock.elapsed();
    let stalled = {
        let (http, base, session) = (http.clone(), victim_base.clone(), session.clone());
        tokio::spawn(async move {
            let answer = append(&http, &base, &session, STALLED_SEQ, Some(STALL)).await;
            (answer, clock.elapsed())
        })
    };
    timeline.fault_from_s = secs(sent_at);
    let note = format!(
        "stalled append (seq {STALLED_SEQ}, {STALL:?}) of {session} sent to {victim} at t={:.1}s under ring v{} ({phase_at_send}); its new owner: slot {} ({})",
        secs(sent_at),
        next.version(),
        gaining.index,
        gaining.pod.name
    );
    say(&note);
    timeline.notes.push(note);
    converged(service, generation, clock, &mut timeline).await;
    say("waiting for the stalled append's answer");
    let (answer, answered_at) = stalled.await.unwrap();
    timeline.fault_to_s = secs(answered_at);
    let waited = secs(answered_at.saturating_sub(sent_at));
    let status = judge_stalled(&answer, waited, &mut timeline);
    tokio::time::sleep(TAIL).await;
    let seqs = read_back(&http, service, &session, &mut timeline).await;
    timeline
        .figures
        .insert("stalled_status".to_owned(), serde_json::json!(status));
    timeline
        .figures
        .insert("stalled_answer_s".to_owned(), serde_json::json!(waited));
    timeline.figures.insert(
        "stall_sent_phase".to_owned(),
        serde_json::json!(phase_at_send),
    );
    timeline
        .figures
        .insert("read_back_seqs".to_owned(), serde_json::json!(seqs));
    timeline
}

/// The ring-deleted scenario: the scale is applied; as soon as a ring in its Switch (or
/// later) is published, its `ConfigMap` is deleted. The operator must publish a ring again,
/// at a higher version, and the service converge.
async fn drive_ring_deleted(service: &Service, clock: Instant) -> Timeline {
    let mut timeline = Timeline::default();
    let before = service.ring().await.unwrap().unwrap().version();
    say(&format!("scaling {FROM} → {TO}"));
    timeline.scale_applied_s = secs(clock.elapsed());
    let generation = service.scale(TO).await.unwrap();
    let Some(deleted) = service.delete_switch_ring(before, MAX_HOLD).await else {
        timeline.failures.push(format!(
            "no ring in its Switch deleted within {MAX_HOLD:?} of the scale"
        ));
        return timeline;
    };
    timeline.fault_from_s = secs(clock.elapsed());
    let note = format!(
        "deleted the ring ConfigMap holding v{deleted} (switch) at t={:.1}s",
        timeline.fault_from_s
    );
    say(&note);
    timeline.notes.push(note);
    let deadline = Instant::now() + MAX_HOLD;
    let recreated = loop {
        if let Ok(Some(ring)) = service.ring().await {
            break Some(ring);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    timeline.fault_to_s = secs(clock.elapsed());
    match &recreated {
        None => timeline.failures.push(format!(
            "the ring ConfigMap was not recreated within {MAX_HOLD:?}"
        )),
        Some(ring) => {
            let note = format!(
                "ring recreated after {:.1} s: v{} {} ({} slots)",
                timeline.fault_to_s - timeline.fault_from_s,
                ring.version(),
                ring.phase().as_str(),
                ring.slots().len()
            );
            say(&note);
            timeline.notes.push(note);
            if ring.version() <= deleted {
                timeline.failures.push(format!(
                    "the recreated ring v{} is not newer than the deleted v{deleted}",
                    ring.version()
                ));
            }
        }
    }
    timeline
        .figures
        .insert("deleted_version".to_owned(), serde_json::json!(deleted));
    timeline.figures.insert(
        "recreated_version".to_owned(),
        serde_json::json!(recreated.as_ref().map(locus::ring::Ring::version)),
    );
    timeline.figures.insert(
        "recreated_after_s".to_owned(),
        serde_json::json!(round_s(timeline.fault_to_s - timeline.fault_from_s)),
    );
    say(&format!(
        "waiting for the service to converge on {TO} slots"
    ));
    if converged(service, generation, clock, &mut timeline).await {
        tokio::time::sleep(TAIL).await;
    }
    timeline
}

/// What a scenario runs besides the demo's set-up: the operators (the chart's pods, their
/// logs read from the node agent's run directory; for [`Fault::StandbySkew`] the standby on
/// the host) and, for [`Fault::SlowPersistence`], PostgreSQL behind its slow link.
struct Extras {
    node_run_dir: Option<std::path::PathBuf>,
    standby: Option<HostOperator>,
    postgres: Option<SlowPostgres>,
}

/// Longest wait for another operator to take the Lease over (15 s without renewal, plus
/// the standby's retry period and a loaded machine).
const TAKEOVER_BOUND: Duration = Duration::from_secs(60);
/// Longest pause of the leading operator: the chart's liveness probe (every 10 s, three
/// failures) would have the node agent restart the stopped container at about 30 s, and
/// the scenario is about a leader that comes back, not one that restarts.
const LEADER_PAUSE_BOUND: Duration = Duration::from_secs(25);
/// How long the resumed leader is watched before its log is read.
const AFTER_RESUME: Duration = Duration::from_secs(5);
/// Log lines of an operator that stopped leading (`operator/src/lib.rs`, `leader.rs`).
const STOOD_DOWN: &str = "lost leadership";

/// The operator pod holding the Lease now, resolved for fault injection.
async fn leading_operator(service: &Service, timeline: &mut Timeline) -> Option<ChaosPod> {
    let Some(leader) = operator::lease_holder(&service.client, service.namespace()).await else {
        timeline
            .failures
            .push(format!("no operator holds the Lease {}", operator::LEASE));
        return None;
    };
    Some(service.chaos_pod(&leader).await)
}

/// Waits (bounded) for a ring newer than `after`.
async fn next_ring(service: &Service, after: u64, timeout: Duration) -> Option<locus::ring::Ring> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(ring)) = service.ring().await
            && ring.version() > after
        {
            return Some(ring);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader-pause scenario: two operators (the chart's replicas); the scale is applied,
/// and as soon as the leader publishes the Warm it is stopped (SIGSTOP). The other takes
/// the Lease over and carries the transition on; once it published a ring of its own (or
/// [`LEADER_PAUSE_BOUND`] passed) the old leader is continued. It must stand down without
/// writing (the ring audit sees every write: no version reused with another document, none
/// going back), and the service converge.
async fn drive_leader_pause(service: &Service, extras: &Extras, clock: Instant) -> Timeline {
    let mut timeline = Timeline::default();
    let Some(leader) = leading_operator(service, &mut timeline).await else {
        return timeline;
    };
    timeline.victim = Some(format!("{leader} (the leading operator of 2)"));
    let before = service.ring().await.unwrap().unwrap().version();
    say(&format!(
        "scaling {FROM} → {TO}; the leading operator is {leader}"
    ));
    timeline.scale_applied_s = secs(clock.elapsed());
    let generation = service.scale(TO).await.unwrap();
    let Some(warm) = next_ring(service, before, MAX_HOLD).await else {
        timeline
            .failures
            .push(format!("no new ring within {MAX_HOLD:?} of the scale"));
        return timeline;
    };
    let pod = leader.clone();
    let paused = blocking(move || chaos::pause(&pod)).await.unwrap();
    let paused_at = Instant::now();
    timeline.fault_from_s = secs(clock.elapsed());
    let note = format!(
        "paused {leader} (processes {:?}) at t={:.1}s, ring v{} ({}) published",
        paused.pids(),
        timeline.fault_from_s,
        warm.version(),
        warm.phase().as_str()
    );
    say(&note);
    timeline.notes.push(note);
    let took = operator::wait_holder(&service.client, service.namespace(), TAKEOVER_BOUND, |h| {
        h != leader.name
    })
    .await;
    match &took {
        Some(holder) => {
            let after = paused_at.elapsed().as_secs_f64();
            let note = format!("{holder} took the Lease over {after:.1} s after the pause");
            say(&note);
            timeline.notes.push(note);
            timeline
                .figures
                .insert("takeover_s".to_owned(), serde_json::json!(round_s(after)));
        }
        None => timeline.failures.push(format!(
            "no other operator took the Lease within {TAKEOVER_BOUND:?} of the pause"
        )),
    }
    let left = LEADER_PAUSE_BOUND.saturating_sub(paused_at.elapsed());
    let carried_on = next_ring(service, warm.version(), left).await;
    let note = match &carried_on {
        Some(ring) => format!(
            "the new leader published v{} ({}) {:.1} s after the pause",
            ring.version(),
            ring.phase().as_str(),
            paused_at.elapsed().as_secs_f64()
        ),
        None => format!(
            "no ring past v{} while the leader was paused",
            warm.version()
        ),
    };
    say(&note);
    timeline.notes.push(note);
    blocking(move || paused.resume()).await.unwrap();
    timeline.fault_to_s = secs(clock.elapsed());
    say(&format!("continued {leader}"));
    tokio::time::sleep(AFTER_RESUME).await;
    check_stood_down(service, extras, &leader, took.is_some(), &mut timeline).await;
    if converged(service, generation, clock, &mut timeline).await {
        tokio::time::sleep(TAIL).await;
    }
    timeline
}

/// After the resume: the old leader must not hold the Lease while another took it over, and
/// its own log must say it stood down.
async fn check_stood_down(
    service: &Service,
    extras: &Extras,
    leader: &ChaosPod,
    took_over: bool,
    timeline: &mut Timeline,
) {
    let holder = operator::lease_holder(&service.client, service.namespace()).await;
    let log = extras.node_run_dir.as_deref().map(|dir| {
        let path = logs::container_log(
            dir,
            &leader.namespace,
            &leader.name,
            &leader.uid,
            operator::OPERATOR_CONTAINER,
        );
        logs::strip_ansi(&std::fs::read_to_string(path).unwrap_or_default())
    });
    let stood_down = log.as_deref().map(|l| l.contains(STOOD_DOWN));
    let note = format!(
        "{AFTER_RESUME:?} after the resume: the Lease is held by {holder:?}; the old leader's log says {STOOD_DOWN:?}: {stood_down:?}"
    );
    say(&note);
    timeline.notes.push(note);
    if took_over && holder.as_deref() != Some(leader.name.as_str()) && stood_down == Some(false) {
        timeline.failures.push(format!(
            "the resumed leader {leader} did not stand down while {holder:?} holds the Lease"
        ));
    }
    timeline.figures.insert(
        "old_leader_stood_down".to_owned(),
        serde_json::json!(stood_down),
    );
}

/// How far ahead the standby's clock runs in the skew scenario.
const SKEW: Duration = Duration::from_secs(60);

/// The standby-skew scenario: the chart's one operator leads; a standby runs on the host
/// with its clock [`SKEW`] ahead (libfaketime). The scale is applied; as soon as the Switch
/// is published the leader is killed the way a node dies (stopped, its `Deployment` taken
/// to 0 replicas so that no replacement under the same identity renews the Lease, then
/// SIGKILL). The standby takes over and must finish the transition without losing anything:
/// its deadlines count from its own first sight of each step, not from timestamps written by
/// the dead leader's clock.
async fn drive_standby_skew(service: &Service, extras: &Extras, clock: Instant) -> Timeline {
    let mut timeline = Timeline::default();
    let Some(standby) = &extras.standby else {
        timeline
            .failures
            .push("no standby operator on the host".to_owned());
        return timeline;
    };
    let ahead = standby.clock_ahead_s();
    timeline.figures.insert(
        "standby_clock_ahead_s".to_owned(),
        serde_json::json!(ahead.map(round_s)),
    );
    if ahead.is_none_or(|a| a < SKEW.as_secs_f64() - 10.0) {
        timeline.failures.push(format!(
            "the standby's clock is not {SKEW:?} ahead (measured {ahead:?} s from its log): libfaketime not in effect"
        ));
        return timeline;
    }
    let Some(leader) = leading_operator(service, &mut timeline).await else {
        return timeline;
    };
    if leader.name == standby.identity {
        timeline
            .failures
            .push("the skewed standby leads from the start".to_owned());
        return timeline;
    }
    timeline.victim = Some(format!(
        "{leader} (the leading operator; standby {} on the host, clock {:.0} s ahead)",
        standby.identity,
        ahead.unwrap_or_default()
    ));
    let before = service.ring().await.unwrap().unwrap().version();
    say(&format!(
        "scaling {FROM} → {TO}; the leading operator is {leader}"
    ));
    timeline.scale_applied_s = secs(clock.elapsed());
    let generation = service.scale(TO).await.unwrap();
    if !service.wait_switch(before, MAX_HOLD).await {
        timeline
            .failures
            .push(format!("no Switch within {MAX_HOLD:?} of the scale"));
        return timeline;
    }
    let at_switch = service.ring().await.unwrap().unwrap();
    let pod = leader.clone();
    let paused = blocking(move || chaos::pause(&pod)).await.unwrap();
    let scaled = operator::scale_operator_deployment(&service.client, service.namespace(), 0)
        .await
        .unwrap();
    let killed = blocking(move || paused.kill()).await.unwrap();
    let killed_at = Instant::now();
    timeline.fault_from_s = secs(clock.elapsed());
    let note = format!(
        "killed {leader} ({killed} processes; Deployment {scaled:?} at 0 replicas) at t={:.1}s, ring v{} ({})",
        timeline.fault_from_s,
        at_switch.version(),
        at_switch.phase().as_str()
    );
    say(&note);
    timeline.notes.push(note);
    standby_takes_over(service, standby, killed_at, clock, &mut timeline).await;
    if converged(service, generation, clock, &mut timeline).await {
        timeline.figures.insert(
            "converged_after_takeover_s".to_owned(),
            serde_json::json!(round_s(killed_at.elapsed().as_secs_f64())),
        );
        tokio::time::sleep(TAIL).await;
    }
    let leading = standby
        .log_text()
        .contains("leading: starting the controller");
    if !leading {
        timeline
            .failures
            .push("the standby's log never says it leads".to_owned());
    }
    timeline
}

/// Waits for the standby to hold the Lease; records how long that took after the kill.
async fn standby_takes_over(
    service: &Service,
    standby: &HostOperator,
    killed_at: Instant,
    clock: Instant,
    timeline: &mut Timeline,
) {
    let identity = standby.identity.clone();
    let took = operator::wait_holder(&service.client, service.namespace(), TAKEOVER_BOUND, |h| {
        h == identity
    })
    .await;
    timeline.fault_to_s = secs(clock.elapsed());
    if took.is_some() {
        let after = killed_at.elapsed().as_secs_f64();
        let note = format!("the standby took the Lease over {after:.1} s after the kill");
        say(&note);
        timeline.notes.push(note);
        timeline
            .figures
            .insert("takeover_s".to_owned(), serde_json::json!(round_s(after)));
    } else {
        timeline.failures.push(format!(
            "the standby did not take the Lease within {TAKEOVER_BOUND:?} of the kill"
        ));
    }
}

/// Delay of every chunk the slow pod sends to PostgreSQL in the slow-persistence scenario.
const SLOW_PG_DELAY: Duration = Duration::from_secs(2);
/// How long the delay holds after the Switch: past the SDK's handoff deadline (30 s).
const SLOW_PG_AFTER_SWITCH: Duration = Duration::from_secs(30);
/// The sample's idle timeout in that scenario: sessions are written back and dropped from
/// memory often, so write-backs are in flight when sessions move.
const SLOW_PG_IDLE: &str = "2s";

/// The slow-persistence scenario: the sample persists to PostgreSQL through a [`SlowLink`];
/// the scale is applied, and from the Warm on every query slot 0's pod (a losing pod) sends
/// is delayed [`SLOW_PG_DELAY`] until [`SLOW_PG_AFTER_SWITCH`] after the Switch, so its
/// write-backs of idle sessions are still in flight as sessions move to their new owners.
/// The audit of the table (see `chaos_support::persistence`) must never see a persisted
/// version go back, and every session read back must hold every acknowledged append.
///
/// [`SlowLink`]: locus_e2e::slowlink::SlowLink
async fn drive_slow_persistence(
    service: &Service,
    victim: &ChaosPod,
    extras: &Extras,
    clock: Instant,
) -> Timeline {
    let mut timeline = Timeline::default();
    let Some(postgres) = &extras.postgres else {
        timeline
            .failures
            .push("no PostgreSQL for the scenario".to_owned());
        return timeline;
    };
    let before = service.ring().await.unwrap().unwrap().version();
    say(&format!("scaling {FROM} → {TO}"));
    timeline.scale_applied_s = secs(clock.elapsed());
    let generation = service.scale(TO).await.unwrap();
    let Some(warm) = next_ring(service, before, MAX_HOLD).await else {
        timeline
            .failures
            .push(format!("no new ring within {MAX_HOLD:?} of the scale"));
        return timeline;
    };
    let victim_ip = std::net::IpAddr::V4(victim.ip);
    postgres.link.set_delay(victim_ip, SLOW_PG_DELAY);
    timeline.fault_from_s = secs(clock.elapsed());
    let note = format!(
        "PostgreSQL traffic of {victim} ({victim_ip}) delayed {SLOW_PG_DELAY:?} per chunk from t={:.1}s, ring v{} ({})",
        timeline.fault_from_s,
        warm.version(),
        warm.phase().as_str()
    );
    say(&note);
    timeline.notes.push(note);
    if service.wait_switch(before, MAX_HOLD).await {
        tokio::time::sleep(SLOW_PG_AFTER_SWITCH).await;
    } else {
        timeline
            .failures
            .push(format!("no Switch within {MAX_HOLD:?} of the scale"));
    }
    postgres.link.clear_delay(victim_ip);
    timeline.fault_to_s = secs(clock.elapsed());
    let stats = postgres.link.stats();
    let note = format!(
        "the delay ended at t={:.1}s; the link: {stats:?}",
        timeline.fault_to_s
    );
    say(&note);
    timeline.notes.push(note);
    timeline.figures.insert(
        "slow_link".to_owned(),
        serde_json::to_value(stats).unwrap_or_default(),
    );
    if converged(service, generation, clock, &mut timeline).await {
        tokio::time::sleep(TAIL).await;
    }
    timeline
}

/// Waits for the service to converge on [`TO`] slots (at `generation`), within the bound;
/// records when in `timeline`, or says it did not.
async fn converged(
    service: &Service,
    generation: i64,
    clock: Instant,
    timeline: &mut Timeline,
) -> bool {
    let done = service.wait_converged(TO, generation, CONVERGE_BOUND).await;
    if done {
        timeline.converged_s = Some(secs(clock.elapsed()));
    } else {
        say("the service did not converge within the bound");
    }
    done
}

fn round_s(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The victim's log lines about hand-offs and drains (the last `most`), for the report.
fn handoff_log_lines(
    node_run_dir: &std::path::Path,
    victim: &ChaosPod,
    most: usize,
) -> Vec<String> {
    let path = logs::container_log(
        node_run_dir,
        &victim.namespace,
        &victim.name,
        &victim.uid,
        CONTAINER,
    );
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = logs::strip_ansi(&text)
        .lines()
        .filter(|l| {
            [
                "drain",
                "taken back",
                "take back",
                "hand",
                "fenc",
                "WARN",
                "ERROR",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .map(str::to_owned)
        .collect();
    lines[lines.len().saturating_sub(most)..].to_vec()
}

fn open(failure: Option<&String>) -> String {
    failure.map_or_else(|| "open".to_owned(), |why| format!("cut ({why})"))
}

/// Starts an operator on the host with its clock `ahead`, and waits until it stands by.
async fn start_standby(env: &Env, namespace: &str, ahead: Duration) -> HostOperator {
    let identity = format!("standby-skewed-{}", std::process::id());
    let work = std::env::temp_dir().join(format!("locus-chaos-{namespace}"));
    let bin_dir = locus_e2e::cluster::workspace_bin_dir().unwrap();
    let standby = HostOperator::options(
        &bin_dir,
        &env.target.kubeconfig,
        namespace,
        work.join(format!("{identity}.log")),
    )
    .leader_election(&identity, operator::LEASE)
    .clock_ahead(ahead)
    .start()
    .unwrap();
    assert!(
        standby
            .wait_log("waiting for leadership", Duration::from_secs(30))
            .await,
        "the standby operator did not start: {}",
        standby.log_text()
    );
    say(&format!(
        "standby operator {identity} on the host, clock {:?} s ahead (log {})",
        standby.clock_ahead_s(),
        standby.log.display()
    ));
    standby
}

/// Starts what the plan needs besides the demo's set-up.
async fn start_extras(plan: &Plan, env: &Env, namespace: &str) -> Extras {
    let mut extras = Extras {
        node_run_dir: env.cluster.node_run_dir().map(std::path::Path::to_path_buf),
        standby: None,
        postgres: None,
    };
    if let Some(ahead) = plan.skewed_standby {
        extras.standby = Some(start_standby(env, namespace, ahead).await);
    }
    if plan.postgres {
        let net = ClusterNet::of(env.cluster.info()).unwrap();
        let dir = std::env::temp_dir().join(format!("locus-chaos-{namespace}-pg"));
        let postgres = SlowPostgres::start(&net, dir).await;
        say(&format!(
            "PostgreSQL {} on {}, reached by the pods through a slow link at {}",
            postgres.pg.version(),
            postgres.pg.addr(),
            postgres.link.local_addr()
        ));
        extras.postgres = Some(postgres);
    }
    extras
}

/// Changes the template as the plan asks before the fault (each change is a rollout).
async fn prepare_template(plan: &Plan, extras: &Extras, service: &mut Service) {
    if let Some(postgres) = &extras.postgres {
        say("writing sessions back to PostgreSQL (DATABASE_URL in the template, a rollout)");
        let env = [
            ("DATABASE_URL", postgres.url.as_str()),
            ("LOCUS_SAMPLE_IDLE_TIMEOUT", SLOW_PG_IDLE),
        ];
        assert!(
            service.set_env(&env, FROM, CONVERGE_BOUND).await,
            "the service did not converge after the template change"
        );
    }
    if plan.test_stall {
        say("turning the sample's test stall on in the template (a rollout of every pod)");
        assert!(
            service.enable_test_stall(FROM, CONVERGE_BOUND).await,
            "the service did not converge after the template change"
        );
    }
    if plan.without_liveness {
        say("removing the liveness probe from the template (a rollout of every pod)");
        assert!(
            service.drop_liveness_probe(FROM, CONVERGE_BOUND).await,
            "the service did not converge after the template change"
        );
    }
}

/// Load until it runs clean (the service settled before the fault).
async fn steady_load(demo: &mut Demo, clock: Instant) -> Totals {
    let steady = load_until_clean(
        demo.load(),
        "steady",
        clock,
        STEADY,
        STEADY_CLEAN_WINDOWS,
        STEADY_BOUND,
    )
    .await;
    let steady = Totals::of(&steady);
    say(&format!(
        "steady: {} requests, {} errors {:?}",
        steady.requests, steady.errors, steady.errors_by_kind
    ));
    steady
}

/// The table audit's findings in the report: figures, a note, and a failure per
/// (epoch, version) that went back.
fn add_pg_audit(report: &mut ScenarioReport, pg: &PgAuditReport) {
    report.notes.push(format!(
        "PostgreSQL: {} reads of the table ({} failed), {} rows, {} write-backs seen, {} (epoch, version) stamps that went back {:?}",
        pg.polls, pg.failed_polls, pg.rows, pg.advances, pg.decreases, pg.examples
    ));
    for (name, value) in [
        ("pg_rows", serde_json::json!(pg.rows)),
        ("pg_writebacks_seen", serde_json::json!(pg.advances)),
        ("pg_version_decreases", serde_json::json!(pg.decreases)),
    ] {
        report.scenario_figures.insert(name.to_owned(), value);
    }
    if pg.polls == 0 {
        report
            .scenario_failures
            .push("the table was never read".to_owned());
    }
    report.scenario_failures.extend(
        pg.examples
            .iter()
            .map(|e| format!("a persisted (epoch, version) went back: {e}")),
    );
}

/// The handoff accounting in the report: complete reports must agree with what the load
/// generator saw (within the requests that got no answer); missing ones must name the pods.
fn note_handoff(report: &mut ScenarioReport, handoff: Option<&HandoffCheck>) {
    let Some(check) = handoff else {
        report
            .scenario_failures
            .push("no finished transition with handoff reports".to_owned());
        return;
    };
    report.notes.push(format!("handoff accounting {check}"));
    report.scenario_figures.insert(
        "handoff".to_owned(),
        serde_json::to_value(check).unwrap_or_default(),
    );
    let unanswered = report.totals.errors + report.verification.sessions_unreadable;
    match check.reports.as_str() {
        "Complete" if !check.agrees(unanswered) => report.scenario_failures.push(format!(
            "the pods' served takeovers and the client's disagree beyond {unanswered} unanswered requests: {check}"
        )),
        "Complete" => {}
        // Past the operator's report wait, the pods without final counts are named: as
        // missing (no report) or as still counting (a standby whose clock runs ahead reaches
        // that wait early).
        "ReportsMissing" if !check.missing.is_empty() || !check.pending.is_empty() => {}
        other => report.scenario_failures.push(format!(
            "the handoff reports neither complete nor name the pods without final counts ({other}): {check}"
        )),
    }
}

/// What the load before the fault saw, in the report.
fn note_steady(report: &mut ScenarioReport, steady: &Totals) {
    // A session counts once per run, in the window that first saw it: one caught before
    // the fault is not in the windows of the report.
    if steady.double_writers > 0 || steady.version_conflicts > 0 {
        report.scenario_failures.push(format!(
            "before the fault: {} double writers {:?}, {} version conflicts",
            steady.double_writers, steady.double_writer_examples, steady.version_conflicts
        ));
    }
    if steady.errors > 0 {
        report.notes.push(format!(
            "errors before the fault: {:?}",
            steady.errors_by_kind
        ));
    }
}

async fn run(plan: Plan) {
    if !selected(plan.name) {
        println!("SKIPPED: scenario {} not in {SCENARIOS_VAR}", plan.name);
        return;
    }
    let env = setup("e2e-chaos").await;
    if env.external {
        println!("SKIPPED: faults are injected into the local cluster's pods only");
        return;
    }
    let scenario = async {
        let mut options = env.options(FROM);
        if let Some((concurrency, timeout)) = plan.load {
            options.concurrency = concurrency;
            options.request_timeout = timeout;
        }
        if let Some(install) = options.operator.as_mut() {
            install.replicas = plan.operators;
        }
        let mut demo = Demo::deploy(&env.target, &options, &say).await.unwrap();
        let extras = start_extras(&plan, &env, &options.namespace).await;
        let mut service = Service::new(
            env.cluster.client().await.unwrap(),
            env.cluster.info().clone(),
            &options,
        );
        prepare_template(&plan, &extras, &mut service).await;
        let victim_name = service.pod_of_slot(0).await.unwrap();
        let peer_name = service.pod_of_slot(1).await.unwrap();
        let victim = service.chaos_pod(&victim_name).await;
        let peer = service.chaos_pod(&peer_name).await;
        let clock = Instant::now();
        let watching = Observer::start(&service, &victim_name, clock);
        let audit = RingAudit::start(
            &service.client,
            service.namespace(),
            &options.service,
            clock,
        );
        let pg_audit = extras
            .postgres
            .as_ref()
            .map(|p| PgAudit::start(p.pg.clone(), clock));
        let steady = steady_load(&mut demo, clock).await;
        let (timeline, windows) = load_during(
            demo.load(),
            plan.name,
            clock,
            drive(&plan, &service, &victim, &peer, &extras, clock),
        )
        .await;
        let observed = watching.finish().await;
        // The ring when the scenario began: the handoff accounting is of a transition after it.
        let since = observed.ring.first().map_or(0, |r| r.version);
        let ring_audit = audit.finish();
        let pg_audit = match pg_audit {
            Some(audit) => Some(audit.finish().await),
            None => None,
        };
        say("reading every session back");
        let verification = demo.load().verify().await;
        let mut report = ScenarioReport::new(
            plan.name,
            plan.fault.describe(),
            &format!("{victim} (slot 0 of {FROM})"),
            timeline,
            &windows,
            verification,
            observed,
            TO,
        );
        report.ring_audit = ring_audit;
        if let Some(pg) = pg_audit {
            add_pg_audit(&mut report, &pg);
        }
        report.victim_restarts = service.restarts(&victim_name).await;
        if let Some(dir) = env.cluster.node_run_dir() {
            report.victim_log = handoff_log_lines(dir, &victim, VICTIM_LOG_LINES);
        }
        say("waiting for the pods' handoff reports");
        let handoff = service
            .handoff_check(since, &windows, &report.verification)
            .await;
        note_handoff(&mut report, handoff.as_ref());
        report.last_transition = service
            .status()
            .await
            .and_then(|s| s.get("lastTransition").cloned());
        note_steady(&mut report, &steady);
        report
    };
    let Ok(report) = tokio::time::timeout(SCENARIO_BOUND, scenario).await else {
        panic!("scenario {} took longer than {SCENARIO_BOUND:?}", plan.name);
    };
    println!("{}", report.render());
    report.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: `make chaos` runs it"]
async fn partition_from_pods_across_a_scale_up() {
    run(Plan {
        name: "partition",
        fault: Fault::Partition,
        after_switch: PAST_HANDOFF_DEADLINE,
        max_hold: MAX_HOLD,
        without_liveness: false,
        test_stall: false,
        load: None,
        operators: 1,
        skewed_standby: None,
        postgres: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: `make chaos` runs it"]
async fn pause_of_a_losing_pod_across_a_scale_up() {
    run(Plan {
        name: "pause",
        fault: Fault::Pause,
        after_switch: PAST_HANDOFF_DEADLINE,
        max_hold: MAX_HOLD,
        without_liveness: true,
        test_stall: false,
        load: Some((32, Duration::from_secs(5))),
        operators: 1,
        skewed_standby: None,
        postgres: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: `make chaos` runs it"]
async fn stalled_append_across_a_scale_up() {
    run(Plan {
        name: "stall",
        fault: Fault::Stall,
        after_switch: PAST_HANDOFF_DEADLINE,
        max_hold: MAX_HOLD,
        without_liveness: false,
        test_stall: true,
        load: None,
        operators: 1,
        skewed_standby: None,
        postgres: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: `make chaos` runs it"]
async fn ring_deleted_mid_switch() {
    run(Plan {
        name: "ring-deleted",
        fault: Fault::RingDeleted,
        after_switch: PAST_HANDOFF_DEADLINE,
        max_hold: MAX_HOLD,
        without_liveness: false,
        test_stall: false,
        load: None,
        operators: 1,
        skewed_standby: None,
        postgres: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: `make chaos` runs it"]
async fn leader_operator_paused_during_warm() {
    run(Plan {
        name: "leader-pause",
        fault: Fault::LeaderPause,
        after_switch: PAST_HANDOFF_DEADLINE,
        max_hold: MAX_HOLD,
        without_liveness: false,
        test_stall: false,
        load: None,
        operators: 2,
        skewed_standby: None,
        postgres: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: `make chaos` runs it"]
async fn leader_killed_mid_switch_with_the_standby_clock_ahead() {
    run(Plan {
        name: "standby-skew",
        fault: Fault::StandbySkew,
        after_switch: PAST_HANDOFF_DEADLINE,
        max_hold: MAX_HOLD,
        without_liveness: false,
        test_stall: false,
        load: None,
        operators: 1,
        skewed_standby: Some(SKEW),
        postgres: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: `make chaos` runs it"]
async fn slow_persistence_on_a_losing_pod_across_a_scale_up() {
    run(Plan {
        name: "slow-persistence",
        fault: Fault::SlowPersistence,
        after_switch: SLOW_PG_AFTER_SWITCH,
        max_hold: MAX_HOLD,
        without_liveness: false,
        test_stall: false,
        load: None,
        operators: 1,
        skewed_standby: None,
        postgres: true,
    })
    .await;
}

// The cheapest scenario (its Warm is not held up, so the Switch comes early): the one
// `make test` runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_from_the_api_server_across_a_scale_up() {
    run(Plan {
        name: "apiserver-cut",
        fault: Fault::ApiServerCut,
        after_switch: PAST_HANDOFF_DEADLINE,
        max_hold: MAX_HOLD,
        without_liveness: false,
        test_stall: false,
        load: None,
        operators: 1,
        skewed_standby: None,
        postgres: false,
    })
    .await;
}
