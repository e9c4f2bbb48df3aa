//! [`Member::shutdown`]: what a pod does on SIGTERM — snapshot for a
//! restart in the same pod, wait for the operator's transition, or hand
//! its sessions over — and the report of what it did. Every exit records
//! the `shutdown` phase metric and logs the report.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::member::Member;
use crate::driver::drain::{self, DrainReport};
use crate::driver::plan;
use crate::intent::{IntentError, ShutdownIntent};
use crate::ring::Ring;
use crate::snapshot::{self, SnapshotError, SnapshotHeader, SnapshotWritten};
use crate::store::Flush;

/// How often a retiring pod looks whether its drain was reported.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Which way [`Member::shutdown`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPath {
    /// The operator retired this pod (successor, scale-down): its sessions
    /// were drained by the transition.
    Coordinated,
    /// A snapshot was written for a restart in the same pod (or because
    /// nothing could tell whether the pod is going away).
    Snapshot,
    /// Nobody coordinated: the sessions were pushed to the owners the
    /// planner gives with this pod's slot removed.
    Handoff,
    /// This pod served no slot; nothing to hand over.
    Idle,
}

/// What [`Member::shutdown`] did.
#[derive(Debug)]
pub struct ShutdownReport {
    /// The path taken.
    pub path: ShutdownPath,
    /// Sessions handed over (paths `Handoff`).
    pub handed_over: DrainReport,
    /// Sessions written back to the persistence; `None` when nothing was
    /// written back (a restart in place whose snapshot holds the unsaved
    /// sessions) or the write-back did not finish before the deadline.
    pub flushed: Option<Flush>,
    /// The snapshot written (path `Snapshot`).
    pub snapshot: Option<Result<SnapshotWritten, SnapshotError>>,
    /// Why the process stops, as given to [`Member::shutdown_as`] or found
    /// by [`Member::shutdown`]; `None` when nobody needed to know (no
    /// snapshot directory, or no ring yet). An error means it could not be
    /// found: the snapshot was written.
    pub intent: Option<Result<ShutdownIntent, IntentError>>,
    /// Time taken.
    pub took: Duration,
}

/// What a shutdown does about the snapshot directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotStep {
    /// No snapshot directory.
    NotConfigured,
    /// Write the snapshot: the process restarts in the same pod, or nothing
    /// could tell (today's behaviour: a restart keeps its sessions).
    Write,
    /// The pod goes away with its snapshot volume: hand the sessions over
    /// as a pod without snapshot does, and leave no snapshot behind.
    Discard,
}

/// The snapshot step for a shutdown (pure: the whole decision).
fn snapshot_step(
    configured: bool,
    intent: Option<&Result<ShutdownIntent, IntentError>>,
) -> SnapshotStep {
    if !configured {
        return SnapshotStep::NotConfigured;
    }
    match intent {
        Some(Ok(ShutdownIntent::Retire)) => SnapshotStep::Discard,
        Some(Ok(ShutdownIntent::Restart) | Err(_)) | None => SnapshotStep::Write,
    }
}

/// True if a shutdown left the sessions of a restored snapshot safe another
/// way — a complete snapshot of every session, or every changed session
/// written back after the pod stopped serving — so that the file kept for
/// their background write-back may go (pure: the whole decision).
fn supersedes_restored(report: &ShutdownReport) -> bool {
    let snapshot_complete = matches!(&report.snapshot, Some(Ok(w)) if w.skipped == 0);
    let flushed_all = report.flushed.is_some_and(|f| f.failed == 0);
    snapshot_complete || flushed_all
}

impl Member {
    /// Shuts the member down within `within` (the pod's termination grace
    /// period, minus a margin). Call it from the service's SIGTERM handler,
    /// keep serving requests while it runs, then exit.
    ///
    /// * With a snapshot directory, it first finds out why the process stops
    ///   ([`ShutdownIntent`]; bounded by the
    ///   [intent timeout](super::MemberBuilder::intent_timeout)). A restart in
    ///   the same pod takes the snapshot path (fast restart): new requests get
    ///   503, the requests in flight finish, every session is written to the
    ///   snapshot with its unsaved flag, and nothing is written back — the
    ///   next process writes the unsaved sessions back in the background
    ///   (`docs/adr/0004-in-place-restart-durability.md`); only if the
    ///   snapshot cannot be written (or left sessions out) are the changed
    ///   sessions written back with the time left. No answer (logged at
    ///   `warn`) takes the snapshot path too, but writes the changed sessions
    ///   back first, while still serving, then what changed meanwhile after
    ///   it stops, then the snapshot. A pod that is going away (its Pod
    ///   has a `deletionTimestamp`) removes any snapshot left in the
    ///   directory and goes on as below: its snapshot volume dies with it.
    /// * Else, if the operator retires this pod (a Warm ring names a
    ///   successor for its slot, or its slot is leaving) within the
    ///   coordination wait: the pod keeps serving; the transition drains its
    ///   sessions; this returns once it owns nothing and drained.
    /// * Else (nobody coordinates): new requests get 503, the requests in
    ///   flight finish, changed sessions are written back, and every session
    ///   is handed off to the pod that owns its shard when this pod's slot is
    ///   removed — computed with the operator's planner
    ///   (`owners_without`), the same result the operator's
    ///   `Reroute` will publish — as final records those pods keep aside
    ///   until a Switch ring makes them the owners.
    pub async fn shutdown(&self, within: Duration) -> ShutdownReport {
        let started = Instant::now();
        let deadline = started + within;
        // Only the snapshot depends on why the process stops.
        let intent =
            if self.inner.snapshot_dir.is_some() && self.inner.state.ring.latest().is_some() {
                Some(self.find_intent(deadline).await)
            } else {
                None
            };
        self.shut_down(started, deadline, intent).await
    }

    /// [`shutdown`](Self::shutdown) with the reason given by the caller
    /// instead of looked up: [`ShutdownIntent::Restart`] writes the snapshot
    /// (if a directory is set) and nothing back — say it only when the same
    /// pod starts again —, [`ShutdownIntent::Retire`] hands the sessions over.
    pub async fn shutdown_as(&self, intent: ShutdownIntent, within: Duration) -> ShutdownReport {
        let started = Instant::now();
        self.shut_down(started, started + within, Some(Ok(intent)))
            .await
    }

    /// Asks the intent source, bounded by the intent timeout and a quarter
    /// of the time left.
    async fn find_intent(&self, deadline: Instant) -> Result<ShutdownIntent, IntentError> {
        let Some(source) = &self.inner.intent else {
            return Err(IntentError::Unavailable {
                reason:
                    "no MemberBuilder::shutdown_intent, and the progress reporter does not read \
                         the pod (KubeProgressReporter does)"
                        .to_owned(),
            });
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let bound = self.inner.intent_timeout.min(left / 4);
        match tokio::time::timeout(bound, source.shutdown_intent()).await {
            Ok(found) => found,
            Err(_) => Err(IntentError::TimedOut(bound)),
        }
    }

    /// Runs the shutdown's steps, then — whichever way they went — records
    /// the `shutdown` phase and logs the report.
    async fn shut_down(
        &self,
        started: Instant,
        deadline: Instant,
        intent: Option<Result<ShutdownIntent, IntentError>>,
    ) -> ShutdownReport {
        let mut report = ShutdownReport {
            path: ShutdownPath::Idle,
            handed_over: DrainReport::default(),
            flushed: None,
            snapshot: None,
            intent,
            took: Duration::ZERO,
        };
        self.shutdown_steps(deadline, &mut report).await;
        if let Some(dir) = &self.inner.snapshot_dir
            && supersedes_restored(&report)
        {
            match snapshot::release_restored(dir).await {
                Ok(true) => tracing::info!(
                    pod = %self.inner.state.pod,
                    "the restored snapshot's sessions are safe again: its file is removed"
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot remove the restored snapshot"),
            }
        }
        let state = &self.inner.state;
        report.took = started.elapsed();
        state.metrics.phase("shutdown", report.took);
        tracing::info!(pod = %state.pod, ?report, "shut down");
        report
    }

    /// The shutdown itself; see [`shutdown`](Self::shutdown).
    async fn shutdown_steps(&self, deadline: Instant, report: &mut ShutdownReport) {
        let state = Arc::clone(&self.inner.state);
        let step = snapshot_step(self.inner.snapshot_dir.is_some(), report.intent.as_ref());
        let Some(ring) = state.ring.latest() else {
            self.stop(deadline).await;
            report.flushed = self.flush(deadline).await;
            return;
        };
        match (step, &self.inner.snapshot_dir) {
            (SnapshotStep::Write, Some(dir)) => {
                self.write_snapshot(dir, &ring, deadline, report).await;
                return;
            }
            (SnapshotStep::Discard, Some(dir)) => self.discard_snapshot(dir).await,
            _ => {}
        }
        if self.await_coordination(deadline).await {
            report.path = ShutdownPath::Coordinated;
            self.stop(deadline).await;
            report.flushed = self.flush(deadline).await;
            return;
        }
        self.stop(deadline).await;
        let ring = state.ring.latest().unwrap_or(ring);
        let slot = plan::serving_slot(&ring, &state.pod);
        // Written back first: whoever ends up owning these sessions (the
        // planner's pick, or a replacement pod of this slot loading cold),
        // the persistence has them.
        report.flushed = self.flush(deadline).await;
        let Some(slot) = slot else {
            return;
        };
        report.path = ShutdownPath::Handoff;
        match plan::owners_without(&ring, slot) {
            Ok(plan) => {
                let destinations = drain::destinations(&*state.store, ring.shards(), |shard| {
                    plan::owner_in(&ring, &plan.assignment, shard)
                })
                .await;
                report.handed_over =
                    drain::hand_over(&state, destinations, ring.version(), deadline, "shutdown")
                        .await;
                if !report.handed_over.complete() {
                    state.metrics.rolled_forward("shutdown");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "no other slot to hand the sessions to");
            }
        }
    }

    /// The snapshot path: stops serving, writes every session to the
    /// snapshot in `dir`. A positive restart in place writes nothing back
    /// (unless the snapshot fails); an unknown intent writes back first.
    async fn write_snapshot(
        &self,
        dir: &Path,
        ring: &Ring,
        deadline: Instant,
        report: &mut ShutdownReport,
    ) {
        let state = &self.inner.state;
        let in_place = matches!(report.intent, Some(Ok(ShutdownIntent::Restart)));
        if let Some(Err(error)) = &report.intent {
            tracing::warn!(
                pod = %state.pod,
                %error,
                "shutdown: cannot tell whether this pod is being deleted; writing the \
                 sessions back, then the snapshot as for a restart in place"
            );
        }
        if in_place {
            self.stop(deadline).await;
            report.path = ShutdownPath::Snapshot;
            let written = self.snapshot_to(dir, ring).await;
            let complete = matches!(&written, Some(Ok(w)) if w.skipped == 0);
            report.snapshot = written;
            if !complete {
                tracing::warn!(
                    pod = %state.pod,
                    snapshot = ?report.snapshot,
                    "shutdown: the snapshot does not hold every session; writing them back"
                );
                report.flushed = self.flush(deadline).await;
            }
            return;
        }
        // Intent unknown: written back while the pod still serves, so the
        // sessions are durable even if the pod is going away or the next
        // process cannot use the snapshot, without holding the pod
        // unavailable for the whole write-back. Half the time at most: the
        // snapshot comes first.
        let left = deadline.saturating_duration_since(Instant::now());
        let early = self.flush(Instant::now() + left / 2).await;
        self.stop(deadline).await;
        report.path = ShutdownPath::Snapshot;
        // What changed during that write-back, bounded the same way; then the
        // snapshot, whose records carry their dirty flags as they are now (so
        // the restored process writes back only what is still unwritten).
        let left = deadline.saturating_duration_since(Instant::now());
        let late = self.flush(Instant::now() + left / 2).await;
        report.snapshot = self.snapshot_to(dir, ring).await;
        report.flushed = late.map(|late| Flush {
            written: early.map_or(0, |e| e.written) + late.written,
            failed: late.failed,
            clean: late.clean,
        });
    }

    /// Writes the snapshot of this pod's slot under `ring` to `dir`; `None`
    /// if the pod serves no slot.
    async fn snapshot_to(
        &self,
        dir: &Path,
        ring: &Ring,
    ) -> Option<Result<SnapshotWritten, SnapshotError>> {
        let state = &self.inner.state;
        let slot = plan::serving_slot(ring, &state.pod)?;
        let header = SnapshotHeader::new(ring, slot, &state.pod);
        Some(snapshot::write(state.store.as_ref(), dir, &header).await)
    }

    /// The pod goes away with its snapshot volume: no snapshot, and none
    /// left behind.
    /// (The removal is file I/O: it runs on the blocking pool.)
    async fn discard_snapshot(&self, dir: &Path) {
        let pod = &self.inner.state.pod;
        tracing::info!(
            %pod,
            "shutdown: the pod is going away with its snapshot volume; handing its \
             sessions over instead of writing a snapshot"
        );
        let dir = dir.to_path_buf();
        match tokio::task::spawn_blocking(move || snapshot::discard(&dir)).await {
            Ok(Ok(true)) => tracing::info!(%pod, "stale snapshot removed"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%pod, %error, "cannot remove a stale snapshot"),
            Err(error) => tracing::warn!(%pod, %error, "removing a stale snapshot failed"),
        }
    }

    /// Closes the gate, lets the requests in flight finish (bounded), stops
    /// the driver.
    async fn stop(&self, deadline: Instant) {
        self.inner.gate.close();
        let left = deadline.saturating_duration_since(Instant::now());
        if !self.inner.gate.wait_idle(left / 4).await {
            tracing::warn!(pod = %self.inner.state.pod, "requests still in flight at shutdown");
        }
        let running = self.inner.lock_running().take();
        if let Some(running) = running {
            // Let the last reports go out.
            let wanted = running.tracker.wanted();
            let _ = running
                .tracker
                .wait_reported(wanted, Duration::from_millis(500).min(left / 8))
                .await;
            drop(running);
        }
    }

    /// Writes every changed session back, bounded by `deadline`; `None` if
    /// it did not finish.
    async fn flush(&self, deadline: Instant) -> Option<Flush> {
        let left = deadline.saturating_duration_since(Instant::now());
        let flush = tokio::time::timeout(left, self.inner.state.store.flush())
            .await
            .ok();
        if flush.is_none() {
            tracing::warn!(pod = %self.inner.state.pod, "write-back did not finish before the deadline");
        }
        flush
    }

    /// Waits (at most the coordination wait) for a ring that retires this
    /// pod; if one comes, waits (until `deadline`) for this pod to own
    /// nothing and to have drained. True if the transition took care of it.
    async fn await_coordination(&self, deadline: Instant) -> bool {
        let state = &self.inner.state;
        let pod = &state.pod;
        let mut watch = state.ring.clone();
        let wait_until = (Instant::now() + self.inner.coordination_wait).min(deadline);
        loop {
            let Some(ring) = watch.latest() else {
                return false;
            };
            if plan::is_retiring(&ring, pod) {
                break;
            }
            if tokio::time::timeout_at(wait_until, watch.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
        tracing::info!(pod = %pod, "shutdown: the operator is retiring this pod; serving until drained");
        let driver = self
            .inner
            .lock_running()
            .as_ref()
            .map(|r| Arc::clone(&r.driver));
        loop {
            if let Some(ring) = watch.latest()
                && plan::owns_nothing(&ring, pod)
                && state.store.is_empty()
            {
                // Nothing resident is not drained: the records handed off may
                // still be on their way. Only the driver's drain reports a
                // losing pod drained (every record acknowledged or durable).
                let reported = || {
                    driver
                        .as_ref()
                        .is_none_or(|d| d.progress.wanted().drained >= Some(ring.version()))
                };
                if !plan::is_losing(&ring, pod) || reported() {
                    return true;
                }
            }
            // The drain's report does not change the ring: look again soon.
            let tick = (Instant::now() + DRAIN_POLL).min(deadline);
            if tokio::time::timeout_at(tick, watch.changed())
                .await
                .is_err()
                && Instant::now() >= deadline
            {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use serde_json::json;

    use std::path::PathBuf;

    use super::*;
    use crate::handoff::HandoffSecret;
    use crate::progress::{KubeProgressReporter, MemoryProgressReporter};
    use crate::ring::{Assignment, Pod, RingParts, ShardCount, Slot, SlotState, Transition};
    use crate::server::session::{MemberBuilder, ShutdownIntentSource};
    use crate::source::StaticRingSource;
    use crate::store::{JsonCodec, Persistence, SessionStore, Stamp, Stored, Versioned};

    const POD: &str = "svc-0-x";
    const SESSIONS: u64 = 12;

    /// One slot, served by [`POD`], owning every shard.
    fn ring() -> Ring {
        Ring::new(RingParts {
            namespace: "ns".into(),
            service: "svc".into(),
            version: 3,
            shards: ShardCount::new(4).unwrap(),
            vnodes: 8,
            slots: vec![Slot {
                index: 0,
                pod: Pod {
                    name: POD.into(),
                    uid: "uid-0".into(),
                    address: "127.0.0.1:9".parse().unwrap(),
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            }],
            current: Assignment::new(vec![0; 4]).unwrap(),
            transition: Transition::Stable,
        })
        .unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("locus-member-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A pod with [`SESSIONS`] sessions and no persistence (see [`member`]).
    async fn pod(dir: &Path) -> (StaticRingSource, SessionStore<String>, MemberBuilder) {
        let store = SessionStore::builder(JsonCodec, String::len)
            .build()
            .unwrap();
        fill(&store).await;
        let (source, builder) = member(dir, &store);
        (source, store, builder)
    }

    /// Installs [`SESSIONS`] sessions `k<i>` → `v<i>`, changed since stored.
    async fn fill<P: Persistence<String>>(store: &SessionStore<String, P>) {
        for i in 0..SESSIONS {
            store
                .install(
                    format!("k{i}").as_bytes(),
                    Versioned::new(1, format!("v{i}")),
                )
                .await
                .unwrap();
        }
    }

    /// [`POD`] over `store`, with a snapshot directory in `dir` and no
    /// coordination wait; the ring source is returned to stay alive.
    fn member<P: Persistence<String>>(
        dir: &Path,
        store: &SessionStore<String, P>,
    ) -> (StaticRingSource, MemberBuilder) {
        let source = StaticRingSource::with_ring(ring());
        let builder = Member::builder(POD, &source, store.clone())
            .secret(HandoffSecret::new("a-test-secret-of-some-length").unwrap())
            .snapshot_dir(dir)
            .coordination_wait(Duration::ZERO);
        (source, builder)
    }

    /// Counts how often it is asked; answers `answer`, or never.
    struct Asked {
        calls: Arc<AtomicUsize>,
        answer: Option<ShutdownIntent>,
    }

    impl ShutdownIntentSource for Asked {
        fn shutdown_intent(&self) -> BoxFuture<'_, Result<ShutdownIntent, IntentError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.answer {
                Some(intent) => Box::pin(std::future::ready(Ok(intent))),
                None => Box::pin(std::future::pending()),
            }
        }
    }

    fn asked(answer: Option<ShutdownIntent>) -> (Asked, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            Asked {
                calls: Arc::clone(&calls),
                answer,
            },
            calls,
        )
    }

    /// The snapshot path was taken and wrote every session.
    fn assert_snapshot(report: &ShutdownReport, dir: &Path) {
        assert_eq!(report.path, ShutdownPath::Snapshot, "{report:?}");
        let written = report.snapshot.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(written.records, SESSIONS);
        assert!(snapshot::path_in(dir).exists());
    }

    /// The pod handed over (here: no other slot to take the sessions, so
    /// the hand-over finds no destination) and left no snapshot.
    fn assert_handed_over(report: &ShutdownReport, dir: &Path) {
        assert_eq!(report.path, ShutdownPath::Handoff, "{report:?}");
        assert!(report.snapshot.is_none(), "{report:?}");
        assert!(
            !snapshot::path_in(dir).exists(),
            "a snapshot was left behind"
        );
    }

    #[test]
    fn only_a_known_retirement_skips_the_snapshot() {
        use SnapshotStep::{Discard, NotConfigured, Write};
        let unknown = || Err(IntentError::TimedOut(Duration::from_secs(2)));
        let cases = [
            (false, None, NotConfigured),
            (false, Some(Ok(ShutdownIntent::Retire)), NotConfigured),
            (false, Some(Ok(ShutdownIntent::Restart)), NotConfigured),
            (true, Some(Ok(ShutdownIntent::Restart)), Write),
            (true, Some(Ok(ShutdownIntent::Retire)), Discard),
            (true, Some(unknown()), Write),
            (true, None, Write),
        ];
        for (configured, intent, expected) in cases {
            assert_eq!(
                snapshot_step(configured, intent.as_ref()),
                expected,
                "snapshot directory {configured}, intent {intent:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_pod_going_away_hands_over_and_removes_a_stale_snapshot() {
        let dir = temp_dir("retire");
        let (_source, _store, builder) = pod(&dir).await;
        let (source, calls) = asked(Some(ShutdownIntent::Retire));
        let member = builder.shutdown_intent(source).build().unwrap();
        member.start().await;
        // A snapshot left by an earlier process of this pod name.
        std::fs::write(snapshot::path_in(&dir), b"stale").unwrap();
        let report = member.shutdown(Duration::from_secs(10)).await;
        assert_handed_over(&report, &dir);
        assert!(matches!(report.intent, Some(Ok(ShutdownIntent::Retire))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_restart_in_the_same_pod_writes_the_snapshot() {
        let dir = temp_dir("restart");
        let (_source, _store, builder) = pod(&dir).await;
        let (source, calls) = asked(Some(ShutdownIntent::Restart));
        let member = builder.shutdown_intent(source).build().unwrap();
        member.start().await;
        let report = member.shutdown(Duration::from_secs(10)).await;
        assert_snapshot(&report, &dir);
        assert!(matches!(report.intent, Some(Ok(ShutdownIntent::Restart))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_lookup_is_bounded_and_falls_back_to_the_snapshot() {
        let dir = temp_dir("silent");
        let (_source, _store, builder) = pod(&dir).await;
        let (source, _) = asked(None);
        let member = builder
            .shutdown_intent(source)
            .intent_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let report = member.shutdown(Duration::from_secs(10)).await;
        assert_snapshot(&report, &dir);
        assert!(
            matches!(report.intent, Some(Err(IntentError::TimedOut(t))) if t == Duration::from_millis(300)),
            "{report:?}"
        );
        assert!(report.took < Duration::from_secs(1), "{:?}", report.took);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn without_a_source_the_snapshot_is_written_as_before() {
        let dir = temp_dir("no-source");
        let (_source, _store, builder) = pod(&dir).await;
        // A progress reporter that does not read the pod gives no source.
        let member = builder
            .progress(MemoryProgressReporter::new())
            .build()
            .unwrap();
        let report = member.shutdown(Duration::from_secs(10)).await;
        assert_snapshot(&report, &dir);
        assert!(
            matches!(report.intent, Some(Err(IntentError::Unavailable { .. }))),
            "{report:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn without_a_snapshot_directory_nobody_is_asked() {
        let source = StaticRingSource::with_ring(ring());
        let store = SessionStore::builder(JsonCodec, String::len)
            .build()
            .unwrap();
        let (intent, calls) = asked(Some(ShutdownIntent::Restart));
        let member = Member::builder(POD, &source, store)
            .secret(HandoffSecret::new("a-test-secret-of-some-length").unwrap())
            .coordination_wait(Duration::ZERO)
            .shutdown_intent(intent)
            .build()
            .unwrap();
        let report = member.shutdown(Duration::from_secs(10)).await;
        assert_eq!(report.path, ShutdownPath::Handoff);
        assert!(report.intent.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_caller_can_say_why_the_process_stops() {
        let dir = temp_dir("caller");
        let (_source, _store, builder) = pod(&dir).await;
        let (source, calls) = asked(Some(ShutdownIntent::Restart));
        let member = builder.shutdown_intent(source).build().unwrap();
        let report = member
            .shutdown_as(ShutdownIntent::Retire, Duration::from_secs(10))
            .await;
        assert_handed_over(&report, &dir);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the caller's word is enough"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let dir = temp_dir("caller-restart");
        let (_source, _store, builder) = pod(&dir).await;
        let member = builder.build().unwrap();
        let report = member
            .shutdown_as(ShutdownIntent::Restart, Duration::from_secs(10))
            .await;
        assert_snapshot(&report, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A client whose API server answers every `GET` of the pod with
    /// `status` and `body` (and every other request with an empty Pod);
    /// counts the `GET`s.
    fn api_server(status: u16, body: serde_json::Value) -> (kube::Client, Arc<AtomicUsize>) {
        let gets = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&gets);
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let (status, body) = if request.method() == http::Method::GET {
                assert_eq!(
                    request.uri().path(),
                    format!("/api/v1/namespaces/ns/pods/{POD}")
                );
                counted.fetch_add(1, Ordering::SeqCst);
                (status, body.clone())
            } else {
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD}}),
                )
            };
            let response = http::Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_string(),
                )));
            std::future::ready(response)
        });
        (kube::Client::new(service, "ns"), gets)
    }

    fn pod_object(deleting: bool) -> serde_json::Value {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": POD, "namespace": "ns", "uid": "uid-0"},
        });
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:30Z");
        }
        pod
    }

    fn status(code: u16, reason: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "reason": reason,
            "code": code,
            "message": format!("pods \"{POD}\": {reason}"),
        })
    }

    /// Shuts down a pod whose progress goes to its Pod on an API server
    /// answering the Pod's `GET` with `status` and `body`.
    async fn shutdown_reading_the_pod(
        name: &str,
        status: u16,
        body: serde_json::Value,
    ) -> (ShutdownReport, PathBuf, usize) {
        let dir = temp_dir(name);
        let (_source, _store, builder) = pod(&dir).await;
        let (client, gets) = api_server(status, body);
        let member = builder
            .progress(KubeProgressReporter::new(client, "ns", POD))
            .build()
            .unwrap();
        member.start().await;
        let report = member.shutdown(Duration::from_secs(10)).await;
        (report, dir, gets.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn the_kube_reporter_reads_the_pod_being_deleted() {
        let (report, dir, gets) =
            shutdown_reading_the_pod("kube-deleting", 200, pod_object(true)).await;
        assert_handed_over(&report, &dir);
        assert!(matches!(report.intent, Some(Ok(ShutdownIntent::Retire))));
        assert_eq!(gets, 1);
        std::fs::remove_dir_all(&dir).unwrap();

        // Already gone from the API server: going away all the more.
        let (report, dir, _) =
            shutdown_reading_the_pod("kube-gone", 404, status(404, "NotFound")).await;
        assert_handed_over(&report, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_kube_reporter_reads_the_pod_restarting_in_place() {
        let (report, dir, gets) =
            shutdown_reading_the_pod("kube-restart", 200, pod_object(false)).await;
        assert_snapshot(&report, &dir);
        assert!(matches!(report.intent, Some(Ok(ShutdownIntent::Restart))));
        assert_eq!(gets, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_pod_that_cannot_be_read_falls_back_to_the_snapshot() {
        let (report, dir, _) =
            shutdown_reading_the_pod("kube-forbidden", 403, status(403, "Forbidden")).await;
        assert_snapshot(&report, &dir);
        assert!(
            matches!(&report.intent, Some(Err(IntentError::Lookup { pod, .. })) if pod == POD),
            "{report:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Rows of a database shared by the processes of one pod.
    #[derive(Clone, Default)]
    struct Db(Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, Stored<String>>>>);

    impl Persistence<String> for Db {
        type Error = std::convert::Infallible;

        async fn load(&self, key: &[u8]) -> Result<Option<Stored<String>>, Self::Error> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }

        async fn store(&self, key: &[u8], stamp: Stamp, value: &String) -> Result<(), Self::Error> {
            let mut rows = self.0.lock().unwrap();
            if rows.get(key).is_none_or(|held| held.stamp <= stamp) {
                rows.insert(key.to_vec(), Stored::new(stamp, value.clone()));
            }
            Ok(())
        }
    }

    impl Db {
        fn rows(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    /// One process of [`POD`] over `db` with a snapshot directory in `dir`:
    /// with [`SESSIONS`] changed sessions if `filled`.
    async fn process(
        dir: &Path,
        db: &Db,
        filled: bool,
    ) -> (StaticRingSource, SessionStore<String, Db>, MemberBuilder) {
        let store = SessionStore::builder(JsonCodec, String::len)
            .persistence(db.clone())
            .build()
            .unwrap();
        if filled {
            fill(&store).await;
        }
        let (source, builder) = member(dir, &store);
        (source, store, builder)
    }

    /// Waits (bounded) until `done` holds.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_restart_in_place_writes_nothing_back_and_the_next_process_does_it_after_serving() {
        let dir = temp_dir("in-place");
        let db = Db::default();
        let (_source, _store, builder) = process(&dir, &db, true).await;
        let member = builder.build().unwrap();
        member.start().await;
        let report = member
            .shutdown_as(ShutdownIntent::Restart, Duration::from_secs(10))
            .await;
        assert_snapshot(&report, &dir);
        let written = report.snapshot.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(written.dirty, SESSIONS, "every record marked unsaved");
        assert!(report.flushed.is_none(), "{report:?}");
        assert_eq!(db.rows(), 0, "nothing written back before stopping");
        drop(member);

        // The new process restores, serves, and writes back in the background.
        let (_source, store, builder) = process(&dir, &db, false).await;
        let member = builder.build().unwrap();
        let started = member.start().await;
        let restored = started.snapshot.expect("restored");
        assert!(restored.pending_write_back);
        assert_eq!(store.stats().sessions, SESSIONS as usize);
        assert_eq!(store.get(b"k3").await.unwrap().value, "v3");
        eventually("the background write-back", || {
            db.rows() == SESSIONS as usize && !snapshot::restored_path_in(&dir).exists()
        })
        .await;
        assert_eq!(store.flush().await.written, 0, "every session clean");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_unknown_intent_writes_back_before_stopping() {
        let dir = temp_dir("unknown-db");
        let db = Db::default();
        let (_source, _store, builder) = process(&dir, &db, true).await;
        let (source, _) = asked(None);
        let member = builder
            .shutdown_intent(source)
            .intent_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        member.start().await;
        let report = member.shutdown(Duration::from_secs(10)).await;
        assert_snapshot(&report, &dir);
        assert!(matches!(report.intent, Some(Err(IntentError::TimedOut(_)))));
        assert_eq!(report.flushed.map(|f| f.written), Some(SESSIONS as usize));
        assert_eq!(
            db.rows(),
            SESSIONS as usize,
            "written back before the process ends"
        );
        let written = report.snapshot.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(written.dirty, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_shutdown_that_saved_every_session_again_removes_the_restored_file() {
        let dir = temp_dir("supersede");
        let db = Db::default();
        let (_source, _store, builder) = process(&dir, &db, true).await;
        builder
            .build()
            .unwrap()
            .shutdown_as(ShutdownIntent::Restart, Duration::from_secs(10))
            .await;
        // A second process restores, and restarts in place again before its
        // background write-back has run: its own snapshot holds the sessions
        // (still unsaved), so the restored file goes.
        let (_source, _store, builder) = process(&dir, &Db::default(), false).await;
        let member = builder.build().unwrap();
        let started = member.start().await;
        assert!(started.snapshot.unwrap().pending_write_back);
        let report = member
            .shutdown_as(ShutdownIntent::Restart, Duration::from_secs(10))
            .await;
        let written = report.snapshot.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(written.records, SESSIONS);
        assert!(!snapshot::restored_path_in(&dir).exists());
        assert!(snapshot::path_in(&dir).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
