//! What every reconcile shares: the API client, the event recorder, the metrics, and the
//! per-service memory kept between reconciles (the last ring seen or published, when this
//! process first saw each state, the pod writes a cached pod list must show, and the inputs of
//! the last idle plan; see the [`controller`](crate::controller) docs for why).
//!
//! It is its own module so that the [`executor`](crate::executor), which the controller
//! calls, reads it without importing the controller back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::cache::{Inputs, PodWrites, Settled};
use crate::metrics::Metrics;
use crate::plan::{FirstSeen, ObservedPod, PublishedRing, RememberedRing};
use crate::sightings::Sightings;

/// How long a fixed object (account, Role, Service, ...) the operator found or made as it
/// should be is trusted to stay so without reading it again, while what it should be does not
/// change: the same as the controller's resync.
pub const FIXED_RECHECK: Duration = Duration::from_secs(300);

/// A fixed object: the UID of its service and its kind.
type FixedKey = (String, &'static str);

/// What every reconcile shares.
pub struct Context {
    /// The API client (the operator's own credentials).
    pub client: Client,
    /// Publishes Kubernetes events.
    pub recorder: Recorder,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The last ring seen or published per service (by UID).
    rings: Mutex<HashMap<String, RememberedRing>>,
    /// When this process first saw the states step deadlines count from, per service (by UID).
    sightings: Mutex<HashMap<String, Sightings>>,
    /// Pod writes not yet seen in a pod list, per service (by UID).
    pod_writes: Mutex<HashMap<String, PodWrites>>,
    /// The inputs of the last idle plan with no deadline pending, per service (by UID).
    settled: Mutex<HashMap<String, Settled>>,
    /// Services (by UID) whose ring write was refused: their next ring read is fresh.
    ring_refused: Mutex<HashSet<String>>,
    /// Fixed objects known to be as they should be: by service UID and kind, the hash of
    /// what they should be and when that was checked.
    fixed: Mutex<HashMap<FixedKey, (u64, Instant)>>,
}

impl Context {
    /// A context whose events are reported as `locus-operator` from `instance`.
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: &str) -> Self {
        let reporter = Reporter {
            controller: "locus-operator".to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            rings: Mutex::new(HashMap::new()),
            sightings: Mutex::new(HashMap::new()),
            pod_writes: Mutex::new(HashMap::new()),
            settled: Mutex::new(HashMap::new()),
            ring_refused: Mutex::new(HashSet::new()),
            fixed: Mutex::new(HashMap::new()),
        }
    }

    /// True if the fixed object `kind` of the service with UID `uid` was found or made as
    /// `desired` (a hash) less than [`FIXED_RECHECK`] ago.
    pub fn fixed_is_known(&self, uid: &str, kind: &'static str, desired: u64) -> bool {
        self.fixed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(uid.to_owned(), kind))
            .is_some_and(|(hash, at)| *hash == desired && at.elapsed() < FIXED_RECHECK)
    }

    /// Records that the fixed object `kind` of the service with UID `uid` is as `desired`
    /// (a hash) now.
    pub fn fixed_checked(&self, uid: &str, kind: &'static str, desired: u64) {
        self.fixed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((uid.to_owned(), kind), (desired, Instant::now()));
    }

    /// Records that the API server refused a ring write of the service with UID `uid` (the
    /// ring changed since it was read): the next reconcile reads the ring fresh.
    pub fn ring_refused(&self, uid: &str) {
        self.ring_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid.to_owned());
    }

    /// True (once) if a ring write of the service with UID `uid` was refused since the last
    /// call.
    pub fn take_ring_refused(&self, uid: &str) -> bool {
        self.ring_refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid)
    }

    /// Records pod writes this process made for the service with UID `uid`, which the next
    /// pod list must show.
    pub fn wrote_pods(&self, uid: &str, writes: PodWrites) {
        if writes.is_empty() {
            return;
        }
        self.pod_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(uid.to_owned())
            .or_default()
            .extend(writes);
    }

    /// The pod writes of the service with UID `uid` not yet seen in a pod list.
    pub fn pod_writes(&self, uid: &str) -> PodWrites {
        self.pod_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the pod writes of the service with UID `uid` (a pod list showed them).
    pub fn pod_writes_seen(&self, uid: &str) {
        self.pod_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
    }

    /// Records that a plan of the service with UID `uid` from `inputs` was idle with no
    /// deadline pending (`Some`), or forgets that (`None`).
    pub fn settle(&self, uid: &str, inputs: Option<Inputs>) {
        let mut settled = self.settled.lock().unwrap_or_else(PoisonError::into_inner);
        match inputs {
            Some(inputs) => {
                settled.insert(
                    uid.to_owned(),
                    Settled {
                        inputs,
                        at: Instant::now(),
                    },
                );
            }
            None => {
                settled.remove(uid);
            }
        }
    }

    /// The last idle plan of the service with UID `uid`, if the last plan was one.
    pub fn settled(&self, uid: &str) -> Option<Settled> {
        self.settled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .copied()
    }

    /// The sightings, also after a panic while they were held (every update leaves them
    /// usable; ignoring them would let deadlines count from recorded times alone).
    fn sightings(&self) -> MutexGuard<'_, HashMap<String, Sightings>> {
        self.sightings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what a reconcile of the service with UID `uid` observed at `at` (the ring, the
    /// pods; see [`Sightings::observe`]) and returns when this process first saw each of
    /// those states, on its wall clock, `now` being `at`.
    pub fn observe_states(
        &self,
        uid: &str,
        ring: Option<&PublishedRing>,
        pods: &[ObservedPod],
        now: Timestamp,
        at: Instant,
    ) -> FirstSeen {
        let mut sightings = self.sightings();
        let service = sightings.entry(uid.to_owned()).or_default();
        service.observe(ring, pods, at);
        service.first_seen(now, at)
    }

    /// Records that this process published `ring` for the service with UID `uid` just now (its
    /// step deadlines count from no earlier than this).
    pub fn published_ring(&self, uid: &str, ring: &PublishedRing) {
        let at = Instant::now();
        self.sightings()
            .entry(uid.to_owned())
            .or_default()
            .see_ring(ring, at);
    }

    /// Remembers `ring` as the last ring of the service with UID `uid` (read or written).
    pub fn remember_ring(&self, uid: &str, ring: &PublishedRing) {
        if let Ok(mut rings) = self.rings.lock() {
            let remembered = RememberedRing::remember(rings.get(uid), ring);
            rings.insert(uid.to_owned(), remembered);
        }
    }

    /// The last ring of the service with UID `uid`, if this instance saw one.
    pub fn remembered_ring(&self, uid: &str) -> Option<RememberedRing> {
        self.rings.lock().ok()?.get(uid).cloned()
    }

    /// Forgets the service with UID `uid` (deleted): its ring and its sightings.
    pub fn forget_service(&self, uid: &str) {
        if let Ok(mut rings) = self.rings.lock() {
            rings.remove(uid);
        }
        self.sightings().remove(uid);
        self.pod_writes_seen(uid);
        self.settle(uid, None);
        self.take_ring_refused(uid);
        self.fixed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(service, _), _| service != uid);
    }
}
