//! The ring at the sizes the format allows: what the planner costs and how
//! big the ring document gets, one line per size.
//!
//! ```text
//! cargo run --release -p locus-contract --example ring_limits [-- --sizes 4096x100,65536x2048]
//! ring-limits: shards=S slots=N fresh_ms=F grow_ms=G grow_moved=M busiest_over_mean=B \
//!     doc_stable=D1 doc_warm=D2 doc_warm_operator_longest=D3 \
//!     doc_warm_format_longest=D4 limit=L parse_ms=P
//! ```
//!
//! * `fresh_ms`: one plan of a fresh service of `N` slots (median of 3);
//! * `grow_ms`, `grow_moved`: one uncapped plan growing it to `N + 1` slots
//!   (median of 3) and the shards that plan moves;
//! * `busiest_over_mean`: the busiest slot's shard count over `S / N` (keys
//!   spread over shards evenly, so also the expected key ratio);
//! * `doc_stable`, `doc_warm`: ring document bytes with one table (Stable)
//!   and with two (Warm), pods named like the operator names them
//!   (`<service>-<slot>-<5 chars>`, a 36-byte UID, an IPv4 address);
//! * `doc_warm_operator_longest`: the same Warm document with the longest
//!   pod names the operator gives (a 63-byte service name, so 74 bytes),
//!   36-byte UIDs and the longest IPv6 addresses: the largest the operator
//!   writes;
//! * `doc_warm_format_longest`: the same with 253-byte names and 128-byte
//!   UIDs, the longest the format accepts (a document no `ConfigMap` holds at
//!   the largest sizes; another writer would have to keep names short);
//! * `limit`: [`MAX_DOCUMENT_BYTES`]; a size over it cannot be published;
//! * `parse_ms`: reading the operator's longest Warm document back (median
//!   of 3), when under the limit.

#![allow(
    clippy::cast_precision_loss,
    reason = "counts and durations far below 2^52 become report ratios"
)]

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use locus_contract::ring::{
    Assignment, MAX_DOCUMENT_BYTES, MAX_NAME_BYTES, MAX_SLOTS, MAX_UID_BYTES, PlanRequest, Pod,
    Ring, RingDocument, RingError, RingParts, ShardCount, Slot, SlotState, Transition, plan,
};

/// The longest pod name the operator gives: `<service>-<slot>-<5 chars>` with
/// the service name at 63 bytes (it is a label value) and a 4-digit slot.
const OPERATOR_NAME_BYTES: usize = 63 + 1 + 4 + 1 + 5;

const DEFAULT_SIZES: &str = "4096x100,4096x1000,65536x1000,65536x2048";
const USAGE: &str = "usage: ring_limits [--sizes SxN[,SxN...]]";

fn parse_sizes() -> Result<Vec<(u32, u16)>, String> {
    let mut args = std::env::args().skip(1);
    let mut sizes = DEFAULT_SIZES.to_owned();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--sizes" => sizes = args.next().ok_or("--sizes needs a value")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    sizes
        .split(',')
        .map(|size| {
            let (s, n) = size
                .split_once('x')
                .ok_or_else(|| format!("size {size}: expected SxN, e.g. 4096x100"))?;
            let s = s.parse().map_err(|e| format!("size {size}: shards: {e}"))?;
            let n = n.parse().map_err(|e| format!("size {size}: slots: {e}"))?;
            Ok((s, n))
        })
        .collect()
}

/// Median wall time of three runs of `f`, and its last result.
fn timed<T>(mut f: impl FnMut() -> Result<T, RingError>) -> Result<(Duration, T), RingError> {
    let mut times = Vec::with_capacity(3);
    let mut last = None;
    for _ in 0..3 {
        let started = Instant::now();
        let value = f()?;
        times.push(started.elapsed());
        last = Some(value);
    }
    times.sort();
    match last {
        Some(value) => Ok((times[1], value)),
        None => unreachable!("three runs"),
    }
}

/// `N` slots whose pods have names of `name_len` bytes (at least the
/// operator's `<service>-<slot>-<5 chars>`) and UIDs of `uid_len` bytes.
fn slots(count: u16, name_len: usize, uid_len: usize) -> Result<Vec<Slot>, Box<dyn Error>> {
    (0..count)
        .map(|index| {
            let mut name = format!("limits-{index}-x7k2q");
            while name.len() < name_len {
                name.push('a');
            }
            let mut uid = format!("{index:08x}-0000-4000-8000-000000000000");
            while uid.len() < uid_len {
                uid.push('f');
            }
            // Typical: IPv4. Longest names: the longest IPv6 text (no group
            // zero, so nothing is compressed) and the largest port.
            let address = if name_len == 0 {
                format!(
                    "10.{}.{}.{}:8080",
                    index / 62_500,
                    index / 250 % 250,
                    index % 250 + 1
                )
            } else {
                format!(
                    "[fd12:3456:789a:bcde:f012:3456:789a:{:04x}]:65535",
                    0x1000 + index
                )
            };
            Ok(Slot {
                index,
                pod: Pod {
                    name,
                    uid,
                    address: address.parse()?,
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
        })
        .collect()
}

fn document(
    shards: ShardCount,
    slots: Vec<Slot>,
    current: &Assignment,
    transition: Transition,
) -> Result<Vec<u8>, Box<dyn Error>> {
    let ring = Ring::new(RingParts {
        namespace: "default".to_owned(),
        service: "limits".to_owned(),
        version: 2,
        shards,
        vnodes: 128,
        slots,
        current: current.clone(),
        transition,
    })?;
    // `to_json` refuses a document over the limit; the report wants its size
    // either way, so encode with the limit's check reported, not fatal.
    match RingDocument::to_json(&ring) {
        Ok(bytes) => Ok(bytes),
        Err(RingError::DocumentTooLarge { size, .. }) => Ok(vec![b' '; size]),
        Err(e) => Err(e.into()),
    }
}

fn line(shards: u32, members: u16) -> Result<String, Box<dyn Error>> {
    let shards = ShardCount::new(shards)?;
    let ids: Vec<u16> = (0..members).collect();
    let fresh_request = PlanRequest {
        shards,
        ..PlanRequest::new("default", "limits", &ids)
    };
    let (fresh_time, fresh) = timed(|| plan(&fresh_request))?;
    let busiest = fresh.slots.iter().map(|c| c.after).max().unwrap_or(0);
    let mean = f64::from(shards.get()) / f64::from(members);
    let stable = document(
        shards,
        slots(members, 0, 36)?,
        &fresh.assignment,
        Transition::Stable,
    )?;

    // Growth by one slot; the largest slot count cannot grow, so time its
    // last growth instead.
    let base = if usize::from(members) >= MAX_SLOTS {
        members - 1
    } else {
        members
    };
    let base_ids: Vec<u16> = (0..base).collect();
    let grown_ids: Vec<u16> = (0..=base).collect();
    let before = if base == members {
        fresh.assignment.clone()
    } else {
        plan(&PlanRequest {
            slots: &base_ids,
            ..fresh_request
        })?
        .assignment
    };
    let grow_request = PlanRequest {
        previous: Some(&before),
        slots: &grown_ids,
        ..fresh_request
    };
    let (grow_time, grow) = timed(|| plan(&grow_request))?;
    let warm_doc = |name_len, uid_len| -> Result<Vec<u8>, Box<dyn Error>> {
        let mut all = slots(base + 1, name_len, uid_len)?;
        if let Some(last) = all.last_mut() {
            last.state = SlotState::Joining;
        }
        let target = grow.assignment.clone();
        document(shards, all, &before, Transition::Warm { target })
    };
    let warm = warm_doc(0, 36)?;
    let longest = warm_doc(OPERATOR_NAME_BYTES, 36)?;
    let worst = warm_doc(MAX_NAME_BYTES, MAX_UID_BYTES)?;
    let parse = if longest.len() <= MAX_DOCUMENT_BYTES {
        let (time, _) = timed(|| RingDocument::from_json(&longest))?;
        format!("{:.2}", time.as_secs_f64() * 1e3)
    } else {
        "over-limit".to_owned()
    };
    Ok(format!(
        "ring-limits: shards={} slots={members} fresh_ms={:.1} grow={base}->{} grow_ms={:.1} \
         grow_moved={} busiest_over_mean={:.4} doc_stable={} doc_warm={} \
         doc_warm_operator_longest={} doc_warm_format_longest={} limit={} parse_ms={parse}",
        shards.get(),
        fresh_time.as_secs_f64() * 1e3,
        base + 1,
        grow_time.as_secs_f64() * 1e3,
        grow.moved,
        f64::from(busiest) / mean,
        stable.len(),
        warm.len(),
        longest.len(),
        worst.len(),
        MAX_DOCUMENT_BYTES,
    ))
}

fn main() -> ExitCode {
    let sizes = match parse_sizes() {
        Ok(sizes) => sizes,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    for (shards, members) in sizes {
        match line(shards, members) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("ring_limits {shards}x{members}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
