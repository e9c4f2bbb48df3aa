//! [`LoadWindow`]: the load of one report interval, from the cumulative
//! counters, as a [`ShardLoadReport`]; and [`unchanged`], the test that
//! spares the API server a patch that would tell the operator nothing new.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::counters::ShardLoadCounters;
use super::{ShardLoad, ShardLoadReport};
use crate::ring::Ring;

/// Most shards listed in a report's `hot` list: the busiest by requests.
pub const HOT_SHARDS: usize = ShardLoadReport::MAX_HOT;

/// Takes differences of [`ShardLoadCounters`] between report intervals.
///
/// Each [`take`](Self::take) reports what was counted since the previous one
/// (or since [`new`](Self::new)): the pod's totals over every shard count,
/// and the [`HOT_SHARDS`] busiest shards of the ring the pod holds now.
/// Counts made under another shard count (just before the ring's `S`
/// doubled) go into the totals only. It keeps a copy of the counts it last
/// saw, 16 bytes per shard, and allocates only when it takes a window.
#[derive(Debug)]
pub struct LoadWindow {
    /// Per `log2 S`: the counts of each shard at the last take.
    seen: Vec<Vec<(u64, u64)>>,
    started: Instant,
}

impl LoadWindow {
    /// A window that starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            seen: Vec::new(),
            started: now,
        }
    }

    /// The load counted since the last take, which ends at `now`; the next
    /// window starts there. The report's
    /// [`window_end_ms`](ShardLoadReport::window_end_ms) is the wall clock
    /// read at the take. `ring`: the ring the pod holds now (its version,
    /// shard count and this pod's shards go into the report); `pod`: this
    /// pod's name in it. Without a ring the report has only totals (and
    /// ring version 0, which [`ShardLoadReport::validate`] refuses: the
    /// reporter does not send it).
    pub fn take(
        &mut self,
        counters: &ShardLoadCounters,
        ring: Option<&Ring>,
        pod: &str,
        now: Instant,
    ) -> ShardLoadReport {
        let elapsed = now.saturating_duration_since(self.started);
        self.started = now;
        let hot_bits = ring.map(|r| r.shards().bits() as usize);
        let (mut requests, mut bytes) = (0u64, 0u64);
        let mut hot = Vec::new();
        for (bits, cells) in counters.tables() {
            if self.seen.len() <= bits {
                self.seen.resize_with(bits + 1, Vec::new);
            }
            let seen = &mut self.seen[bits];
            if seen.len() != cells.len() {
                *seen = vec![(0, 0); cells.len()];
            }
            for (shard, (cell, seen)) in cells.iter().zip(seen.iter_mut()).enumerate() {
                let now = (
                    cell.requests.load(Ordering::Relaxed),
                    cell.bytes.load(Ordering::Relaxed),
                );
                let delta = (now.0.wrapping_sub(seen.0), now.1.wrapping_sub(seen.1));
                *seen = now;
                if delta == (0, 0) {
                    continue;
                }
                requests += delta.0;
                bytes += delta.1;
                if Some(bits) == hot_bits {
                    hot.push(ShardLoad {
                        shard: shard as u32,
                        requests: delta.0,
                        bytes: delta.1,
                    });
                }
            }
        }
        let hot = ShardLoadReport::hottest(hot);
        // Rounded to the nearest second, at least one.
        let window_seconds = u32::try_from((elapsed.as_millis() + 500) / 1000)
            .unwrap_or(u32::MAX)
            .max(1);
        ShardLoadReport {
            ring_version: ring.map_or(0, Ring::version),
            shards: ring.map_or(0, |r| r.shards().get()),
            window_seconds,
            window_end_ms: wall_clock_ms(),
            requests,
            bytes,
            owned_shards: ring.map_or(0, |r| owned_shards(r, pod)),
            hot,
        }
    }
}

/// Now by the wall clock, in Unix milliseconds: when a window taken now
/// ended ([`ShardLoadReport::window_end_ms`]). The operator compares it with
/// its own clock to refuse the last report of a pod whose reporter stopped.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The shards of `pod`'s slot under the ring's `current` table.
fn owned_shards(ring: &Ring, pod: &str) -> u32 {
    ring.slots()
        .iter()
        .find(|slot| slot.pod.name == pod)
        .map_or(0, |slot| {
            ring.current().shards_of(slot.index).count() as u32
        })
}

/// True if `next` tells the operator nothing `last` did not, within
/// `tolerance` (a fraction, e.g. 0.1): the same ring version, shard count and
/// owned shards, and rates (per second of each window) of requests and bytes
/// within the tolerance, in total and over the hot lists (the sum of the
/// per-shard differences, as a fraction of the total). Differences of at most
/// one request per second (and 1 KiB per second) always count as none, so
/// an idle pod stays quiet.
pub fn unchanged(last: &ShardLoadReport, next: &ShardLoadReport, tolerance: f64) -> bool {
    if (last.ring_version, last.shards, last.owned_shards)
        != (next.ring_version, next.shards, next.owned_shards)
    {
        return false;
    }
    let (wl, wn) = (
        f64::from(last.window_seconds.max(1)),
        f64::from(next.window_seconds.max(1)),
    );
    #[allow(
        clippy::cast_precision_loss,
        reason = "rates, compared within a tolerance"
    )]
    let rate = |count: u64, window: f64| count as f64 / window;
    let close = |a: f64, b: f64, floor: f64| (a - b).abs() <= (tolerance * a.max(b)).max(floor);
    if !close(rate(last.requests, wl), rate(next.requests, wn), 1.0)
        || !close(rate(last.bytes, wl), rate(next.bytes, wn), 1024.0)
    {
        return false;
    }
    // The hot lists: the per-shard rate differences over both lists.
    let mut difference = 0.0;
    for load in &next.hot {
        let before = last.hot.iter().find(|l| l.shard == load.shard);
        difference +=
            (rate(load.requests, wn) - before.map_or(0.0, |l| rate(l.requests, wl))).abs();
    }
    for load in &last.hot {
        if !next.hot.iter().any(|l| l.shard == load.shard) {
            difference += rate(load.requests, wl);
        }
    }
    let total = rate(last.requests, wl).max(rate(next.requests, wn));
    difference <= (tolerance * total).max(1.0)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::ring::{Assignment, Pod, RingParts, ShardCount, Slot, SlotState, Transition};

    fn ring(version: u64, shards: u32, table: Vec<u16>) -> Ring {
        let slot = |index: u16| Slot {
            index,
            pod: Pod {
                name: format!("svc-{index}-x"),
                uid: format!("uid-{index}"),
                address: SocketAddr::from(([10, 0, 0, 1], 8000 + index)),
            },
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        };
        assert_eq!(table.len(), shards as usize);
        Ring::new(RingParts {
            namespace: "default".into(),
            service: "svc".into(),
            version,
            shards: ShardCount::new(shards).unwrap(),
            vnodes: 16,
            slots: vec![slot(0), slot(1)],
            current: Assignment::new(table).unwrap(),
            transition: Transition::Stable,
        })
        .unwrap()
    }

    #[test]
    fn a_window_reports_what_was_counted_since_the_last() {
        let counters = ShardLoadCounters::new();
        let ring = ring(7, 8, vec![0, 0, 0, 1, 1, 1, 1, 1]);
        let t0 = Instant::now();
        let mut window = LoadWindow::new(t0);
        for _ in 0..5 {
            counters.record(ring.shards(), 1, 10);
        }
        counters.record(ring.shards(), 2, 1000);
        let first = window.take(
            &counters,
            Some(&ring),
            "svc-0-x",
            t0 + Duration::from_millis(14_600),
        );
        assert_eq!(first.ring_version, 7);
        assert_eq!(first.shards, 8);
        assert_eq!(first.window_seconds, 15);
        assert_eq!((first.requests, first.bytes), (6, 1050));
        assert_eq!(first.owned_shards, 3);
        assert_eq!(
            first.hot,
            vec![
                ShardLoad {
                    shard: 1,
                    requests: 5,
                    bytes: 50
                },
                ShardLoad {
                    shard: 2,
                    requests: 1,
                    bytes: 1000
                },
            ]
        );
        // The next window holds only what came after.
        counters.record(ring.shards(), 2, 1);
        let second = window.take(
            &counters,
            Some(&ring),
            "svc-1-x",
            t0 + Duration::from_secs(30),
        );
        assert_eq!((second.requests, second.bytes), (1, 1));
        assert_eq!(second.owned_shards, 5);
        assert_eq!(
            second.hot,
            vec![ShardLoad {
                shard: 2,
                requests: 1,
                bytes: 1
            }]
        );
        let idle = window.take(
            &counters,
            Some(&ring),
            "svc-1-x",
            t0 + Duration::from_secs(45),
        );
        assert_eq!((idle.requests, idle.bytes, idle.hot.len()), (0, 0, 0));
    }

    #[test]
    fn the_hot_list_is_the_busiest_shards_of_the_ring_held() {
        let counters = ShardLoadCounters::new();
        let ring = ring(3, 256, vec![0; 256]);
        // Shard i gets i requests: the busiest are 255, 254, ...
        for shard in 0..256u32 {
            for _ in 0..shard {
                counters.record(ring.shards(), shard, 1);
            }
        }
        // Counted under a smaller S before a split: totals only.
        counters.record(ShardCount::new(128).unwrap(), 0, 5);
        let t0 = Instant::now();
        let report = LoadWindow::new(t0).take(&counters, Some(&ring), "svc-0-x", t0);
        assert_eq!(report.window_seconds, 1, "at least one second");
        assert_eq!(report.hot.len(), HOT_SHARDS);
        let shards: Vec<u32> = report.hot.iter().map(|l| l.shard).collect();
        let expected: Vec<u32> = (256 - HOT_SHARDS as u32..256).rev().collect();
        assert_eq!(shards, expected);
        assert_eq!(report.requests, 255 * 256 / 2 + 1);
        assert_eq!(report.bytes, 255 * 256 / 2 + 5);
        assert_eq!(report.owned_shards, 256);
    }

    #[test]
    fn without_a_ring_only_totals_are_reported() {
        let counters = ShardLoadCounters::new();
        counters.record(ShardCount::DEFAULT, 9, 4);
        let t0 = Instant::now();
        let report = LoadWindow::new(t0).take(&counters, None, "p", t0);
        assert_eq!(
            (report.ring_version, report.shards, report.owned_shards),
            (0, 0, 0)
        );
        assert_eq!((report.requests, report.bytes), (1, 4));
        assert!(report.hot.is_empty());
    }

    fn report(requests: u64, hot: &[(u32, u64)]) -> ShardLoadReport {
        ShardLoadReport {
            ring_version: 5,
            shards: 1024,
            window_seconds: 15,
            window_end_ms: 1_800_000_000_000,
            requests,
            bytes: requests * 100,
            owned_shards: 300,
            hot: hot
                .iter()
                .map(|&(shard, requests)| ShardLoad {
                    shard,
                    requests,
                    bytes: requests * 100,
                })
                .collect(),
        }
    }

    #[test]
    fn small_changes_are_unchanged_and_real_ones_are_not() {
        let last = report(3000, &[(1, 1000), (2, 500), (3, 200)]);
        assert!(unchanged(&last, &last, 0.1));
        // 5 % more everywhere: unchanged at 10 %.
        assert!(unchanged(
            &last,
            &report(3150, &[(1, 1050), (2, 525), (3, 210)]),
            0.1
        ));
        // Totals equal but the hot shard moved: changed.
        assert!(!unchanged(
            &last,
            &report(3000, &[(9, 1000), (2, 500), (3, 200)]),
            0.1
        ));
        // 20 % more: changed.
        assert!(!unchanged(
            &last,
            &report(3600, &[(1, 1200), (2, 600), (3, 240)]),
            0.1
        ));
        // A new ring version, or other shards owned: changed.
        let mut moved = last.clone();
        moved.ring_version = 6;
        assert!(!unchanged(&last, &moved, 0.1));
        let mut owned = last.clone();
        owned.owned_shards = 299;
        assert!(!unchanged(&last, &owned, 0.1));
        // The same rate over a longer window: unchanged.
        let mut longer = report(3200, &[(1, 1066), (2, 533), (3, 213)]);
        longer.window_seconds = 16;
        assert!(unchanged(&last, &longer, 0.1));
        // An idle pod: a few requests more or less are nothing.
        assert!(unchanged(&report(0, &[]), &report(10, &[(4, 10)]), 0.1));
    }
}
