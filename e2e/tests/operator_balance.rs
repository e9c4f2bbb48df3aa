//! Placement by load against the real API server: a StatefulService of ring probes with
//! `spec.placement.balance: Load`. The test stands in for the pods' load reporter: it patches
//! a `locus.dev/shard-load` annotation onto each pod (the probes report ring progress only),
//! skewed so that slot 0's shards are three times as busy as the others. The operator (in
//! process, under the chart's RBAC) must publish a rebalancing transition that reaches Stable,
//! move no more shards than the budget, all from the busiest slot, fill `status.placement`,
//! and not rebalance again once the reports show a balanced load (hysteresis).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use locus::ring::Ring;
use locus_contract::crd::{BalanceMode, PlacementStatus, TransitionKind};
use locus_contract::progress::{ShardLoad, ShardLoadReport};
use locus_contract::ring::annotations::SHARD_LOAD;
use locus_e2e::support::wait;
use operator_support::*;

/// Shards moved per rebalance at most (`spec.placement.maxShardsPerRound`).
const BUDGET: u32 = 8;
/// The reports' window, in seconds.
const WINDOW: u32 = 1;
/// `spec.placement.intervalSeconds`.
const INTERVAL: u32 = 3;

/// Patches onto the pod of every slot holding shards in `ring` the report of the load
/// `rps(shard)` (requests per second) puts on its shards, for `ring`'s version.
async fn report_load(env: &Env, ring: &Ring, rps: &impl Fn(u32) -> u64) {
    let end = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    for slot in ring.slots() {
        let Some(report) =
            ShardLoadReport::of_slot(ring, slot.index, WINDOW, end, |shard| ShardLoad {
                shard,
                requests: rps(shard) * u64::from(WINDOW),
                bytes: rps(shard) * u64::from(WINDOW) * 512,
            })
        else {
            continue;
        };
        let patch = serde_json::json!({
            "metadata": {"annotations": {SHARD_LOAD: report.to_annotation()}}
        });
        env.pods()
            .patch(
                &slot.pod.name,
                &PatchParams {
                    field_manager: Some("load-reporter".into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
}

/// Stands in for live reporters: every window, reports for `ring` the load `rps` puts on its
/// shards (a fresh window each time: the operator refuses stale reports and starts a rebalance
/// only on two windows in a row) until `name`'s `status.placement` satisfies `ready`.
async fn report_until(
    env: &Env,
    name: &str,
    ring: &Ring,
    rps: impl Fn(u32) -> u64,
    what: &str,
    ready: impl Fn(&PlacementStatus) -> bool,
) -> PlacementStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        report_load(env, ring, &rps).await;
        tokio::time::sleep(Duration::from_secs(u64::from(WINDOW))).await;
        let svc = env.services().get(name).await.unwrap();
        if let Some(placement) = svc.status.and_then(|s| s.placement).filter(|p| ready(p)) {
            return placement;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
    }
}

/// Stands in for live reporters for `seconds`: a report of `rps` for `ring` every window.
async fn report_for(env: &Env, ring: &Ring, rps: impl Fn(u32) -> u64, seconds: u64) {
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < end {
        report_load(env, ring, &rps).await;
        tokio::time::sleep(Duration::from_secs(u64::from(WINDOW))).await;
    }
}

/// `status.placement` of `name`, once it satisfies `ready`.
async fn placement_when(
    env: &Env,
    name: &str,
    what: &str,
    ready: impl Fn(&PlacementStatus) -> bool,
) -> PlacementStatus {
    wait::until(Duration::from_secs(60), what, || async {
        let svc = env.services().get(name).await?;
        let placement = svc.status.and_then(|s| s.placement);
        Ok::<_, kube::Error>(placement.filter(|p| ready(p)))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn skewed_load_is_rebalanced_within_the_budget_and_balanced_load_stays_put() {
    let env = setup("op-balance").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "chat");
    let mut manifest = service("chat", 4);
    manifest["spec"]["placement"] = serde_json::json!({
        "balance": "Load",
        "triggerPercent": 120,
        "targetPercent": 110,
        "maxShardsPerRound": BUDGET,
        "intervalSeconds": INTERVAL,
    });
    let applied = apply(&env, &manifest).await.unwrap();
    assert_eq!(applied.spec.placement.balance, BalanceMode::Load);
    let (before, _) = converged(&env, "chat", 4).await.unwrap();
    assert_balanced(&before, 4);
    // Without reports, the operator says what it waits for.
    let waiting = placement_when(&env, "chat", "placement waiting for reports", |p| {
        p.message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for every pod's load report"))
    })
    .await;
    assert_eq!(waiting.pods.len(), 4);

    // Slot 0's 64 shards at 30 req/s, the others' at 10: the busiest at 200 % of the mean.
    let hot_slot: Vec<u32> = before.current().shards_of(0).collect();
    let skewed = |shard: u32| if hot_slot.contains(&shard) { 30 } else { 10 };
    let measured = report_until(
        &env,
        "chat",
        &before,
        skewed,
        "the skewed reports read",
        |p| p.last_rebalance.is_some() || p.busiest_percent == Some(200),
    )
    .await;
    assert!(
        measured
            .pods
            .iter()
            .all(|p| p.requests_per_second.is_some())
    );

    // A rebalance starts (once two windows in a row were above the trigger), goes through
    // Warm, Switch and Settle, and ends Stable.
    let placement = report_until(&env, "chat", &before, skewed, "a rebalance recorded", |p| {
        p.last_rebalance.is_some()
    })
    .await;
    let (after, status) = converged(&env, "chat", 4).await.unwrap();
    assert_eq!(
        status.last_transition.as_ref().unwrap().kind,
        TransitionKind::Rebalance
    );
    let last = placement.last_rebalance.unwrap();
    assert_eq!(last.from_version, before.version());
    assert_eq!(last.busiest_percent_before, 200);
    assert!(
        last.busiest_percent_predicted < last.busiest_percent_before,
        "{last:?}"
    );
    let moves: Vec<_> = before
        .current()
        .moves_to(after.current())
        .unwrap()
        .collect();
    assert!(!moves.is_empty(), "no shard moved");
    assert!(moves.len() <= BUDGET as usize, "{} moves", moves.len());
    assert_eq!(moves.len(), last.shards_moved as usize);
    assert!(moves.iter().all(|m| m.from == 0), "{moves:?}");
    let phases: Vec<String> = history
        .rings()
        .iter()
        .filter(|(_, r)| r.version() > before.version())
        .map(|(_, r)| r.phase().to_string())
        .collect();
    assert_eq!(phases, ["warm", "switch", "stable"], "one transition");
    assert_eq!(events(&env, "chat", "LoadRebalance").await.len(), 1);
    println!(
        "rebalance: {} shards moved (budget {BUDGET}), busiest/mean {}% -> predicted {}%",
        moves.len(),
        last.busiest_percent_before,
        last.busiest_percent_predicted
    );

    // Reports for the new ring with an even load per shard: busiest/mean within the trigger.
    let balanced = report_until(
        &env,
        "chat",
        &after,
        |_| 10,
        "the balanced reports read",
        |p| {
            p.message
                .as_deref()
                .is_some_and(|m| m.contains("within the trigger"))
        },
    )
    .await;
    assert!(balanced.busiest_percent.unwrap() <= 120, "{balanced:?}");
    assert!(balanced.pods.iter().all(|p| p.problem.is_none()));
    // Nothing more happens while the pods report on: the absence of a transition can only be
    // seen by waiting (several intervals).
    report_for(&env, &after, |_| 10, u64::from(INTERVAL) * 3).await;
    let still = ring(&env, "chat").await.unwrap().unwrap();
    assert_eq!(still.version(), after.version(), "rebalanced again");
    assert_eq!(still.current(), after.current());
    assert_eq!(events(&env, "chat", "LoadRebalance").await.len(), 1);
}

#[tokio::test]
async fn bad_placement_values_are_refused_with_what_to_fix() {
    use locus_contract::crd::rules;
    let env = setup("op-balance-invalid").await.unwrap();
    let cases = [
        (
            serde_json::json!({"balance": "Load", "triggerPercent": 110, "targetPercent": 110}),
            rules::PLACEMENT_TARGET_BELOW_TRIGGER_MESSAGE,
        ),
        (
            serde_json::json!({"balance": "Weighted"}),
            r#"Unsupported value: "Weighted": supported values: "Off", "Keys", "Load""#,
        ),
        (
            serde_json::json!({"triggerPercent": 100}),
            "spec.placement.triggerPercent: Invalid value: 100: spec.placement.triggerPercent in body should be greater than or equal to 101",
        ),
        (
            serde_json::json!({"maxShardsPerRound": 0}),
            "spec.placement.maxShardsPerRound in body should be greater than or equal to 1",
        ),
    ];
    for (placement, message) in cases {
        let mut manifest = service("bad", 2);
        manifest["spec"]["placement"] = placement.clone();
        let error = apply(&env, &manifest).await.unwrap_err().to_string();
        assert!(
            error.contains(message),
            "{placement}: expected {message:?} in:\n{error}"
        );
    }
    // The defaults fill in what is left out.
    let mut manifest = service("good", 2);
    manifest["spec"]["placement"] = serde_json::json!({"balance": "Load"});
    let applied = apply(&env, &manifest).await.unwrap();
    let placement = applied.spec.placement;
    assert_eq!(
        (
            placement.trigger_percent,
            placement.target_percent,
            placement.max_shards_per_round,
            placement.interval_seconds
        ),
        (120, 110, 64, 300)
    );
}

#[tokio::test]
async fn a_shard_too_hot_for_any_pod_is_split_when_the_operator_chose_the_count() {
    let env = setup("op-balance-split").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let mut manifest = service("hot", 2);
    manifest["spec"].as_object_mut().unwrap().remove("shards");
    manifest["spec"]["placement"] = serde_json::json!({
        "balance": "Load",
        "maxShardsPerRound": BUDGET,
        "intervalSeconds": INTERVAL,
    });
    apply(&env, &manifest).await.unwrap();
    let (before, _) = converged(&env, "hot", 2).await.unwrap();
    assert_eq!(before.shards().get(), 4096, "the operator's choice");

    // One shard of slot 0 at 10 000 req/s, the others at 1: alone at 142 % of the mean, too
    // hot for any pod; the busiest pod at 171 %.
    let hot = before.current().shards_of(0).next().unwrap();
    let load = |shard: u32| if shard == hot { 10_000 } else { 1 };
    let placement = report_until(&env, "hot", &before, load, "the hot shard split", |p| {
        p.last_rebalance.is_some()
    })
    .await;
    let last = placement.last_rebalance.unwrap();
    assert_eq!((last.shards_moved, last.split_to_shards), (0, Some(8192)));
    let (after, status) = converged(&env, "hot", 2).await.unwrap();
    assert_eq!(after.shards().get(), 8192);
    assert_eq!(
        status.last_transition.as_ref().unwrap().kind,
        TransitionKind::Reshard
    );
    for shard in 0..8192 {
        assert_eq!(
            after.current().slot_of(shard),
            before.current().slot_of(shard / 2),
            "every shard split in place, none moved"
        );
    }
    let split = wait::until(
        Duration::from_secs(20),
        "the HotShardsSplit event",
        || async {
            let split = events(&env, "hot", "HotShardsSplit").await;
            Ok::<_, kube::Error>((!split.is_empty()).then_some(split))
        },
    )
    .await
    .unwrap();
    assert_eq!(split.len(), 1);
    println!("hot shard split: {:?}", split[0].note);
}
