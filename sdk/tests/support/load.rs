//! The workload: workers appending unique elements to random sessions, each
//! op recorded in a [`History`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::checker::{History, Op, Outcome};

/// A running workload.
pub struct Load {
    pub history: History,
    stop: watch::Sender<bool>,
    acked: watch::Receiver<u64>,
    workers: Vec<JoinHandle<()>>,
}

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

impl Load {
    /// Starts `workers` workers over `sessions` sessions; `append(session,
    /// element)` appends `element` to the session's list. Every request gets
    /// a fresh element (from 1 on, unique across sessions and workers),
    /// retries after a refusal or an unknown outcome included.
    pub fn start<F, Fut>(workers: usize, sessions: usize, seed: u64, append: F) -> Self
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send,
    {
        let history = History::default();
        let (stop, stopped) = watch::channel(false);
        let (acked_tx, acked) = watch::channel(0u64);
        let acked_tx = Arc::new(acked_tx);
        let append = Arc::new(append);
        let elements = Arc::new(AtomicU64::new(1));
        let count = workers;
        let workers = (0..count)
            .map(|w| {
                let workers = count;
                let history = history.clone();
                let stopped = stopped.clone();
                let append = Arc::clone(&append);
                let elements = Arc::clone(&elements);
                let acked_tx = Arc::clone(&acked_tx);
                let mut rng = Rng::new(seed ^ ((w as u64 + 1) * 7919));
                tokio::spawn(async move {
                    // First every session once (this worker's share), so all
                    // exist before anything moves; then random ones.
                    let mut first = (w..sessions).step_by(workers);
                    while !*stopped.borrow() {
                        let session = first
                            .next()
                            .unwrap_or_else(|| rng.below(sessions as u64) as usize);
                        let element = elements.fetch_add(1, Ordering::Relaxed);
                        let started = Instant::now();
                        let outcome = append(session, element).await;
                        let ended = Instant::now();
                        let ok = matches!(outcome, Outcome::Acked { .. });
                        history.record(Op {
                            session,
                            element,
                            started,
                            ended,
                            outcome,
                        });
                        if ok {
                            acked_tx.send_modify(|n| *n += 1);
                        } else {
                            // Refused or unknown: back off a little before
                            // the next append (a real client's retry, with a
                            // new element).
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            history,
            stop,
            acked,
            workers,
        }
    }

    /// Waits until `more` further appends were acknowledged.
    pub async fn progress(&self, more: u64) {
        let mut acked = self.acked.clone();
        let target = *acked.borrow() + more;
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            acked.wait_for(|n| *n >= target),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(
            waited,
            "the workload made no progress ({} acknowledged, waiting for {target})",
            *self.acked.borrow()
        );
    }

    /// Stops the workers and waits for their last requests.
    pub async fn stop(self) -> History {
        self.stop.send_replace(true);
        for worker in self.workers {
            worker.await.unwrap();
        }
        self.history
    }
}
