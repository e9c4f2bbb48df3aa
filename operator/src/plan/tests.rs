//! Scenario tests of the planner: a simulated cluster ([`World`]) applies each plan the way an
//! ideal executor would, pods become Ready and report progress when a test says so, and the
//! clock only moves when a test moves it. Every applied plan is checked against invariants
//! (versions +1, new ring entries name Ready pods, no pod named by the ring is deleted).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use locus_contract::ring::{Phase as RingPhase, Ring, SlotState};
use serde_json::json;

use locus_contract::progress::{
    ColdTakeovers, MovedReport, MovedSessions, ReportState, WarmTakeovers,
};

use super::*;
use crate::crd::{MOVED_SESSIONS_REPORTED, PROGRESSING, Phase, StatefulServiceSpec};

fn spec(replicas: i32) -> StatefulServiceSpec {
    serde_json::from_value(json!({
        "replicas": replicas,
        "shards": 64,
        "vnodes": 16,
        "port": "http",
        "template": {"spec": {"containers": [{
            "name": "app", "image": "app:1",
            "ports": [{"name": "http", "containerPort": 8080}]
        }]}}
    }))
    .unwrap()
}

/// How simulated pods report progress.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reports {
    /// Like the ring probe: observed always, warmed in Warm, drained in Switch.
    All,
    /// Observed only: never warmed, never drained (a stuck SDK).
    ObservedOnly,
    /// Nothing at all.
    Nothing,
}

struct World {
    spec: StatefulServiceSpec,
    pods: Vec<ObservedPod>,
    ring: Option<PublishedRing>,
    /// The operator's memory of the last ring (as the controller keeps it).
    remembered: Option<RememberedRing>,
    /// When the operator process first saw each state (empty: deadlines count from the
    /// recorded times, as for a process that saw everything as it happened).
    first_seen: FirstSeen,
    status: Option<crate::crd::StatefulServiceStatus>,
    now: Timestamp,
    next_uid: u32,
    events: Vec<PlannedEvent>,
    deleted: Vec<String>,
    /// The pods deleted so far, as they were.
    gone: Vec<ObservedPod>,
    publishes: Vec<Ring>,
}

impl World {
    fn new(replicas: i32) -> Self {
        Self {
            spec: spec(replicas),
            pods: Vec::new(),
            ring: None,
            remembered: None,
            first_seen: FirstSeen::default(),
            status: None,
            now: "2030-01-01T00:00:00Z".parse().unwrap(),
            next_uid: 0,
            events: Vec::new(),
            deleted: Vec::new(),
            gone: Vec::new(),
            publishes: Vec::new(),
        }
    }

    /// A world already converged on `replicas` slots.
    fn converged(replicas: i32) -> Self {
        let mut world = Self::new(replicas);
        world.settle(Reports::All);
        world
    }

    fn observed(&self) -> Observed<'_> {
        Observed {
            namespace: "default",
            name: "chat",
            uid: "svc-uid",
            generation: Some(1),
            spec: &self.spec,
            status: self.status.as_ref(),
            pods: &self.pods,
            ring: self.ring.as_ref(),
            remembered: self.remembered.as_ref(),
            first_seen: &self.first_seen,
            now: self.now,
        }
    }

    fn plan(&self) -> Actions {
        plan(&self.observed()).unwrap()
    }

    fn advance(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
    }

    /// The operator process first saw the current ring (version and phase) `seconds` ago on
    /// its own clock.
    fn ring_first_seen(&mut self, seconds: i64) {
        let at = self.now - SignedDuration::from_secs(seconds);
        let ring = self.ring();
        self.first_seen.ring = Some(RingSeen {
            version: ring.version(),
            phase: ring.phase(),
            at,
        });
    }

    /// The operator process first saw pod `name` in its current readiness `seconds` ago on
    /// its own clock (and the pod itself no later).
    fn pod_first_seen(&mut self, name: &str, seconds: i64) {
        let at = self.now - SignedDuration::from_secs(seconds);
        let pod = self.pod_mut(name).clone();
        self.first_seen.pods.insert(
            pod.uid.clone(),
            PodSeen {
                pod: at,
                readiness: Readiness::of(&pod),
                readiness_at: at,
            },
        );
    }

    /// What a process that saw every state as it happened would plan now (the recorded times
    /// alone), without applying it.
    fn plan_from_recorded_times(&mut self) -> Actions {
        let first_seen = std::mem::take(&mut self.first_seen);
        let actions = self.plan();
        self.first_seen = first_seen;
        actions
    }

    fn ring(&self) -> &Ring {
        &self.ring.as_ref().expect("a ring").ring
    }

    fn pod_mut(&mut self, name: &str) -> &mut ObservedPod {
        self.pods.iter_mut().find(|p| p.name == name).expect("pod")
    }

    /// Brings back a pod the last plan deleted, as the API server shows it while it
    /// terminates (deletion timestamp set; not Ready).
    fn linger(&mut self, name: &str) {
        let at = self
            .gone
            .iter()
            .position(|p| p.name == name)
            .expect("a deleted pod");
        let mut pod = self.gone.remove(at);
        pod.deleting = true;
        pod.ready = false;
        self.pods.push(pod);
    }

    /// The pod finishes terminating.
    fn vanish(&mut self, name: &str) {
        self.pods.retain(|p| p.name != name);
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let c = self
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .expect("a condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn pods_of(&self, slot: u16) -> Vec<&ObservedPod> {
        self.pods.iter().filter(|p| p.slot == slot).collect()
    }

    fn slot_pod(&self, slot: u16) -> String {
        self.ring().slot(slot).expect("slot").pod.name.clone()
    }

    fn set_ready(&mut self, name: &str, ready: bool) {
        let now = self.now;
        let pod = self.pod_mut(name);
        if pod.ready != ready {
            pod.ready = ready;
            pod.ready_changed_at = Some(now);
        }
        if ready {
            pod.images_current = true;
        }
    }

    fn ready_all(&mut self) {
        let names: Vec<String> = self
            .pods
            .iter()
            .filter(|p| p.live())
            .map(|p| p.name.clone())
            .collect();
        for name in names {
            self.set_ready(&name, true);
        }
    }

    /// Every Ready pod reports on the current ring, as `reports` says.
    fn report(&mut self, reports: Reports) {
        let Some(published) = &self.ring else { return };
        let version = published.ring.version();
        let phase = published.ring.phase();
        for pod in self.pods.iter_mut().filter(|p| p.ready && !p.terminal) {
            if reports == Reports::Nothing {
                continue;
            }
            pod.progress.observed = Some(version);
            if reports == Reports::All {
                match phase {
                    RingPhase::Warm => pod.progress.warmed = Some(version),
                    RingPhase::Switch => pod.progress.drained = Some(version),
                    RingPhase::Stable => {}
                }
            }
        }
    }

    /// Invariants of a publish: the version goes up by one, and every pod a ring names for
    /// the first time exists and is Ready (or its slot is marked unavailable).
    fn check_publish(&self, next: &PublishedRing) {
        let last = self
            .ring
            .as_ref()
            .map(|p| p.ring.version())
            .or(self.status.as_ref().and_then(|s| s.ring_version));
        let expected = last.map_or(1, |v| v + 1);
        if self.ring.is_some() {
            assert_eq!(next.ring.version(), expected, "versions go up by one");
        } else {
            // A ring recreated after its ConfigMap vanished: above every version known.
            let reported = self
                .pods
                .iter()
                .filter_map(|p| p.progress.observed)
                .max()
                .unwrap_or(0);
            assert!(
                next.ring.version() >= expected.max(reported + 1),
                "{next:?}"
            );
        }
        let before: BTreeSet<String> = self
            .ring
            .iter()
            .flat_map(|p| p.ring.slots())
            .flat_map(|s| [Some(&s.pod), s.successor.as_ref(), s.predecessor.as_ref()])
            .flatten()
            .map(|p| p.uid.clone())
            .collect();
        for slot in next.ring.slots() {
            for pod in [Some(&slot.pod), slot.successor.as_ref()]
                .into_iter()
                .flatten()
            {
                if before.contains(&pod.uid) {
                    continue;
                }
                let observed = self
                    .pods
                    .iter()
                    .find(|p| p.uid == pod.uid)
                    .unwrap_or_else(|| panic!("ring names unknown pod {}", pod.name));
                assert!(
                    observed.ready || slot.state == SlotState::Unavailable,
                    "ring names pod {} before it is Ready",
                    pod.name
                );
                assert_eq!(Some(pod.address), observed.address);
            }
        }
    }

    /// Applies a plan like an ideal executor, checking the invariants.
    fn apply(&mut self, actions: &Actions) {
        if let Some(next) = &actions.publish {
            self.check_publish(next);
        }
        let final_ring = actions.publish.as_ref().or(self.ring.as_ref());
        for deletion in &actions.delete {
            if let Some(ring) = final_ring.map(|p| &p.ring)
                && FENCING.contains(&deletion.reason)
            {
                self.check_fencing(ring, deletion);
            } else if let Some(ring) = final_ring.map(|p| &p.ring) {
                let held: BTreeSet<u16> = ring.current().counts().into_keys().collect();
                for slot in ring.slots() {
                    let serving = held.contains(&slot.index) || ring.phase() != RingPhase::Stable;
                    if serving && self.spec.replicas > 0 {
                        assert_ne!(
                            slot.pod.uid, deletion.uid,
                            "deletes pod {} the ring serves from",
                            slot.pod.name
                        );
                    }
                    for other in [&slot.successor, &slot.predecessor].into_iter().flatten() {
                        assert_ne!(
                            other.uid, deletion.uid,
                            "deletes handover pod {}",
                            other.name
                        );
                    }
                }
            }
            if let Some(at) = self.pods.iter().position(|p| p.uid == deletion.uid) {
                self.gone.push(self.pods.remove(at));
            }
            self.deleted.push(deletion.name.clone());
        }
        for create in &actions.create {
            assert!(
                self.pods.iter().all(|p| p.name != create.name),
                "name {} reused while the pod exists",
                create.name
            );
            self.next_uid += 1;
            let n = self.next_uid;
            self.pods.push(ObservedPod {
                name: create.name.clone(),
                uid: format!("uid-{n}"),
                slot: create.slot,
                revision: create.revision.clone(),
                shape: Some(naming::shape(&self.spec.template)),
                address: Some(
                    format!("10.0.{}.{}:8080", n / 250, n % 250 + 1)
                        .parse()
                        .unwrap(),
                ),
                ready: false,
                ready_changed_at: Some(self.now),
                created_at: self.now,
                deleting: false,
                terminal: false,
                images_current: true,
                progress: Progress::default(),
            });
        }
        for update in &actions.update {
            let shape = naming::shape(&self.spec.template);
            let pod = self.pod_mut(&update.name);
            pod.revision = update.revision.clone();
            pod.shape = Some(shape);
            pod.images_current = false;
        }
        if let Some(next) = &actions.publish {
            self.publishes.push(next.ring.clone());
            self.ring = Some(next.clone());
            self.remembered = Some(RememberedRing::remember(self.remembered.as_ref(), next));
        }
        self.status = Some(actions.status.clone());
        self.events.extend(actions.events.iter().cloned());
    }

    /// Invariants of a deletion that fences a pod the ring still names: never a successor,
    /// never a Ready pod the ring routes to (the pod of a slot holding shards that is not
    /// marked `Unavailable`); a drain-stalled deletion only in a `Switch` ring.
    fn check_fencing(&self, ring: &Ring, deletion: &PodDeletion) {
        let pod = self
            .pods
            .iter()
            .find(|p| p.uid == deletion.uid)
            .unwrap_or_else(|| panic!("fences unknown pod {}", deletion.name));
        let held: BTreeSet<u16> = ring.current().counts().into_keys().collect();
        for slot in ring.slots() {
            if let Some(successor) = &slot.successor {
                assert_ne!(successor.uid, deletion.uid, "fences successor {}", pod.name);
            }
            if slot.pod.uid == deletion.uid && held.contains(&slot.index) {
                assert!(
                    !pod.ready || pod.terminal || slot.state == SlotState::Unavailable,
                    "fences pod {} the ring routes to",
                    pod.name
                );
            }
        }
        if deletion.reason == fencing::DRAIN_STALLED {
            assert_eq!(ring.phase(), RingPhase::Switch, "{deletion:?}");
        }
    }

    fn step(&mut self) -> Actions {
        let actions = self.plan();
        self.apply(&actions);
        actions
    }

    fn progressing(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == PROGRESSING))
            .is_some_and(|c| c.status == "True")
    }

    /// Makes every pod Ready, lets pods report, plans and applies, until nothing changes;
    /// moves the clock by a second per round. Returns the number of rounds.
    fn settle(&mut self, reports: Reports) -> usize {
        for round in 0..2000 {
            self.ready_all();
            self.report(reports);
            let actions = self.step();
            if actions.is_idle() && !self.progressing() {
                return round;
            }
            self.advance(1);
        }
        panic!("did not converge; events: {:#?}", self.events);
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.reason).collect()
    }

    fn counts(&self) -> BTreeMap<u16, u32> {
        self.ring().current().counts()
    }
}

/// Reasons of deletions that fence a pod a ring still names.
const FENCING: [&str; 3] = [fencing::DRAIN_STALLED, fencing::REROUTED, fencing::REPLACED];

fn assert_balanced(world: &World, slots: u16) {
    let counts = world.counts();
    assert_eq!(counts.len(), usize::from(slots), "{counts:?}");
    let shards = world.ring().shards().get();
    for (&slot, &count) in &counts {
        assert!(slot < slots, "{counts:?}");
        let q = shards / u32::from(slots);
        assert!(count == q || count == q + 1, "{counts:?}");
    }
}

fn assert_converged(world: &World, slots: u16) {
    let ring = world.ring();
    assert_eq!(ring.phase(), RingPhase::Stable);
    assert_eq!(ring.slots().len(), usize::from(slots));
    assert!(
        ring.slots().iter().all(|s| s.state == SlotState::Active),
        "{ring:?}"
    );
    assert_balanced(world, slots);
    assert_eq!(world.pods.len(), usize::from(slots), "one pod per slot");
    let status = world.status.as_ref().unwrap();
    assert_eq!(status.phase, Phase::Stable);
    assert_eq!(status.ready_replicas, i32::from(slots));
    assert_eq!(status.active_replicas, i32::from(slots));
    assert_eq!(status.current_revision, status.update_revision);
    assert!(!world.progressing());
}

// ----- creation -----------------------------------------------------------------------------

#[test]
fn create_waits_for_every_pod_then_publishes_a_stable_balanced_ring() {
    let mut world = World::new(3);
    let first = world.step();
    assert_eq!(first.create.len(), 3);
    assert_eq!(
        first.create.iter().map(|c| c.slot).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(first.publish.is_none());
    assert!(
        first
            .create
            .iter()
            .all(|c| c.name.starts_with(&format!("chat-{}-", c.slot)))
    );

    // Two of three Ready: still no ring, nothing more created.
    let names: Vec<String> = world.pods.iter().map(|p| p.name.clone()).collect();
    world.set_ready(&names[0], true);
    world.set_ready(&names[1], true);
    let waiting = world.step();
    assert!(waiting.is_idle(), "{waiting:?}");
    assert_eq!(
        world.status.as_ref().unwrap().conditions[0].reason,
        "NoRing"
    );
    assert!(
        waiting.requeue_after.is_some(),
        "the create step has a deadline"
    );

    world.set_ready(&names[2], true);
    let publish = world.step();
    let ring = &publish.publish.as_ref().unwrap().ring;
    assert_eq!(ring.version(), 1);
    assert_eq!(ring.phase(), RingPhase::Stable);
    assert_eq!(world.reasons(), [reasons::RING_CREATED]);
    assert_converged(&world, 3);
    assert_eq!(world.status.as_ref().unwrap().ring_version, Some(1));
    let available = &world.status.as_ref().unwrap().conditions[0];
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("True", "AllShardsServed")
    );
}

#[test]
fn create_rolls_forward_after_the_warm_timeout_with_the_ready_slots() {
    let mut world = World::new(3);
    world.step();
    let names: Vec<String> = world.pods.iter().map(|p| p.name.clone()).collect();
    world.set_ready(&names[0], true);
    world.set_ready(&names[1], true);
    world.advance(29);
    assert!(world.step().publish.is_none());
    world.advance(1);
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(ring.slots().len(), 3);
    assert_eq!(ring.slot(2).unwrap().state, SlotState::Unavailable);
    assert_eq!(world.counts().keys().copied().collect::<Vec<_>>(), [0, 1]);
    assert!(world.reasons().contains(&reasons::TIMEOUT));
    let status = world.status.as_ref().unwrap();
    assert_eq!(status.conditions[2].reason, "StepTimedOut");

    // The slow pod comes up and joins like a scale-up.
    world.settle(Reports::All);
    assert_converged(&world, 3);
    assert_eq!(
        world.slot_pod(2),
        names[2],
        "the slow pod was kept, not replaced"
    );
}

#[test]
fn a_deleted_ring_config_map_is_recreated_from_the_remembered_ring() {
    let mut world = World::converged(2);
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    world.step(); // Warm
    let lost = world.ring().clone();
    assert_eq!(lost.phase(), RingPhase::Warm);
    world.ring = None;
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(
        ring.version(),
        lost.version() + 1,
        "readers holding it accept it"
    );
    let mut same = ring.parts().clone();
    same.version = lost.version();
    assert_eq!(&same, lost.parts(), "the same document, no shard moved");
    assert!(actions.create.is_empty() && actions.delete.is_empty());
    let event = &actions.events[0];
    assert!(
        event.warning && event.reason == reasons::RING_RECREATED,
        "{event:?}"
    );
    world.settle(Reports::All);
    assert_converged(&world, 3);
}

#[test]
fn without_a_remembered_ring_it_is_recreated_above_every_known_version_with_a_warning() {
    let mut world = World::converged(2);
    world.spec.replicas = 3;
    world.settle(Reports::All);
    let last = world.ring().version();
    let pod = world.slot_pod(0);
    world.ring = None;
    world.remembered = None;
    // A pod saw a version the status never recorded (the operator stopped in between).
    world.pod_mut(&pod).progress.observed = Some(last + 3);
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(ring.version(), last + 4, "above every version anyone holds");
    assert_eq!(ring.phase(), RingPhase::Stable);
    assert_eq!(
        ring.slots().len(),
        3,
        "the running pods are taken as they are"
    );
    assert!(actions.create.is_empty() && actions.delete.is_empty());
    let warning = actions
        .events
        .iter()
        .find(|e| e.reason == reasons::RING_RECREATED)
        .unwrap();
    assert!(warning.warning);
    assert!(
        warning.note.contains("may be unavailable"),
        "{}",
        warning.note
    );
}

#[test]
fn a_remembered_ring_older_than_what_a_pod_reported_is_not_restored() {
    let mut world = World::converged(2);
    let last = world.ring().version();
    let pod = world.slot_pod(1);
    world.ring = None;
    // Another operator instance published a newer version this one never saw.
    world.pod_mut(&pod).progress.observed = Some(last + 1);
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(ring.version(), last + 2);
    let event = actions
        .events
        .iter()
        .find(|e| e.reason == reasons::RING_RECREATED)
        .unwrap();
    assert!(event.note.contains("no copy"), "{}", event.note);
}

#[test]
fn a_remembered_ring_older_than_the_status_is_not_restored() {
    let mut world = World::converged(2);
    let old = world.remembered.clone();
    world.spec.replicas = 3;
    world.settle(Reports::All);
    world.ring = None;
    world.remembered = old;
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(ring.slots().len(), 3, "a fresh table, not the 2-slot copy");
    assert!(
        actions
            .events
            .iter()
            .any(|e| e.reason == reasons::RING_RECREATED && e.note.contains("no copy"))
    );
}

#[test]
fn pods_of_old_revisions_or_extra_slots_before_the_first_ring_are_replaced() {
    let mut world = World::new(3);
    world.step();
    world.spec.replicas = 2;
    world.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    let actions = world.step();
    assert_eq!(actions.delete.len(), 3);
    assert_eq!(actions.create.len(), 2);
    world.settle(Reports::All);
    assert_converged(&world, 2);
}

// ----- scale up -----------------------------------------------------------------------------

#[test]
fn scale_up_warms_then_switches_then_settles() {
    let mut world = World::converged(3);
    let before = world.ring().current().clone();
    world.spec.replicas = 5;
    let create = world.step();
    assert_eq!(
        create.create.iter().map(|c| c.slot).collect::<Vec<_>>(),
        [3, 4]
    );
    assert!(
        create.publish.is_none(),
        "no ring change before the new pods are Ready"
    );

    world.ready_all();
    let warm = world.step();
    let ring = &warm.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Warm);
    assert_eq!(
        ring.current(),
        &before,
        "routers keep the old table during Warm"
    );
    assert_eq!(ring.slot(3).unwrap().state, SlotState::Joining);
    let target = ring.target().unwrap();
    for m in before.moves_to(target).unwrap() {
        assert!(m.to >= 3, "shards only move to the new slots: {m:?}");
    }
    assert_eq!(world.status.as_ref().unwrap().phase, Phase::Warm);

    // Until the joining pods report warmed, nothing happens; the deadline is requeued.
    let wait = world.step();
    assert!(wait.publish.is_none());
    assert!(wait.requeue_after.unwrap() <= Duration::from_secs(31));

    world.report(Reports::All);
    let switch = world.step();
    let ring = &switch.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Switch);
    assert_eq!(ring.previous(), Some(&before));
    assert!(ring.slots().iter().all(|s| s.state == SlotState::Active));
    assert_eq!(switch.steps[0].step, StepKind::Switch);
    assert!(switch.steps[0].shards_moved > 0);
    assert_eq!(world.status.as_ref().unwrap().phase, Phase::Switch);

    world.report(Reports::All);
    let settle = world.step();
    assert_eq!(
        settle.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Stable
    );
    assert_converged(&world, 5);
    let record = world
        .status
        .as_ref()
        .unwrap()
        .last_transition
        .clone()
        .unwrap();
    assert_eq!(record.kind, crate::crd::TransitionKind::ScaleUp);
    assert_eq!(record.from_version, 1);
    assert_eq!(record.to_version, 4);
    assert!(record.finished_at.is_some());
    assert_eq!(
        world.reasons()[1..],
        [
            reasons::WARM,
            reasons::STEP_WAITING,
            reasons::SWITCH,
            reasons::SETTLE
        ],
        "the Warm step waited once for the joining pods"
    );
}

/// A service scaled from `from` to `to` slots, converged: the world, the final Stable ring's
/// version and its pods' names, and a way to set what a pod reported as moved sessions.
fn scaled(from: i32, to: i32) -> (World, u64, Vec<String>) {
    let mut world = World::converged(from);
    world.spec = spec(to);
    world.settle(Reports::All);
    let stable = world.ring().version();
    let names = world
        .ring()
        .slots()
        .iter()
        .map(|s| s.pod.name.clone())
        .collect();
    (world, stable, names)
}

/// One pod's counts for the transition settled by `version`: `warm` pushed, `cold` absent.
fn moved(version: u64, warm: u64, cold: u64, state: ReportState) -> MovedSessions {
    MovedSessions {
        version,
        warm: WarmTakeovers {
            pushed: warm,
            ..WarmTakeovers::default()
        },
        cold: ColdTakeovers {
            absent: cold,
            ..ColdTakeovers::default()
        },
        state,
        ..MovedSessions::default()
    }
}

impl World {
    /// Pod `pod` reports `counts` (alone) in its moved-sessions annotation.
    fn report_counts(&mut self, pod: &str, counts: MovedSessions) {
        self.pod_mut(pod).progress.moved = Some(Ok(MovedReport::new([counts])));
    }

    fn report_moved(&mut self, pod: &str, version: u64, warm: u64, cold: u64, state: ReportState) {
        self.report_counts(pod, moved(version, warm, cold, state));
    }

    fn last_transition(&self) -> crate::crd::TransitionRecord {
        self.status
            .as_ref()
            .and_then(|s| s.last_transition.clone())
            .expect("a transition record")
    }

    fn warm_hit_percent(&self) -> Option<f64> {
        let last = self.last_transition();
        assert!(last.finished_at.is_some());
        last.warm_hit_percent
    }

    fn moved_sessions(&self) -> crate::crd::MovedSessionsSummary {
        self.last_transition()
            .moved_sessions
            .expect("moved sessions")
    }

    /// The `MovedSessionsReported` condition: status, reason, message.
    fn reported(&self) -> (String, String, String) {
        self.condition(MOVED_SESSIONS_REPORTED)
    }

    fn events_of(&self, reason: &str) -> Vec<&PlannedEvent> {
        self.events.iter().filter(|e| e.reason == reason).collect()
    }
}

#[test]
fn the_warm_hit_percentage_sums_what_every_pod_reported_once_all_are_final() {
    let (mut world, stable, names) = scaled(3, 4);
    assert_eq!(world.warm_hit_percent(), None, "no pod reported yet");
    let (status, reason, message) = world.reported();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Pending"));
    assert!(message.contains(&names[0]), "{message}");
    // Every pod reports final counts, but one for an older ring: still unknown.
    world.report_moved(&names[0], stable, 0, 0, ReportState::Final);
    world.report_moved(&names[1], stable, 0, 0, ReportState::Final);
    world.report_moved(&names[2], stable - 3, 50, 50, ReportState::Final);
    world.report_moved(&names[3], stable, 197, 3, ReportState::Final);
    world.step();
    assert_eq!(
        world.warm_hit_percent(),
        None,
        "a pod has not reported this ring"
    );
    let summary = world.moved_sessions();
    assert_eq!((summary.pods_expected, summary.pods_reported), (4, 3));
    assert_eq!(summary.missing, [names[2].clone()]);
    assert!(!summary.r#final);

    world.report_moved(&names[2], stable, 0, 0, ReportState::Final);
    world.step();
    assert_eq!(world.warm_hit_percent(), Some(98.5));
    let summary = world.moved_sessions();
    assert!(summary.r#final);
    assert_eq!((summary.warm.pushed, summary.warm.total), (197, 197));
    assert_eq!((summary.cold.absent, summary.cold.total), (3, 3));
    assert_eq!(
        summary.cold_while_previous_alive, 3,
        "absent: the owner answered"
    );
    assert_eq!(summary.pods_reported, 4);
    let (status, reason, message) = world.reported();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Complete"));
    assert!(message.contains("warm 98.5 %"), "{message}");
}

#[test]
fn no_figure_while_a_report_is_counting() {
    let (mut world, stable, names) = scaled(2, 3);
    for name in &names {
        world.report_moved(name, stable, 10, 0, ReportState::Final);
    }
    world.report_moved(&names[2], stable, 10, 0, ReportState::Counting);
    let actions = world.step();
    assert_eq!(world.warm_hit_percent(), None);
    let summary = world.moved_sessions();
    assert_eq!(summary.pending, [names[2].clone()]);
    assert_eq!(summary.warm.total, 30, "the counts so far are shown");
    assert_eq!(world.reported().1, "Pending");
    // The condition changes by itself at the end of the wait: a requeue brings it.
    let requeue = actions.requeue_after.expect("a requeue");
    assert!(requeue <= Duration::from_secs(61), "{requeue:?}");
}

#[test]
fn late_cold_takeovers_are_included_until_the_reports_are_final() {
    let (mut world, stable, names) = scaled(2, 3);
    for name in &names {
        world.report_moved(name, stable, 0, 0, ReportState::Final);
    }
    world.report_moved(&names[2], stable, 20, 0, ReportState::Counting);
    world.step();
    assert_eq!(world.warm_hit_percent(), None, "no early freeze at 100 %");
    // Roll-forwards come after the Stable ring, before the pod's deadline.
    world.advance(20);
    let mut late = moved(stable, 20, 2, ReportState::Final);
    late.cold.rolled_forward = 3;
    late.cold.fenced_load = 5;
    world.report_counts(&names[2], late);
    let actions = world.step();
    assert_eq!(world.warm_hit_percent(), Some(66.7), "20 warm of 30");
    let summary = world.moved_sessions();
    assert_eq!(
        (
            summary.cold.total,
            summary.cold.rolled_forward,
            summary.cold.fenced_load
        ),
        (10, 3, 5)
    );
    assert_eq!(
        (
            summary.cold_while_previous_alive,
            summary.cold_previous_gone
        ),
        (10, 0),
        "every losing pod drained: alive when its keys loaded cold"
    );
    let handoff: Vec<&PlannedEvent> = actions
        .events
        .iter()
        .filter(|e| e.reason == reasons::HANDOFF_REPORTED)
        .collect();
    assert_eq!(handoff.len(), 1);
    assert!(!handoff[0].warning);
    assert_eq!(
        handoff[0].note,
        format!(
            "ring version {stable}: warm 66.7 % (precopied 0, transferred 0, pushed 20, promoted 0; cold 10: absent 2, rolled forward 3, fenced load 5)"
        )
    );
    // Once final nothing changes, and nothing is written or emitted again.
    let status = world.status.clone();
    world.advance(600);
    let again = world.step();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(Some(again.status), status);
    assert_eq!(again.requeue_after, None);
}

#[test]
fn a_partial_missing_or_unreadable_report_gives_no_figure_and_names_the_pod() {
    for fault in ["partial", "missing", "unreadable"] {
        let (mut world, stable, names) = scaled(2, 3);
        for name in &names {
            world.report_moved(name, stable, 5, 1, ReportState::Final);
        }
        let culprit = names[1].clone();
        match fault {
            "partial" => world.report_moved(&culprit, stable, 1, 0, ReportState::Partial),
            "missing" => world.pod_mut(&culprit).progress.moved = None,
            _ => {
                world.pod_mut(&culprit).progress.moved =
                    Some(Err("moved sessions \"x\": not a report".to_owned()));
            }
        }
        world.step();
        assert_eq!(world.warm_hit_percent(), None, "{fault}");
        assert_eq!(world.reported().1, "Pending", "{fault}: within the wait");
        assert_eq!(
            world.moved_sessions().missing,
            std::slice::from_ref(&culprit),
            "{fault}"
        );
        assert!(world.events_of(reasons::MOVED_SESSIONS_MISSING).is_empty());

        world.advance(61);
        world.step();
        assert_eq!(world.warm_hit_percent(), None, "{fault}");
        let (status, reason, message) = world.reported();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ReportsMissing"),
            "{fault}"
        );
        assert!(message.contains(&culprit), "{fault}: {message}");
        let events = world.events_of(reasons::MOVED_SESSIONS_MISSING);
        assert_eq!(events.len(), 1, "{fault}");
        assert!(events[0].warning && events[0].note.contains(&culprit));
        // Emitted once, and the status does not flap.
        let status = world.status.clone();
        world.advance(30);
        let again = world.step();
        assert!(again.events.is_empty(), "{fault}: {:?}", again.events);
        assert_eq!(Some(again.status), status, "{fault}");
    }
}

#[test]
fn once_final_the_figure_is_kept_when_a_pod_restarts_later() {
    let (mut world, stable, names) = scaled(3, 4);
    for name in &names {
        world.report_moved(name, stable, 0, 0, ReportState::Final);
    }
    world.report_moved(&names[3], stable, 197, 3, ReportState::Final);
    world.step();
    assert_eq!(world.warm_hit_percent(), Some(98.5));
    let kept = world.moved_sessions();

    // The pod restarts and reports that transition as partial, then counts move.
    world.advance(120);
    world.report_moved(&names[3], stable, 1, 0, ReportState::Partial);
    world.report_moved(&names[0], stable, 0, 50, ReportState::Final);
    let actions = world.step();
    assert_eq!(world.warm_hit_percent(), Some(98.5));
    assert_eq!(world.moved_sessions(), kept);
    assert_eq!(world.reported().1, "Complete");
    assert!(actions.events.is_empty(), "{:?}", actions.events);
}

#[test]
fn no_moved_session_is_complete_without_a_figure() {
    let (mut world, stable, names) = scaled(2, 3);
    for name in &names {
        world.report_moved(name, stable, 0, 0, ReportState::Final);
    }
    world.step();
    assert_eq!(world.warm_hit_percent(), None);
    assert_eq!(world.reported().1, "Complete");
    let handoff = world.events_of(reasons::HANDOFF_REPORTED);
    assert_eq!(handoff.len(), 1);
    assert!(
        handoff[0].note.ends_with("no session moved"),
        "{}",
        handoff[0].note
    );
}

#[test]
fn the_reporting_condition_appears_with_the_first_transition() {
    let mut world = World::converged(2);
    assert!(
        world.status.as_ref().unwrap().last_transition.is_none(),
        "creating the first ring is no transition"
    );
    let types: Vec<String> = world
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .map(|c| c.type_.clone())
        .collect();
    assert!(
        !types.iter().any(|t| t == MOVED_SESSIONS_REPORTED),
        "{types:?}"
    );
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    world.step(); // Warm
    assert_eq!(world.ring().phase(), RingPhase::Warm);
    let (status, reason, _) = world.reported();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("Unknown", "TransitionInProgress")
    );
}

#[test]
fn cold_takeovers_after_a_losing_pod_was_fenced_by_deletion_count_as_previous_gone() {
    let mut world = World::converged(3);
    world.spec.replicas = 2;
    world.step();
    world.report(Reports::All);
    world.step(); // Switch
    let leaving = world.slot_pod(2);
    world.report(Reports::ObservedOnly);
    world.advance(30);
    world.step(); // the leaving pod is deleted to fence it
    world.vanish(&leaving);
    world.step(); // Stable
    assert_eq!(world.ring().phase(), RingPhase::Stable);
    let stable = world.ring().version();
    assert_eq!(
        world.last_transition().losers_gone,
        std::slice::from_ref(&leaving)
    );
    let names: Vec<String> = (0..2).map(|s| world.slot_pod(s)).collect();
    let mut counts = moved(stable, 4, 1, ReportState::Final);
    counts.cold.rolled_forward = 2;
    counts.cold.fenced_load = 3;
    world.report_counts(&names[0], counts);
    world.report_moved(&names[1], stable, 4, 0, ReportState::Final);
    world.step();
    let summary = world.moved_sessions();
    assert_eq!(
        summary.pods_expected, 2,
        "the leaving slot's pod reports nothing"
    );
    assert_eq!(
        (
            summary.cold_while_previous_alive,
            summary.cold_previous_gone
        ),
        (1, 5)
    );
    assert_eq!(world.warm_hit_percent(), Some(57.1), "8 warm of 14");
}

#[test]
fn the_expected_reporters_survive_a_later_ring_that_starts_no_transition() {
    let (mut world, stable, names) = scaled(2, 3);
    let meta = world.ring.as_ref().unwrap().meta.clone().unwrap();
    let expected: Vec<&str> = meta.reporters.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        expected,
        names.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // A ring that only tidies keeps the record and its reporters.
    let planner_meta = RingMeta {
        published_at: world.now,
        ..meta.clone()
    };
    let mut next = world.ring.clone().unwrap();
    next.meta = Some(planner_meta);
    world.ring = Some(next);
    for name in &names {
        world.report_moved(name, stable, 3, 1, ReportState::Final);
    }
    world.step();
    assert_eq!(world.warm_hit_percent(), Some(75.0));
}

// ----- what each step waits for ---------------------------------------------------------

#[test]
fn a_waiting_step_names_the_pods_that_hold_it_back_once_per_set() {
    let mut world = World::converged(3);
    world.spec.replicas = 5;
    world.step();
    world.ready_all();
    world.step(); // Warm
    let version = world.ring().version();
    let joining = [
        world.ring().slot(3).unwrap().pod.name.clone(),
        world.ring().slot(4).unwrap().pod.name.clone(),
    ];
    let first = world.step();
    let (_, reason, message) = world.condition(PROGRESSING);
    assert_eq!(reason, "ScaleUp");
    assert!(
        message.starts_with(&format!(
            "Warm ring version {version} waits for pods {}, {} to report warmed (timeouts.warm 30s, until ",
            joining[0], joining[1]
        )),
        "{message}"
    );
    let waiting: Vec<&PlannedEvent> = first
        .events
        .iter()
        .filter(|e| e.reason == reasons::STEP_WAITING)
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].note, message);
    assert!(!waiting[0].warning);

    // Nothing new: no second event, no status write.
    world.advance(5);
    let status = world.status.clone();
    let again = world.step();
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(Some(again.status), status);

    // One pod reports: the set changes, and says so once.
    world.pod_mut(&joining[0]).progress.warmed = Some(version);
    let fewer = world.step();
    let notes: Vec<&str> = fewer
        .events
        .iter()
        .filter(|e| e.reason == reasons::STEP_WAITING)
        .map(|e| e.note.as_str())
        .collect();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].contains(&format!("waits for pod {} to report warmed", joining[1])),
        "{}",
        notes[0]
    );
}

#[test]
fn a_switch_names_the_losing_pods_it_waits_for_and_the_drain_deadline() {
    let mut world = World::converged(3);
    world.spec.replicas = 2;
    world.step();
    world.report(Reports::All);
    world.step(); // Switch
    let version = world.ring().version();
    let leaving = world.slot_pod(2);
    world.report(Reports::ObservedOnly);
    world.advance(12);
    let waiting = world.step();
    let (_, _, message) = world.condition(PROGRESSING);
    assert!(
        message.starts_with(&format!(
            "Switch ring version {version} waits for pod {leaving} to report drained (timeouts.drain 30s, until "
        )),
        "{message}"
    );
    assert_eq!(
        waiting
            .events
            .iter()
            .filter(|e| e.reason == reasons::STEP_WAITING)
            .count(),
        1
    );
}

#[test]
fn capped_scale_up_moves_at_most_the_cap_per_step_and_ends_balanced() {
    let mut world = World::converged(2);
    world.spec.max_shard_moves_per_step = Some(5);
    world.spec.replicas = 4;
    world.settle(Reports::All);
    assert_converged(&world, 4);
    let mut warm_steps = 0;
    for pair in world.publishes.windows(2) {
        if let (Some(target), current) = (pair[1].target(), pair[1].current()) {
            warm_steps += 1;
            let moved = current.moves_to(target).unwrap().count();
            assert!(moved <= 5, "step moved {moved}");
        }
        assert!(pair[1].version() == pair[0].version() + 1);
    }
    // 64 shards over 4 slots from 2: 32 shards move, 5 per step.
    assert_eq!(warm_steps, 7);
}

#[test]
fn a_new_slot_that_is_not_ready_holds_back_the_slots_after_it() {
    let mut world = World::converged(2);
    world.spec.replicas = 4;
    world.step();
    let slot2 = world.pods_of(2)[0].name.clone();
    let slot3 = world.pods_of(3)[0].name.clone();
    world.set_ready(&slot3, true);
    let actions = world.step();
    assert!(
        actions.publish.is_none(),
        "slot 3 cannot join before slot 2"
    );
    world.set_ready(&slot2, true);
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(ring.slots().len(), 4);
}

// ----- scale down ---------------------------------------------------------------------------

#[test]
fn scale_down_marks_leaving_slots_and_deletes_their_pods_only_after_settle() {
    let mut world = World::converged(5);
    let before = world.ring().current().clone();
    let leaving: Vec<String> = (2..5).map(|s| world.slot_pod(s)).collect();
    world.spec.replicas = 2;
    let warm = world.step();
    let ring = &warm.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Warm);
    assert!(warm.delete.is_empty());
    for s in 2..5 {
        assert_eq!(ring.slot(s).unwrap().state, SlotState::Leaving);
    }
    for m in before.moves_to(ring.target().unwrap()).unwrap() {
        assert!(m.from >= 2 && m.to < 2, "only leaving slots give: {m:?}");
    }
    world.report(Reports::All);
    let switch = world.step();
    let ring = &switch.publish.as_ref().unwrap().ring;
    assert!(switch.delete.is_empty());
    for s in 2..5 {
        assert_eq!(ring.slot(s).unwrap().state, SlotState::Draining);
    }
    world.report(Reports::All);
    let settle = world.step();
    assert_eq!(settle.publish.as_ref().unwrap().ring.slots().len(), 2);
    let deleted: Vec<String> = settle.delete.iter().map(|d| d.name.clone()).collect();
    assert_eq!(deleted, leaving);
    assert!(world.progressing(), "pods are still being deleted");
    assert!(world.step().is_idle());
    assert_converged(&world, 2);
    assert_eq!(
        world
            .status
            .as_ref()
            .unwrap()
            .last_transition
            .as_ref()
            .unwrap()
            .kind,
        crate::crd::TransitionKind::ScaleDown
    );
}

#[test]
fn scale_three_to_five_to_two() {
    let mut world = World::converged(3);
    world.spec.replicas = 5;
    world.settle(Reports::All);
    assert_converged(&world, 5);
    world.spec.replicas = 2;
    world.settle(Reports::All);
    assert_converged(&world, 2);
}

// ----- timeouts -----------------------------------------------------------------------------

#[test]
fn warm_rolls_forward_when_pods_never_report_warmed() {
    let mut world = World::converged(2);
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    let warm = world.step();
    assert_eq!(warm.publish.as_ref().unwrap().ring.phase(), RingPhase::Warm);
    world.report(Reports::ObservedOnly);
    world.advance(29);
    assert!(world.step().publish.is_none());
    world.advance(1);
    let switch = world.step();
    assert_eq!(
        switch.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Switch
    );
    assert!(
        switch
            .events
            .iter()
            .any(|e| e.warning && e.reason == reasons::TIMEOUT)
    );
    assert!(switch.steps[0].phase_seconds.unwrap() >= 30.0);
}

#[test]
fn a_leaving_pod_that_never_drains_is_deleted_past_the_drain_timeout_and_settles_once_gone() {
    let mut world = World::converged(3);
    world.spec.replicas = 2;
    world.step();
    world.report(Reports::All);
    world.step(); // Switch
    assert_eq!(world.ring().phase(), RingPhase::Switch);
    let switch_version = world.ring().version();
    let leaving = world.slot_pod(2);
    // Pods observe, but the leaving pod never reports drained: wait for timeouts.drain (30s).
    world.report(Reports::ObservedOnly);
    world.advance(29);
    let waiting = world.step();
    assert!(waiting.is_idle());
    assert_eq!(world.status.as_ref().unwrap().phase, Phase::Settle);
    world.advance(1);
    let fence = world.step();
    assert!(fence.publish.is_none(), "a timeout alone never settles");
    assert_eq!(
        fence
            .delete
            .iter()
            .map(|d| (d.name.as_str(), d.reason))
            .collect::<Vec<_>>(),
        [(leaving.as_str(), fencing::DRAIN_STALLED)]
    );
    let stalled: Vec<&PlannedEvent> = fence
        .events
        .iter()
        .filter(|e| e.reason == reasons::DRAIN_STALLED)
        .collect();
    assert_eq!(stalled.len(), 1);
    assert!(stalled[0].warning);
    assert!(stalled[0].note.contains(&leaving), "{}", stalled[0].note);
    let (status, reason, message) = world.condition(PROGRESSING);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", reasons::DRAIN_STALLED)
    );
    assert!(
        message.contains(&format!("ring version {switch_version}")),
        "{message}"
    );

    // While it terminates: no new ring, no second deletion, no second event.
    world.linger(&leaving);
    world.advance(5);
    let terminating = world.step();
    assert!(terminating.is_idle(), "{terminating:?}");
    assert!(terminating.events.is_empty(), "{:?}", terminating.events);
    assert_eq!(
        world.condition(crate::crd::DEGRADED).1,
        reasons::DRAIN_STALLED
    );

    world.vanish(&leaving);
    let settled = world.step();
    assert_eq!(
        settled.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Stable
    );
    assert_eq!(world.condition(crate::crd::DEGRADED).1, "AsExpected");
    world.settle(Reports::All);
    assert_converged(&world, 2);
}

#[test]
fn settle_rolls_forward_on_the_observed_timeout_once_losing_pods_are_fenced() {
    // Nobody reports at all: the leaving pod is deleted at the drain timeout (30s), the
    // settle timeout (60s) rules the rest.
    let mut world = World::converged(3);
    world.spec.replicas = 2;
    world.step();
    world.report(Reports::All);
    world.step();
    world.advance(30);
    let fence = world.step();
    assert_eq!(fence.delete.len(), 1);
    assert!(fence.publish.is_none());
    world.advance(29);
    assert!(world.step().publish.is_none());
    assert_eq!(world.status.as_ref().unwrap().phase, Phase::Switch);
    world.advance(1);
    assert!(world.step().publish.is_some());
    let degraded = &world.status.as_ref().unwrap().conditions[2];
    assert_eq!(degraded.reason, "StepTimedOut");
    assert!(degraded.message.contains("settle"), "{}", degraded.message);
}

#[test]
fn an_unready_losing_pod_blocks_the_settle_and_its_deletion_unblocks_it() {
    let mut world = World::converged(3);
    world.spec.replicas = 4;
    world.step();
    world.ready_all();
    world.step(); // Warm
    world.report(Reports::All);
    world.step(); // Switch
    let ring = world.ring().clone();
    assert_eq!(ring.phase(), RingPhase::Switch);
    let previous = ring.previous().unwrap();
    let loser = (0..3)
        .find(|&s| previous.counts()[&s] > ring.current().counts()[&s])
        .unwrap();
    let pod = world.slot_pod(loser);
    // Cut off before it drained: not Ready, no report (report() skips unready pods).
    world.set_ready(&pod, false);
    world.report(Reports::All);
    let blocked = world.step();
    assert!(
        blocked.publish.is_none(),
        "an unready losing pod is not skipped"
    );
    assert!(blocked.delete.is_empty());
    world.advance(100);
    let stalled = world.step();
    assert!(stalled.publish.is_none(), "not even past every timeout");
    assert!(
        stalled.delete.is_empty(),
        "it stays in the ring: not deleted"
    );

    // The pod is gone (deleted by hand, say): fenced.
    world.vanish(&pod);
    let settled = world.step();
    assert_eq!(
        settled.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Stable
    );
}

#[test]
fn a_staying_pod_that_never_drains_keeps_the_switch_and_says_why() {
    let mut world = World::converged(3);
    world.spec.replicas = 4;
    world.step();
    world.ready_all();
    world.step(); // Warm
    world.report(Reports::All);
    world.step(); // Switch
    let version = world.ring().version();
    // Everyone observes; nobody drains (a stuck SDK in the slots that lose shards).
    world.report(Reports::ObservedOnly);
    world.advance(30);
    let stalled = world.step();
    assert!(stalled.publish.is_none());
    assert!(
        stalled.delete.is_empty(),
        "pods that stay are never deleted"
    );
    assert_eq!(
        stalled.requeue_after, None,
        "nothing to wait for but the pods"
    );
    let event = stalled
        .events
        .iter()
        .find(|e| e.reason == reasons::DRAIN_STALLED)
        .unwrap();
    assert!(event.warning);
    let (status, reason, message) = world.condition(PROGRESSING);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", reasons::DRAIN_STALLED)
    );
    assert!(
        message.contains(&format!("ring version {version}")),
        "{message}"
    );
    for s in 0..3 {
        assert!(message.contains(&world.slot_pod(s)), "{message}");
    }
    assert!(message.contains("stays in the ring"), "{message}");
    assert_eq!(
        world.condition(crate::crd::DEGRADED).1,
        reasons::DRAIN_STALLED
    );

    // An hour later: still waiting, no new event.
    world.advance(3600);
    let later = world.step();
    assert!(later.is_idle() && later.events.is_empty(), "{later:?}");
    assert_eq!(world.ring().version(), version);

    // They drain after all: settle.
    world.report(Reports::All);
    let settled = world.step();
    assert_eq!(
        settled.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Stable
    );
    world.settle(Reports::All);
    assert_converged(&world, 4);
}

/// A `Switch` of a scale-up 3 -> 4 (everyone warmed and observed), and a slot that lost
/// shards in it.
fn scale_up_switch(world: &mut World) -> u16 {
    world.spec.replicas = 4;
    world.step();
    world.ready_all();
    world.step(); // Warm
    world.report(Reports::All);
    world.step(); // Switch
    let ring = world.ring().clone();
    assert_eq!(ring.phase(), RingPhase::Switch);
    let previous = ring.previous().unwrap().counts();
    let current = ring.current().counts();
    (0..3)
        .find(|s| previous.get(s) > current.get(s))
        .expect("a slot that lost shards")
}

#[test]
fn a_finished_losing_pod_is_deleted_past_the_drain_timeout_even_if_its_slot_stays() {
    let mut world = World::converged(3);
    let loser = scale_up_switch(&mut world);
    let pod = world.slot_pod(loser);
    world.set_ready(&pod, false);
    world.pod_mut(&pod).terminal = true;
    world.report(Reports::All);
    let within = world.step();
    assert!(
        within.publish.is_none() && within.delete.is_empty(),
        "within timeouts.drain: {within:?}"
    );
    assert_eq!(within.create.len(), 1, "a replacement starts");
    world.advance(30);
    let fence = world.step();
    assert_eq!(
        fence
            .delete
            .iter()
            .map(|d| (d.name.as_str(), d.reason))
            .collect::<Vec<_>>(),
        [(pod.as_str(), fencing::DRAIN_STALLED)]
    );
    assert!(fence.publish.is_none());
    world.settle(Reports::All);
    assert_converged(&world, 4);
}

#[test]
fn a_losing_pod_of_a_slot_marked_unavailable_is_deleted_past_the_drain_timeout() {
    let mut world = World::new(3);
    world.spec.on_pod_failure = crate::crd::PodFailurePolicy::Wait;
    world.settle(Reports::All);
    let failed = world.slot_pod(2);
    world.set_ready(&failed, false);
    world.advance(10);
    world.step(); // slot 2 marked unavailable; its replacement never becomes Ready here
    assert_eq!(world.ring().slot(2).unwrap().state, SlotState::Unavailable);
    world.spec.replicas = 4;
    world.step();
    let joiner = world.pods_of(3)[0].name.clone();
    world.set_ready(&joiner, true);
    world.step(); // Warm
    assert_eq!(world.ring().phase(), RingPhase::Warm);
    world.report(Reports::All);
    world.step(); // Switch
    let ring = world.ring().clone();
    assert_eq!(ring.phase(), RingPhase::Switch);
    assert!(
        ring.previous().unwrap().counts()[&2] > ring.current().counts()[&2],
        "slot 2 lost shards to slot 3"
    );
    world.report(Reports::All);
    world.advance(30);
    let fence = world.step();
    assert!(
        fence
            .delete
            .iter()
            .any(|d| d.name == failed && d.reason == fencing::DRAIN_STALLED),
        "{:?}",
        fence.delete
    );
    world.settle(Reports::All);
    assert_converged(&world, 4);
}

#[test]
fn the_remembered_ring_is_the_last_one_with_the_highest_version_seen() {
    let mut world = World::converged(2);
    let first = world.ring.clone().unwrap();
    world.spec.replicas = 3;
    world.settle(Reports::All);
    let last = world.ring.clone().unwrap();
    let remembered = RememberedRing::remember(None, &last);
    assert_eq!(remembered.highest, last.ring.version());
    // An older document read later (restored by someone else) is the last one, but the
    // highest version stays.
    let again = RememberedRing::remember(Some(&remembered), &first);
    assert_eq!(again.last, first);
    assert_eq!(again.highest, last.ring.version());
}

#[test]
fn a_predecessor_that_never_drains_is_deleted_past_the_drain_timeout() {
    let mut world = World::converged(2);
    world.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    world.step(); // surge pod
    world.ready_all();
    world.step(); // Warm with a successor
    world.report(Reports::All);
    world.step(); // Switch
    let predecessor = world
        .ring()
        .slots()
        .iter()
        .find_map(|s| s.predecessor.clone())
        .unwrap()
        .name;
    world.report(Reports::ObservedOnly);
    world.advance(30);
    let fence = world.step();
    assert_eq!(
        fence
            .delete
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        [predecessor.as_str()]
    );
    assert!(fence.publish.is_none());
    world.linger(&predecessor);
    assert!(
        world.step().publish.is_none(),
        "settles only once it is gone"
    );
    world.vanish(&predecessor);
    assert_eq!(
        world.step().publish.as_ref().unwrap().ring.phase(),
        RingPhase::Stable
    );
}

#[test]
fn a_ring_without_bookkeeping_nor_sighting_counts_every_deadline_as_passed() {
    let mut world = World::converged(2);
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    world.step();
    world.ring.as_mut().unwrap().meta = None;
    let switch = world.step();
    assert_eq!(
        switch.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Switch
    );
}

// ----- deadlines on the operator's own clock ---------------------------------------------
//
// A standby whose clock runs ahead of the recorded times takes over: every deadline starts at
// the later of the recorded time and the moment this process first saw the state.

/// A scale-down 3 → 2 in its `Switch`, published at `world.now`, in which nobody reports:
/// returns the leaving pod.
fn silent_scale_down_switch(world: &mut World) -> String {
    world.spec.replicas = 2;
    world.step();
    world.report(Reports::All);
    world.step();
    assert_eq!(world.ring().phase(), RingPhase::Switch);
    world.slot_pod(2)
}

#[test]
fn a_switch_published_long_ago_by_its_record_waits_drain_and_settle_from_its_first_sighting() {
    let mut world = World::converged(3);
    let leaving = silent_scale_down_switch(&mut world);
    // Published 100 s ago by its record (a clock ahead of the publisher's), first seen by
    // this process 5 s ago (it just took over).
    world.advance(100);
    world.ring_first_seen(5);
    assert_eq!(
        world.plan_from_recorded_times().delete.len(),
        1,
        "by the recorded time alone, timeouts.drain has passed"
    );

    let waiting = world.step();
    assert!(waiting.is_idle(), "{waiting:?}");
    assert!(!world.reasons().contains(&reasons::DRAIN_STALLED));
    assert_eq!(world.status.as_ref().unwrap().phase, Phase::Switch);
    let requeue = waiting.requeue_after.unwrap();
    assert!(
        requeue > Duration::from_secs(24) && requeue <= Duration::from_secs(26),
        "{requeue:?}: at the drain deadline, 30 s after the first sighting"
    );
    world.advance(24);
    assert!(world.step().is_idle(), "29 s after the first sighting");

    world.advance(1);
    let fence = world.step();
    assert!(fence.publish.is_none());
    assert_eq!(
        fence
            .delete
            .iter()
            .map(|d| (d.name.as_str(), d.reason))
            .collect::<Vec<_>>(),
        [(leaving.as_str(), fencing::DRAIN_STALLED)],
        "timeouts.drain has passed on this process's clock"
    );

    // Fenced once gone, but nobody observed the Switch: timeouts.settle (60 s) also counts
    // from the first sighting.
    world.vanish(&leaving);
    let waiting = world.step();
    assert!(waiting.publish.is_none(), "{waiting:?}");
    world.advance(29);
    assert!(
        world.step().publish.is_none(),
        "59 s after the first sighting"
    );
    world.advance(1);
    let settled = world.step();
    assert_eq!(
        settled.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Stable
    );
    assert!(
        settled
            .events
            .iter()
            .any(|e| e.reason == reasons::TIMEOUT && e.note.contains("settle"))
    );
}

#[test]
fn a_warm_ring_published_long_ago_by_its_record_waits_timeouts_warm_from_its_first_sighting() {
    let mut world = World::converged(2);
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    world.step();
    assert_eq!(world.ring().phase(), RingPhase::Warm);
    world.report(Reports::ObservedOnly);
    world.advance(100);
    world.ring_first_seen(5);
    assert!(world.plan_from_recorded_times().publish.is_some());
    assert!(world.step().publish.is_none());
    world.advance(24);
    assert!(world.step().publish.is_none());
    world.advance(1);
    assert_eq!(
        world.step().publish.as_ref().unwrap().ring.phase(),
        RingPhase::Switch
    );
}

#[test]
fn a_pod_unready_long_ago_by_its_record_gets_its_full_grace_from_its_first_sighting() {
    let mut world = World::converged(3);
    let failed = world.slot_pod(1);
    world.set_ready(&failed, false);
    // Not Ready for 100 s by its condition's time, first seen so by this process 2 s ago.
    world.advance(100);
    world.pod_first_seen(&failed, 2);
    let hasty = world.plan_from_recorded_times();
    assert!(
        hasty.publish.is_some() && !hasty.create.is_empty(),
        "by the recorded time alone, unreadyGrace has passed"
    );

    let within = world.step();
    assert!(within.is_idle(), "Reroute does not fire: {within:?}");
    assert!(!world.reasons().contains(&reasons::REROUTED));
    let requeue = within.requeue_after.unwrap();
    assert!(
        requeue > Duration::from_secs(7) && requeue <= Duration::from_secs(9),
        "{requeue:?}: at the end of the grace, 10 s after the first sighting"
    );
    world.advance(7);
    assert!(world.step().is_idle(), "9 s after the first sighting");

    world.advance(1);
    let reroute = world.step();
    assert_eq!(
        reroute.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Switch
    );
    assert!(reroute.events.iter().any(|e| e.reason == reasons::REROUTED));
    assert_eq!(reroute.create.len(), 1, "a replacement starts");
}

#[test]
fn a_sighting_of_another_state_does_not_delay_a_deadline() {
    // The pod was seen Ready 2 s ago, but it is not Ready now (a state not seen before, as
    // the controller would have recorded anew): its grace counts from its condition.
    let mut world = World::converged(3);
    let failed = world.slot_pod(1);
    world.pod_first_seen(&failed, 0);
    world.set_ready(&failed, false);
    world.advance(10);
    assert!(world.step().publish.is_some(), "rerouted at the grace");

    // A (late) sighting of the Warm ring does not delay the Switch that followed it.
    let mut world = World::converged(3);
    silent_scale_down_switch(&mut world);
    world.first_seen.ring = Some(RingSeen {
        version: world.ring().version() - 1,
        phase: RingPhase::Warm,
        at: world.now + SignedDuration::from_secs(20),
    });
    world.advance(30);
    assert_eq!(world.step().delete.len(), 1, "timeouts.drain passed");
}

#[test]
fn a_recorded_time_later_than_the_first_sighting_is_kept() {
    // This process's clock is behind the publisher's: it saw the Switch "100 s before" its
    // recorded publish. The later of the two, the recorded time, rules.
    let mut world = World::converged(3);
    let leaving = silent_scale_down_switch(&mut world);
    world.ring_first_seen(100);
    world.advance(29);
    assert!(world.step().is_idle());
    world.advance(1);
    assert_eq!(
        world
            .step()
            .delete
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        [leaving.as_str()]
    );

    // Same for a pod's readiness.
    let mut world = World::converged(3);
    let failed = world.slot_pod(1);
    world.set_ready(&failed, false);
    world.pod_first_seen(&failed, 100);
    world.advance(9);
    assert!(world.step().is_idle(), "within the grace by the record");
    world.advance(1);
    let reroute = world.step();
    assert!(reroute.events.iter().any(|e| e.reason == reasons::REROUTED));
}

// ----- rollouts -----------------------------------------------------------------------------

#[test]
fn surge_rollout_hands_each_slot_to_a_new_pod_without_moving_shards() {
    let mut world = World::converged(3);
    let table = world.ring().current().clone();
    let old: Vec<String> = (0..3).map(|s| world.slot_pod(s)).collect();
    world.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    let revision = naming::revision(&world.spec.template);

    let surge = world.step();
    assert_eq!(surge.create.len(), 1, "one surge pod at a time");
    assert_eq!(surge.create[0].slot, 0);
    assert_eq!(surge.create[0].revision, revision);
    let surge_pod = surge.create[0].name.clone();
    assert!(
        world.step().create.is_empty(),
        "no second surge pod while the first starts"
    );

    world.set_ready(&surge_pod, true);
    let warm = world.step();
    let ring = &warm.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Warm);
    assert_eq!(
        ring.slot(0).unwrap().successor.as_ref().unwrap().name,
        surge_pod
    );
    assert_eq!(ring.target(), Some(&table));

    world.report(Reports::All);
    let switch = world.step();
    let ring = &switch.publish.as_ref().unwrap().ring;
    assert_eq!(ring.slot(0).unwrap().pod.name, surge_pod);
    assert_eq!(
        ring.slot(0).unwrap().predecessor.as_ref().unwrap().name,
        old[0]
    );
    assert!(switch.delete.is_empty(), "the predecessor drains first");

    world.report(Reports::All);
    let settle = world.step();
    assert_eq!(
        settle
            .delete
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        [old[0].as_str()]
    );

    world.settle(Reports::All);
    assert_converged(&world, 3);
    assert!(
        world.publishes.iter().all(|r| r.current() == &table),
        "no shard moved"
    );
    for (slot, old) in old.iter().enumerate() {
        assert_ne!(&world.slot_pod(slot as u16), old);
    }
    assert!(world.pods.iter().all(|p| p.revision == revision));
    let record = world
        .status
        .as_ref()
        .unwrap()
        .last_transition
        .clone()
        .unwrap();
    assert_eq!(record.kind, crate::crd::TransitionKind::Rollout);
}

#[test]
fn in_place_update_restarts_pods_one_at_a_time_keeping_names_and_ring() {
    let mut world = World::new(3);
    world.spec.update_strategy.type_ = crate::crd::UpdateStrategyType::InPlace;
    world.spec.snapshot = Some(crate::crd::SnapshotSpec::default());
    world.settle(Reports::All);
    let ring_before = world.ring().clone();
    let names: Vec<String> = (0..3).map(|s| world.slot_pod(s)).collect();
    world.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    let revision = naming::revision(&world.spec.template);

    let first = world.step();
    assert!(first.create.is_empty() && first.publish.is_none());
    assert_eq!(first.update.len(), 1);
    assert_eq!(first.update[0].name, names[0]);
    assert_eq!(first.update[0].revision, revision);
    // The node has not restarted the container yet: the next pod waits.
    assert!(world.step().update.is_empty());
    // Restarting: not Ready (within the grace period), then Ready with the new image.
    world.set_ready(&names[0], false);
    assert!(world.step().is_idle());
    world.advance(3);
    world.set_ready(&names[0], true);
    let second = world.step();
    assert_eq!(second.update.len(), 1);
    assert_eq!(second.update[0].name, names[1]);

    world.settle(Reports::All);
    assert_converged(&world, 3);
    assert_eq!(world.ring(), &ring_before, "the ring never changed");
    assert_eq!((0..3).map(|s| world.slot_pod(s)).collect::<Vec<_>>(), names);
    assert!(world.pods.iter().all(|p| p.revision == revision));
    assert_eq!(
        world
            .reasons()
            .iter()
            .filter(|r| **r == reasons::IN_PLACE)
            .count(),
        3
    );
}

#[test]
fn in_place_falls_back_to_surge_when_more_than_images_change() {
    let mut world = World::new(2);
    world.spec.update_strategy.type_ = crate::crd::UpdateStrategyType::InPlace;
    world.spec.snapshot = Some(crate::crd::SnapshotSpec::default());
    world.settle(Reports::All);
    world.spec.template.spec.as_mut().unwrap().containers[0].args = Some(vec!["--fast".into()]);
    let actions = world.step();
    assert!(actions.update.is_empty());
    assert_eq!(actions.create.len(), 1);
    world.settle(Reports::All);
    assert_converged(&world, 2);
}

// ----- failures -----------------------------------------------------------------------------

#[test]
fn reroute_moves_a_failed_slots_shards_then_the_replacement_rejoins() {
    let mut world = World::converged(3);
    let failed = world.slot_pod(1);
    world.set_ready(&failed, false);

    // Within unreadyGrace (10s): nothing but a requeue at the deadline.
    let within = world.step();
    assert!(within.is_idle());
    assert!(within.requeue_after.unwrap() <= Duration::from_secs(11));
    assert_eq!(
        world.status.as_ref().unwrap().conditions[2].reason,
        "SlotsUnavailable"
    );

    world.advance(10);
    let reroute = world.step();
    let ring = &reroute.publish.as_ref().unwrap().ring;
    assert_eq!(
        ring.phase(),
        RingPhase::Switch,
        "no warm step: the new owners load cold"
    );
    assert_eq!(ring.slot(1).unwrap().state, SlotState::Draining);
    assert!(!ring.current().counts().contains_key(&1));
    assert_eq!(reroute.create.len(), 1, "a replacement starts");
    assert_eq!(reroute.create[0].slot, 1);
    assert!(reroute.events.iter().any(|e| e.reason == reasons::REROUTED));
    assert_eq!(
        reroute
            .delete
            .iter()
            .map(|d| (d.name.as_str(), d.reason))
            .collect::<Vec<_>>(),
        [(failed.as_str(), fencing::REROUTED)],
        "the failed pod is deleted so that it is fenced once gone"
    );

    // The failed pod cannot report drained; the others observe. While it terminates, the
    // Switch waits (its new owners answer 503 for keys it did not hand over).
    world.linger(&failed);
    world.report(Reports::All);
    let terminating = world.step();
    assert!(terminating.is_idle(), "{terminating:?}");
    world.advance(60);
    assert!(world.step().publish.is_none(), "no timeout settles it");
    world.vanish(&failed);
    let settle = world.step();
    let ring = &settle.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Stable);
    assert_eq!(ring.slot(1).unwrap().state, SlotState::Unavailable);
    assert!(settle.delete.is_empty());

    world.settle(Reports::All);
    assert_converged(&world, 3);
    assert_ne!(world.slot_pod(1), failed);
    let kinds: Vec<_> = world.publishes.iter().map(Ring::phase).collect();
    assert!(
        kinds.contains(&RingPhase::Warm),
        "the replacement rejoined warm: {kinds:?}"
    );
}

#[test]
fn wait_marks_the_slot_unavailable_and_the_replacement_takes_over() {
    let mut world = World::new(3);
    world.spec.on_pod_failure = crate::crd::PodFailurePolicy::Wait;
    world.settle(Reports::All);
    let table = world.ring().current().clone();
    let failed = world.slot_pod(2);
    world.set_ready(&failed, false);
    world.advance(10);
    let mark = world.step();
    let ring = &mark.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Stable);
    assert_eq!(ring.slot(2).unwrap().state, SlotState::Unavailable);
    assert_eq!(ring.current(), &table, "the slot keeps its shards");
    assert_eq!(mark.create.len(), 1);
    let replacement = mark.create[0].name.clone();
    let available = &world.status.as_ref().unwrap().conditions[0];
    assert_eq!(available.status, "False");

    world.set_ready(&replacement, true);
    // The failed pod may still serve (cut off): deleted first; the replacement takes the
    // slot over once it is gone.
    let fence = world.step();
    assert!(fence.publish.is_none());
    assert_eq!(
        fence
            .delete
            .iter()
            .map(|d| (d.name.as_str(), d.reason))
            .collect::<Vec<_>>(),
        [(failed.as_str(), fencing::REPLACED)]
    );
    world.linger(&failed);
    let terminating = world.step();
    assert!(terminating.is_idle(), "{terminating:?}");
    world.vanish(&failed);
    let takeover = world.step();
    let ring = &takeover.publish.as_ref().unwrap().ring;
    assert_eq!(ring.slot(2).unwrap().pod.name, replacement);
    assert_eq!(ring.slot(2).unwrap().state, SlotState::Active);
    assert!(takeover.delete.is_empty());
    assert_eq!(ring.current(), &table);
    world.settle(Reports::All);
    assert_converged(&world, 3);
}

#[test]
fn wait_recovers_the_same_pod_if_it_comes_back_first() {
    let mut world = World::new(2);
    world.spec.on_pod_failure = crate::crd::PodFailurePolicy::Wait;
    world.settle(Reports::All);
    let pod = world.slot_pod(0);
    world.set_ready(&pod, false);
    world.advance(10);
    let mark = world.step();
    let replacement = mark.create[0].name.clone();
    world.set_ready(&pod, true);
    let recover = world.step();
    assert_eq!(
        recover
            .publish
            .as_ref()
            .unwrap()
            .ring
            .slot(0)
            .unwrap()
            .state,
        SlotState::Active
    );
    assert_eq!(
        recover
            .delete
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        [replacement.as_str()]
    );
    assert!(world.reasons().contains(&reasons::RECOVERED));
}

#[test]
fn a_blip_shorter_than_the_grace_period_changes_nothing() {
    let mut world = World::converged(3);
    let pod = world.slot_pod(0);
    world.set_ready(&pod, false);
    world.advance(5);
    assert!(world.step().is_idle());
    world.set_ready(&pod, true);
    world.advance(10);
    assert!(world.step().is_idle());
    assert_converged(&world, 3);
}

#[test]
fn every_slot_failing_under_reroute_marks_them_unavailable() {
    let mut world = World::converged(2);
    for s in 0..2 {
        let pod = world.slot_pod(s);
        world.set_ready(&pod, false);
    }
    world.advance(10);
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Stable, "nobody to reroute to");
    assert!(
        ring.slots()
            .iter()
            .all(|s| s.state == SlotState::Unavailable)
    );
    world.settle(Reports::All);
    assert_converged(&world, 2);
}

#[test]
fn an_evicted_pod_that_still_serves_hands_its_slot_to_a_surge_pod() {
    let mut world = World::converged(3);
    let table = world.ring().current().clone();
    let evicted = world.slot_pod(1);
    world.pod_mut(&evicted).deleting = true;
    let start = world.step();
    assert_eq!(start.create.len(), 1, "replacement starts at once");
    assert!(start.delete.is_empty(), "it is already being deleted");
    let replacement = start.create[0].name.clone();
    world.set_ready(&replacement, true);
    let warm = world.step();
    let ring = &warm.publish.as_ref().unwrap().ring;
    assert_eq!(
        ring.slot(1).unwrap().successor.as_ref().unwrap().name,
        replacement
    );
    world.report(Reports::All);
    world.step();
    assert_eq!(
        world
            .ring()
            .slot(1)
            .unwrap()
            .predecessor
            .as_ref()
            .unwrap()
            .name,
        evicted
    );
    // The evicted pod finishes terminating.
    world.pods.retain(|p| p.name != evicted);
    world.settle(Reports::All);
    assert_converged(&world, 3);
    assert_eq!(world.slot_pod(1), replacement);
    assert!(world.publishes.iter().all(|r| r.current() == &table));
}

#[test]
fn a_pod_that_vanished_is_replaced_and_the_replacement_takes_over_within_grace() {
    let mut world = World::converged(3);
    let gone = world.slot_pod(0);
    world.pods.retain(|p| p.name != gone);
    let start = world.step();
    assert_eq!(start.create.len(), 1);
    assert!(
        start.publish.is_none(),
        "within the grace period, wait for the replacement"
    );
    let replacement = start.create[0].name.clone();
    world.advance(3);
    world.set_ready(&replacement, true);
    let takeover = world.step();
    assert_eq!(
        takeover
            .publish
            .as_ref()
            .unwrap()
            .ring
            .slot(0)
            .unwrap()
            .pod
            .name,
        replacement
    );
    assert!(world.reasons().contains(&reasons::TAKEOVER));
}

#[test]
fn a_replacement_takes_over_from_an_unready_terminating_pod_once_it_is_gone() {
    let mut world = World::converged(3);
    let table = world.ring().current().clone();
    let old = world.slot_pod(1);
    world.pod_mut(&old).deleting = true;
    world.set_ready(&old, false);
    let start = world.step();
    assert_eq!(start.create.len(), 1);
    let replacement = start.create[0].name.clone();
    world.set_ready(&replacement, true);
    world.advance(15);
    // Past the grace period with a Ready replacement: neither a takeover (the old pod may
    // still serve) nor a reroute (the slot has its replacement).
    let waiting = world.step();
    assert!(waiting.is_idle(), "{waiting:?}");
    assert_eq!(world.ring().phase(), RingPhase::Stable);
    world.vanish(&old);
    let takeover = world.step();
    let ring = &takeover.publish.as_ref().unwrap().ring;
    assert_eq!(ring.slot(1).unwrap().pod.name, replacement);
    assert_eq!(ring.current(), &table, "no shard moved");
}

#[test]
fn a_failed_pod_with_phase_failed_is_deleted_once_replaced() {
    let mut world = World::converged(2);
    let pod = world.slot_pod(1);
    world.pod_mut(&pod).terminal = true;
    world.set_ready(&pod, false);
    world.settle(Reports::All);
    assert_converged(&world, 2);
    assert!(world.deleted.contains(&pod));
}

// ----- aborts, restarts, no-ops -------------------------------------------------------------

#[test]
fn warm_is_withdrawn_when_a_joining_pod_disappears() {
    let mut world = World::converged(2);
    let table = world.ring().current().clone();
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    world.step();
    assert_eq!(world.ring().phase(), RingPhase::Warm);
    let joiner = world.slot_pod(2);
    world.pods.retain(|p| p.name != joiner);
    let abort = world.step();
    let ring = &abort.publish.as_ref().unwrap().ring;
    assert_eq!(ring.phase(), RingPhase::Stable);
    assert_eq!(ring.current(), &table);
    assert!(abort.events.iter().any(|e| e.reason == reasons::ABORTED));
    assert_eq!(abort.create.len(), 1, "a new pod for slot 2");
    world.settle(Reports::All);
    assert_converged(&world, 3);
}

#[test]
fn warm_is_withdrawn_when_a_joining_pod_stays_unready_past_the_grace() {
    let mut world = World::converged(2);
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    world.step();
    let joiner = world.slot_pod(2);
    world.set_ready(&joiner, false);
    world.advance(9);
    assert!(
        world.step().publish.is_none(),
        "within the grace period it may recover"
    );
    world.advance(1);
    let abort = world.step();
    assert_eq!(
        abort.publish.as_ref().unwrap().ring.phase(),
        RingPhase::Stable
    );
    assert!(abort.events.iter().any(|e| e.reason == reasons::ABORTED));
    world.settle(Reports::All);
    assert_converged(&world, 3);
}

#[test]
fn planning_is_deterministic_so_a_restarted_operator_continues_the_transition() {
    let mut world = World::converged(3);
    world.spec.replicas = 4;
    world.step();
    world.ready_all();
    world.step(); // Warm published
    world.report(Reports::All);
    // Two operator instances (or one before and one after a restart) see the same state.
    let a = world.plan();
    let b = world.plan();
    assert_eq!(a, b);
    assert_eq!(a.publish.as_ref().unwrap().ring.phase(), RingPhase::Switch);
}

#[test]
fn a_stale_view_of_pods_plans_the_same_pod_names() {
    let mut world = World::converged(2);
    world.spec.replicas = 4;
    let first = world.plan();
    // The executor created the pods but the cache does not show them yet: planning again
    // yields the same names, so the second create is a no-op on the server.
    let again = world.plan();
    assert_eq!(first.create, again.create);
    world.apply(&first);
    assert!(world.plan().create.is_empty());
}

#[test]
fn replacement_names_never_reuse_a_known_pod_name() {
    let mut world = World::converged(1);
    let old = world.slot_pod(0);
    world.pod_mut(&old).deleting = true;
    let actions = world.step();
    assert_eq!(actions.create.len(), 1);
    assert_ne!(actions.create[0].name, old);
}

#[test]
fn a_converged_service_plans_nothing_and_an_unchanged_status() {
    let mut world = World::converged(3);
    let status = world.status.clone();
    world.advance(3600);
    let actions = world.step();
    assert!(actions.is_idle());
    assert!(actions.events.is_empty());
    assert_eq!(actions.requeue_after, None);
    assert_eq!(Some(actions.status), status, "no status write either");
}

#[test]
fn condition_times_change_only_with_their_status() {
    let mut world = World::converged(2);
    let times = |w: &World| -> Vec<_> {
        w.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.last_transition_time.clone()))
            .collect()
    };
    let before = times(&world);
    world.advance(100);
    let pod = world.slot_pod(0);
    world.set_ready(&pod, false);
    world.step();
    let after = times(&world);
    assert_eq!(before[1], after[1], "Progressing did not change");
    assert_ne!(before[0], after[0], "Available changed");
    assert_ne!(before[2], after[2], "Degraded changed");
}

// ----- reshard, scale to zero ---------------------------------------------------------------

#[test]
fn growing_shards_splits_in_place_without_moving_keys() {
    let mut world = World::converged(3);
    let before = world.ring().clone();
    world.spec.shards = Some(256);
    let actions = world.step();
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert_eq!(ring.shards().get(), 256);
    assert_eq!(ring.phase(), RingPhase::Stable);
    for key in 0..500u32 {
        let key = key.to_le_bytes();
        assert_eq!(before.owner(&key).index, ring.owner(&key).index);
    }
    assert_eq!(
        world
            .status
            .as_ref()
            .unwrap()
            .last_transition
            .as_ref()
            .unwrap()
            .kind,
        crate::crd::TransitionKind::Reshard
    );
    // 21/21/22 of 64 became 84/84/88 of 256, off floor/ceil balance (85/85/86): a small,
    // warm rebalance follows.
    let split = world.ring().current().clone();
    world.settle(Reports::All);
    assert_converged(&world, 3);
    let moved = split.moves_to(world.ring().current()).unwrap().count();
    assert!(moved <= 3, "{moved}");
}

#[test]
fn scale_to_zero_keeps_the_ring_with_every_slot_unavailable_and_comes_back() {
    let mut world = World::converged(2);
    world.spec.replicas = 0;
    let actions = world.step();
    assert_eq!(actions.delete.len(), 2);
    let ring = &actions.publish.as_ref().unwrap().ring;
    assert!(
        ring.slots()
            .iter()
            .all(|s| s.state == SlotState::Unavailable)
    );
    assert!(world.step().is_idle());
    world.spec.replicas = 2;
    world.settle(Reports::All);
    assert_converged(&world, 2);
}

#[test]
fn scale_down_while_a_slot_below_is_rerouted_settles() {
    let mut world = World::converged(4);
    let pod = world.slot_pod(1);
    world.set_ready(&pod, false);
    world.advance(10);
    world.step(); // reroute switch
    world.spec.replicas = 2;
    world.settle(Reports::All);
    assert_converged(&world, 2);
}

#[test]
fn template_change_during_a_scale_up_finishes_both() {
    let mut world = World::converged(2);
    world.spec.replicas = 3;
    world.step();
    world.ready_all();
    world.step(); // Warm
    world.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    world.settle(Reports::All);
    assert_converged(&world, 3);
}

#[test]
fn nothing_ever_reported_converges_where_the_losing_pods_leave() {
    // Scale down and roll out: every losing pod leaves anyway, so the drain timeout deletes
    // them and the transitions end.
    let mut world = World::converged(4);
    world.spec.replicas = 2;
    world.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    // One second per round; every step waits for its timeout.
    world.settle(Reports::Nothing);
    assert_converged(&world, 2);
}

// ----- first reaction, table-driven ---------------------------------------------------------

/// What a converged 3-slot service does in the first pass after one change: pods created,
/// updated and deleted, the phase of the ring published (if any), the events.
#[test]
#[allow(clippy::too_many_lines, reason = "one table of cases")]
fn first_reaction_to_each_kind_of_change() {
    type Change = fn(&mut World);
    struct Case {
        name: &'static str,
        change: Change,
        creates: usize,
        updates: usize,
        deletes: usize,
        publish: Option<RingPhase>,
        reasons: &'static [&'static str],
    }
    fn image(w: &mut World) {
        w.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
    }
    fn fail(w: &mut World, grace_passed: bool) {
        let pod = w.slot_pod(1);
        w.set_ready(&pod, false);
        w.advance(if grace_passed { 10 } else { 9 });
    }
    let cases = [
        Case {
            name: "nothing changed",
            change: |_| {},
            creates: 0,
            updates: 0,
            deletes: 0,
            publish: None,
            reasons: &[],
        },
        Case {
            name: "replicas 3 -> 5",
            change: |w| w.spec.replicas = 5,
            creates: 2,
            updates: 0,
            deletes: 0,
            publish: None,
            reasons: &[],
        },
        Case {
            name: "replicas 3 -> 2",
            change: |w| w.spec.replicas = 2,
            creates: 0,
            updates: 0,
            deletes: 0,
            publish: Some(RingPhase::Warm),
            reasons: &[reasons::WARM],
        },
        Case {
            name: "replicas 3 -> 0",
            change: |w| w.spec.replicas = 0,
            creates: 0,
            updates: 0,
            deletes: 3,
            publish: Some(RingPhase::Stable),
            reasons: &[reasons::NORMALIZED],
        },
        Case {
            name: "image, Surge",
            change: image,
            creates: 1,
            updates: 0,
            deletes: 0,
            publish: None,
            reasons: &[reasons::SURGE],
        },
        Case {
            name: "image, InPlace",
            change: |w| {
                w.spec.update_strategy.type_ = crate::crd::UpdateStrategyType::InPlace;
                w.spec.template.spec.as_mut().unwrap().containers[0].image = Some("app:2".into());
            },
            creates: 0,
            updates: 1,
            deletes: 0,
            publish: None,
            reasons: &[reasons::IN_PLACE],
        },
        Case {
            name: "shards 64 -> 128",
            change: |w| w.spec.shards = Some(128),
            creates: 0,
            updates: 0,
            deletes: 0,
            publish: Some(RingPhase::Stable),
            reasons: &[reasons::RESHARD],
        },
        Case {
            name: "pod unready within grace",
            change: |w| fail(w, false),
            creates: 0,
            updates: 0,
            deletes: 0,
            publish: None,
            reasons: &[],
        },
        Case {
            name: "pod unready past grace, Reroute",
            change: |w| fail(w, true),
            creates: 1,
            updates: 0,
            deletes: 1,
            publish: Some(RingPhase::Switch),
            reasons: &[reasons::REROUTED],
        },
        Case {
            name: "pod unready past grace, Wait",
            change: |w| {
                w.spec.on_pod_failure = crate::crd::PodFailurePolicy::Wait;
                fail(w, true);
            },
            creates: 1,
            updates: 0,
            deletes: 0,
            publish: Some(RingPhase::Stable),
            reasons: &[reasons::UNAVAILABLE],
        },
        Case {
            name: "pod being deleted, still Ready",
            change: |w| {
                let pod = w.slot_pod(1);
                w.pod_mut(&pod).deleting = true;
            },
            creates: 1,
            updates: 0,
            deletes: 0,
            publish: None,
            reasons: &[],
        },
        Case {
            name: "pod vanished",
            change: |w| {
                let pod = w.slot_pod(1);
                w.pods.retain(|p| p.name != pod);
            },
            creates: 1,
            updates: 0,
            deletes: 0,
            publish: None,
            reasons: &[],
        },
        Case {
            name: "pod failed (phase Failed)",
            change: |w| {
                let pod = w.slot_pod(1);
                w.set_ready(&pod, false);
                w.pod_mut(&pod).terminal = true;
            },
            creates: 1,
            updates: 0,
            deletes: 0,
            publish: None,
            reasons: &[],
        },
        Case {
            name: "stray pod of an unknown slot",
            change: |w| {
                let mut stray = w.pods[0].clone();
                stray.name = "chat-7-zzzzz".into();
                stray.uid = "stray".into();
                stray.slot = 7;
                w.pods.push(stray);
            },
            creates: 0,
            updates: 0,
            deletes: 1,
            publish: None,
            reasons: &[],
        },
    ];
    for case in cases {
        let mut world = World::converged(3);
        (case.change)(&mut world);
        let actions = world.plan();
        let got = (
            actions.create.len(),
            actions.update.len(),
            actions.delete.len(),
            actions.publish.as_ref().map(|p| p.ring.phase()),
            actions.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        );
        let want = (
            case.creates,
            case.updates,
            case.deletes,
            case.publish,
            case.reasons.to_vec(),
        );
        assert_eq!(got, want, "{}", case.name);
    }
}

/// What one plan of a settled service costs, at 100, 500 and 1000 slots of 4096 shards:
/// printed, not asserted (`cargo test -p locus-operator --release --lib plan_cost -- --ignored
/// --nocapture`; figures in `docs/benchmarks.md`).
#[test]
#[ignore = "a measurement, not a check"]
fn plan_cost_of_a_settled_service() {
    for slots in [100, 500, 1000] {
        let mut world = World::new(slots);
        world.spec.shards = Some(4096);
        world.settle(Reports::All);
        assert!(world.plan().is_idle());
        let rounds = 20;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(world.plan());
        }
        println!(
            "plan of a settled service, {slots} slots: {:.2} ms",
            started.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
        );
    }
}

mod balance;
mod shards;
