//! Counting one phase: per-worker tallies merged at the end, HDR latency
//! histograms, and the [`Summary`] they become (a table for people, one
//! JSON line for scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded exactly, in microseconds (60 s); longer ones
/// are recorded as 60 s.
const MAX_MICROS: u64 = 60_000_000;
/// Distinct pod names counted before the rest go under `other`.
const MAX_PODS: usize = 1024;
/// Double writers listed as examples.
const MAX_DOUBLE_WRITER_EXAMPLES: usize = 5;

fn histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (1 µs … 60 s, 3 digits).
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// What one worker (or a merged phase) counted.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) appends_acked: u64,
    pub(crate) reads_ok: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) cache: CacheCounts,
    pub(crate) moved: MovedCounts,
    pub(crate) takeovers: BTreeMap<u64, TakeoverCounts>,
    pub(crate) handoff: BTreeMap<String, u64>,
    pub(crate) by_pod: BTreeMap<String, u64>,
    pub(crate) forwarded: u64,
    pub(crate) not_owner: u64,
    pub(crate) stale_reads: u64,
    pub(crate) version_conflicts: u64,
    pub(crate) double_writers: u64,
    pub(crate) double_writer_examples: Vec<String>,
    pub(crate) writers_untracked: u64,
    all: Histogram<u64>,
    appends: Histogram<u64>,
    reads: Histogram<u64>,
    /// At a fixed rate: how late each request left after its intended
    /// send time (the pacer's precision plus waiting for a free worker).
    send_lag: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            requests: 0,
            appends_acked: 0,
            reads_ok: 0,
            duplicates: 0,
            errors: BTreeMap::new(),
            cache: CacheCounts::default(),
            moved: MovedCounts::default(),
            takeovers: BTreeMap::new(),
            handoff: BTreeMap::new(),
            by_pod: BTreeMap::new(),
            forwarded: 0,
            not_owner: 0,
            stale_reads: 0,
            version_conflicts: 0,
            double_writers: 0,
            double_writer_examples: Vec::new(),
            writers_untracked: 0,
            all: histogram(),
            appends: histogram(),
            reads: histogram(),
            send_lag: histogram(),
        }
    }
}

/// Which operation a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Append,
    Read,
}

impl Tally {
    pub(crate) fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    pub(crate) fn latency(&mut self, op: Op, took: Duration) {
        let micros = micros(took);
        self.all.saturating_record(micros);
        match op {
            Op::Append => self.appends.saturating_record(micros),
            Op::Read => self.reads.saturating_record(micros),
        }
    }

    /// A paced request left `lag` after its intended send time.
    pub(crate) fn send_lag(&mut self, lag: Duration) {
        self.send_lag.saturating_record(micros(lag));
    }

    pub(crate) fn handoff(&mut self, path: &str) {
        // The SDK's few labels; anything else is counted together.
        let path = match path {
            "unchanged" | "transferred" | "promoted" | "loaded" | "cold" => path,
            _ => "other",
        };
        *self.handoff.entry(path.to_owned()).or_default() += 1;
    }

    /// An `x-locus-takeover` header (`<epoch>:<path>`, or
    /// `<epoch>:<path>:late` once the pod's report of that transition was
    /// final: counted apart); false if it is not one the SDK writes.
    pub(crate) fn takeover(&mut self, header: &str) -> bool {
        let (header, late) = match header.strip_suffix(":late") {
            Some(rest) => (rest, true),
            None => (header, false),
        };
        let Some((epoch, path)) = header.split_once(':') else {
            return false;
        };
        let (Ok(epoch), Some(path)) = (
            epoch.parse::<u64>(),
            locus::progress::TakeoverPath::from_name(path),
        ) else {
            return false;
        };
        if self.takeovers.len() >= MAX_EPOCHS && !self.takeovers.contains_key(&epoch) {
            return true;
        }
        let counts = self.takeovers.entry(epoch).or_default();
        if late {
            counts.late += 1;
        } else if path.is_warm() {
            counts.warm += 1;
        } else {
            counts.cold += 1;
        }
        true
    }

    pub(crate) fn pod(&mut self, pod: &str) {
        if self.by_pod.len() < MAX_PODS || self.by_pod.contains_key(pod) {
            *self.by_pod.entry(pod.to_owned()).or_default() += 1;
        } else {
            *self.by_pod.entry("other".to_owned()).or_default() += 1;
        }
    }

    /// Counts a session that has just become a double writer, described by
    /// `example` (kept among the first few).
    pub(crate) fn double_writer(&mut self, example: String) {
        self.double_writers += 1;
        if self.double_writer_examples.len() < MAX_DOUBLE_WRITER_EXAMPLES {
            self.double_writer_examples.push(example);
        }
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.appends_acked += other.appends_acked;
        self.reads_ok += other.reads_ok;
        self.duplicates += other.duplicates;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.cache.warm += other.cache.warm;
        self.cache.cold += other.cache.cold;
        self.cache.stateless += other.cache.stateless;
        self.cache.unknown += other.cache.unknown;
        self.moved.warm += other.moved.warm;
        self.moved.cold += other.moved.cold;
        self.moved.unannounced += other.moved.unannounced;
        for (epoch, n) in &other.takeovers {
            if self.takeovers.len() < MAX_EPOCHS || self.takeovers.contains_key(epoch) {
                let counts = self.takeovers.entry(*epoch).or_default();
                counts.warm += n.warm;
                counts.cold += n.cold;
                counts.late += n.late;
            }
        }
        for (path, n) in &other.handoff {
            *self.handoff.entry(path.clone()).or_default() += n;
        }
        for (pod, n) in &other.by_pod {
            *self.by_pod.entry(pod.clone()).or_default() += n;
        }
        self.forwarded += other.forwarded;
        self.not_owner += other.not_owner;
        self.stale_reads += other.stale_reads;
        self.version_conflicts += other.version_conflicts;
        self.double_writers += other.double_writers;
        let room = MAX_DOUBLE_WRITER_EXAMPLES.saturating_sub(self.double_writer_examples.len());
        self.double_writer_examples
            .extend(other.double_writer_examples.iter().take(room).cloned());
        self.writers_untracked += other.writers_untracked;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.all.add(&other.all);
        let _ = self.appends.add(&other.appends);
        let _ = self.reads.add(&other.reads);
        let _ = self.send_lag.add(&other.send_lag);
    }

    pub(crate) fn summary(
        &self,
        phase: &str,
        target: &str,
        elapsed: Duration,
        cpu: Option<Duration>,
        verification: Option<Verification>,
    ) -> Summary {
        let errors: u64 = self.errors.values().sum();
        let seconds = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "a rate for people")]
        let throughput = if seconds > 0.0 {
            self.requests as f64 / seconds
        } else {
            0.0
        };
        Summary {
            phase: phase.to_owned(),
            target: target.to_owned(),
            elapsed_s: round3(seconds),
            requests: self.requests,
            ok: self.appends_acked + self.reads_ok,
            errors,
            appends_acked: self.appends_acked,
            reads_ok: self.reads_ok,
            duplicates: self.duplicates,
            throughput_rps: round3(throughput),
            latency_ms: Latency::of(&self.all),
            append_latency_ms: Latency::of(&self.appends),
            read_latency_ms: Latency::of(&self.reads),
            send_lag_ms: (!self.send_lag.is_empty()).then(|| Latency::of(&self.send_lag)),
            cpu_s: cpu.map(|c| round3(c.as_secs_f64())),
            errors_by_kind: self.errors.clone(),
            cache: self.cache,
            moved: self.moved,
            takeovers: self.takeovers.clone(),
            handoff: self.handoff.clone(),
            by_pod: self.by_pod.clone(),
            forwarded: self.forwarded,
            not_owner: self.not_owner,
            stale_reads: self.stale_reads,
            version_conflicts: self.version_conflicts,
            double_writers: self.double_writers,
            double_writer_examples: self.double_writer_examples.clone(),
            writers_untracked: self.writers_untracked,
            verification,
        }
    }
}

fn micros(took: Duration) -> u64 {
    u64::try_from(took.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MICROS)
}

/// CPU time (user + system, all threads) this process has used so far,
/// from `/proc/self/stat`; `None` where that file is not readable.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3:
    // utime and stime are fields 14 and 15, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Linux reports these in USER_HZ, 100 on every architecture it supports.
    Some(Duration::from_millis((utime + stime) * 10))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How the answering pod found the session (`x-locus-cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounts {
    /// In memory.
    pub warm: u64,
    /// Loaded or created for the request.
    pub cold: u64,
    /// Read from PostgreSQL (stateless mode).
    pub stateless: u64,
    /// No (or an unknown) `x-locus-cache` header.
    pub unknown: u64,
}

/// Sessions seen answered by a new pod (after answers from another one):
/// how the new pod found them (`x-locus-cache` of its first answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedCounts {
    /// In memory on the new pod: handed over (pre-copy, transfer, push).
    pub warm: u64,
    /// Not in memory: loaded or created for the request.
    pub cold: u64,
    /// Of these, the ones for which no answer from the new pod carried
    /// `x-locus-takeover` by the end of the phase: the pod took the session
    /// over by a path it does not count, or without a transition (a
    /// replacement pod, a restart). The header goes to the first request the
    /// pod serves for the key, which is not always the first answer to come
    /// back when requests of one session run concurrently.
    #[serde(default)]
    pub unannounced: u64,
}

impl MovedCounts {
    /// Percentage of moved sessions found warm; `None` if none moved.
    pub fn warm_percent(&self) -> Option<f64> {
        let all = self.warm + self.cold;
        #[allow(clippy::cast_precision_loss, reason = "a percentage for people")]
        (all > 0).then(|| round3(100.0 * self.warm as f64 / all as f64))
    }
}

/// First answers for sessions a pod took over (`x-locus-takeover`), of one
/// transition: arrived with their state or without.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverCounts {
    /// Warm paths (pre-copied, transferred, pushed, promoted).
    pub warm: u64,
    /// Cold paths (absent, rolled forward, fenced load).
    pub cold: u64,
    /// Announced late (`:late`), by either path: the first answer came
    /// after the pod's report of the transition was final, which does not
    /// count them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most transitions (epochs) a tally keeps takeover counts for.
const MAX_EPOCHS: usize = 64;

/// Latency percentiles of the answered requests, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        #[allow(clippy::cast_precision_loss, reason = "microseconds below 2^53")]
        let ms = |micros: u64| round3(micros as f64 / 1000.0);
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: round3(h.mean() / 1000.0),
        }
    }
}

/// An acknowledged append missing from the server's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    /// The session.
    pub session: String,
    /// The append's sequence number.
    pub seq: u64,
}

/// What reading every session back found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Sessions read back (every session with an acknowledged append).
    pub sessions_checked: u64,
    /// Sessions that could not be read (after retries); their appends are
    /// in `unverified_appends`, not in `lost_writes`.
    pub sessions_unreadable: u64,
    /// Acknowledged appends over the sessions read.
    pub acked_appends: u64,
    /// Acknowledged appends missing from the server's state.
    pub lost_writes: u64,
    /// Up to 10 of them.
    pub lost_examples: Vec<LostWrite>,
    /// Sessions whose version is below the highest version an append was
    /// acknowledged with.
    pub stale_sessions: u64,
    /// Acknowledged appends of unreadable sessions.
    pub unverified_appends: u64,
    /// Why reads failed, by kind (last attempt per session).
    pub read_errors: BTreeMap<String, u64>,
    /// Time the read-back took.
    pub elapsed_s: f64,
    /// `x-locus-takeover` headers the read-back saw (its reads can be the
    /// first answers for sessions taken over), by `Switch` version.
    #[serde(default)]
    pub takeovers: BTreeMap<u64, TakeoverCounts>,
}

/// What a phase (or the whole run) measured. `--json` prints it as one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Phase name (`total` for the whole run of the binary).
    pub phase: String,
    /// `ring` (routed by the SDK's router) or `direct` (one URL).
    pub target: String,
    /// Wall time of the phase.
    pub elapsed_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests answered 200 with a valid answer.
    pub ok: u64,
    /// Requests that were not (sum of `errors_by_kind`).
    pub errors: u64,
    /// Appends answered 200.
    pub appends_acked: u64,
    /// Reads answered 200.
    pub reads_ok: u64,
    /// Appends the server reported as already applied (replays).
    pub duplicates: u64,
    /// Requests per second.
    pub throughput_rps: f64,
    /// Latency of answered requests.
    pub latency_ms: Latency,
    /// Latency of answered appends.
    pub append_latency_ms: Latency,
    /// Latency of answered reads.
    pub read_latency_ms: Latency,
    /// At a fixed rate: how late requests left after their intended send
    /// times (latencies above count from the intended time, so a late
    /// send is not hidden). Absent in closed loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_ms: Option<Latency>,
    /// CPU seconds (user + system) the load generator's process used in the
    /// phase (from `/proc/self/stat`; absent where it is not readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    /// Failed requests by kind: the router's error label (`timeout`,
    /// `upstream`, `owner_unavailable`, ...), `http_<status>`,
    /// `bad_answer` (unparsable 200), `wrong_answer` (another session's).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Warm, cold and stateless answers.
    pub cache: CacheCounts,
    /// Sessions answered by a new pod, warm or cold there.
    #[serde(default)]
    pub moved: MovedCounts,
    /// First answers for sessions a pod took over (`x-locus-takeover`), by the
    /// transition's `Switch` version: what to hold the pods' `served` counts
    /// against.
    #[serde(default)]
    pub takeovers: BTreeMap<u64, TakeoverCounts>,
    /// First touches of sessions a pod gained in a transition, by how the
    /// session got there (`x-locus-handoff`: `unchanged`, `transferred`,
    /// `promoted`, `loaded`, `cold`).
    #[serde(default)]
    pub handoff: BTreeMap<String, u64>,
    /// Answers per pod (`x-locus-pod`).
    pub by_pod: BTreeMap<String, u64>,
    /// Answers a pod forwarded to the owner (`x-locus-forwarded-by`).
    pub forwarded: u64,
    /// Answers from a pod other than the owner under the load generator's
    /// ring when the answer arrived (routed mode only).
    pub not_owner: u64,
    /// Reads that returned a version below one already acknowledged for the
    /// session before the read was sent.
    pub stale_reads: u64,
    /// Applied appends of one session answered with the same version (two
    /// writers, or state lost and rebuilt).
    pub version_conflicts: u64,
    /// Sessions counted once each, in the phase that first saw it, on which
    /// two pods acknowledged applied appends over overlapping version ranges
    /// (`[lowest, highest]` per pod; a shared boundary version overlaps):
    /// two owners at once. Assumes pod names are unique per incarnation and
    /// that a key's ownership never returns to a pod it left within the run.
    #[serde(default)]
    pub double_writers: u64,
    /// Up to 5 of them: `session: pod [min,max] and pod [min,max]`, the
    /// ranges as they stood when the overlap was first seen.
    #[serde(default)]
    pub double_writer_examples: Vec<String>,
    /// Applied appends acknowledged by a pod beyond the first 16 of their
    /// session, left out of the double-writer check.
    #[serde(default)]
    pub writers_untracked: u64,
    /// The read-back, when it ran.
    pub verification: Option<Verification>,
}

impl Summary {
    /// One JSON line.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// True when nothing an invariant forbids was seen: no lost write, no
    /// stale session or read, no version conflict, no double writer (errors
    /// such as 503s are allowed).
    pub fn is_consistent(&self) -> bool {
        self.stale_reads == 0
            && self.version_conflicts == 0
            && self.double_writers == 0
            && self
                .verification
                .as_ref()
                .is_none_or(|v| v.lost_writes == 0 && v.stale_sessions == 0)
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "phase {}  ({} target)  {:.1} s  {} requests  {:.1} req/s",
            self.phase, self.target, self.elapsed_s, self.requests, self.throughput_rps
        );
        let _ = writeln!(
            out,
            "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency", "count", "p50 ms", "p99 ms", "p999 ms", "max ms"
        );
        for (name, l) in [
            ("all", &self.latency_ms),
            ("append", &self.append_latency_ms),
            ("read", &self.read_latency_ms),
        ] {
            let _ = writeln!(
                out,
                "  {name:<8} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                l.count, l.p50, l.p99, l.p999, l.max
            );
        }
        if let Some(l) = &self.send_lag_ms {
            let _ = writeln!(
                out,
                "  {:<8} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                "send lag", l.count, l.p50, l.p99, l.p999, l.max
            );
        }
        if let Some(cpu) = self.cpu_s {
            let _ = writeln!(out, "  load generator CPU: {cpu:.2} s");
        }
        let _ = write!(
            out,
            "  ok {} (appends {}, reads {}, duplicates {})  errors {}",
            self.ok, self.appends_acked, self.reads_ok, self.duplicates, self.errors
        );
        if !self.errors_by_kind.is_empty() {
            let _ = write!(out, " ({})", listed(&self.errors_by_kind));
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "  cache: warm {}  cold {}  stateless {}  unknown {}",
            self.cache.warm, self.cache.cold, self.cache.stateless, self.cache.unknown
        );
        if self.moved != MovedCounts::default() || !self.handoff.is_empty() {
            let _ = writeln!(
                out,
                "  moved sessions: warm {}  cold {}  first touches: {}",
                self.moved.warm,
                self.moved.cold,
                listed_or_dash(&self.handoff)
            );
        }
        let _ = writeln!(
            out,
            "  pods: {}  forwarded {}  not owner {}",
            listed_or_dash(&self.by_pod),
            self.forwarded,
            self.not_owner
        );
        let _ = write!(
            out,
            "  checks: stale reads {}  version conflicts {}  double writers {}",
            self.stale_reads, self.version_conflicts, self.double_writers
        );
        if self.writers_untracked > 0 {
            let _ = write!(
                out,
                " ({} acknowledgements from untracked pods)",
                self.writers_untracked
            );
        }
        out.push('\n');
        for example in &self.double_writer_examples {
            let _ = writeln!(out, "    double writer: {example}");
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(
                out,
                "  verification: {} sessions read back ({} unreadable), {} acknowledged appends, LOST WRITES {}, stale sessions {}, unverified appends {}  ({:.1} s)",
                v.sessions_checked,
                v.sessions_unreadable,
                v.acked_appends,
                v.lost_writes,
                v.stale_sessions,
                v.unverified_appends,
                v.elapsed_s
            );
            for lost in &v.lost_examples {
                let _ = writeln!(out, "    lost: session {} seq {}", lost.session, lost.seq);
            }
        }
        out
    }
}

/// `name count, name count, ...` in name order.
fn listed(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`listed`], or `-` when there is nothing to list.
fn listed_or_dash(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        "-".to_owned()
    } else {
        listed(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_headers_count_by_epoch_and_merge() {
        let mut a = Tally::default();
        assert!(a.takeover("14:pushed"));
        assert!(a.takeover("14:absent"));
        assert!(a.takeover("17:precopied"));
        assert!(a.takeover("14:pushed:late"));
        for bad in [
            "",
            "14",
            "x:pushed",
            "14:warm",
            "14:pushed:1",
            "14:late",
            "14:pushed:late:late",
        ] {
            assert!(!a.takeover(bad), "{bad:?}");
        }
        let mut b = Tally::default();
        assert!(b.takeover("14:fencedLoad"));
        a.merge(&b);
        assert_eq!(
            a.takeovers.get(&14),
            Some(&TakeoverCounts {
                warm: 1,
                cold: 2,
                late: 1
            })
        );
        assert_eq!(
            a.takeovers.get(&17),
            Some(&TakeoverCounts {
                warm: 1,
                cold: 0,
                late: 0
            })
        );
        let json = a
            .summary("p", "ring", Duration::from_secs(1), None, None)
            .to_json_line();
        assert!(
            json.contains(r#""takeovers":{"14":{"warm":1,"cold":2,"late":1}"#),
            "{json}"
        );
    }

    #[test]
    fn percentiles_merge_and_render() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for ms in 1..=100u64 {
            a.latency(Op::Append, Duration::from_millis(ms));
        }
        b.latency(Op::Read, Duration::from_secs(120)); // clamped to 60 s
        b.error("http_503");
        b.error("http_503");
        a.error("timeout");
        a.requests = 100;
        b.requests = 3;
        a.appends_acked = 100;
        b.reads_ok = 1;
        a.pod("p-0");
        b.pod("p-0");
        a.merge(&b);
        let s = a.summary("x", "ring", Duration::from_secs(2), None, None);
        assert_eq!(s.requests, 103);
        assert_eq!(s.ok, 101);
        assert_eq!(s.errors, 3);
        assert_eq!(s.errors_by_kind["http_503"], 2);
        assert_eq!(s.by_pod["p-0"], 2);
        assert_eq!(s.latency_ms.count, 101);
        assert_eq!(s.append_latency_ms.count, 100);
        // HDR with 3 significant digits: within 0.1 %.
        assert!((s.append_latency_ms.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.append_latency_ms.p99 - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.read_latency_ms.max - 60_000.0).abs() < 60.0, "{s:?}");
        assert!((s.throughput_rps - 51.5).abs() < 1e-9);
        let line = s.to_json_line();
        assert!(!line.contains('\n'));
        let back: Summary = serde_json::from_str(&line).unwrap();
        assert_eq!(back, s);
        let table = s.table();
        assert!(table.contains("http_503 2"), "{table}");
        assert!(s.is_consistent());
    }

    #[test]
    fn lost_writes_make_a_summary_inconsistent() {
        let mut s = Tally::default().summary("x", "ring", Duration::ZERO, None, None);
        assert!(s.throughput_rps.abs() < f64::EPSILON);
        assert_eq!(s.latency_ms, Latency::default());
        s.verification = Some(Verification {
            lost_writes: 1,
            ..Verification::default()
        });
        assert!(!s.is_consistent());
        assert!(s.table().contains("LOST WRITES 1"));
    }

    #[test]
    fn double_writers_merge_and_make_a_summary_inconsistent() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for i in 0..4 {
            a.double_writer(format!("s-{i}: a [1,5] and b [4,8]"));
            b.double_writer(format!("s-{}: a [1,5] and b [5,5]", i + 4));
        }
        a.merge(&b);
        let s = a.summary("x", "ring", Duration::from_secs(1), None, None);
        assert_eq!(s.double_writers, 8);
        assert_eq!(s.double_writer_examples.len(), MAX_DOUBLE_WRITER_EXAMPLES);
        assert_eq!(s.double_writer_examples[4], "s-4: a [1,5] and b [5,5]");
        assert!(!s.is_consistent());
        let table = s.table();
        assert!(table.contains("double writers 8"), "{table}");
        assert!(
            table.contains("double writer: s-0: a [1,5] and b [4,8]"),
            "{table}"
        );
        let back: Summary = serde_json::from_str(&s.to_json_line()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn summaries_without_double_writers_still_parse() {
        let s = Tally::default().summary("x", "ring", Duration::ZERO, None, None);
        let mut value = serde_json::to_value(&s).unwrap();
        let object = value.as_object_mut().unwrap();
        for field in [
            "double_writers",
            "double_writer_examples",
            "writers_untracked",
        ] {
            object.remove(field);
        }
        let back: Summary = serde_json::from_value(value).unwrap();
        assert_eq!(back, s);
        assert!(back.is_consistent());
    }
}
