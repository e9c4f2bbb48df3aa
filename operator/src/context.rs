//! What every reconcile shares: the API client, the event recorder, the metrics, and the
//! per-service memory kept between reconciles (the last ring seen or published, and when this
//! process first saw each state; see the [`controller`](crate::controller) docs for why).
//!
//! It is its own module so that the [`executor`](crate::executor), which the controller
//! calls, reads it without importing the controller back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::metrics::Metrics;
use crate::plan::{FirstSeen, ObservedPod, PublishedRing, RememberedRing};
use crate::sightings::Sightings;

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
        }
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
    }
}
