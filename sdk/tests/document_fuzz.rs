//! Property tests of the ring document reader against hostile input: the
//! parser never panics on arbitrary bytes or on mutated valid documents,
//! every document it accepts re-encodes to itself, and a ring source fed
//! such input keeps its last good ring unless it got a valid, newer one.
//!
//! The number of cases per property is `LOCUS_FUZZ_CASES` (default 4096);
//! each property counts the cases it ran and prints the count, so a run
//! records its iterations: `cargo test -p locus --test document_fuzz --
//! --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::sync::atomic::{AtomicU64, Ordering};

use locus::StaticRingSource;
use locus::ring::{
    Assignment, MAX_VERSION, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState,
    Transition,
};
use locus::source::RingSource;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

thread_local! {
    /// Documents the reader accepted on this thread (each test runs on one).
    static ACCEPTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn cases() -> u32 {
    std::env::var("LOCUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

/// Runs `strategy` through `test` for the configured number of cases and
/// reports how many ran.
fn run<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let ran = AtomicU64::new(0);
    let accepted_before = ACCEPTED.with(std::cell::Cell::get);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |value| {
            ran.fetch_add(1, Ordering::Relaxed);
            test(value)
        })
        .unwrap();
    let ran = ran.into_inner();
    let accepted = ACCEPTED.with(std::cell::Cell::get) - accepted_before;
    eprintln!("{name}: {ran} cases, {accepted} documents accepted by the reader");
    assert!(ran >= u64::from(cases()), "{name} ran only {ran} cases");
}

fn pod(slot: u16, role: &str, host: u8) -> Pod {
    Pod {
        name: format!("svc-{slot}-{role}"),
        uid: format!("uid-{slot}-{role}"),
        address: format!("10.0.{slot}.{host}:8080").parse().unwrap(),
    }
}

/// Valid rings: 1–8 slots, 1–256 shards, any phase, handover pods where
/// the phase allows them, any slot states, any valid version.
fn valid_ring() -> impl Strategy<Value = Ring> {
    (1u16..=8, 0u32..=8, 0u8..3, 1..=MAX_VERSION)
        .prop_flat_map(|(slots, bits, phase, version)| {
            let shards = 1usize << bits;
            (
                Just((slots, bits, phase, version)),
                proptest::collection::vec(0..slots, shards),
                proptest::collection::vec(0..slots, shards),
                proptest::collection::vec((0u8..5, any::<bool>()), usize::from(slots)),
            )
        })
        .prop_map(|((slots, bits, phase, version), current, other, states)| {
            let shards = ShardCount::new(1 << bits).unwrap();
            let transition = match phase {
                0 => Transition::Stable,
                1 => Transition::Warm {
                    target: Assignment::new(other).unwrap(),
                },
                _ => Transition::Switch {
                    previous: Assignment::new(other).unwrap(),
                },
            };
            let slots = (0..slots)
                .zip(states)
                .map(|(index, (state, handover))| Slot {
                    index,
                    pod: pod(index, "a", 1),
                    state: [
                        SlotState::Active,
                        SlotState::Joining,
                        SlotState::Leaving,
                        SlotState::Draining,
                        SlotState::Unavailable,
                    ][usize::from(state)],
                    successor: (handover && phase == 1).then(|| pod(index, "b", 2)),
                    predecessor: (handover && phase == 2).then(|| pod(index, "c", 3)),
                })
                .collect();
            Ring::new(RingParts {
                namespace: "default".into(),
                service: "svc".into(),
                version,
                shards,
                vnodes: 16,
                slots,
                current: Assignment::new(current).unwrap(),
                transition,
            })
            .unwrap()
        })
}

/// A byte-level mutation of a document.
#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<usize>().prop_map(ByteEdit::Delete),
        any::<usize>().prop_map(ByteEdit::Truncate),
    ]
}

fn apply_bytes(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            ByteEdit::Flip(i, b) => {
                if let Some(byte) = bytes.get_mut(i % len) {
                    *byte ^= b | 1;
                }
            }
            ByteEdit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            ByteEdit::Delete(i) => {
                if !bytes.is_empty() {
                    bytes.remove(i % len);
                }
            }
            ByteEdit::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

/// JSON values a field may be replaced with: the wrong types, boundary
/// numbers, huge and hostile strings.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("A".repeat(100_000))),
        Just(Value::from("=====")),
        Just(Value::from("[::1]:0")),
        Just(Value::from("stable")),
        Just(Value::from("warm")),
        Just(Value::from("switch")),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([{"index": 0}])),
    ]
}

/// A structural mutation of a document: replace or remove a field (at the
/// top level, in a slot or in a pod), or add an unknown one.
#[derive(Debug, Clone)]
enum JsonEdit {
    Replace(Vec<usize>, Value),
    Remove(Vec<usize>),
    AddUnknown(Vec<usize>),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let path = proptest::collection::vec(any::<usize>(), 1..4);
    prop_oneof![
        (path.clone(), hostile_value()).prop_map(|(p, v)| JsonEdit::Replace(p, v)),
        path.clone().prop_map(JsonEdit::Remove),
        path.prop_map(JsonEdit::AddUnknown),
    ]
}

/// Follows `path` (each step picks a child by index modulo the number of
/// children) and edits the value found there.
fn apply_json(value: &mut Value, path: &[usize], edit: &JsonEdit) {
    let (step, rest) = (path[0], &path[1..]);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(step % map.len()).unwrap().clone();
            let descend =
                !rest.is_empty() && matches!(map[&key], Value::Object(_) | Value::Array(_));
            if descend {
                apply_json(map.get_mut(&key).unwrap(), rest, edit);
                return;
            }
            match edit {
                JsonEdit::Replace(_, v) => {
                    map.insert(key, v.clone());
                }
                JsonEdit::Remove(_) => {
                    map.remove(&key);
                }
                JsonEdit::AddUnknown(_) => {
                    map.insert("surprise".into(), Value::from(1));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = step % items.len();
            if rest.is_empty() {
                match edit {
                    JsonEdit::Replace(_, v) => items[i] = v.clone(),
                    JsonEdit::Remove(_) => {
                        items.remove(i);
                    }
                    JsonEdit::AddUnknown(_) => items.push(items[i].clone()),
                }
            } else {
                apply_json(&mut items[i], rest, edit);
            }
        }
        _ => {}
    }
}

/// Whatever the reader says about `bytes`, it says it without panicking,
/// and if it accepts them the ring re-encodes to a document that reads back
/// as the same ring.
fn check_reader(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(ring) = RingDocument::from_json(bytes) {
        ACCEPTED.with(|n| n.set(n.get() + 1));
        let again = RingDocument::to_json(&ring).unwrap();
        prop_assert_eq!(RingDocument::from_json(&again).unwrap(), ring);
    }
    Ok(())
}

#[test]
fn arbitrary_bytes_never_panic_the_reader() {
    run(
        "arbitrary bytes",
        proptest::collection::vec(any::<u8>(), 0..2048),
        |bytes| check_reader(&bytes),
    );
}

#[test]
fn json_shaped_garbage_never_panics_the_reader() {
    // Starts with `{"schema": 1,` so the reader gets past the schema probe.
    run(
        "json-shaped garbage",
        "\\{\"schema\": ?1, ?[ -~]{0,300}",
        |text| check_reader(text.as_bytes()),
    );
}

#[test]
fn byte_mutations_of_valid_documents_never_panic_the_reader() {
    run(
        "byte mutations",
        (valid_ring(), proptest::collection::vec(byte_edit(), 1..8)),
        |(ring, edits)| {
            let bytes = RingDocument::to_json(&ring).unwrap();
            check_reader(&apply_bytes(bytes, &edits))
        },
    );
}

#[test]
fn field_mutations_of_valid_documents_never_panic_the_reader() {
    run(
        "field mutations",
        (valid_ring(), proptest::collection::vec(json_edit(), 1..4)),
        |(ring, edits)| {
            let mut doc: Value =
                serde_json::from_slice(&RingDocument::to_json(&ring).unwrap()).unwrap();
            for edit in &edits {
                let (JsonEdit::Replace(path, _)
                | JsonEdit::Remove(path)
                | JsonEdit::AddUnknown(path)) = edit;
                apply_json(&mut doc, path, edit);
            }
            check_reader(&serde_json::to_vec(&doc).unwrap())
        },
    );
}

#[test]
fn a_source_fed_mutated_documents_keeps_its_last_good_ring() {
    run(
        "source under mutations",
        (valid_ring(), proptest::collection::vec(byte_edit(), 1..6)),
        |(ring, edits)| {
            let held = ring.version();
            let source = StaticRingSource::with_ring(ring.clone());
            let watch = source.watch();
            let mutated = apply_bytes(RingDocument::to_json(&ring).unwrap(), &edits);
            let parsed = RingDocument::from_json(&mutated);
            if parsed.is_ok() {
                ACCEPTED.with(|n| n.set(n.get() + 1));
            }
            let published = source.publish_document(&mutated);
            match parsed {
                // A valid, newer ring is taken.
                Ok(new) if new.version() > held => {
                    prop_assert_eq!(published.unwrap(), new.version());
                    let now = watch.latest().unwrap();
                    prop_assert_eq!(now.as_ref(), &new);
                }
                // Anything else leaves the held ring in place.
                _ => {
                    prop_assert!(published.is_err());
                    let now = watch.latest().unwrap();
                    prop_assert_eq!(now.as_ref(), &ring);
                }
            }
            Ok(())
        },
    );
}
