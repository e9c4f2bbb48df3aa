//! The planner's consistent-hashing ring of slot tokens, built on the
//! `hashring` crate.
//!
//! Slot `s` has `vnodes` tokens; token `i` sits at point
//! `xxh3_64("<namespace>/<service>/<s>/<i>")` (decimal `s` and `i`, UTF-8).
//! A point `p` prefers the slots of the tokens met walking clockwise from `p`
//! (the first token at a point `>= p`, wrapping past `u64::MAX` to 0), each
//! slot counted once, in the order met.
//!
//! `hashring::HashRing` hashes its nodes and keys with a `BuildHasher`; here
//! that hasher is the identity on one `u64` ([`TokenPointHasher`]) and both
//! tokens and looked-up points hash as their point, so the crate places every
//! token exactly at its documented point and `HashRing::get(p)` answers "the
//! first token clockwise from `p`". The preference walk is a chain of such
//! lookups from one token's point + 1 to the next. If two tokens ever share a
//! point (a 64-bit collision), only the one with the lowest `(slot, i)` is kept,
//! so the walk stays deterministic in any language.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hash, Hasher};

use hashring::HashRing;

use super::hash_key;

/// The point of token `index` of `slot`: `xxh3_64("<namespace>/<service>/<slot>/<index>")`.
pub fn token_point(namespace: &str, service: &str, slot: u16, index: u32) -> u64 {
    let mut name = String::with_capacity(namespace.len() + service.len() + 16);
    // Writing to a String cannot fail.
    let _ = write!(name, "{namespace}/{service}/{slot}/{index}");
    hash_key(name.as_bytes())
}

/// A slot's token on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    point: u64,
    slot: u16,
}

impl Hash for Token {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.point);
    }
}

/// A point looked up on the ring.
struct RingPoint(u64);

impl Hash for RingPoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Hasher that returns the last `u64` written to it: lets `hashring` place
/// tokens at precomputed points. Byte input (never produced by the token and
/// point types of this module) is folded in with xxh3 so the hasher is total.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenPointHasher(u64);

impl Hasher for TokenPointHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Builds [`TokenPointHasher`]s for `hashring::HashRing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenPoints;

impl BuildHasher for TokenPoints {
    type Hasher = TokenPointHasher;

    fn build_hasher(&self) -> TokenPointHasher {
        TokenPointHasher::default()
    }
}

/// The consistent-hashing ring of a set of slots, `vnodes` tokens each.
pub struct SlotRing {
    ring: HashRing<Token, TokenPoints>,
    /// Bitset words needed to mark any slot of the set.
    words: usize,
    /// Distinct slots on the ring.
    slots: usize,
}

impl SlotRing {
    /// Places `vnodes` tokens for every slot in `slots` (duplicates ignored).
    pub fn new(namespace: &str, service: &str, slots: &[u16], vnodes: u32) -> Self {
        let mut distinct = slots.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut tokens = Vec::with_capacity(distinct.len() * vnodes as usize);
        for &slot in &distinct {
            for index in 0..vnodes {
                tokens.push((token_point(namespace, service, slot, index), slot, index));
            }
        }
        // Lowest (slot, index) wins a point collision.
        tokens.sort_unstable();
        tokens.dedup_by_key(|&mut (point, _, _)| point);
        let mut ring = HashRing::with_hasher(TokenPoints);
        ring.batch_add(
            tokens
                .into_iter()
                .map(|(point, slot, _)| Token { point, slot })
                .collect(),
        );
        let max = distinct.last().copied().map_or(0, usize::from);
        Self {
            ring,
            words: max / 64 + 1,
            slots: distinct.len(),
        }
    }

    /// Number of tokens on the ring.
    pub fn token_count(&self) -> usize {
        self.ring.len()
    }

    /// Number of distinct slots on the ring.
    pub fn slot_count(&self) -> usize {
        self.slots
    }

    /// The slot of the first token clockwise from `point`.
    pub fn first(&self, point: u64) -> Option<u16> {
        self.ring.get(&RingPoint(point)).map(|token| token.slot)
    }

    /// The slots in order of preference for `point`: each slot once, in the
    /// order its first token is met walking clockwise from `point`.
    pub fn preferences(&self, point: u64) -> Preferences<'_> {
        Preferences {
            ring: self,
            next_point: point,
            steps: 0,
            yielded: 0,
            seen: vec![0; self.words],
        }
    }
}

impl std::fmt::Debug for SlotRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotRing")
            .field("slots", &self.slots)
            .field("tokens", &self.ring.len())
            .finish_non_exhaustive()
    }
}

/// Iterator over a point's preferred slots (see [`SlotRing::preferences`]).
#[derive(Debug)]
pub struct Preferences<'a> {
    ring: &'a SlotRing,
    next_point: u64,
    steps: usize,
    yielded: usize,
    seen: Vec<u64>,
}

impl Iterator for Preferences<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        while self.yielded < self.ring.slots && self.steps < self.ring.ring.len() {
            let token = *self.ring.ring.get(&RingPoint(self.next_point))?;
            self.steps += 1;
            self.next_point = token.point.wrapping_add(1);
            let (word, bit) = (usize::from(token.slot) / 64, token.slot % 64);
            if self.seen[word] & (1 << bit) == 0 {
                self.seen[word] |= 1 << bit;
                self.yielded += 1;
                return Some(token.slot);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same walk over a plainly sorted vector of documented token points.
    fn reference(ns: &str, svc: &str, slots: &[u16], vnodes: u32, point: u64) -> Vec<u16> {
        let mut tokens: Vec<(u64, u16)> = slots
            .iter()
            .flat_map(|&s| (0..vnodes).map(move |i| (token_point(ns, svc, s, i), s)))
            .collect();
        tokens.sort_unstable();
        let start = tokens.partition_point(|&(p, _)| p < point);
        let mut order = Vec::new();
        for k in 0..tokens.len() {
            let slot = tokens[(start + k) % tokens.len()].1;
            if !order.contains(&slot) {
                order.push(slot);
            }
        }
        order
    }

    #[test]
    fn token_names_are_documented_strings() {
        assert_eq!(token_point("ns", "svc", 3, 7), hash_key(b"ns/svc/3/7"));
        assert_eq!(
            token_point("default", "chat", 12, 0),
            hash_key(b"default/chat/12/0")
        );
    }

    #[test]
    fn walk_matches_a_sorted_vector() {
        let slots = [0, 1, 2, 5, 9];
        let ring = SlotRing::new("default", "chat", &slots, 8);
        assert_eq!(ring.token_count(), 40);
        for point in [0, 1, u64::MAX, 1 << 63, 0x1234_5678_9ABC_DEF0, 7 << 60] {
            let walked: Vec<u16> = ring.preferences(point).collect();
            assert_eq!(
                walked,
                reference("default", "chat", &slots, 8, point),
                "point {point:#x}"
            );
            assert_eq!(walked.len(), slots.len());
            assert_eq!(ring.first(point), walked.first().copied());
        }
    }

    #[test]
    fn exact_token_point_prefers_its_slot() {
        let ring = SlotRing::new("a", "b", &[4, 7], 4);
        for slot in [4, 7] {
            for i in 0..4 {
                assert_eq!(ring.first(token_point("a", "b", slot, i)), Some(slot));
            }
        }
    }

    #[test]
    fn empty_ring_prefers_nothing() {
        let ring = SlotRing::new("a", "b", &[], 4);
        assert_eq!(ring.first(0), None);
        assert_eq!(ring.preferences(0).count(), 0);
    }
}
