//! Load-aware placement on the local cluster: the sample ledger under a Zipf load (s = 1.1
//! over the session keys, the load generator routed by the ring).
//!
//! * `every_pod_reports_its_shard_load`: the pod half alone (any operator). Every pod of the
//!   ring patches its `locus.dev/shard-load` annotation, which parses and names the ring it
//!   holds and its shards; the requests the pods counted add up to what the load generator
//!   sent; the busiest session's shard is its owner's hottest.
//!
//! Build first: `cargo build -p locus-operator -p locus-examples -p locus-e2e --bins`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod demo_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use demo_support::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use locus::progress::ShardLoadReport;
use locus::ring::Ring;
use locus::ring::annotations::SHARD_LOAD;
use locus_e2e::demo::{Demo, DemoOptions};
use locus_e2e::support::prometheus;
use locus_examples::loadgen::{KeyDistribution, LoadConfig, Stop};

/// The skew of the figure.
const ZIPF: KeyDistribution = KeyDistribution::Zipf { s: 1.1 };

/// Reports every 2 s, so that a short run sees several windows.
fn options(env: &Env, replicas: u16) -> DemoOptions {
    DemoOptions {
        sessions: 2000,
        rate: Some(150.0),
        sample_args: vec!["--load-report-interval".into(), "2s".into()],
        ..env.options(replicas)
    }
}

/// The load report annotation of each pod of `ring`, when every one has one for this ring
/// with requests in it.
async fn reports(pods: &Api<Pod>, ring: &Ring) -> Option<BTreeMap<String, ShardLoadReport>> {
    let mut found = BTreeMap::new();
    for slot in ring.slots() {
        let pod = pods.get_opt(&slot.pod.name).await.ok()??;
        let text = pod.metadata.annotations?.remove(SHARD_LOAD)?;
        let report = ShardLoadReport::from_annotation(&text)
            .unwrap_or_else(|e| panic!("{}: {SHARD_LOAD} {text:?}: {e}", slot.pod.name));
        if report.ring_version != ring.version() || report.requests == 0 {
            return None;
        }
        found.insert(slot.pod.name.clone(), report);
    }
    Some(found)
}

/// `locus_load_requests_total` of each pod of `ring`, from its `/metrics`.
async fn counted(http: &reqwest::Client, ring: &Ring) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for slot in ring.slots() {
        let page = prometheus::scrape(http, &slot.pod.address.to_string()).await;
        let value = prometheus::value(&page, "locus_load_requests_total", None)
            .unwrap_or_else(|| panic!("{}: no locus_load_requests_total", slot.pod.name));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        counts.insert(slot.pod.name.clone(), value as u64);
    }
    counts
}

/// Busiest ÷ mean of `loads`.
fn imbalance(loads: impl IntoIterator<Item = f64>) -> f64 {
    let loads: Vec<f64> = loads.into_iter().collect();
    #[allow(clippy::cast_precision_loss)]
    let mean = loads.iter().sum::<f64>() / loads.len() as f64;
    loads.iter().copied().fold(0.0, f64::max) / mean
}

/// Each pod's share of the requests the sessions' Zipf shares put on it under `ring`.
fn expected_shares(demo: &mut Demo, ring: &Ring, sessions: u32) -> BTreeMap<String, f64> {
    let mut shares = BTreeMap::new();
    for (i, share) in ZIPF.shares(sessions).into_iter().enumerate() {
        let id = demo.load().session_id(u32::try_from(i).unwrap());
        *shares
            .entry(ring.owner(id.as_bytes()).pod.name.clone())
            .or_insert(0.0) += share;
    }
    shares
}

#[tokio::test]
async fn every_pod_reports_its_shard_load() {
    let env = setup("e2e-loadrep").await;
    let options = options(&env, 3);
    let mut demo = Demo::deploy_with(
        &env.target,
        &options,
        |load| LoadConfig { keys: ZIPF, ..load },
        &say,
    )
    .await
    .unwrap();
    let ring = demo.ring().await.unwrap().unwrap();
    let pods = demo.pods().clone();
    let http = reqwest::Client::new();
    let before = counted(&http, &ring).await;

    // Load for 20 s; meanwhile, once windows full of it were reported, every pod's report.
    let watch = async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = reports(&pods, &ring).await {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (summary, found) = tokio::join!(
        demo.load()
            .phase("zipf", Stop::Duration(Duration::from_secs(20))),
        watch
    );
    say(&summary.to_json_line());
    assert_eq!(summary.errors, 0, "{:?}", summary.errors_by_kind);
    let found = found.expect("every pod reports a window of the load under the current ring");

    // The reports: the ring each pod holds, its shards, and together the load sent.
    let owned = ring.current().counts();
    let mut rates = BTreeMap::new();
    for slot in ring.slots() {
        let report = &found[&slot.pod.name];
        say(&format!(
            "{}: {:.1} req/s over {} s, {} B/s, {} shards, hottest {:?}",
            slot.pod.name,
            report.requests_per_second(),
            report.window_seconds,
            report.bytes_per_second().round(),
            report.owned_shards,
            report.hot.first()
        ));
        assert_eq!(report.shards, options.shards);
        assert_eq!(report.owned_shards, owned[&slot.index]);
        assert!(report.bytes > 0);
        rates.insert(slot.pod.name.clone(), report.requests_per_second());
    }
    let reported: f64 = rates.values().sum();
    let sent = summary.throughput_rps;
    say(&format!(
        "reported {reported:.1} req/s over the pods, the load generator sent {sent:.1} req/s"
    ));
    assert!(
        (reported - sent).abs() <= 0.2 * sent,
        "the pods reported {reported:.1} req/s, the load generator sent {sent:.1}"
    );

    // The counters behind the reports, exactly: every request answered was counted once, on
    // the pod that owns its session.
    let after = counted(&http, &ring).await;
    let served: u64 = after.iter().map(|(pod, n)| n - before[pod]).sum();
    say(&format!(
        "counted {served} requests on the pods, the load generator sent {} ({} answered)",
        summary.requests, summary.ok
    ));
    assert_eq!(served, summary.requests);

    // The Zipf skew as the pods see it, against what the sessions' shares predict.
    let expected = expected_shares(&mut demo, &ring, options.sessions);
    let predicted = imbalance(expected.values().copied());
    let measured = imbalance(rates.values().copied());
    say(&format!(
        "busiest pod / mean: reported {measured:.3}, predicted by the Zipf shares {predicted:.3}"
    ));
    // The busiest session's shard is the hottest of the pod that owns it.
    let first = demo.load().session_id(0);
    let hot_pod = &ring.owner(first.as_bytes()).pod.name;
    assert_eq!(
        found[hot_pod].hot.first().map(|l| l.shard),
        Some(ring.shard_of(first.as_bytes())),
        "{hot_pod}: {:?}",
        found[hot_pod].hot
    );
    let report = demo.finish();
    println!("{}", report.table());
}
