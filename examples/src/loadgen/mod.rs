//! `locus-loadgen`: load on the sample, routed by the ring, with a check
//! for lost writes at the end.
//!
//! Requests go through the SDK's [`Router`](locus::Router) (each to the pod
//! owning its session, following one 421) or, with [`Target::Direct`],
//! straight to one URL (a load balancer: the comparison without Locus
//! routing). Sessions are `<prefix>-0 … <prefix>-(n-1)`; request `i` goes to
//! session `i mod n` and is a read with probability `read_percent` (a
//! deterministic hash of `i`), else an append numbered with the session's
//! next sequence number.
//!
//! For every acknowledged append the generator records its sequence number
//! and the version the server answered. It counts, as it goes:
//!
//! * **version conflicts**: two applied appends of one session answered with
//!   the same version (two writers at once, or state lost and rebuilt);
//! * **double writers**: sessions on which two pods acknowledged applied
//!   appends over overlapping version ranges (ownership must move from one
//!   pod to the next, never interleave; this assumes pod names unique per
//!   pod incarnation and a key's ownership never returning to a pod it left
//!   within the run), each session counted once;
//! * **stale reads**: a read answering a version below one already
//!   acknowledged before the read was sent;
//! * **not owner**: an answer from a pod that is not the key's owner under
//!   the generator's ring (routed mode), and **forwarded** answers.
//!
//! [`LoadGenerator::verify`] then reads every session back and counts
//! **lost writes**: acknowledged sequence numbers missing from the session's
//! applied set (the ledger keeps it exactly, as ranges).
//!
//! Run it in phases ([`LoadGenerator::phase`]) — counters and histograms
//! start afresh per phase, the acknowledged appends accumulate — and verify
//! once at the end; or call [`run`] for one phase and the check.
//!
//! ```no_run
//! use std::time::Duration;
//! use locus_examples::loadgen::{LoadConfig, LoadGenerator, Stop, Target};
//!
//! # async fn example(ring: locus::RingWatch) -> Result<(), locus_examples::Error> {
//! let mut load = LoadGenerator::new(LoadConfig::new(Target::Ring(ring)))?;
//! let steady = load.phase("steady", Stop::Duration(Duration::from_secs(5))).await;
//! // ... scale the service ...
//! let scaled = load.phase("scale-up", Stop::Requests(10_000)).await;
//! let verification = load.verify().await;
//! assert_eq!(verification.lost_writes, 0);
//! # Ok(())
//! # }
//! ```
//!
//! Why about 730 lines: statistics, transport and the writers' bookkeeping are already in
//! their own modules; what stays is the generator's request loop and its lost-write check,
//! which share the per-session tracks and read best together.

mod keys;
mod moves;
pub mod options;
mod stats;
mod transport;
mod writers;

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use http::{Method, StatusCode};
use locus::driver::{HANDOFF_HEADER, TAKEOVER_HEADER};
use locus::{RingWatch, headers};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

pub use self::keys::KeyDistribution;
use self::keys::KeySampler;
use self::stats::{Op, Tally};
use self::transport::{Answer, Transport};
use self::writers::{Recorded, Writers};
use crate::Error;
use crate::ledger::{AppendAnswer, SessionView};
use crate::ranges::SeqSet;
use crate::sample::CACHE_HEADER;

pub use self::stats::{
    CacheCounts, Latency, LostWrite, MovedCounts, Summary, TakeoverCounts, Verification,
};

/// Most sessions.
pub const MAX_SESSIONS: u32 = 1_000_000;
/// Most concurrent requests.
pub const MAX_CONCURRENCY: usize = 4096;
/// Longest phase by time.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Most requests in a phase.
pub const MAX_REQUESTS: u64 = 100_000_000;
/// Longest note per append.
pub const MAX_NOTE_BYTES: usize = 256;
/// Longest session-id prefix.
pub const MAX_PREFIX_BYTES: usize = 64;
/// Read-back attempts per session.
const READ_BACK_ATTEMPTS: u32 = 5;

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Each request to the owner of its session under this ring (the caller
    /// keeps the ring's source open).
    Ring(RingWatch),
    /// Every request to this base URL (`http://host:port`).
    Direct(String),
}

/// When a phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long (requests in flight then still complete).
    Duration(Duration),
    /// After this many requests.
    Requests(u64),
}

/// The load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where requests go.
    pub target: Target,
    /// Number of sessions (1 to [`MAX_SESSIONS`]). Default 100.
    pub sessions: u32,
    /// Requests in flight at once (1 to [`MAX_CONCURRENCY`]). Default 16.
    pub concurrency: usize,
    /// Percentage of reads (0 to 100); the rest are appends. Default 20.
    pub read_percent: u8,
    /// Requests per second over all workers; `None`: as fast as answered.
    pub rate: Option<f64>,
    /// Longest wait for one answer. Default 5 s.
    pub timeout: Duration,
    /// Bytes of note per append (0 to [`MAX_NOTE_BYTES`]). Default 0.
    pub note_bytes: usize,
    /// Session ids are `<prefix>-<i>`; letters, digits and `-`. Default: a
    /// fresh random prefix, so runs do not share sessions.
    pub prefix: String,
    /// When [`run`] stops. Default 10 s.
    pub stop: Stop,
    /// How requests spread over the sessions ([`KeyDistribution`]). Default uniform.
    pub keys: KeyDistribution,
}

impl LoadConfig {
    /// The defaults, against `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            sessions: 100,
            concurrency: 16,
            read_percent: 20,
            rate: None,
            timeout: Duration::from_secs(5),
            note_bytes: 0,
            prefix: random_prefix(),
            stop: Stop::Duration(Duration::from_secs(10)),
            keys: KeyDistribution::Uniform,
        }
    }

    /// Checks every bound.
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=MAX_SESSIONS).contains(&self.sessions) {
            return Err(Error::config(
                "sessions",
                format!("must be 1 to {MAX_SESSIONS}"),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::config(
                "concurrency",
                format!("must be 1 to {MAX_CONCURRENCY}"),
            ));
        }
        if self.read_percent > 100 {
            return Err(Error::config("read percent", "must be 0 to 100"));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0 && rate <= 1e7)
        {
            return Err(Error::config("rate", "must be above 0 and at most 1e7"));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(600) {
            return Err(Error::config("timeout", "must be above 0 and at most 10m"));
        }
        if self.note_bytes > MAX_NOTE_BYTES {
            return Err(Error::config(
                "note bytes",
                format!("at most {MAX_NOTE_BYTES}"),
            ));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= MAX_PREFIX_BYTES
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !prefix_ok {
            return Err(Error::config(
                "prefix",
                format!("1 to {MAX_PREFIX_BYTES} letters, digits or '-'"),
            ));
        }
        if let Target::Direct(url) = &self.target
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::config(
                "target",
                format!("{url:?} is not an http:// URL"),
            ));
        }
        self.keys
            .validate()
            .map_err(|e| Error::config("key distribution", e))?;
        validate_stop(self.stop)
    }
}

fn validate_stop(stop: Stop) -> Result<(), Error> {
    match stop {
        Stop::Duration(d) if d.is_zero() || d > MAX_DURATION => Err(Error::config(
            "duration",
            format!("must be above 0 and at most {MAX_DURATION:?}"),
        )),
        Stop::Requests(n) if n == 0 || n > MAX_REQUESTS => Err(Error::config(
            "requests",
            format!("must be 1 to {MAX_REQUESTS}"),
        )),
        _ => Ok(()),
    }
}

/// A fresh prefix: `lg` and 8 hex digits from the time and process id.
pub fn random_prefix() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!("{}:{now}", std::process::id());
    format!("lg{:08x}", locus::ring::hash_key(seed.as_bytes()) >> 32)
}

/// What the generator knows of one session.
#[derive(Debug, Default)]
struct SessionTrack {
    /// Last sequence number handed out (numbers start at 1).
    last_seq: u64,
    /// Sequence numbers of acknowledged appends.
    acked: SeqSet,
    /// Versions answered to acknowledged, applied appends.
    versions: SeqSet,
    /// Highest of them.
    max_version: u64,
    /// Where the session was answered (to see it move).
    moves: moves::Moves,
    /// The pods that acknowledged applied appends, with their versions.
    writers: Writers,
}

struct Shared {
    config: LoadConfig,
    transport: Transport,
    ring: Option<RingWatch>,
    tracks: Vec<Mutex<SessionTrack>>,
    keys: KeySampler,
    /// Requests sent over all phases (picks session and operation).
    next: AtomicU64,
    /// The note of every append (`note_bytes` of `n`), made once.
    note: Option<String>,
}

impl Shared {
    fn track(&self, session: u32) -> std::sync::MutexGuard<'_, SessionTrack> {
        self.tracks[session as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn session_id(&self, session: u32) -> String {
        format!("{}-{session}", self.config.prefix)
    }
}

/// The load generator; see the [module docs](self).
pub struct LoadGenerator {
    shared: Arc<Shared>,
    total: Tally,
    total_elapsed: Duration,
}

impl std::fmt::Debug for LoadGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadGenerator")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Longest the pacer's thread sleeps before looking at its stop flag.
const PACER_MAX_SLEEP: Duration = Duration::from_millis(10);

/// Releases requests at a fixed rate, with sub-millisecond precision.
///
/// Request `n` of the phase is due at `start + n / rate`. A dedicated thread
/// (not the runtime's timer, whose 1 ms granularity releases requests in
/// bursts) sleeps until the next due time and then adds a permit per due
/// request to a semaphore; workers take the permits in order and the `k`-th
/// taken stands for request `k`. The schedule never moves: a worker that
/// takes its permit late (all workers were busy) counts the request's latency
/// from its intended send time, so waiting for a worker is measured rather
/// than hidden (no coordinated omission), and the lateness itself is reported
/// as the send lag.
struct Pacer {
    start: Instant,
    interval_ns: f64,
    permits: Arc<Semaphore>,
    taken: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl Pacer {
    /// Starts releasing `rate` requests per second from now.
    fn start(rate: f64) -> Self {
        let start = Instant::now();
        let interval_ns = 1e9 / rate;
        let permits = Arc::new(Semaphore::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_permits, thread_stop) = (Arc::clone(&permits), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || release(start, interval_ns, &thread_permits, &thread_stop));
        if let Err(error) = spawned {
            // No pacer thread: no request is released; the phase sends nothing.
            tracing::error!(%error, "cannot start the pacer thread");
        }
        Self {
            start,
            interval_ns,
            permits,
            taken: AtomicU64::new(0),
            stop,
        }
    }

    /// Due time of request `n`.
    fn due(start: Instant, interval_ns: f64, n: u64) -> Instant {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "request counts and nanoseconds far below 2^52"
        )]
        let offset = (n as f64 * interval_ns) as u64;
        start + Duration::from_nanos(offset)
    }

    /// Waits for the next request's turn; its intended send time, or `None`
    /// once the pacer is stopped.
    async fn next(&self) -> Option<Instant> {
        self.permits.acquire().await.ok()?.forget();
        let n = self.taken.fetch_add(1, Ordering::Relaxed);
        Some(Self::due(self.start, self.interval_ns, n))
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.permits.close();
    }
}

/// The pacer's thread: adds one permit per request whose due time has
/// come, then sleeps until the next one (at most [`PACER_MAX_SLEEP`]).
fn release(start: Instant, interval_ns: f64, permits: &Semaphore, stop: &AtomicBool) {
    let mut released: u64 = 0;
    while !stop.load(Ordering::Acquire) && !permits.is_closed() {
        let now = Instant::now();
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "nanoseconds since the start far below 2^52"
        )]
        let due = (now.duration_since(start).as_nanos() as f64 / interval_ns) as u64 + 1;
        if due > released {
            let batch = usize::try_from(due - released).unwrap_or(usize::MAX);
            permits.add_permits(batch.min(Semaphore::MAX_PERMITS - permits.available_permits()));
            released = due;
        }
        let next = Pacer::due(start, interval_ns, released);
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(PACER_MAX_SLEEP),
        );
    }
}

/// One phase's shared controls.
struct PhaseControl {
    stop: watch::Receiver<bool>,
    budget: Option<u64>,
    sent: AtomicU64,
    pacer: Option<Pacer>,
}

impl LoadGenerator {
    /// A generator for `config` (checked against every bound).
    pub fn new(config: LoadConfig) -> Result<Self, Error> {
        config.validate()?;
        let (transport, ring) = match &config.target {
            Target::Ring(ring) => (
                Transport::routed(ring.clone(), config.timeout, config.concurrency),
                Some(ring.clone()),
            ),
            Target::Direct(url) => (Transport::direct(url, config.timeout)?, None),
        };
        let tracks = (0..config.sessions)
            .map(|_| Mutex::new(SessionTrack::default()))
            .collect();
        let note = (config.note_bytes > 0).then(|| "n".repeat(config.note_bytes));
        Ok(Self {
            shared: Arc::new(Shared {
                keys: KeySampler::new(config.keys, config.sessions),
                config,
                transport,
                ring,
                tracks,
                next: AtomicU64::new(0),
                note,
            }),
            total: Tally::default(),
            total_elapsed: Duration::ZERO,
        })
    }

    /// The id of session `i`.
    pub fn session_id(&self, i: u32) -> String {
        self.shared.session_id(i)
    }

    /// Requests sent over all phases so far.
    pub fn requests_sent(&self) -> u64 {
        self.total.requests
    }

    /// Runs one phase until `stop`.
    pub async fn phase(&mut self, name: &str, stop: Stop) -> Summary {
        self.phase_until(name, stop, std::future::pending()).await
    }

    /// Runs one phase until `stop`, or until `interrupt` completes (a
    /// signal, a driver's "next phase"). Requests in flight when the phase
    /// ends complete and count in it. An invalid `stop` runs nothing.
    pub async fn phase_until(
        &mut self,
        name: &str,
        stop: Stop,
        interrupt: impl Future<Output = ()>,
    ) -> Summary {
        let target = self.shared.transport.kind();
        if let Err(error) = validate_stop(stop) {
            tracing::warn!(%error, "phase not run");
            return Tally::default().summary(name, target, Duration::ZERO, None, None);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let control = Arc::new(PhaseControl {
            stop: stop_rx,
            budget: match stop {
                Stop::Requests(n) => Some(n),
                Stop::Duration(_) => None,
            },
            sent: AtomicU64::new(0),
            pacer: self.shared.config.rate.map(Pacer::start),
        });
        let started = Instant::now();
        let cpu_before = stats::process_cpu();
        let workers: Vec<_> = (0..self.shared.config.concurrency)
            .map(|_| tokio::spawn(worker(Arc::clone(&self.shared), Arc::clone(&control))))
            .collect();
        let all_done = futures::future::join_all(workers);
        tokio::pin!(all_done);
        let deadline = async {
            match stop {
                Stop::Duration(d) => tokio::time::sleep(d).await,
                Stop::Requests(_) => std::future::pending().await,
            }
        };
        let results = tokio::select! {
            results = &mut all_done => results,
            () = deadline => {
                stop_tx.send_replace(true);
                all_done.await
            }
            () = interrupt => {
                stop_tx.send_replace(true);
                all_done.await
            }
        };
        let elapsed = started.elapsed();
        let cpu = stats::process_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        let mut tally = Tally::default();
        for result in results {
            match result {
                Ok(worker) => tally.merge(&worker),
                Err(error) => tracing::error!(%error, "load worker failed"),
            }
        }
        // Every request of the phase has its answer: a move still without an
        // announcing answer was not announced.
        for session in 0..self.shared.config.sessions {
            tally.moved.unannounced += self.shared.track(session).moves.close();
        }
        self.total.merge(&tally);
        self.total_elapsed += elapsed;
        tally.summary(name, target, elapsed, cpu, None)
    }

    /// Everything counted so far, over all phases, under the name `phase`,
    /// with `verification` if given.
    pub fn total(&self, phase: &str, verification: Option<Verification>) -> Summary {
        self.total.summary(
            phase,
            self.shared.transport.kind(),
            self.total_elapsed,
            None,
            verification,
        )
    }

    /// Reads back every session with an acknowledged append and counts the
    /// acknowledged appends missing from it.
    pub async fn verify(&self) -> Verification {
        let started = Instant::now();
        let sessions: Vec<(u32, SeqSet, u64)> = (0..self.shared.config.sessions)
            .filter_map(|i| {
                let track = self.shared.track(i);
                (!track.acked.is_empty()).then(|| (i, track.acked.clone(), track.max_version))
            })
            .collect();
        let shared = &self.shared;
        let mut checks = futures::stream::iter(sessions)
            .map(|(i, acked, max_version)| async move {
                let id = shared.session_id(i);
                let view = read_back(shared, &id).await;
                (id, acked, max_version, view)
            })
            .buffer_unordered(self.shared.config.concurrency);
        let mut report = Verification::default();
        let mut takeovers = Tally::default();
        while let Some((id, acked, max_version, view)) = checks.next().await {
            match view {
                Ok((view, takeover)) => {
                    if let Some(header) = takeover {
                        takeovers.takeover(&header);
                    }
                    report.sessions_checked += 1;
                    report.acked_appends += acked.len();
                    let keep = 10usize.saturating_sub(report.lost_examples.len());
                    let (missing, listed) = acked.missing_from(&view.seqs, keep);
                    report.lost_writes += missing;
                    report
                        .lost_examples
                        .extend(listed.into_iter().map(|seq| LostWrite {
                            session: id.clone(),
                            seq,
                        }));
                    if view.version < max_version {
                        report.stale_sessions += 1;
                    }
                }
                Err(kind) => {
                    report.sessions_unreadable += 1;
                    report.unverified_appends += acked.len();
                    *report.read_errors.entry(kind).or_default() += 1;
                }
            }
        }
        report.takeovers = takeovers.takeovers;
        report.elapsed_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        if report.lost_writes > 0 {
            tracing::error!(
                lost = report.lost_writes,
                examples = ?report.lost_examples,
                "acknowledged appends are missing"
            );
        }
        report
    }
}

/// Runs `config.stop` of load, then reads every session back.
pub async fn run(config: LoadConfig) -> Result<Summary, Error> {
    let stop = config.stop;
    let mut load = LoadGenerator::new(config)?;
    let mut summary = load.phase("run", stop).await;
    summary.verification = Some(load.verify().await);
    Ok(summary)
}

/// Reads session `id`, retrying a few times.
/// With the answer's `x-locus-takeover`, if any.
async fn read_back(shared: &Shared, id: &str) -> Result<(SessionView, Option<String>), String> {
    let path = format!("/sessions/{id}");
    let mut last = String::new();
    for attempt in 0..READ_BACK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(3))).await;
        }
        let sent = Instant::now();
        match exchange::<SessionView>(shared, Method::GET, &path, id, String::new(), sent).await {
            Ok((answer, _, view)) if view.session == id => {
                let takeover = answer
                    .headers
                    .get(TAKEOVER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Ok((view, takeover));
            }
            Ok(_) => last = "wrong_answer".into(),
            Err(kind) => last = kind.into_owned(),
        }
    }
    Err(last)
}

/// Sends one request and parses its `200` answer as `T`: the answer, how
/// long it took to come since `since` (the intended send time at a fixed
/// rate, else when it was sent), and its body; otherwise the error kind
/// (the transport's, `http_<status>` or `bad_answer`).
async fn exchange<T: DeserializeOwned>(
    shared: &Shared,
    method: Method,
    path: &str,
    session: &str,
    body: String,
    since: Instant,
) -> Result<(Answer, Duration, T), Cow<'static, str>> {
    let answer = shared.transport.send(method, path, session, body).await?;
    let took = since.elapsed();
    if answer.status != StatusCode::OK {
        return Err(format!("http_{}", answer.status.as_u16()).into());
    }
    let parsed = serde_json::from_slice(&answer.body).map_err(|_| "bad_answer")?;
    Ok((answer, took, parsed))
}

/// A well-mixed 64-bit function of `i` (splitmix64's finaliser), so the
/// read/append mix does not follow the session rotation.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const KINDS: [&str; 3] = ["deposit", "withdrawal", "fee"];

async fn worker(shared: Arc<Shared>, control: Arc<PhaseControl>) -> Tally {
    let mut tally = Tally::default();
    let mut stop = control.stop.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        if let Some(budget) = control.budget
            && control.sent.fetch_add(1, Ordering::Relaxed) >= budget
        {
            break;
        }
        let since = if let Some(pacer) = &control.pacer {
            let due = tokio::select! {
                due = pacer.next() => due,
                _ = stop.changed() => None,
            };
            let Some(due) = due else { break };
            tally.send_lag(Instant::now().saturating_duration_since(due));
            due
        } else {
            Instant::now()
        };
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let session = shared.keys.pick(i);
        let read = mix(i) % 100 < u64::from(shared.config.read_percent);
        tally.requests += 1;
        if read {
            one_read(&shared, session, since, &mut tally).await;
        } else {
            one_append(&shared, session, i, since, &mut tally).await;
        }
    }
    tally
}

/// Counts what every answered request says about who answered and how.
fn observe(
    shared: &Shared,
    (session, ordinal): (u32, u64),
    id: &str,
    answer: &Answer,
    tally: &mut Tally,
) {
    let cache = answer
        .headers
        .get(CACHE_HEADER)
        .map(http::HeaderValue::as_bytes);
    match cache {
        Some(b"warm") => tally.cache.warm += 1,
        Some(b"cold") => tally.cache.cold += 1,
        Some(b"stateless") => tally.cache.stateless += 1,
        _ => tally.cache.unknown += 1,
    }
    if let Some(path) = answer
        .headers
        .get(HANDOFF_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        tally.handoff(path);
    }
    let announced = answer
        .headers
        .get(TAKEOVER_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|header| tally.takeover(header));
    let pod = answer
        .headers
        .get(headers::POD)
        .and_then(|v| v.to_str().ok());
    if let Some(pod) = pod {
        tally.pod(pod);
        // The first answer from a new pod for a session answered elsewhere
        // before: the session moved. Was it in memory there already, and
        // did the pod say it took it over?
        let moved = shared
            .track(session)
            .moves
            .answered(ordinal, pod, announced);
        if moved {
            match cache {
                Some(b"warm") => tally.moved.warm += 1,
                _ => tally.moved.cold += 1,
            }
        }
    }
    if answer.headers.contains_key(headers::FORWARDED_BY) {
        tally.forwarded += 1;
    }
    if let Some(ring) = shared.ring.as_ref().and_then(RingWatch::latest) {
        let owner = &ring.owner(id.as_bytes()).pod.name;
        if pod != Some(owner.as_str()) {
            tally.not_owner += 1;
        }
    }
}

/// The pod that acknowledged `answer` as the session's owner: its
/// `x-locus-pod` (a forwarded answer keeps the owner's), unless the answer is
/// stateless, where no pod owns the session.
fn owning_pod(answer: &Answer) -> Option<&str> {
    let stateless = answer
        .headers
        .get(CACHE_HEADER)
        .is_some_and(|v| v.as_bytes() == b"stateless");
    if stateless {
        return None;
    }
    answer
        .headers
        .get(headers::POD)
        .and_then(|v| v.to_str().ok())
}

/// The body of an append (the sample's `Event`), serialized without
/// building a JSON tree.
#[derive(Serialize)]
struct AppendBody<'a> {
    seq: u64,
    kind: &'static str,
    amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

/// What a read needs of the session view: its id and version (the rest of
/// the view, events and applied ranges, is skipped, not built).
#[derive(Deserialize)]
struct ReadHead {
    session: String,
    version: u64,
}

async fn one_append(shared: &Shared, session: u32, i: u64, since: Instant, tally: &mut Tally) {
    let id = shared.session_id(session);
    let (seq, ordinal) = {
        let mut track = shared.track(session);
        track.last_seq += 1;
        (track.last_seq, track.moves.send())
    };
    let kind = KINDS[usize::try_from(i % 3).unwrap_or(0)];
    let amount = i64::try_from(i % 7).unwrap_or(0) - 3;
    let body = AppendBody {
        seq,
        kind,
        amount,
        note: shared.note.as_deref(),
    };
    let Ok(body) = serde_json::to_string(&body) else {
        return tally.error("request");
    };
    let path = format!("/sessions/{id}/events");
    let (answer, took, appended) =
        match exchange::<AppendAnswer>(shared, Method::POST, &path, &id, body, since).await {
            Ok(done) => done,
            Err(kind) => return tally.error(&kind),
        };
    if appended.session != id || appended.seq != Some(seq) {
        return tally.error("wrong_answer");
    }
    observe(shared, (session, ordinal), &id, &answer, tally);
    tally.latency(Op::Append, took);
    tally.appends_acked += 1;
    let mut track = shared.track(session);
    track.acked.insert(seq);
    if appended.applied {
        if !track.versions.insert(appended.version) {
            tally.version_conflicts += 1;
            tracing::error!(session = %id, seq, version = appended.version, "two appends answered with one version");
        }
        track.max_version = track.max_version.max(appended.version);
        if let Some(pod) = owning_pod(&answer) {
            match track.writers.record(pod, appended.epoch, appended.version) {
                Recorded::Tracked => {}
                Recorded::Untracked => tally.writers_untracked += 1,
                Recorded::DoubleWriter(overlap) => {
                    tracing::error!(session = %id, %overlap, "two pods acknowledged appends over overlapping versions");
                    tally.double_writer(format!("{id}: {overlap}"));
                }
            }
        }
    } else {
        tally.duplicates += 1;
    }
}

async fn one_read(shared: &Shared, session: u32, since: Instant, tally: &mut Tally) {
    let id = shared.session_id(session);
    let (floor, ordinal) = {
        let mut track = shared.track(session);
        (track.max_version, track.moves.send())
    };
    let path = format!("/sessions/{id}");
    let (answer, took, view) =
        match exchange::<ReadHead>(shared, Method::GET, &path, &id, String::new(), since).await {
            Ok(done) => done,
            Err(kind) => return tally.error(&kind),
        };
    if view.session != id {
        return tally.error("wrong_answer");
    }
    observe(shared, (session, ordinal), &id, &answer, tally);
    tally.latency(Op::Read, took);
    tally.reads_ok += 1;
    if view.version < floor {
        tally.stale_reads += 1;
        tracing::error!(session = %id, version = view.version, acknowledged = floor, "read older than an acknowledged append");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_spreads_reads_evenly() {
        let reads = (0..10_000u64).filter(|&i| mix(i) % 100 < 20).count();
        assert!((1800..2200).contains(&reads), "{reads}");
    }

    #[test]
    fn bounds_are_checked() {
        let ok = LoadConfig::new(Target::Direct("http://127.0.0.1:1".into()));
        assert!(ok.validate().is_ok());
        assert!(ok.prefix.starts_with("lg") && ok.prefix.len() == 10);
        for bad in [
            LoadConfig {
                sessions: 0,
                ..ok.clone()
            },
            LoadConfig {
                concurrency: MAX_CONCURRENCY + 1,
                ..ok.clone()
            },
            LoadConfig {
                read_percent: 101,
                ..ok.clone()
            },
            LoadConfig {
                rate: Some(0.0),
                ..ok.clone()
            },
            LoadConfig {
                prefix: "a/b".into(),
                ..ok.clone()
            },
            LoadConfig {
                stop: Stop::Requests(0),
                ..ok.clone()
            },
            LoadConfig {
                stop: Stop::Duration(MAX_DURATION * 2),
                ..ok.clone()
            },
            LoadConfig {
                target: Target::Direct("localhost:80".into()),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_pacer_releases_each_request_at_its_time_not_before() {
        // 4000 per second: due times 250 µs apart, far below the runtime
        // timer's 1 ms.
        let pacer = Pacer::start(4000.0);
        for n in 0..200u64 {
            let due = pacer.next().await.unwrap();
            let now = Instant::now();
            assert_eq!(due, pacer.start + Duration::from_micros(250 * n));
            assert!(now >= due, "request {n} released {:?} early", due - now);
        }
        // The schedule holds: 200 requests take 50 ms, not 200 timer ticks.
        let elapsed = pacer.start.elapsed();
        assert!(elapsed < Duration::from_millis(150), "{elapsed:?}");
        drop(pacer);
    }

    #[tokio::test]
    async fn a_stopped_pacer_releases_nothing() {
        let pacer = Pacer::start(1.0);
        assert!(pacer.next().await.is_some(), "request 0 is due at once");
        pacer.permits.close();
        assert!(pacer.next().await.is_none());
    }

    #[test]
    fn the_append_body_is_the_samples_event() {
        let body = AppendBody {
            seq: 7,
            kind: "fee",
            amount: -3,
            note: None,
        };
        let json = serde_json::to_string(&body).unwrap();
        let event: crate::ledger::Event = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (event.seq, event.kind.as_str(), event.amount),
            (Some(7), "fee", -3)
        );
        assert_eq!(event.note, None);
        let noted = AppendBody {
            note: Some("nn"),
            ..body
        };
        let event: crate::ledger::Event =
            serde_json::from_str(&serde_json::to_string(&noted).unwrap()).unwrap();
        assert_eq!(event.note.as_deref(), Some("nn"));
    }
}
