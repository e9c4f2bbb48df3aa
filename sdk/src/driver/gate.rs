//! The in-flight gate: which requests are being served, under which ring.
//!
//! Every request the session layer serves holds a [`Pass`] for its whole
//! duration. A pass is taken under the gate's lock *together with* reading
//! the latest ring, and records that ring's version. So once the driver has
//! seen ring `V`, every request admitted afterwards decided ownership under
//! a ring `>= V`, and [`Gate::wait_below`] tells when the requests admitted
//! under older rings — the only ones that may still touch a key this pod just
//! lost — are finished. The drain starts after that, so no stale request can
//! load or change a lost key behind it.
//!
//! The gate also bounds requests in flight (503 past the bound) and, at
//! shutdown, closes (503 to new requests) and waits for the pod to go idle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::ring::Ring;
use crate::source::RingWatch;

/// Why the gate refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The pod is shutting down.
    Closed,
    /// The bound of requests in flight is reached.
    Full,
}

#[derive(Default)]
struct Inner {
    by_version: BTreeMap<u64, usize>,
    total: usize,
    /// Requests admitted since the gate was made.
    admitted: u64,
    closed: bool,
}

/// See the [module docs](self).
pub(crate) struct Gate {
    inner: Mutex<Inner>,
    changed: Notify,
    max: usize,
}

/// One admitted request; leaves the gate on drop.
pub(crate) struct Pass {
    gate: Arc<Gate>,
    version: u64,
}

impl Gate {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            max,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Admits a request: reads the latest ring under the lock and records
    /// its version.
    pub(crate) fn enter(
        self: &Arc<Self>,
        ring: &RingWatch,
    ) -> Result<(Option<Arc<Ring>>, Pass), Refused> {
        self.with(|inner| {
            if inner.closed {
                return Err(Refused::Closed);
            }
            if inner.total >= self.max {
                return Err(Refused::Full);
            }
            let latest = ring.latest();
            let version = latest.as_ref().map_or(0, |r| r.version());
            *inner.by_version.entry(version).or_default() += 1;
            inner.total += 1;
            inner.admitted = inner.admitted.wrapping_add(1);
            Ok((
                latest,
                Pass {
                    gate: Arc::clone(self),
                    version,
                },
            ))
        })
    }

    /// Waits (at most `within`) until no request admitted under a ring older
    /// than `version` is in flight. True if that happened.
    pub(crate) async fn wait_below(&self, version: u64, within: Duration) -> bool {
        self.wait(within, |inner| {
            inner.by_version.range(..version).next().is_none()
        })
        .await
    }

    /// Waits (at most `within`) until no request is in flight.
    pub(crate) async fn wait_idle(&self, within: Duration) -> bool {
        self.wait(within, |inner| inner.total == 0).await
    }

    async fn wait(&self, within: Duration, done: impl Fn(&Inner) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.with(|inner| done(inner)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.with(|inner| done(inner));
            }
        }
    }

    /// Refuses every new request from now on.
    pub(crate) fn close(&self) {
        self.with(|inner| inner.closed = true);
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.with(|inner| inner.total)
    }

    /// Whether the pod is serving: requests in flight now, or `admitted`
    /// (the count this returned last) changed since; updates `admitted`.
    pub(crate) fn serving_since(&self, admitted: &mut u64) -> bool {
        self.with(|inner| {
            let arrived = inner.admitted != *admitted;
            *admitted = inner.admitted;
            arrived || inner.total > 0
        })
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.gate.with(|inner| {
            if let Some(count) = inner.by_version.get_mut(&self.version) {
                *count -= 1;
                if *count == 0 {
                    inner.by_version.remove(&self.version);
                }
            }
            inner.total -= 1;
        });
        self.gate.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{RingSource, StaticRingSource};

    fn ring(version: u64) -> Ring {
        use crate::ring::*;
        let slot = Slot {
            index: 0,
            pod: Pod {
                name: "p".into(),
                uid: "u".into(),
                address: "10.0.0.1:80".parse().unwrap(),
            },
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        };
        Ring::new(RingParts {
            namespace: "ns".into(),
            service: "svc".into(),
            version,
            shards: ShardCount::new(1).unwrap(),
            vnodes: 1,
            slots: vec![slot],
            current: Assignment::new(vec![0]).unwrap(),
            transition: Transition::Stable,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn older_requests_are_awaited_newer_ones_are_not() {
        let source = StaticRingSource::with_ring(ring(1));
        let watch = source.watch();
        let gate = Gate::new(2);
        let (seen, old) = gate.enter(&watch).unwrap();
        assert_eq!(seen.unwrap().version(), 1);
        source.publish(ring(2)).unwrap();
        let (_, new) = gate.enter(&watch).unwrap();
        assert_eq!(gate.enter(&watch).err(), Some(Refused::Full), "bound of 2");
        assert!(!gate.wait_below(2, Duration::from_millis(10)).await);
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.wait_below(2, Duration::from_secs(10)).await }
        });
        drop(old);
        assert!(waiter.await.unwrap());
        assert_eq!(gate.in_flight(), 1);
        gate.close();
        assert_eq!(gate.enter(&watch).err(), Some(Refused::Closed));
        assert!(!gate.wait_idle(Duration::from_millis(10)).await);
        drop(new);
        assert!(gate.wait_idle(Duration::from_millis(10)).await);
    }

    #[test]
    fn serving_means_requests_in_flight_or_arrived_since_last_asked() {
        let source = StaticRingSource::with_ring(ring(1));
        let watch = source.watch();
        let gate = Gate::new(4);
        let mut admitted = 0;
        assert!(!gate.serving_since(&mut admitted), "nothing yet");
        let (_, pass) = gate.enter(&watch).unwrap();
        assert!(gate.serving_since(&mut admitted), "one in flight");
        drop(pass);
        assert!(!gate.serving_since(&mut admitted), "seen, and done");
        drop(gate.enter(&watch).unwrap());
        assert!(gate.serving_since(&mut admitted), "one came and went since");
        assert!(!gate.serving_since(&mut admitted));
    }
}
