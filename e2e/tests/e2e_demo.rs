//! The demo's phases as assertions: the operator installed with its Helm chart (on the local
//! cluster; on kind, `make kind-e2e` installed it), the sample ledger under load through a
//! scale-up, a surge rollout and a scale-down — no failed request, no lost acknowledged
//! write, and moved sessions warm on their new pods (the SDK's handoff driver in the sample).
//! An eviction (Eviction API → SIGTERM drain) loses nothing either.
//!
//! Build first: `cargo build -p locus-operator -p locus-examples -p locus-e2e --bins`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod demo_support;

use std::time::Duration;

use demo_support::*;
use locus_e2e::demo::{Change, Demo, Phase, PhaseReport};

/// Every request answered, nothing lost, the service converged, moved sessions warm.
fn assert_clean(report: &PhaseReport) {
    let s = &report.summary;
    assert!(!report.timed_out, "{}: did not converge", report.name);
    assert_eq!(
        s.errors, 0,
        "{}: failed requests {:?}",
        report.name, s.errors_by_kind
    );
    assert_eq!(
        report.lost_writes, 0,
        "{}: lost writes, e.g. {:?}",
        report.name, report.verification.lost_examples
    );
    assert_eq!(report.verification.stale_sessions, 0, "{}", report.name);
    assert_eq!(
        report.verification.sessions_unreadable, 0,
        "{}",
        report.name
    );
    assert!(s.is_consistent(), "{}: {}", report.name, s.to_json_line());
    if report.ring.shards_moved > 0 {
        // Both ends of the handoff accounting: every pod's report complete, and the first
        // answers the pods counted as served are the ones the client saw announced (within
        // one session: an answer lost on the way).
        let handoff = report.handoff.as_ref();
        assert!(
            handoff.is_some_and(|h| h.complete() && h.agrees(1)),
            "{}: handoff accounting {}",
            report.name,
            handoff.map_or_else(|| "missing".to_owned(), ToString::to_string)
        );
        assert_eq!(
            s.moved.unannounced, 0,
            "{}: sessions answered by a new pod without a takeover announced: {:?}",
            report.name, s.moved
        );
        // The operator's own figure, from what the pods reported with the final ring.
        let reported = report.operator_warm_percent();
        assert!(
            reported.is_some_and(|p| p >= 99.0),
            "{}: status.lastTransition.warmHitPercent {reported:?} ({:?})",
            report.name,
            report.ring.last_transition
        );
    }
    if let Some(warm) = report.moved_warm_percent() {
        assert!(
            warm >= 99.0,
            "{}: only {warm}% of moved sessions were warm on their new pod: {:?}",
            report.name,
            s.moved
        );
    }
}

#[tokio::test]
async fn scale_rollout_and_scale_down_lose_nothing_and_stay_warm() {
    let env = setup("e2e-demo").await;
    let options = env.options(3);
    let mut demo = Demo::deploy(&env.target, &options, &say).await.unwrap();

    let steady = demo
        .run_phase(
            &Phase::new("steady", Change::Steady(Duration::from_secs(5))),
            &say,
        )
        .await
        .unwrap()
        .clone();
    assert_clean(&steady);
    assert!(steady.summary.requests > 0);
    assert_eq!(steady.ring.shards_moved, 0);

    let up = demo
        .run_phase(&Phase::new("scale-to-5", Change::Scale(5)), &say)
        .await
        .unwrap()
        .clone();
    assert_clean(&up);
    // About 2/5 of the shards go to the two new slots, none between staying slots.
    let shards = options.shards;
    assert!(
        (shards / 5..=shards / 2).contains(&up.ring.shards_moved),
        "{} of {shards} shards moved",
        up.ring.shards_moved
    );
    assert!(up.summary.moved.warm > 0, "no session seen moving");

    let rollout = demo
        .run_phase(&Phase::new("rollout", Change::Rollout), &say)
        .await
        .unwrap()
        .clone();
    assert_clean(&rollout);
    // Every pod replaced: every shard has a new owner pod.
    assert_eq!(rollout.ring.shards_moved, shards);
    assert!(rollout.summary.moved.warm > 0, "no session seen moving");

    let down = demo
        .run_phase(&Phase::new("scale-to-2", Change::Scale(2)), &say)
        .await
        .unwrap()
        .clone();
    assert_clean(&down);
    assert!(down.ring.shards_moved > 0);

    let report = demo.finish();
    println!("{}", report.table());
    let verification = report.total.verification.as_ref().unwrap();
    assert_eq!(verification.lost_writes, 0);
    assert!(verification.acked_appends > 0);
    assert_eq!(
        verification.sessions_checked,
        u64::from(options.sessions),
        "every session was written and read back"
    );
}

#[tokio::test]
async fn an_evicted_pod_hands_its_sessions_over() {
    let env = setup("e2e-evict").await;
    let options = env.options(3);
    let mut demo = Demo::deploy(&env.target, &options, &say).await.unwrap();
    let steady = demo
        .run_phase(
            &Phase::new("steady", Change::Steady(Duration::from_secs(3))),
            &say,
        )
        .await
        .unwrap()
        .clone();
    assert_clean(&steady);
    let before = demo.ring().await.unwrap().unwrap();
    let evicted = before.slot(1).unwrap().pod.name.clone();

    let eviction = demo
        .run_phase(&Phase::new("evict-slot-1", Change::Evict(1)), &say)
        .await
        .unwrap()
        .clone();
    assert_clean(&eviction);
    let after = demo.ring().await.unwrap().unwrap();
    let successor = &after.slot(1).unwrap().pod.name;
    assert_ne!(successor, &evicted, "slot 1 is served by a new pod");
    // Only slot 1's shards changed pods; the others kept theirs.
    let slot_1_shards = before
        .current()
        .counts()
        .get(&1)
        .copied()
        .unwrap_or_default();
    assert_eq!(eviction.ring.shards_moved, slot_1_shards);
    assert!(eviction.summary.moved.warm > 0, "no session seen moving");
    let report = demo.finish();
    println!("{}", report.table());
}
