//! How long the operator takes from a pod becoming Ready to a ring that names it: 20 scale-ups
//! by one slot (2 → 3, then back to 2), each timed from the moment a pod watch sees the new
//! pod Ready to the moment a ring watch sees the `Warm` ring that names it. Prints p50, p99
//! and the maximum (with 20 samples p99 is the maximum; `LOCUS_E2E_LATENCY_CYCLES` runs more).

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
use operator_support::*;

/// Scale-ups measured, unless `LOCUS_E2E_LATENCY_CYCLES` says otherwise.
const CYCLES: usize = 20;

/// The nearest-rank percentile `p` (in percent) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test]
async fn pod_ready_to_ring_published() {
    let env = setup("op-latency").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "lat");
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
    watch.abort();

    // For every pod that joined after the start: first ring naming it minus its Ready time.
    let ready_at = ready_at.lock().unwrap().clone();
    let rings = history.rings();
    let mut latencies = Vec::new();
    for (pod, ready) in &ready_at {
        if initial.contains(pod) {
            continue;
        }
        let Some((published, _)) = rings
            .iter()
            .find(|(_, r)| r.slots().iter().any(|s| &s.pod.uid == pod))
        else {
            panic!("pod {pod} never joined a ring");
        };
        latencies.push(published.saturating_duration_since(*ready));
    }
    assert_eq!(latencies.len(), cycles, "one new pod per cycle");
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies[latencies.len() - 1],
    );
    println!(
        "pod Ready -> ring published over {} events: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        latencies.len()
    );
    assert!(p99 < Duration::from_secs(5), "{latencies:?}");
}
