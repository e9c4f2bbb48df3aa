//! The shard count on the local cluster: a StatefulService that leaves `spec.shards` unset
//! gets the count the operator chooses (`crd::auto_shards`) in its ring and `status.shards`,
//! and the API server stores no `spec.shards` for it; raising a fixed count doubles the ring in
//! place; a count set below the one in use leaves the ring as it is; bad explicit values are
//! refused with the documented messages. The operator runs in-process under the chart's RBAC.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod operator_support;

use locus_contract::crd::{TransitionKind, auto_shards, rules};
use operator_support::*;
use serde_json::{Value, json};

/// The ring-probe service of `operator_support` with `spec.shards` removed (or set to `shards`).
fn with_shards(name: &str, replicas: i32, shards: Option<Value>) -> Value {
    let mut manifest = service(name, replicas);
    let spec = manifest["spec"].as_object_mut().unwrap();
    spec.remove("shards");
    if let Some(shards) = shards {
        spec.insert("shards".to_owned(), shards);
    }
    manifest
}

#[tokio::test]
async fn an_unset_shard_count_is_chosen_by_the_operator_and_only_grows() {
    let env = setup("op-shards").await.unwrap();
    let _operator = Operator::start(env.operator.clone(), env.namespace());

    apply(&env, &with_shards("auto", 2, None)).await.unwrap();
    let (ring, status) = converged(&env, "auto", 2).await.unwrap();
    let chosen = auto_shards(2);
    assert_eq!(chosen, 4096);
    assert_eq!(ring.shards().get(), chosen, "the ring has the chosen count");
    assert_eq!(status.shards, Some(chosen), "status.shards shows it");
    assert_balanced(&ring, 2);
    let stored = env.services().get("auto").await.unwrap();
    assert_eq!(
        stored.spec.shards, None,
        "the API server defaults nothing: the count stays the operator's to choose"
    );
    // The printer column reads status.shards.
    let out = env
        .cluster
        .kubectl()
        .args(["get", "stsvc", "auto", "-n", env.namespace(), "-o", "wide"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("SHARDS"), "{table}");
    assert!(table.contains(" 4096 "), "{table}");

    // A fixed count above it doubles the ring in place (one Reshard publish), nothing moves.
    let before = ring.current().clone();
    apply(&env, &with_shards("auto", 2, Some(json!(8192))))
        .await
        .unwrap();
    let (ring, status) = converged(&env, "auto", 2).await.unwrap();
    assert_eq!(ring.shards().get(), 8192);
    assert_eq!(status.shards, Some(8192));
    let record = status.last_transition.as_ref().unwrap();
    assert_eq!(record.kind, TransitionKind::Reshard);
    assert_eq!(record.shards_moved, 0);
    for shard in 0..8192 {
        assert_eq!(ring.current().slot_of(shard), before.slot_of(shard / 2));
    }

    // Unset again: the choice for 2 replicas (4096) is below the ring's count, which stays.
    apply(&env, &with_shards("auto", 2, None)).await.unwrap();
    let (ring, status) = converged(&env, "auto", 2).await.unwrap();
    assert_eq!(ring.shards().get(), 8192, "the count never shrinks");
    assert_eq!(status.shards, Some(8192));
}

#[tokio::test]
async fn bad_explicit_shard_counts_are_refused_with_the_documented_messages() {
    let env = setup("op-shards-bad").await.unwrap();
    let cases = [
        (
            with_shards("bad", 2, Some(json!(1000))),
            rules::SHARDS_POWER_OF_TWO_MESSAGE,
        ),
        (
            with_shards("bad", 2, Some(json!(131_072))),
            "spec.shards: Invalid value",
        ),
        (
            with_shards("bad", 9, Some(json!(8))),
            rules::REPLICAS_AT_MOST_SHARDS_MESSAGE,
        ),
        (
            with_shards("bad", 70_000, None),
            rules::REPLICAS_AT_MOST_SHARDS_MESSAGE,
        ),
    ];
    for (manifest, message) in &cases {
        let (ok, stderr) = kubectl_apply(&env, &manifest.to_string()).await;
        assert!(!ok, "accepted a bad spec expected to fail with {message:?}");
        assert!(
            stderr.contains(message),
            "expected {message:?} in:\n{stderr}"
        );
    }
    // Unset is accepted at any replica count the format allows; so is an explicit null.
    let (ok, stderr) = kubectl_apply(&env, &with_shards("unset", 2048, None).to_string()).await;
    assert!(ok, "{stderr}");
    let (ok, stderr) =
        kubectl_apply(&env, &with_shards("null", 3, Some(Value::Null)).to_string()).await;
    assert!(ok, "{stderr}");
    // A fixed count may grow but never shrink.
    let (ok, stderr) =
        kubectl_apply(&env, &with_shards("fixed", 2, Some(json!(256))).to_string()).await;
    assert!(ok, "{stderr}");
    let (ok, stderr) =
        kubectl_apply(&env, &with_shards("fixed", 2, Some(json!(128))).to_string()).await;
    assert!(!ok, "shrank a fixed count");
    assert!(stderr.contains(rules::SHARDS_ONLY_GROW_MESSAGE), "{stderr}");
}
