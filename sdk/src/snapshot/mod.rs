//! Fast restarts: the pod's sessions written to a memory-backed directory on
//! SIGTERM and read back when the same slot's pod starts again (the
//! "fast restarts" trick of Facebook's Scuba: the state outlives the
//! process, not the machine).
//!
//! The operator mounts a memory `emptyDir` at `/var/run/locus/snapshot`
//! (`LOCUS_SNAPSHOT_DIR`) when `spec.snapshot` is set; an in-place restart
//! (image-only change) keeps the pod, so the directory survives the
//! container.
//!
//! # File format (`sessions.snapshot`, version 1)
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
//! The file is written to `sessions.snapshot.tmp`, synced, then renamed, so a
//! snapshot is either complete or absent. On start, [`restore`] reads it
//! twice: first to check it (magic, version, header, every record's framing,
//! the trailer's count, length and checksum), then, only if all of that
//! holds, to install the records. A snapshot that is corrupt, truncated,
//! from another service or slot, or from a newer ring than the pod's is
//! logged and ignored (the pod starts cold), and in every case the file is
//! removed so that it is never restored twice. Records of keys the slot no
//! longer owns under the current ring are skipped.
//!
//! The file work runs on tokio's blocking pool (`spawn_blocking`,
//! `tokio::fs`), never on the async worker threads.
//!
//! What a restore or a write did is recorded in the process's
//! [`SnapshotMetrics`] (the `locus_snapshot_*` metrics of every
//! [`Metrics`](crate::Metrics) registry) besides the returned report.
//!
//! Why about 690 lines: the file format's writer and reader are kept side by side so a
//! change to one is seen against the other; the format and its restore path are to be
//! redone for memory speed, which is the time to split them.

mod metrics;

pub use self::metrics::SnapshotMetrics;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3Default;

use crate::ring::Ring;
use crate::store::SessionTable;
use crate::store::{Restore, SessionRecord};

/// Environment variable naming the snapshot directory.
pub const SNAPSHOT_DIR_ENV: &str = "LOCUS_SNAPSHOT_DIR";

/// The snapshot's file name in its directory.
pub const SNAPSHOT_FILE: &str = "sessions.snapshot";

const MAGIC: &[u8; 8] = b"LOCUSSNP";
const END_MAGIC: &[u8; 8] = b"LOCUSEND";
const FORMAT_VERSION: u32 = 1;
const TRAILER_BYTES: u64 = 32;
const MAX_HEADER_BYTES: u32 = 64 * 1024;
const FLAG_DIRTY: u8 = 1;
/// Records in flight between the store and the file writer.
const PIPE_RECORDS: usize = 1024;
/// Most tasks installing restored records at once.
const MAX_RESTORE_WORKERS: usize = 4;

/// Who a snapshot belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotHeader {
    /// Namespace of the service.
    pub namespace: String,
    /// Name of the service.
    pub service: String,
    /// The slot the pod served.
    pub slot: u16,
    /// The pod's name.
    pub pod: String,
    /// The ring version the pod held when it wrote the snapshot.
    pub ring_version: u64,
    /// Milliseconds since the Unix epoch when writing started.
    pub created_unix_ms: u64,
}

impl SnapshotHeader {
    /// The header for `pod` serving `slot` under `ring`, now.
    pub fn new(ring: &Ring, slot: u16, pod: &str) -> Self {
        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            namespace: ring.namespace().to_owned(),
            service: ring.service().to_owned(),
            slot,
            pod: pod.to_owned(),
            ring_version: ring.version(),
            created_unix_ms,
        }
    }
}

/// Why a snapshot was not written or not restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a complete, intact snapshot.
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot is intact but belongs to another service, slot or ring.
    #[error("snapshot {path} is not this pod's: {reason}")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Whose it is.
        reason: String,
    },
    /// The writer task ended early.
    #[error("snapshot writer stopped: {reason}")]
    Writer {
        /// Why.
        reason: String,
    },
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The file.
    pub path: PathBuf,
    /// Sessions written.
    pub records: u64,
    /// Of those, sessions not written back to the persistence yet (the
    /// restored process writes them back as usual).
    pub dirty: u64,
    /// Sessions that could not be encoded (left out).
    pub skipped: u64,
    /// File size.
    pub bytes: u64,
    /// Time taken.
    pub took: Duration,
}

/// What [`restore`] found and did.
#[derive(Debug)]
pub struct SnapshotRestore {
    /// The snapshot's header.
    pub header: SnapshotHeader,
    /// Records in the file.
    pub records: u64,
    /// Of those, records its writer had not written back to the persistence.
    pub dirty: u64,
    /// Records of keys this pod does not own under the current ring.
    pub not_owned: u64,
    /// What the store did with the others.
    pub restore: Restore,
    /// File size.
    pub bytes: u64,
    /// Time to check the file (first pass).
    pub check_took: Duration,
    /// Time to check and install.
    pub took: Duration,
}

/// The snapshot file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Removes the snapshot in `dir` and a left-over temporary file, if any;
/// true if a snapshot was there. A pod that is going away writes none and
/// leaves none behind: a later process under the same pod name and
/// directory (outside Kubernetes, where the directory may outlive the pod)
/// must not restore sessions that were handed to other pods since.
pub fn discard(dir: &Path) -> Result<bool, SnapshotError> {
    let path = path_in(dir);
    let _ = std::fs::remove_file(dir.join(format!("{SNAPSHOT_FILE}.tmp")));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io_error(&path)(error)),
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

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
    let key_len = u16::try_from(record.key.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "key longer than 65535 bytes"))?;
    let value_len = u32::try_from(record.value.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "value longer than 4 GiB"))?;
    out.write_all(&key_len.to_be_bytes())?;
    out.write_all(&record.key)?;
    out.write_all(&record.version.to_be_bytes())?;
    out.write_all(&[if record.dirty { FLAG_DIRTY } else { 0 }])?;
    out.write_all(&value_len.to_be_bytes())?;
    out.write_all(&record.value)
}

/// Writes every resident session of `store` to `dir` (see the
/// [module docs](self) for the format). The store's snapshot stream feeds a
/// blocking writer thread through a bounded channel. Recorded in
/// [`SnapshotMetrics::process`].
pub async fn write(
    store: &dyn SessionTable,
    dir: &Path,
    header: &SnapshotHeader,
) -> Result<SnapshotWritten, SnapshotError> {
    let result = write_file(store, dir, header).await;
    match &result {
        Ok(written) => SnapshotMetrics::process().written(written),
        Err(_) => SnapshotMetrics::process().write_failed(),
    }
    result
}

async fn write_file(
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

/// Restores the snapshot in `dir` into `store` if it is intact and belongs
/// to `pod` serving its slot of `ring`'s service; records of keys `pod` does
/// not own under `ring` are skipped. `Ok(None)`: no snapshot. The file is
/// removed afterwards, whatever the outcome. Recorded in
/// [`SnapshotMetrics::process`].
pub async fn restore(
    store: Arc<dyn SessionTable>,
    dir: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<Option<SnapshotRestore>, SnapshotError> {
    let path = path_in(dir);
    // An error other than "absent" (permissions, say) shows in the restore.
    if !tokio::fs::try_exists(&path).await.unwrap_or(true) {
        return Ok(None);
    }
    let result = restore_file(store, &path, ring, pod).await;
    if let Err(error) = tokio::fs::remove_file(&path).await {
        tracing::warn!(path = %path.display(), %error, "cannot remove the snapshot after reading it");
    }
    match &result {
        Ok(report) => {
            SnapshotMetrics::process().restored(report);
            tracing::info!(
            path = %path.display(),
            records = report.records,
            dirty = report.dirty,
            restored = report.restore.inserted + report.restore.replaced,
            not_owned = report.not_owned,
            failed = report.restore.failed,
            bytes = report.bytes,
            took = ?report.took,
            "snapshot restored"
            );
        }
        Err(error) => {
            SnapshotMetrics::process().ignored();
            tracing::warn!(%error, "snapshot ignored; starting cold");
        }
    }
    result.map(Some)
}

/// Checks that the snapshot is this pod's: same service, the slot it
/// serves, a ring no newer than the pod's.
fn belongs(
    header: &SnapshotHeader,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<(), SnapshotError> {
    let foreign = |reason: String| SnapshotError::Foreign {
        path: path.to_owned(),
        reason,
    };
    if header.namespace != ring.namespace() || header.service != ring.service() {
        return Err(foreign(format!(
            "it is for service {}/{}, this pod serves {}/{}",
            header.namespace,
            header.service,
            ring.namespace(),
            ring.service()
        )));
    }
    let slot = crate::driver::plan::serving_slot(ring, pod);
    if slot != Some(header.slot) {
        return Err(foreign(format!(
            "it is for slot {}, this pod serves {slot:?}",
            header.slot
        )));
    }
    if header.ring_version > ring.version() {
        return Err(foreign(format!(
            "it was written under ring version {}, newer than this pod's {}",
            header.ring_version,
            ring.version()
        )));
    }
    Ok(())
}

async fn restore_file(
    store: Arc<dyn SessionTable>,
    path: &Path,
    ring: &Ring,
    pod: &str,
) -> Result<SnapshotRestore, SnapshotError> {
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
    let reader = tokio::task::spawn_blocking(move || -> Result<u64, SnapshotError> {
        let (mut reader, _, file_len) = open(&reading)?;
        let body_end = file_len - TRAILER_BYTES;
        let mut not_owned = 0;
        let mut next = 0;
        while reader.read < body_end {
            let record =
                read_record(&mut reader, body_end).map_err(|e| SnapshotError::Corrupt {
                    path: reading.clone(),
                    reason: format!("changed while reading: {e}"),
                })?;
            if !owned(&record.key) {
                not_owned += 1;
                continue;
            }
            if senders[next].blocking_send(record).is_err() {
                break;
            }
            next = (next + 1) % senders.len();
        }
        Ok(not_owned)
    });
    let not_owned = reader.await.map_err(|e| SnapshotError::Writer {
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
    Ok(SnapshotRestore {
        header,
        records,
        dirty,
        not_owned,
        restore,
        bytes,
        check_took,
        took: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Assignment, Pod, RingParts, ShardCount, Slot, SlotState, Transition};
    use crate::store::{JsonCodec, SessionStore, Versioned};

    fn ring(service: &str, version: u64, table: Vec<u16>) -> Ring {
        let slot = |index: u16| Slot {
            index,
            pod: Pod {
                name: format!("svc-{index}-x"),
                uid: format!("uid-{index}"),
                address: format!("10.0.0.{}:80", index + 1).parse().unwrap(),
            },
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        };
        Ring::new(RingParts {
            namespace: "ns".into(),
            service: service.into(),
            version,
            shards: ShardCount::new(table.len() as u32).unwrap(),
            vnodes: 8,
            slots: vec![slot(0), slot(1)],
            current: Assignment::new(table).unwrap(),
            transition: Transition::Stable,
        })
        .unwrap()
    }

    fn store() -> SessionStore<String> {
        SessionStore::builder(JsonCodec, String::len)
            .build()
            .unwrap()
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("locus-snap-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A store with 50 sessions (versions 1..=3, some clean), snapshotted
    /// by pod `svc-0-x` of slot 0 under a ring where slot 0 owns everything.
    async fn written(name: &str) -> (PathBuf, Ring, SessionStore<String>) {
        let dir = dir(name);
        let ring = ring("svc", 4, vec![0, 0]);
        let store = store();
        for i in 0..50 {
            let key = format!("k{i}");
            store
                .install(
                    key.as_bytes(),
                    Versioned::new(i % 3 + 1, format!("value {i}")),
                )
                .await
                .unwrap();
        }
        let header = SnapshotHeader::new(&ring, 0, "svc-0-x");
        let done = write(&store, &dir, &header).await.unwrap();
        assert_eq!((done.records, done.skipped), (50, 0));
        assert_eq!(done.bytes, std::fs::metadata(path_in(&dir)).unwrap().len());
        (dir, ring, store)
    }

    #[tokio::test]
    async fn a_snapshot_restores_every_session_with_its_version_once() {
        let (dir, ring, original) = written("round").await;
        let restored = store();
        let report = restore(Arc::new(restored.clone()), &dir, &ring, "svc-0-x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.records, 50);
        assert_eq!(report.restore.inserted, 50);
        assert_eq!(report.header.slot, 0);
        for i in 0..50u64 {
            let key = format!("k{i}");
            let got = restored.get(key.as_bytes()).await.unwrap();
            assert_eq!(got, original.get(key.as_bytes()).await.unwrap());
            assert_eq!(got.version, i % 3 + 1);
        }
        assert!(!path_in(&dir).exists(), "a snapshot is restored only once");
        assert!(
            restore(Arc::new(store()), &dir, &ring, "svc-0-x")
                .await
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn refused(
        name: &str,
        damage: impl FnOnce(&Path),
        pod: &str,
        ring: Option<Ring>,
    ) -> SnapshotError {
        let (dir, own_ring, _) = written(name).await;
        damage(&path_in(&dir));
        let target = store();
        let ring = ring.unwrap_or(own_ring);
        let error = restore(Arc::new(target.clone()), &dir, &ring, pod)
            .await
            .unwrap_err();
        assert_eq!(
            target.stats().sessions,
            0,
            "nothing installed from a refused snapshot"
        );
        assert!(!path_in(&dir).exists(), "a refused snapshot is removed");
        std::fs::remove_dir_all(&dir).unwrap();
        error
    }

    #[tokio::test]
    async fn a_restore_and_a_write_are_recorded_in_the_process_metrics() {
        let process = SnapshotMetrics::process();
        let (written_before, restored_before) = (process.written_total(), process.restored_total());
        let (dir, ring, _) = written("metrics").await;
        assert!(process.written_total() > written_before);
        let report = restore(Arc::new(store()), &dir, &ring, "svc-0-x")
            .await
            .unwrap()
            .unwrap();
        // Installed, never written back: every record is dirty.
        assert_eq!((report.records, report.dirty), (50, 50));
        assert!(process.restored_total() > restored_before);
        // Every Metrics registry renders them: the sample's /metrics page has them.
        let page = crate::Metrics::new().encode();
        for family in [
            "locus_snapshot_restores_total{outcome=\"restored\"}",
            "locus_snapshot_restore_records ",
            "locus_snapshot_restore_seconds ",
            "locus_snapshot_write_seconds ",
        ] {
            assert!(page.contains(family), "missing `{family}` in\n{page}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_snapshot_is_detected_and_ignored() {
        let flip = |path: &Path| {
            let mut bytes = std::fs::read(path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            std::fs::write(path, bytes).unwrap();
        };
        let error = refused("corrupt", flip, "svc-0-x", None).await;
        assert!(matches!(error, SnapshotError::Corrupt { .. }), "{error}");
        let magic = |path: &Path| {
            let mut bytes = std::fs::read(path).unwrap();
            bytes[0] = b'X';
            std::fs::write(path, bytes).unwrap();
        };
        let error = refused("magic", magic, "svc-0-x", None).await;
        assert!(error.to_string().contains("bad magic"), "{error}");
    }

    #[tokio::test]
    async fn a_truncated_snapshot_is_detected_and_ignored() {
        for cut in [1, 20, 33, 500] {
            let truncate = |path: &Path| {
                let bytes = std::fs::read(path).unwrap();
                std::fs::write(path, &bytes[..bytes.len() - cut]).unwrap();
            };
            let error = refused(&format!("cut{cut}"), truncate, "svc-0-x", None).await;
            assert!(
                matches!(error, SnapshotError::Corrupt { .. }),
                "cut {cut}: {error}"
            );
        }
        let header_only = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            std::fs::write(path, &bytes[..60]).unwrap();
        };
        let error = refused("header", header_only, "svc-0-x", None).await;
        assert!(matches!(error, SnapshotError::Corrupt { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_foreign_snapshot_is_detected_and_ignored() {
        let keep = |_: &Path| {};
        let other_service = refused(
            "service",
            keep,
            "svc-0-x",
            Some(ring("other", 4, vec![0, 0])),
        )
        .await;
        assert!(
            matches!(other_service, SnapshotError::Foreign { .. }),
            "{other_service}"
        );
        let other_slot = refused("slot", keep, "svc-1-x", None).await;
        assert!(other_slot.to_string().contains("slot 0"), "{other_slot}");
        let older_ring = refused("newer", keep, "svc-0-x", Some(ring("svc", 3, vec![0, 0]))).await;
        assert!(older_ring.to_string().contains("newer"), "{older_ring}");
    }

    #[tokio::test]
    async fn records_of_shards_the_slot_lost_are_skipped() {
        let (dir, _, _) = written("moved").await;
        // Slot 0 now owns only shard 0 of 2.
        let ring = ring("svc", 5, vec![0, 1]);
        let target = store();
        let report = restore(Arc::new(target.clone()), &dir, &ring, "svc-0-x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.records, 50);
        assert!(report.not_owned > 0 && report.restore.inserted > 0);
        assert_eq!(report.not_owned + report.restore.inserted as u64, 50);
        for key in target.resident_keys() {
            assert_eq!(ring.owner(&key).index, 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_discarded_snapshot_is_gone_and_never_restored() {
        let (dir, ring, _) = written("discard").await;
        std::fs::write(dir.join(format!("{SNAPSHOT_FILE}.tmp")), b"partial").unwrap();
        assert!(discard(&dir).unwrap());
        assert!(!path_in(&dir).exists());
        assert!(!dir.join(format!("{SNAPSHOT_FILE}.tmp")).exists());
        assert!(!discard(&dir).unwrap(), "nothing left to discard");
        let restored = restore(Arc::new(store()), &dir, &ring, "svc-0-x")
            .await
            .unwrap();
        assert!(restored.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
