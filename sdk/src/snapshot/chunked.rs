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
//! order of the runs (least recently used first, the order a restore
//! installs them in), then syncs. Chunk buffers are reused.
//!
//! **Reading.** The header, the chunk table (walked from chunk header to
//! chunk header) and the trailer are checked first: their counts, lengths
//! and the trailer's checksum over the header and the chunk checksums. Then
//! a few threads each take chunks in turn: read it once (`pread` into a
//! buffer the thread reuses), check its checksum, walk its records, skip
//! those of keys the pod does not own, and have the store decode and weigh
//! the others off its lock. Only when every chunk passed does the store
//! install them (one lock per chunk, see `store::bulk`); a single bad chunk
//! refuses the whole file and installs nothing.

use std::fs::File;
use std::io::Write as _;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64_with_seed};

use super::{
    END_MAGIC, MAGIC, MAX_HEADER_BYTES, SNAPSHOT_FILE, SnapshotError, SnapshotHeader,
    SnapshotRestore, SnapshotWritten, belongs, io_error, path_in,
};
use crate::ring::Ring;
use crate::store::{PreparedChunk, RawRecord, ResidentSessions, SessionTable};

/// This format's version number.
pub(super) const FORMAT_VERSION: u32 = 2;
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

// ---------------------------------------------------------------------------
// Writing.

/// A sealed chunk, ready to be written.
struct Chunk {
    records: u32,
    checksum: u64,
    payload: Vec<u8>,
}

/// What one encoding run produced.
#[derive(Default)]
struct Run {
    chunks: Vec<Chunk>,
    dirty: u64,
    skipped: u64,
}

/// Chunk buffers given back by the file writer, for the encoders to fill again.
type Spare = Mutex<Vec<Vec<u8>>>;

fn spare_buffer(spare: &Spare) -> Vec<u8> {
    spare
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4))
}

/// What the file holds, for the report.
#[derive(Default)]
struct Counts {
    records: u64,
    dirty: u64,
    skipped: u64,
    bytes: u64,
}

/// Writes every resident session of `store` to `dir` (see the [module
/// docs](self)).
pub(super) async fn write_file(
    store: &dyn SessionTable,
    dir: &Path,
    header: &SnapshotHeader,
) -> Result<SnapshotWritten, SnapshotError> {
    let started = Instant::now();
    let path = path_in(dir);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let header_json = serde_json::to_vec(header).map_err(|e| SnapshotError::Writer {
        reason: e.to_string(),
    })?;
    let sessions = store.resident_sessions();
    let writing = tmp.clone();
    let counts = tokio::task::spawn_blocking(move || {
        write_blocking(sessions.as_ref(), &writing, &header_json)
    })
    .await
    .map_err(|e| SnapshotError::Writer {
        reason: e.to_string(),
    })??;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(io_error(&path))?;
    let took = started.elapsed();
    let Counts {
        records,
        dirty,
        skipped,
        bytes,
    } = counts;
    tracing::info!(path = %path.display(), records, dirty, bytes, ?took, "snapshot written");
    Ok(SnapshotWritten {
        path,
        records,
        dirty,
        skipped,
        bytes,
        took,
    })
}

fn write_blocking(
    sessions: &dyn ResidentSessions,
    path: &Path,
    header_json: &[u8],
) -> Result<Counts, SnapshotError> {
    let header_len = u32::try_from(header_json.len())
        .ok()
        .filter(|len| *len <= MAX_HEADER_BYTES)
        .ok_or_else(|| SnapshotError::Writer {
            reason: "the header is too long".into(),
        })?;
    let mut file = File::create(path).map_err(io_error(path))?;
    let mut start = Vec::with_capacity(16 + header_json.len());
    start.extend_from_slice(MAGIC);
    start.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    start.extend_from_slice(&header_len.to_be_bytes());
    start.extend_from_slice(header_json);
    file.write_all(&start).map_err(io_error(path))?;
    let mut table = Table {
        file,
        digest: Xxh3Default::new(),
        chunks: 0,
        counts: Counts {
            bytes: start.len() as u64,
            ..Counts::default()
        },
    };
    table.digest.update(header_json);

    let count = sessions.count();
    let per_session = sessions.weight() / count.max(1);
    let run = (CHUNK_BYTES / per_session.max(1)).clamp(1, MAX_RUN_SESSIONS);
    let runs = count.div_ceil(run);
    let workers = workers(runs);
    let spare = Spare::default();
    std::thread::scope(|scope| {
        let mut receivers = Vec::with_capacity(workers);
        for first in 0..workers {
            let (tx, rx) = sync_channel::<Run>(RUNS_AHEAD);
            receivers.push(rx);
            let spare = &spare;
            scope.spawn(move || {
                for index in (first..runs).step_by(workers) {
                    let start = index * run;
                    let sessions_of_run = start..(start + run).min(count);
                    if tx
                        .send(encode_run(sessions, sessions_of_run, spare))
                        .is_err()
                    {
                        // The file writer failed; it reports why.
                        break;
                    }
                }
            });
        }
        let written = table.write_runs(&receivers, runs, &spare, path);
        // On an error, dropping the receivers stops the encoders.
        drop(receivers);
        written
    })?;

    let Table {
        mut file,
        digest,
        chunks,
        mut counts,
    } = table;
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    trailer[..8].copy_from_slice(END_MAGIC);
    trailer[8..16].copy_from_slice(&chunks.to_be_bytes());
    trailer[16..24].copy_from_slice(&counts.records.to_be_bytes());
    trailer[24..32].copy_from_slice(&counts.bytes.to_be_bytes());
    trailer[32..].copy_from_slice(&digest.digest().to_be_bytes());
    file.write_all(&trailer).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    counts.bytes += TRAILER_BYTES;
    Ok(counts)
}

/// The file being written and what it holds so far.
struct Table {
    file: File,
    digest: Xxh3Default,
    chunks: u64,
    counts: Counts,
}

impl Table {
    /// Writes the runs in order, taking run `i` from encoder `i % workers`.
    fn write_runs(
        &mut self,
        receivers: &[Receiver<Run>],
        runs: usize,
        spare: &Spare,
        path: &Path,
    ) -> Result<(), SnapshotError> {
        for index in 0..runs {
            let run =
                receivers[index % receivers.len()]
                    .recv()
                    .map_err(|_| SnapshotError::Writer {
                        reason: "an encoding thread stopped".into(),
                    })?;
            self.counts.dirty += run.dirty;
            self.counts.skipped += run.skipped;
            for chunk in run.chunks {
                let mut head = [0u8; CHUNK_HEADER_BYTES as usize];
                head[..4].copy_from_slice(&chunk.records.to_be_bytes());
                head[4..8].copy_from_slice(&(chunk.payload.len() as u32).to_be_bytes());
                head[8..].copy_from_slice(&chunk.checksum.to_be_bytes());
                self.file.write_all(&head).map_err(io_error(path))?;
                self.file
                    .write_all(&chunk.payload)
                    .map_err(io_error(path))?;
                self.digest.update(&chunk.checksum.to_be_bytes());
                self.chunks += 1;
                self.counts.records += u64::from(chunk.records);
                self.counts.bytes += CHUNK_HEADER_BYTES + chunk.payload.len() as u64;
                let mut payload = chunk.payload;
                payload.clear();
                spare
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(payload);
            }
        }
        Ok(())
    }
}

/// Encodes sessions `range` into chunks.
fn encode_run(sessions: &dyn ResidentSessions, range: Range<usize>, spare: &Spare) -> Run {
    let mut run = Run::default();
    let mut payload = spare_buffer(spare);
    let mut records = 0u32;
    let seal = |records: &mut u32, payload: &mut Vec<u8>, run: &mut Run| {
        let full = std::mem::replace(payload, spare_buffer(spare));
        run.chunks.push(Chunk {
            records: *records,
            checksum: chunk_checksum(*records, &full),
            payload: full,
        });
        *records = 0;
    };
    for i in range {
        let record = match sessions.encode(i) {
            None => continue,
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                tracing::warn!(%error, "snapshot: a session could not be encoded; left out");
                run.skipped += 1;
                continue;
            }
        };
        let len = RECORD_HEADER_BYTES + record.key.len() + record.value.len();
        let (Ok(key_len), Ok(value_len), true) = (
            u16::try_from(record.key.len()),
            u32::try_from(record.value.len()),
            u32::try_from(len).is_ok(),
        ) else {
            tracing::warn!(
                key_bytes = record.key.len(),
                value_bytes = record.value.len(),
                "snapshot: a session is too large for the file; left out"
            );
            run.skipped += 1;
            continue;
        };
        if records > 0 && (payload.len() + len > u32::MAX as usize || records == u32::MAX) {
            seal(&mut records, &mut payload, &mut run);
        }
        payload.extend_from_slice(&key_len.to_be_bytes());
        payload.push(if record.dirty { FLAG_DIRTY } else { 0 });
        payload.extend_from_slice(&value_len.to_be_bytes());
        payload.extend_from_slice(&record.version.to_be_bytes());
        payload.extend_from_slice(&record.epoch.to_be_bytes());
        payload.extend_from_slice(&record.key);
        payload.extend_from_slice(&record.value);
        records += 1;
        run.dirty += u64::from(record.dirty);
        if payload.len() >= CHUNK_BYTES {
            seal(&mut records, &mut payload, &mut run);
        }
    }
    if records > 0 {
        seal(&mut records, &mut payload, &mut run);
    }
    spare
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(payload);
    run
}

// ---------------------------------------------------------------------------
// Reading.

/// Where a chunk is and what its header says.
struct ChunkAt {
    /// Offset of its payload in the file.
    offset: u64,
    len: u32,
    records: u32,
    checksum: u64,
}

/// What a checking thread made of one chunk.
struct Part {
    prepared: PreparedChunk,
    dirty: u64,
    not_owned: u64,
}

/// A file whose every chunk passed, decoded and ready to install.
struct Checked {
    header: SnapshotHeader,
    records: u64,
    dirty: u64,
    not_owned: u64,
    bytes: u64,
    chunks: Vec<PreparedChunk>,
}

/// Restores the format 2 snapshot at `path` (see the [module docs](self)).
pub(super) async fn restore_file(
    store: Arc<dyn SessionTable>,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<SnapshotRestore, SnapshotError> {
    let started = Instant::now();
    let checked = {
        let store = Arc::clone(&store);
        let path = path.to_owned();
        let ring = ring.clone();
        let pod = pod.to_owned();
        tokio::task::spawn_blocking(move || check(store.as_ref(), &path, &ring, &pod))
            .await
            .map_err(|e| SnapshotError::Writer {
                reason: e.to_string(),
            })??
    };
    let check_took = started.elapsed();
    let Checked {
        header,
        records,
        dirty,
        not_owned,
        bytes,
        chunks,
    } = checked;
    let restore = store.install_prepared(chunks).await;
    Ok(SnapshotRestore {
        header,
        format: FORMAT_VERSION,
        records,
        dirty,
        not_owned,
        restore,
        bytes,
        check_took,
        took: started.elapsed(),
    })
}

/// Checks the file's frame, then every chunk in parallel, decoding the
/// records `pod` owns under `ring`.
fn check(
    store: &dyn SessionTable,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<Checked, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(io_error(path))?;
    let file_len = file.metadata().map_err(io_error(path))?.len();
    if file_len < START_BYTES + TRAILER_BYTES {
        return Err(corrupt("shorter than a header and a trailer".into()));
    }
    let read_at = |buf: &mut [u8], offset: u64, what: &str| {
        file.read_exact_at(buf, offset)
            .map_err(|e| corrupt(format!("{what} cut short: {e}")))
    };
    let mut start = [0u8; START_BYTES as usize];
    read_at(&mut start, 0, "header")?;
    if &start[..8] != MAGIC {
        return Err(corrupt("not a Locus snapshot (bad magic)".into()));
    }
    let version = be_u32(&start[8..]);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {version} is not supported"
        )));
    }
    let header_len = be_u32(&start[12..]);
    let body_start = START_BYTES + u64::from(header_len);
    if header_len > MAX_HEADER_BYTES || body_start + TRAILER_BYTES > file_len {
        return Err(corrupt("header length out of bounds".into()));
    }
    let mut header_json = vec![0u8; header_len as usize];
    read_at(&mut header_json, START_BYTES, "header")?;
    let header: SnapshotHeader = serde_json::from_slice(&header_json)
        .map_err(|e| corrupt(format!("header is not valid: {e}")))?;
    belongs(&header, path, ring, pod)?;

    let (table, records) = chunk_table(&file, path, &header_json, body_start, file_len)?;

    let owned = |key: &[u8]| ring.owner(key).pod.name == pod;
    let parts = check_chunks(&file, &table, store, &owned).map_err(corrupt)?;
    let (mut dirty, mut not_owned) = (0, 0);
    let mut chunks = Vec::with_capacity(parts.len());
    for part in parts {
        dirty += part.dirty;
        not_owned += part.not_owned;
        chunks.push(part.prepared);
    }
    Ok(Checked {
        header,
        records,
        dirty,
        not_owned,
        bytes: file_len,
        chunks,
    })
}

/// Walks the chunk headers from `body_start` to the trailer and checks them
/// against the trailer: the chunk table and its record count.
fn chunk_table(
    file: &File,
    path: &Path,
    header_json: &[u8],
    body_start: u64,
    file_len: u64,
) -> Result<(Vec<ChunkAt>, u64), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let read_at = |buf: &mut [u8], offset: u64, what: &str| {
        file.read_exact_at(buf, offset)
            .map_err(|e| corrupt(format!("{what} cut short: {e}")))
    };
    let body_end = file_len - TRAILER_BYTES;
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    read_at(&mut trailer, body_end, "trailer")?;
    if &trailer[..8] != END_MAGIC {
        return Err(corrupt("no trailer (truncated?)".into()));
    }
    let mut digest = Xxh3Default::new();
    digest.update(header_json);
    let mut table = Vec::new();
    let mut records = 0u64;
    let mut offset = body_start;
    while offset < body_end {
        let n = table.len();
        if offset + CHUNK_HEADER_BYTES > body_end {
            return Err(corrupt(format!("chunk {n} runs into the trailer")));
        }
        let mut head = [0u8; CHUNK_HEADER_BYTES as usize];
        read_at(&mut head, offset, "chunk header")?;
        let at = ChunkAt {
            offset: offset + CHUNK_HEADER_BYTES,
            records: be_u32(&head),
            len: be_u32(&head[4..]),
            checksum: be_u64(&head[8..]),
        };
        offset = at.offset + u64::from(at.len);
        if offset > body_end {
            return Err(corrupt(format!("chunk {n} runs into the trailer")));
        }
        digest.update(&head[8..]);
        records += u64::from(at.records);
        table.push(at);
    }
    if be_u64(&trailer[8..]) != table.len() as u64 {
        return Err(corrupt(format!(
            "trailer counts {} chunks, the file holds {}",
            be_u64(&trailer[8..]),
            table.len()
        )));
    }
    if be_u64(&trailer[16..]) != records {
        return Err(corrupt(format!(
            "trailer counts {} records, the chunks hold {records}",
            be_u64(&trailer[16..])
        )));
    }
    if be_u64(&trailer[24..]) != body_end {
        return Err(corrupt("trailer length does not match".into()));
    }
    if be_u64(&trailer[32..]) != digest.digest() {
        return Err(corrupt(
            "checksum mismatch over the header and the chunk table".into(),
        ));
    }

    Ok((table, records))
}

/// Checks and decodes every chunk of `table`, a few threads taking chunks
/// in turn; the parts come back in the table's order. The first bad chunk
/// stops them all.
fn check_chunks(
    file: &File,
    table: &[ChunkAt],
    store: &dyn SessionTable,
    owned: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<Vec<Part>, String> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let done: Vec<Result<Vec<(usize, Part)>, String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers(table.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut buf = Vec::new();
                    let mut parts = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(at) = table.get(i) else { break };
                        match check_chunk(file, at, &mut buf, store, owned) {
                            Ok(part) => parts.push((i, part)),
                            Err(reason) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(format!(
                                    "chunk {i} (bytes {}..{}): {reason}",
                                    at.offset,
                                    at.offset + u64::from(at.len)
                                ));
                            }
                        }
                    }
                    Ok(parts)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut parts = Vec::with_capacity(table.len());
    for thread in done {
        parts.extend(thread?);
    }
    parts.sort_unstable_by_key(|(i, _)| *i);
    Ok(parts.into_iter().map(|(_, part)| part).collect())
}

/// Reads chunk `at` into `buf` (reused), checks it and decodes the records
/// `owned` accepts.
fn check_chunk(
    file: &File,
    at: &ChunkAt,
    buf: &mut Vec<u8>,
    store: &dyn SessionTable,
    owned: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<Part, String> {
    let len = at.len as usize;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    file.read_exact_at(&mut buf[..len], at.offset)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let payload = &buf[..len];
    if chunk_checksum(at.records, payload) != at.checksum {
        return Err("checksum mismatch".into());
    }
    let mut records = Vec::with_capacity(at.records as usize);
    let (mut count, mut dirty, mut not_owned) = (0u64, 0u64, 0u64);
    let mut pos = 0;
    while pos < len {
        let head = payload
            .get(pos..pos + RECORD_HEADER_BYTES)
            .ok_or("a record runs past the chunk")?;
        let flags = head[2];
        if flags & !FLAG_DIRTY != 0 {
            return Err(format!("record {count}: unknown flags {flags:#x}"));
        }
        let key_start = pos + RECORD_HEADER_BYTES;
        let value_start = key_start + usize::from(be_u16(head));
        let end = value_start + be_u32(&head[3..]) as usize;
        let (Some(key), Some(value)) = (
            payload.get(key_start..value_start),
            payload.get(value_start..end),
        ) else {
            return Err(format!("record {count} runs past the chunk"));
        };
        pos = end;
        count += 1;
        let record = RawRecord {
            key,
            version: be_u64(&head[7..]),
            epoch: be_u64(&head[15..]),
            dirty: flags & FLAG_DIRTY != 0,
            value,
        };
        dirty += u64::from(record.dirty);
        if owned(key) {
            records.push(record);
        } else {
            not_owned += 1;
        }
    }
    if count != u64::from(at.records) {
        return Err(format!(
            "its header counts {} records, it holds {count}",
            at.records
        ));
    }
    Ok(Part {
        prepared: store.prepare_chunk(&records),
        dirty,
        not_owned,
    })
}
