//! The operator on the local cluster when things go wrong: a pod fails its readiness probe
//! (policy `Reroute` and `Wait`), a pod is deleted from outside, the operator is killed in the
//! middle of a transition, the leader dies with a standby waiting, a stale writer tries to
//! publish over a newer ring, the ring `ConfigMap` is deleted, and losing pods never report
//! drained. The operator runs in-process under the chart's RBAC rules.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DeleteParams;
use locus::ring::{Phase, Ring, RingDocument, SlotState};
use locus_e2e::support::wait;
use locus_operator::controller::Context;
use locus_operator::executor::Executor;
use locus_operator::metrics::Metrics;
use locus_operator::plan::{Actions, PublishedRing, published_ring, reasons};
use operator_support::*;
use serde_json::json;

/// Waits until the history holds a ring matching `predicate`; returns its position.
async fn seen(
    history: &RingHistory,
    what: &str,
    predicate: impl Fn(&locus::ring::Ring) -> bool,
) -> usize {
    wait::until(CONVERGE, what, || async {
        Ok::<_, String>(history.rings().iter().position(|(_, r)| predicate(r)))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn reroute_moves_a_failed_slot_away_and_its_replacement_rejoins_warm() {
    let env = setup("op-reroute").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "inv");
    apply(&env, &service("inv", 3)).await.unwrap();
    let (before, _) = converged(&env, "inv", 3).await.unwrap();
    let victim = before.slot(1).unwrap().pod.name.clone();

    post_to_pod(&env, &victim, "/fail").await.unwrap();
    let failed_at = Instant::now();
    let rerouted = seen(&history, "slot 1's shards moved away", |r| {
        !r.current().counts().contains_key(&1)
    })
    .await;
    let rings = history.rings();
    let (at, ring) = &rings[rerouted];
    // unreadyGrace is 3s: nothing moved before it passed.
    assert!(
        at.duration_since(failed_at) >= Duration::from_secs(2),
        "{:?}",
        at.duration_since(failed_at)
    );
    assert_eq!(
        ring.phase(),
        Phase::Switch,
        "no warm step for a failed slot"
    );
    assert_eq!(rings[rerouted - 1].1.phase(), Phase::Stable);
    assert_eq!(ring.slot(1).unwrap().state, SlotState::Draining);
    for m in before.current().moves_to(ring.current()).unwrap() {
        assert_eq!(m.from, 1, "only the failed slot's shards move: {m:?}");
    }

    let (after, _) = converged(&env, "inv", 3).await.unwrap();
    assert_balanced(&after, 3);
    assert_ne!(after.slot(1).unwrap().pod.name, victim);
    let rejoined = history.rings()[rerouted..].iter().any(|(_, r)| {
        r.phase() == Phase::Warm && r.slot(1).is_some_and(|s| s.state == SlotState::Joining)
    });
    assert!(rejoined, "the replacement rejoined through a warm step");
    let victim_left = env.pods().get_opt(&victim).await.unwrap();
    assert!(victim_left.is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
}

#[tokio::test]
async fn wait_keeps_a_failed_slot_unavailable_until_its_replacement_takes_over() {
    let env = setup("op-wait").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "acct");
    let mut manifest = service("acct", 3);
    manifest["spec"]["onPodFailure"] = json!("Wait");
    apply(&env, &manifest).await.unwrap();
    let (before, _) = converged(&env, "acct", 3).await.unwrap();
    let victim = before.slot(2).unwrap().pod.name.clone();

    post_to_pod(&env, &victim, "/fail").await.unwrap();
    let marked = seen(&history, "slot 2 unavailable", |r| {
        r.slot(2).is_some_and(|s| s.state == SlotState::Unavailable)
    })
    .await;
    let ring = history.rings()[marked].1.clone();
    assert_eq!(
        ring.current(),
        before.current(),
        "the slot keeps its shards"
    );
    assert_eq!(ring.phase(), Phase::Stable);

    let (after, _) = converged(&env, "acct", 3).await.unwrap();
    assert_ne!(after.slot(2).unwrap().pod.name, victim);
    assert_eq!(after.current(), before.current(), "no shard moved at all");
    assert!(
        history
            .rings()
            .iter()
            .all(|(_, r)| r.phase() == Phase::Stable)
    );
}

#[tokio::test]
async fn a_pod_deleted_from_outside_hands_its_slot_to_a_replacement() {
    let env = setup("op-evict").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "sess");
    let mut manifest = service("sess", 3);
    // The probe keeps serving 15 s after SIGTERM, so the replacement can warm the slot.
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(30);
    manifest["spec"]["template"]["spec"]["containers"] =
        json!([probe_container(&[("LOCUS_PROBE_TERM_DELAY_MS", "15000")])]);
    apply(&env, &manifest).await.unwrap();
    let (before, _) = converged(&env, "sess", 3).await.unwrap();
    let victim = before.slot(0).unwrap().pod.name.clone();

    env.pods()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let handed = seen(&history, "a successor for slot 0", |r| {
        r.slot(0).and_then(|s| s.successor.as_ref()).is_some()
    })
    .await;
    let switch = seen(&history, "slot 0's predecessor", |r| {
        r.slot(0)
            .and_then(|s| s.predecessor.as_ref())
            .is_some_and(|p| p.name == victim)
    })
    .await;
    assert!(switch > handed);
    let (after, _) = converged(&env, "sess", 3).await.unwrap();
    assert_ne!(after.slot(0).unwrap().pod.name, victim);
    assert_eq!(
        after.current(),
        before.current(),
        "a replaced pod moves no shard"
    );
}

#[tokio::test]
async fn a_restarted_operator_finishes_the_transition_it_finds() {
    let env = setup("op-restart").await.unwrap();
    let history = RingHistory::watch(&env, "game");
    // Pods start with progress reports stalled and the warm timeout is long: the Warm step
    // can only end by the pods' reports.
    let manifest = |replicas: i32| {
        let mut m = service("game", replicas);
        m["spec"]["timeouts"]["warm"] = json!("300s");
        m["spec"]["template"]["spec"]["containers"] =
            json!([probe_container(&[("LOCUS_PROBE_STALLED", "true")])]);
        m
    };
    let first = Operator::start(env.operator.clone(), env.namespace());
    apply(&env, &manifest(2)).await.unwrap();
    converged(&env, "game", 2).await.unwrap();
    apply(&env, &manifest(3)).await.unwrap();
    let warm = seen(&history, "a warm ring", |r| r.phase() == Phase::Warm).await;
    let warm_version = history.rings()[warm].1.version();
    first.kill().await;

    let (client, _) = env.another_operator_client().await.unwrap();
    let started = Instant::now();
    let _second = Operator::start(client, env.namespace());
    for pod in live_pods(&env, "game").await.unwrap() {
        post_to_pod(&env, pod.metadata.name.as_deref().unwrap(), "/unstall")
            .await
            .unwrap();
    }
    let (ring, _) = converged(&env, "game", 3).await.unwrap();
    assert_balanced(&ring, 3);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "finished by reports, not timeouts"
    );
    let versions: Vec<(u64, Phase)> = history
        .rings()
        .iter()
        .map(|(_, r)| (r.version(), r.phase()))
        .collect();
    let from_warm: Vec<(u64, Phase)> = versions
        .iter()
        .copied()
        .filter(|(v, _)| *v >= warm_version)
        .collect();
    assert_eq!(
        from_warm,
        [
            (warm_version, Phase::Warm),
            (warm_version + 1, Phase::Switch),
            (warm_version + 2, Phase::Stable)
        ],
        "the second operator continued the same transition"
    );
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let env = setup("op-leader").await.unwrap();
    let lease = |identity: &str| locus_operator::leader::LeaseConfig {
        namespace: env.namespace().to_owned(),
        name: "locus-operator".to_owned(),
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(500),
    };
    let config = |identity: &str| locus_operator::Config {
        namespace: Some(env.namespace().to_owned()),
        metrics_addr: None,
        leader_election: Some(lease(identity)),
        instance: identity.to_owned(),
    };
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), env.namespace());
    let holder = |name: &'static str| {
        let leases = leases.clone();
        async move {
            wait::until(
                Duration::from_secs(30),
                &format!("{name} holds the Lease"),
                || async {
                    let lease = leases.get_opt("locus-operator").await?;
                    let current = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
                    Ok::<_, kube::Error>((current.as_deref() == Some(name)).then_some(()))
                },
            )
            .await
            .unwrap();
        }
    };

    let leader = Operator::start_with(env.operator.clone(), config("first"));
    holder("first").await;
    let (standby_client, standby_log) = env.another_operator_client().await.unwrap();
    let _standby = Operator::start_with(standby_client, config("second"));
    apply(&env, &service("lead", 2)).await.unwrap();
    converged(&env, "lead", 2).await.unwrap();
    let standby_writes: Vec<String> = standby_log
        .writes_since(0)
        .into_iter()
        .filter(|w| !w.contains("/leases"))
        .collect();
    assert!(
        standby_writes.is_empty(),
        "the standby wrote: {standby_writes:#?}"
    );

    leader.kill().await;
    let killed = Instant::now();
    holder("second").await;
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_secs(15), "{takeover:?}");
    apply(&env, &service("lead", 3)).await.unwrap();
    converged(&env, "lead", 3).await.unwrap();
    assert!(
        standby_log
            .writes_since(0)
            .iter()
            .any(|w| w.contains("/configmaps/lead-ring")),
        "the new leader published the ring"
    );
    let transitions = leases
        .get("locus-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .lease_transitions
        .unwrap();
    assert!(transitions >= 1);
    println!("standby took over {takeover:?} after the leader died");
}

/// A plan that only publishes `ring` (status unchanged, so nothing else is written).
fn publish_only(ring: Ring, status: &locus_contract::crd::StatefulServiceStatus) -> Actions {
    Actions {
        create: Vec::new(),
        update: Vec::new(),
        delete: Vec::new(),
        publish: Some(PublishedRing { ring, meta: None }),
        status: status.clone(),
        events: Vec::new(),
        steps: Vec::new(),
        requeue_after: None,
    }
}

#[tokio::test]
async fn a_stale_writer_cannot_publish_over_a_newer_ring() {
    let env = setup("op-stale").await.unwrap();
    let operator = Operator::start(env.operator.clone(), env.namespace());
    apply(&env, &service("fence", 2)).await.unwrap();
    converged(&env, "fence", 2).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(env.admin.clone(), env.namespace());
    let ring_name = RingDocument::config_map_name("fence");
    let stale_map = maps.get(&ring_name).await.unwrap();
    let stale = published_ring(&stale_map).unwrap();
    let stale_version = stale_map.metadata.resource_version.clone().unwrap();
    // The leader moves on (scale up: Warm, Switch, Stable).
    apply(&env, &service("fence", 3)).await.unwrap();
    let (newer, _) = converged(&env, "fence", 3).await.unwrap();
    assert!(newer.version() > stale.ring.version() + 1);
    operator.shutdown().await.unwrap();

    // A paused, deposed leader wakes up with its plan made from the stale read: a different
    // document under a version the leader already used.
    let svc = env.services().get("fence").await.unwrap();
    let status = svc.status.clone().unwrap();
    let mut parts = stale.ring.parts().clone();
    parts.version += 1;
    let deposed = publish_only(Ring::new(parts).unwrap(), &status);
    let (client, log) = env.another_operator_client().await.unwrap();
    let ctx = Context::new(client, Arc::new(Metrics::new()), "deposed");
    let executor = Executor::new(&ctx, &svc);
    let error = executor
        .execute(&deposed, Some(&status), Some(&stale_version))
        .await
        .unwrap_err();
    assert!(
        matches!(error, locus_operator::Error::RingConflict { .. }),
        "{error}"
    );
    // Planned while the ConfigMap was missing: the create is refused too.
    let error = executor
        .execute(&deposed, Some(&status), None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, locus_operator::Error::RingConflict { .. }),
        "{error}"
    );
    assert_eq!(
        ring(&env, "fence").await.unwrap().unwrap(),
        newer,
        "the leader's ring stands"
    );
    let writes = log.writes_since(0);
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert!(writes[0].starts_with("PATCH ") && writes[0].contains("force=true"));
    assert!(writes[1].starts_with("POST "));

    // The precondition decided, not the force: the same kind of write with the
    // resourceVersion just read goes through.
    let current = maps.get(&ring_name).await.unwrap();
    let mut parts = newer.parts().clone();
    parts.version += 1;
    let next = publish_only(Ring::new(parts).unwrap(), &status);
    executor
        .execute(
            &next,
            Some(&status),
            current.metadata.resource_version.as_deref(),
        )
        .await
        .unwrap();
    let written = ring(&env, "fence").await.unwrap().unwrap();
    assert_eq!(written.version(), newer.version() + 1);
    assert_eq!(written.current(), newer.current());
}

#[tokio::test]
async fn a_deleted_ring_config_map_is_recreated_with_the_same_owners() {
    let env = setup("op-recreate").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    apply(&env, &service("keep", 3)).await.unwrap();
    let (before, _) = converged(&env, "keep", 3).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(env.admin.clone(), env.namespace());
    maps.delete(
        &RingDocument::config_map_name("keep"),
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    let after = wait::until(CONVERGE, "the ring recreated", || async {
        Ok::<_, String>(
            ring(&env, "keep")
                .await
                .map_err(|e| e.to_string())?
                .filter(|r| r.version() > before.version()),
        )
    })
    .await
    .unwrap();
    assert_eq!(after.version(), before.version() + 1);
    assert_eq!(after.current(), before.current(), "no shard moved");
    assert_eq!(after.slots(), before.slots(), "the same pods");
    let recreated = wait::until(CONVERGE, "a RingRecreated event", || async {
        let found = events(&env, "keep", reasons::RING_RECREATED).await;
        Ok::<_, String>((!found.is_empty()).then_some(found))
    })
    .await
    .unwrap();
    assert_eq!(recreated[0].type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn a_switch_waits_for_a_staying_pod_that_does_not_drain_and_says_why() {
    let env = setup("op-stall").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());
    let history = RingHistory::watch(&env, "slow");
    // Every pod starts with its progress reports stalled: the Warm step ends on its timeout
    // (20 s), but the pods that lose shards in the Switch never report drained.
    let manifest = |replicas: i32| {
        let mut m = service("slow", replicas);
        m["spec"]["template"]["spec"]["containers"] =
            json!([probe_container(&[("LOCUS_PROBE_STALLED", "true")])]);
        m
    };
    apply(&env, &manifest(2)).await.unwrap();
    let (before, _) = converged(&env, "slow", 2).await.unwrap();
    let staying: Vec<(String, String)> = before
        .slots()
        .iter()
        .map(|s| (s.pod.name.clone(), s.pod.uid.clone()))
        .collect();
    apply(&env, &manifest(3)).await.unwrap();
    let switch = seen(&history, "a switch ring", |r| r.phase() == Phase::Switch).await;
    let version = history.rings()[switch].1.version();

    // Past timeouts.drain (20 s) and timeouts.settle (30 s): still the Switch, and the
    // status says why.
    let condition = wait::until(CONVERGE, "Progressing=DrainStalled", || async {
        let svc = env
            .services()
            .get("slow")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(svc.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "Progressing" && c.reason == reasons::DRAIN_STALLED)
        }))
    })
    .await
    .unwrap();
    assert!(
        condition
            .message
            .contains(&format!("ring version {version}")),
        "{}",
        condition.message
    );
    for (name, _) in &staying {
        assert!(condition.message.contains(name), "{}", condition.message);
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let ring_now = ring(&env, "slow").await.unwrap().unwrap();
    assert_eq!(
        (ring_now.version(), ring_now.phase()),
        (version, Phase::Switch),
        "no timeout settled it"
    );
    let live = identities(&live_pods(&env, "slow").await.unwrap());
    for pod in &staying {
        assert!(live.contains(pod), "{pod:?} was not deleted: {live:?}");
    }
    let stalled = events(&env, "slow", reasons::DRAIN_STALLED).await;
    assert!(!stalled.is_empty());
    assert_eq!(stalled[0].type_.as_deref(), Some("Warning"));

    // They drain after all: the transition ends.
    for pod in live_pods(&env, "slow").await.unwrap() {
        post_to_pod(&env, pod.metadata.name.as_deref().unwrap(), "/unstall")
            .await
            .unwrap();
    }
    let (after, _) = converged(&env, "slow", 3).await.unwrap();
    assert_balanced(&after, 3);
    assert_eq!(after.version(), version + 1);
}
