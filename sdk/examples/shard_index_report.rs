//! What a new ring version costs a pod holding many sessions, through the
//! store's shard index against the full scan it replaced, and what the index
//! costs in memory.
//!
//! ```text
//! cargo run --release -p locus --example shard_index_report -- \
//!     [--sessions 1000000] [--members 10] [--rate 10000] [--repeats 5]
//! ```
//!
//! A store on a 2-worker runtime holds `--sessions` sessions (8-byte
//! counters), every one in shards of this pod's slot (slot 0 of
//! `--members`, 4096 shards). A pacer thread sends `--rate` updates of random
//! sessions per second, each as a task of its own, timed from the instant it
//! was due (open loop: a request held up by a stall counts its whole wait,
//! and requests keep arriving during the stall). A ring version then
//! arrives, and the key walk the transition driver does on it runs in a task
//! of its own on the same runtime, in two cases:
//!
//! * **nothing lost** (an observed or Warm version): the driver asks whether
//!   this pod holds keys it no longer owns;
//! * **1/11 lost** (the Switch of a growth from `members` to `members + 1`
//!   slots): it asks, then gathers the lost keys by new owner.
//!
//! and by two paths: **scan**, the code the driver ran before the shard
//! index (`resident_keys()` twice, a hash of every key), kept here for
//! comparison, and **index**, the store calls the driver makes now
//! (`holds_keys_in`, `keys_in_shards_async`). The hand-over of the lost keys
//! itself (hand-off and push, the same in both paths) is not part of it.
//! Reported per case and path: how long the walk took, and p50, p99 and max
//! latency of the requests in flight while it ran (from all `--repeats`
//! runs; the paths alternate), next to the same requests with no version
//! arriving.
//!
//! Memory: the resident set (`VmRSS` of `/proc/self/status`) before and
//! after filling the store, over `--sessions`, minus the key and value
//! bytes, is the per-session overhead with the shard index. The shard index's
//! own share is the growth of the resident set while a copy of it is built
//! alone (the same `(ring hash, node number)` pairs as the index's, inserted
//! one by one into a `BTreeSet`); the overhead without it is the
//! difference.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "a report: a failed unwrap is a failed run"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use locus::ring::{
    Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition, hash_key,
};
use locus::store::{JsonCodec, Limits, SessionStore};

const SHARDS: u32 = 4096;

struct Args {
    sessions: usize,
    members: u16,
    rate: u32,
    repeats: usize,
}

fn args() -> Args {
    let mut args = Args {
        sessions: 1_000_000,
        members: 10,
        rate: 10_000,
        repeats: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("a value after each flag");
        match flag.as_str() {
            "--sessions" => args.sessions = value.parse().unwrap(),
            "--members" => args.members = value.parse().unwrap(),
            "--rate" => args.rate = value.parse().unwrap(),
            "--repeats" => args.repeats = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn pod(slot: u16) -> Pod {
    Pod {
        name: format!("report-{slot}-x"),
        uid: format!("uid-{slot}"),
        address: format!("127.0.0.{}:8080", slot + 1).parse().unwrap(),
    }
}

fn ring(version: u64, slots: u16, table: Vec<u16>) -> Ring {
    Ring::new(RingParts {
        namespace: "report".into(),
        service: "sessions".into(),
        version,
        shards: ShardCount::new(SHARDS).unwrap(),
        vnodes: 16,
        slots: (0..slots)
            .map(|index| Slot {
                index,
                pod: pod(index),
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
            .collect(),
        current: Assignment::new(table).unwrap(),
        transition: Transition::Stable,
    })
    .unwrap()
}

/// The version this pod serves under (`members` slots, shards dealt round
/// robin) and the one under which slot `members` takes every 11th of each
/// slot's shards.
fn rings(members: u16) -> (Ring, Ring) {
    let before: Vec<u16> = (0..SHARDS)
        .map(|s| (s % u32::from(members)) as u16)
        .collect();
    let after: Vec<u16> = before
        .iter()
        .enumerate()
        .map(|(shard, &slot)| {
            if (shard / usize::from(members)) % 11 == 0 {
                members
            } else {
                slot
            }
        })
        .collect();
    (ring(2, members, before), ring(3, members + 1, after))
}

type Lost = BTreeMap<String, (Pod, Vec<Bytes>)>;

/// The two key walks compared.
#[derive(Clone, Copy)]
enum Path {
    Scan,
    Index,
}

async fn walk(path: Path, store: &SessionStore<u64>, ring: &Ring, me: &str) -> Lost {
    match path {
        Path::Scan => scan_path(store, ring, me),
        Path::Index => index_path(store, ring, me).await,
    }
}

/// (case, path) → (quiet window start, walk start, walk end) of each run.
type Windows = BTreeMap<(usize, usize), Vec<(Instant, Instant, Instant)>>;

/// The driver's key walk before the shard index (main before this change):
/// `holds_lost_keys` then `lost_keys`, each over `resident_keys()`.
fn scan_path(store: &SessionStore<u64>, ring: &Ring, me: &str) -> Lost {
    let mut lost = Lost::new();
    let keys = store.resident_keys();
    if !keys.iter().any(|key| ring.owner(key).pod.name != me) {
        return lost;
    }
    for key in store.resident_keys() {
        let owner = ring.owner(&key);
        if owner.pod.name == me {
            continue;
        }
        lost.entry(owner.pod.name.clone())
            .or_insert_with(|| (owner.pod.clone(), Vec::new()))
            .1
            .push(key);
    }
    lost
}

/// The driver's key walk now: the same questions to the shard index.
async fn index_path(store: &SessionStore<u64>, ring: &Ring, me: &str) -> Lost {
    let shards = ring.shards();
    let owners: Vec<Option<&Pod>> = (0..shards.get())
        .map(|shard| {
            ring.owner_of_shard(shard)
                .map(|slot| &slot.pod)
                .filter(|pod| pod.name != me)
        })
        .collect();
    let wanted: Vec<bool> = owners.iter().map(Option::is_some).collect();
    let mut lost = Lost::new();
    if !store.holds_keys_in(shards, &wanted) {
        return lost;
    }
    for (shard, key) in store.keys_in_shards_async(shards, &wanted).await {
        if let Some(Some(pod)) = owners.get(shard as usize) {
            lost.entry(pod.name.clone())
                .or_insert_with(|| ((*pod).clone(), Vec::new()))
                .1
                .push(key);
        }
    }
    lost
}

fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: i64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// One request: when it started and how long it took.
#[derive(Clone, Copy)]
struct Sample {
    start: Instant,
    took: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[derive(Default)]
struct Tally {
    walks: Vec<Duration>,
    in_flight: Vec<Duration>,
    quiet: Vec<Duration>,
    lost: usize,
}

/// Overhead per session beyond key and value, with the shard index and the
/// shard index's own share (see the module docs), in bytes.
struct Memory {
    payload: f64,
    with_index: f64,
    index_share: f64,
}

fn fill(rt: &tokio::runtime::Runtime, store: &SessionStore<u64>, keys: &[Bytes]) -> Memory {
    let key_bytes: usize = keys.iter().map(Bytes::len).sum();
    let rss_empty = rss_bytes();
    rt.block_on(async {
        for key in keys {
            store.update(key, |n| *n += 1).await.unwrap();
        }
    });
    let rss_full = rss_bytes();
    // A copy of the shard index alone: the same (ring hash, node number)
    // pairs as the index's, inserted one by one in the order the store took
    // them (as the index fills: nodes as full as the index's).
    let copy_keys = store.resident_keys();
    let rss_keys = rss_bytes();
    let mut shard_index = BTreeSet::new();
    for (node, key) in copy_keys.iter().enumerate() {
        shard_index.insert((hash_key(key), node as u32));
    }
    let rss_index = rss_bytes();
    let n = keys.len() as f64;
    let payload = (key_bytes + 8 * keys.len()) as f64 / n;
    drop(shard_index);
    Memory {
        payload,
        with_index: (rss_full - rss_empty) as f64 / n - payload,
        index_share: (rss_index - rss_keys) as f64 / n,
    }
}

/// An open-loop load: `rate` updates per second of random keys, each sent
/// at its planned instant (by a pacer thread, as its own task) and timed
/// from that instant, so a request held up by a stall counts the whole
/// wait (no coordinated omission). Runs until `running` is false.
fn start_load(
    rt: &tokio::runtime::Runtime,
    store: &SessionStore<u64>,
    keys: &Arc<Vec<Bytes>>,
    running: &Arc<AtomicBool>,
    rate: u32,
) -> (std::thread::JoinHandle<()>, Arc<Mutex<Vec<Sample>>>) {
    let samples = Arc::new(Mutex::new(Vec::with_capacity(1 << 22)));
    let (handle, store, keys, running) = (
        rt.handle().clone(),
        store.clone(),
        Arc::clone(keys),
        Arc::clone(running),
    );
    let sink = Arc::clone(&samples);
    let pacer = std::thread::spawn(move || {
        let interval = Duration::from_secs(1) / rate;
        let mut next = Instant::now();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        while running.load(Ordering::Relaxed) {
            let now = Instant::now();
            while next <= now {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = keys[(x % keys.len() as u64) as usize].clone();
                let (store, sink, start) = (store.clone(), Arc::clone(&sink), next);
                handle.spawn(async move {
                    store.update(&key, |n| *n += 1).await.unwrap();
                    let took = start.elapsed();
                    sink.lock().unwrap().push(Sample { start, took });
                });
                next += interval;
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    (pacer, samples)
}

/// Runs every (case, path) `repeats` times, paths alternating, each walk in
/// a task of its own on `rt`; returns the walks' windows and tallies.
fn run_walks(
    rt: &tokio::runtime::Runtime,
    store: &SessionStore<u64>,
    cases: &[(&str, &Ring)],
    paths: &[(&str, Path)],
    me: &str,
    repeats: usize,
) -> (Windows, BTreeMap<(usize, usize), Tally>) {
    let mut windows = Windows::new();
    let mut tallies: BTreeMap<(usize, usize), Tally> = BTreeMap::new();
    std::thread::sleep(Duration::from_millis(500));
    for repeat in 0..repeats {
        for (c, (_, ring)) in cases.iter().enumerate() {
            // The paths take turns going first.
            let order: Vec<usize> = if repeat % 2 == 0 {
                vec![0, 1]
            } else {
                vec![1, 0]
            };
            for p in order {
                let path = &paths[p].1;
                // A quiet window right before the walk.
                let quiet = Instant::now();
                std::thread::sleep(Duration::from_millis(300));
                let (store, ring, me, path) =
                    (store.clone(), (*ring).clone(), me.to_owned(), *path);
                let t0 = Instant::now();
                let lost = rt
                    .block_on(rt.spawn(async move { walk(path, &store, &ring, &me).await }))
                    .unwrap();
                let t1 = Instant::now();
                let tally = tallies.entry((c, p)).or_default();
                tally.walks.push(t1 - t0);
                tally.lost = lost.values().map(|(_, keys)| keys.len()).sum();
                drop(lost);
                windows.entry((c, p)).or_default().push((quiet, t0, t1));
                // Time for the requests a stall queued to drain.
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    (windows, tallies)
}

/// Sorts each sample into the walk it overlapped or the quiet window it
/// fell in.
fn attribute(windows: &Windows, tallies: &mut BTreeMap<(usize, usize), Tally>, samples: &[Sample]) {
    for (slot, list) in windows {
        let tally = tallies.get_mut(slot).unwrap();
        for &(quiet, t0, t1) in list {
            let quiet_end = quiet + (t1 - t0).max(Duration::from_millis(20));
            for sample in samples {
                let end = sample.start + sample.took;
                if sample.start < t1 && end > t0 {
                    tally.in_flight.push(sample.took);
                } else if sample.start >= quiet && sample.start < quiet_end {
                    tally.quiet.push(sample.took);
                }
            }
        }
    }
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (serving, switch) = rings(args.members);
    let me = pod(0).name;

    let store: SessionStore<u64> = SessionStore::builder(JsonCodec, |_: &u64| 8)
        .limits(
            Limits::builder()
                .max_sessions(args.sessions + 1)
                .max_total_bytes(1 << 30)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();

    // Keys of slot 0's shards only: this pod holds nothing it does not own.
    let keys: Vec<Bytes> = (0_u64..)
        .map(|i| Bytes::from(format!("session-{i:08}")))
        .filter(|key| serving.owner(key).pod.name == me)
        .take(args.sessions)
        .collect();
    let memory = fill(&rt, &store, &keys);

    let keys = Arc::new(keys);
    let running = Arc::new(AtomicBool::new(true));
    let (pacer, samples) = start_load(&rt, &store, &keys, &running, args.rate);
    let paths: [(&str, Path); 2] = [("scan", Path::Scan), ("index", Path::Index)];
    let cases: [(&str, &Ring); 2] = [("nothing lost", &serving), ("1/11 lost", &switch)];
    let (windows, mut tallies) = run_walks(&rt, &store, &cases, &paths, &me, args.repeats);
    running.store(false, Ordering::Relaxed);
    pacer.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    attribute(&windows, &mut tallies, &samples);

    println!(
        "shard_index_report: {} sessions on slot 0 of {} ({} shards), {} updates/s on 2 workers, {} repeats",
        args.sessions, args.members, SHARDS, args.rate, args.repeats
    );
    println!();
    println!(
        "| version arrives | path | lost keys | walk (ms, median) | requests in flight | p50 (ms) | p99 (ms) | max (ms) | quiet p99 (ms) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for ((c, p), tally) in &mut tallies {
        tally.walks.sort();
        tally.in_flight.sort();
        tally.quiet.sort();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cases[*c].0,
            paths[*p].0,
            tally.lost,
            ms(tally.walks[tally.walks.len() / 2]),
            tally.in_flight.len(),
            ms(percentile(&tally.in_flight, 0.50)),
            ms(percentile(&tally.in_flight, 0.99)),
            ms(tally.in_flight.last().copied().unwrap_or_default()),
            ms(percentile(&tally.quiet, 0.99)),
        );
    }
    println!();
    println!(
        "memory at {} sessions (VmRSS deltas): key + value {:.0} B/session; overhead beyond them {:.0} B/session with the shard index, of which the shard index {:.0} B/session; without it {:.0} B/session",
        args.sessions,
        memory.payload,
        memory.with_index,
        memory.index_share,
        memory.with_index - memory.index_share
    );
}
