//! Format 2 of the snapshot file, laid out for memory speed: large chunks,
//! each with its own checksum, so that several threads check and decode
//! them at once, and no per-record step between the file and the store.
//!
//! ```text
//! magic    "LOCUSSNP"                 8 bytes
//! version  u32 = 2                    big-endian, like every integer here
//! length   u32                        of the header
//! header   JSON SnapshotHeader        namespace, service, slot, pod, ring version, time
//! chunks   repeated (about 4 MiB each):
//!            records u32 | payload length u32 | checksum u64 | payload
//!            checksum: xxh3-64 of the payload, seeded with records << 32 | payload length
//!            payload: the chunk's records back to back, each
//!              key length u16 | flags u8 (bit 0: dirty) | value length u32 |
//!              version u64 | epoch u64 | key | value
//! trailer  "LOCUSEND" | chunks u64 | records u64 | bytes before the trailer u64 |
//!          xxh3-64 of the header and of every chunk's checksum in order u64
//! ```
//!
//! A record carries everything a session's write-backs depend on: its
//! version, the ownership epoch its writer held it under (the restoring pod
//! installs it under the higher of that epoch and its own; see
//! `docs/adr/0001-fencing.md`) and whether it was written back yet.
//!
//! **Writing.** The resident sessions are taken under the store's lock in
//! one go (keys and `Arc`s); a few threads encode runs of them, each run into
//! its own chunks, off the lock, and one thread writes the chunks in the
//! order of the runs (the index's slab order), then syncs. Chunk buffers
//! are reused.
//!
//! **Reading.** The file is mapped read-only (its pages mapped in as the
//! checking threads first read them) and
//! becomes one `Bytes` (`snapshot/mapped.rs`, the workspace's one `unsafe`
//! call; ADR 0005 step 2); where it cannot be mapped it is read instead,
//! each chunk with `pread` into a buffer of its own (a warning says so).
//! The header, the chunk table (walked from chunk header to chunk header)
//! and the trailer are checked first: their counts, lengths and the
//! trailer's checksum over the header and the chunk checksums. Then a few
//! threads each take chunks in turn: take its bytes (a slice of the mapping,
//! or its buffer), check its checksum, walk its records, skip those of keys
//! the pod does not own, and have the store prepare the others off its
//! lock: dirty records decoded and weighed, clean ones (with a durable
//! persistence) kept encoded as slices of the mapping (or of the chunk's
//! buffer), no copy, until their first use
//! (`docs/adr/0005-restore-without-building-the-heap.md`); the mapping (a
//! buffer) lives as long as a session still encoded in it, even after the
//! file is renamed and unlinked (its pages stay until the last slice goes).
//! Each thread also sorts the chunk's records by ring hash. Only when every
//! chunk passed does the store install them, band by band of the ring-hash
//! space, a few thousand records per hold of its lock (see `store::bulk`);
//! a single bad chunk refuses the whole file and installs nothing.

mod read;
mod write;

#[cfg(test)]
pub(super) use self::read::restore_file_with;
pub(super) use self::read::{restore_file, salvage_read};
pub(super) use self::write::write_file;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// This format's version number.
pub(crate) const FORMAT_VERSION: u32 = 2;
const START_BYTES: u64 = 16;
const TRAILER_BYTES: u64 = 40;
const CHUNK_HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: usize = 23;
const FLAG_DIRTY: u8 = 1;
/// A chunk is sealed once its payload reaches this size.
const CHUNK_BYTES: usize = 4 << 20;
/// Most sessions one encoding run takes (fewer for heavy sessions, so that
/// a run stays near one chunk).
const MAX_RUN_SESSIONS: usize = 4096;
/// Runs queued per encoding thread ahead of the file writer.
const RUNS_AHEAD: usize = 2;
/// Most threads encoding, or checking and decoding, at once.
const MAX_WORKERS: usize = 8;

/// Threads for `tasks` pieces of work: one per core, at most
/// [`MAX_WORKERS`], at most one per piece, at least one.
fn workers(tasks: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(1, MAX_WORKERS)
        .min(tasks.max(1))
}

/// The checksum of a chunk: covers its header's two counts too.
fn chunk_checksum(records: u32, payload: &[u8]) -> u64 {
    let len = payload.len() as u64;
    xxh3_64_with_seed(payload, (u64::from(records) << 32) | len)
}

fn be_u16(b: &[u8]) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
