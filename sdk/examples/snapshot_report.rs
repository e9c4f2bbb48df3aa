//! Fast-restart figures: how long a pod takes to write its sessions to the
//! snapshot directory and to restore them, against writing them to and
//! reloading them from PostgreSQL.
//!
//! ```text
//! cargo run --release -p locus --example snapshot_report -- \
//!     --bytes 1GiB [--session-bytes 1024] [--dir /dev/shm/locus-snapshot-report] \
//!     [--postgres "host=/path/to/socket/dir user=postgres dbname=postgres"] \
//!     [--phase all|write|restore] [--durable no|yes] [--read-all no|yes]
//! ```
//!
//! Sessions are strings of `--session-bytes` bytes (JSON-encoded by the
//! store's codec), `--bytes` of them in total. The snapshot goes to `--dir`
//! (a memory-backed directory, like the operator's `emptyDir`). With
//! `--postgres`, the same sessions are written to a table with 8 connections
//! in batches of 1000 rows, then reloaded twice: through the store's
//! `Persistence` one session at a time (64 loads in flight: what a cold pod
//! does as requests arrive), and by one streamed `SELECT` installed in bulk
//! (the best a cold start from the database could do).
//!
//! `--phase write` only fills the store and writes the snapshot (and leaves
//! it); `--phase restore` only restores the snapshot found in `--dir`: each
//! phase in its own process, to profile it or to measure its peak memory
//! alone (`/usr/bin/time -v`).
//!
//! `--durable yes` stands for a service with a database: the write phase
//! writes every session back first (the snapshot's records are clean), and
//! the restored store's persistence says it is durable (it keeps nothing),
//! so the restore leaves the clean sessions encoded until their first use
//! (`docs/adr/0005-restore-without-building-the-heap.md`). Without it every
//! record is unsaved and decoded at restore. `--read-all yes` then reads
//! every session once after the restore (their first use) and times it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a report: a failed unwrap is a failed run"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use locus::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
use locus::snapshot::{self, SnapshotHeader};
use locus::store::{JsonCodec, Limits, Persistence, SessionStore, Stamp, Stored, Versioned};
use tokio_postgres::{Client, NoTls, Statement};

const POD: &str = "report-0-x";

fn parse_bytes(text: &str) -> u64 {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number.parse().expect("a size such as 1GiB or 512MiB");
    n * match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => panic!("unknown unit {other}"),
    }
}

struct Args {
    bytes: u64,
    session_bytes: usize,
    dir: PathBuf,
    postgres: Option<String>,
    phase: String,
    durable: bool,
    read_all: bool,
}

fn args() -> Args {
    let mut args = Args {
        bytes: 1 << 30,
        session_bytes: 1024,
        dir: PathBuf::from("/dev/shm/locus-snapshot-report"),
        postgres: None,
        phase: "all".into(),
        durable: false,
        read_all: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag takes a value");
        match flag.as_str() {
            "--bytes" => args.bytes = parse_bytes(&value),
            "--session-bytes" => args.session_bytes = value.parse().unwrap(),
            "--dir" => args.dir = PathBuf::from(value),
            "--postgres" => args.postgres = Some(value),
            "--phase" => args.phase = value,
            "--durable" => args.durable = value == "yes",
            "--read-all" => args.read_all = value == "yes",
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn ring() -> Ring {
    Ring::new(RingParts {
        namespace: "report".into(),
        service: "sessions".into(),
        version: 1,
        shards: ShardCount::new(16).unwrap(),
        vnodes: 16,
        slots: vec![Slot {
            index: 0,
            pod: Pod {
                name: POD.into(),
                uid: "uid".into(),
                address: "127.0.0.1:8080".parse().unwrap(),
            },
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        }],
        current: Assignment::new(vec![0; 16]).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

fn limits() -> Limits {
    Limits::builder()
        .max_sessions(16 << 20)
        .max_session_bytes(1 << 20)
        .max_total_bytes(64 << 30)
        .max_concurrent_loads(1024)
        .build()
        .unwrap()
}

/// A persistence that keeps nothing but says it is durable, as a database
/// would (`--durable yes`).
#[derive(Clone, Copy)]
struct StandIn;

impl Persistence<String> for StandIn {
    type Error = std::convert::Infallible;

    async fn load(&self, _key: &[u8]) -> Result<Option<Stored<String>>, Self::Error> {
        Ok(None)
    }

    async fn store(&self, _key: &[u8], _stamp: Stamp, _value: &String) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// An empty in-memory store of string sessions within [`limits`].
fn empty_store() -> SessionStore<String> {
    SessionStore::builder(JsonCodec, String::len)
        .limits(limits())
        .build()
        .unwrap()
}

fn value(i: usize, size: usize) -> String {
    let mut s = format!("{i:010}:");
    let fill = b'a' + (i % 26) as u8;
    s.extend(std::iter::repeat_n(
        char::from(fill),
        size.saturating_sub(s.len()),
    ));
    s
}

fn key(i: usize) -> String {
    format!("session-{i:010}")
}

fn rate(bytes: u64, took: Duration) -> String {
    format!(
        "{:.0} MiB/s",
        bytes as f64 / f64::from(1 << 20) / took.as_secs_f64()
    )
}

/// Sessions in PostgreSQL: table `locus_report (key bytea, version bigint,
/// state bytea)`, a few connections used round robin (each pipelines).
struct Pg {
    clients: Vec<(Client, Statement)>,
    next: AtomicUsize,
}

impl Pg {
    async fn connect(config: &str, connections: usize) -> Self {
        let mut raw = Vec::new();
        for _ in 0..connections {
            let (client, connection) = tokio_postgres::connect(config, NoTls).await.unwrap();
            tokio::spawn(connection);
            raw.push(client);
        }
        raw[0]
            .batch_execute(
                "DROP TABLE IF EXISTS locus_report; \
                 CREATE TABLE locus_report (key bytea PRIMARY KEY, epoch bigint NOT NULL, version bigint NOT NULL, state bytea NOT NULL)",
            )
            .await
            .unwrap();
        let mut clients = Vec::new();
        for client in raw {
            let load = client
                .prepare("SELECT epoch, version, state FROM locus_report WHERE key = $1")
                .await
                .unwrap();
            clients.push((client, load));
        }
        Self {
            clients,
            next: AtomicUsize::new(0),
        }
    }

    fn client(&self) -> &(Client, Statement) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }
}

/// The `Persistence` over a shared [`Pg`].
#[derive(Clone)]
struct PgSessions(Arc<Pg>);

impl Persistence<String> for PgSessions {
    type Error = tokio_postgres::Error;

    async fn load(&self, key: &[u8]) -> Result<Option<Stored<String>>, Self::Error> {
        let (client, load) = self.0.client();
        let row = client.query_opt(load, &[&key]).await?;
        Ok(row.map(|row| {
            let epoch: i64 = row.get(0);
            let version: i64 = row.get(1);
            let state: Vec<u8> = row.get(2);
            Stored::new(
                Stamp::new(
                    u64::try_from(epoch).unwrap_or(0),
                    u64::try_from(version).unwrap_or(0),
                ),
                String::from_utf8(state).unwrap_or_default(),
            )
        }))
    }

    async fn store(&self, key: &[u8], stamp: Stamp, value: &String) -> Result<(), Self::Error> {
        let (client, _) = self.0.client();
        let epoch = i64::try_from(stamp.epoch).unwrap_or(i64::MAX);
        let version = i64::try_from(stamp.version).unwrap_or(i64::MAX);
        client
            .execute(
                "INSERT INTO locus_report AS t VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE \
                 SET epoch = EXCLUDED.epoch, version = EXCLUDED.version, state = EXCLUDED.state \
                 WHERE (t.epoch, t.version) <= (EXCLUDED.epoch, EXCLUDED.version)",
                &[&key, &epoch, &version, &value.as_bytes()],
            )
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let sessions = usize::try_from(args.bytes).unwrap() / args.session_bytes;
    println!(
        "{sessions} sessions of {} bytes ({:.2} GiB of state)",
        args.session_bytes,
        (sessions * args.session_bytes) as f64 / f64::from(1 << 30)
    );
    std::fs::create_dir_all(&args.dir).unwrap();
    let ring = ring();
    assert!(
        ["all", "write", "restore"].contains(&args.phase.as_str()),
        "--phase is all, write or restore"
    );
    if args.phase != "restore" {
        write_phase(&args, sessions, &ring).await;
    }
    if args.phase == "write" {
        return;
    }

    if args.durable {
        let store = SessionStore::builder(JsonCodec, String::len)
            .limits(limits())
            .persistence(StandIn)
            .build()
            .unwrap();
        restore_phase(args, sessions, &ring, store).await;
    } else {
        restore_phase(args, sessions, &ring, empty_store()).await;
    }
}

/// Restores the snapshot into `restored_store` (then, with `--postgres`,
/// compares with the database).
async fn restore_phase<P: Persistence<String>>(
    args: Args,
    sessions: usize,
    ring: &Ring,
    restored_store: SessionStore<String, P>,
) {
    let restored = snapshot::restore(Arc::new(restored_store.clone()), &args.dir, ring, POD)
        .await
        .unwrap()
        .expect("the snapshot is there");
    assert_eq!(restored.restore.inserted, sessions);
    // The file kept for the background write-back (ADR 0004): this report
    // measures the restore only, and a later run must not find it.
    snapshot::release_restored(&args.dir).await.unwrap();
    println!(
        "snapshot restore: {} records, {} bytes of format {} in {:?} ({}; of which reading, checking and decoding {:?}, then installing)",
        restored.restore.inserted,
        restored.bytes,
        restored.format,
        restored.took,
        rate(restored.bytes, restored.took),
        restored.check_took
    );
    if args.read_all {
        let started = Instant::now();
        for i in 0..sessions {
            restored_store
                .read(key(i).as_bytes(), |_| ())
                .await
                .unwrap();
        }
        println!(
            "first read of every session: {:?} ({} bytes weighed after)",
            started.elapsed(),
            restored_store.total_bytes()
        );
    }

    let Some(config) = args.postgres else {
        println!("PostgreSQL: skipped (no --postgres)");
        return;
    };
    postgres(&config, restored_store, sessions, args.session_bytes).await;
}

/// Fills a store with `sessions` sessions and writes its snapshot.
async fn write_phase(args: &Args, sessions: usize, ring: &Ring) {
    let store = empty_store();
    let started = Instant::now();
    for i in 0..sessions {
        store
            .install(
                key(i).as_bytes(),
                Versioned::new(1, value(i, args.session_bytes)),
            )
            .await
            .unwrap();
    }
    println!("filled the store in {:?}", started.elapsed());
    if args.durable {
        let flushed = store.flush().await;
        println!("written back (clean records): {}", flushed.written);
    }
    let header = SnapshotHeader::new(ring, 0, POD);
    let written = snapshot::write(&store, &args.dir, &header).await.unwrap();
    println!(
        "snapshot write:   {} records, {} bytes in {:?} ({})",
        written.records,
        written.bytes,
        written.took,
        rate(written.bytes, written.took)
    );
}

/// Writes the sessions of `store` to PostgreSQL, then reloads them two ways.
async fn postgres<P: Persistence<String>>(
    config: &str,
    restored_store: SessionStore<String, P>,
    sessions: usize,
    session_bytes: usize,
) {
    let pg = Arc::new(Pg::connect(config, 8).await);
    let started = Instant::now();
    let batches: Vec<Vec<usize>> = (0..sessions)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[usize]>::to_vec)
        .collect();
    stream::iter(batches)
        .map(|batch| {
            let pg = Arc::clone(&pg);
            let store = restored_store.clone();
            async move {
                let mut keys: Vec<Vec<u8>> = Vec::with_capacity(batch.len());
                let mut epochs: Vec<i64> = Vec::with_capacity(batch.len());
                let mut versions: Vec<i64> = Vec::with_capacity(batch.len());
                let mut states: Vec<Vec<u8>> = Vec::with_capacity(batch.len());
                for i in batch {
                    let got = store.get(key(i).as_bytes()).await.unwrap();
                    keys.push(key(i).into_bytes());
                    epochs.push(i64::try_from(got.epoch).unwrap());
                    versions.push(i64::try_from(got.version).unwrap());
                    states.push(got.value.into_bytes());
                }
                let (client, _) = pg.client();
                client
                    .execute(
                        "INSERT INTO locus_report (key, epoch, version, state) \
                         SELECT * FROM unnest($1::bytea[], $2::int8[], $3::int8[], $4::bytea[])",
                        &[&keys, &epochs, &versions, &states],
                    )
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let pg_written = started.elapsed();
    let state_bytes = (sessions * session_bytes) as u64;
    println!(
        "PostgreSQL write: {sessions} rows in {pg_written:?} ({}, 8 connections, 1000 rows per statement)",
        rate(state_bytes, pg_written)
    );
    drop(restored_store);

    per_key_reload(&pg, sessions, state_bytes).await;
    bulk_reload(&pg, sessions, state_bytes).await;
}

/// Reloads every session through the store's `Persistence`, 64 at a time.
async fn per_key_reload(pg: &Arc<Pg>, sessions: usize, state_bytes: u64) {
    let cold = SessionStore::builder(JsonCodec, String::len)
        .limits(limits())
        .persistence(PgSessions(Arc::clone(pg)))
        .build()
        .unwrap();
    let started = Instant::now();
    stream::iter(0..sessions)
        .map(|i| {
            let cold = cold.clone();
            async move {
                let got = cold.get(key(i).as_bytes()).await.unwrap();
                assert_eq!(got.version, 1);
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let per_key = started.elapsed();
    println!(
        "PostgreSQL reload, one load per session (64 in flight): {per_key:?} ({}, {:.0} sessions/s)",
        rate(state_bytes, per_key),
        sessions as f64 / per_key.as_secs_f64()
    );
    drop(cold);
}

/// Reloads every session with one streamed `SELECT`, installed in bulk.
async fn bulk_reload(pg: &Arc<Pg>, sessions: usize, state_bytes: u64) {
    let bulk = empty_store();
    let started = Instant::now();
    let (client, _) = pg.client();
    let rows = client
        .query_raw(
            "SELECT key, version, state FROM locus_report",
            std::iter::empty::<i64>(),
        )
        .await
        .unwrap();
    let mut rows = std::pin::pin!(rows);
    let mut count = 0;
    while let Some(row) = rows.try_next().await.unwrap() {
        let key: Vec<u8> = row.get(0);
        let version: i64 = row.get(1);
        let state: Vec<u8> = row.get(2);
        bulk.install(
            &key,
            Versioned::new(
                u64::try_from(version).unwrap(),
                String::from_utf8(state).unwrap(),
            ),
        )
        .await
        .unwrap();
        count += 1;
    }
    assert_eq!(count, sessions);
    let bulk_took = started.elapsed();
    println!(
        "PostgreSQL reload, one streamed SELECT installed in bulk: {bulk_took:?} ({})",
        rate(state_bytes, bulk_took)
    );
}
