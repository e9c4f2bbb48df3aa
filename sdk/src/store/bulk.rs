//! The store's side of a fast restart at memory speed: every resident session
//! out without holding the index lock while encoding, and a whole snapshot
//! back in without taking the lock once per record.
//!
//! * [`resident_sessions`](SessionStore::resident_sessions): the resident
//!   entries, taken under the index lock in one go (key and `Arc` clones, least
//!   recently used first); each session is encoded later, off the lock and
//!   from any thread, under its own shared lock ([`ResidentSessions::encode`]).
//! * [`prepare_chunk`](SessionStore::prepare_chunk): a chunk of borrowed
//!   records ([`RawRecord`]) decoded, checked and weighed off the lock, from
//!   any thread (the snapshot reader calls it on several chunks in parallel).
//!   A clean record (written back before the snapshot) is not decoded when
//!   the store's persistence is durable: its entry holds the encoded bytes,
//!   a slice of the mapped file (or of the chunk's buffer where the file
//!   could not be mapped; no copy), and weighs their length until
//!   its first use decodes it under the entry's exclusive lock
//!   (`docs/adr/0005-restore-without-building-the-heap.md`; see `entry`). A
//!   dirty record, and every record of a store without a durable
//!   persistence, is decoded here: its write-back needs the value, and a
//!   record that cannot be decoded must be refused before the pod serves.
//! * [`install_prepared`](SessionStore::install_prepared): the prepared
//!   records installed in the order of their keys' ring hashes (the shard
//!   index's order, band by band: each chunk sorted where it was prepared),
//!   a page of a few thousand per hold of the index lock, into
//!   tables sized once for the whole snapshot, each key hashed beforehand on
//!   the checking threads. The lock is a plain mutex that request tasks
//!   block on, so it is not held across the whole snapshot (a few hundred
//!   milliseconds for a million sessions).
//!
//! A restore through these paths keeps every guarantee of the per-record
//! path ([`install_record`](SessionStore::install_record)):
//!
//! * a key longer than `max_key_bytes`, a state the codec cannot decode and
//!   a state heavier than `max_session_bytes` are refused and counted as
//!   failed, the first few kept with their keys. For a record kept encoded
//!   the bound is checked against its encoded length here, and the decode
//!   and the weigher's answer on first use: a failure there drops the
//!   session from memory without a write-back (the persistence holds that
//!   version) and the request loads it from the persistence;
//! * the ownership epoch its write-backs carry is the higher of the record's
//!   and the one the load guard gives (fencing, `docs/adr/0001-fencing.md`);
//! * the `dirty` flag is kept, so a session not yet written back is written
//!   back before it is ever evicted;
//! * a key is inserted only if the index's own `admit` check (the one the
//!   per-record path makes) lets it: absent, or moved at a version not newer
//!   than the record's, with a session place and its bytes free under
//!   `max_sessions` and `max_total_bytes`. A key that is resident or loading,
//!   or that does not fit, is installed through the per-record path instead:
//!   the newer version wins under the entry's lock, and room is made by
//!   evicting idle sessions (written back first) or the record is refused
//!   as full. A record older than an unexpired tombstone is stale;
//! * the index's sums and the store's gauges are what the per-record
//!   inserts would leave (an encoded session weighing its encoded length).
//!
//! [`ResidentSessions::encode`] gives a session still encoded as its bytes,
//! without decoding it. [`decode_left`](SessionStore::decode_left), run in
//! the background some time after a restore, decodes the sessions no request
//! has used yet, so that memory converges to what a decoded store holds
//! (the mapped file, or a chunk's buffer, is freed with the last session
//! encoded in it).

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

use super::entry::{Entry, Value};
use super::error::display_key;
use super::index::{InsertRefused, Key, KeyHasher, KeyHashes, Room, SlabCursor};
use super::transfer::{Installed, Restore, SessionRecord};
use super::{Persistence, SessionStore, StoreError};

/// Resident sessions one page of [`decode_left`](SessionStore::decode_left)
/// looks at (each page one short hold of the index lock).
const DECODE_PAGE: usize = 4096;

/// Records a bulk restore installs per hold of the index lock.
const INSTALL_PAGE: usize = 4096;

/// Records whose buckets a bulk restore reads all at once before inserting
/// them one by one ([`Index::touch`](super::index::Index::touch)).
const TOUCH_GROUP: usize = 16;

/// One session of a snapshot as borrowed bytes: what a bulk restore decodes.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The session key.
    pub key: &'a [u8],
    /// The session's version.
    pub version: u64,
    /// The ownership epoch its writer held it under.
    pub epoch: u64,
    /// Not written back to the persistence yet.
    pub dirty: bool,
    /// The state, encoded by the store's codec.
    pub value: &'a [u8],
}

/// The resident sessions taken for a snapshot; see the [module docs](self).
pub trait ResidentSessions: Send + Sync {
    /// How many sessions were resident when they were taken.
    fn count(&self) -> usize;

    /// Their total weight (the store's `total_bytes`) when they were taken.
    fn weight(&self) -> usize;

    /// Session `i` encoded, read under its shared lock (so it waits behind a
    /// running update). `None` if it left memory since it was taken, or if
    /// `i` is out of range. Blocks: call it off the async runtime's workers.
    fn encode(&self, i: usize) -> Option<Result<SessionRecord, StoreError>>;
}

struct Resident<V, P> {
    store: SessionStore<V, P>,
    entries: Vec<(Bytes, Arc<Entry<V>>)>,
    weight: usize,
}

impl<V, P> ResidentSessions for Resident<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    fn count(&self) -> usize {
        self.entries.len()
    }

    fn weight(&self) -> usize {
        self.weight
    }

    fn encode(&self, i: usize) -> Option<Result<SessionRecord, StoreError>> {
        let (key, entry) = self.entries.get(i)?;
        let state = match entry.state.try_read() {
            Ok(state) => state,
            Err(_) => entry.state.blocking_read(),
        };
        if state.retired {
            return None;
        }
        Some(self.store.record(key.clone(), &state))
    }
}

/// A chunk of records decoded for [`install_prepared`](SessionStore::install_prepared),
/// its value type hidden so that the snapshot code needs none.
pub struct PreparedChunk(Box<dyn Any + Send>);

/// A session ready to be inserted.
struct Ready<V> {
    /// Copied while its record is in the cache (an install in ring-hash
    /// order would read it from anywhere in the file).
    key: Key,
    hashes: KeyHashes,
    entry: Arc<Entry<V>>,
    weight: usize,
    version: u64,
}

/// What [`PreparedChunk`] holds.
struct Decoded<V> {
    ready: Vec<Ready<V>>,
    /// The records refused while decoding.
    refused: Restore,
}

impl<V, P> SessionStore<V, P>
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    /// Every resident session, in the index's order, for a snapshot:
    /// one index lock to take keys and entries, no encoding under it.
    pub(crate) fn resident_sessions(&self) -> Box<dyn ResidentSessions> {
        let (entries, weight) = self.with_index(|index| (index.entries(), index.bytes()));
        Box::new(Resident {
            store: self.clone(),
            entries,
            weight,
        })
    }

    /// Decodes, checks and weighs `records`, which borrow from `chunk`, off
    /// the index lock (see the [module docs](self)); callable from any
    /// thread, in parallel.
    pub(crate) fn prepare_chunk(&self, chunk: &Bytes, records: &[RawRecord<'_>]) -> PreparedChunk {
        let mut decoded = Decoded {
            ready: Vec::with_capacity(records.len()),
            refused: Restore::default(),
        };
        let defer = self.inner.persistence.durable();
        let hasher = self.with_index(|index| index.hasher());
        for record in records {
            let encoded = if defer && !record.dirty {
                slice_of(chunk, record.value)
            } else {
                None
            };
            match self.prepare_one(record, encoded, hasher) {
                Ok(ready) => decoded.ready.push(ready),
                Err(error) => decoded
                    .refused
                    .count(Err(error), || Bytes::copy_from_slice(record.key)),
            }
        }
        // In the shard index's order, for the install's bands (`ByBand`).
        decoded
            .ready
            .sort_unstable_by_key(|ready| ready.hashes.ring);
        PreparedChunk(Box::new(decoded))
    }

    /// Prepares one record: kept `encoded` if given (a clean record), decoded
    /// otherwise.
    fn prepare_one(
        &self,
        record: &RawRecord<'_>,
        encoded: Option<Bytes>,
        hasher: KeyHasher,
    ) -> Result<Ready<V>, StoreError> {
        self.check_key(record.key)?;
        let epoch = match self.claim(record.key) {
            Ok(Some(own)) => own.max(record.epoch),
            Ok(None) | Err(_) => record.epoch,
        };
        let (entry, weight) = if let Some(encoded) = encoded {
            let weight = self.bounded(record.key, encoded.len())?;
            (Entry::encoded(encoded, record.version, epoch), weight)
        } else {
            let value = self.decode_value(record.key, record.value)?;
            let weight = self.weigh(record.key, &value)?;
            (
                Entry::new(value, record.version, epoch, record.dirty),
                weight,
            )
        };
        Ok(Ready {
            key: Key::new(record.key),
            hashes: hasher.hashes(record.key),
            entry: Arc::new(entry),
            weight,
            version: record.version,
        })
    }

    /// Installs prepared chunks, a page of [`INSTALL_PAGE`] records per hold
    /// of the index lock, in the order of their ring hashes; what does not
    /// go straight in takes the per-record path (see the [module
    /// docs](self)).
    ///
    /// The order is the shard index's: each insert into it lands beside the
    /// one before, where an insert in the file's order lands anywhere in a
    /// tree of a million keys (that was most of the install's time,
    /// measured). Each chunk was sorted on the thread that prepared it;
    /// here they are taken band by band of the hash space ([`ByBand`]).
    pub(crate) async fn install_prepared(&self, chunks: Vec<PreparedChunk>) -> Restore {
        let mut report = Restore::default();
        let runs: Vec<Vec<Ready<V>>> = chunks
            .into_iter()
            .filter_map(|chunk| {
                let decoded = chunk.0.downcast::<Decoded<V>>().ok();
                if decoded.is_none() {
                    tracing::error!("a restore chunk prepared by another store; left out");
                }
                decoded.map(|decoded| {
                    report.merge(decoded.refused);
                    decoded.ready
                })
            })
            .collect();
        let total = runs.iter().map(Vec::len).sum();
        let in_bands = ByBand::new(runs, total, |ready: &Ready<V>| ready.hashes.ring);
        let slow = self.install_in_pages(in_bands, total, &mut report);
        for ready in slow {
            self.install_one(ready, &mut report).await;
        }
        report
    }

    /// Inserts `ready` (`total` sessions), a page of [`INSTALL_PAGE`] per
    /// hold of the index lock; returns those that need the per-record path.
    fn install_in_pages(
        &self,
        mut ready: impl Iterator<Item = Ready<V>>,
        total: usize,
        report: &mut Restore,
    ) -> Vec<Ready<V>> {
        let mut reserve = total;
        let mut slow = Vec::new();
        let mut group = Vec::with_capacity(TOUCH_GROUP);
        let mut left = true;
        while left {
            let now = self.inner.clock.now();
            self.with_index(|index| {
                index.reserve(std::mem::take(&mut reserve));
                for _ in 0..INSTALL_PAGE / TOUCH_GROUP {
                    group.extend(ready.by_ref().take(TOUCH_GROUP));
                    if group.is_empty() {
                        left = false;
                        return;
                    }
                    index.touch(group.iter().map(|one| one.hashes));
                    for one in group.drain(..) {
                        let Ready {
                            key,
                            hashes,
                            entry,
                            weight,
                            version,
                        } = one;
                        match index.insert_hashed(key, hashes, entry, weight, version, now) {
                            Ok(()) => report.count(Ok(Installed::Inserted), Bytes::new),
                            Err((InsertRefused::Stale { held }, _, _)) => {
                                report.count(Ok(Installed::Stale { held }), Bytes::new);
                            }
                            Err((
                                InsertRefused::Occupied | InsertRefused::Short(_),
                                key,
                                entry,
                            )) => {
                                slow.push(Ready {
                                    key,
                                    hashes,
                                    entry,
                                    weight,
                                    version,
                                });
                            }
                        }
                    }
                }
            });
        }
        slow
    }

    /// Decodes the sessions a restore left encoded that no request has used
    /// yet: a page of the index at a time, each session under its own
    /// exclusive lock taken without waiting (one in use is passed over: its
    /// user decodes it), other tasks running between pages. A session that
    /// does not fit once decoded stays encoded (no eviction for it here); one
    /// that does not decode is dropped as on first use (see
    /// `SessionStore::decoded`). Returns how many it decoded.
    pub(crate) async fn decode_left(&self) -> usize {
        let mut cursor = SlabCursor::default();
        let mut page = Vec::new();
        let (mut decoded, mut dropped) = (0, 0);
        loop {
            let walked = self.with_index(|index| {
                index.resident_where(&mut cursor, DECODE_PAGE, Entry::is_encoded, &mut page)
            });
            for (key, entry) in page.drain(..) {
                let Ok(mut state) = entry.state.try_write() else {
                    continue;
                };
                let Value::Encoded(bytes) = &state.value else {
                    continue;
                };
                if state.retired {
                    continue;
                }
                match self.decode_weighed(&key, bytes) {
                    Ok((weight, value)) => {
                        let mut room = Room::default();
                        let resized =
                            self.with_index(|index| index.resize(&key, &entry, weight, &mut room));
                        if matches!(resized, Some(Ok(_))) {
                            state.value = Value::Decoded(value);
                            decoded += 1;
                        }
                    }
                    Err(error) => {
                        if self
                            .drop_undecodable(&key, &entry, &mut state, &error)
                            .is_ok()
                        {
                            dropped += 1;
                        }
                    }
                }
            }
            if walked {
                break;
            }
            tokio::task::yield_now().await;
        }
        tracing::info!(
            decoded,
            dropped,
            "restored sessions left encoded decoded in the background"
        );
        decoded
    }

    /// Checks every invariant of the index (see `store::index`).
    #[cfg(test)]
    pub(crate) fn check_index(&self) -> Result<(), String> {
        self.with_index(|index| index.check())
    }

    /// Resident sessions still encoded (restored, not used since).
    #[cfg(test)]
    pub(crate) async fn encoded_sessions(&self) -> usize {
        let mut encoded = 0;
        for (_, entry) in self.with_index(|index| index.entries()) {
            let state = entry.state.read().await;
            encoded += usize::from(!state.retired && state.value.decoded().is_none());
        }
        encoded
    }

    /// Deferred decodes that failed (see `SessionStore::decoded`).
    #[cfg(test)]
    pub(crate) fn deferred_decode_failures(&self) -> u64 {
        self.inner.metrics.deferred_decode_failures()
    }

    /// The per-record install of a prepared session that could not go
    /// straight in.
    async fn install_one(&self, ready: Ready<V>, report: &mut Restore) {
        let Some(entry) = Arc::into_inner(ready.entry) else {
            // Never shared before it is inserted.
            tracing::error!(key = %display_key(ready.key.as_slice()), "a prepared session is shared; left out");
            report.failed += 1;
            return;
        };
        let state = entry.state.into_inner();
        // Rare (a key already held, or no room without evicting): decoded
        // here, so that the per-record path needs no encoded form.
        let value = match state.value {
            Value::Decoded(value) => Ok(value),
            Value::Encoded(bytes) => self.decode_value(ready.key.as_slice(), &bytes),
        };
        let installed = match value {
            Ok(value) => {
                self.install_with(
                    ready.key.as_slice(),
                    state.version,
                    state.epoch,
                    value,
                    state.dirty,
                )
                .await
            }
            Err(error) => Err(error),
        };
        report.count(installed, || ready.key.to_bytes());
    }
}

/// Sorted runs of prepared sessions taken band by band of the ring-hash
/// space: every session of the first band (from every run, in run order),
/// then of the next. Within a band the order is not sorted, but the band's
/// part of the shard index is small enough to stay in the cache (about
/// [`BAND_SESSIONS`] keys), which is what the order is for; each run is read
/// front to back, and no heap is kept.
struct ByBand<T> {
    runs: Vec<std::iter::Peekable<std::vec::IntoIter<T>>>,
    /// An item's ring hash.
    ring: fn(&T) -> u64,
    /// `64 - log2(bands)`: a ring hash's band is `hash >> shift`.
    shift: u32,
    band: u64,
    run: usize,
}

/// About how many sessions a band of [`ByBand`] holds.
const BAND_SESSIONS: usize = 4096;

impl<T> ByBand<T> {
    /// Takes `runs` (each sorted by `ring`, `total` items in all).
    fn new(runs: Vec<Vec<T>>, total: usize, ring: fn(&T) -> u64) -> Self {
        let bands = (total / BAND_SESSIONS)
            .clamp(1, 1 << 16)
            .next_power_of_two();
        Self {
            runs: runs
                .into_iter()
                .map(|run| run.into_iter().peekable())
                .collect(),
            ring,
            shift: 64 - bands.trailing_zeros(),
            band: 0,
            run: 0,
        }
    }
}

/// The band of `hash` at `shift` (a shift of 64, one band, puts every hash
/// in band 0).
fn band_of(hash: u64, shift: u32) -> u64 {
    hash.checked_shr(shift).unwrap_or(0)
}

impl<T> Iterator for ByBand<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let shift = self.shift;
        let last = band_of(u64::MAX, shift);
        loop {
            while let Some(run) = self.runs.get_mut(self.run) {
                match run.peek() {
                    Some(front) if band_of((self.ring)(front), shift) <= self.band => {
                        return run.next();
                    }
                    _ => self.run += 1,
                }
            }
            if self.band >= last {
                return None;
            }
            self.band += 1;
            self.run = 0;
        }
    }
}

/// `part` (a record's bytes inside `chunk`) as a slice of `chunk`, sharing
/// its buffer; `None` if it is not inside it.
fn slice_of(chunk: &Bytes, part: &[u8]) -> Option<Bytes> {
    let start = (part.as_ptr() as usize).checked_sub(chunk.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= chunk.len()).then(|| chunk.slice(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of `n` hashes in all, each sorted, spread over the hash space.
    fn runs(n: u64, count: u64) -> Vec<Vec<u64>> {
        let mut runs = vec![Vec::new(); count as usize];
        for i in 0..n {
            let hash = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            runs[(hash % count) as usize].push(hash);
        }
        for run in &mut runs {
            run.sort_unstable();
        }
        runs
    }

    #[test]
    fn bands_give_every_item_once_each_band_after_the_one_before() {
        for (n, count) in [(0, 1), (1, 1), (100, 3), (50_000, 7), (300_000, 40)] {
            let runs = runs(n, count);
            let mut want: Vec<u64> = runs.iter().flatten().copied().collect();
            let total = want.len();
            let bands = ByBand::new(runs, total, |hash: &u64| *hash);
            let shift = bands.shift;
            let got: Vec<u64> = bands.collect();
            assert!(
                got.windows(2)
                    .all(|pair| band_of(pair[0], shift) <= band_of(pair[1], shift)),
                "{n} in {count} runs: bands out of order"
            );
            let bands_used = got.iter().map(|hash| band_of(*hash, shift)).max();
            if n >= 50_000 {
                assert!(bands_used > Some(1), "{n} items in one band");
            }
            let mut sorted = got;
            sorted.sort_unstable();
            want.sort_unstable();
            assert!(
                sorted == want,
                "{n} in {count} runs: items lost or repeated ({} out of {})",
                sorted.len(),
                want.len()
            );
        }
    }
}
