//! The writing half every source shares: accept a ring if it is valid and
//! strictly newer, refuse it otherwise, log and count either way.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::{HeldRing, Rejection, RingWatch, SourceStatus};
use crate::metrics::Metrics;
use crate::ring::{Ring, RingDocument};

/// Holds the sending side of the ring and status channels.
#[derive(Debug)]
pub(crate) struct RingPublisher {
    ring: watch::Sender<Option<HeldRing>>,
    status: watch::Sender<SourceStatus>,
    metrics: Option<Metrics>,
    /// `namespace/service` the rings must be for, if the source knows it.
    expected: Option<(String, String)>,
    /// What the source reads, for log lines (`file /etc/ring.json`).
    origin: String,
}

impl RingPublisher {
    pub(crate) fn new(
        origin: String,
        expected: Option<(String, String)>,
        metrics: Option<Metrics>,
    ) -> Self {
        Self {
            ring: watch::Sender::new(None),
            status: watch::Sender::new(SourceStatus::default()),
            metrics,
            expected,
            origin,
        }
    }

    pub(crate) fn watch(&self) -> RingWatch {
        RingWatch::new(self.ring.subscribe())
    }

    pub(crate) fn status(&self) -> watch::Receiver<SourceStatus> {
        self.status.subscribe()
    }

    /// Parses and offers a document.
    pub(crate) fn offer_document(&self, bytes: &[u8]) -> Result<u64, Rejection> {
        match RingDocument::from_json(bytes) {
            Ok(ring) => self.offer(ring),
            Err(error) => {
                let rejection = Rejection::Invalid(error);
                self.refused(&rejection);
                Err(rejection)
            }
        }
    }

    /// Offers a validated ring; takes it only if it is strictly newer than
    /// the held one (or none is held). Returns the held version after.
    pub(crate) fn offer(&self, ring: Ring) -> Result<u64, Rejection> {
        if let Some((namespace, service)) = &self.expected
            && (ring.namespace() != namespace || ring.service() != service)
        {
            let rejection = Rejection::WrongService {
                expected: format!("{namespace}/{service}"),
                found: format!("{}/{}", ring.namespace(), ring.service()),
            };
            self.refused(&rejection);
            return Err(rejection);
        }
        let version = ring.version();
        let received_at = Instant::now();
        let mut outcome = Ok(version);
        // The comparison and the swap happen under the channel's write lock,
        // so two concurrent offers cannot both win; the lock covers no I/O.
        self.ring.send_if_modified(|held| {
            match held {
                Some(current) if !ring.is_newer_than(&current.ring) => {
                    let held_version = current.ring.version();
                    outcome = Err(if held_version > version {
                        Rejection::Older {
                            held: held_version,
                            offered: version,
                        }
                    } else if *current.ring == ring {
                        Rejection::Unchanged { version }
                    } else {
                        Rejection::Conflict { version }
                    });
                    return false;
                }
                _ => {}
            }
            *held = Some(HeldRing {
                ring: Arc::new(ring),
                received_at,
            });
            true
        });
        match &outcome {
            Ok(version) => {
                tracing::info!(origin = %self.origin, version, "ring loaded");
                if let Some(metrics) = &self.metrics {
                    metrics.ring_accepted(*version, received_at);
                }
                self.status.send_modify(|s| {
                    s.accepted += 1;
                    s.version = Some(*version);
                });
            }
            Err(Rejection::Unchanged { version }) => {
                tracing::debug!(origin = %self.origin, version, "ring document unchanged");
                self.status.send_modify(|s| s.unchanged += 1);
            }
            Err(rejection) => self.refused(rejection),
        }
        outcome
    }

    /// Logs and counts a refused document; the held ring stays.
    pub(crate) fn refused(&self, rejection: &Rejection) {
        let reason = rejection.metric_label();
        let held = self.ring.borrow().as_ref().map(|h| h.ring.version());
        tracing::warn!(
            origin = %self.origin,
            reason,
            held_version = ?held,
            error = %rejection,
            "ring document rejected; keeping the last good ring"
        );
        if let Some(metrics) = &self.metrics {
            metrics.ring_rejected(reason);
        }
        let message = rejection.to_string();
        self.status.send_modify(|s| {
            s.rejected += 1;
            s.last_problem = Some(message);
        });
    }

    /// Logs and counts a failure to fetch a document.
    pub(crate) fn fetch_failed(&self, error: &dyn std::error::Error) {
        let held = self.ring.borrow().as_ref().map(|h| h.ring.version());
        tracing::warn!(
            origin = %self.origin,
            held_version = ?held,
            %error,
            "cannot read the ring document; keeping the last good ring"
        );
        let message = error.to_string();
        self.status.send_modify(|s| {
            s.errors += 1;
            s.last_problem = Some(message);
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ring::{Assignment, Pod, RingParts, ShardCount, Slot, SlotState, Transition};

    pub(crate) fn ring(service: &str, version: u64, pods: &[&str]) -> Ring {
        let slots = pods
            .iter()
            .enumerate()
            .map(|(i, name)| Slot {
                index: i as u16,
                pod: Pod {
                    name: (*name).to_owned(),
                    uid: format!("uid-{name}"),
                    address: format!("10.0.0.{}:8080", i + 1).parse().unwrap(),
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
            .collect::<Vec<_>>();
        let shards = ShardCount::new(16).unwrap();
        let table = (0..16).map(|s| (s % pods.len()) as u16).collect();
        Ring::new(RingParts {
            namespace: "default".into(),
            service: service.into(),
            version,
            shards,
            vnodes: 8,
            slots,
            current: Assignment::new(table).unwrap(),
            transition: Transition::Stable,
        })
        .unwrap()
    }

    fn publisher(metrics: &Metrics) -> RingPublisher {
        RingPublisher::new(
            "test".into(),
            Some(("default".into(), "chat".into())),
            Some(metrics.clone()),
        )
    }

    #[test]
    fn takes_only_strictly_newer_rings() {
        let metrics = Metrics::new();
        let p = publisher(&metrics);
        let watch = p.watch();
        assert_eq!(p.offer(ring("chat", 2, &["a", "b"])).unwrap(), 2);
        assert!(matches!(
            p.offer(ring("chat", 1, &["a"])),
            Err(Rejection::Older {
                held: 2,
                offered: 1
            })
        ));
        assert!(matches!(
            p.offer(ring("chat", 2, &["a", "b"])),
            Err(Rejection::Unchanged { version: 2 })
        ));
        assert!(matches!(
            p.offer(ring("chat", 2, &["a", "c"])),
            Err(Rejection::Conflict { version: 2 })
        ));
        assert_eq!(watch.version(), Some(2));
        assert_eq!(watch.latest().unwrap().slots()[1].pod.name, "b");
        assert_eq!(p.offer(ring("chat", 3, &["c"])).unwrap(), 3);
        assert_eq!(watch.latest().unwrap().slots()[0].pod.name, "c");
        let status = p.status().borrow().clone();
        assert_eq!(
            (
                status.accepted,
                status.unchanged,
                status.rejected,
                status.version
            ),
            (2, 1, 2, Some(3))
        );
        assert_eq!(metrics.rejected_total("older"), 1);
        assert_eq!(metrics.rejected_total("conflict"), 1);
        assert_eq!(metrics.rejected_total("unchanged"), 0);
        assert_eq!(metrics.ring_version(), 3);
    }

    #[test]
    fn refuses_malformed_documents_and_other_services() {
        let metrics = Metrics::new();
        let p = publisher(&metrics);
        p.offer(ring("chat", 5, &["a"])).unwrap();
        assert!(matches!(
            p.offer_document(b"{not json"),
            Err(Rejection::Invalid(_))
        ));
        assert!(matches!(
            p.offer(ring("other", 9, &["a"])),
            Err(Rejection::WrongService { .. })
        ));
        let document = RingDocument::to_json(&ring("chat", 6, &["z"])).unwrap();
        assert_eq!(p.offer_document(&document).unwrap(), 6);
        assert_eq!(metrics.rejected_total("malformed"), 1);
        assert_eq!(metrics.rejected_total("service"), 1);
        let status = p.status().borrow().clone();
        assert_eq!(status.rejected, 2);
        assert_eq!(p.watch().version(), Some(6));
    }

    #[tokio::test]
    async fn waiters_wake_on_a_new_enough_ring() {
        let p = publisher(&Metrics::new());
        let watch = p.watch();
        let waiter = tokio::spawn({
            let watch = watch.clone();
            async move {
                watch
                    .wait_for_version(3, std::time::Duration::from_secs(10))
                    .await
            }
        });
        p.offer(ring("chat", 2, &["a"])).unwrap();
        p.offer(ring("chat", 3, &["b"])).unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.version(), 3);
        // A timeout gives `None`.
        assert!(
            watch
                .wait_for_version(4, std::time::Duration::from_millis(10))
                .await
                .is_none()
        );
    }
}
