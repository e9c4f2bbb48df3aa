//! The resident keys of some shards, without a scan of every session.
//!
//! The transition driver drains the shards this pod lost, a pre-copy sends
//! the shards another pod gains, and a shutdown hands every shard to its
//! next owner. Each needs the resident keys of a set of shards at the ring's
//! shard count `S`; the index keeps the resident keys ordered by their ring
//! hash (see `store::index`), so a run of consecutive shards is one range of
//! it. The walk costs O(runs · log n + keys returned), not O(sessions), and
//! takes the index lock for at most [`PAGE`] keys at a time, so requests
//! wait behind it for microseconds, not for a copy of every key.

use bytes::Bytes;

use super::index::{HashSpan, SpanCursor};
use super::{Persistence, SessionStore};
use crate::ring::ShardCount;

/// Most keys read under one hold of the index lock.
const PAGE: usize = 1024;

impl<V, P> SessionStore<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    /// Resident sessions (not counting loads in flight): O(1).
    pub fn len(&self) -> usize {
        self.with_index(|index| index.resident())
    }

    /// True if no session is resident: O(1).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of the resident sessions of `shard` at `shards` shards, in
    /// ring-hash order, without counting an access: O(log n + keys of the
    /// shard). Empty if `shard >= S`.
    pub fn shard_keys(&self, shards: ShardCount, shard: u32) -> Vec<Bytes> {
        let mut wanted = vec![false; shards.len()];
        if let Some(one) = wanted.get_mut(shard as usize) {
            *one = true;
        }
        self.keys_in_shards(shards, &wanted)
            .into_iter()
            .map(|(_, key)| key)
            .collect()
    }

    /// The keys of the resident sessions of every shard `wanted` selects
    /// (`wanted[i]`: shard `i` at `shards` shards; missing entries are
    /// false), each with its shard, in shard order, without counting an
    /// access. Costs O(runs of wanted shards · log n + keys returned), the
    /// index lock held for at most 1024 keys at a time: a session that
    /// arrives or leaves during the walk may or may not be in the answer.
    pub fn keys_in_shards(&self, shards: ShardCount, wanted: &[bool]) -> Vec<(u32, Bytes)> {
        let mut walk = ShardWalk::new(shards, wanted);
        while !walk.page(self) {}
        walk.found
    }

    /// [`keys_in_shards`](Self::keys_in_shards) that lets other tasks of
    /// the runtime run between pages, so that a walk over many keys does
    /// not hold a worker thread (and the requests queued on it) for its
    /// whole length.
    pub async fn keys_in_shards_async(
        &self,
        shards: ShardCount,
        wanted: &[bool],
    ) -> Vec<(u32, Bytes)> {
        let mut walk = ShardWalk::new(shards, wanted);
        while !walk.page(self) {
            tokio::task::yield_now().await;
        }
        walk.found
    }

    /// True if a session of a shard `wanted` selects is resident:
    /// O(runs of wanted shards · log n).
    pub fn holds_keys_in(&self, shards: ShardCount, wanted: &[bool]) -> bool {
        let spans = HashSpan::runs(shards, wanted);
        self.with_index(|index| index.holds_any_in(&spans))
    }
}

/// A paged walk over the keys of some shards.
struct ShardWalk {
    shards: ShardCount,
    spans: Vec<HashSpan>,
    cursor: SpanCursor,
    page: Vec<(u64, Bytes)>,
    found: Vec<(u32, Bytes)>,
    /// The ring hash of the last key found, and where the keys of that hash
    /// start in `found`.
    run: Option<(u64, usize)>,
}

impl ShardWalk {
    fn new(shards: ShardCount, wanted: &[bool]) -> Self {
        Self {
            shards,
            spans: HashSpan::runs(shards, wanted),
            cursor: SpanCursor::default(),
            page: Vec::with_capacity(PAGE),
            found: Vec::new(),
            run: None,
        }
    }

    /// Reads one page under the index lock; true when the walk is done.
    fn page<V, P>(&mut self, store: &SessionStore<V, P>) -> bool
    where
        V: Clone + Send + Sync + 'static,
        P: Persistence<V>,
    {
        let (spans, cursor, page) = (&self.spans, &mut self.cursor, &mut self.page);
        let done = store.with_index(|index| index.resident_in(spans, cursor, PAGE, page));
        for (hash, key) in self.page.drain(..) {
            // Keys of equal hashes are ordered by their place in the index,
            // so a key removed and added again between two pages can come
            // again, right among the keys of its hash: keep it once.
            match self.run {
                Some((last, start)) if last == hash => {
                    if self.found[start..].iter().any(|(_, seen)| *seen == key) {
                        continue;
                    }
                }
                _ => self.run = Some((hash, self.found.len())),
            }
            self.found.push((self.shards.shard_of_hash(hash), key));
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::stream;

    use super::*;
    use crate::store::{HandOff, JsonCodec, Limits};

    fn sorted(mut keys: Vec<Bytes>) -> Vec<Bytes> {
        keys.sort();
        keys
    }

    /// The answer of the shard index against a filter of every resident key.
    fn assert_shards_agree(store: &SessionStore<u64>, shards: ShardCount, wanted: &[bool]) {
        let indexed: Vec<Bytes> = store
            .keys_in_shards(shards, wanted)
            .into_iter()
            .map(|(shard, key)| {
                assert_eq!(shard, shards.shard_of(&key));
                key
            })
            .collect();
        let expected: Vec<Bytes> = store
            .resident_keys()
            .into_iter()
            .filter(|key| wanted[shards.shard_of(key) as usize])
            .collect();
        assert_eq!(
            store.holds_keys_in(shards, wanted),
            !expected.is_empty(),
            "holds_keys_in at {} shards",
            shards.get()
        );
        assert_eq!(
            sorted(indexed),
            sorted(expected),
            "keys at {} shards",
            shards.get()
        );
    }

    fn assert_all_agree(store: &SessionStore<u64>, round: u64) {
        store.check_index().unwrap();
        assert_eq!(store.len(), store.resident_keys().len());
        assert_eq!(store.is_empty(), store.resident_keys().is_empty());
        for count in [1, 4, 64, 4096] {
            let shards = ShardCount::new(count).unwrap();
            for shard in [0, count / 2, count - 1] {
                let keys = store.shard_keys(shards, shard);
                let expected: Vec<Bytes> = store
                    .resident_keys()
                    .into_iter()
                    .filter(|key| shards.shard_of(key) == shard)
                    .collect();
                assert_eq!(sorted(keys), sorted(expected), "shard {shard} of {count}");
            }
            let wanted: Vec<bool> = (0..u64::from(count))
                .map(|i| (i * 7 + round).is_multiple_of(3))
                .collect();
            assert_shards_agree(store, shards, &wanted);
            assert_shards_agree(store, shards, &vec![true; count as usize]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keys_by_shard_follow_inserts_evictions_hand_offs_and_restores() {
        let limits = Limits::builder()
            .max_sessions(3000)
            .idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let store = SessionStore::builder(JsonCodec, |_: &u64| 8)
            .limits(limits.clone())
            .build()
            .unwrap();
        let other = SessionStore::builder(JsonCodec, |_: &u64| 8)
            .limits(limits)
            .build()
            .unwrap();
        assert!(store.is_empty());
        assert_all_agree(&store, 0);
        // More keys than pages, and past the session bound: pressure
        // evictions.
        for i in 0..3500_u64 {
            store
                .update(format!("k{i}").as_bytes(), |n| *n += i)
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 3000);
        assert_all_agree(&store, 1);
        // Hand-offs to another store and back (a restore).
        let mut records = Vec::new();
        for i in (500..3500_u64).step_by(3) {
            let key = format!("k{i}");
            if let HandOff::State(record) = store
                .hand_off(key.as_bytes(), None, "pod-b", Duration::from_secs(1))
                .await
                .unwrap()
            {
                records.push(record);
            }
        }
        assert_eq!(records.len(), 1000);
        assert_all_agree(&store, 2);
        let restored = other.restore(stream::iter(records.clone())).await;
        assert_eq!(restored.inserted, 1000);
        assert_all_agree(&other, 3);
        // Back after the tombstones expire, then idle passivation of some.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.restore(stream::iter(records)).await.inserted, 1000);
        assert_all_agree(&store, 4);
        tokio::time::advance(Duration::from_secs(59)).await;
        for i in 0..1000_u64 {
            store.get(format!("k{}", i * 3 + 1).as_bytes()).await.ok();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let swept = store.passivate_idle().await;
        assert!(swept.evicted > 0, "{swept:?}");
        assert_all_agree(&store, 5);
        assert!(!store.is_empty());
    }
}
