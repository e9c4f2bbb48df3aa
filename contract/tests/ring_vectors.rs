//! Checks the committed test vectors `contract/testdata/ring-vectors.json`, which
//! let another language verify that it hashes, shards, routes and plans
//! exactly as this crate does.
//!
//! Regenerate the file (only when the format or the planner changes on
//! purpose, with an ADR) with:
//!
//! ```text
//! cargo test -p locus-contract --test ring_vectors -- --ignored regenerate_vectors
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::fmt::Write as _;
use std::path::PathBuf;

use locus_contract::ring::{
    Assignment, MAX_VERSION, Plan, PlanRequest, Pod, Ring, RingDocument, RingParts, ShardCount,
    Slot, SlotRing, SlotState, Transition, hash_key, plan,
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
    replan(namespace, service, shards, vnodes, None, slots)
}

/// The planner's table for `slots`, moving from `previous` if given.
fn replan(
    namespace: &'static str,
    service: &'static str,
    shards: u32,
    vnodes: u32,
    previous: Option<&Assignment>,
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
        previous,
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
        let target = replan("default", "cart", 16, 32, Some(&current), &[0, 1, 2, 3, 4]);
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
        let current = replan("shop", "orders", 256, 64, Some(&previous), &[0, 1, 2]);
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
    // Two shards over two slots with IPv6 pod addresses; slot 1's pod is not Ready (`Wait`).
    {
        let mut slots: Vec<Slot> = (0..2).map(|i| slot("kv", i, SlotState::Active)).collect();
        slots[0].pod.address = "[fd00::a]:8080".parse().unwrap();
        slots[1].pod.address = "[2001:db8:0:1::1b]:9090".parse().unwrap();
        slots[1].state = SlotState::Unavailable;
        let mut p = parts(
            "kv",
            2,
            8,
            slots,
            fresh("default", "kv", 2, 8, &[0, 1]),
            Transition::Stable,
        );
        p.version = 5;
        rings.push(("s2-n2-ipv6-unavailable", Ring::new(p).unwrap()));
    }
    // 32 shards, shrinking from 4 to 3 slots: warm phase, slot 3 leaving.
    {
        let current = fresh("default", "cart", 32, 16, &[0, 1, 2, 3]);
        let target = replan("default", "cart", 32, 16, Some(&current), &[0, 1, 2]);
        let mut slots: Vec<Slot> = (0..3).map(|i| slot("cart", i, SlotState::Active)).collect();
        slots.push(slot("cart", 3, SlotState::Leaving));
        let mut p = parts("cart", 32, 16, slots, current, Transition::Warm { target });
        p.version = 9;
        rings.push(("s32-n4-to-3-warm-leaving", Ring::new(p).unwrap()));
    }
    // The largest shard count, 65 536, over 3 slots.
    {
        let mut p = parts(
            "big",
            65_536,
            16,
            (0..3).map(|i| slot("big", i, SlotState::Active)).collect(),
            fresh("default", "big", 65_536, 16, &[0, 1, 2]),
            Transition::Stable,
        );
        p.version = 2;
        rings.push(("s65536-n3-stable", Ring::new(p).unwrap()));
    }
    // `version` = 2^53 - 1: the largest accepted (`MAX_VERSION`).
    {
        let mut p = parts(
            "chat",
            4,
            16,
            (0..2).map(|i| slot("chat", i, SlotState::Active)).collect(),
            fresh("default", "chat", 4, 16, &[0, 1]),
            Transition::Stable,
        );
        p.version = MAX_VERSION;
        rings.push(("s4-n2-version-2p53-minus-1", Ring::new(p).unwrap()));
    }
    rings
}

/// A ring vector whose document is not the canonical encoding: optional
/// fields written as JSON `null`, which reads exactly as an absent field.
fn null_fields_vector() -> (&'static str, Ring, Value) {
    let (_, ring) = rings()
        .into_iter()
        .find(|(name, _)| *name == "s8-n3-stable")
        .unwrap();
    let mut document: Value =
        serde_json::from_slice(&RingDocument::to_json(&ring).unwrap()).unwrap();
    document["target"] = Value::Null;
    document["previous"] = Value::Null;
    document["slots"][0]["successor"] = Value::Null;
    document["slots"][0]["predecessor"] = Value::Null;
    ("s8-n3-stable-null-optional-fields", ring, document)
}

/// The valid document the invalid vectors break: §8 of the format, with
/// 8 shards over 3 slots, phase `warm`.
fn invalid_base() -> Value {
    let pod = |i: u16| {
        json!({"name": format!("chat-{i}-abcde"), "uid": format!("uid-{i}"),
               "address": format!("10.0.0.{}:8080", i + 1)})
    };
    json!({
        "schema": 1,
        "namespace": "default",
        "service": "chat",
        "version": 42,
        "hash": {"algorithm": "xxh3-64", "seed": 0},
        "shards": 8,
        "vnodes": 16,
        "phase": "warm",
        "slots": (0..3).map(|i| json!({"index": i, "state": "active", "pod": pod(i)})).collect::<Vec<_>>(),
        "current": "AAABAAIAAAABAAIAAAABAA==",
        "target": "AAABAAIAAAABAAIAAAACAA==",
    })
}

/// Breaks one rule of [`invalid_base`].
type Mutation = fn(&mut Value);

/// One invalid document per validation rule: (rule id, the rule it breaks,
/// `RingError::metric_label` of the refusal, a part of the Rust message, how
/// the valid document is broken).
#[allow(clippy::too_many_lines, reason = "one entry per validation rule")]
fn invalid_vectors() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Mutation,
)> {
    fn to_switch(d: &mut Value) {
        d["phase"] = json!("switch");
        d["previous"] = d["target"].take();
        d.as_object_mut().unwrap().remove("target");
    }
    fn to_stable(d: &mut Value) {
        d["phase"] = json!("stable");
        d.as_object_mut().unwrap().remove("target");
    }
    vec![
        (
            "not-an-object",
            "the document is a JSON object",
            "malformed",
            "ring document is malformed",
            |d| *d = json!([1, 2, 3]),
        ),
        (
            "schema-missing",
            "`schema` is required",
            "malformed",
            "missing field `schema`",
            |d| {
                d.as_object_mut().unwrap().remove("schema");
            },
        ),
        (
            "schema-unsupported",
            "`schema` must be 1, checked before any other field (the unknown field here is not reported)",
            "schema",
            "schema 2 is not supported",
            |d| {
                d["schema"] = json!(2);
                d["added_in_schema_2"] = json!(true);
            },
        ),
        (
            "unknown-field",
            "no unknown field at the top level",
            "malformed",
            "unknown field `extra`",
            |d| d["extra"] = json!(1),
        ),
        (
            "unknown-field-nested",
            "no unknown field anywhere (here in a pod)",
            "malformed",
            "unknown field `port`",
            |d| d["slots"][0]["pod"]["port"] = json!(8080),
        ),
        (
            "missing-field",
            "every required field is present",
            "malformed",
            "missing field `current`",
            |d| {
                d.as_object_mut().unwrap().remove("current");
            },
        ),
        (
            "required-field-null",
            "a required field may not be `null` (only optional ones may)",
            "malformed",
            "invalid type: null",
            |d| d["current"] = Value::Null,
        ),
        (
            "version-zero",
            "`version` is at least 1",
            "version",
            "ring version 0 is invalid",
            |d| d["version"] = json!(0),
        ),
        (
            "version-too-large",
            "`version` is at most 2^53 - 1, the largest integer a JSON reader parsing numbers as doubles reads exactly",
            "version",
            "ring version 9007199254740992 is invalid",
            |d| d["version"] = json!(1_u64 << 53),
        ),
        (
            "version-max-u64",
            "`version` is at most 2^53 - 1, even when it fits an unsigned 64-bit integer",
            "version",
            "ring version 18446744073709551615 is invalid",
            |d| d["version"] = json!(u64::MAX),
        ),
        (
            "version-negative",
            "`version` is a non-negative integer",
            "malformed",
            "invalid value: integer `-1`",
            |d| d["version"] = json!(-1),
        ),
        (
            "version-fraction",
            "`version` is an integer, not a fraction",
            "malformed",
            "invalid type: floating point",
            |d| d["version"] = json!(1.5),
        ),
        (
            "version-integral-float",
            "`version` is written as an integer, not as a number with a fraction part",
            "malformed",
            "invalid type: floating point `42.0`",
            |d| d["version"] = json!(42.0),
        ),
        (
            "version-string",
            "`version` is a JSON number, not a string",
            "malformed",
            "invalid type: string",
            |d| d["version"] = json!("42"),
        ),
        (
            "hash-algorithm",
            "`hash.algorithm` is `xxh3-64`",
            "hash",
            "ring hash `murmur3` with seed 0 is not supported",
            |d| d["hash"]["algorithm"] = json!("murmur3"),
        ),
        (
            "hash-seed",
            "`hash.seed` is 0",
            "hash",
            "ring hash `xxh3-64` with seed 7 is not supported",
            |d| d["hash"]["seed"] = json!(7),
        ),
        (
            "shards-not-power-of-two",
            "`shards` is a power of two",
            "shards",
            "shard count 12 is invalid",
            |d| d["shards"] = json!(12),
        ),
        (
            "shards-zero",
            "`shards` is at least 1",
            "shards",
            "shard count 0 is invalid",
            |d| d["shards"] = json!(0),
        ),
        (
            "shards-too-large",
            "`shards` is at most 65536",
            "shards",
            "shard count 131072 is invalid",
            |d| d["shards"] = json!(131_072),
        ),
        (
            "vnodes-zero",
            "`vnodes` is at least 1",
            "vnodes",
            "vnodes 0 is invalid",
            |d| d["vnodes"] = json!(0),
        ),
        (
            "vnodes-too-large",
            "`vnodes` is at most 1024",
            "vnodes",
            "vnodes 1025 is invalid",
            |d| d["vnodes"] = json!(1025),
        ),
        (
            "namespace-empty",
            "`namespace` is 1..=253 bytes",
            "name",
            "namespace is empty",
            |d| d["namespace"] = json!(""),
        ),
        (
            "service-too-long",
            "`service` is 1..=253 bytes",
            "name",
            "service is 254 bytes long",
            |d| d["service"] = json!("x".repeat(254)),
        ),
        (
            "pod-name-empty",
            "a pod `name` is 1..=253 bytes",
            "name",
            "slot 2 pod name is empty",
            |d| d["slots"][2]["pod"]["name"] = json!(""),
        ),
        (
            "pod-uid-too-long",
            "a pod `uid` is 1..=128 bytes",
            "name",
            "slot 0 pod uid is 129 bytes long",
            |d| d["slots"][0]["pod"]["uid"] = json!("u".repeat(129)),
        ),
        (
            "successor-name-empty",
            "the bounds of pod names hold for `successor` pods too",
            "name",
            "slot 1 successor name is empty",
            |d| {
                d["slots"][1]["successor"] =
                    json!({"name": "", "uid": "u", "address": "10.0.0.9:8080"});
            },
        ),
        (
            "no-slots",
            "there is at least one slot",
            "slots",
            "ring has no slots",
            |d| d["slots"] = json!([]),
        ),
        (
            "slot-index-mismatch",
            "each slot's `index` equals its position in `slots`",
            "slots",
            "slot at position 1 declares index 2",
            |d| d["slots"][1]["index"] = json!(2),
        ),
        (
            "slot-index-duplicated",
            "slot indices are not repeated (each equals its position)",
            "slots",
            "slot at position 1 declares index 0",
            |d| d["slots"][1]["index"] = json!(0),
        ),
        (
            "slot-index-out-of-range",
            "a slot `index` is an unsigned 16-bit integer",
            "malformed",
            "invalid value: integer `65536`",
            |d| d["slots"][1]["index"] = json!(65_536),
        ),
        (
            "slot-state-unknown",
            "a slot `state` is one of the five states",
            "malformed",
            "unknown variant `gone`",
            |d| d["slots"][0]["state"] = json!("gone"),
        ),
        (
            "address-no-port",
            "a pod `address` is `ip:port`",
            "address",
            "slot 1 pod address `10.0.0.2` is not a valid socket address",
            |d| d["slots"][1]["pod"]["address"] = json!("10.0.0.2"),
        ),
        (
            "address-host-name",
            "a pod `address` is an IP address, never a host name",
            "address",
            "`chat-1.chat:8080` is not a valid socket address",
            |d| d["slots"][1]["pod"]["address"] = json!("chat-1.chat:8080"),
        ),
        (
            "address-ipv6-unbracketed",
            "an IPv6 address is written in brackets",
            "address",
            "`fd00::2:8080` is not a valid socket address",
            |d| d["slots"][1]["pod"]["address"] = json!("fd00::2:8080"),
        ),
        (
            "address-port-zero",
            "the port is not 0",
            "address",
            "`10.0.0.2:0` is not a valid socket address (ip:port, port 1-65535): port 0",
            |d| d["slots"][1]["pod"]["address"] = json!("10.0.0.2:0"),
        ),
        (
            "address-port-too-large",
            "the port is at most 65535",
            "address",
            "`10.0.0.2:65536` is not a valid socket address",
            |d| d["slots"][1]["pod"]["address"] = json!("10.0.0.2:65536"),
        ),
        (
            "successor-address",
            "`successor` addresses follow the same rule",
            "address",
            "slot 1 successor address `1.2.3.4` is not a valid socket address",
            |d| d["slots"][1]["successor"] = json!({"name": "n", "uid": "u", "address": "1.2.3.4"}),
        ),
        (
            "table-alphabet",
            "a table is standard base64 (`+` `/`, no other character)",
            "table",
            "character outside the base64 alphabet",
            |d| d["current"] = json!("AAABAAIAAAABAAIAAAAB-A=="),
        ),
        (
            "table-length-not-multiple-of-4",
            "the base64 text is padded to a multiple of 4 characters",
            "table",
            "length is not a multiple of 4",
            |d| d["current"] = json!("AAABAAIAAAABAAIAAAABAA"),
        ),
        (
            "table-padding-bits",
            "the unused bits of the last symbol are zero (canonical base64)",
            "table",
            "non-zero bits in the padding",
            |d| d["current"] = json!("AAABAAIAAAABAAIAAAABAB=="),
        ),
        (
            "table-odd-bytes",
            "a table decodes to an even number of bytes",
            "table",
            "odd number of bytes",
            |d| d["current"] = json!("AAABAAIAAAABAAIAAAABAAA="),
        ),
        (
            "table-length-mismatch",
            "each table has exactly `shards` entries",
            "table",
            "table `current` has 8 entries, expected 16",
            |d| d["shards"] = json!(16),
        ),
        (
            "target-length-mismatch",
            "the `target` table has exactly `shards` entries",
            "table",
            "table `target` has 2 entries, expected 8",
            |d| d["target"] = json!("AAABAA=="),
        ),
        (
            "current-missing-slot",
            "every `current` entry names an existing slot",
            "table",
            "table `current` assigns shard 2 to slot 2, but the ring has only 2 slots",
            |d| {
                d["slots"].as_array_mut().unwrap().pop();
            },
        ),
        (
            "target-missing-slot",
            "every `target` entry names an existing slot",
            "table",
            "table `target` assigns shard 7 to slot 9",
            |d| d["target"] = json!("AAABAAIAAAABAAIAAAAJAA=="),
        ),
        (
            "previous-missing-slot",
            "every `previous` entry names an existing slot",
            "table",
            "table `previous` assigns shard 7 to slot 3",
            |d| {
                to_switch(d);
                d["previous"] = json!("AAABAAIAAAABAAIAAAADAA==");
            },
        ),
        (
            "phase-unknown",
            "`phase` is `stable`, `warm` or `switch`",
            "malformed",
            "unknown variant `settle`",
            |d| d["phase"] = json!("settle"),
        ),
        (
            "stable-with-target",
            "phase `stable` carries no `target`",
            "phase",
            "phase `stable` must carry neither a `target` nor a `previous` table",
            |d| d["phase"] = json!("stable"),
        ),
        (
            "stable-with-previous",
            "phase `stable` carries no `previous`",
            "phase",
            "phase `stable` must carry neither a `target` nor a `previous` table",
            |d| {
                to_stable(d);
                d["previous"] = d["current"].clone();
            },
        ),
        (
            "warm-without-target",
            "phase `warm` carries a `target`",
            "phase",
            "phase `warm` requires a `target` table",
            |d| {
                d.as_object_mut().unwrap().remove("target");
            },
        ),
        (
            "warm-with-previous",
            "phase `warm` carries no `previous`",
            "phase",
            "phase `warm` must not carry a `previous` table",
            |d| d["previous"] = d["current"].clone(),
        ),
        (
            "switch-without-previous",
            "phase `switch` carries a `previous`",
            "phase",
            "phase `switch` requires a `previous` table",
            |d| d["phase"] = json!("switch"),
        ),
        (
            "switch-with-target",
            "phase `switch` carries no `target`",
            "phase",
            "phase `switch` must not carry a `target` table",
            |d| {
                to_switch(d);
                d["target"] = d["current"].clone();
            },
        ),
        (
            "successor-out-of-phase",
            "`successor` only in phase `warm`",
            "phase",
            "slot 0 has a `successor` pod, which is only allowed in phase `warm`",
            |d| {
                to_switch(d);
                d["slots"][0]["successor"] =
                    json!({"name": "n", "uid": "u", "address": "10.0.0.9:8080"});
            },
        ),
        (
            "predecessor-out-of-phase",
            "`predecessor` only in phase `switch`",
            "phase",
            "slot 1 has a `predecessor` pod, which is only allowed in phase `switch`",
            |d| {
                d["slots"][1]["predecessor"] =
                    json!({"name": "n", "uid": "u", "address": "10.0.0.9:8080"});
            },
        ),
    ]
}

/// Shard counts whose boundaries the `shard_bounds` vectors check.
const BOUND_SHARDS: [u32; 5] = [1, 2, 8, 4096, 65_536];

/// Hash values at and around shard start points, as `(shards, hash)`: a hash
/// equal to a shard's start belongs to that shard, one below it to the
/// previous shard. (No key is known whose hash is exactly a start: that needs
/// `64 - log2 S` zero bits.)
fn bound_hashes() -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for shards in BOUND_SHARDS {
        let s = ShardCount::new(shards).unwrap();
        let mut hashes = vec![0, 1, u64::MAX, u64::MAX - 1];
        for shard in [1, shards / 2, shards - 1]
            .into_iter()
            .filter(|&i| i < shards)
        {
            let start = s.start(shard);
            hashes.extend([start, start.wrapping_sub(1), start.wrapping_add(1)]);
        }
        hashes.sort_unstable();
        hashes.dedup();
        out.extend(hashes.into_iter().map(|h| (shards, h)));
    }
    out
}

/// Preference walks: (namespace, service, slots, vnodes, points).
/// A planner ring (namespace, service, slots, vnodes) and the points walked from.
type PreferenceInput = (&'static str, &'static str, Vec<u16>, u32, Vec<u64>);

fn preference_inputs() -> Vec<PreferenceInput> {
    let (ns, svc, slots, vnodes) = ("default", "chat", vec![0u16, 1, 2, 3], 4);
    let token = locus_contract::ring::token_point(ns, svc, 2, 0);
    let s8 = ShardCount::new(8).unwrap();
    let mut points = vec![0, u64::MAX, token, token - 1, token + 1];
    points.extend((1..8).map(|i| s8.start(i)));
    let sparse = (
        "shop",
        "orders",
        vec![1u16, 4, 9],
        2,
        vec![0, 1 << 63, u64::MAX],
    );
    vec![(ns, svc, slots, vnodes, points), sparse]
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

#[allow(clippy::too_many_lines, reason = "one block per vector section")]
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
                   "point": hash_text(locus_contract::ring::token_point(ns, svc, slot, index))})
    })
    .collect();
    let mut documents: Vec<(&str, Ring, Value, bool)> = rings()
        .into_iter()
        .map(|(name, ring)| {
            let document = serde_json::from_slice(&RingDocument::to_json(&ring).unwrap()).unwrap();
            (name, ring, document, true)
        })
        .collect();
    let (name, ring, document) = null_fields_vector();
    documents.push((name, ring, document, false));
    let rings: Vec<Value> = documents
        .iter()
        .map(|(name, ring, document, canonical)| {
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
            let mut entry = json!({"name": name, "document": document, "keys": keys});
            if !canonical {
                entry["canonical"] = json!(false);
            }
            entry
        })
        .collect();
    let invalid: Vec<Value> = invalid_vectors()
        .into_iter()
        .map(|(rule, reason, label, message, mutate)| {
            let mut document = invalid_base();
            mutate(&mut document);
            json!({"rule": rule, "reason": reason, "expected": "rejected",
                   "error_label": label, "error_contains": message, "document": document})
        })
        .collect();
    let shard_bounds: Vec<Value> = bound_hashes()
        .into_iter()
        .map(|(shards, hash)| {
            json!({"shards": shards, "hash": hash_text(hash),
                   "shard": ShardCount::new(shards).unwrap().shard_of_hash(hash)})
        })
        .collect();
    let shard_starts: Vec<Value> = BOUND_SHARDS
        .iter()
        .flat_map(|&shards| {
            let s = ShardCount::new(shards).unwrap();
            let mut list: Vec<u32> = [0, 1, shards / 2, shards - 1]
                .into_iter()
                .filter(|&shard| shard < shards)
                .collect();
            list.sort_unstable();
            list.dedup();
            list.into_iter()
                .map(move |shard| json!({"shards": shards, "shard": shard, "start": hash_text(s.start(shard))}))
        })
        .collect();
    let preferences: Vec<Value> = preference_inputs()
        .into_iter()
        .flat_map(|(ns, svc, slots, vnodes, points)| {
            let ring = SlotRing::new(ns, svc, &slots, vnodes);
            let mut tokens: Vec<(u64, u16, u32)> = slots
                .iter()
                .flat_map(|&s| (0..vnodes).map(move |i| (locus_contract::ring::token_point(ns, svc, s, i), s, i)))
                .collect();
            tokens.sort_unstable();
            let tokens: Vec<Value> = tokens
                .into_iter()
                .map(|(point, slot, index)| json!({"point": hash_text(point), "slot": slot, "index": index}))
                .collect();
            let walks: Vec<Value> = points
                .into_iter()
                .map(|point| {
                    json!({"point": hash_text(point),
                           "preferences": ring.preferences(point).collect::<Vec<u16>>()})
                })
                .collect();
            [json!({"namespace": ns, "service": svc, "slots": slots, "vnodes": vnodes,
                    "tokens": tokens, "walks": walks})]
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
        "shard_bounds": shard_bounds,
        "shard_starts": shard_starts,
        "rings": rings,
        "invalid": invalid,
        "preferences": preferences,
        "plans": plans,
    })
}

#[test]
#[ignore = "writes contract/testdata/ring-vectors.json; run on purpose"]
fn regenerate_vectors() {
    let mut text = serde_json::to_string_pretty(&generate()).unwrap();
    text.push('\n');
    std::fs::write(vectors_path(), text).unwrap();
}

fn load() -> Value {
    let text = std::fs::read_to_string(vectors_path())
        .expect("contract/testdata/ring-vectors.json exists");
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
        let point = locus_contract::ring::token_point(
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
    let mut states = std::collections::HashSet::new();
    let mut shard_counts = std::collections::HashSet::new();
    let mut ipv6 = false;
    let mut max_version = 0;
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
        // The document is the canonical encoding of the ring, unless marked otherwise.
        let again: Value = serde_json::from_slice(&RingDocument::to_json(&ring).unwrap()).unwrap();
        if entry["canonical"] == false {
            assert_ne!(again, entry["document"], "{name}");
        } else {
            assert_eq!(again, entry["document"], "{name}");
        }
        shard_counts.insert(ring.shards().get());
        for slot in ring.slots() {
            states.insert(slot.state);
            ipv6 |= slot.pod.address.is_ipv6();
        }
        max_version = max_version.max(ring.version());
    }
    assert_eq!(phases.len(), 3, "vectors cover stable, warm and switch");
    assert_eq!(
        states.len(),
        5,
        "vectors cover every slot state: {states:?}"
    );
    for shards in [1, 2, 8, 4096, 65_536] {
        assert!(shard_counts.contains(&shards), "vectors cover S = {shards}");
    }
    assert!(ipv6, "vectors cover IPv6 pod addresses");
    assert_eq!(max_version, MAX_VERSION, "vectors cover version 2^53 - 1");
}

#[test]
fn invalid_documents_are_rejected() {
    let vectors = load();
    let base = serde_json::to_vec(&invalid_base()).unwrap();
    RingDocument::from_json(&base).expect("the document the invalid vectors break is valid");
    let invalid = vectors["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 40);
    let mut rules = std::collections::HashSet::new();
    for entry in invalid {
        let rule = entry["rule"].as_str().unwrap();
        assert!(rules.insert(rule), "rule id {rule} is repeated");
        assert!(!entry["reason"].as_str().unwrap().is_empty(), "{rule}");
        assert_eq!(entry["expected"], "rejected", "{rule}");
        let bytes = serde_json::to_vec(&entry["document"]).unwrap();
        let error = RingDocument::from_json(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{rule}: the invalid document was accepted"));
        assert_eq!(
            error.metric_label(),
            entry["error_label"].as_str().unwrap(),
            "{rule}: {error}"
        );
        let message = error.to_string();
        let expected = entry["error_contains"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{rule}: expected `{expected}` in `{message}`"
        );
    }
}

#[test]
fn shard_bounds_match() {
    let vectors = load();
    for entry in vectors["shard_bounds"].as_array().unwrap() {
        let shards = ShardCount::from_u64(entry["shards"].as_u64().unwrap()).unwrap();
        let hash = parse_hash(&entry["hash"]);
        assert_eq!(
            u64::from(shards.shard_of_hash(hash)),
            entry["shard"].as_u64().unwrap(),
            "S = {} hash {hash:#x}",
            shards.get()
        );
    }
    for entry in vectors["shard_starts"].as_array().unwrap() {
        let shards = ShardCount::from_u64(entry["shards"].as_u64().unwrap()).unwrap();
        let shard = u32::try_from(entry["shard"].as_u64().unwrap()).unwrap();
        let start = parse_hash(&entry["start"]);
        assert_eq!(
            shards.start(shard),
            start,
            "S = {} shard {shard}",
            shards.get()
        );
        assert_eq!(shards.shard_of_hash(start), shard);
    }
}

#[test]
fn preference_walks_match() {
    let vectors = load();
    let entries = vectors["preferences"].as_array().unwrap();
    assert!(!entries.is_empty());
    for entry in entries {
        let (ns, svc) = (
            entry["namespace"].as_str().unwrap(),
            entry["service"].as_str().unwrap(),
        );
        let slots: Vec<u16> = entry["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| u16::try_from(s.as_u64().unwrap()).unwrap())
            .collect();
        let vnodes = u32::try_from(entry["vnodes"].as_u64().unwrap()).unwrap();
        for token in entry["tokens"].as_array().unwrap() {
            let slot = u16::try_from(token["slot"].as_u64().unwrap()).unwrap();
            let index = u32::try_from(token["index"].as_u64().unwrap()).unwrap();
            assert_eq!(
                locus_contract::ring::token_point(ns, svc, slot, index),
                parse_hash(&token["point"])
            );
        }
        let ring = SlotRing::new(ns, svc, &slots, vnodes);
        for walk in entry["walks"].as_array().unwrap() {
            let point = parse_hash(&walk["point"]);
            let expected: Vec<u64> = walk["preferences"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
                .collect();
            let got: Vec<u64> = ring.preferences(point).map(u64::from).collect();
            assert_eq!(got, expected, "{ns}/{svc} point {point:#x}");
        }
    }
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
        "contract/testdata/ring-vectors.json is stale: regenerate it (see this file's docs) and review the diff"
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

/// Rules that `invalid` vectors cannot show, since a JSON value has each field
/// once and keeps no number spelling: a field given twice, and an exponent.
#[test]
fn duplicate_fields_and_exponents_are_refused() {
    let text = serde_json::to_string(&invalid_base()).unwrap();
    for (from, to) in [
        ("\"version\":42", "\"version\":42,\"version\":43"),
        ("\"schema\":1", "\"schema\":1,\"schema\":1"),
        ("\"version\":42", "\"version\":4.2e1"),
        ("\"version\":42", "\"version\":42e0"),
    ] {
        assert!(text.contains(from), "{text}");
        let bad = text.replacen(from, to, 1);
        let error = RingDocument::from_json(bad.as_bytes()).unwrap_err();
        assert_eq!(error.metric_label(), "malformed", "{to}: {error}");
    }
}
