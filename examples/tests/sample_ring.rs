//! The sample and the load generator together, over real HTTP: three
//! sample pods on 127.0.0.2, .3 and .4 reading one `ring.json` (built with
//! `locus::ring` and the operator's planner), the load generator routing by
//! the same file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::{SamplePod, TempDir, WAIT, client, start_ring_pods};
use http::StatusCode;
use locus::{Metrics, RingSource as _, headers};
use locus_examples::ledger::{AppendAnswer, SessionView};
use locus_examples::loadgen::{self, LoadConfig, LoadGenerator, Stop, Target};
use locus_examples::ring_source::RingSourceConfig;
use locus_examples::sample::CACHE_HEADER;

/// Sessions of the three-pod load test.
const SESSIONS: u32 = 150;

/// The pod that owns `key` under `ring`.
fn owner<'a>(pods: &'a [SamplePod], ring: &locus::ring::Ring, key: &str) -> &'a SamplePod {
    let name = &ring.owner(key.as_bytes()).pod.name;
    pods.iter().find(|p| &p.name == name).unwrap()
}

async fn post(
    url: &str,
    header_key: Option<&str>,
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut request = client().post(url).body(body.to_owned());
    if let Some(key) = header_key {
        request = request.header(headers::SESSION, key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn get(url: &str, key: Option<&str>) -> (StatusCode, http::HeaderMap, String) {
    let mut request = client().get(url);
    if let Some(key) = key {
        request = request.header(headers::SESSION, key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn text(headers: &http::HeaderMap, name: &http::HeaderName) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_over_three_pods_loses_nothing_and_lands_on_owners() {
    let dir = TempDir::new("ring");
    let (pods, ring, path) = start_ring_pods(dir.path(), 3, |_| {}).await;
    let metrics = Metrics::new();
    let source = RingSourceConfig::File(path).open(&metrics).await.unwrap();
    assert_eq!(source.watch().version(), Some(1));

    let config = LoadConfig {
        sessions: SESSIONS,
        concurrency: 12,
        read_percent: 25,
        note_bytes: 16,
        prefix: "three".into(),
        stop: Stop::Duration(Duration::from_secs(3)),
        ..LoadConfig::new(Target::Ring(source.watch()))
    };
    let summary = loadgen::run(config).await.unwrap();
    println!("{}", summary.table());

    assert!(
        summary.requests > u64::from(SESSIONS),
        "too little load: {summary:?}"
    );
    assert_eq!(summary.errors, 0, "{:?}", summary.errors_by_kind);
    assert_eq!(summary.ok, summary.requests);
    assert!(summary.appends_acked > 0 && summary.reads_ok > 0);
    // Every answer came from the key's owner, none was forwarded.
    assert_eq!(summary.not_owner, 0);
    assert_eq!(summary.forwarded, 0);
    assert_eq!(summary.by_pod.len(), 3, "{:?}", summary.by_pod);
    assert_eq!(summary.by_pod.values().sum::<u64>(), summary.ok);
    for pod in &pods {
        assert!(summary.by_pod[&pod.name] > 0);
    }
    // No persistence and nothing evicted: each session's first request is
    // cold (it creates the session), every later one warm.
    assert_eq!(summary.cache.cold, u64::from(SESSIONS));
    assert_eq!(summary.cache.warm, summary.ok - u64::from(SESSIONS));
    assert_eq!(summary.cache.unknown + summary.cache.stateless, 0);
    assert_eq!(summary.version_conflicts, 0);
    assert_eq!(summary.stale_reads, 0);
    assert_eq!(summary.duplicates, 0);
    let verification = summary.verification.as_ref().unwrap();
    assert_eq!(verification.lost_writes, 0, "{verification:?}");
    assert_eq!(verification.stale_sessions, 0);
    assert_eq!(verification.sessions_unreadable, 0);
    assert_eq!(verification.acked_appends, summary.appends_acked);
    assert!(summary.is_consistent());

    // The pods' own books agree with the load generator's.
    let applied: u64 = pods
        .iter()
        .map(|p| {
            p.service()
                .metrics()
                .encode()
                .lines()
                .find(|l| l.starts_with("sample_appends_total{outcome=\"applied\"}"))
                .map_or(0, |l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(applied, summary.appends_acked);
    let resident: usize = pods
        .iter()
        .map(|p| p.service().store().unwrap().stats().sessions)
        .sum();
    assert_eq!(resident, SESSIONS as usize);
    // Each session lives on its owner only.
    for pod in &pods {
        let store = pod.service().store().unwrap();
        for i in 0..SESSIONS {
            let id = format!("three-{i}");
            let here = store.version_of(id.as_bytes()).await.is_some();
            assert_eq!(here, ring.owner(id.as_bytes()).pod.name == pod.name, "{id}");
        }
    }
    // The JSON line is one line and parses back.
    let line = summary.to_json_line();
    assert!(!line.contains('\n'));
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["verification"]["lost_writes"], 0);
    assert_eq!(parsed["errors"], 0);
    for pod in pods {
        pod.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_accumulate_acknowledgements_and_verify_at_the_end() {
    let dir = TempDir::new("phases");
    let (pods, _ring, path) = start_ring_pods(dir.path(), 3, |_| {}).await;
    let source = RingSourceConfig::File(path)
        .open(&Metrics::new())
        .await
        .unwrap();
    let mut load = LoadGenerator::new(LoadConfig {
        sessions: 20,
        concurrency: 8,
        read_percent: 0,
        prefix: "phases".into(),
        ..LoadConfig::new(Target::Ring(source.watch()))
    })
    .unwrap();
    let first = load.phase("one", Stop::Requests(300)).await;
    let second = load.phase("two", Stop::Requests(200)).await;
    assert_eq!((first.requests, second.requests), (300, 200));
    assert_eq!((first.appends_acked, second.appends_acked), (300, 200));
    // Per-phase counters start afresh: 20 cold answers in the first phase
    // (one per new session), none in the second.
    assert_eq!((first.cache.cold, second.cache.cold), (20, 0));
    assert_eq!(load.requests_sent(), 500);
    let verification = load.verify().await;
    assert_eq!(verification.acked_appends, 500);
    assert_eq!(verification.sessions_checked, 20);
    assert_eq!(verification.lost_writes, 0);
    let total = load.total("total", Some(verification));
    assert_eq!(total.appends_acked, 500);
    assert!(total.is_consistent());
    // Each session holds exactly its 25 appends, numbered 1..=25.
    let (status, _, body) = get(&pods[0].url("/sessions/phases-7"), Some("phases-7")).await;
    assert_eq!(status, StatusCode::OK);
    let view: SessionView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.events, 25);
    assert_eq!(view.version, 25);
    assert_eq!(view.seqs.ranges().collect::<Vec<_>>(), [(1, 25)]);
    assert_eq!(view.recent.len(), 16);
    assert_eq!(view.recent.last().unwrap().seq, Some(25));
    for pod in pods {
        pod.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_reported_as_lost_writes() {
    // The check must be able to fail: acknowledged appends, then the owner
    // loses its state (a restart without persistence), then verify.
    let dir = TempDir::new("lost");
    let (mut pods, _ring, path) = start_ring_pods(dir.path(), 1, |_| {}).await;
    let source = RingSourceConfig::File(path.clone())
        .open(&Metrics::new())
        .await
        .unwrap();
    let mut load = LoadGenerator::new(LoadConfig {
        sessions: 5,
        concurrency: 2,
        read_percent: 0,
        ..LoadConfig::new(Target::Ring(source.watch()))
    })
    .unwrap();
    let phase = load.phase("before", Stop::Requests(50)).await;
    assert_eq!(phase.appends_acked, 50);
    // Restart the only pod on the same address, empty.
    let pod = pods.remove(0);
    let address = pod.address;
    // No persistence: the five sessions end with the process.
    let report = pod.stop().await;
    assert_eq!((report.dropped, report.flush.written), (5, 0));
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let restarted = common::serve(
        listener,
        locus_examples::sample::SampleConfig::new(
            common::pod_name(0),
            RingSourceConfig::File(path),
        ),
    )
    .await;
    let after = load.phase("after", Stop::Requests(5)).await;
    // Versions start again at 1 on the empty pod: conflicts with acks.
    assert!(after.version_conflicts > 0, "{after:?}");
    let verification = load.verify().await;
    assert_eq!(verification.acked_appends, 55);
    assert_eq!(verification.lost_writes, 50, "{verification:?}");
    assert_eq!(verification.lost_examples.len(), 10);
    assert!(verification.stale_sessions > 0);
    assert!(!load.total("total", Some(verification)).is_consistent());
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_and_refuses() {
    let dir = TempDir::new("api");
    let (pods, ring, _path) = start_ring_pods(dir.path(), 3, |config| {
        config.rules.max_kinds = 2;
    })
    .await;
    let key = "alice";
    let home = owner(&pods, &ring, key);
    let events = home.url("/sessions/alice/events");

    // First append: cold (the session is created), version 1.
    let (status, h, body) = post(
        &events,
        Some(key),
        r#"{"seq": 1, "kind": "deposit", "amount": 40}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(text(&h, &CACHE_HEADER).as_deref(), Some("cold"));
    assert_eq!(text(&h, &headers::POD).as_deref(), Some(home.name.as_str()));
    let answer: AppendAnswer = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer.version, answer.applied, answer.events, answer.total),
        (1, true, 1, 40)
    );
    // Second: warm, version 2.
    let (status, h, body) = post(
        &events,
        Some(key),
        r#"{"seq": 2, "kind": "fee", "amount": -5, "note": "monthly"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&h, &CACHE_HEADER).as_deref(), Some("warm"));
    let answer: AppendAnswer = serde_json::from_str(&body).unwrap();
    assert_eq!((answer.version, answer.total), (2, 35));
    // A replayed seq: not applied, version unchanged.
    let (status, _, body) = post(&events, Some(key), r#"{"seq": 1, "amount": 1000}"#).await;
    assert_eq!(status, StatusCode::OK);
    let answer: AppendAnswer = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer.version, answer.applied, answer.total),
        (2, false, 35)
    );

    // Refusals.
    let (status, _, body) = post(&events, Some("bob"), r#"{"amount": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("key_mismatch"), "{body}");
    let (status, _, _) = post(&events, None, r#"{"amount": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = post(&events, Some(key), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("bad_json"), "{body}");
    let (status, _, body) = post(&events, Some(key), r#"{"kind": "a b"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("invalid_kind"), "{body}");
    let (status, _, body) = post(&events, Some(key), r#"{"kind": "third"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("too_many_kinds"), "{body}");
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(5000));
    let (status, _, _) = post(&events, Some(key), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The refusals changed nothing.
    let (status, h, body) = get(&home.url("/sessions/alice"), Some(key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&h, &CACHE_HEADER).as_deref(), Some("warm"));
    let view: SessionView = serde_json::from_str(&body).unwrap();
    assert_eq!((view.version, view.events, view.total), (2, 2, 35));
    assert_eq!(view.by_kind["deposit"], 40);
    assert_eq!(view.by_kind["fee"], -5);
    assert_eq!(view.recent[1].note.as_deref(), Some("monthly"));
    assert_eq!(view.seqs.ranges().collect::<Vec<_>>(), [(1, 2)]);
    let (_, _, metrics) = get(&home.url("/metrics"), None).await;
    for metric in [
        "sample_appends_total{outcome=\"applied\"} 2",
        "sample_appends_total{outcome=\"duplicate\"} 1",
        "sample_appends_total{outcome=\"too_many_kinds\"} 1",
        "sample_sessions_served_total{cache=\"cold\"} 1",
    ] {
        assert!(metrics.contains(metric), "{metric} missing from\n{metrics}");
    }
    for pod in pods {
        pod.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misrouted_requests_are_forwarded_and_endpoints_answer() {
    let dir = TempDir::new("forward");
    let (pods, ring, _path) = start_ring_pods(dir.path(), 3, |_| {}).await;
    let key = "alice";
    let home = owner(&pods, &ring, key);
    let (status, _, _) = post(&home.url("/sessions/alice/events"), Some(key), "{}").await;
    assert_eq!(status, StatusCode::OK);

    // Sent to a pod that does not own the key: forwarded to the owner.
    let other = pods.iter().find(|p| p.name != home.name).unwrap();
    let (status, h, body) = get(&other.url("/sessions/alice"), Some(key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&h, &headers::POD).as_deref(), Some(home.name.as_str()));
    assert_eq!(
        text(&h, &headers::FORWARDED_BY).as_deref(),
        Some(other.name.as_str())
    );
    let view: SessionView = serde_json::from_str(&body).unwrap();
    assert_eq!(view.version, 1);
    assert!(
        other
            .service()
            .store()
            .unwrap()
            .version_of(b"alice")
            .await
            .is_none()
    );

    // Operational endpoints, with no session key.
    let (status, _, body) = get(&home.url("/healthz"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = get(&home.url("/readyz"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("ring version 1"), "{body}");
    let (status, h, body) = get(&home.url("/metrics"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text(&h, &http::header::CONTENT_TYPE)
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    for metric in [
        "locus_ring_version 1",
        "locus_store_sessions 1",
        "sample_appends_total{outcome=\"applied\"} 1",
        "sample_reads_total{outcome=\"ok\"} 1",
        "locus_requests_total{side=\"server\",outcome=\"served\"}",
    ] {
        assert!(body.contains(metric), "{metric} missing from\n{body}");
    }
    // Shutting down turns readiness off.
    home.service().begin_shutdown();
    let (status, _, _) = get(&home.url("/readyz"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    for pod in pods {
        pod.stop().await;
    }
}

#[tokio::test]
async fn not_ready_until_the_ring_file_appears() {
    let dir = TempDir::new("ready");
    let listener = common::listeners(1).await.remove(0);
    let address = listener.local_addr().unwrap();
    let path = dir.path().join("ring.json");
    let pod = common::serve(
        listener,
        locus_examples::sample::SampleConfig::new(
            common::pod_name(0),
            RingSourceConfig::File(path),
        ),
    )
    .await;
    let (status, _, body) = get(&pod.url("/readyz"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Session requests get the ownership layer's 503 until a ring exists.
    let (status, h, _) = post(&pod.url("/sessions/a/events"), Some("a"), "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key(http::header::RETRY_AFTER));
    common::write_ring(dir.path(), &common::ring(1, &[address]));
    pod.service()
        .ring()
        .unwrap()
        .wait_for_ring(WAIT)
        .await
        .expect("the ring file is picked up");
    let (status, _, body) = get(&pod.url("/readyz"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = post(&pod.url("/sessions/a/events"), Some("a"), "{}").await;
    assert_eq!(status, StatusCode::OK);
    pod.stop().await;
}
