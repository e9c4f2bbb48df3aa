//! The controller's memory of when this process first saw each state a step deadline counts
//! from ([`Sightings`], one per service), the source of the planner's
//! [`FirstSeen`].
//!
//! Sightings are [`Instant`]s (the monotonic clock), converted to times on this process's wall
//! clock only when a plan is made (`now_wall - (now_instant - seen_instant)`): a wall-clock
//! step between two reconciles moves the converted sightings along with `now`, so it cannot
//! shorten a deadline. The memory is bounded by what is observed: the last ring's version and
//! phase, and the pods of the last observation (a pod no longer listed is dropped), with each
//! pod's current load report (for the report's age in the status).
//!
//! A fresh process has no sightings: its first reconcile sees every state for the first time,
//! so every deadline that is running restarts from then (never shorter; at most one more
//! timeout after a failover).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use locus_contract::ring::{Phase, Ring};
use tracing::{debug, warn};

use locus_contract::progress::ShardLoadReport;

use crate::plan::{FirstSeen, ObservedPod, PodSeen, PublishedRing, Readiness, RingSeen};

/// A recorded time this far ahead of this process's clock is logged as clock skew.
const SKEW_WARNING: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingSighting {
    version: u64,
    phase: Phase,
    at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PodSighting {
    pod: Instant,
    readiness: Readiness,
    readiness_at: Instant,
}

/// When this process first saw the published ring (version and phase) and each pod (and the
/// pod in its current readiness) of one service, on the monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct Sightings {
    ring: Option<RingSighting>,
    pods: HashMap<String, PodSighting>,
    /// Each pod's current load report and when it was first seen, by UID.
    loads: HashMap<String, (ShardLoadReport, Instant)>,
}

impl Sightings {
    /// Records what one observation saw at `at`: keeps the earlier sightings of states that
    /// did not change, starts new ones for states that did (another ring version or phase,
    /// another readiness), and drops the pods no longer observed (and the ring if none is).
    pub fn observe(&mut self, ring: Option<&PublishedRing>, pods: &[ObservedPod], at: Instant) {
        match ring {
            Some(published) => self.see_ring(published, at),
            None => self.ring = None,
        }
        let mut kept = HashMap::with_capacity(pods.len());
        for pod in pods {
            let readiness = Readiness::of(pod);
            let sighting = match self.pods.remove(&pod.uid) {
                Some(s) if s.readiness == readiness => s,
                Some(s) => PodSighting {
                    readiness,
                    readiness_at: at,
                    ..s
                },
                None => PodSighting {
                    pod: at,
                    readiness,
                    readiness_at: at,
                },
            };
            kept.insert(pod.uid.clone(), sighting);
        }
        self.pods = kept;
        let mut loads = HashMap::new();
        for pod in pods {
            let Some(Ok(report)) = &pod.progress.load else {
                continue;
            };
            let seen = match self.loads.remove(&pod.uid) {
                Some((old, seen)) if old == *report => seen,
                _ => at,
            };
            loads.insert(pod.uid.clone(), (report.clone(), seen));
        }
        self.loads = loads;
    }

    /// Records `published`, which this process published (or read) at `at`, unless it already
    /// saw that version and phase.
    pub fn see_ring(&mut self, published: &PublishedRing, at: Instant) {
        let ring = &published.ring;
        if self.ring_at(ring).is_some() {
            return;
        }
        if let Some(meta) = &published.meta {
            // Logs only: how the recorded publish time compares with this process's clock.
            let age = Timestamp::now().duration_since(meta.published_at);
            if age.is_negative() && age.unsigned_abs() > SKEW_WARNING {
                warn!(
                    service = ring.service(),
                    version = ring.version(),
                    ahead = ?age.unsigned_abs(),
                    "the ring's publish time is ahead of this process's clock: its step deadlines count from that time (longer waits)"
                );
            } else if age.is_positive() && age.unsigned_abs() > SKEW_WARNING {
                debug!(
                    service = ring.service(),
                    version = ring.version(),
                    phase = %ring.phase(),
                    age = ?age.unsigned_abs(),
                    "ring first seen by this process after its recorded publish time: its step deadlines count from now"
                );
            }
        }
        self.ring = Some(RingSighting {
            version: ring.version(),
            phase: ring.phase(),
            at,
        });
    }

    fn ring_at(&self, ring: &Ring) -> Option<Instant> {
        self.ring
            .filter(|s| s.version == ring.version() && s.phase == ring.phase())
            .map(|s| s.at)
    }

    /// The sightings as times on this process's wall clock, `now` (wall) being `at`
    /// (monotonic).
    pub fn first_seen(&self, now: Timestamp, at: Instant) -> FirstSeen {
        let wall = |seen: Instant| {
            now.saturating_sub(at.saturating_duration_since(seen))
                .unwrap_or(Timestamp::MIN)
        };
        FirstSeen {
            ring: self.ring.map(|s| RingSeen {
                version: s.version,
                phase: s.phase,
                at: wall(s.at),
            }),
            pods: self
                .pods
                .iter()
                .map(|(uid, s)| {
                    let seen = PodSeen {
                        pod: wall(s.pod),
                        readiness: s.readiness,
                        readiness_at: wall(s.readiness_at),
                    };
                    (uid.clone(), seen)
                })
                .collect::<BTreeMap<_, _>>(),
            load_reports: self
                .loads
                .iter()
                .map(|(uid, (_, seen))| (uid.clone(), wall(*seen)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use locus_contract::ring::{RingParts, ShardCount, Slot, SlotState, Transition};

    use super::*;
    use crate::plan::{Progress, RingMeta};

    fn pod(uid: &str, ready: bool, changed_at: &str) -> ObservedPod {
        ObservedPod {
            name: format!("chat-0-{uid}"),
            uid: uid.to_owned(),
            slot: 0,
            revision: "r".to_owned(),
            shape: None,
            address: None,
            ready,
            ready_changed_at: Some(changed_at.parse().unwrap()),
            created_at: "2030-01-01T00:00:00Z".parse().unwrap(),
            deleting: false,
            terminal: false,
            images_current: true,
            progress: Progress::default(),
        }
    }

    fn ring(version: u64) -> PublishedRing {
        let address: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let shards = ShardCount::new(4).unwrap();
        let ring = Ring::new(RingParts {
            namespace: "default".to_owned(),
            service: "chat".to_owned(),
            version,
            shards,
            vnodes: 16,
            slots: vec![Slot {
                index: 0,
                pod: locus_contract::ring::Pod {
                    name: "chat-0-a".to_owned(),
                    uid: "a".to_owned(),
                    address,
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            }],
            current: locus_contract::ring::Assignment::uniform(shards, 0),
            transition: Transition::Stable,
        })
        .unwrap();
        PublishedRing {
            ring,
            meta: Some(RingMeta {
                published_at: "2030-01-01T00:00:00Z".parse().unwrap(),
                transition: None,
                timed_out: Vec::new(),
                reporters: Vec::new(),
                last_rebalance: None,
            }),
        }
    }

    const T: &str = "2030-01-01T00:00:00Z";

    #[test]
    fn sightings_are_converted_to_the_wall_clock_of_the_plan() {
        let t0 = Instant::now();
        let mut sightings = Sightings::default();
        sightings.observe(Some(&ring(3)), &[pod("a", false, T)], t0);
        let later = t0 + Duration::from_secs(10);
        sightings.observe(Some(&ring(3)), &[pod("a", false, T)], later);

        // The wall clock stepped by an hour between the reconciles: the sightings keep their
        // distance from `now` on the monotonic clock.
        let now: Timestamp = "2030-01-01T01:00:00Z".parse().unwrap();
        let seen = sightings.first_seen(now, later);
        let ten_seconds_ago: Timestamp = "2030-01-01T00:59:50Z".parse().unwrap();
        assert_eq!(
            seen.ring.map(|r| (r.version, r.at)),
            Some((3, ten_seconds_ago))
        );
        let a = seen.pods.get("a").unwrap();
        assert_eq!((a.pod, a.readiness_at), (ten_seconds_ago, ten_seconds_ago));
    }

    #[test]
    fn a_changed_state_is_seen_anew_and_vanished_pods_are_forgotten() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let t2 = t0 + Duration::from_secs(30);
        let mut sightings = Sightings::default();
        sightings.observe(Some(&ring(3)), &[pod("a", true, T), pod("b", false, T)], t0);
        // `a` became not Ready, `b` is gone, `c` is new, the ring moved on.
        sightings.observe(
            Some(&ring(4)),
            &[pod("a", false, "2030-01-01T00:00:09Z"), pod("c", false, T)],
            t1,
        );
        let now: Timestamp = "2030-01-01T00:00:30Z".parse().unwrap();
        let at = |s: u64| Timestamp::from_second(s.cast_signed()).unwrap();
        let base = now.as_second().cast_unsigned() - 30;
        let seen = sightings.first_seen(now, t2);
        assert_eq!(
            seen.ring.map(|r| (r.version, r.at)),
            Some((4, at(base + 10)))
        );
        let a = seen.pods.get("a").unwrap();
        assert_eq!(a.pod, at(base), "the pod itself was seen first at t0");
        assert_eq!(a.readiness_at, at(base + 10), "not Ready first seen at t1");
        assert!(!a.readiness.ready);
        assert!(!seen.pods.contains_key("b"));
        assert_eq!(seen.pods.get("c").unwrap().pod, at(base + 10));

        sightings.observe(None, &[], t2);
        assert_eq!(sightings.first_seen(now, t2), FirstSeen::default());
    }

    #[test]
    fn a_ring_this_process_published_keeps_its_first_sighting_when_read_back() {
        let t0 = Instant::now();
        let mut sightings = Sightings::default();
        sightings.see_ring(&ring(5), t0);
        sightings.observe(Some(&ring(5)), &[], t0 + Duration::from_secs(2));
        let now: Timestamp = "2030-01-01T00:00:02Z".parse().unwrap();
        let seen = sightings.first_seen(now, t0 + Duration::from_secs(2));
        assert_eq!(seen.ring.map(|r| r.at), Some(T.parse().unwrap()));
    }
}
