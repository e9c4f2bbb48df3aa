//! The ring's hash and the shard formula.
//!
//! Keys are hashed with xxh3-64, seed 0, over their raw bytes (no length
//! prefix, no normalisation). The 64-bit hash space is cut into `S` equal arcs
//! (`S` a power of two); a key belongs to the shard given by the top `log2 S`
//! bits of its hash:
//!
//! ```text
//! shard(k) = xxh3_64(k) >> (64 - log2 S)        (S = 1: shard 0)
//! ```
//!
//! ```
//! use locus_contract::ring::{hash_key, ShardCount};
//!
//! assert_eq!(hash_key(b""), 0x2D06_8005_38D3_94C2);
//! let shards = ShardCount::new(4096).unwrap();
//! assert_eq!(shards.shard_of(b"session-1"), (hash_key(b"session-1") >> 52) as u32);
//! assert_eq!(shards.start(1), 1 << 52);
//! ```

use std::fmt;

use super::{MAX_SHARDS, MIN_SHARDS, RingError};

/// Name of the ring's hash algorithm as written in the ring document.
pub const HASH_ALGORITHM: &str = "xxh3-64";

/// Seed of the ring's hash as written in the ring document.
pub const HASH_SEED: u64 = 0;

/// The ring's hash of a key: xxh3-64 with seed 0 over the raw bytes.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A validated shard count `S` (a power of two in `MIN_SHARDS..=MAX_SHARDS`),
/// with the shift of the shard formula precomputed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardCount {
    count: u32,
    /// `63 - log2 S`: the shard is `(hash >> 1) >> shift`, which equals
    /// `hash >> (64 - log2 S)` for `S > 1` and is 0 for `S = 1` without a
    /// branch and without an overflowing shift.
    shift: u32,
}

impl ShardCount {
    /// The default shard count of a service (`spec.shards`).
    pub const DEFAULT: Self = Self {
        count: 4096,
        shift: 63 - 12,
    };

    /// Validates `count`: a power of two between [`MIN_SHARDS`] and [`MAX_SHARDS`].
    pub fn new(count: u32) -> Result<Self, RingError> {
        if !(MIN_SHARDS..=MAX_SHARDS).contains(&count) || !count.is_power_of_two() {
            return Err(RingError::InvalidShardCount {
                shards: u64::from(count),
            });
        }
        Ok(Self {
            count,
            shift: 63 - count.trailing_zeros(),
        })
    }

    /// Validates a count read from a document or a request as a `u64`.
    pub fn from_u64(count: u64) -> Result<Self, RingError> {
        u32::try_from(count)
            .map_err(|_| RingError::InvalidShardCount { shards: count })
            .and_then(Self::new)
    }

    /// The number of shards `S`.
    #[inline]
    pub fn get(self) -> u32 {
        self.count
    }

    /// The number of shards as a `usize` (table length).
    #[inline]
    pub fn len(self) -> usize {
        self.count as usize
    }

    /// Always false: a shard count is at least 1. Present for API symmetry with [`len`](Self::len).
    #[inline]
    pub fn is_empty(self) -> bool {
        false
    }

    /// `log2 S`: the number of top hash bits that select the shard.
    #[inline]
    pub fn bits(self) -> u32 {
        63 - self.shift
    }

    /// The shard of a key hash: `hash >> (64 - log2 S)`.
    #[inline]
    pub fn shard_of_hash(self, hash: u64) -> u32 {
        ((hash >> 1) >> self.shift) as u32
    }

    /// The shard of a key: `xxh3_64(key) >> (64 - log2 S)`.
    #[inline]
    pub fn shard_of(self, key: &[u8]) -> u32 {
        self.shard_of_hash(hash_key(key))
    }

    /// The first hash value of `shard`'s arc, `shard << (64 - log2 S)`: the
    /// shard's point on the ring, from which the planner walks clockwise to
    /// find the shard's preferred slots. `shard` is taken modulo `S`.
    #[inline]
    pub fn start(self, shard: u32) -> u64 {
        let shard = u64::from(shard & (self.count - 1));
        (shard << 1) << self.shift
    }

    /// The shard count after one split (`2 S`), if within bounds.
    pub fn doubled(self) -> Result<Self, RingError> {
        self.count
            .checked_mul(2)
            .ok_or(RingError::SplitTooLarge { shards: self.count })
            .and_then(|c| Self::new(c).map_err(|_| RingError::SplitTooLarge { shards: self.count }))
    }
}

impl Default for ShardCount {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Debug for ShardCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardCount({})", self.count)
    }
}

impl fmt::Display for ShardCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.count.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_matches_published_xxh3_value() {
        assert_eq!(hash_key(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn shard_count_bounds() {
        for bad in [0, 3, 6, 4095, MAX_SHARDS * 2, u32::MAX] {
            assert!(ShardCount::new(bad).is_err(), "{bad} accepted");
        }
        for good in [1, 2, 4, 4096, MAX_SHARDS] {
            assert_eq!(ShardCount::new(good).unwrap().get(), good);
        }
        assert!(ShardCount::from_u64(1 << 40).is_err());
        assert_eq!(ShardCount::DEFAULT, ShardCount::new(4096).unwrap());
    }

    #[test]
    fn one_shard_takes_every_hash() {
        let s = ShardCount::new(1).unwrap();
        for h in [0, 1, u64::MAX, 1 << 63] {
            assert_eq!(s.shard_of_hash(h), 0);
        }
        assert_eq!(s.start(0), 0);
        assert_eq!(s.bits(), 0);
    }

    #[test]
    fn shard_is_top_bits() {
        for bits in 1..=16 {
            let s = ShardCount::new(1 << bits).unwrap();
            assert_eq!(s.bits(), bits);
            for h in [
                0,
                1,
                0x1234_5678_9ABC_DEF0,
                u64::MAX,
                1 << 63,
                (1 << 63) - 1,
            ] {
                assert_eq!(
                    u64::from(s.shard_of_hash(h)),
                    h >> (64 - bits),
                    "bits {bits} h {h:#x}"
                );
            }
            // Every shard's start hash maps back to the shard, and so does the last hash of its arc.
            for shard in [0, 1, (1 << bits) - 1] {
                let start = s.start(shard);
                assert_eq!(s.shard_of_hash(start), shard);
                let end = start | (u64::MAX >> bits);
                assert_eq!(s.shard_of_hash(end), shard);
            }
        }
    }

    #[test]
    fn doubling_stops_at_the_bound() {
        assert_eq!(ShardCount::new(8).unwrap().doubled().unwrap().get(), 16);
        assert!(ShardCount::new(MAX_SHARDS).unwrap().doubled().is_err());
    }
}
