//! The one error type of the ring module.
//!
//! Every variant says exactly what is wrong and, where there is one, names the
//! field, slot or shard at fault, so that an operator reading a log line or a
//! Kubernetes event can fix the ring document (or the planner input) without
//! reading code.

use super::model::Phase;

/// Why a ring, a ring document or a planner request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The document is larger than [`MAX_DOCUMENT_BYTES`](super::MAX_DOCUMENT_BYTES);
    /// it was refused before parsing.
    #[error("ring document is {size} bytes, more than the limit of {max} bytes")]
    DocumentTooLarge {
        /// Size of the refused document in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The document is not JSON of the expected shape (syntax error, missing or
    /// unknown field, wrong type). serde's message names the field and position.
    #[error("ring document is malformed: {0}")]
    Json(#[source] serde_json::Error),
    /// The document's `schema` is not one this version of the SDK reads.
    #[error(
        "ring document schema {found} is not supported (this reader supports schema {supported})"
    )]
    UnsupportedSchema {
        /// The schema the document declares.
        found: u64,
        /// The schema this reader understands.
        supported: u32,
    },
    /// The document names a hash other than xxh3-64 with seed 0.
    #[error(
        "ring hash `{algorithm}` with seed {seed} is not supported (only `xxh3-64` with seed 0)"
    )]
    UnsupportedHash {
        /// The algorithm the document names.
        algorithm: String,
        /// The seed the document names.
        seed: u64,
    },
    /// The shard count is not a power of two within bounds.
    #[error(
        "shard count {shards} is invalid: it must be a power of two between {min} and {max}",
        min = super::MIN_SHARDS,
        max = super::MAX_SHARDS
    )]
    InvalidShardCount {
        /// The refused shard count.
        shards: u64,
    },
    /// The number of tokens per slot is outside `1..=MAX_VNODES`.
    #[error(
        "vnodes {vnodes} is invalid: it must be between 1 and {max}",
        max = super::MAX_VNODES
    )]
    InvalidVnodes {
        /// The refused vnode count.
        vnodes: u64,
    },
    /// The ring version is 0; the first published ring has version 1.
    #[error("ring version 0 is invalid: versions start at 1")]
    VersionZero,
    /// The ring version is above [`MAX_VERSION`](super::MAX_VERSION) (`2^53 - 1`).
    #[error(
        "ring version {version} is invalid: versions end at {max} (2^53 - 1)",
        max = super::MAX_VERSION
    )]
    VersionTooLarge {
        /// The refused version.
        version: u64,
    },
    /// The document or ring has no slot at all.
    #[error("ring has no slots: at least one slot is required")]
    NoSlots,
    /// More slots than [`MAX_SLOTS`](super::MAX_SLOTS).
    #[error("ring has {count} slots, more than the limit of {max}", max = super::MAX_SLOTS)]
    TooManySlots {
        /// The refused slot count.
        count: usize,
    },
    /// A name (namespace, service, pod name, pod UID) is empty.
    #[error("{field} is empty")]
    EmptyName {
        /// Which field, e.g. `slot 3 pod name`.
        field: String,
    },
    /// A name is longer than allowed.
    #[error("{field} is {len} bytes long, more than the limit of {max}")]
    NameTooLong {
        /// Which field, e.g. `slot 3 pod uid`.
        field: String,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A pod address is not `ip:port` (IPv6 as `[ip]:port`) with a non-zero port.
    #[error("{field} `{address}` is not a valid socket address (ip:port, port 1-65535): {reason}")]
    InvalidAddress {
        /// Which field, e.g. `slot 3 pod address`.
        field: String,
        /// The refused text.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A slot's `index` field disagrees with its position in the slot list.
    #[error(
        "slot at position {position} declares index {index}: slots must be listed in index order 0, 1, 2, …"
    )]
    SlotIndexMismatch {
        /// Position in the list.
        position: usize,
        /// The index the entry carries.
        index: u16,
    },
    /// A table is not a valid encoding of little-endian `u16` entries.
    #[error("table `{table}` is not valid base64 of little-endian u16 entries: {reason}")]
    TableEncoding {
        /// `current`, `target` or `previous`.
        table: &'static str,
        /// What is wrong with the encoding.
        reason: &'static str,
    },
    /// A table has a number of entries other than the shard count.
    #[error("table `{table}` has {found} entries, expected {expected} (one per shard)")]
    TableLength {
        /// `current`, `target`, `previous` or `previous (planner input)`.
        table: &'static str,
        /// Entries found.
        found: usize,
        /// Entries expected (the shard count).
        expected: usize,
    },
    /// A table entry names a slot that does not exist.
    #[error(
        "table `{table}` assigns shard {shard} to slot {slot}, but the ring has only {slots} slots (0..{slots})"
    )]
    UnknownSlot {
        /// `current`, `target` or `previous`.
        table: &'static str,
        /// The shard whose entry is wrong.
        shard: u32,
        /// The slot it names.
        slot: u16,
        /// How many slots the ring has.
        slots: usize,
    },
    /// The phase and the presence of the `target` / `previous` tables disagree.
    #[error("phase `{phase}` {problem}")]
    PhaseMismatch {
        /// The declared phase.
        phase: Phase,
        /// What is inconsistent, e.g. "requires a `target` table".
        problem: &'static str,
    },
    /// A slot carries a `successor` or `predecessor` pod in a phase that does
    /// not allow it (successor: warm only; predecessor: switch only).
    #[error("slot {slot} has a `{field}` pod, which is only allowed in phase `{allowed}`")]
    HandoverPodOutOfPhase {
        /// The slot at fault.
        slot: u16,
        /// `successor` or `predecessor`.
        field: &'static str,
        /// The phase in which the field is allowed.
        allowed: Phase,
    },
    /// Planner input: the slot set is empty.
    #[error("planner input has no slots: at least one slot must hold shards")]
    EmptySlotSet,
    /// Planner input: a slot index appears twice.
    #[error("planner input lists slot {slot} more than once")]
    DuplicateSlot {
        /// The repeated slot index.
        slot: u16,
    },
    /// Planner input: a slot index is not below [`MAX_SLOTS`](super::MAX_SLOTS).
    #[error("planner input slot {slot} is out of range: slot indices must be below {max}", max = super::MAX_SLOTS)]
    SlotOutOfRange {
        /// The refused slot index.
        slot: u16,
    },
    /// Doubling the shard count would exceed [`MAX_SHARDS`](super::MAX_SHARDS).
    #[error("cannot split {shards} shards: the result would exceed {max}", max = super::MAX_SHARDS)]
    SplitTooLarge {
        /// The current shard count.
        shards: u32,
    },
}

impl RingError {
    /// A short, stable label for metrics (`locus_ring_rejected_total{reason=…}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::DocumentTooLarge { .. } => "too_large",
            Self::Json(_) => "malformed",
            Self::UnsupportedSchema { .. } => "schema",
            Self::UnsupportedHash { .. } => "hash",
            Self::InvalidShardCount { .. } | Self::SplitTooLarge { .. } => "shards",
            Self::InvalidVnodes { .. } => "vnodes",
            Self::VersionZero | Self::VersionTooLarge { .. } => "version",
            Self::NoSlots
            | Self::TooManySlots { .. }
            | Self::SlotIndexMismatch { .. }
            | Self::EmptySlotSet
            | Self::DuplicateSlot { .. }
            | Self::SlotOutOfRange { .. } => "slots",
            Self::EmptyName { .. } | Self::NameTooLong { .. } => "name",
            Self::InvalidAddress { .. } => "address",
            Self::TableEncoding { .. } | Self::TableLength { .. } | Self::UnknownSlot { .. } => {
                "table"
            }
            Self::PhaseMismatch { .. } | Self::HandoverPodOutOfPhase { .. } => "phase",
        }
    }
}
