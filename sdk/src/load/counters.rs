//! [`ShardLoadCounters`]: what a pod served, per shard, counted on the
//! request path without a lock or an allocation.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ring::{MAX_SHARDS, ShardCount};

/// One table per possible shard count: index `log2 S`, `0..=16`.
const TABLES: usize = MAX_SHARDS.trailing_zeros() as usize + 1;

/// The counts of one shard: cumulative, never reset.
#[derive(Debug, Default)]
pub(crate) struct Cell {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

/// Cumulative per-shard counts of the requests a pod served as the owner of
/// their key, and their request and response body bytes.
///
/// Each shard count `S` has a table of its own, `S` cells of two
/// [`AtomicU64`]s, allocated the first time a request is counted under a
/// ring of that `S` (a ring's `S` only ever doubles, so a pod sees one or
/// two in its life); recording is then one atomic load to find the table and
/// two relaxed additions. Counts are never reset: a
/// [`LoadWindow`](super::LoadWindow) takes differences.
#[derive(Debug)]
pub struct ShardLoadCounters {
    tables: [OnceLock<Box<[Cell]>>; TABLES],
}

impl Default for ShardLoadCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardLoadCounters {
    /// Counters with no table yet.
    pub fn new() -> Self {
        Self {
            tables: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one request for `shard` of a ring with `shards` shards, with
    /// `bytes` of request and response bodies. A shard outside the ring is
    /// ignored.
    #[inline]
    pub fn record(&self, shards: ShardCount, shard: u32, bytes: u64) {
        let Some(table) = self.tables.get(shards.bits() as usize) else {
            return;
        };
        let table = table.get_or_init(|| (0..shards.len()).map(|_| Cell::default()).collect());
        if let Some(cell) = table.get(shard as usize) {
            cell.requests.fetch_add(1, Ordering::Relaxed);
            cell.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The table of `shards`, if a request was counted under it.
    #[cfg(test)]
    pub(crate) fn table(&self, shards: ShardCount) -> Option<&[Cell]> {
        self.tables
            .get(shards.bits() as usize)
            .and_then(OnceLock::get)
            .map(AsRef::as_ref)
    }

    /// Every table counted into, with its `log2 S`.
    pub(crate) fn tables(&self) -> impl Iterator<Item = (usize, &[Cell])> {
        self.tables
            .iter()
            .enumerate()
            .filter_map(|(bits, table)| table.get().map(|t| (bits, t.as_ref())))
    }

    /// Requests and bytes counted since the start, over every table.
    pub fn totals(&self) -> (u64, u64) {
        self.tables()
            .flat_map(|(_, cells)| cells.iter())
            .fold((0, 0), |(r, b), cell| {
                (
                    r + cell.requests.load(Ordering::Relaxed),
                    b + cell.bytes.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u32) -> ShardCount {
        ShardCount::new(n).unwrap()
    }

    #[test]
    fn counts_land_in_the_table_of_their_shard_count() {
        let counters = ShardLoadCounters::new();
        assert!(counters.table(count(16)).is_none(), "allocated lazily");
        counters.record(count(16), 3, 100);
        counters.record(count(16), 3, 50);
        counters.record(count(16), 15, 1);
        counters.record(count(16), 16, 7); // outside the ring: ignored
        counters.record(count(32), 31, 10);
        let table = counters.table(count(16)).unwrap();
        assert_eq!(table.len(), 16);
        assert_eq!(table[3].requests.load(Ordering::Relaxed), 2);
        assert_eq!(table[3].bytes.load(Ordering::Relaxed), 150);
        assert_eq!(table[15].requests.load(Ordering::Relaxed), 1);
        assert_eq!(counters.table(count(32)).unwrap().len(), 32);
        assert_eq!(counters.tables().count(), 2);
        assert_eq!(counters.totals(), (4, 161));
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let counters = std::sync::Arc::new(ShardLoadCounters::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let counters = std::sync::Arc::clone(&counters);
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        counters.record(ShardCount::DEFAULT, (i * 7 + t) % 4096, 3);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counters.totals(), (40_000, 120_000));
    }
}
