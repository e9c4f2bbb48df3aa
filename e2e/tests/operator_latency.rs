//! Ring propagation, on one clock: a pod becomes Ready → the operator publishes a ring that
//! names it → a client's router holds that ring. 20 scale-ups by one slot (2 → 3, then back to
//! 2); `LOCUS_E2E_LATENCY_CYCLES` runs more (`make bench` runs 60).
//!
//! - *Ready*: the test's pod watch sees the new pod Ready.
//! - *published*: the test's own watch of the ring `ConfigMap` sees the `Warm` ring that names
//!   the pod (the first ring that does).
//! - *router updated*: a [`Router`] over a [`KubeRingSource`] (its own client and connection, as
//!   a caller in another process would have) accepted a ring at least that new — the instant
//!   the source swapped it in ([`locus::source::HeldRing::received_at`]), after which every
//!   request is accepted by it.
//!
//! Prints p50, p99 and the maximum of each leg and of the whole path. The figures are
//! reported, not asserted (they belong to `docs/benchmarks.md`); the test asserts that every
//! new pod reached a published ring and the router, and that the router caught up with every
//! published version (a ring at least as new; it may skip versions in between).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use locus::Router;
use locus::source::KubeRingSource;
use locus_e2e::support::service::is_ready;
use operator_support::*;

/// Scale-ups measured, unless `LOCUS_E2E_LATENCY_CYCLES` says otherwise.
const CYCLES: usize = 20;

/// The nearest-rank percentile `p` (in percent) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints p50, p99 and max of `samples` under `label`.
fn report(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let (p50, p99, max) = (
        percentile(samples, 50),
        percentile(samples, 99),
        samples[samples.len() - 1],
    );
    println!(
        "{label} over {} events: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
}

#[tokio::test]
async fn ring_propagation() {
    let env = setup("op-latency").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "lat");

    // The caller's router, on a client of its own.
    let source = KubeRingSource::spawn(env.cluster.client().await.unwrap(), env.namespace(), "lat");
    let router = Router::new(
        tower::service_fn(|_: http::Request<()>| async { Ok::<_, std::convert::Infallible>(()) }),
        &source,
    );
    let accepted: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut ring = router.ring().clone();
    let sink = accepted.clone();
    let follow = tokio::spawn(async move {
        loop {
            if let Some(held) = ring.held() {
                let mut seen = sink.lock().unwrap();
                if seen.last().is_none_or(|(v, _)| *v < held.ring.version()) {
                    seen.push((held.ring.version(), held.received_at));
                }
            }
            if !ring.changed().await {
                break;
            }
        }
    });

    let ready_at: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let sink = ready_at.clone();
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), env.namespace());
    let watch = tokio::spawn(async move {
        let config = watcher::Config::default().labels("locus.dev/service=lat");
        let mut stream = watcher(pods, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(pod)) = stream.next().await {
            if is_ready(&pod) {
                // Keyed by UID: a slot's pod may get the same name again once the last is gone.
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                sink.lock().unwrap().entry(uid).or_insert_with(Instant::now);
            }
        }
    });

    apply(&env, &service("lat", 2)).await.unwrap();
    let (ring, _) = converged(&env, "lat", 2).await.unwrap();
    let cycles = std::env::var("LOCUS_E2E_LATENCY_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CYCLES);
    let initial: Vec<String> = ring.slots().iter().map(|s| s.pod.uid.clone()).collect();
    for _ in 0..cycles {
        apply(&env, &service("lat", 3)).await.unwrap();
        converged(&env, "lat", 3).await.unwrap();
        apply(&env, &service("lat", 2)).await.unwrap();
        converged(&env, "lat", 2).await.unwrap();
    }
    let rings = history.rings();
    let last = rings.last().map(|(_, r)| r.version()).unwrap();
    // The router catches up with the last ring (it may skip versions in between: a watch
    // channel keeps only the newest).
    router
        .ring()
        .wait_for_version(last, Duration::from_secs(10))
        .await
        .unwrap();
    watch.abort();
    follow.abort();

    let ready_at = ready_at.lock().unwrap().clone();
    let accepted = accepted.lock().unwrap().clone();
    // When the router first held a ring of at least `version`.
    let router_at = |version: u64| {
        accepted
            .iter()
            .find(|(v, _)| *v >= version)
            .map(|(_, at)| *at)
    };
    let (mut ready_to_published, mut published_to_router, mut ready_to_router) =
        (Vec::new(), Vec::new(), Vec::new());
    for (pod, ready) in &ready_at {
        if initial.contains(pod) {
            continue;
        }
        let Some((published, ring)) = rings
            .iter()
            .find(|(_, r)| r.slots().iter().any(|s| &s.pod.uid == pod))
        else {
            panic!("pod {pod} never joined a ring");
        };
        let Some(updated) = router_at(ring.version()) else {
            panic!(
                "the router never held ring {} naming pod {pod}",
                ring.version()
            );
        };
        ready_to_published.push(published.saturating_duration_since(*ready));
        ready_to_router.push(updated.saturating_duration_since(*ready));
    }
    // Every published version, whether or not it named a new pod.
    for (published, ring) in &rings {
        let updated = router_at(ring.version()).unwrap();
        published_to_router.push(updated.saturating_duration_since(*published));
    }
    assert_eq!(ready_to_published.len(), cycles, "one new pod per cycle");
    report("pod Ready -> ring published", &mut ready_to_published);
    report("ring published -> router updated", &mut published_to_router);
    report("pod Ready -> router updated", &mut ready_to_router);
}
