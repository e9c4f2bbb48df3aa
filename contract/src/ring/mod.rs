//! The ring: who owns which key.
//!
//! The 64-bit hash space is cut into `S` shards (a power of two, default
//! 4096). A key's shard is `xxh3_64(key) >> (64 - log2 S)`; the operator
//! assigns every shard to a slot and publishes the assignment, with the slots'
//! pods, as a [`Ring`] in the ring document (`ConfigMap` `<service>-ring`, key
//! `ring.json`, format in `docs/ring-format.md`). Routers do no hashing over
//! members: the owner of a key is `slots[current[shard(key)]]`, an O(1) lookup.
//!
//! * [`Ring`], [`Slot`], [`Pod`], [`SlotState`], [`Phase`], [`Transition`]:
//!   the validated model and its lookups.
//! * [`Assignment`]: one shard → slot table.
//! * [`RingDocument`]: the JSON codec, strict on input.
//! * [`hash_key`], [`ShardCount`]: the hash and the shard formula.
//! * [`plan`], [`PlanRequest`], [`Plan`]: the operator's deterministic
//!   planner (balanced, minimal moves, consistent-hashing preferences over
//!   [`SlotRing`]).
//! * [`balance()`], [`SlotLoad`], [`BalanceConfig`], [`Balance`]: placement by load (which
//!   shards to move from the busiest slots to the least busy, within a budget).
//! * [`annotations`]: names of the pod annotations that report progress.
//!
//! ```
//! use locus_contract::ring::{plan, PlanRequest, ShardCount};
//!
//! // A fresh service with 3 slots, 4096 shards, 128 tokens per slot.
//! let first = plan(&PlanRequest::new("default", "chat", &[0, 1, 2])).unwrap();
//! assert_eq!(first.assignment.shard_count(), ShardCount::DEFAULT);
//! // Scale up to 4: a quarter of the shards move, all onto slot 3.
//! let grown = plan(&PlanRequest {
//!     previous: Some(&first.assignment),
//!     ..PlanRequest::new("default", "chat", &[0, 1, 2, 3])
//! })
//! .unwrap();
//! assert_eq!(grown.moved, 1024);
//! assert_eq!(grown.assignment.shards_of(3).count(), 1024);
//! ```

mod assignment;
mod balance;
mod document;
mod error;
mod hash;
mod model;
mod planner;
mod tokens;

pub use assignment::{Assignment, ShardMove};
pub use balance::{Balance, BalanceConfig, BalanceError, HotShard, SlotLoad, balance};
pub use document::RingDocument;
pub use error::RingError;
pub use hash::{HASH_ALGORITHM, HASH_SEED, ShardCount, hash_key};
pub use model::{Phase, Pod, Ring, RingParts, Slot, SlotState, Transition};
pub use planner::{Plan, PlanRequest, SlotCount, plan};
pub use tokens::{Preferences, SlotRing, TokenPointHasher, TokenPoints, token_point};

/// Smallest shard count.
pub const MIN_SHARDS: u32 = 1;

/// Largest shard count (`2^16`): a table then takes 128 KiB raw, 171 KiB in
/// the document.
pub const MAX_SHARDS: u32 = 1 << 16;

/// Largest number of slots in a ring (slot indices are `0..MAX_SLOTS`).
/// A 2048-slot document with typical pod names and two tables is about
/// 450 KiB, under [`MAX_DOCUMENT_BYTES`].
pub const MAX_SLOTS: usize = 2048;

/// Default number of tokens per slot on the planner's ring (`spec.vnodes`).
pub const DEFAULT_VNODES: u32 = 128;

/// Largest number of tokens per slot on the planner's ring.
pub const MAX_VNODES: u32 = 1024;

/// Largest ring version, `2^53 - 1`: the largest integer that a JSON reader
/// parsing numbers as doubles (JavaScript's, for one) still reads exactly, so
/// every reader compares versions alike. The operator adds 1 per publish, so
/// a service never gets near it.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// Largest namespace, service and pod name, in bytes (a DNS subdomain).
pub const MAX_NAME_BYTES: usize = 253;

/// Largest pod UID, in bytes.
pub const MAX_UID_BYTES: usize = 128;

/// Largest ring document, in bytes; larger documents are refused unparsed.
/// Half the 1 MiB `ConfigMap` limit.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Names of the annotations a pod patches onto itself to report progress
/// through a transition; the operator watches pods, so it needs no polling.
/// Values are ring versions in decimal, except [`MOVED_SESSIONS`](annotations::MOVED_SESSIONS)
/// and [`SHARD_LOAD`](annotations::SHARD_LOAD).
pub mod annotations {
    /// The newest ring version the pod has loaded and routes by.
    pub const OBSERVED_RING_VERSION: &str = "locus.dev/observed-ring-version";
    /// The `Warm` ring version for which the pod finished pre-copying every
    /// shard it gains.
    pub const WARMED_RING_VERSION: &str = "locus.dev/warmed-ring-version";
    /// The `Switch` ring version for which the pod finished handing over every
    /// key it lost.
    pub const DRAINED_RING_VERSION: &str = "locus.dev/drained-ring-version";
    /// JSON: how the sessions this pod took over in each of its last
    /// transitions arrived, by path, keyed by the `Stable` ring version that
    /// completed the transition, with whether the counts are final
    /// ([`MovedReport`](crate::progress::MovedReport)).
    pub const MOVED_SESSIONS: &str = "locus.dev/moved-sessions";
    /// JSON: what the pod served over its last window, in total and for its
    /// busiest shards, under which ring version
    /// ([`ShardLoadReport`](crate::progress::ShardLoadReport)); the operator
    /// reads it to place shards by load.
    pub const SHARD_LOAD: &str = "locus.dev/shard-load";
}
