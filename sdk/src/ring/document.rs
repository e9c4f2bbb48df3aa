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
//! use locus::ring::RingDocument;
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

    /// Encodes a ring as a document (pretty JSON, fields in the documented
    /// order). Fails only if the result exceeds [`MAX_DOCUMENT_BYTES`], which
    /// readers would refuse.
    pub fn to_json(ring: &Ring) -> Result<Vec<u8>, RingError> {
        let bytes =
            serde_json::to_vec_pretty(&WireRing::from_ring(ring)).map_err(RingError::Json)?;
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
        let current = Assignment::from_base64(&self.current, shards, "current")?;
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
