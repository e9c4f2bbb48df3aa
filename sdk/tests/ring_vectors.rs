//! Checks the committed test vectors `sdk/testdata/ring-vectors.json`, which
//! let another language verify that it hashes, shards, routes and plans
//! exactly as this crate does.
//!
//! Regenerate the file (only when the format or the planner changes on
//! purpose, with an ADR) with:
//!
//! ```text
//! cargo test -p locus --test ring_vectors -- --ignored regenerate_vectors
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fmt::Write as _;
use std::path::PathBuf;

use locus::ring::{
    Assignment, Plan, PlanRequest, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState,
    Transition, hash_key, plan,
};
use serde_json::{Value, json};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/ring-vectors.json")
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hash_text(hash: u64) -> String {
    format!("0x{hash:016x}")
}

/// Inputs of the known-hash list: `len` bytes `i % 251`, one length per code
/// path of xxh3 (0, 1-3, 4-8, 9-16, 17-128, 129-240, > 240), plus a few texts.
fn known_inputs() -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = [0usize, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1000]
        .iter()
        .map(|&len| (0..len).map(|i| (i % 251) as u8).collect())
        .collect();
    for text in ["a", "abc", "hello world", "session-1"] {
        inputs.push(text.as_bytes().to_vec());
    }
    inputs
}

/// Keys routed in every ring vector.
fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"a".to_vec(),
        b"session-1".to_vec(),
        b"session-2".to_vec(),
        b"user:42".to_vec(),
        "café ☕".as_bytes().to_vec(),
        "日本語キー".as_bytes().to_vec(),
        vec![0x00, 0xff, 0x10, 0xfe],
        (0u8..32).collect(),
        b"a-rather-long-session-identifier-0123456789abcdef-0123456789abcdef".to_vec(),
    ];
    keys.extend((0..6).map(|i| format!("session-{}", 1000 + i * 7919).into_bytes()));
    keys
}

struct PlanVector {
    name: &'static str,
    namespace: &'static str,
    service: &'static str,
    shards: u32,
    vnodes: u32,
    previous: Option<Vec<u16>>,
    slots: Vec<u16>,
    max_moves: Option<u32>,
}

fn run_plan(v: &PlanVector, previous: Option<&Assignment>) -> Plan {
    plan(&PlanRequest {
        namespace: v.namespace,
        service: v.service,
        shards: ShardCount::new(v.shards).unwrap(),
        vnodes: v.vnodes,
        previous,
        slots: &v.slots,
        max_moves: v.max_moves.and_then(std::num::NonZeroU32::new),
    })
    .unwrap()
}

fn fresh(
    namespace: &'static str,
    service: &'static str,
    shards: u32,
    vnodes: u32,
    slots: &[u16],
) -> Assignment {
    run_plan(
        &PlanVector {
            name: "",
            namespace,
            service,
            shards,
            vnodes,
            previous: None,
            slots: slots.to_vec(),
            max_moves: None,
        },
        None,
    )
    .assignment
}

fn slot(service: &str, index: u16, state: SlotState) -> Slot {
    Slot {
        index,
        pod: pod(service, index, "a"),
        state,
        successor: None,
        predecessor: None,
    }
}

fn pod(service: &str, index: u16, suffix: &str) -> Pod {
    Pod {
        name: format!("{service}-{index}-{suffix}{index:03}"),
        // Distinct per pod: a replacement pod (other suffix) gets another UID and address.
        uid: format!(
            "00000000-0000-4000-{:04x}-{index:012x}",
            hash_key(suffix.as_bytes()) & 0xffff
        ),
        address: format!(
            "10.{}.{}.{}:8080",
            suffix.len(),
            index / 200,
            index % 200 + 10
        )
        .parse()
        .unwrap(),
    }
}

/// The ring vectors: different S and N, every phase.
#[allow(clippy::too_many_lines, reason = "one block per ring vector")]
fn rings() -> Vec<(&'static str, Ring)> {
    let mut rings = Vec::new();
    let parts = |service: &str,
                 shards: u32,
                 vnodes: u32,
                 slots: Vec<Slot>,
                 current: Assignment,
                 transition| RingParts {
        namespace: "default".to_owned(),
        service: service.to_owned(),
        version: 1,
        shards: ShardCount::new(shards).unwrap(),
        vnodes,
        slots,
        current,
        transition,
    };
    // One shard, one slot.
    rings.push((
        "one-shard-one-slot",
        Ring::new(parts(
            "solo",
            1,
            16,
            vec![slot("solo", 0, SlotState::Active)],
            fresh("default", "solo", 1, 16, &[0]),
            Transition::Stable,
        ))
        .unwrap(),
    ));
    // 8 shards over 3 slots.
    rings.push((
        "s8-n3-stable",
        Ring::new(parts(
            "chat",
            8,
            16,
            (0..3).map(|i| slot("chat", i, SlotState::Active)).collect(),
            fresh("default", "chat", 8, 16, &[0, 1, 2]),
            Transition::Stable,
        ))
        .unwrap(),
    ));
    // 16 shards, growing from 4 to 5 slots: warm phase, slot 4 joining, slot 2 being replaced.
    {
        let current = fresh("default", "cart", 16, 32, &[0, 1, 2, 3]);
        let target = plan(&PlanRequest {
            namespace: "default",
            service: "cart",
            shards: ShardCount::new(16).unwrap(),
            vnodes: 32,
            previous: Some(&current),
            slots: &[0, 1, 2, 3, 4],
            max_moves: None,
        })
        .unwrap()
        .assignment;
        let mut slots: Vec<Slot> = (0..4).map(|i| slot("cart", i, SlotState::Active)).collect();
        slots[2].successor = Some(pod("cart", 2, "surge"));
        slots.push(slot("cart", 4, SlotState::Joining));
        let mut p = parts("cart", 16, 32, slots, current, Transition::Warm { target });
        p.version = 7;
        rings.push(("s16-n4-to-5-warm", Ring::new(p).unwrap()));
    }
    // 256 shards, shrinking from 4 to 3 slots: switch phase, slot 3 draining.
    {
        let previous = fresh("shop", "orders", 256, 64, &[0, 1, 2, 3]);
        let current = plan(&PlanRequest {
            namespace: "shop",
            service: "orders",
            shards: ShardCount::new(256).unwrap(),
            vnodes: 64,
            previous: Some(&previous),
            slots: &[0, 1, 2],
            max_moves: None,
        })
        .unwrap()
        .assignment;
        let mut slots: Vec<Slot> = (0..3)
            .map(|i| slot("orders", i, SlotState::Active))
            .collect();
        slots.push(slot("orders", 3, SlotState::Draining));
        slots[1].predecessor = Some(pod("orders", 1, "old"));
        let mut p = parts(
            "orders",
            256,
            64,
            slots,
            current,
            Transition::Switch { previous },
        );
        "shop".clone_into(&mut p.namespace);
        p.version = 12;
        rings.push(("s256-n4-to-3-switch", Ring::new(p).unwrap()));
    }
    // The default: 4096 shards, 7 slots, 128 vnodes.
    {
        let mut p = parts(
            "game",
            4096,
            128,
            (0..7).map(|i| slot("game", i, SlotState::Active)).collect(),
            fresh("default", "game", 4096, 128, &[0, 1, 2, 3, 4, 5, 6]),
            Transition::Stable,
        );
        p.version = 3;
        rings.push(("s4096-n7-stable", Ring::new(p).unwrap()));
    }
    rings
}

/// Planner vectors: inputs and the expected table.
fn plan_vectors() -> Vec<PlanVector> {
    let base = |name, shards, slots: &[u16], previous, after: &[u16], max_moves| PlanVector {
        name,
        namespace: "default",
        service: "chat",
        shards,
        vnodes: 16,
        previous,
        slots: if after.is_empty() {
            slots.to_vec()
        } else {
            after.to_vec()
        },
        max_moves,
    };
    let t = |shards, slots: &[u16]| {
        Some(
            fresh("default", "chat", shards, 16, slots)
                .as_slice()
                .to_vec(),
        )
    };
    vec![
        base("fresh-s8-n3", 8, &[0, 1, 2], None, &[], None),
        base(
            "fresh-s64-n5-sparse",
            64,
            &[0, 3, 4, 9, 11],
            None,
            &[],
            None,
        ),
        base(
            "grow-s64-n4-to-5",
            64,
            &[],
            t(64, &[0, 1, 2, 3]),
            &[0, 1, 2, 3, 4],
            None,
        ),
        base(
            "shrink-s64-n5-to-4",
            64,
            &[],
            t(64, &[0, 1, 2, 3, 4]),
            &[0, 1, 3, 4],
            None,
        ),
        base(
            "replace-s64-slot1-by-5",
            64,
            &[],
            t(64, &[0, 1, 2, 3]),
            &[0, 2, 3, 5],
            None,
        ),
        base(
            "grow-s64-n4-to-6-capped-5",
            64,
            &[],
            t(64, &[0, 1, 2, 3]),
            &[0, 1, 2, 3, 4, 5],
            Some(5),
        ),
    ]
}

fn generate() -> Value {
    let known: Vec<Value> = known_inputs()
        .iter()
        .map(|input| {
            let mut entry = json!({"input_hex": hex(input), "xxh3_64": hash_text(hash_key(input))});
            if let Ok(text) = std::str::from_utf8(input)
                && text.chars().all(|c| !c.is_control())
            {
                entry["input_utf8"] = json!(text);
            }
            entry
        })
        .collect();
    let tokens: Vec<Value> = [
        ("default", "chat", 0u16, 0u32),
        ("default", "chat", 3, 127),
        ("shop", "orders", 12, 5),
    ]
    .iter()
    .map(|&(ns, svc, slot, index)| {
        let name = format!("{ns}/{svc}/{slot}/{index}");
        json!({"namespace": ns, "service": svc, "slot": slot, "index": index, "name": name,
                   "point": hash_text(locus::ring::token_point(ns, svc, slot, index))})
    })
    .collect();
    let rings: Vec<Value> = rings()
        .iter()
        .map(|(name, ring)| {
            let document: Value =
                serde_json::from_slice(&RingDocument::to_json(ring).unwrap()).unwrap();
            let keys: Vec<Value> = keys()
                .iter()
                .map(|key| {
                    let owner = ring.owner(key);
                    let mut entry = json!({
                        "key_hex": hex(key),
                        "hash": hash_text(hash_key(key)),
                        "shard": ring.shard_of(key),
                        "slot": owner.index,
                        "pod": owner.pod.name,
                        "address": owner.pod.address.to_string(),
                    });
                    if let Ok(text) = std::str::from_utf8(key)
                        && text.chars().all(|c| !c.is_control())
                    {
                        entry["key_utf8"] = json!(text);
                    }
                    if let Some(t) = ring.target_owner(key) {
                        entry["target_slot"] = json!(t.index);
                    }
                    if let Some(p) = ring.previous_owner(key) {
                        entry["previous_slot"] = json!(p.index);
                    }
                    entry
                })
                .collect();
            json!({"name": name, "document": document, "keys": keys})
        })
        .collect();
    let plans: Vec<Value> = plan_vectors()
        .iter()
        .map(|v| {
            let previous = v.previous.clone().map(|t| Assignment::new(t).unwrap());
            let result = run_plan(v, previous.as_ref());
            json!({
                "name": v.name,
                "namespace": v.namespace,
                "service": v.service,
                "shards": v.shards,
                "vnodes": v.vnodes,
                "previous": previous.as_ref().map(Assignment::to_base64),
                "slots": v.slots,
                "max_moves": v.max_moves,
                "expected": result.assignment.to_base64(),
                "moved": result.moved,
                "remaining": result.remaining,
            })
        })
        .collect();
    json!({
        "about": "Locus ring test vectors. Hash: xxh3-64, seed 0, over the raw key bytes. \
                  shard = hash >> (64 - log2 shards) (0 when shards = 1). \
                  owner = slots[current[shard]]. Tables: base64 of little-endian u16, one per shard. \
                  Token i of slot s: xxh3_64(\"<namespace>/<service>/<s>/<i>\"). \
                  Format and planner rules: docs/ring-format.md.",
        "known_hashes": known,
        "tokens": tokens,
        "rings": rings,
        "plans": plans,
    })
}

#[test]
#[ignore = "writes sdk/testdata/ring-vectors.json; run on purpose"]
fn regenerate_vectors() {
    let mut text = serde_json::to_string_pretty(&generate()).unwrap();
    text.push('\n');
    std::fs::write(vectors_path(), text).unwrap();
}

fn load() -> Value {
    let text =
        std::fs::read_to_string(vectors_path()).expect("sdk/testdata/ring-vectors.json exists");
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn parse_hash(text: &Value) -> u64 {
    let text = text.as_str().unwrap();
    u64::from_str_radix(text.strip_prefix("0x").unwrap(), 16).unwrap()
}

#[test]
fn known_hashes_match() {
    let vectors = load();
    let known = vectors["known_hashes"].as_array().unwrap();
    assert!(known.len() >= 10);
    let empty = known.iter().find(|k| k["input_hex"] == "").unwrap();
    // The published xxh3-64 value of the empty input.
    assert_eq!(parse_hash(&empty["xxh3_64"]), 0x2D06_8005_38D3_94C2);
    for entry in known {
        let input = unhex(entry["input_hex"].as_str().unwrap());
        if let Some(text) = entry["input_utf8"].as_str() {
            assert_eq!(text.as_bytes(), &input[..]);
        }
        assert_eq!(
            hash_key(&input),
            parse_hash(&entry["xxh3_64"]),
            "input {}",
            entry["input_hex"]
        );
    }
}

#[test]
fn token_points_match() {
    let vectors = load();
    for entry in vectors["tokens"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        assert_eq!(hash_key(name.as_bytes()), parse_hash(&entry["point"]));
        let point = locus::ring::token_point(
            entry["namespace"].as_str().unwrap(),
            entry["service"].as_str().unwrap(),
            u16::try_from(entry["slot"].as_u64().unwrap()).unwrap(),
            u32::try_from(entry["index"].as_u64().unwrap()).unwrap(),
        );
        assert_eq!(point, parse_hash(&entry["point"]), "{name}");
    }
}

#[test]
fn rings_route_every_key_as_recorded() {
    let vectors = load();
    let rings = vectors["rings"].as_array().unwrap();
    assert!(rings.len() >= 4);
    let mut phases = std::collections::HashSet::new();
    for entry in rings {
        let name = entry["name"].as_str().unwrap();
        let bytes = serde_json::to_vec(&entry["document"]).unwrap();
        let ring = RingDocument::from_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        phases.insert(ring.phase());
        let keys = entry["keys"].as_array().unwrap();
        assert!(keys.len() >= 10, "{name}");
        for key_entry in keys {
            let key = unhex(key_entry["key_hex"].as_str().unwrap());
            if let Some(text) = key_entry["key_utf8"].as_str() {
                assert_eq!(text.as_bytes(), &key[..]);
            }
            let what = format!("{name} key {}", key_entry["key_hex"]);
            assert_eq!(hash_key(&key), parse_hash(&key_entry["hash"]), "{what}");
            assert_eq!(
                u64::from(ring.shard_of(&key)),
                key_entry["shard"].as_u64().unwrap(),
                "{what}"
            );
            let owner = ring.owner(&key);
            assert_eq!(
                u64::from(owner.index),
                key_entry["slot"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(owner.pod.name, key_entry["pod"].as_str().unwrap(), "{what}");
            assert_eq!(
                owner.pod.address.to_string(),
                key_entry["address"].as_str().unwrap(),
                "{what}"
            );
            assert_eq!(
                ring.target_owner(&key).map(|s| u64::from(s.index)),
                key_entry["target_slot"].as_u64(),
                "{what}"
            );
            assert_eq!(
                ring.previous_owner(&key).map(|s| u64::from(s.index)),
                key_entry["previous_slot"].as_u64(),
                "{what}"
            );
        }
        // The document is the canonical encoding of the ring.
        let again: Value = serde_json::from_slice(&RingDocument::to_json(&ring).unwrap()).unwrap();
        assert_eq!(again, entry["document"], "{name}");
    }
    assert_eq!(phases.len(), 3, "vectors cover stable, warm and switch");
}

#[test]
fn planner_reproduces_recorded_tables() {
    let vectors = load();
    let plans = vectors["plans"].as_array().unwrap();
    assert!(plans.len() >= 5);
    for entry in plans {
        let name = entry["name"].as_str().unwrap();
        let shards = ShardCount::from_u64(entry["shards"].as_u64().unwrap()).unwrap();
        let previous = entry["previous"]
            .as_str()
            .map(|t| Assignment::from_base64(t, shards, "previous").unwrap());
        let slots: Vec<u16> = entry["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| u16::try_from(s.as_u64().unwrap()).unwrap())
            .collect();
        let result = plan(&PlanRequest {
            namespace: entry["namespace"].as_str().unwrap(),
            service: entry["service"].as_str().unwrap(),
            shards,
            vnodes: u32::try_from(entry["vnodes"].as_u64().unwrap()).unwrap(),
            previous: previous.as_ref(),
            slots: &slots,
            max_moves: entry["max_moves"]
                .as_u64()
                .and_then(|m| std::num::NonZeroU32::new(u32::try_from(m).unwrap())),
        })
        .unwrap();
        let expected =
            Assignment::from_base64(entry["expected"].as_str().unwrap(), shards, "expected")
                .unwrap();
        assert_eq!(result.assignment, expected, "{name}");
        assert_eq!(
            u64::from(result.moved),
            entry["moved"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            u64::from(result.remaining),
            entry["remaining"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn committed_file_is_what_the_generator_writes() {
    assert_eq!(
        load(),
        generate(),
        "sdk/testdata/ring-vectors.json is stale: regenerate it (see this file's docs) and review the diff"
    );
}

/// The example of `docs/ring-format.md` §8 is a valid document and routes as
/// the text says.
#[test]
fn format_doc_example_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ring-format.md");
    let text = std::fs::read_to_string(path).unwrap();
    let section = text.find("## 8. Example").unwrap();
    let start = section + text[section..].find("```json\n").unwrap() + "```json\n".len();
    let end = start + text[start..].find("```").unwrap();
    let ring = RingDocument::from_json(&text.as_bytes()[start..end]).unwrap();
    assert_eq!(ring.version(), 42);
    assert_eq!(ring.current().as_slice(), &[0, 1, 2, 0, 1, 2, 0, 1]);
    assert_eq!(ring.target().unwrap().as_slice(), &[0, 1, 2, 0, 1, 2, 0, 2]);
    assert_eq!(hash_key(b"session-1"), 0xc07e_a649_48c9_a305);
    assert_eq!(ring.shard_of(b"session-1"), 6);
    let owner = ring.owner(b"session-1");
    assert_eq!(owner.pod.name, "chat-0-k2x7p");
    assert_eq!(owner.pod.address.to_string(), "10.244.0.11:8080");
    assert_eq!(
        ring.slot(1).unwrap().successor.as_ref().unwrap().name,
        "chat-1-z5r9t"
    );
}
