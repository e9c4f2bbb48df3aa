//! One-line report on the ring: how many keys move when a service grows by
//! one member, how even the load is, and how long a routing decision takes.
//!
//! ```text
//! cargo run --release -p locus --example ring_report -- --members 100 --vnodes 128 --keys 1000000 [--shards 4096]
//! ring: members=100 vnodes=128 keys=1000000 moved_fraction=F ideal=I max_over_mean=M lookup_ns=L
//! ```
//!
//! * `moved_fraction`: share of the keys `session-0 … session-<keys-1>` whose
//!   owner changes when the planner grows the ring from `members` to
//!   `members + 1` slots;
//! * `ideal`: `1 / (members + 1)`, the least any balanced scheme must move;
//! * `max_over_mean`: the busiest member's key count over the mean, before
//!   the growth (with `S` shards and floor/ceil balance it is at least
//!   `ceil(S / members) / (S / members)`);
//! * `lookup_ns`: median over batches of the time per routing decision
//!   ([`Ring::owner`] of one key), timed with `std::time::Instant`.

#![allow(
    clippy::cast_precision_loss,
    reason = "counts and nanoseconds far below 2^52 become report ratios"
)]

use std::error::Error;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use locus::ring::{
    Assignment, PlanRequest, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition, plan,
};

/// Lookups per timed batch.
const BATCH: usize = 1024;

const USAGE: &str = "usage: ring_report [--members N] [--vnodes V] [--keys K] [--shards S]  (defaults 100 128 1000000 4096)";

struct Args {
    members: u16,
    vnodes: u32,
    keys: usize,
    shards: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        members: 100,
        vnodes: 128,
        keys: 1_000_000,
        shards: 4096,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--members" => args.members = value.parse().map_err(bad)?,
            "--vnodes" => args.vnodes = value.parse().map_err(bad)?,
            "--keys" => args.keys = value.parse().map_err(bad)?,
            "--shards" => args.shards = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.members == 0 || args.keys == 0 {
        return Err("--members and --keys must be at least 1".to_owned());
    }
    Ok(args)
}

fn ring(
    shards: ShardCount,
    vnodes: u32,
    members: u16,
    current: Assignment,
) -> Result<Ring, Box<dyn Error>> {
    let slots = (0..members)
        .map(|index| {
            Ok(Slot {
                index,
                pod: Pod {
                    name: format!("report-{index}-x"),
                    uid: format!("uid-{index}"),
                    address: format!("10.0.{}.{}:8080", index / 250, index % 250 + 1).parse()?,
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
        })
        .collect::<Result<Vec<_>, Box<dyn Error>>>()?;
    Ok(Ring::new(RingParts {
        namespace: "default".to_owned(),
        service: "report".to_owned(),
        version: 1,
        shards,
        vnodes,
        slots,
        current,
        transition: Transition::Stable,
    })?)
}

/// All keys in one buffer, so that timing walks memory sequentially and
/// measures the lookup, not pointer chasing through a million allocations.
struct Keys {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Keys {
    fn generate(count: usize) -> Self {
        let mut keys = Self {
            bytes: Vec::with_capacity(count * 14),
            ends: Vec::with_capacity(count),
        };
        for i in 0..count {
            keys.bytes
                .extend_from_slice(format!("session-{i}").as_bytes());
            keys.ends.push(keys.bytes.len());
        }
        keys
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(s, e)| &self.bytes[s..e])
    }
}

fn run(args: &Args) -> Result<String, Box<dyn Error>> {
    let shards = ShardCount::new(args.shards)?;
    let before_slots: Vec<u16> = (0..args.members).collect();
    let after_slots: Vec<u16> = (0..=args.members).collect();
    let request = PlanRequest {
        shards,
        vnodes: args.vnodes,
        ..PlanRequest::new("default", "report", &before_slots)
    };
    let before = plan(&request)?.assignment;
    let after = plan(&PlanRequest {
        previous: Some(&before),
        slots: &after_slots,
        ..request
    })?
    .assignment;
    let before = ring(shards, args.vnodes, args.members, before)?;
    let after = ring(shards, args.vnodes, args.members + 1, after)?;

    let keys = Keys::generate(args.keys);
    let mut per_member = vec![0u64; usize::from(args.members)];
    let mut moved = 0u64;
    for key in keys.iter() {
        let owner = before.owner(key).index;
        per_member[usize::from(owner)] += 1;
        if after.owner(key).index != owner {
            moved += 1;
        }
    }
    let total = args.keys as f64;
    let mean = total / f64::from(args.members);
    let busiest = per_member.iter().copied().max().unwrap_or(0) as f64;

    // Median over batches of consecutive keys; several passes for enough batches.
    let mut per_lookup = Vec::new();
    let key_list: Vec<&[u8]> = keys.iter().collect();
    while per_lookup.len() < 2000 {
        for batch in key_list.chunks(BATCH).filter(|b| b.len() == BATCH) {
            let start = Instant::now();
            for key in batch {
                black_box(before.owner(black_box(key)));
            }
            per_lookup.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
            if per_lookup.len() >= 2000 {
                break;
            }
        }
        if key_list.len() < BATCH {
            let start = Instant::now();
            for key in &key_list {
                black_box(before.owner(black_box(key)));
            }
            per_lookup.push(start.elapsed().as_nanos() as f64 / key_list.len() as f64);
        }
    }
    per_lookup.sort_by(f64::total_cmp);
    let lookup_ns = per_lookup[per_lookup.len() / 2];

    Ok(format!(
        "ring: members={} vnodes={} keys={} moved_fraction={:.6} ideal={:.6} max_over_mean={:.3} lookup_ns={:.1}",
        args.members,
        args.vnodes,
        args.keys,
        moved as f64 / total,
        1.0 / (f64::from(args.members) + 1.0),
        busiest / mean,
        lookup_ns,
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ring_report: {e}");
            ExitCode::FAILURE
        }
    }
}
