//! Format 1 of the snapshot file: still read, no longer written (the
//! writer stays, for tests, to make files of this format).
//!
//! ```text
//! magic    "LOCUSSNP"                 8 bytes
//! version  u32 = 1                    big-endian, like every integer here
//! length   u32                        of the header
//! header   JSON SnapshotHeader        namespace, service, slot, pod, ring version, records, time
//! records  repeated:
//!            key length u16 | key | version u64 | flags u8 (bit 0: dirty) | value length u32 | value
//! trailer  "LOCUSEND" | records u64 | bytes before the trailer u64 | xxh3-64 of those bytes u64
//! ```
//!
//! The file is read twice: first to check it (magic, version, header, every
//! record's framing, the trailer's count, length and checksum), then, only if
//! all of that holds, to install the records one by one through the store's
//! per-record install path. Format 1 keeps no epochs: a record is installed
//! under the epoch of the restoring pod's ring (it restores only keys that
//! ring gives it), which is never below the writer's.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt as _;
use xxhash_rust::xxh3::Xxh3Default;

use super::{
    END_MAGIC, MAGIC, MAX_HEADER_BYTES, SnapshotError, SnapshotHeader, SnapshotRestore, belongs,
    io_error,
};
use crate::ring::Ring;
use crate::store::SessionTable;
use crate::store::{Restore, SessionRecord};

/// This format's version number.
pub(super) const FORMAT_VERSION: u32 = 1;
const TRAILER_BYTES: u64 = 32;
const FLAG_DIRTY: u8 = 1;
/// Records in flight between the reader and the installers.
const PIPE_RECORDS: usize = 1024;
/// Most tasks installing restored records at once.
const MAX_RESTORE_WORKERS: usize = 4;

/// A reader over the snapshot that hashes what it reads.
struct Reader {
    inner: BufReader<File>,
    hash: Xxh3Default,
    read: u64,
}

impl Reader {
    fn exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hash.update(buf);
        self.read += buf.len() as u64;
        Ok(())
    }

    fn u16(&mut self) -> io::Result<u16> {
        let mut b = [0; 2];
        self.exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0; 8];
        self.exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.exact(&mut v)?;
        Ok(v)
    }
}

/// Opens the snapshot and reads its header. `file_len` bounds every length.
fn open(path: &Path) -> Result<(Reader, SnapshotHeader, u64), SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let file = File::open(path).map_err(io_error(path))?;
    let file_len = file.metadata().map_err(io_error(path))?.len();
    if file_len < 16 + TRAILER_BYTES {
        return Err(corrupt("shorter than a header and a trailer"));
    }
    let mut reader = Reader {
        inner: BufReader::with_capacity(1 << 20, file),
        hash: Xxh3Default::new(),
        read: 0,
    };
    let short = |e: io::Error| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason: format!("header cut short: {e}"),
    };
    let mut magic = [0; 8];
    reader.exact(&mut magic).map_err(short)?;
    if &magic != MAGIC {
        return Err(corrupt("not a Locus snapshot (bad magic)"));
    }
    let version = reader.u32().map_err(short)?;
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!(
            "format version {version} is not supported"
        )));
    }
    let header_len = reader.u32().map_err(short)?;
    if header_len > MAX_HEADER_BYTES || u64::from(header_len) > file_len {
        return Err(corrupt("header length out of bounds"));
    }
    let header = reader.bytes(header_len as usize).map_err(short)?;
    let header: SnapshotHeader = serde_json::from_slice(&header)
        .map_err(|e| corrupt(&format!("header is not valid: {e}")))?;
    Ok((reader, header, file_len))
}

/// Reads one record; `body_end` is where the trailer starts.
fn read_record(reader: &mut Reader, body_end: u64) -> io::Result<SessionRecord> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let key_len = u64::from(reader.u16()?);
    if reader.read + key_len + 13 > body_end {
        return Err(bad("record runs into the trailer"));
    }
    let key = reader.bytes(key_len as usize)?;
    let version = reader.u64()?;
    let mut flags = [0];
    reader.exact(&mut flags)?;
    if flags[0] & !FLAG_DIRTY != 0 {
        return Err(bad("unknown record flags"));
    }
    let value_len = u64::from(reader.u32()?);
    if reader.read + value_len > body_end {
        return Err(bad("record runs into the trailer"));
    }
    let value = reader.bytes(value_len as usize)?;
    Ok(SessionRecord {
        key: Bytes::from(key),
        version,
        // The restoring pod installs it under the epoch of its own ring (it
        // restores only keys that ring gives it), which is never below the
        // writer's: format 1 does not keep epochs.
        epoch: 0,
        dirty: flags[0] & FLAG_DIRTY != 0,
        value: Bytes::from(value),
    })
}

/// What the first pass found in an intact snapshot.
struct Checked {
    header: SnapshotHeader,
    records: u64,
    dirty: u64,
    bytes: u64,
}

/// First pass: checks every record's framing, the count, length and
/// checksum.
fn check(path: &Path) -> Result<Checked, SnapshotError> {
    let (mut reader, header, file_len) = open(path)?;
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let body_end = file_len - TRAILER_BYTES;
    let (mut records, mut dirty) = (0u64, 0u64);
    while reader.read < body_end {
        let record = read_record(&mut reader, body_end)
            .map_err(|e| corrupt(format!("record {records}: {e}")))?;
        records += 1;
        dirty += u64::from(record.dirty);
    }
    if reader.read != body_end {
        return Err(corrupt("records overlap the trailer".into()));
    }
    let digest = reader.hash.digest();
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    reader
        .inner
        .read_exact(&mut trailer)
        .map_err(|e| corrupt(format!("trailer cut short: {e}")))?;
    let field = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&trailer[i..i + 8]);
        u64::from_be_bytes(b)
    };
    if &trailer[..8] != END_MAGIC {
        return Err(corrupt("no trailer (truncated?)".into()));
    }
    if field(8) != records {
        return Err(corrupt(format!(
            "trailer counts {} records, the file holds {records}",
            field(8)
        )));
    }
    if field(16) != body_end {
        return Err(corrupt("trailer length does not match".into()));
    }
    if field(24) != digest {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(Checked {
        header,
        records,
        dirty,
        bytes: file_len,
    })
}

/// The header and the unsaved records of the intact format 1 snapshot at
/// `path` (checked whole first), for a salvage. Blocks.
pub(super) fn unsaved_records(
    path: &Path,
) -> Result<(SnapshotHeader, Vec<SessionRecord>), SnapshotError> {
    check(path)?;
    let (mut reader, header, file_len) = open(path)?;
    let body_end = file_len - TRAILER_BYTES;
    let mut unsaved = Vec::new();
    while reader.read < body_end {
        let record = read_record(&mut reader, body_end).map_err(|e| SnapshotError::Corrupt {
            path: path.to_owned(),
            reason: format!("changed while reading: {e}"),
        })?;
        if record.dirty {
            unsaved.push(record);
        }
    }
    Ok((header, unsaved))
}

/// Restores the format 1 snapshot at `path`: checked whole first, then
/// installed record by record. Also returns the unsaved records of keys
/// `pod` does not own (not installed).
pub(super) async fn restore_file(
    store: Arc<dyn SessionTable>,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<(SnapshotRestore, Vec<SessionRecord>), SnapshotError> {
    let started = Instant::now();
    let checked = path.to_owned();
    let Checked {
        header,
        records,
        dirty,
        bytes,
    } = tokio::task::spawn_blocking(move || check(&checked))
        .await
        .map_err(|e| SnapshotError::Writer {
            reason: e.to_string(),
        })??;
    let check_took = started.elapsed();
    belongs(&header, path, ring, pod)?;
    // Second pass: one reader thread deals the records this pod owns to a
    // few installing tasks (decoding and installing is the costly part).
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(1, MAX_RESTORE_WORKERS);
    let mut senders = Vec::with_capacity(workers);
    let mut installers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SessionRecord>(PIPE_RECORDS / workers);
        senders.push(tx);
        let store = Arc::clone(&store);
        installers.push(tokio::spawn(async move {
            let records = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
            store.restore(records).await
        }));
    }
    let reading = path.to_owned();
    let owned = {
        let ring = ring.clone();
        let pod = pod.to_owned();
        move |key: &[u8]| ring.owner(key).pod.name == pod
    };
    let reader = tokio::task::spawn_blocking(move || -> Result<_, SnapshotError> {
        let (mut reader, _, file_len) = open(&reading)?;
        let body_end = file_len - TRAILER_BYTES;
        let mut not_owned = 0;
        let mut unsaved_not_owned = Vec::new();
        let mut next = 0;
        while reader.read < body_end {
            let record =
                read_record(&mut reader, body_end).map_err(|e| SnapshotError::Corrupt {
                    path: reading.clone(),
                    reason: format!("changed while reading: {e}"),
                })?;
            if !owned(&record.key) {
                not_owned += 1;
                if record.dirty {
                    unsaved_not_owned.push(record);
                }
                continue;
            }
            if senders[next].blocking_send(record).is_err() {
                break;
            }
            next = (next + 1) % senders.len();
        }
        Ok((not_owned, unsaved_not_owned))
    });
    let (not_owned, unsaved_not_owned) = reader.await.map_err(|e| SnapshotError::Writer {
        reason: e.to_string(),
    })??;
    let mut restore = Restore::default();
    for installer in installers {
        let part = installer.await.map_err(|e| SnapshotError::Writer {
            reason: e.to_string(),
        })?;
        restore.inserted += part.inserted;
        restore.replaced += part.replaced;
        restore.stale += part.stale;
        restore.failed += part.failed;
        restore.errors.extend(part.errors);
    }
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

/// The format 1 writer, kept to make files of this format in tests.
#[cfg(test)]
pub(crate) mod writer {
    use std::fs::File;
    use std::io::{self, BufWriter, Write};
    use std::path::Path;
    use std::time::Instant;

    use futures::StreamExt as _;
    use xxhash_rust::xxh3::Xxh3Default;

    use super::{FLAG_DIRTY, FORMAT_VERSION, TRAILER_BYTES};
    use crate::snapshot::{
        END_MAGIC, MAGIC, SNAPSHOT_FILE, SnapshotError, SnapshotHeader, SnapshotWritten, io_error,
        path_in,
    };
    use crate::store::{SessionRecord, SessionTable};

    /// Records in flight between the store and the file writer.
    const PIPE_RECORDS: usize = 1024;

    /// A writer that hashes and counts what passes through it.
    struct Hashing<W> {
        inner: W,
        hash: Xxh3Default,
        bytes: u64,
    }

    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hash.update(&buf[..n]);
            self.bytes += n as u64;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    fn write_record(out: &mut impl Write, record: &SessionRecord) -> io::Result<()> {
        let key_len = u16::try_from(record.key.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "key longer than 65535 bytes")
        })?;
        let value_len = u32::try_from(record.value.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "value longer than 4 GiB"))?;
        out.write_all(&key_len.to_be_bytes())?;
        out.write_all(&record.key)?;
        out.write_all(&record.version.to_be_bytes())?;
        out.write_all(&[if record.dirty { FLAG_DIRTY } else { 0 }])?;
        out.write_all(&value_len.to_be_bytes())?;
        out.write_all(&record.value)
    }

    /// Writes every resident session of `store` to `dir` in format 1, as
    /// the writer of that format did: the store's snapshot stream feeds a
    /// blocking writer thread through a bounded channel.
    pub(crate) async fn write(
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
        let (tx, mut rx) = tokio::sync::mpsc::channel::<SessionRecord>(PIPE_RECORDS);
        let writer_path = tmp.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<(u64, u64), SnapshotError> {
            let path = writer_path;
            let file = File::create(&path).map_err(io_error(&path))?;
            let mut out = Hashing {
                inner: BufWriter::with_capacity(1 << 20, file),
                hash: Xxh3Default::new(),
                bytes: 0,
            };
            let header_len = u32::try_from(header_json.len()).unwrap_or(u32::MAX);
            out.write_all(MAGIC).map_err(io_error(&path))?;
            out.write_all(&FORMAT_VERSION.to_be_bytes())
                .map_err(io_error(&path))?;
            out.write_all(&header_len.to_be_bytes())
                .map_err(io_error(&path))?;
            out.write_all(&header_json).map_err(io_error(&path))?;
            let mut records = 0u64;
            while let Some(record) = rx.blocking_recv() {
                write_record(&mut out, &record).map_err(io_error(&path))?;
                records += 1;
            }
            let digest = out.hash.digest();
            let written = out.bytes;
            let mut file = out.inner;
            file.write_all(END_MAGIC).map_err(io_error(&path))?;
            file.write_all(&records.to_be_bytes())
                .map_err(io_error(&path))?;
            file.write_all(&written.to_be_bytes())
                .map_err(io_error(&path))?;
            file.write_all(&digest.to_be_bytes())
                .map_err(io_error(&path))?;
            let file = file.into_inner().map_err(|e| SnapshotError::Io {
                path: path.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(io_error(&path))?;
            Ok((records, written + TRAILER_BYTES))
        });
        let (mut skipped, mut dirty) = (0u64, 0u64);
        let mut sessions = store.snapshot();
        while let Some(record) = sessions.next().await {
            match record {
                Ok(record) => {
                    dirty += u64::from(record.dirty);
                    if tx.send(record).await.is_err() {
                        // The writer failed; its error is reported below.
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "snapshot: a session could not be encoded; left out");
                    skipped += 1;
                }
            }
        }
        drop(tx);
        let (records, bytes) = writer.await.map_err(|e| SnapshotError::Writer {
            reason: e.to_string(),
        })??;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io_error(&path))?;
        let took = started.elapsed();
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
}
