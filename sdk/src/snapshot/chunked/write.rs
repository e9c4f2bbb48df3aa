//! Format 2's writer (see the [format](super)).

use std::fs::File;
use std::io::Write as _;
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use xxhash_rust::xxh3::Xxh3Default;

use super::{
    CHUNK_BYTES, CHUNK_HEADER_BYTES, FLAG_DIRTY, FORMAT_VERSION, MAX_RUN_SESSIONS,
    RECORD_HEADER_BYTES, RUNS_AHEAD, TRAILER_BYTES, chunk_checksum, workers,
};
use crate::snapshot::{
    END_MAGIC, MAGIC, MAX_HEADER_BYTES, SNAPSHOT_FILE, SnapshotError, SnapshotHeader,
    SnapshotWritten, io_error, path_in,
};
use crate::store::{ResidentSessions, SessionTable};

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

/// Writes every resident session of `store` to `dir` (see the
/// [format](super)).
pub(crate) async fn write_file(
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
