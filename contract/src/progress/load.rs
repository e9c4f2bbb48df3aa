//! How busy a pod is, by shard: the report a pod patches onto its own Pod as
//! the annotation [`SHARD_LOAD`](crate::ring::annotations::SHARD_LOAD), and the
//! operator reads to place shards by load (`docs/adr/0002-load-aware-placement.md`).
//!
//! Over the last [`window_seconds`](ShardLoadReport::window_seconds), the pod
//! served [`requests`](ShardLoadReport::requests) requests, carrying
//! [`bytes`](ShardLoadReport::bytes) request and response body bytes, for the
//! [`owned_shards`](ShardLoadReport::owned_shards) shards it owned under the ring
//! [`ring_version`](ShardLoadReport::ring_version), whose shard numbering has
//! [`shards`](ShardLoadReport::shards) shards; the window ended at
//! [`window_end_ms`](ShardLoadReport::window_end_ms) (the pod's wall clock),
//! so that a reader can tell a live report from the last one of a pod whose
//! reporter stopped. [`hot`](ShardLoadReport::hot) names
//! its busiest shards by requests, busiest first, at most
//! [`ShardLoadReport::MAX_HOT`]; the load of its other shards is the rest of the
//! totals.
//!
//! The value is JSON with camelCase names, read strictly: unknown fields, a
//! value longer than [`ShardLoadReport::MAX_BYTES`], more than
//! [`ShardLoadReport::MAX_HOT`] hot shards, and figures that contradict each
//! other are refused with a [`LoadReportError`] that says what is wrong.
//!
//! ```
//! use locus_contract::progress::{ShardLoad, ShardLoadReport};
//!
//! let report = ShardLoadReport {
//!     ring_version: 12,
//!     shards: 4096,
//!     window_seconds: 60,
//!     window_end_ms: 1_800_000_000_000,
//!     requests: 6000,
//!     bytes: 1_200_000,
//!     owned_shards: 1365,
//!     hot: ShardLoadReport::hottest([
//!         ShardLoad { shard: 7, requests: 900, bytes: 90_000 },
//!         ShardLoad { shard: 3, requests: 1200, bytes: 240_000 },
//!     ]),
//! };
//! let text = report.to_annotation();
//! assert!(text.starts_with(
//!     r#"{"ringVersion":12,"shards":4096,"windowSeconds":60,"windowEndMs":1800000000000,"#
//! ));
//! let read = ShardLoadReport::from_annotation(&text).unwrap();
//! assert_eq!(read, report);
//! assert_eq!(read.hot[0].shard, 3);
//! assert_eq!(read.requests_per_second(), 100.0);
//! assert!(ShardLoadReport::from_annotation(r#"{"ringVersion":1}"#).is_err());
//! ```

use serde::{Deserialize, Serialize};

use crate::ring::{MAX_SHARDS, MAX_VERSION, Ring};

/// What a pod served over its last window, in total and for its busiest
/// shards; the value of the annotation
/// [`SHARD_LOAD`](crate::ring::annotations::SHARD_LOAD) (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardLoadReport {
    /// The ring version under which the pod owned the shards it counts.
    pub ring_version: u64,
    /// The shard count `S` of that ring: shard numbers are `0..shards`.
    pub shards: u32,
    /// Length of the window the counts cover, in seconds (at least 1).
    pub window_seconds: u32,
    /// When the window ended: Unix time in milliseconds, by the pod's clock
    /// (at least `windowSeconds` after the epoch, at most 2^53 - 1). Required:
    /// a report without it is refused (`docs/adr/0002-load-aware-placement.md`,
    /// amendment 1).
    pub window_end_ms: u64,
    /// Requests served in the window, for every shard the pod owned.
    pub requests: u64,
    /// Request and response body bytes of those requests.
    pub bytes: u64,
    /// How many shards the pod owned under `ring_version`.
    pub owned_shards: u32,
    /// The pod's busiest shards by requests, busiest first, at most
    /// [`MAX_HOT`](Self::MAX_HOT), each shard at most once; their sums do not
    /// exceed [`requests`](Self::requests) and [`bytes`](Self::bytes).
    pub hot: Vec<ShardLoad>,
}

/// What one shard cost a pod over the report's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardLoad {
    /// The shard's number, below the report's [`shards`](ShardLoadReport::shards).
    pub shard: u32,
    /// Requests served for keys of the shard.
    pub requests: u64,
    /// Request and response body bytes of those requests.
    pub bytes: u64,
}

impl ShardLoadReport {
    /// Largest annotation value accepted, in bytes (16 KiB).
    pub const MAX_BYTES: usize = 16 * 1024;

    /// Most hot shards a report names.
    pub const MAX_HOT: usize = 64;

    /// The busiest [`MAX_HOT`](Self::MAX_HOT) of `loads` by requests, busiest
    /// first (ties: the lower shard number first), in the order
    /// [`hot`](Self::hot) requires. Shards that served no request are left out.
    #[must_use]
    pub fn hottest(loads: impl IntoIterator<Item = ShardLoad>) -> Vec<ShardLoad> {
        let mut all: Vec<ShardLoad> = loads.into_iter().filter(|l| l.requests > 0).collect();
        all.sort_unstable_by(|a, b| b.requests.cmp(&a.requests).then(a.shard.cmp(&b.shard)));
        all.truncate(Self::MAX_HOT);
        all
    }

    /// The report of the pod of `slot` in `ring` whose shards each served `load(shard)` in a
    /// window of `window_seconds` that ended at `window_end_ms`: the totals summed, the
    /// busiest kept as [`hot`](Self::hot). `None` if the slot holds no shard. What a test or
    /// a simulation writes in place of the SDK's reporter, from a known load per shard.
    #[must_use]
    pub fn of_slot(
        ring: &Ring,
        slot: u16,
        window_seconds: u32,
        window_end_ms: u64,
        load: impl Fn(u32) -> ShardLoad,
    ) -> Option<Self> {
        let loads: Vec<ShardLoad> = ring.current().shards_of(slot).map(load).collect();
        if loads.is_empty() {
            return None;
        }
        Some(Self {
            ring_version: ring.version(),
            shards: ring.shards().get(),
            window_seconds,
            window_end_ms,
            requests: loads.iter().map(|l| l.requests).sum(),
            bytes: loads.iter().map(|l| l.bytes).sum(),
            owned_shards: u32::try_from(loads.len()).unwrap_or(u32::MAX),
            hot: Self::hottest(loads),
        })
    }

    /// Requests per second over the window (0 for an empty window).
    #[must_use]
    pub fn requests_per_second(&self) -> f64 {
        per_second(self.requests, self.window_seconds)
    }

    /// When the window started, in Unix milliseconds: its end less its
    /// length.
    #[must_use]
    pub fn window_start_ms(&self) -> u64 {
        self.window_end_ms
            .saturating_sub(u64::from(self.window_seconds) * 1000)
    }

    /// Body bytes per second over the window (0 for an empty window).
    #[must_use]
    pub fn bytes_per_second(&self) -> f64 {
        per_second(self.bytes, self.window_seconds)
    }

    /// The report as the annotation's value (JSON). It is not checked: a
    /// writer that builds [`hot`](Self::hot) with [`hottest`](Self::hottest)
    /// and counts the totals from the same counters writes a valid report
    /// ([`validate`](Self::validate) says).
    #[must_use]
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads and checks an annotation value (surrounding whitespace ignored).
    pub fn from_annotation(text: &str) -> Result<Self, LoadReportError> {
        if text.len() > Self::MAX_BYTES {
            return Err(LoadReportError::TooLong {
                bytes: text.len(),
                max: Self::MAX_BYTES,
            });
        }
        let report: Self = serde_json::from_str(text.trim())
            .map_err(|e| LoadReportError::NotAReport(e.to_string()))?;
        report.validate()?;
        Ok(report)
    }

    /// Checks that the figures fit together; the first thing wrong is named.
    pub fn validate(&self) -> Result<(), LoadReportError> {
        if self.ring_version == 0 || self.ring_version > MAX_VERSION {
            return Err(LoadReportError::RingVersion(self.ring_version));
        }
        if !self.shards.is_power_of_two() || self.shards > MAX_SHARDS {
            return Err(LoadReportError::ShardCount(self.shards));
        }
        if self.window_seconds == 0 {
            return Err(LoadReportError::EmptyWindow);
        }
        if self.window_end_ms < u64::from(self.window_seconds) * 1000
            || self.window_end_ms > MAX_VERSION
        {
            return Err(LoadReportError::WindowEnd(self.window_end_ms));
        }
        if self.owned_shards > self.shards {
            return Err(LoadReportError::OwnedShards {
                owned: self.owned_shards,
                shards: self.shards,
            });
        }
        if self.hot.len() > Self::MAX_HOT {
            return Err(LoadReportError::TooManyHot {
                count: self.hot.len(),
                max: Self::MAX_HOT,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, load) in self.hot.iter().enumerate() {
            if load.shard >= self.shards {
                return Err(LoadReportError::HotShardOutOfRange {
                    shard: load.shard,
                    shards: self.shards,
                });
            }
            if !seen.insert(load.shard) {
                return Err(LoadReportError::HotShardTwice(load.shard));
            }
            if index > 0 && self.hot[index - 1].requests < load.requests {
                return Err(LoadReportError::HotNotBusiestFirst { index });
            }
        }
        let hot_requests = self
            .hot
            .iter()
            .map(|l| u128::from(l.requests))
            .sum::<u128>();
        if hot_requests > u128::from(self.requests) {
            return Err(LoadReportError::HotExceedsTotal {
                what: "requests",
                hot: hot_requests,
                total: self.requests,
            });
        }
        let hot_bytes = self.hot.iter().map(|l| u128::from(l.bytes)).sum::<u128>();
        if hot_bytes > u128::from(self.bytes) {
            return Err(LoadReportError::HotExceedsTotal {
                what: "bytes",
                hot: hot_bytes,
                total: self.bytes,
            });
        }
        Ok(())
    }
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52 in any window
fn per_second(count: u64, window_seconds: u32) -> f64 {
    if window_seconds == 0 {
        0.0
    } else {
        count as f64 / f64::from(window_seconds)
    }
}

/// Why a [`ShardLoadReport`] annotation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadReportError {
    /// The value is longer than [`ShardLoadReport::MAX_BYTES`].
    #[error("shard load report is {bytes} bytes, more than the {max} allowed")]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The value is not the report's JSON (malformed, a field missing or
    /// unknown, a number out of range).
    #[error("shard load report is not a report: {0}")]
    NotAReport(String),
    /// `ringVersion` is 0 or above the largest ring version.
    #[error("shard load report: ringVersion {0} is not a ring version (1 to 2^53-1)")]
    RingVersion(u64),
    /// `shards` is not a power of two up to the largest shard count.
    #[error("shard load report: shards {0} is not a power of two from 1 to 65536")]
    ShardCount(u32),
    /// `windowSeconds` is 0.
    #[error("shard load report: windowSeconds is 0, want at least 1")]
    EmptyWindow,
    /// `windowEndMs` is before the window could have started (less than
    /// `windowSeconds` after the epoch) or above 2^53 - 1.
    #[error(
        "shard load report: windowEndMs {0} is not a time in Unix milliseconds after the window's length"
    )]
    WindowEnd(u64),
    /// `ownedShards` is above `shards`.
    #[error("shard load report: ownedShards {owned} is more than shards {shards}")]
    OwnedShards {
        /// The owned count.
        owned: u32,
        /// The shard count.
        shards: u32,
    },
    /// `hot` names more than [`ShardLoadReport::MAX_HOT`] shards.
    #[error("shard load report names {count} hot shards, more than the {max} allowed")]
    TooManyHot {
        /// How many it names.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A hot shard's number is not below `shards`.
    #[error("shard load report: hot shard {shard} is not below shards {shards}")]
    HotShardOutOfRange {
        /// The shard named.
        shard: u32,
        /// The shard count.
        shards: u32,
    },
    /// A shard is named twice in `hot`.
    #[error("shard load report: hot shard {0} is named twice")]
    HotShardTwice(u32),
    /// `hot` is not sorted busiest first.
    #[error(
        "shard load report: hot[{index}] has more requests than hot[{}], want busiest first",
        index - 1
    )]
    HotNotBusiestFirst {
        /// The first entry busier than the one before it.
        index: usize,
    },
    /// The hot shards' sum exceeds the pod's total.
    #[error("shard load report: the hot shards' {what} sum to {hot}, more than the total {total}")]
    HotExceedsTotal {
        /// `requests` or `bytes`.
        what: &'static str,
        /// The hot shards' sum.
        hot: u128,
        /// The total.
        total: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(shard: u32, requests: u64) -> ShardLoad {
        ShardLoad {
            shard,
            requests,
            bytes: requests * 10,
        }
    }

    fn report() -> ShardLoadReport {
        ShardLoadReport {
            ring_version: 9,
            shards: 1024,
            window_seconds: 30,
            window_end_ms: 1_800_000_030_000,
            requests: 3000,
            bytes: 30_000,
            owned_shards: 341,
            hot: vec![load(5, 900), load(1, 300), load(700, 300)],
        }
    }

    #[test]
    fn a_report_reads_back_as_written_in_camel_case() {
        let text = report().to_annotation();
        assert_eq!(
            text,
            r#"{"ringVersion":9,"shards":1024,"windowSeconds":30,"windowEndMs":1800000030000,"requests":3000,"bytes":30000,"ownedShards":341,"hot":[{"shard":5,"requests":900,"bytes":9000},{"shard":1,"requests":300,"bytes":3000},{"shard":700,"requests":300,"bytes":3000}]}"#
        );
        assert_eq!(ShardLoadReport::from_annotation(&text), Ok(report()));
        assert_eq!(
            ShardLoadReport::from_annotation(&format!("  {text}\n")),
            Ok(report())
        );
        assert!((report().requests_per_second() - 100.0).abs() < 1e-9);
        assert!((report().bytes_per_second() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn hottest_keeps_the_busiest_sixty_four_busiest_first() {
        let hot = ShardLoadReport::hottest((0..200).map(|s| load(s, u64::from(s % 100))));
        assert_eq!(hot.len(), ShardLoadReport::MAX_HOT);
        assert_eq!((hot[0].shard, hot[0].requests), (99, 99));
        assert_eq!((hot[1].shard, hot[1].requests), (199, 99));
        assert!(hot.windows(2).all(|w| w[0].requests >= w[1].requests));
        assert!(ShardLoadReport::hottest([load(3, 0)]).is_empty());
        let full = ShardLoadReport {
            requests: 1_000_000,
            bytes: 10_000_000,
            shards: 256,
            owned_shards: 200,
            hot,
            ..report()
        };
        assert_eq!(full.validate(), Ok(()));
    }

    #[test]
    fn malformed_values_are_refused_with_the_reason() {
        let refused = |text: &str| {
            ShardLoadReport::from_annotation(text)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("{").contains("not a report"));
        assert!(refused("").contains("not a report"));
        let missing =
            refused(r#"{"ringVersion":1,"shards":1,"windowSeconds":1,"windowEndMs":1000}"#);
        assert!(missing.contains("missing field `requests`"), "{missing}");
        // Reports of the first version, without their window's end, are refused.
        let old = report()
            .to_annotation()
            .replace(r#""windowEndMs":1800000030000,"#, "");
        let old = refused(&old);
        assert!(old.contains("missing field `windowEndMs`"), "{old}");
        let mut unknown = report().to_annotation();
        unknown.insert_str(1, r#""extra":1,"#);
        assert!(refused(&unknown).contains("unknown field `extra`"));
        let negative = report().to_annotation().replace("3000,", "-3000,");
        assert!(refused(&negative).contains("not a report"));
        let long = format!("{}{}", report().to_annotation(), " ".repeat(16 * 1024));
        assert_eq!(
            ShardLoadReport::from_annotation(&long),
            Err(LoadReportError::TooLong {
                bytes: long.len(),
                max: 16 * 1024
            })
        );
    }

    #[test]
    fn figures_that_do_not_fit_together_are_refused() {
        let check = |edit: &dyn Fn(&mut ShardLoadReport)| {
            let mut r = report();
            edit(&mut r);
            let text = r.to_annotation();
            ShardLoadReport::from_annotation(&text).unwrap_err()
        };
        assert_eq!(
            check(&|r| r.ring_version = 0),
            LoadReportError::RingVersion(0)
        );
        assert_eq!(
            check(&|r| r.ring_version = MAX_VERSION + 1),
            LoadReportError::RingVersion(MAX_VERSION + 1)
        );
        assert_eq!(
            check(&|r| r.shards = 1000),
            LoadReportError::ShardCount(1000)
        );
        assert_eq!(
            check(&|r| r.shards = 1 << 17),
            LoadReportError::ShardCount(1 << 17)
        );
        assert_eq!(
            check(&|r| r.window_seconds = 0),
            LoadReportError::EmptyWindow
        );
        assert_eq!(
            check(&|r| r.window_end_ms = 29_999),
            LoadReportError::WindowEnd(29_999)
        );
        assert_eq!(
            check(&|r| r.window_end_ms = MAX_VERSION + 1),
            LoadReportError::WindowEnd(MAX_VERSION + 1)
        );
        assert_eq!(
            check(&|r| r.owned_shards = 1025),
            LoadReportError::OwnedShards {
                owned: 1025,
                shards: 1024
            }
        );
        assert_eq!(
            check(&|r| r.hot = (0..65).map(|s| load(s, 1)).collect()),
            LoadReportError::TooManyHot { count: 65, max: 64 }
        );
        assert_eq!(
            check(&|r| r.hot[1].shard = 1024),
            LoadReportError::HotShardOutOfRange {
                shard: 1024,
                shards: 1024
            }
        );
        assert_eq!(
            check(&|r| r.hot[2].shard = 5),
            LoadReportError::HotShardTwice(5)
        );
        assert_eq!(
            check(&|r| r.hot.reverse()),
            LoadReportError::HotNotBusiestFirst { index: 2 }
        );
        let error = check(&|r| r.requests = 1000);
        assert_eq!(
            error,
            LoadReportError::HotExceedsTotal {
                what: "requests",
                hot: 1500,
                total: 1000
            }
        );
        assert_eq!(
            error.to_string(),
            "shard load report: the hot shards' requests sum to 1500, more than the total 1000"
        );
        assert!(matches!(
            check(&|r| r.bytes = 0),
            LoadReportError::HotExceedsTotal { what: "bytes", .. }
        ));
        assert_eq!(
            LoadReportError::HotNotBusiestFirst { index: 2 }.to_string(),
            "shard load report: hot[2] has more requests than hot[1], want busiest first"
        );
    }

    #[test]
    fn a_pod_with_no_traffic_reports_an_empty_window() {
        let idle = ShardLoadReport {
            requests: 0,
            bytes: 0,
            hot: Vec::new(),
            ..report()
        };
        assert_eq!(
            ShardLoadReport::from_annotation(&idle.to_annotation()),
            Ok(idle.clone())
        );
        assert!(idle.requests_per_second().abs() < f64::EPSILON);
    }
}
