//! Session store behaviour through its public API: versions, mutual
//! exclusion, bounds and the errors past them, single-flight loads that outlive
//! their callers, write-back before eviction, passivation, handoff and
//! snapshots.
//!
//! Time-dependent tests run on tokio's paused clock; waiting on another task
//! is done on conditions (gates and counters in the recording persistence,
//! the store's own counts), never on sleeps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use futures::{StreamExt, poll, stream};
use http::StatusCode;
use locus::store::{
    FlushPace, HandOff, Installed, JsonCodec, Limits, ManualClock, Passivation, Persistence,
    SessionStore, Stamp, StoreError, Stored, Versioned,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

// ---------------------------------------------------------------------------
// A persistence that records every call and can be gated or made to fail.

#[derive(Debug, thiserror::Error)]
#[error("injected persistence failure")]
struct Injected;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Load(Vec<u8>),
    Store(Vec<u8>, u64),
}

struct RecordingInner<V> {
    data: Mutex<HashMap<Vec<u8>, Stored<V>>>,
    calls: Mutex<Vec<Call>>,
    fail_stores: AtomicBool,
    fail_loads: AtomicUsize,
    /// Times every call yields to the scheduler before it answers (a
    /// backend's latency, so that calls overlap other tasks' work).
    yields: AtomicUsize,
    load_gate: watch::Sender<bool>,
    store_gate: watch::Sender<bool>,
    loads_started: watch::Sender<usize>,
    stores_started: watch::Sender<usize>,
}

#[derive(Clone)]
struct Recording<V> {
    inner: Arc<RecordingInner<V>>,
}

impl<V: Clone> Recording<V> {
    fn new() -> Self {
        Self {
            inner: Arc::new(RecordingInner {
                data: Mutex::new(HashMap::new()),
                calls: Mutex::new(Vec::new()),
                fail_stores: AtomicBool::new(false),
                fail_loads: AtomicUsize::new(0),
                yields: AtomicUsize::new(0),
                load_gate: watch::Sender::new(true),
                store_gate: watch::Sender::new(true),
                loads_started: watch::Sender::new(0),
                stores_started: watch::Sender::new(0),
            }),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    fn loads(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Load(_)))
            .count()
    }

    fn stored(&self, key: &[u8]) -> Option<Versioned<V>> {
        self.held(key)
            .map(|held| Versioned::new(held.stamp.version, held.value))
    }

    /// The row with its stamp.
    fn held(&self, key: &[u8]) -> Option<Stored<V>> {
        self.inner.data.lock().unwrap().get(key).cloned()
    }

    fn put(&self, key: &[u8], version: u64, value: V) {
        self.put_stamped(key, Stamp::new(0, version), value);
    }

    fn put_stamped(&self, key: &[u8], stamp: Stamp, value: V) {
        self.inner
            .data
            .lock()
            .unwrap()
            .insert(key.to_vec(), Stored::new(stamp, value));
    }

    fn hold_loads(&self, hold: bool) {
        self.inner.load_gate.send_replace(!hold);
    }

    fn hold_stores(&self, hold: bool) {
        self.inner.store_gate.send_replace(!hold);
    }

    fn fail_stores(&self, fail: bool) {
        self.inner.fail_stores.store(fail, Ordering::SeqCst);
    }

    fn fail_next_loads(&self, n: usize) {
        self.inner.fail_loads.store(n, Ordering::SeqCst);
    }

    fn yield_in_calls(&self, n: usize) {
        self.inner.yields.store(n, Ordering::SeqCst);
    }

    async fn latency(&self) {
        for _ in 0..self.inner.yields.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    }

    async fn loads_started(&self, n: usize) {
        let mut rx = self.inner.loads_started.subscribe();
        within(rx.wait_for(|started| *started >= n)).await.unwrap();
    }

    async fn stores_started(&self, n: usize) {
        let mut rx = self.inner.stores_started.subscribe();
        within(rx.wait_for(|started| *started >= n)).await.unwrap();
    }
}

impl<V: Clone + Send + Sync + 'static> Persistence<V> for Recording<V> {
    type Error = Injected;

    async fn load(&self, key: &[u8]) -> Result<Option<Stored<V>>, Injected> {
        self.inner
            .calls
            .lock()
            .unwrap()
            .push(Call::Load(key.to_vec()));
        self.inner.loads_started.send_modify(|n| *n += 1);
        let mut gate = self.inner.load_gate.subscribe();
        gate.wait_for(|open| *open).await.unwrap();
        self.latency().await;
        let fail = self
            .inner
            .fail_loads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(Injected);
        }
        Ok(self.held(key))
    }

    async fn store(&self, key: &[u8], stamp: Stamp, value: &V) -> Result<(), Injected> {
        self.inner
            .calls
            .lock()
            .unwrap()
            .push(Call::Store(key.to_vec(), stamp.version));
        self.inner.stores_started.send_modify(|n| *n += 1);
        let mut gate = self.inner.store_gate.subscribe();
        gate.wait_for(|open| *open).await.unwrap();
        self.latency().await;
        if self.inner.fail_stores.load(Ordering::SeqCst) {
            return Err(Injected);
        }
        // Conditional, as the contract requires: a higher stored stamp wins.
        if self.held(key).is_none_or(|held| held.stamp <= stamp) {
            self.put_stamped(key, stamp, value.clone());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// Awaits `wait`, failing the test instead of hanging if it takes more than
/// two minutes (of tokio time: virtual in paused tests).
async fn within<T>(wait: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), wait)
        .await
        .expect("condition not reached within 120 s")
}

/// Yields to the other tasks until `done` holds (bounded).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

type Text = SessionStore<String, Recording<String>>;

/// A store of strings weighing their length in bytes.
fn text_store(limits: Limits) -> (Text, Recording<String>) {
    let persistence = Recording::new();
    let store = SessionStore::builder(JsonCodec, String::len)
        .limits(limits)
        .persistence(persistence.clone())
        .build()
        .unwrap();
    (store, persistence)
}

/// A store of counters weighing 8 bytes each.
fn counter_store(limits: Limits) -> SessionStore<u64> {
    SessionStore::builder(JsonCodec, |_: &u64| 8)
        .limits(limits)
        .build()
        .unwrap()
}

fn small(max_session_bytes: usize, max_total_bytes: usize) -> Limits {
    Limits::builder()
        .max_session_bytes(max_session_bytes)
        .max_total_bytes(max_total_bytes)
        .persistence_timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// The store's metrics in the Prometheus text format.
fn metrics_text<V, P>(store: &SessionStore<V, P>) -> String
where
    V: Clone + Send + Sync + 'static,
    P: Persistence<V>,
{
    let mut registry = Registry::default();
    store.register_metrics(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    text
}

/// The value of the integer sample whose line starts with `series` (name and
/// labels); 0 if absent.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Asserts the byte accounting: within the bound and equal to a recount.
async fn assert_bytes_exact(store: &Text) {
    let total = store.total_bytes();
    assert!(
        total <= store.limits().max_total_bytes(),
        "{total} over the bound"
    );
    assert_eq!(store.recount_bytes().await, total, "accounting drifted");
}

fn fill(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

// ---------------------------------------------------------------------------
// Versions and mutual exclusion.

#[tokio::test]
async fn versions_start_at_zero_and_count_committed_writes_only() {
    let store = counter_store(Limits::default());
    assert_eq!(store.get(b"k").await.unwrap(), Versioned::new(0, 0));
    for expected in 1..=3 {
        let done = store.update(b"k", |n| *n += 10).await.unwrap();
        assert_eq!(done.version, expected);
    }
    let refused = store
        .try_update(b"k", |n| {
            *n = 999;
            Err::<(), _>("invalid")
        })
        .await
        .unwrap();
    assert_eq!(refused, Err("invalid"));
    assert_eq!(store.get(b"k").await.unwrap(), Versioned::new(3, 30));
    let read = store.read(b"k", |n| n * 2).await.unwrap();
    assert_eq!(read, Versioned::new(3, 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_session_add_up_exactly() {
    let store = counter_store(Limits::default());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..250 {
                    store.update(b"counter", |n| *n += 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.get(b"counter").await.unwrap(),
        Versioned::new(4000, 4000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_updates_of_one_session_never_overlap() {
    let store = counter_store(Limits::default());
    let inside = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, inside) = (store.clone(), inside.clone());
            tokio::spawn(async move {
                for _ in 0..50 {
                    let inside = inside.clone();
                    store
                        .update_async(b"k", |n| async move {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "overlap");
                            tokio::task::yield_now().await;
                            inside.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>((n + 1, ()))
                        })
                        .await
                        .unwrap()
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.get(b"k").await.unwrap(), Versioned::new(400, 400));
}

#[tokio::test]
async fn updates_past_the_per_session_queue_are_refused_as_busy() {
    let store = counter_store(Limits::builder().max_pending_updates(2).build().unwrap());
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .update_async(b"k", |n| async move {
                    entered_tx.send(()).unwrap();
                    released.await.unwrap();
                    Ok::<_, Infallible>((n + 1, ()))
                })
                .await
        }
    });
    entered.await.unwrap();
    // A second update queues behind the holder (the queue is now full)...
    let mut queued = pin!(store.update(b"k", |n| *n += 1));
    assert!(poll!(&mut queued).is_pending());
    // ...so a third is refused at once, and says when to retry.
    let busy = store.update(b"k", |n| *n += 1).await.unwrap_err();
    assert!(
        matches!(busy, StoreError::Busy { queued: 2, .. }),
        "{busy:?}"
    );
    assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(busy.retry_after(), Some(Duration::from_secs(1)));
    // Reads are not refused: they wait for the writer.
    assert!(
        poll!(pin!(store.get(b"k"))).is_pending(),
        "reads wait for the writer"
    );
    release.send(()).unwrap();
    holder.await.unwrap().unwrap().unwrap();
    assert_eq!(queued.await.unwrap().version, 2);
    assert_eq!(store.update(b"k", |n| *n += 1).await.unwrap().version, 3);
    let text = metrics_text(&store);
    assert_eq!(sample(&text, r#"store_rejections_total{reason="busy"}"#), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_async_update_commits_nothing_and_releases_the_session() {
    let store = counter_store(Limits::builder().max_pending_updates(1).build().unwrap());
    store.update(b"k", |n| *n = 7).await.unwrap();
    let stuck = store.update_async(b"k", |n| async move {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>((n + 100, ()))
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), stuck)
            .await
            .is_err()
    );
    assert_eq!(store.get(b"k").await.unwrap(), Versioned::new(1, 7));
    assert_eq!(store.update(b"k", |n| *n += 1).await.unwrap().version, 2);
}

#[tokio::test]
async fn a_panicking_update_leaves_the_state_and_the_queue_intact() {
    let store = counter_store(Limits::builder().max_pending_updates(1).build().unwrap());
    store.update(b"k", |n| *n = 5).await.unwrap();
    let crashed = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .update(b"k", |n| {
                    *n = 1_000;
                    panic!("closure failed halfway");
                })
                .await
        }
    })
    .await;
    assert!(crashed.unwrap_err().is_panic());
    assert_eq!(store.get(b"k").await.unwrap(), Versioned::new(1, 5));
    // With a queue of 1, this would be Busy had the panic kept its place.
    assert_eq!(store.update(b"k", |n| *n += 1).await.unwrap().version, 2);
}

// ---------------------------------------------------------------------------
// Byte and session bounds.

#[tokio::test]
async fn a_write_past_the_session_bound_is_too_large_and_keeps_the_old_state() {
    let (store, _) = text_store(small(10, 100));
    store.update(b"k", |s| s.push_str("12345")).await.unwrap();
    let refused = store
        .update(b"k", |s| s.push_str("678901"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::TooLarge {
                size: 11,
                max: 10,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        store.get(b"k").await.unwrap(),
        Versioned::new(1, "12345".to_owned())
    );
    assert_eq!(store.total_bytes(), 5);
}

#[tokio::test]
async fn a_client_sending_ten_times_the_byte_bounds_gets_errors_and_bytes_stay_bounded() {
    // Per-session bound 1 000 bytes, total bound 4 000 bytes, and a
    // persistence that cannot store: nothing changed can be evicted.
    let (store, persistence) = text_store(small(1_000, 4_000));
    persistence.fail_stores(true);
    let chunk = fill('x', 100);
    let (mut too_large, mut full, mut ok) = (0, 0, 0);
    // 10x the per-session bound into one session.
    for _ in 0..100 {
        match store.update(b"one", |s| s.push_str(&chunk)).await {
            Ok(_) => ok += 1,
            Err(StoreError::TooLarge { .. }) => too_large += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert_bytes_exact(&store).await;
    }
    assert_eq!((ok, too_large), (10, 90));
    assert_eq!(store.get(b"one").await.unwrap().value.len(), 1_000);
    // 10x the total bound spread over many sessions.
    ok = 0;
    for i in 0..400 {
        let key = format!("many-{i}");
        match store.update(key.as_bytes(), |s| s.push_str(&chunk)).await {
            Ok(_) => ok += 1,
            Err(error @ StoreError::Full { .. }) => {
                assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert!(error.retry_after().is_some());
                full += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert_bytes_exact(&store).await;
    }
    assert_eq!(ok, 30, "3 000 bytes of room left beside the first session");
    assert_eq!(full, 370);
    assert_eq!(store.total_bytes(), 4_000);
    let text = metrics_text(&store);
    assert_eq!(sample(&text, "store_resident_bytes "), 4_000);
    assert_eq!(
        sample(&text, r#"store_rejections_total{reason="too_large"}"#),
        90
    );
    assert_eq!(
        sample(&text, r#"store_rejections_total{reason="full"}"#),
        370
    );
    assert!(sample(&text, r#"store_write_backs_total{result="failed"}"#) > 0);
}

#[tokio::test]
async fn the_session_bound_evicts_clean_sessions_and_refuses_when_all_are_in_use() {
    let store = counter_store(Limits::builder().max_sessions(2).build().unwrap());
    // Fresh sessions are clean: evicting them needs no write-back.
    store.get(b"a").await.unwrap();
    store.get(b"b").await.unwrap();
    store.get(b"c").await.unwrap();
    assert_eq!(store.stats().sessions, 2);
    assert_eq!(
        store.version_of(b"a").await,
        None,
        "least recently used went"
    );
    // Hold both resident sessions in updates: nothing is evictable.
    let (release, released) = watch::channel(false);
    let mut holders = Vec::new();
    for key in [&b"b"[..], &b"c"[..]] {
        let (store, mut released) = (store.clone(), released.clone());
        let (entered_tx, entered) = tokio::sync::oneshot::channel();
        holders.push(tokio::spawn(async move {
            store
                .update_async(key, |n| async move {
                    entered_tx.send(()).unwrap();
                    released.wait_for(|r| *r).await.unwrap();
                    Ok::<_, Infallible>((n + 1, ()))
                })
                .await
        }));
        entered.await.unwrap();
    }
    let full = store.get(b"d").await.unwrap_err();
    assert!(
        matches!(
            full,
            StoreError::Full {
                limit: "sessions",
                ..
            }
        ),
        "{full:?}"
    );
    release.send_replace(true);
    for holder in holders {
        holder.await.unwrap().unwrap().unwrap();
    }
    assert_eq!(store.get(b"d").await.unwrap().version, 0);
}

#[tokio::test]
async fn pressure_writes_back_the_least_recently_used_session_then_evicts_it() {
    let (store, persistence) = text_store(small(50, 100));
    store.update(b"a", |s| *s = fill('a', 40)).await.unwrap();
    store.update(b"b", |s| *s = fill('b', 40)).await.unwrap();
    store.update(b"b", |s| s.truncate(39)).await.unwrap();
    store.get(b"a").await.unwrap(); // b is now the least recently used
    // c grows to 40: 119 bytes would exceed 100, so b must go.
    store.update(b"c", |s| *s = fill('c', 40)).await.unwrap();
    assert_eq!(store.version_of(b"b").await, None);
    assert_eq!(store.version_of(b"a").await, Some(1));
    assert_eq!(store.total_bytes(), 80);
    assert_eq!(
        persistence.stored(b"b"),
        Some(Versioned::new(2, fill('b', 39)))
    );
    assert!(
        persistence.calls().contains(&Call::Store(b"b".to_vec(), 2)),
        "{:?}",
        persistence.calls()
    );
    // b comes back, cold, from the persistence, at its version.
    assert_eq!(
        store.get(b"b").await.unwrap(),
        Versioned::new(2, fill('b', 39))
    );
    assert_bytes_exact(&store).await;
    let text = metrics_text(&store);
    assert!(sample(&text, r#"store_evictions_total{reason="pressure"}"#) >= 1);
    assert_eq!(sample(&text, r#"store_write_backs_total{result="ok"}"#), 2);
}

#[tokio::test]
async fn load_version_makes_a_session_resident_and_says_whether_it_is_new() {
    let (store, _persistence) = text_store(small(50, 100));
    assert_eq!(
        store.load_version(b"new").await.unwrap(),
        0,
        "nothing stored"
    );
    assert_eq!(store.version_of(b"new").await, Some(0), "resident now");
    store.update(b"b", |s| *s = fill('b', 40)).await.unwrap();
    store.update(b"b", |s| s.truncate(39)).await.unwrap();
    // Pushed out by pressure (written back at version 2), then loaded again.
    store.update(b"c", |s| *s = fill('c', 40)).await.unwrap();
    store.update(b"d", |s| *s = fill('d', 40)).await.unwrap();
    assert_eq!(store.version_of(b"b").await, None, "evicted");
    assert_eq!(
        store.load_version(b"b").await.unwrap(),
        2,
        "loaded, not new"
    );
    assert_eq!(store.version_of(b"b").await, Some(2));
}

#[tokio::test]
async fn a_session_stays_resident_until_its_write_back_has_completed() {
    let (store, persistence) = text_store(small(50, 90));
    store.update(b"old", |s| *s = fill('o', 50)).await.unwrap();
    store.update(b"new", |s| *s = fill('n', 10)).await.unwrap();
    persistence.hold_stores(true);
    let grow = tokio::spawn({
        let store = store.clone();
        async move { store.update(b"new", |s| *s = fill('n', 50)).await }
    });
    // The write-back of `old` has started and is held: `old` is still in
    // memory, and the bytes are still counted.
    persistence.stores_started(1).await;
    assert_eq!(
        persistence.calls().last(),
        Some(&Call::Store(b"old".to_vec(), 1))
    );
    assert_eq!(store.stats().sessions, 2);
    assert_eq!(store.total_bytes(), 60);
    assert_eq!(persistence.stored(b"old"), None);
    persistence.hold_stores(false);
    assert_eq!(grow.await.unwrap().unwrap().version, 2);
    assert_eq!(store.stats().sessions, 1);
    assert_eq!(store.total_bytes(), 50);
    assert_eq!(persistence.stored(b"old").unwrap().version, 1);
}

/// Changes sessions `k0` to `k7` to four `c`s.
async fn change_eight(store: &Text, c: char) {
    for i in 0..8 {
        store
            .update(format!("k{i}").as_bytes(), |s| *s = fill(c, 4))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_paced_flush_runs_as_many_write_backs_at_once_as_its_pace_says() {
    let limits = Limits::builder().write_back_concurrency(3).build().unwrap();
    let (store, persistence) = text_store(limits);
    change_eight(&store, 'x').await;
    let started = || {
        persistence
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Store(..)))
            .count()
    };
    // Paced at one: while the first write-back is held, no other starts.
    persistence.hold_stores(true);
    let flush = tokio::spawn({
        let store = store.clone();
        async move { store.flush_paced(&|| FlushPace::Run(1)).await }
    });
    persistence.stores_started(1).await;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(started(), 1);
    persistence.hold_stores(false);
    assert_eq!(within(flush).await.unwrap().written, 8);
    assert_eq!(started(), 8);

    // A pace above `write_back_concurrency` runs that many, no more.
    change_eight(&store, 'y').await;
    persistence.hold_stores(true);
    let flush = tokio::spawn({
        let store = store.clone();
        async move { store.flush_paced(&|| FlushPace::Run(usize::MAX)).await }
    });
    persistence.stores_started(11).await;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(started(), 11);
    persistence.hold_stores(false);
    assert_eq!(within(flush).await.unwrap().written, 8);

    // Told to pause before every other write-back: it pauses, and the
    // write-backs already running finish meanwhile (one at a time here).
    change_eight(&store, 'z').await;
    let asked = AtomicUsize::new(0);
    let pauses = AtomicUsize::new(0);
    let pace = || {
        if asked.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            pauses.fetch_add(1, Ordering::SeqCst);
            FlushPace::Pause(Duration::from_millis(1))
        } else {
            FlushPace::Run(1)
        }
    };
    let flushed = within(store.flush_paced(&pace)).await;
    assert_eq!(flushed.written, 8);
    assert!(pauses.load(Ordering::SeqCst) >= 8, "paused before each");
    assert_eq!(started(), 24);
}

#[tokio::test]
async fn a_failed_write_back_keeps_the_session_and_full_says_when_to_retry() {
    let (store, persistence) = text_store(small(60, 100));
    store.update(b"a", |s| *s = fill('a', 60)).await.unwrap();
    persistence.fail_stores(true);
    let full = store
        .update(b"b", |s| *s = fill('b', 60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            full,
            StoreError::Full {
                limit: "total bytes",
                ..
            }
        ),
        "{full:?}"
    );
    assert_eq!(full.retry_after(), Some(Duration::from_secs(1)));
    // a was not dropped: still resident, still changed, still its value.
    assert_eq!(
        store.get(b"a").await.unwrap(),
        Versioned::new(1, fill('a', 60))
    );
    assert_eq!(persistence.stored(b"a"), None);
    // b exists, empty: its first write failed and was not committed.
    assert_eq!(
        store.get(b"b").await.unwrap(),
        Versioned::new(0, String::new())
    );
    let text = metrics_text(&store);
    assert_eq!(
        sample(&text, r#"store_write_backs_total{result="failed"}"#),
        1
    );
    assert_eq!(sample(&text, r#"store_rejections_total{reason="full"}"#), 1);
    assert_bytes_exact(&store).await;
}

// ---------------------------------------------------------------------------
// Passivation.

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_written_back_and_evicted_after_the_idle_timeout() {
    let (store, persistence) = text_store(
        small(100, 1_000)
            .to_builder()
            .idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    store.update(b"a", |s| s.push('a')).await.unwrap();
    store.get(b"clean").await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    store.update(b"b", |s| s.push('b')).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let sweep = store.passivate_idle().await;
    assert_eq!(
        sweep,
        Passivation {
            evicted: 2,
            bytes_freed: 1,
            ..Passivation::default()
        }
    );
    assert_eq!(
        persistence.stored(b"a"),
        Some(Versioned::new(1, "a".into()))
    );
    assert_eq!(
        persistence.stored(b"clean"),
        None,
        "unchanged: nothing to store"
    );
    assert_eq!(store.version_of(b"b").await, Some(1));
    assert_eq!(store.stats().sessions, 1);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(store.passivate_idle().await.evicted, 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(store.passivate_idle().await.evicted, 1);
    assert_eq!(store.stats(), locus::store::StoreStats::default());
    assert_eq!(
        persistence.stored(b"b"),
        Some(Versioned::new(1, "b".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn the_passivation_task_sweeps_on_its_own_and_keeps_sessions_whose_write_back_fails() {
    let (store, persistence) = text_store(
        small(100, 1_000)
            .to_builder()
            .idle_timeout(Duration::from_secs(60))
            .sweep_interval(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    store.update(b"a", |s| s.push('a')).await.unwrap();
    persistence.fail_stores(true);
    let task = store.spawn_passivation();
    // Paused time jumps to each sweep; the first one past 60 s tries a.
    persistence.stores_started(1).await;
    persistence.stores_started(2).await; // and the next sweep tries again
    assert_eq!(store.version_of(b"a").await, Some(1), "kept after failures");
    persistence.fail_stores(false);
    persistence.stores_started(3).await;
    until(|| store.stats().sessions == 0).await;
    assert_eq!(
        persistence.stored(b"a"),
        Some(Versioned::new(1, "a".into()))
    );
    let text = metrics_text(&store);
    assert_eq!(
        sample(&text, r#"store_write_backs_total{result="failed"}"#),
        2
    );
    assert_eq!(sample(&text, r#"store_evictions_total{reason="idle"}"#), 1);
    task.abort();
}

// ---------------------------------------------------------------------------
// Single-flight loads.

#[tokio::test]
async fn fifty_concurrent_gets_of_a_missing_session_load_it_once() {
    let (store, persistence) = text_store(small(100, 1_000));
    persistence.put(b"k", 41, "from disk".into());
    persistence.hold_loads(true);
    let mut gets = pin!(join_all((0..50).map(|_| store.get(b"k"))));
    // One poll runs every get up to its wait: one started the load, 49 joined.
    assert!(poll!(&mut gets).is_pending());
    persistence.loads_started(1).await;
    assert_eq!(store.stats().loading, 1);
    persistence.hold_loads(false);
    for got in gets.await {
        assert_eq!(got.unwrap(), Versioned::new(41, "from disk".to_owned()));
    }
    assert_eq!(persistence.loads(), 1);
    store.get(b"k").await.unwrap();
    assert_eq!(persistence.loads(), 1);
    let text = metrics_text(&store);
    let cold = r#"store_access_seconds_count{op="read",path="cold"}"#;
    let warm = r#"store_access_seconds_count{op="read",path="warm"}"#;
    assert_eq!(sample(&text, cold), 50);
    assert_eq!(sample(&text, warm), 1);
    assert_eq!(sample(&text, r#"store_loads_total{result="found"}"#), 1);
}

#[tokio::test(start_paused = true)]
async fn a_load_completes_and_stays_resident_after_every_caller_gave_up() {
    let (store, persistence) = text_store(small(100, 1_000));
    persistence.put(b"k", 3, "warm me".into());
    persistence.hold_loads(true);
    // One caller times out, another is dropped after it joined.
    let timed_out = tokio::time::timeout(Duration::from_millis(50), store.get(b"k")).await;
    assert!(timed_out.is_err());
    {
        let mut dropped = pin!(store.update(b"k", |s| s.push('!')));
        assert!(poll!(&mut dropped).is_pending());
    }
    assert_eq!(store.stats().loading, 1);
    persistence.hold_loads(false);
    until(|| store.stats().sessions == 1).await;
    // The retry finds it warm: no second load, and the dropped update never ran.
    assert_eq!(
        store.get(b"k").await.unwrap(),
        Versioned::new(3, "warm me".to_owned())
    );
    assert_eq!(persistence.loads(), 1);
    assert_eq!(store.stats().loading, 0);
}

#[tokio::test]
async fn a_failed_load_reaches_every_waiter_and_the_next_request_loads_again() {
    let (store, persistence) = text_store(small(100, 1_000));
    persistence.put(b"k", 9, "x".into());
    persistence.hold_loads(true);
    persistence.fail_next_loads(1);
    let mut gets = pin!(join_all((0..5).map(|_| store.get(b"k"))));
    assert!(poll!(&mut gets).is_pending());
    persistence.hold_loads(false);
    for got in gets.await {
        let error = got.unwrap_err();
        assert!(
            matches!(error, StoreError::Persistence { action: "load", .. }),
            "{error:?}"
        );
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(store.stats().loading, 0);
    assert_eq!(store.get(b"k").await.unwrap().version, 9);
    assert_eq!(persistence.loads(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_load_past_the_persistence_timeout_fails_and_frees_its_place() {
    let (store, persistence) = text_store(
        small(100, 1_000)
            .to_builder()
            .persistence_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    );
    persistence.hold_loads(true);
    let error = store.get(b"k").await.unwrap_err();
    assert!(
        matches!(error, StoreError::PersistenceTimeout { action: "load", .. }),
        "{error:?}"
    );
    assert_eq!(store.stats().loading, 0);
}

#[tokio::test]
async fn loads_past_the_concurrency_bound_are_refused() {
    let (store, persistence) = text_store(
        small(100, 1_000)
            .to_builder()
            .max_concurrent_loads(1)
            .build()
            .unwrap(),
    );
    persistence.hold_loads(true);
    let mut first = pin!(store.get(b"one"));
    assert!(poll!(&mut first).is_pending());
    let refused = store.get(b"two").await.unwrap_err();
    assert!(
        matches!(refused, StoreError::LoadsSaturated { max: 1, .. }),
        "{refused:?}"
    );
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    persistence.hold_loads(false);
    first.await.unwrap();
    store.get(b"two").await.unwrap();
}

#[tokio::test]
async fn keys_past_the_key_bound_are_refused() {
    let store = counter_store(Limits::builder().max_key_bytes(8).build().unwrap());
    let error = store.get(b"123456789").await.unwrap_err();
    assert!(
        matches!(error, StoreError::KeyTooLong { len: 9, max: 8 }),
        "{error:?}"
    );
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    store.get(b"12345678").await.unwrap();
}

// ---------------------------------------------------------------------------
// Handoff and snapshots.

#[tokio::test]
async fn install_takes_only_versions_newer_than_the_one_held() {
    let (store, _) = text_store(small(100, 1_000));
    let install = |version, value: &str| store.install(b"k", Versioned::new(version, value.into()));
    assert_eq!(install(5, "five").await.unwrap(), Installed::Inserted);
    assert_eq!(
        install(3, "three").await.unwrap(),
        Installed::Stale { held: 5 }
    );
    assert_eq!(
        install(5, "other five").await.unwrap(),
        Installed::Stale { held: 5 }
    );
    assert_eq!(
        install(7, "seven").await.unwrap(),
        Installed::Replaced { previous: 5 }
    );
    assert_eq!(
        store.get(b"k").await.unwrap(),
        Versioned::new(7, "seven".to_owned())
    );
    assert_eq!(
        store.update(b"k", |s| s.push('!')).await.unwrap().version,
        8
    );
    let too_large = store
        .install(b"k", Versioned::new(9, fill('x', 101)))
        .await
        .unwrap_err();
    assert!(matches!(too_large, StoreError::TooLarge { .. }));
    assert_eq!(store.total_bytes(), "seven!".len());
}

#[tokio::test]
async fn hand_off_leaves_a_tombstone_that_answers_moved_until_it_expires() {
    let clock = ManualClock::new();
    let persistence = Recording::new();
    let store = SessionStore::builder(JsonCodec, String::len)
        .limits(small(100, 1_000))
        .persistence(persistence.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    store.update(b"k", |s| s.push_str("state")).await.unwrap();
    let handed = store
        .hand_off(b"k", None, "chat-2-x7k", Duration::from_secs(30))
        .await
        .unwrap();
    let HandOff::State(record) = handed else {
        panic!("expected the state, got {handed:?}");
    };
    assert_eq!((record.version, record.dirty), (1, true));
    assert_eq!(&record.value[..], br#""state""#);
    assert_eq!(store.stats().sessions, 0);
    assert_eq!(store.total_bytes(), 0);
    for error in [
        store.get(b"k").await.unwrap_err(),
        store.update(b"k", String::clear).await.unwrap_err(),
    ] {
        let StoreError::Moved { owner, .. } = &error else {
            panic!("expected Moved, got {error:?}");
        };
        assert_eq!(owner, "chat-2-x7k");
        assert_eq!(error.status(), StatusCode::MISDIRECTED_REQUEST);
    }
    assert!(
        !persistence
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Store(..))),
        "a handoff writes nothing back"
    );
    // A stale pre-copy cannot resurrect the session; the same version can
    // (the key is coming back).
    let stale = store.install(b"k", Versioned::new(0, String::new())).await;
    assert_eq!(stale.unwrap(), Installed::Stale { held: 1 });
    clock.advance(Duration::from_secs(30));
    // Expired: the key is served again (loaded: nothing was stored).
    assert_eq!(store.get(b"k").await.unwrap().version, 0);
    // A receiver already holding the latest version gets "unchanged".
    store.update(b"j", |s| s.push('j')).await.unwrap();
    let unchanged = store
        .hand_off(b"j", Some(1), "chat-2-x7k", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(unchanged, HandOff::Unchanged { version: 1 });
    let absent = store
        .hand_off(b"never", None, "chat-2-x7k", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(absent, HandOff::NotResident);
    assert!(matches!(
        store.get(b"never").await,
        Err(StoreError::Moved { .. })
    ));
    assert_eq!(store.stats().tombstones, 2);
}

#[tokio::test]
async fn hand_off_waits_for_the_running_update_and_exports_its_result() {
    let (store, _) = text_store(small(100, 1_000));
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .update_async(b"k", |s| async move {
                    entered_tx.send(()).unwrap();
                    released.await.unwrap();
                    Ok::<_, Infallible>((s + "written", ()))
                })
                .await
        }
    });
    entered.await.unwrap();
    let mut handing = pin!(store.hand_off(b"k", None, "pod-b", Duration::from_secs(5)));
    assert!(poll!(&mut handing).is_pending());
    release.send(()).unwrap();
    writer.await.unwrap().unwrap().unwrap();
    let HandOff::State(record) = handing.await.unwrap() else {
        panic!("expected the state");
    };
    assert_eq!(record.version, 1);
    assert_eq!(&record.value[..], br#""written""#);
}

#[tokio::test]
async fn export_and_install_record_carry_a_session_between_stores() {
    let (old, _) = text_store(small(100, 1_000));
    let (new, _) = text_store(small(100, 1_000));
    old.update(b"k", |s| s.push_str("abc")).await.unwrap();
    old.update(b"k", |s| s.push_str("def")).await.unwrap();
    assert_eq!(old.export(b"missing").await.unwrap(), None);
    let record = old.export(b"k").await.unwrap().unwrap();
    assert_eq!(
        new.install_record(&record).await.unwrap(),
        Installed::Inserted
    );
    assert_eq!(
        new.get(b"k").await.unwrap(),
        Versioned::new(2, "abcdef".to_owned())
    );
    assert_eq!(
        old.version_of(b"k").await,
        Some(2),
        "export leaves it in place"
    );
    let mut garbage = record.clone();
    garbage.version = 3;
    garbage.value = bytes::Bytes::from_static(b"{not json");
    let error = new.install_record(&garbage).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Codec {
                action: "decode",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn snapshot_and_restore_round_trip_every_session_with_versions_and_dirty_flags() {
    let (before, persistence) = text_store(small(100, 1_000));
    before.update(b"a", |s| s.push('a')).await.unwrap();
    before.update(b"b", |s| s.push('b')).await.unwrap();
    before.update(b"b", |s| s.push('b')).await.unwrap();
    before.get(b"fresh").await.unwrap();
    assert_eq!(before.flush().await.written, 2);
    before.update(b"a", |s| s.push('a')).await.unwrap(); // dirty again
    assert_eq!(persistence.stored(b"a").unwrap().version, 1);
    let records: Vec<_> = before.snapshot().map(Result::unwrap).collect().await;
    let mut summary: Vec<_> = records
        .iter()
        .map(|r| (r.key.to_vec(), r.version, r.dirty))
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        [
            (b"a".to_vec(), 2, true),
            (b"b".to_vec(), 2, false),
            (b"fresh".to_vec(), 0, false)
        ]
    );
    let (after, _) = text_store(small(100, 1_000));
    let restored = after.restore(stream::iter(records.clone())).await;
    assert_eq!((restored.inserted, restored.failed), (3, 0));
    assert_eq!(
        after.get(b"a").await.unwrap(),
        Versioned::new(2, "aa".to_owned())
    );
    assert_eq!(after.total_bytes(), before.total_bytes());
    let again = after.restore(stream::iter(records)).await;
    assert_eq!(again.stale, 3);
    // Only the session that was dirty before the restart is written back.
    let flushed = after.flush().await;
    assert_eq!((flushed.written, flushed.clean), (1, 2));
}

#[tokio::test]
async fn a_restore_past_the_bounds_reports_refusals_and_keeps_going() {
    let (source, _) = text_store(small(100, 1_000));
    for key in ["a", "b", "c"] {
        source
            .update(key.as_bytes(), |s| *s = fill('x', 60))
            .await
            .unwrap();
    }
    let records: Vec<_> = source.snapshot().map(Result::unwrap).collect().await;
    // The target has room for one 60-byte session, and nothing evictable.
    let (target, persistence) = text_store(small(100, 100));
    persistence.fail_stores(true);
    let report = target.restore(stream::iter(records)).await;
    assert_eq!((report.inserted, report.failed), (1, 2));
    assert!(matches!(report.errors[0].1, StoreError::Full { .. }));
    assert_eq!(target.total_bytes(), 60);
}

// ---------------------------------------------------------------------------
// Randomised concurrency: every operation at once under tight bounds.

/// A tiny deterministic generator (xorshift64*), one per task.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_operations_keep_the_accounting_exact_and_bounded() {
    let (store, persistence) = text_store(
        small(100, 600)
            .to_builder()
            .max_sessions(12)
            .max_pending_updates(3)
            .idle_timeout(Duration::from_millis(1))
            .write_back_backoff(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..4_u64)
        .map(|seed| {
            let (store, persistence) = (store.clone(), persistence.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1));
                for _ in 0..400 {
                    let key = format!("k{}", rng.below(20));
                    let key = key.as_bytes();
                    let n = usize::try_from(rng.below(40)).unwrap();
                    let outcome = match rng.below(10) {
                        0..=3 => store
                            .update(key, |s| {
                                if s.len() + n > 100 {
                                    s.truncate(n);
                                } else {
                                    s.push_str(&fill('x', n));
                                }
                            })
                            .await
                            .map(drop),
                        4 => store.get(key).await.map(drop),
                        5 => store
                            .install(key, Versioned::new(rng.below(30), fill('i', n)))
                            .await
                            .map(drop),
                        6 => store
                            .hand_off(key, None, "elsewhere", Duration::from_millis(rng.below(3)))
                            .await
                            .map(drop),
                        7 => {
                            store.passivate_idle().await;
                            Ok(())
                        }
                        8 => {
                            persistence.fail_stores(rng.below(2) == 0);
                            Ok(())
                        }
                        _ => store.export(key).await.map(drop),
                    };
                    if let Err(error) = outcome {
                        assert!(
                            matches!(
                                error,
                                StoreError::Busy { .. }
                                    | StoreError::Full { .. }
                                    | StoreError::Moved { .. }
                                    | StoreError::LoadsSaturated { .. }
                            ),
                            "unexpected {error:?}"
                        );
                    }
                    let stats = store.stats();
                    assert!(stats.bytes <= 600, "{stats:?}");
                    assert!(stats.sessions + stats.loading <= 12, "{stats:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    persistence.fail_stores(false);
    assert_bytes_exact(&store).await;
    assert_eq!(store.flush().await.failed, 0);
    // The mix reached the bounds and the failure paths, not just the happy one.
    let text = metrics_text(&store);
    for series in [
        r#"store_rejections_total{reason="full"}"#,
        r#"store_rejections_total{reason="moved"}"#,
        r#"store_evictions_total{reason="pressure"}"#,
        r#"store_evictions_total{reason="handoff"}"#,
        r#"store_write_backs_total{result="failed"}"#,
    ] {
        assert!(sample(&text, series) > 0, "{series} never happened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_across_pressure_eviction_and_passivation() {
    // 20 keys of up to 90 bytes in 300 bytes: sessions are written back and
    // reloaded all the time, by pressure and by a concurrent sweeper.
    let (store, persistence) = text_store(
        small(100, 300)
            .to_builder()
            .idle_timeout(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let sweeper = tokio::spawn({
        let store = store.clone();
        async move {
            loop {
                store.passivate_idle().await;
                tokio::task::yield_now().await;
            }
        }
    });
    let writers: Vec<_> = (0..4_u64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (writer + 1));
                // Each writer owns 5 keys, so its own order of acknowledged
                // writes is the order of every write to them.
                let mut expected: HashMap<String, Versioned<String>> = HashMap::new();
                for _ in 0..300 {
                    let key = format!("w{writer}-{}", rng.below(5));
                    let c = char::from(b'a' + u8::try_from(rng.below(26)).unwrap());
                    match store
                        .update(key.as_bytes(), |s| {
                            if s.len() >= 90 {
                                s.clear();
                            }
                            s.push(c);
                            s.clone()
                        })
                        .await
                    {
                        Ok(done) => {
                            expected.insert(key, done);
                        }
                        Err(StoreError::Full { .. }) => {}
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
                expected
            })
        })
        .collect();
    let mut expected = HashMap::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    sweeper.abort();
    let _ = sweeper.await;
    assert!(persistence.calls().len() > 100, "eviction was exercised");
    for (key, acknowledged) in expected {
        assert_eq!(
            store.get(key.as_bytes()).await.unwrap(),
            acknowledged,
            "{key}"
        );
    }
    assert_bytes_exact(&store).await;
}

// ---------------------------------------------------------------------------
// Pressure eviction under concurrent requests.
//
// A request that needs room evicts idle sessions for itself. `Full` is only
// allowed when no resident session can be evicted: each is in use (locked, or
// with updates queued), being evicted for another request, or pinned by the
// backoff of a failed write-back. A request holds at most one session at a
// time, so while fewer requests than `max_sessions` are in flight and the
// persistence never fails, some resident session is idle whenever a request
// needs room: no request may get `Full`.

/// What a [`contend`] run observed.
struct Contention {
    /// Acknowledged increments per key.
    acknowledged: HashMap<String, u64>,
    /// Requests answered `Full`.
    full: usize,
}

/// `tasks` tasks send `ops` requests each (one read in five, otherwise an
/// increment) for random keys out of `keys`, at most `in_flight` requests at
/// once over all tasks. Every answer other than `Full` must be a success, and
/// the session bound must hold after every request.
async fn contend<P: Persistence<u64>>(
    store: &SessionStore<u64, P>,
    tasks: u64,
    in_flight: usize,
    keys: u64,
    ops: usize,
) -> Contention {
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let max_sessions = store.limits().max_sessions();
    let runs: Vec<_> = (0..tasks)
        .map(|task| {
            let (store, permits) = (store.clone(), permits.clone());
            tokio::spawn(async move {
                let mut rng = Rng(0xA076_1D64_78BD_642F ^ (task + 1));
                let mut acknowledged: HashMap<String, u64> = HashMap::new();
                let mut full = 0;
                for _ in 0..ops {
                    let key = format!("s{}", rng.below(keys));
                    let read = rng.below(5) == 0;
                    let permit = permits.acquire().await.unwrap();
                    let outcome = if read {
                        store.get(key.as_bytes()).await.map(drop)
                    } else {
                        store.update(key.as_bytes(), |n| *n += 1).await.map(drop)
                    };
                    drop(permit);
                    match outcome {
                        Ok(()) if !read => *acknowledged.entry(key).or_default() += 1,
                        Ok(()) => {}
                        Err(StoreError::Full { .. }) => full += 1,
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                    let stats = store.stats();
                    assert!(stats.sessions + stats.loading <= max_sessions, "{stats:?}");
                }
                (acknowledged, full)
            })
        })
        .collect();
    let mut seen = Contention {
        acknowledged: HashMap::new(),
        full: 0,
    };
    for run in runs {
        let (acknowledged, full) = run.await.unwrap();
        for (key, n) in acknowledged {
            *seen.acknowledged.entry(key).or_default() += n;
        }
        seen.full += full;
    }
    seen
}

fn eight_sessions() -> Limits {
    Limits::builder()
        .max_sessions(8)
        .persistence_timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_request_short_of_room_waits_for_an_eviction_in_progress_instead_of_giving_up() {
    let (store, persistence) = text_store(
        small(100, 1_000)
            .to_builder()
            .max_sessions(1)
            .build()
            .unwrap(),
    );
    store.update(b"a", |s| s.push('a')).await.unwrap();
    persistence.hold_stores(true);
    // c needs a's place: its request claims a and writes it back (held).
    let for_c = tokio::spawn({
        let store = store.clone();
        async move { store.update(b"c", |s| s.push('c')).await }
    });
    persistence.stores_started(1).await;
    // d needs a place too, and a is the only session: d's request waits for
    // that eviction to end rather than answering Full.
    let mut for_d = pin!(store.update(b"d", |s| s.push('d')));
    assert!(poll!(&mut for_d).is_pending(), "answered at once");
    // c's request goes away mid-write-back: its claim ends, a stays (still
    // changed), and d's request evicts a itself.
    for_c.abort();
    assert!(for_c.await.unwrap_err().is_cancelled());
    let (for_d, ()) = tokio::join!(for_d, async {
        persistence.stores_started(2).await;
        persistence.hold_stores(false);
    });
    assert_eq!(for_d.unwrap(), Versioned::new(1, ()));
    assert_eq!(
        persistence.stored(b"a"),
        Some(Versioned::new(1, "a".into()))
    );
    assert_eq!(store.version_of(b"a").await, None);
    assert_eq!(store.version_of(b"c").await, None, "c never started");
    assert_eq!(store.stats().sessions, 1);
    assert_eq!(
        persistence.calls(),
        [
            Call::Load(b"a".to_vec()),
            Call::Store(b"a".to_vec(), 1),
            Call::Store(b"a".to_vec(), 1),
            Call::Load(b"d".to_vec()),
        ]
    );
    assert_bytes_exact(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_needing_room_at_once_get_no_full_while_idle_sessions_exist() {
    // The sample service's set-up on one pod: 8 sessions, 60 keys, 6
    // requests in flight (16 tasks), then 7 requests from 7 tasks.
    let store = counter_store(eight_sessions());
    let six = contend(&store, 16, 6, 60, 150).await;
    let seven = contend(&store, 7, 7, 60, 300).await;
    assert_eq!((six.full, seven.full), (0, 0), "Full with idle sessions");
    let text = metrics_text(&store);
    assert!(
        sample(&text, r#"store_evictions_total{reason="pressure"}"#) > 1_000,
        "pressure eviction was exercised"
    );
    let stats = store.stats();
    assert_eq!((stats.sessions, stats.loading), (8, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pressure_eviction_writes_back_and_loses_no_acknowledged_write() {
    // Loads and write-backs take a few scheduler turns, so evictions overlap
    // other requests' lookups, loads and evictions.
    let persistence = Recording::new();
    persistence.yield_in_calls(3);
    let store = SessionStore::builder(JsonCodec, |_: &u64| 8)
        .limits(eight_sessions())
        .persistence(persistence.clone())
        .build()
        .unwrap();
    let six = contend(&store, 16, 6, 60, 150).await;
    assert_eq!(six.full, 0, "Full with idle sessions");
    // 16 requests in flight for 8 sessions: all 8 may be in use at once, so
    // `Full` is allowed, but nothing acknowledged may be lost.
    let sixteen = contend(&store, 16, 16, 60, 150).await;
    let text = metrics_text(&store);
    assert!(sample(&text, r#"store_write_backs_total{result="ok"}"#) > 1_000);
    assert_eq!(
        sample(&text, r#"store_write_backs_total{result="failed"}"#),
        0
    );
    let mut acknowledged = six.acknowledged;
    for (key, n) in sixteen.acknowledged {
        *acknowledged.entry(key).or_default() += n;
    }
    assert!(acknowledged.len() > 50);
    for (key, n) in acknowledged {
        // Every increment is one version: the count and the version agree
        // with the acknowledged increments, resident or reloaded.
        assert_eq!(
            store.get(key.as_bytes()).await.unwrap(),
            Versioned::new(n, n),
            "{key}"
        );
    }
    let stats = store.stats();
    assert!(stats.sessions <= 8, "{stats:?}");
}

// ---------------------------------------------------------------------------
// The futures can cross threads (axum handlers need Send).

#[test]
fn store_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let (store, _) = text_store(Limits::default());
    is_send(&store.get(b"k"));
    is_send(&store.update(b"k", String::clear));
    is_send(&store.update_async(b"k", |s| async move { Ok::<_, Infallible>((s, ())) }));
    is_send(&store.install(b"k", Versioned::new(1, String::new())));
    is_send(&store.hand_off(b"k", None, "p", Duration::from_secs(1)));
    is_send(&store.passivate_idle());
    is_send(&store.flush());
    is_send(&store.snapshot());
}

// ---------------------------------------------------------------------------
// Guarded loads and records written through (fencing, docs/adr/0001-fencing.md).

#[tokio::test]
async fn a_load_guard_refuses_loads_of_keys_owned_elsewhere_but_not_resident_sessions() {
    let (store, persistence) = text_store(Limits::default());
    persistence.put(b"theirs", 4, "stored".into());
    store.update(b"mine", |s| s.push('x')).await.unwrap();
    let owner_of_theirs: Arc<str> = "pod-b".into();
    assert!(store.guard_loads(Arc::new(move |key: &[u8]| {
        if key == b"theirs" {
            Err(Arc::clone(&owner_of_theirs))
        } else {
            Ok(0)
        }
    })));
    assert!(
        !store.guard_loads(Arc::new(|_: &[u8]| Ok(0))),
        "a second guard is refused"
    );
    match store.get(b"theirs").await {
        Err(StoreError::Moved { owner, .. }) => assert_eq!(owner, "pod-b"),
        other => panic!("expected Moved, got {other:?}"),
    }
    assert!(
        !persistence
            .calls()
            .contains(&Call::Load(b"theirs".to_vec())),
        "nothing was loaded"
    );
    // Resident sessions and keys the guard lets through are served as before.
    assert_eq!(store.get(b"mine").await.unwrap().value, "x");
    assert_eq!(store.get(b"other").await.unwrap().version, 0);
}

#[tokio::test]
async fn a_record_written_through_never_replaces_a_newer_stored_version() {
    let (store, persistence) = text_store(Limits::default());
    store.update(b"k", |s| s.push_str("ab")).await.unwrap();
    store.update(b"k", |s| s.push('c')).await.unwrap();
    let HandOff::State(record) = store
        .hand_off(b"k", None, "pod-b", Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!("expected the state");
    };
    assert_eq!(record.version, 2);
    assert!(store.write_record(&record).await.unwrap());
    assert_eq!(persistence.stored(b"k").unwrap().value, "abc");
    // The new owner wrote version 5 since; the late write-through of
    // version 2 must not put the older state back.
    persistence.put(b"k", 5, "newer".into());
    assert!(store.write_record(&record).await.unwrap());
    assert_eq!(
        persistence.stored(b"k").unwrap(),
        Versioned::new(5, "newer".into())
    );
    // Without a durable persistence nothing is written, and it says so.
    let counters = counter_store(Limits::default());
    counters.update(b"n", |n| *n += 1).await.unwrap();
    let HandOff::State(record) = counters
        .hand_off(b"n", None, "pod-b", Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!("expected the state");
    };
    assert!(!counters.write_record(&record).await.unwrap());
}

// ---------------------------------------------------------------------------
// Ownership epochs (docs/adr/0001-fencing.md, "Ownership epochs").

/// A guard that says this pod owns every key under ring version `epoch`,
/// except `theirs`.
fn owner_at(epoch: u64) -> locus::store::LoadGuard {
    Arc::new(move |key: &[u8]| {
        if key == b"theirs" {
            Err("pod-b".into())
        } else {
            Ok(epoch)
        }
    })
}

#[tokio::test]
async fn write_backs_carry_the_epoch_of_the_ring_the_session_was_loaded_under() {
    let (store, persistence) = text_store(Limits::default());
    persistence.put_stamped(b"k", Stamp::new(3, 4), "old".into());
    assert!(store.guard_loads(owner_at(7)));
    let done = store.update(b"k", |s| s.push('!')).await.unwrap();
    // The answer says under which epoch the write was made (a fencing token).
    assert_eq!((done.version, done.epoch), (5, 7));
    assert_eq!(store.get(b"k").await.unwrap().epoch, 7);
    store.flush().await;
    assert_eq!(
        persistence.held(b"k").unwrap(),
        Stored::new(Stamp::new(7, 5), "old!".into())
    );
    // A session new to the persistence is written under the same epoch.
    store.update(b"fresh", |s| s.push('x')).await.unwrap();
    store.flush().await;
    assert_eq!(persistence.held(b"fresh").unwrap().stamp, Stamp::new(7, 1));
}

#[tokio::test]
async fn a_session_stored_under_a_newer_epoch_is_refused_not_served() {
    let (store, persistence) = text_store(Limits::default());
    persistence.put_stamped(b"k", Stamp::new(9, 2), "the new owner's".into());
    assert!(store.guard_loads(owner_at(7)));
    let error = store.get(b"k").await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fenced {
                stored: 9,
                own: 7,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.retry_after().is_some());
    assert_eq!(store.stats().sessions, 0, "nothing was made resident");
    // Nothing was written either: the row is the new owner's.
    assert_eq!(
        persistence.held(b"k").unwrap(),
        Stored::new(Stamp::new(9, 2), "the new owner's".into())
    );
}

#[tokio::test]
async fn installs_take_the_higher_of_the_records_epoch_and_the_rings() {
    let (sender, persistence) = text_store(Limits::default());
    assert!(sender.guard_loads(owner_at(4)));
    for key in [&b"mine"[..], b"theirs"] {
        sender
            .install(key, Versioned::new(2, "sent".into()))
            .await
            .unwrap();
    }
    // "mine" is held under the sender's epoch 4; "theirs", which the sender
    // does not own, under the epoch it was installed with (0).
    let mut records = Vec::new();
    for key in [&b"mine"[..], b"theirs"] {
        let HandOff::State(record) = sender
            .hand_off(key, None, "pod-b", Duration::from_secs(1))
            .await
            .unwrap()
        else {
            panic!("expected the state");
        };
        records.push(record);
    }
    assert_eq!((records[0].epoch, records[1].epoch), (4, 0));

    // The receiver shares the persistence, as the pods of a service do.
    let receiver = SessionStore::builder(JsonCodec, String::len)
        .persistence(persistence.clone())
        .build()
        .unwrap();
    assert!(receiver.guard_loads(owner_at(9)));
    for record in &records {
        receiver.install_record(record).await.unwrap();
    }
    receiver.flush().await;
    // Owned under ring 9: written under 9. Not owned: the record's epoch.
    assert_eq!(persistence.held(b"mine").unwrap().stamp, Stamp::new(9, 2));
    assert_eq!(persistence.held(b"theirs").unwrap().stamp, Stamp::new(0, 2));
    // A drain's write-through carries the sender's epoch: it never replaces
    // what the receiver wrote under its higher one.
    assert!(sender.write_record(&records[0]).await.unwrap());
    assert_eq!(persistence.held(b"mine").unwrap().stamp, Stamp::new(9, 2));
}
