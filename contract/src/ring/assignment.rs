//! The assignment table: shard → slot.
//!
//! An [`Assignment`] is `S` slot indices, one per shard. In the ring document
//! it is written as base64 (RFC 4648, standard alphabet, padded) of the `S`
//! entries as little-endian `u16`: 4096 shards take 10 924 characters whatever
//! the number of slots. Decoding is strict (canonical form only), so one table
//! has exactly one encoding and a corrupted document is refused rather than
//! silently misread.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::{DecodeError, Engine as _};

use super::{RingError, ShardCount};

/// One shard whose slot differs between two assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardMove {
    /// The shard.
    pub shard: u32,
    /// Its slot in the older assignment.
    pub from: u16,
    /// Its slot in the newer assignment.
    pub to: u16,
}

/// A table shard → slot index with `S` entries (`S` a valid [`ShardCount`]).
///
/// The table alone does not know which slots exist; a [`Ring`](super::Ring)
/// checks every entry against its slot list.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Assignment {
    shards: ShardCount,
    table: Box<[u16]>,
}

impl Assignment {
    /// Wraps a table; its length must be a valid shard count.
    pub fn new(table: Vec<u16>) -> Result<Self, RingError> {
        let shards = ShardCount::from_u64(table.len() as u64)?;
        Ok(Self {
            shards,
            table: table.into_boxed_slice(),
        })
    }

    /// Every shard on `slot`.
    pub fn uniform(shards: ShardCount, slot: u16) -> Self {
        Self {
            shards,
            table: vec![slot; shards.len()].into_boxed_slice(),
        }
    }

    /// The shard count `S` (the table length).
    #[inline]
    pub fn shard_count(&self) -> ShardCount {
        self.shards
    }

    /// The entries, indexed by shard.
    #[inline]
    pub fn as_slice(&self) -> &[u16] {
        &self.table
    }

    /// The slot of `shard`, or `None` if `shard >= S`.
    #[inline]
    pub fn slot_of(&self, shard: u32) -> Option<u16> {
        self.table.get(shard as usize).copied()
    }

    /// The slot that owns `key` under this table.
    #[inline]
    pub fn slot_of_key(&self, key: &[u8]) -> u16 {
        self.table[self.shards.shard_of(key) as usize]
    }

    /// Number of shards per slot, for the slots that hold at least one shard.
    pub fn counts(&self) -> BTreeMap<u16, u32> {
        let mut counts = BTreeMap::new();
        for &slot in &self.table {
            *counts.entry(slot).or_insert(0) += 1;
        }
        counts
    }

    /// The shards held by `slot`, ascending.
    pub fn shards_of(&self, slot: u16) -> impl Iterator<Item = u32> + '_ {
        self.table
            .iter()
            .enumerate()
            .filter(move |&(_, &s)| s == slot)
            .map(|(shard, _)| shard as u32)
    }

    /// The shards whose slot differs in `next`, ascending by shard. Both
    /// tables must have the same shard count (use [`split`](Self::split) first
    /// after a shard split).
    pub fn moves_to<'a>(
        &'a self,
        next: &'a Assignment,
    ) -> Result<impl Iterator<Item = ShardMove> + 'a, RingError> {
        if next.table.len() != self.table.len() {
            return Err(RingError::TableLength {
                table: "next",
                found: next.table.len(),
                expected: self.table.len(),
            });
        }
        Ok(self
            .table
            .iter()
            .zip(next.table.iter())
            .enumerate()
            .filter(|(_, (from, to))| from != to)
            .map(|(shard, (&from, &to))| ShardMove {
                shard: shard as u32,
                from,
                to,
            }))
    }

    /// The table after doubling `S`: shard `i` becomes shards `2i` and
    /// `2i + 1`, both keeping the owner of `i`, so no key changes owner.
    pub fn split(&self) -> Result<Self, RingError> {
        let shards = self.shards.doubled()?;
        let table: Vec<u16> = self.table.iter().flat_map(|&slot| [slot, slot]).collect();
        Ok(Self {
            shards,
            table: table.into_boxed_slice(),
        })
    }

    /// The document encoding: base64 of the entries as little-endian `u16`.
    pub fn to_base64(&self) -> String {
        let bytes: Vec<u8> = self
            .table
            .iter()
            .flat_map(|slot| slot.to_le_bytes())
            .collect();
        STANDARD.encode(bytes)
    }

    /// Decodes the document encoding; `table` names the field in errors and
    /// `shards` is the expected length.
    pub fn from_base64(
        text: &str,
        shards: ShardCount,
        table: &'static str,
    ) -> Result<Self, RingError> {
        let bytes =
            decode_canonical(text).map_err(|reason| RingError::TableEncoding { table, reason })?;
        if bytes.len() % 2 != 0 {
            return Err(RingError::TableEncoding {
                table,
                reason: "odd number of bytes",
            });
        }
        if bytes.len() / 2 != shards.len() {
            return Err(RingError::TableLength {
                table,
                found: bytes.len() / 2,
                expected: shards.len(),
            });
        }
        let table: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        Ok(Self {
            shards,
            table: table.into_boxed_slice(),
        })
    }

    /// The first entry naming a slot `>= slots`, as `(shard, slot)`.
    pub(crate) fn first_unknown_slot(&self, slots: usize) -> Option<(u32, u16)> {
        self.table
            .iter()
            .enumerate()
            .find(|&(_, &slot)| usize::from(slot) >= slots)
            .map(|(shard, &slot)| (shard as u32, slot))
    }
}

/// Decodes canonical padded standard base64 (RFC 4648 §4). The engine refuses
/// misplaced or non-canonical padding and non-zero bits in the last symbol;
/// the error says what is wrong, in the words of `docs/ring-format.md`.
fn decode_canonical(text: &str) -> Result<Vec<u8>, &'static str> {
    if !text.len().is_multiple_of(4) {
        return Err("length is not a multiple of 4");
    }
    STANDARD.decode(text).map_err(|error| match error {
        DecodeError::InvalidByte(at, b'=') if text.bytes().skip(at).all(|b| b == b'=') => {
            "more than two padding characters"
        }
        DecodeError::InvalidByte(_, b'=') => "padding before the end",
        DecodeError::InvalidByte(..) => "character outside the base64 alphabet",
        DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => "invalid padding",
        DecodeError::InvalidLastSymbol(..) => "non-zero bits in the padding",
    })
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignment")
            .field("shards", &self.shards.get())
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_size() {
        let table: Vec<u16> = (0..4096u32).map(|i| (i * 7919 % 100) as u16).collect();
        let a = Assignment::new(table).unwrap();
        let text = a.to_base64();
        assert_eq!(text.len(), 10_924);
        let b = Assignment::from_base64(&text, a.shard_count(), "current").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn entries_are_little_endian() {
        let a = Assignment::new(vec![1, 0x0203]).unwrap();
        // bytes 01 00 03 02
        assert_eq!(a.to_base64(), "AQADAg==");
    }

    #[test]
    fn rfc4648_vectors_round_trip() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, text) in cases {
            assert_eq!(STANDARD.encode(raw), text);
            assert_eq!(decode_canonical(text).unwrap(), raw);
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_canonical(&STANDARD.encode(&all)).unwrap(), all);
    }

    #[test]
    fn non_canonical_input_is_refused_with_its_reason() {
        for (bad, reason) in [
            ("Zg=", "length is not a multiple of 4"),
            ("Zg===", "length is not a multiple of 4"),
            ("Zh==", "non-zero bits in the padding"),
            ("Zm9=", "non-zero bits in the padding"),
            ("Z===", "more than two padding characters"),
            ("====", "more than two padding characters"),
            ("Zg==Zg==", "padding before the end"),
            ("Z=9v", "padding before the end"),
            ("Zm9v!A==", "character outside the base64 alphabet"),
            ("Zm 9", "character outside the base64 alphabet"),
        ] {
            assert_eq!(decode_canonical(bad), Err(reason), "{bad}");
        }
    }

    #[test]
    fn wrong_length_is_reported_in_entries() {
        let a = Assignment::uniform(ShardCount::new(8).unwrap(), 3);
        let err = Assignment::from_base64(&a.to_base64(), ShardCount::new(16).unwrap(), "target")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "table `target` has 8 entries, expected 16 (one per shard)"
        );
        let err =
            Assignment::from_base64("AQ==", ShardCount::new(1).unwrap(), "current").unwrap_err();
        assert!(err.to_string().contains("odd number of bytes"), "{err}");
    }

    #[test]
    fn split_keeps_owners() {
        let a = Assignment::new(vec![0, 1, 2, 1]).unwrap();
        let b = a.split().unwrap();
        assert_eq!(b.as_slice(), &[0, 0, 1, 1, 2, 2, 1, 1]);
        for key in [&b"a"[..], b"bb", b"session-42", b""] {
            assert_eq!(a.slot_of_key(key), b.slot_of_key(key));
        }
    }

    #[test]
    fn moves_and_counts() {
        let a = Assignment::new(vec![0, 0, 1, 1]).unwrap();
        let b = Assignment::new(vec![0, 2, 1, 2]).unwrap();
        let moves: Vec<_> = a.moves_to(&b).unwrap().collect();
        assert_eq!(
            moves,
            vec![
                ShardMove {
                    shard: 1,
                    from: 0,
                    to: 2
                },
                ShardMove {
                    shard: 3,
                    from: 1,
                    to: 2
                }
            ]
        );
        assert_eq!(b.counts(), BTreeMap::from([(0, 1), (1, 1), (2, 2)]));
        assert_eq!(b.shards_of(2).collect::<Vec<_>>(), vec![1, 3]);
        assert!(a.moves_to(&a.split().unwrap()).is_err());
    }
}
