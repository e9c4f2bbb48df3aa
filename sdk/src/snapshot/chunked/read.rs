//! Format 2's reader (see the [format](super)).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use memmap2::Mmap;
use prometheus_client::metrics::gauge::Gauge;
use xxhash_rust::xxh3::Xxh3Default;

use super::{
    CHUNK_HEADER_BYTES, FLAG_DIRTY, FORMAT_VERSION, RECORD_HEADER_BYTES, START_BYTES,
    TRAILER_BYTES, be_u16, be_u32, be_u64, chunk_checksum, workers,
};
use crate::ring::Ring;
use crate::snapshot::mapped::map_snapshot;
use crate::snapshot::{
    END_MAGIC, MAGIC, MAX_HEADER_BYTES, SnapshotError, SnapshotHeader, SnapshotMetrics,
    SnapshotRestore, belongs, io_error,
};
use crate::store::{PreparedChunk, RawRecord, SessionRecord, SessionTable};

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
    /// The unsaved records of keys the pod does not own (written back
    /// before it serves, not installed).
    unsaved_not_owned: Vec<SessionRecord>,
}

/// A file whose every chunk passed, decoded and ready to install.
struct Checked {
    header: SnapshotHeader,
    records: u64,
    dirty: u64,
    not_owned: u64,
    bytes: u64,
    chunks: Vec<PreparedChunk>,
    unsaved_not_owned: Vec<SessionRecord>,
}

/// Restores the format 2 snapshot at `path` (see the [format](super)); also
/// returns the unsaved records of keys `pod` does not own (not installed).
pub(crate) async fn restore_file(
    store: Arc<dyn SessionTable>,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<(SnapshotRestore, Vec<SessionRecord>), SnapshotError> {
    restore_file_with(store, path, ring, pod, map_snapshot).await
}

/// Maps a snapshot file (the [`map_snapshot`] of a restore; a test's stand-in).
pub(crate) type MapFile = fn(&File) -> io::Result<Mmap>;

/// [`restore_file`], the file mapped by `map` (read chunk by chunk if
/// that fails).
pub(crate) async fn restore_file_with(
    store: Arc<dyn SessionTable>,
    path: &Path,
    ring: &Ring,
    pod: &str,
    map: MapFile,
) -> Result<(SnapshotRestore, Vec<SessionRecord>), SnapshotError> {
    let started = Instant::now();
    let checked = {
        let store = Arc::clone(&store);
        let path = path.to_owned();
        let ring = ring.clone();
        let pod = pod.to_owned();
        tokio::task::spawn_blocking(move || check(store.as_ref(), &path, &ring, &pod, map))
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
        unsaved_not_owned,
    } = checked;
    let restore = store.install_prepared(chunks).await;
    let report = SnapshotRestore {
        header,
        format: FORMAT_VERSION,
        records,
        dirty,
        not_owned,
        restore,
        bytes,
        check_took,
        took: started.elapsed(),
        not_owned_written_back: 0,
        pending_write_back: false,
    };
    Ok((report, unsaved_not_owned))
}

/// Checks a file's fixed start (magic, format version, header length)
/// against its length `file_len`, keeping `tail` bytes for what must follow
/// the header; returns the header's length and where the body starts, or
/// why the file is not one this build reads.
fn parse_start(
    start: &[u8; START_BYTES as usize],
    file_len: u64,
    tail: u64,
) -> Result<(u32, u64), String> {
    if &start[..8] != MAGIC {
        return Err("not a Locus snapshot (bad magic)".into());
    }
    let version = be_u32(&start[8..]);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not supported"));
    }
    let header_len = be_u32(&start[12..]);
    let body_start = START_BYTES + u64::from(header_len);
    if header_len > MAX_HEADER_BYTES || body_start + tail > file_len {
        return Err("header length out of bounds".into());
    }
    Ok((header_len, body_start))
}

/// Where a check takes the file's bytes from.
enum Source<'a> {
    /// The whole file, mapped (ADR 0005 step 2): a chunk is a slice of it.
    Mapped(Bytes),
    /// The file itself, read where needed, a chunk into a buffer of its own:
    /// where it cannot be mapped.
    Read(&'a File),
}

impl<'a> Source<'a> {
    /// Maps `file` with `map`, counting the mapping in the gauge
    /// (`locus_snapshot_encoded_bytes`) until its last slice is dropped; a
    /// file that cannot be mapped is read instead.
    fn open(file: &'a File, path: &Path, map: MapFile) -> Self {
        match map(file) {
            Ok(mapped) => Self::Mapped(Held::bytes(
                mapped,
                SnapshotMetrics::process().encoded_bytes(),
            )),
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "cannot map the snapshot; reading it chunk by chunk instead"
                );
                Self::Read(file)
            }
        }
    }

    /// Fills `buf` with the bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Self::Mapped(whole) => {
                let bytes = usize::try_from(offset)
                    .ok()
                    .and_then(|start| whole.get(start..start.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(bytes);
                Ok(())
            }
            Self::Read(file) => file.read_exact_at(buf, offset),
        }
    }

    /// The payload of chunk `at`: a slice of the mapping, or a buffer of
    /// its own read from the file (counted in the gauge while any slice of
    /// it lives).
    fn chunk(&self, at: &ChunkAt) -> Result<Bytes, String> {
        match self {
            Self::Mapped(whole) => usize::try_from(at.offset)
                .ok()
                .and_then(|start| Some(start..start.checked_add(at.len as usize)?))
                .filter(|range| range.end <= whole.len())
                .map(|range| whole.slice(range))
                .ok_or_else(|| "runs past the mapped file".to_string()),
            Self::Read(file) => {
                let mut buf = vec![0; at.len as usize];
                file.read_exact_at(&mut buf, at.offset)
                    .map_err(|e| format!("cannot be read: {e}"))?;
                Ok(Held::bytes(buf, SnapshotMetrics::process().encoded_bytes()))
            }
        }
    }
}

/// Checks the file's frame, then every chunk in parallel, decoding the
/// records `pod` owns under `ring`; the file mapped with `map` (read if
/// that fails).
fn check(
    store: &dyn SessionTable,
    path: &Path,
    ring: &Ring,
    pod: &str,
    map: MapFile,
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
    let source = Source::open(&file, path, map);
    let read_at = |buf: &mut [u8], offset: u64, what: &str| {
        source
            .read_at(buf, offset)
            .map_err(|e| corrupt(format!("{what} cut short: {e}")))
    };
    let mut start = [0u8; START_BYTES as usize];
    read_at(&mut start, 0, "header")?;
    let (header_len, body_start) = parse_start(&start, file_len, TRAILER_BYTES).map_err(corrupt)?;
    let mut header_json = vec![0u8; header_len as usize];
    read_at(&mut header_json, START_BYTES, "header")?;
    let header: SnapshotHeader = serde_json::from_slice(&header_json)
        .map_err(|e| corrupt(format!("header is not valid: {e}")))?;
    belongs(&header, path, ring, pod)?;

    let (table, records) = chunk_table(&source, path, &header_json, body_start, file_len)?;

    let owned = |key: &[u8]| ring.owner(key).pod.name == pod;
    let parts = check_chunks(&source, &table, store, &owned).map_err(corrupt)?;
    let (mut dirty, mut not_owned) = (0, 0);
    let mut chunks = Vec::with_capacity(parts.len());
    let mut unsaved_not_owned = Vec::new();
    for part in parts {
        dirty += part.dirty;
        not_owned += part.not_owned;
        chunks.push(part.prepared);
        unsaved_not_owned.extend(part.unsaved_not_owned);
    }
    Ok(Checked {
        header,
        records,
        dirty,
        not_owned,
        bytes: file_len,
        chunks,
        unsaved_not_owned,
    })
}

/// Walks the chunk headers from `body_start` to the trailer and checks them
/// against the trailer: the chunk table and its record count.
fn chunk_table(
    source: &Source<'_>,
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
        source
            .read_at(buf, offset)
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
    source: &Source<'_>,
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
                    let mut parts = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(at) = table.get(i) else { break };
                        match check_chunk(source, at, store, owned) {
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

/// Takes chunk `at` from `source` (a slice of the mapping, or a buffer of
/// its own), checks it and has the store prepare the records `owned`
/// accepts (those it keeps encoded hold slices of the mapping or buffer,
/// which lives as long as any of them).
fn check_chunk(
    source: &Source<'_>,
    at: &ChunkAt,
    store: &dyn SessionTable,
    owned: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<Part, String> {
    let len = at.len as usize;
    let chunk = source.chunk(at)?;
    let payload = &chunk[..];
    if chunk_checksum(at.records, payload) != at.checksum {
        return Err("checksum mismatch".into());
    }
    // The header's count is checked against the records once they are read; until then it
    // only sizes the list, within what the chunk's bytes can hold.
    let mut records = Vec::with_capacity((at.records as usize).min(len / RECORD_HEADER_BYTES));
    let (mut dirty, mut not_owned) = (0u64, 0u64);
    let mut unsaved_not_owned = Vec::new();
    walk_records(payload, at.records, |record| {
        dirty += u64::from(record.dirty);
        if owned(record.key) {
            records.push(record);
        } else {
            not_owned += 1;
            if record.dirty {
                unsaved_not_owned.push(owned_record(&record));
            }
        }
    })?;
    Ok(Part {
        prepared: store.prepare_chunk(&chunk, &records),
        dirty,
        not_owned,
        unsaved_not_owned,
    })
}

/// A restored file's bytes (its mapping, or a chunk's buffer where it is
/// read), counted in a gauge (`locus_snapshot_encoded_bytes`) from its
/// mapping or read until the last slice of it is dropped.
struct Held<T: AsRef<[u8]>> {
    bytes: T,
    held: Gauge,
}

impl<T: AsRef<[u8]> + Send + 'static> Held<T> {
    /// `bytes` as a `Bytes` whose slices share it, counted in `held`.
    fn bytes(bytes: T, held: &Gauge) -> Bytes {
        held.inc_by(i64::try_from(bytes.as_ref().len()).unwrap_or(i64::MAX));
        Bytes::from_owner(Self {
            bytes,
            held: held.clone(),
        })
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Held<T> {
    fn as_ref(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}

impl<T: AsRef<[u8]>> Drop for Held<T> {
    fn drop(&mut self) {
        self.held
            .dec_by(i64::try_from(self.bytes.as_ref().len()).unwrap_or(i64::MAX));
    }
}

/// Walks the records of a chunk's `payload` (checksum already checked),
/// handing each to `each`; `expected`: the count its header gives.
fn walk_records<'a>(
    payload: &'a [u8],
    expected: u32,
    mut each: impl FnMut(RawRecord<'a>),
) -> Result<(), String> {
    let len = payload.len();
    let mut count = 0u64;
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
        each(RawRecord {
            key,
            version: be_u64(&head[7..]),
            epoch: be_u64(&head[15..]),
            dirty: flags & FLAG_DIRTY != 0,
            value,
        });
    }
    if count != u64::from(expected) {
        return Err(format!(
            "its header counts {expected} records, it holds {count}"
        ));
    }
    Ok(())
}

/// A borrowed record copied out of its chunk.
fn owned_record(record: &RawRecord<'_>) -> SessionRecord {
    SessionRecord {
        key: Bytes::copy_from_slice(record.key),
        version: record.version,
        epoch: record.epoch,
        dirty: record.dirty,
        value: Bytes::copy_from_slice(record.value),
    }
}

/// What [`salvage_read`] found in a file that may be damaged.
pub(crate) struct SalvageRead {
    /// The header, if it could be read.
    pub(crate) header: Option<SnapshotHeader>,
    /// Chunks whose checksum and records check.
    pub(crate) chunks: u64,
    /// Chunks that do not (damaged, cut short).
    pub(crate) bad_chunks: u64,
    /// The unsaved records of the chunks that check.
    pub(crate) unsaved: Vec<SessionRecord>,
}

/// Reads what can be trusted of a format 2 file that could not be restored
/// (or was left behind): walks the chunks from the first, keeping the
/// unsaved records of every chunk whose checksum and records check. Needs no
/// trailer (a file cut short by a killed writer has none). A chunk whose
/// length runs past the file ends the walk; one whose checksum fails is
/// skipped (its length still leads to the next: a damaged length makes the
/// next "chunk" fail its checksum in turn).
pub(crate) fn salvage_read(path: &Path) -> Result<SalvageRead, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(io_error(path))?;
    let file_len = file.metadata().map_err(io_error(path))?.len();
    let mut read = SalvageRead {
        header: None,
        chunks: 0,
        bad_chunks: 0,
        unsaved: Vec::new(),
    };
    let mut start = [0u8; START_BYTES as usize];
    file.read_exact_at(&mut start, 0)
        .map_err(|e| corrupt(format!("header cut short: {e}")))?;
    // No trailer needed: a file cut short by a killed writer has none.
    let (header_len, body_start) = parse_start(&start, file_len, 0).map_err(corrupt)?;
    let mut header_json = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header_json, START_BYTES)
        .map_err(|e| corrupt(format!("header cut short: {e}")))?;
    read.header = serde_json::from_slice(&header_json).ok();
    let mut offset = body_start;
    let mut buf = Vec::new();
    while offset + CHUNK_HEADER_BYTES <= file_len {
        let mut head = [0u8; CHUNK_HEADER_BYTES as usize];
        if file.read_exact_at(&mut head, offset).is_err() {
            break;
        }
        if &head[..8] == END_MAGIC && file_len - offset == TRAILER_BYTES {
            break;
        }
        let records = be_u32(&head);
        let len = be_u32(&head[4..]);
        let checksum = be_u64(&head[8..]);
        let payload_at = offset + CHUNK_HEADER_BYTES;
        if payload_at + u64::from(len) > file_len {
            read.bad_chunks += 1;
            break;
        }
        buf.resize(len as usize, 0);
        if file.read_exact_at(&mut buf, payload_at).is_err() {
            read.bad_chunks += 1;
            break;
        }
        offset = payload_at + u64::from(len);
        if chunk_checksum(records, &buf) != checksum {
            read.bad_chunks += 1;
            continue;
        }
        let mut unsaved = Vec::new();
        match walk_records(&buf, records, |record| {
            if record.dirty {
                unsaved.push(owned_record(&record));
            }
        }) {
            Ok(()) => {
                read.chunks += 1;
                read.unsaved.extend(unsaved);
            }
            Err(_) => read.bad_chunks += 1,
        }
    }
    if offset + CHUNK_HEADER_BYTES > file_len && offset < file_len {
        // Bytes after the last whole chunk header: a chunk cut short.
        read.bad_chunks += 1;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_buffer_is_counted_until_its_last_slice_is_dropped() {
        let held = Gauge::default();
        let chunk = Held::bytes(vec![7; 1000], &held);
        assert_eq!(held.get(), 1000);
        let record = chunk.slice(10..20);
        drop(chunk);
        assert_eq!(held.get(), 1000, "a record still holds the buffer");
        assert_eq!(&record[..], &[7; 10]);
        drop(record);
        assert_eq!(held.get(), 0);
    }

    #[test]
    fn a_mapped_file_is_counted_whole_until_its_last_slice_is_dropped() {
        let path = std::env::temp_dir().join(format!("locus-mapped-{}", std::process::id()));
        std::fs::write(&path, [7u8; 5000]).unwrap();
        let file = File::open(&path).unwrap();
        let held = Gauge::default();
        let whole = Held::bytes(map_snapshot(&file).unwrap(), &held);
        drop(file);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(held.get(), 5000);
        let record = whole.slice(4000..4010);
        drop(whole);
        assert_eq!(held.get(), 5000, "a record still holds the whole mapping");
        assert_eq!(&record[..], &[7; 10], "readable after the unlink");
        drop(record);
        assert_eq!(held.get(), 0);
    }
}
