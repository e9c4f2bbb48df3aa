//! What the session store costs in memory per session, beyond the session's
//! key and value, and how fast it is when it holds many sessions.
//!
//! ```text
//! cargo run --release -p locus --example store_memory_report -- [--sessions 1000000]
//! ```
//!
//! One process, a current-thread runtime, a store of 8-byte counters (the
//! weigher says 8) whose bounds admit `--sessions` sessions. The store is
//! filled through its public API, one `update` per session, keys
//! `session-NNNNNNNN` (16 bytes) made on the fly and dropped (so the only
//! copies of the keys are the store's). Reported:
//!
//! * **overhead per session**: the growth of the resident set (`VmRSS` of
//!   `/proc/self/status`) over the fill, divided by the sessions, minus the
//!   24 bytes of key and value. Whatever the store keeps per session — maps,
//!   orders, the shard index, the entry and its lock, allocator rounding and
//!   the spare capacity of its tables at that count — is in it. (No count
//!   from the allocator: that would need a counting global allocator, which
//!   is `unsafe` code, forbidden in this workspace.)
//! * **fill, warm read, warm update**: the time per operation of the fill,
//!   of a read of every session in a scattered order, and of an update of
//!   every session in that order; and the slowest single new session of the
//!   fill (the index's tables doubling under its lock: the longest a
//!   request waits behind the growth).
//! * **churn**: `--sessions / 10` new sessions into the full store, each
//!   evicting one (pressure eviction, no persistence): the time per new
//!   session and the resident set after, per session held.
//! * **every key**: how long `resident_keys()` takes (one hold of the
//!   index lock, as a snapshot's or a flush's list of entries).

#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a report: a failed unwrap is a failed run"
)]

use std::time::{Duration, Instant};

use locus::store::{JsonCodec, Limits, SessionStore};

/// Key and value bytes of one session: a 16-byte key, an 8-byte counter.
const PAYLOAD: usize = 16 + 8;

fn sessions() -> usize {
    let mut args = std::env::args().skip(1);
    let mut sessions = 1_000_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sessions" => sessions = args.next().and_then(|n| n.parse().ok()).unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    sessions
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

fn key(i: usize) -> String {
    format!("session-{i:08}")
}

/// A scattered visiting order of `0..n` (a multiplicative step coprime
/// with `n`), so reads do not walk the keys in insertion order.
fn scattered(n: usize) -> impl Iterator<Item = usize> {
    // Among any n consecutive numbers one is coprime with n (1 mod n is).
    let step = (0x9E37_79B9_usize..0x9E37_79B9 + n.max(1))
        .find(|s| gcd(*s, n) == 1)
        .unwrap_or(1);
    (0..n).map(move |i| (i * step) % n)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn per_op(started: Instant, ops: usize) -> f64 {
    started.elapsed().as_nanos() as f64 / ops as f64
}

fn main() {
    let n = sessions();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: SessionStore<u64> = SessionStore::builder(JsonCodec, |_: &u64| 8)
        .limits(
            Limits::builder()
                .max_sessions(n)
                .max_total_bytes(1 << 34)
                .max_tombstones(1024)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();

    rt.block_on(async {
        let rss_empty = rss_bytes();
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..n {
            let one = Instant::now();
            store.update(key(i).as_bytes(), |v| *v += 1).await.unwrap();
            slowest = slowest.max(one.elapsed());
        }
        let fill_ns = per_op(started, n);
        let rss_full = rss_bytes();
        assert_eq!(store.len(), n);
        let grown = (rss_full - rss_empty) as f64 / n as f64;

        let started = Instant::now();
        for i in scattered(n) {
            store.read(key(i).as_bytes(), |v| *v).await.unwrap();
        }
        let read_ns = per_op(started, n);
        let started = Instant::now();
        for i in scattered(n) {
            store.update(key(i).as_bytes(), |v| *v += 1).await.unwrap();
        }
        let update_ns = per_op(started, n);

        let churn = n / 10;
        let started = Instant::now();
        for i in n..n + churn {
            store.update(key(i).as_bytes(), |v| *v += 1).await.unwrap();
        }
        let churn_ns = per_op(started, churn);
        assert_eq!(store.len(), n, "eviction keeps the session bound");
        let rss_churned = rss_bytes();
        let churned = (rss_churned - rss_empty) as f64 / n as f64;

        let started = Instant::now();
        let keys = store.resident_keys();
        let all_keys_ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(keys.len(), n);
        drop(keys);

        println!("store_memory_report: {n} sessions, 16-byte keys, 8-byte values");
        println!(
            "resident set growth {grown:.0} B/session; overhead beyond key and value {:.0} B/session",
            grown - PAYLOAD as f64
        );
        println!(
            "fill {fill_ns:.0} ns/session; warm read {read_ns:.0} ns; warm update {update_ns:.0} ns (scattered order)"
        );
        println!(
            "slowest new session of the fill: {:.1} ms (the index's tables growing under its lock)",
            slowest.as_secs_f64() * 1e3
        );
        println!(
            "churn: {churn} new sessions into the full store, {churn_ns:.0} ns each (one eviction each); resident set growth after {churned:.0} B/session held"
        );
        println!("resident_keys() (every key, one index lock hold): {all_keys_ms:.1} ms");
    });
}
