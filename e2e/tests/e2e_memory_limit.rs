//! A sample pod under a container memory limit, filled with sessions until its store is full:
//! the store's bounds come from the limit (the operator passes it as `LOCUS_MEMORY_LIMIT`,
//! `locus::store::LimitsBuilder::within_memory` shares it out), so the store evicts or refuses
//! instead of growing, and the kernel never kills the process.
//!
//! Only a real node enforces a memory limit (a kubelet, a container runtime and cgroups): on
//! kind (`make kind-e2e`) the test runs; on the local cluster, whose node agent runs pods as
//! host processes without cgroups, it says so and returns.
//!
//! The control is the same pod and load with the store's bounds set above the limit by flags:
//! it must be OOM-killed, else the load is too light to show anything and the test fails.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod demo_support;

use std::time::{Duration, Instant};

use demo_support::*;
use k8s_openapi::api::core::v1::Pod;
use locus_e2e::demo::{Demo, DemoOptions};
use locus_e2e::support::{prometheus, service};
use locus_examples::loadgen::Stop;

/// The container's memory limit, in bytes and as the manifest writes it.
const LIMIT: u64 = 128 << 20;
const LIMIT_QUANTITY: &str = "128Mi";
/// Sessions of the load: at about 1.5 KiB of memory each (index, ledger, key), far more than
/// the limit holds.
const SESSIONS: u32 = 150_000;
/// Requests of the fill: every session written at least once.
const REQUESTS: u64 = 200_000;
/// How long the pod's status is watched after the fill for a kill to show.
const SETTLE: Duration = Duration::from_secs(30);

/// What one fill left behind.
struct Filled {
    /// Restarts of the sample container.
    restarts: i32,
    /// Why the container last ended, if it did (`OOMKilled`).
    last_end: Option<String>,
    /// The store's resident sessions at the end (the pod's `/metrics`), if it answered.
    resident: Option<f64>,
    /// Sessions the store evicted or refused for room.
    pressure: f64,
    /// Requests answered.
    answered: u64,
    /// The container's working set at the end (the kubelet's summary), if it told.
    working_set: Option<u64>,
}

async fn fill(env: &Env, service_name: &str, args: &[&str]) -> Filled {
    let options = DemoOptions {
        service: service_name.into(),
        sessions: SESSIONS,
        concurrency: 32,
        rate: None,
        note_bytes: 256,
        memory_limit: Some(LIMIT_QUANTITY.into()),
        sample_args: args.iter().map(|&a| a.to_owned()).collect(),
        ..env.options(1)
    };
    let mut demo = Demo::deploy(&env.target, &options, &say).await.unwrap();
    let summary = demo.load().phase("fill", Stop::Requests(REQUESTS)).await;
    say(&format!("{service_name}: {}", summary.to_json_line()));
    // A kill near the end of the load reaches the pod's status only when the kubelet next
    // reports it, which on a loaded node takes a while (seen: more than 5 s): watch the
    // status for a settle time, and stop early once a restart shows.
    let mut pod = None;
    let settle = Instant::now();
    while settle.elapsed() < SETTLE {
        let pods = service::live_pods(demo.pods(), service_name).await.unwrap();
        assert_eq!(pods.len(), 1, "one pod");
        let restarted = restarts(&pods[0]).0 > 0;
        pod = pods.into_iter().next();
        if restarted {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let pod = &pod.unwrap();
    let (restart_count, last_end) = restarts(pod);
    let page = metrics(pod).await;
    let resident = page
        .as_deref()
        .and_then(|p| prometheus::value(p, "locus_store_sessions", None));
    let pressure = page.as_deref().map_or(0.0, |p| {
        prometheus::value(
            p,
            "locus_store_evictions_total",
            Some("reason=\"pressure\""),
        )
        .unwrap_or(0.0)
            + prometheus::value(p, "locus_store_rejections_total", Some("reason=\"full\""))
                .unwrap_or(0.0)
    });
    let working_set = working_set(env, pod).await;
    say(&format!(
        "{service_name}: restarts {}, last end {last_end:?}, resident sessions {resident:?}, \
         evicted or refused for room {pressure}, working set {:?} MiB of {LIMIT_QUANTITY}",
        restart_count,
        working_set.map(|b| b >> 20),
    ));
    drop(demo.finish());
    Filled {
        restarts: restart_count,
        last_end,
        resident,
        pressure,
        answered: summary.requests - summary.errors,
        working_set,
    }
}

/// The pod's container memory working set, from its node's kubelet summary (through the
/// API server's node proxy).
async fn working_set(env: &Env, pod: &Pod) -> Option<u64> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let name = pod.metadata.name.clone()?;
    let client = env.cluster.client().await.ok()?;
    let request = http::Request::get(format!("/api/v1/nodes/{node}/proxy/stats/summary"))
        .body(Vec::new())
        .ok()?;
    let summary: serde_json::Value = client.request(request).await.ok()?;
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name.as_str())?["containers"][0]["memory"]
        ["workingSetBytes"]
        .as_u64()
}

/// The sample container's restarts and why it last ended, as the pod's status says.
fn restarts(pod: &Pod) -> (i32, Option<String>) {
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first());
    let last_end = status
        .and_then(|s| s.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.reason.clone());
    (status.map_or(0, |s| s.restart_count), last_end)
}

/// The sample's `/metrics` page, straight from the pod.
async fn metrics(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let page = prometheus::scrape(&http, &format!("{ip}:8080")).await;
    (!page.is_empty()).then_some(page)
}

#[tokio::test]
async fn a_store_bounded_by_the_pods_memory_limit_is_not_oom_killed() {
    let env = setup("e2e-memory").await;
    if !env.external {
        say(
            "skipped: the local cluster's node agent enforces no memory limit (no cgroups); \
             `make kind-e2e` runs this test on real nodes",
        );
        return;
    }
    let budget = locus::store::MemoryBudget::of(LIMIT);

    let control = fill(
        &env,
        "unbounded",
        &[
            "--memory-limit",
            "8589934592",
            "--max-sessions",
            "1000000",
            "--max-total-bytes",
            "2147483648",
        ],
    )
    .await;
    assert!(
        control.restarts > 0 || control.last_end.as_deref() == Some("OOMKilled"),
        "the control (store bounds above the limit) was not OOM-killed: the load is too light \
         to show anything (restarts {}, last end {:?}, resident {:?})",
        control.restarts,
        control.last_end,
        control.resident
    );

    let bounded = fill(&env, "bounded", &[]).await;
    assert_eq!(
        (bounded.restarts, bounded.last_end.as_deref()),
        (0, None),
        "the pod with the store's bounds from its limit ended"
    );
    let resident = bounded.resident.unwrap();
    #[allow(clippy::cast_precision_loss, reason = "a session count")]
    let most = budget.sessions as f64;
    assert!(
        (resident - most).abs() < 1.0,
        "{resident} sessions resident, not the budget's {most}: above it the bound failed, \
         below it the process restarted (a kill the status did not show yet)"
    );
    assert!(
        bounded.pressure > 0.0,
        "the store never reached its bound: the fill proves nothing"
    );
    assert!(bounded.answered > 0);
    if let Some(bytes) = bounded.working_set {
        assert!(bytes < LIMIT, "working set {bytes} at the limit");
    }
}
