//! The ring document: the JSON the operator writes to `ConfigMap`
//! `<service>-ring`, key `ring.json`, and every router and pod reads.
//!
//! The format is specified in `docs/ring-format.md`. Reading is strict:
//! size is checked before parsing, the schema before the rest, unknown fields
//! are refused, and every rule of [`Ring::new`] applies, so a reader either
//! gets a fully valid [`Ring`] or a [`RingError`] saying what is wrong (and
//! keeps its last good ring).
//!
//! ```
//! use locus_contract::ring::RingDocument;
//!
//! let json = br#"{
//!   "schema": 1, "namespace": "default", "service": "chat", "version": 3,
//!   "hash": {"algorithm": "xxh3-64", "seed": 0},
//!   "shards": 2, "vnodes": 64, "phase": "stable",
//!   "slots": [{"index": 0, "state": "active",
//!              "pod": {"name": "chat-0-a", "uid": "u0", "address": "10.0.0.1:8080"}}],
//!   "current": "AAAAAA=="
//! }"#;
//! let ring = RingDocument::from_json(json).unwrap();
//! assert_eq!(ring.version(), 3);
//! assert_eq!(ring.owner(b"any key").pod.name, "chat-0-a");
//! let again = RingDocument::from_json(&RingDocument::to_json(&ring).unwrap()).unwrap();
//! assert_eq!(again, ring);
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{
    Assignment, HASH_ALGORITHM, HASH_SEED, MAX_DOCUMENT_BYTES, Phase, Pod, Ring, RingError,
    RingParts, ShardCount, Slot, SlotState, Transition,
};

/// The ring document codec (a namespace for its functions and constants).
#[derive(Debug, Clone, Copy)]
pub struct RingDocument;

impl RingDocument {
    /// The schema version this SDK writes and reads.
    pub const SCHEMA: u32 = 1;

    /// The `ConfigMap` key holding the document.
    pub const CONFIG_MAP_KEY: &'static str = "ring.json";

    /// The name of the `ConfigMap` holding the ring of `service`: `<service>-ring`.
    pub fn config_map_name(service: &str) -> String {
        format!("{service}-ring")
    }

    /// Parses and validates a document. Refuses documents larger than
    /// [`MAX_DOCUMENT_BYTES`] before parsing, and unknown schemas before
    /// looking at any other field.
    pub fn from_json(bytes: &[u8]) -> Result<Ring, RingError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(RingError::DocumentTooLarge {
                size: bytes.len(),
                max: MAX_DOCUMENT_BYTES,
            });
        }
        let probe: SchemaProbe = serde_json::from_slice(bytes).map_err(RingError::Json)?;
        if probe.schema != u64::from(Self::SCHEMA) {
            return Err(RingError::UnsupportedSchema {
                found: probe.schema,
                supported: Self::SCHEMA,
            });
        }
        let wire: WireRing = serde_json::from_slice(bytes).map_err(RingError::Json)?;
        wire.into_ring()
    }

    /// Encodes a ring as a document (compact JSON, fields in the documented
    /// order). Fails only if the result exceeds [`MAX_DOCUMENT_BYTES`], which
    /// readers would refuse.
    pub fn to_json(ring: &Ring) -> Result<Vec<u8>, RingError> {
        let bytes = serde_json::to_vec(&WireRing::from_ring(ring)).map_err(RingError::Json)?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(RingError::DocumentTooLarge {
                size: bytes.len(),
                max: MAX_DOCUMENT_BYTES,
            });
        }
        Ok(bytes)
    }
}

#[derive(Deserialize)]
struct SchemaProbe {
    schema: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHash {
    algorithm: String,
    seed: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePod {
    name: String,
    uid: String,
    address: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSlot {
    index: u16,
    state: SlotState,
    pod: WirePod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    successor: Option<WirePod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    predecessor: Option<WirePod>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRing {
    schema: u32,
    namespace: String,
    service: String,
    version: u64,
    hash: WireHash,
    shards: u64,
    vnodes: u64,
    phase: Phase,
    slots: Vec<WireSlot>,
    current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
}

impl WirePod {
    fn from_pod(pod: &Pod) -> Self {
        Self {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            address: pod.address.to_string(),
        }
    }

    fn into_pod(self, slot: u16, role: &str) -> Result<Pod, RingError> {
        let address: SocketAddr = self
            .address
            .parse()
            .map_err(|e: std::net::AddrParseError| RingError::InvalidAddress {
                field: format!("slot {slot} {role} address"),
                address: self.address.clone(),
                reason: e.to_string(),
            })?;
        Ok(Pod {
            name: self.name,
            uid: self.uid,
            address,
        })
    }
}

impl WireRing {
    fn from_ring(ring: &Ring) -> Self {
        let parts = ring.parts();
        Self {
            schema: RingDocument::SCHEMA,
            namespace: parts.namespace.clone(),
            service: parts.service.clone(),
            version: parts.version,
            hash: WireHash {
                algorithm: HASH_ALGORITHM.to_owned(),
                seed: HASH_SEED,
            },
            shards: u64::from(parts.shards.get()),
            vnodes: u64::from(parts.vnodes),
            phase: ring.phase(),
            slots: parts
                .slots
                .iter()
                .map(|slot| WireSlot {
                    index: slot.index,
                    state: slot.state,
                    pod: WirePod::from_pod(&slot.pod),
                    successor: slot.successor.as_ref().map(WirePod::from_pod),
                    predecessor: slot.predecessor.as_ref().map(WirePod::from_pod),
                })
                .collect(),
            current: parts.current.to_base64(),
            target: ring.target().map(Assignment::to_base64),
            previous: ring.previous().map(Assignment::to_base64),
        }
    }

    fn into_ring(self) -> Result<Ring, RingError> {
        if self.hash.algorithm != HASH_ALGORITHM || self.hash.seed != HASH_SEED {
            return Err(RingError::UnsupportedHash {
                algorithm: self.hash.algorithm,
                seed: self.hash.seed,
            });
        }
        let shards = ShardCount::from_u64(self.shards)?;
        let vnodes = u32::try_from(self.vnodes).map_err(|_| RingError::InvalidVnodes {
            vnodes: self.vnodes,
        })?;
        if self.slots.len() > super::MAX_SLOTS {
            return Err(RingError::TooManySlots {
                count: self.slots.len(),
            });
        }
        let current = Assignment::from_base64(&self.current, shards, "current")?;
        let transition = match (self.phase, self.target, self.previous) {
            (Phase::Stable, None, None) => Transition::Stable,
            (Phase::Warm, Some(target), None) => Transition::Warm {
                target: Assignment::from_base64(&target, shards, "target")?,
            },
            (Phase::Switch, None, Some(previous)) => Transition::Switch {
                previous: Assignment::from_base64(&previous, shards, "previous")?,
            },
            (phase, target, previous) => {
                let problem = match phase {
                    Phase::Stable => "must carry neither a `target` nor a `previous` table",
                    Phase::Warm if target.is_none() => "requires a `target` table",
                    Phase::Warm => "must not carry a `previous` table",
                    Phase::Switch if previous.is_none() => "requires a `previous` table",
                    Phase::Switch => "must not carry a `target` table",
                };
                return Err(RingError::PhaseMismatch { phase, problem });
            }
        };
        let slots = self
            .slots
            .into_iter()
            .map(|slot| {
                let index = slot.index;
                Ok(Slot {
                    index,
                    state: slot.state,
                    pod: slot.pod.into_pod(index, "pod")?,
                    successor: slot
                        .successor
                        .map(|p| p.into_pod(index, "successor"))
                        .transpose()?,
                    predecessor: slot
                        .predecessor
                        .map(|p| p.into_pod(index, "predecessor"))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, RingError>>()?;
        Ring::new(RingParts {
            namespace: self.namespace,
            service: self.service,
            version: self.version,
            shards,
            vnodes,
            slots,
            current,
            transition,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::ring::{MAX_DOCUMENT_BYTES, MAX_SLOTS};

    fn pod(i: usize) -> Value {
        json!({"name": format!("chat-{i}-abcde"), "uid": format!("uid-{i}"), "address": format!("10.0.0.{}:8080", i + 1)})
    }

    /// A valid document: 8 shards over 3 slots, phase warm with a target
    /// moving shard 7 to slot 2.
    fn valid() -> Value {
        let current = Assignment::new(vec![0, 1, 2, 0, 1, 2, 0, 1]).unwrap();
        let target = Assignment::new(vec![0, 1, 2, 0, 1, 2, 0, 2]).unwrap();
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
            "current": current.to_base64(),
            "target": target.to_base64(),
        })
    }

    fn parse(doc: &Value) -> Result<Ring, RingError> {
        RingDocument::from_json(&serde_json::to_vec(doc).unwrap())
    }

    fn error(doc: &Value) -> String {
        parse(doc).unwrap_err().to_string()
    }

    #[test]
    fn valid_document_round_trips() {
        let ring = parse(&valid()).unwrap();
        assert_eq!(ring.version(), 42);
        assert_eq!(ring.phase(), Phase::Warm);
        assert_eq!(ring.slots().len(), 3);
        assert_eq!(ring.target().unwrap().slot_of(7), Some(2));
        assert_eq!(
            ring.slot(1).unwrap().pod.address,
            "10.0.0.2:8080".parse().unwrap()
        );
        let bytes = RingDocument::to_json(&ring).unwrap();
        assert_eq!(RingDocument::from_json(&bytes).unwrap(), ring);
        // Fields are written in the documented order.
        let text = String::from_utf8(bytes).unwrap();
        let order: Vec<usize> = [
            "\"schema\"",
            "\"namespace\"",
            "\"version\"",
            "\"hash\"",
            "\"shards\"",
            "\"phase\"",
            "\"slots\"",
            "\"current\"",
            "\"target\"",
        ]
        .iter()
        .map(|f| text.find(f).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn handover_pods_round_trip() {
        let mut doc = valid();
        doc["slots"][1]["successor"] = pod(9);
        let ring = parse(&doc).unwrap();
        assert_eq!(
            ring.slot(1).unwrap().successor.as_ref().unwrap().name,
            "chat-9-abcde"
        );
        assert_eq!(ring.slot_for_pod("chat-9-abcde").unwrap().index, 1);
        let again = RingDocument::from_json(&RingDocument::to_json(&ring).unwrap()).unwrap();
        assert_eq!(again, ring);
        // IPv6 addresses are written and read in brackets.
        let mut doc = valid();
        doc["slots"][0]["pod"]["address"] = json!("[fd00::1]:8080");
        let ring = parse(&doc).unwrap();
        let text = String::from_utf8(RingDocument::to_json(&ring).unwrap()).unwrap();
        assert!(text.contains("\"[fd00::1]:8080\""), "{text}");
    }

    #[test]
    fn size_is_checked_before_parsing() {
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert_eq!(
            RingDocument::from_json(&big).unwrap_err().to_string(),
            format!(
                "ring document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES} bytes",
                MAX_DOCUMENT_BYTES + 1
            )
        );
    }

    #[test]
    fn unknown_schema_is_refused_before_other_fields() {
        let mut doc = valid();
        doc["schema"] = json!(2);
        doc["something_new"] = json!(true);
        assert_eq!(
            error(&doc),
            "ring document schema 2 is not supported (this reader supports schema 1)"
        );
        let mut doc = valid();
        doc.as_object_mut().unwrap().remove("schema");
        assert!(
            error(&doc).contains("missing field `schema`"),
            "{}",
            error(&doc)
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let mut doc = valid();
        doc["extra"] = json!(1);
        assert!(
            error(&doc).contains("unknown field `extra`"),
            "{}",
            error(&doc)
        );
        let mut doc = valid();
        doc["slots"][0]["pod"]["port"] = json!(1);
        assert!(
            error(&doc).contains("unknown field `port`"),
            "{}",
            error(&doc)
        );
        let mut doc = valid();
        doc.as_object_mut().unwrap().remove("current");
        assert!(
            error(&doc).contains("missing field `current`"),
            "{}",
            error(&doc)
        );
        assert!(
            RingDocument::from_json(b"not json")
                .unwrap_err()
                .to_string()
                .starts_with("ring document is malformed")
        );
    }

    /// Breaks one rule of a valid document.
    type Mutation = fn(&mut Value);

    #[test]
    #[allow(clippy::too_many_lines, reason = "one case per validation rule")]
    fn each_rule_has_a_precise_message() {
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |d| d["hash"]["algorithm"] = json!("murmur3"),
                "ring hash `murmur3` with seed 0 is not supported (only `xxh3-64` with seed 0)",
            ),
            (
                |d| d["hash"]["seed"] = json!(7),
                "ring hash `xxh3-64` with seed 7 is not supported (only `xxh3-64` with seed 0)",
            ),
            (
                |d| d["shards"] = json!(12),
                "shard count 12 is invalid: it must be a power of two between 1 and 65536",
            ),
            (
                |d| d["shards"] = json!(131_072),
                "shard count 131072 is invalid: it must be a power of two between 1 and 65536",
            ),
            (
                |d| d["shards"] = json!(0),
                "shard count 0 is invalid: it must be a power of two between 1 and 65536",
            ),
            (
                |d| d["shards"] = json!(16),
                "table `current` has 8 entries, expected 16 (one per shard)",
            ),
            (
                |d| d["vnodes"] = json!(0),
                "vnodes 0 is invalid: it must be between 1 and 1024",
            ),
            (
                |d| d["vnodes"] = json!(5000),
                "vnodes 5000 is invalid: it must be between 1 and 1024",
            ),
            (
                |d| d["version"] = json!(0),
                "ring version 0 is invalid: versions start at 1",
            ),
            (
                |d| d["version"] = json!(1_u64 << 53),
                "ring version 9007199254740992 is invalid: versions end at 9007199254740991 (2^53 - 1)",
            ),
            (|d| d["namespace"] = json!(""), "namespace is empty"),
            (
                |d| d["service"] = json!("x".repeat(254)),
                "service is 254 bytes long, more than the limit of 253",
            ),
            (
                |d| d["slots"] = json!([]),
                "ring has no slots: at least one slot is required",
            ),
            (
                |d| d["slots"][1]["index"] = json!(2),
                "slot at position 1 declares index 2: slots must be listed in index order 0, 1, 2, …",
            ),
            (
                |d| d["slots"][2]["pod"]["name"] = json!(""),
                "slot 2 pod name is empty",
            ),
            (
                |d| d["slots"][0]["pod"]["uid"] = json!("u".repeat(129)),
                "slot 0 pod uid is 129 bytes long, more than the limit of 128",
            ),
            (
                |d| d["slots"][1]["pod"]["address"] = json!("10.0.0.1"),
                "slot 1 pod address `10.0.0.1` is not a valid socket address (ip:port, port 1-65535): invalid socket address syntax",
            ),
            (
                |d| d["slots"][1]["pod"]["address"] = json!("chat-1.chat:8080"),
                "slot 1 pod address `chat-1.chat:8080` is not a valid socket address (ip:port, port 1-65535): invalid socket address syntax",
            ),
            (
                |d| d["slots"][1]["pod"]["address"] = json!("10.0.0.1:0"),
                "slot 1 pod address `10.0.0.1:0` is not a valid socket address (ip:port, port 1-65535): port 0",
            ),
            (
                |d| {
                    d["slots"][1]["successor"] =
                        json!({"name": "n", "uid": "u", "address": "1.2.3.4"});
                },
                "slot 1 successor address `1.2.3.4` is not a valid socket address (ip:port, port 1-65535): invalid socket address syntax",
            ),
            (
                |d| d["slots"][1]["predecessor"] = pod(7),
                "slot 1 has a `predecessor` pod, which is only allowed in phase `switch`",
            ),
            (
                |d| d["current"] = json!("AAE*"),
                "table `current` is not valid base64 of little-endian u16 entries: character outside the base64 alphabet",
            ),
            (
                |d| d["target"] = json!("AAECAw=="),
                "table `target` has 2 entries, expected 8 (one per shard)",
            ),
            (
                |d| {
                    d["slots"].as_array_mut().unwrap().pop();
                },
                "table `current` assigns shard 2 to slot 2, but the ring has only 2 slots (0..2)",
            ),
            (
                |d| {
                    d["target"] = json!(
                        Assignment::new(vec![0, 1, 2, 0, 1, 2, 0, 9])
                            .unwrap()
                            .to_base64()
                    );
                },
                "table `target` assigns shard 7 to slot 9, but the ring has only 3 slots (0..3)",
            ),
            (
                |d| {
                    d.as_object_mut().unwrap().remove("target");
                },
                "phase `warm` requires a `target` table",
            ),
            (
                |d| d["phase"] = json!("stable"),
                "phase `stable` must carry neither a `target` nor a `previous` table",
            ),
            (
                |d| d["phase"] = json!("switch"),
                "phase `switch` requires a `previous` table",
            ),
            (
                |d| {
                    d["previous"] = d["current"].clone();
                },
                "phase `warm` must not carry a `previous` table",
            ),
            (|d| d["phase"] = json!("settle"), "unknown variant `settle`"),
            (
                |d| d["slots"][0]["state"] = json!("gone"),
                "unknown variant `gone`",
            ),
        ];
        for (mutate, expected) in cases {
            let mut doc = valid();
            mutate(&mut doc);
            let got = error(&doc);
            assert!(
                got.contains(expected.trim_end()),
                "expected `{expected}`, got `{got}`"
            );
        }
    }

    #[test]
    fn too_many_slots_is_refused() {
        let mut doc = valid();
        let slot = doc["slots"][0].clone();
        doc["slots"] = Value::Array(vec![slot; MAX_SLOTS + 1]);
        assert_eq!(
            error(&doc),
            format!(
                "ring has {} slots, more than the limit of {MAX_SLOTS}",
                MAX_SLOTS + 1
            )
        );
    }

    #[test]
    fn switch_phase_with_predecessor() {
        let mut doc = valid();
        doc["phase"] = json!("switch");
        doc["previous"] = doc["target"].take();
        doc.as_object_mut().unwrap().remove("target");
        doc["slots"][2]["predecessor"] = pod(5);
        doc["slots"][2]["state"] = json!("active");
        let ring = parse(&doc).unwrap();
        assert_eq!(ring.phase(), Phase::Switch);
        assert!(ring.target().is_none());
        assert_eq!(ring.previous().unwrap().slot_of(7), Some(2));
        assert_eq!(
            ring.slot(2).unwrap().predecessor.as_ref().unwrap().name,
            "chat-5-abcde"
        );
        let mut doc2 = doc.clone();
        doc2["slots"][0]["successor"] = pod(6);
        assert_eq!(
            error(&doc2),
            "slot 0 has a `successor` pod, which is only allowed in phase `warm`"
        );
    }

    #[test]
    fn readers_compare_versions() {
        let older = parse(&valid()).unwrap();
        let mut doc = valid();
        doc["version"] = json!(43);
        let newer = parse(&doc).unwrap();
        assert!(newer.is_newer_than(&older));
        assert!(!older.is_newer_than(&newer));
        assert!(!older.is_newer_than(&older));
        assert!(newer.supersedes(Some(&older)));
        assert!(!older.supersedes(Some(&newer)));
        assert!(older.supersedes(None));
    }

    #[test]
    fn config_map_names() {
        assert_eq!(RingDocument::config_map_name("chat"), "chat-ring");
        assert_eq!(RingDocument::CONFIG_MAP_KEY, "ring.json");
    }
}
