//! Transitions under load over real HTTP: pods on distinct 127.0.0.x
//! addresses (axum, ownership layer, session layer with the handoff
//! endpoints and the transition driver, list sessions in a `SessionStore`
//! backed by a shared persistence), callers routing with the client
//! `Router`, and a test operator publishing Warm → Switch → Stable rings and
//! waiting for the pods' progress reports. Each request appends a unique
//! element. After each scenario the checker verifies: every acknowledged
//! element in its session's final list once, at the position of its version
//! (no lost write, no version served twice), nothing there that was refused
//! or never sent, one writer (pod, epoch) at a time along the versions,
//! ≥ 99 % of first touches of moved sessions warm.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use locus::handoff::HandoffConfig;
use locus::progress::{MovedSessions, ReportState};
use locus::ring::Pod;
use locus::server::session::ShutdownPath;
use locus::store::Limits;
use support::checker::{self, Outcome, Verdict};
use support::http::{HttpCluster, PodOptions};
use support::load::Load;
use support::operator::{Fleet, Operator, Timeouts};

const SESSIONS: usize = 200;
const WORKERS: usize = 16;
const SHARDS: u32 = 256;

fn options() -> PodOptions {
    PodOptions {
        config: HandoffConfig::builder()
            .warm_timeout(Duration::from_secs(10))
            .handoff_deadline(Duration::from_secs(10))
            .drain_timeout(Duration::from_secs(10))
            .first_touch_wait(Duration::from_secs(3))
            .settle_grace(Duration::from_secs(1))
            .retry_backoff(Duration::from_millis(20))
            .build()
            .unwrap(),
        limits: Limits::default(),
        snapshot_dir: None,
        coordination_wait: Duration::ZERO,
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        warm: Duration::from_secs(10),
        drain: Duration::from_secs(15),
    }
}

fn keys() -> Vec<Vec<u8>> {
    (0..SESSIONS)
        .map(|i| format!("session-{i}").into_bytes())
        .collect()
}

fn start_load(cluster: &Arc<HttpCluster>, seed: u64) -> Load {
    let keys = Arc::new(keys());
    let cluster = Arc::clone(cluster);
    Load::start(WORKERS, SESSIONS, seed, move |session, element| {
        let cluster = Arc::clone(&cluster);
        let keys = Arc::clone(&keys);
        async move { cluster.append(&keys[session], element).await }
    })
}

/// Three pods `counters-<i>-a` on 127.0.0.`first_host + i`, the operator's
/// Stable ring published to them and the callers, and the workload running
/// (1500 appends acknowledged).
async fn start(
    options: PodOptions,
    first_host: u8,
    seed: u64,
) -> (Arc<HttpCluster>, Vec<Pod>, Operator, Load) {
    let cluster = Arc::new(HttpCluster::new(options));
    let mut pods = Vec::new();
    for i in 0..3u8 {
        pods.push(
            cluster
                .start_pod(&format!("counters-{i}-a"), first_host + i, 0)
                .await,
        );
    }
    let operator = Operator::new(&pods, SHARDS, timeouts());
    cluster.publish(&operator.stable()).await;
    let load = start_load(&cluster, seed);
    load.progress(1500).await;
    (cluster, pods, operator, load)
}

/// Stops the load, reads every list and runs the checks.
async fn verdict(cluster: &HttpCluster, load: Load, operator: &Operator) -> Verdict {
    let history = load.stop().await;
    let keys = keys();
    let mut finals = HashMap::new();
    for (session, key) in keys.iter().enumerate() {
        finals.insert(session, cluster.read(key).await);
    }
    let ops = history.ops();
    let mut verdict = checker::check(&ops, &finals, &[]);
    checker::first_touches(&ops, &operator.log, &keys, &mut verdict);
    let window = options().config.handoff_deadline();
    verdict.announced =
        checker::takeovers_announced(&ops, &operator.log, &keys, window, &mut verdict);
    verdict.takeover_headers = checker::takeover_headers(&ops);
    verdict
}

fn assert_clean(name: &str, verdict: &Verdict, operator: &Operator) {
    eprintln!(
        "{name}: transitions {} — {}",
        operator.log.len(),
        verdict.summary()
    );
    assert!(
        verdict.violations.is_empty(),
        "{name}: {:#?}",
        &verdict.violations[..verdict.violations.len().min(10)]
    );
    assert_eq!(
        verdict.lost, 0,
        "{name}: acknowledged appends lost: {:#?}",
        verdict.lost_examples
    );
    assert!(
        verdict.acked > 1000,
        "{name}: too little load to mean anything"
    );
    for t in &operator.log {
        assert!(
            t.warmed_in_time && t.settled_in_time,
            "{name}: {} at version {} rolled forward",
            t.kind,
            t.switch.version()
        );
    }
}

/// At least `at_least` first touches of moved sessions, ≥ 99 % of them warm.
fn assert_warm(verdict: &Verdict, at_least: usize) {
    assert!(
        verdict.first_touches >= at_least,
        "few first touches: {}",
        verdict.first_touches
    );
    assert!(
        verdict.warm_percent() >= 99.0,
        "warm first touches {:.2} %",
        verdict.warm_percent()
    );
}

/// The sum of the moved-session counts `pods` reported for the transition
/// the Stable ring `version` settled, once each report is final (the handoff
/// deadline passed; each pod must get there within 20 s).
async fn final_reports(cluster: &HttpCluster, pods: &[Pod], version: u64) -> MovedSessions {
    let mut sum = MovedSessions {
        version,
        state: ReportState::Final,
        ..MovedSessions::default()
    };
    for pod in pods {
        let progress = cluster.progress(&pod.name).expect("a running pod");
        let final_for = |p: &locus::progress::Progress| {
            p.moved
                .and_then(|r| r.get(version).copied())
                .is_some_and(|m| m.state == ReportState::Final)
        };
        let reported = progress.wait_for(final_for, Duration::from_secs(20)).await;
        let latest = progress.latest().moved;
        assert!(
            reported,
            "{} never reported final counts for {version}: {latest:?}",
            pod.name
        );
        let moved = latest
            .and_then(|r| r.get(version).copied())
            .expect("reported");
        sum = sum.plus(moved);
    }
    sum
}

/// The pods' served takeovers of the transition whose Switch was `switch`
/// (reported as `report`) against the `x-locus-takeover` headers the client
/// saw: equal, but for answers the client never got.
fn assert_served_matches_headers(verdict: &Verdict, switch: u64, report: &MovedSessions) {
    let seen = verdict
        .takeover_headers
        .get(&switch)
        .copied()
        .unwrap_or_default();
    let served = (report.served.warm, report.served.cold);
    eprintln!(
        "switch {switch}: pods served {served:?} takeovers (warm, cold), client saw {seen:?}"
    );
    let unanswered = verdict.unknown as u64;
    assert!(
        served.0 >= seen.0 && served.1 >= seen.1,
        "the client saw takeovers the pods did not count: served {served:?}, seen {seen:?}"
    );
    assert!(
        served.0 + served.1 - seen.0 - seen.1 <= unanswered,
        "pods counted takeovers served that no answer carried: served {served:?}, seen {seen:?}, {unanswered} unanswered"
    );
    assert!(
        report.served.warm + report.served.cold <= report.total(),
        "served more keys than were taken over: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_3_to_4_to_2_under_load() {
    let (cluster, mut pods, mut operator, load) = start(options(), 10, 1).await;

    pods.push(cluster.start_pod("counters-3-a", 13, 0).await);
    operator.scale(cluster.as_ref(), &pods).await;
    load.progress(1500).await;
    // Every pod reports how the sessions it took over arrived, with the Stable
    // ring; the operator sums them into the transition's warm-hit percentage.
    let up = final_reports(cluster.as_ref(), &pods, operator.version).await;
    let up_switch = operator.log.last().unwrap().switch.version();
    eprintln!("scale 3→4: pods report {up}");
    assert!(
        up.warm.total() >= 10,
        "the new pod took sessions over: {up}"
    );
    assert!(up.warm_percent().unwrap() >= 99.0, "{up}");

    operator.scale(cluster.as_ref(), &pods[..2]).await;
    load.progress(1500).await;
    let down = final_reports(cluster.as_ref(), &pods[..2], operator.version).await;
    let down_switch = operator.log.last().unwrap().switch.version();
    eprintln!("scale 4→2: pods report {down}");
    assert!(
        down.warm.pushed > 0,
        "the retiring pods pushed sessions: {down}"
    );
    let verdict = verdict(&cluster, load, &operator).await;
    assert_served_matches_headers(&verdict, up_switch, &up);
    assert_served_matches_headers(&verdict, down_switch, &down);
    assert!(
        verdict.announced > 0,
        "no moved session's first answer was checked"
    );
    // The retired pods hold nothing any more.
    for name in ["counters-2-a", "counters-3-a"] {
        let pod = cluster.stop_pod(name).await;
        assert_eq!(pod.store.stats().sessions, 0, "{name} kept sessions");
        assert!(pod.member.stats().pushed > 0 || pod.member.stats().transfer_sent > 0);
    }
    assert_clean("scale 3→4→2", &verdict, &operator);
    assert_warm(&verdict, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_slots_pod_under_load() {
    let mut options = options();
    options.coordination_wait = Duration::from_secs(10);
    let (cluster, _, mut operator, load) = start(options, 20, 2).await;

    // An eviction: SIGTERM reaches slot 1's pod, the operator starts a
    // successor and retires the old pod through Warm → Switch → Stable; the
    // old pod's shutdown waits for that instead of pushing on its own.
    let successor = cluster.start_pod("counters-1-b", 24, 0).await;
    let old_member = cluster.member("counters-1-a");
    let shutdown = tokio::spawn(async move { old_member.shutdown(Duration::from_secs(30)).await });
    operator.replace(cluster.as_ref(), 1, successor).await;
    let report = shutdown.await.unwrap();
    assert_eq!(report.path, ShutdownPath::Coordinated, "{report:?}");
    load.progress(1500).await;
    let verdict = verdict(&cluster, load, &operator).await;
    let old = cluster.stop_pod("counters-1-a").await;
    assert_eq!(
        old.store.stats().sessions,
        0,
        "the predecessor kept sessions"
    );
    let stats = cluster.member("counters-1-b").stats();
    assert!(stats.precopied > 0, "the successor pre-copied nothing");
    assert_clean("replace slot 1", &verdict, &operator);
    assert_warm(&verdict, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_without_the_operator_hands_sessions_to_the_next_owners() {
    let (cluster, _, mut operator, load) = start(options(), 30, 3).await;

    // SIGTERM to slot 2's pod, no operator reaction yet: it hands its
    // sessions to the owners the planner gives without its slot, then exits.
    let member = cluster.member("counters-2-a");
    let report = member.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.path, ShutdownPath::Handoff);
    assert!(report.handed_over.complete(), "{report:?}");
    assert!(report.handed_over.delivered > 0);
    let gone = cluster.stop_pod("counters-2-a").await;
    assert_eq!(gone.store.stats().sessions, 0);
    // The operator notices and reroutes slot 2 to the others: the parked
    // records are promoted, first touches are warm.
    operator.reroute(cluster.as_ref(), 2).await;
    load.progress(1500).await;
    let verdict = verdict(&cluster, load, &operator).await;
    assert_clean("SIGTERM drain", &verdict, &operator);
    let promoted: u64 = ["counters-0-a", "counters-1-a"]
        .iter()
        .map(|p| {
            let stats = cluster.member(p).stats();
            stats.promoted + stats.first_touch_promoted
        })
        .sum();
    eprintln!(
        "SIGTERM drain: {} sessions handed over, {promoted} installed at the reroute",
        report.handed_over.delivered
    );
    assert_eq!(promoted, report.handed_over.delivered as u64);
    assert_warm(&verdict, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_restart_through_a_snapshot_keeps_every_session() {
    let dir = std::env::temp_dir().join(format!("locus-snapshots-{}", std::process::id()));
    let mut options = options();
    options.snapshot_dir = Some(dir.clone());
    let (cluster, _, operator, load) = start(options, 40, 4).await;

    // SIGTERM with a snapshot directory: snapshot, then exit; the same pod
    // (same name, same address) starts again and restores it.
    let name = "counters-0-a";
    let held = cluster.pods.lock().unwrap()[name].store.stats().sessions;
    let writes_before = cluster.db.stores();
    let report = cluster.member(name).shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.path, ShutdownPath::Snapshot);
    let written = report.snapshot.unwrap().unwrap();
    assert_eq!(written.records as usize, held);
    // Written back before the snapshot (most of it while still serving): the
    // snapshot carries no unwritten session, so the restored pod has nothing
    // to write back for them.
    assert!(report.flushed.unwrap().written > 0, "{:?}", report.flushed);
    assert_eq!(written.dirty, 0, "{written:?}");
    let stopped = cluster.stop_pod(name).await;
    let address = stopped.info.address;
    drop(stopped);
    cluster
        .start_pod(name, support::http::host(address), address.port())
        .await;
    let restored = {
        let pods = cluster.pods.lock().unwrap();
        let started = &pods[name].started;
        assert!(started.snapshot_ignored.is_none(), "{started:?}");
        let restored = started
            .snapshot
            .as_ref()
            .expect("the snapshot was restored");
        assert_eq!(restored.records as usize, held);
        assert_eq!(restored.restore.inserted, held);
        assert_eq!(restored.not_owned, 0);
        eprintln!(
            "restart: restored {} sessions, {} bytes, in {:?}",
            restored.restore.inserted, restored.bytes, restored.took
        );
        restored.restore.inserted
    };
    assert_eq!(restored, held);
    load.progress(1500).await;
    let verdict = verdict(&cluster, load, &operator).await;
    let restarted = cluster.pods.lock().unwrap()[name].store.stats().sessions;
    eprintln!(
        "restart: {held} sessions snapshotted ({} bytes in {:?}), {restarted} resident after, {} write-backs at shutdown",
        written.bytes,
        written.took,
        cluster.db.stores() - writes_before
    );
    assert!(restarted >= held, "sessions lost across the restart");
    assert_clean("in-place restart", &verdict, &operator);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bounds through HTTP: ten times each bound gets 503, 429 or 413, the pod
/// stays within its bounds, and sessions evicted to make room were written
/// back first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_bounds_get_clear_refusals_and_the_pod_stays_bounded() {
    const MAX_SESSIONS: usize = 100;
    const MAX_IN_FLIGHT: usize = 16;
    const MAX_PENDING: usize = 4;
    let mut options = options();
    options.limits = Limits::builder()
        .max_sessions(MAX_SESSIONS)
        .max_total_bytes(MAX_SESSIONS * 8)
        .max_session_bytes(8)
        .max_pending_updates(MAX_PENDING)
        .build()
        .unwrap();
    options.config = options
        .config
        .to_builder()
        .max_in_flight(MAX_IN_FLIGHT)
        .build()
        .unwrap();
    let cluster = Arc::new(HttpCluster::new(options));
    let pod = cluster.start_pod("counters-0-a", 50, 0).await;
    let operator = Operator::new(&[pod], SHARDS, timeouts());
    cluster.publish(&operator.stable()).await;
    let store = cluster.pods.lock().unwrap()["counters-0-a"].store.clone();
    let hold = Arc::clone(&cluster.pods.lock().unwrap()["counters-0-a"].hold);
    let member = cluster.member("counters-0-a");

    // Sessions: 10 × the bound, one after the other. Idle ones are written
    // back and evicted to make room; the store never holds more than its bound.
    let keys: Vec<Vec<u8>> = (0..MAX_SESSIONS * 10)
        .map(|i| format!("bounded-{i}").into_bytes())
        .collect();
    // Elements of this test's own appends (no workload runs here).
    let mut elements = 1u64..;
    for key in &keys {
        let element = elements.next().unwrap();
        assert!(matches!(
            cluster.append(key, element).await,
            Outcome::Acked { .. }
        ));
        let stats = store.stats();
        assert!(stats.sessions + stats.loading <= MAX_SESSIONS, "{stats:?}");
        assert!(stats.bytes <= MAX_SESSIONS * 8);
    }
    // Passivation wrote every evicted session back first: each reads its
    // one element.
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            cluster.read(key).await,
            (1, vec![i as u64 + 1]),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    assert!(cluster.db.stores() >= (MAX_SESSIONS * 9) as u64);

    // Requests in flight: 10 × the bound at once on distinct sessions held
    // by the handler: the bound is served, the rest get 503 at once.
    let attempts = MAX_IN_FLIGHT * 10;
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for key in keys.iter().take(attempts) {
        let (cluster, key, tx) = (Arc::clone(&cluster), key.clone(), tx.clone());
        let element = elements.next().unwrap();
        tokio::spawn(async move {
            tx.send(cluster.call("/hold", &key, element).await).unwrap();
        });
    }
    // The admitted requests are held, so the first answers are the refusals.
    for _ in 0..attempts - MAX_IN_FLIGHT {
        let answer = answers.recv().await.unwrap();
        assert!(matches!(answer, Outcome::Refused(503)), "{answer:?}");
    }
    assert_eq!(member.in_flight(), MAX_IN_FLIGHT);
    hold.add_permits(MAX_IN_FLIGHT);
    for _ in 0..MAX_IN_FLIGHT {
        let answer = answers.recv().await.unwrap();
        assert!(matches!(answer, Outcome::Acked { .. }), "{answer:?}");
    }

    // Updates queued on one session: 10 × the bound at once get 429 past it.
    let key = b"one-busy-session".to_vec();
    for _ in 0..MAX_PENDING * 10 {
        let (cluster, key, tx) = (Arc::clone(&cluster), key.clone(), tx.clone());
        let element = elements.next().unwrap();
        tokio::spawn(async move {
            tx.send(cluster.call("/hold", &key, element).await).unwrap();
        });
    }
    for _ in 0..MAX_PENDING * 9 {
        let answer = answers.recv().await.unwrap();
        assert!(matches!(answer, Outcome::Refused(429)), "{answer:?}");
    }
    hold.add_permits(MAX_PENDING);
    for _ in 0..MAX_PENDING {
        let answer = answers.recv().await.unwrap();
        assert!(matches!(answer, Outcome::Acked { .. }), "{answer:?}");
    }

    // A key 10 × the key bound: 413, before anything is allocated for it.
    let long = vec![b'k'; locus::DEFAULT_MAX_KEY_BYTES * 10];
    let direct = reqwest::Client::new()
        .post(format!(
            "http://{}/append",
            cluster.pods.lock().unwrap()["counters-0-a"].info.address
        ))
        .header(locus::headers::SESSION.as_str(), long)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 413);
    let stats = store.stats();
    assert!(stats.sessions <= MAX_SESSIONS && stats.bytes <= MAX_SESSIONS * 8);
}

/// A session moved in a transition and first requested after the new
/// owner's report of it became final: the answer still says it was taken
/// over (`<epoch>:<path>:late`), and the pod's served counts leave it out,
/// so a client can tell a late first request from a move nobody announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_first_requested_after_its_report_is_final_is_announced_late() {
    let deadline = Duration::from_secs(2);
    let mut options = options();
    options.config = HandoffConfig::builder()
        .warm_timeout(Duration::from_secs(10))
        .handoff_deadline(deadline)
        .drain_timeout(Duration::from_secs(10))
        .first_touch_wait(Duration::from_secs(1))
        .settle_grace(Duration::from_secs(1))
        .retry_backoff(Duration::from_millis(20))
        .build()
        .unwrap();
    let cluster = Arc::new(HttpCluster::new(options));
    let mut pods = Vec::new();
    for i in 0..3u8 {
        pods.push(
            cluster
                .start_pod(&format!("counters-{i}-a"), 60 + i, 0)
                .await,
        );
    }
    let mut operator = Operator::new(&pods, SHARDS, timeouts());
    cluster.publish(&operator.stable()).await;
    let keys = keys();
    for (i, key) in keys.iter().enumerate() {
        let outcome = cluster.append(key, i as u64).await;
        assert!(matches!(outcome, Outcome::Acked { .. }), "{outcome:?}");
    }
    let before = operator.stable();
    pods.push(cluster.start_pod("counters-3-a", 63, 0).await);
    operator.scale(cluster.as_ref(), &pods).await;
    let after = operator.stable();
    let switch = operator.log.last().unwrap().switch.version();
    let report = final_reports(cluster.as_ref(), &pods, operator.version).await;
    assert_eq!(report.state, ReportState::Final, "{report}");
    assert!(report.warm.total() > 0, "nothing moved: {report}");

    let mut late = 0;
    for (i, key) in keys.iter().enumerate() {
        let moved = before.owner(key).pod.name != after.owner(key).pod.name;
        let outcome = cluster.append(key, (SESSIONS + i) as u64).await;
        let Outcome::Acked { takeover, pod, .. } = &outcome else {
            panic!("{outcome:?}");
        };
        if moved {
            assert_eq!(pod, "counters-3-a");
            let header = takeover.as_deref().unwrap_or("none");
            assert!(
                header.starts_with(&format!("{switch}:")) && header.ends_with(":late"),
                "session {i} moved to {pod}, first answered after the report was final: {header}"
            );
            late += 1;
        } else {
            assert_eq!(takeover, &None, "session {i} did not move");
        }
    }
    assert!(late > 0, "no session moved");
    let again = final_reports(cluster.as_ref(), &pods, operator.version).await;
    assert_eq!(
        (again.served.warm, again.served.cold),
        (report.served.warm, report.served.cold),
        "late answers are not counted as served"
    );
}
