//! Which session each request goes to: [`KeyDistribution`] (`--key-distribution`) and the
//! sampler the workers use.
//!
//! * `uniform` (the default): request `i` goes to session `i mod n`, a round robin, so every
//!   session gets the same share.
//! * `zipf:S`: session `r` (`0..n`) gets a share proportional to `1 / (r + 1)^S` — session 0
//!   the most, the way a few users, rooms or tenants carry most of a real service's traffic.
//!   Session ids hash to shards at random, so the hot sessions land on random shards and pods.
//!   Request `i` draws its session from a precomputed cumulative distribution (binary
//!   search over `n` doubles) at a point given by a hash of `i`: deterministic for a given
//!   `i`, with no shared random state between workers.

use std::fmt;
use std::str::FromStr;

/// Largest Zipf exponent accepted.
pub const MAX_ZIPF_EXPONENT: f64 = 10.0;

/// How requests spread over the sessions; see the `keys` module's docs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum KeyDistribution {
    /// Every session alike, in turn.
    #[default]
    Uniform,
    /// Session `r` in proportion to `1 / (r + 1)^s`.
    Zipf {
        /// The exponent `s`, above 0 and at most `MAX_ZIPF_EXPONENT` (10).
        s: f64,
    },
}

impl fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uniform => f.write_str("uniform"),
            Self::Zipf { s } => write!(f, "zipf:{s}"),
        }
    }
}

impl FromStr for KeyDistribution {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "uniform" {
            return Ok(Self::Uniform);
        }
        let Some(s) = text.strip_prefix("zipf:") else {
            return Err(format!("{text:?} is not uniform or zipf:<s>"));
        };
        let s: f64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number (zipf:<s>, e.g. zipf:1.1)"))?;
        let distribution = Self::Zipf { s };
        distribution.validate()?;
        Ok(distribution)
    }
}

impl KeyDistribution {
    /// Checks the exponent.
    pub fn validate(self) -> Result<(), String> {
        match self {
            Self::Uniform => Ok(()),
            Self::Zipf { s } if s.is_finite() && s > 0.0 && s <= MAX_ZIPF_EXPONENT => Ok(()),
            Self::Zipf { s } => Err(format!(
                "the Zipf exponent {s} must be above 0 and at most {MAX_ZIPF_EXPONENT}"
            )),
        }
    }

    /// Each of `sessions` sessions' share of the requests, session 0 first (they sum to 1).
    pub fn shares(self, sessions: u32) -> Vec<f64> {
        let n = sessions.max(1);
        match self {
            Self::Uniform => vec![1.0 / f64::from(n); n as usize],
            Self::Zipf { s } => {
                let weights: Vec<f64> = (1..=n).map(|r| f64::from(r).powf(-s)).collect();
                let total: f64 = weights.iter().sum();
                weights.into_iter().map(|w| w / total).collect()
            }
        }
    }
}

/// Picks the session of each request; see the `keys` module's docs.
#[derive(Debug, Clone)]
pub(crate) struct KeySampler {
    sessions: u32,
    /// Zipf: `cdf[r]` is the share of sessions `0..=r`; the last is 1.
    cdf: Option<Vec<f64>>,
}

impl KeySampler {
    /// A sampler over `sessions` sessions (at least 1).
    pub(crate) fn new(distribution: KeyDistribution, sessions: u32) -> Self {
        let sessions = sessions.max(1);
        let cdf = match distribution {
            KeyDistribution::Uniform => None,
            KeyDistribution::Zipf { .. } => {
                let mut sum = 0.0;
                let mut cdf: Vec<f64> = distribution
                    .shares(sessions)
                    .into_iter()
                    .map(|share| {
                        sum += share;
                        sum
                    })
                    .collect();
                // Rounding: the last point must catch every draw below 1.
                if let Some(last) = cdf.last_mut() {
                    *last = 1.0;
                }
                Some(cdf)
            }
        };
        Self { sessions, cdf }
    }

    /// The session of request `i`.
    pub(crate) fn pick(&self, i: u64) -> u32 {
        match &self.cdf {
            // `i mod sessions` is below `sessions`, a `u32`.
            None => u32::try_from(i % u64::from(self.sessions)).unwrap_or(0),
            Some(cdf) => {
                let u = unit(i);
                let rank = cdf.partition_point(|&c| c <= u);
                u32::try_from(rank.min(cdf.len() - 1)).unwrap_or(0)
            }
        }
    }
}

/// A point in `[0, 1)` from `i`: 53 bits of a splitmix64 finaliser over `i` and a salt of
/// its own, so the draw does not follow the read/append mix, which hashes `i` too.
fn unit(i: u64) -> f64 {
    // 2^-53: 53 bits, exact in an f64.
    const SCALE: f64 = 1.0 / 9_007_199_254_740_992.0;
    let mut z = i ^ 0x6a09_e667_f3bc_c908;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    #[allow(clippy::cast_precision_loss, reason = "53 bits: exact in an f64")]
    let top = (z >> 11) as f64;
    top * SCALE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_and_refused() {
        assert_eq!("uniform".parse(), Ok(KeyDistribution::Uniform));
        assert_eq!("zipf:1.1".parse(), Ok(KeyDistribution::Zipf { s: 1.1 }));
        assert_eq!(KeyDistribution::Zipf { s: 1.1 }.to_string(), "zipf:1.1");
        for bad in [
            "", "zipf", "zipf:", "zipf:x", "zipf:0", "zipf:-1", "zipf:inf", "zipf:11", "pareto:1",
        ] {
            assert!(bad.parse::<KeyDistribution>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uniform_is_a_round_robin() {
        let sampler = KeySampler::new(KeyDistribution::Uniform, 7);
        let picks: Vec<u32> = (0..14).map(|i| sampler.pick(i)).collect();
        assert_eq!(picks, [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6]);
    }

    /// Counts of each session over `draws` requests.
    fn frequencies(distribution: KeyDistribution, sessions: u32, draws: u64) -> Vec<u64> {
        let sampler = KeySampler::new(distribution, sessions);
        let mut counts = vec![0u64; sessions as usize];
        for i in 0..draws {
            counts[sampler.pick(i) as usize] += 1;
        }
        counts
    }

    #[allow(clippy::cast_precision_loss, reason = "test statistics")]
    #[test]
    fn zipf_frequencies_follow_the_exponent() {
        let (sessions, draws) = (1000u32, 2_000_000u64);
        for s in [0.8, 1.1, 1.5] {
            let distribution = KeyDistribution::Zipf { s };
            let counts = frequencies(distribution, sessions, draws);
            let shares = distribution.shares(sessions);
            assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            // The busiest sessions, each within 3 % of its share.
            for rank in 0..10 {
                let seen = counts[rank] as f64 / draws as f64;
                let relative = (seen - shares[rank]).abs() / shares[rank];
                assert!(
                    relative < 0.03,
                    "s={s} rank {rank}: {seen} vs {}",
                    shares[rank]
                );
            }
            // The exponent, fitted by least squares on log(count) over log(rank) for the
            // ranks that drew plenty (1..=100).
            let points: Vec<(f64, f64)> = (0..100)
                .map(|r| ((r as f64 + 1.0).ln(), (counts[r] as f64).ln()))
                .collect();
            let n = points.len() as f64;
            let (mx, my) = (
                points.iter().map(|p| p.0).sum::<f64>() / n,
                points.iter().map(|p| p.1).sum::<f64>() / n,
            );
            let slope = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
                / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
            assert!((-slope - s).abs() < 0.03, "s={s}: fitted {}", -slope);
            // Every draw lands on a session, and the least popular are reached.
            assert_eq!(counts.iter().sum::<u64>(), draws);
            assert!(counts[sessions as usize - 1] > 0);
        }
    }

    #[test]
    fn one_session_takes_everything() {
        let sampler = KeySampler::new(KeyDistribution::Zipf { s: 1.1 }, 1);
        assert!((0..1000).all(|i| sampler.pick(i) == 0));
    }
}
