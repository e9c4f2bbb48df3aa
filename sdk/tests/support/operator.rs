//! The operator's role in tests: builds the rings of each transition step
//! (with the real planner), publishes them to a fleet of pods and waits for
//! the pods' progress reports, as the real operator does: the Warm step and
//! the observed wait are bounded by a timeout after which they roll forward;
//! the Switch settles only once every losing pod reported drained or is gone
//! (the fencing rule of `docs/adr/0001-fencing.md`), within a generous cap
//! that only keeps a broken test from hanging.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use locus::progress::{MemoryProgressReporter, Progress};
use locus::ring::{
    Assignment, PlanRequest, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition, plan,
};
use tokio::time::Instant;

/// The pods and clients a test operator publishes to.
pub trait Fleet {
    /// Publishes `ring` to every pod and client.
    fn publish(&self, ring: &Ring) -> impl Future<Output = ()>;
    /// The progress reporter of a running pod.
    fn progress(&self, pod: &str) -> Option<MemoryProgressReporter>;
}

/// One transition as the operator ran it.
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    /// What kind of change.
    pub kind: &'static str,
    /// The stable ring before.
    pub before: Ring,
    /// The Switch ring.
    pub switch: Ring,
    /// When the Switch ring was published.
    pub switched_at: Instant,
    /// Every gaining pod reported warmed before the timeout.
    pub warmed_in_time: bool,
    /// Every losing pod reported drained, and every member observed, before
    /// the timeout.
    pub settled_in_time: bool,
}

/// Step timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Warm step.
    pub warm: Duration,
    /// Switch step (observed and drained).
    pub drain: Duration,
}

/// The test operator; see the [module docs](self).
#[derive(Debug)]
pub struct Operator {
    pub namespace: String,
    pub service: String,
    pub shards: ShardCount,
    pub vnodes: u32,
    pub version: u64,
    pub slots: Vec<Slot>,
    pub table: Assignment,
    pub timeouts: Timeouts,
    pub log: Vec<TransitionRecord>,
    /// The next Switch is published again this long after it, at the next
    /// version with the same tables, as the operator does when the ring's
    /// `ConfigMap` is deleted mid-Switch; it settles on the new version.
    pub republish: Option<Duration>,
}

fn slot(index: u16, pod: Pod, state: SlotState) -> Slot {
    Slot {
        index,
        pod,
        state,
        successor: None,
        predecessor: None,
    }
}

impl Operator {
    /// A fresh service over `pods` (slot `i` = `pods[i]`), version 1.
    pub fn new(pods: &[Pod], shards: u32, timeouts: Timeouts) -> Self {
        let shards = ShardCount::new(shards).unwrap();
        let indices: Vec<u16> = (0..pods.len() as u16).collect();
        let first = plan(&PlanRequest {
            shards,
            vnodes: 32,
            ..PlanRequest::new("default", "counters", &indices)
        })
        .unwrap();
        Self {
            namespace: "default".into(),
            service: "counters".into(),
            shards,
            vnodes: 32,
            version: 1,
            slots: pods
                .iter()
                .enumerate()
                .map(|(i, p)| slot(i as u16, p.clone(), SlotState::Active))
                .collect(),
            table: first.assignment,
            timeouts,
            log: Vec::new(),
            republish: None,
        }
    }

    fn ring(&self, slots: Vec<Slot>, current: Assignment, transition: Transition) -> Ring {
        Ring::new(RingParts {
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            version: self.version,
            shards: self.shards,
            vnodes: self.vnodes,
            slots,
            current,
            transition,
        })
        .unwrap()
    }

    /// The stable ring of the current state.
    pub fn stable(&self) -> Ring {
        self.ring(self.slots.clone(), self.table.clone(), Transition::Stable)
    }

    fn plan(&self, slots: &[u16]) -> Assignment {
        plan(&PlanRequest {
            namespace: &self.namespace,
            service: &self.service,
            shards: self.shards,
            vnodes: self.vnodes,
            previous: Some(&self.table),
            slots,
            max_moves: None,
        })
        .unwrap()
        .assignment
    }

    /// Publishes the current stable ring at the next version.
    pub async fn publish_stable(&mut self, fleet: &impl Fleet) -> Ring {
        self.version += 1;
        let ring = self.stable();
        fleet.publish(&ring).await;
        ring
    }

    async fn wait(
        fleet: &impl Fleet,
        pods: &BTreeSet<String>,
        until: Instant,
        condition: impl Fn(&Progress) -> bool + Copy,
    ) -> bool {
        let mut all = true;
        for pod in pods {
            let Some(progress) = fleet.progress(pod) else {
                continue;
            };
            let left = until.saturating_duration_since(Instant::now());
            if !progress.wait_for(|p| condition(p), left).await {
                all = false;
            }
        }
        all
    }

    /// Scales to `pods` (slot `i` = `pods[i]`; slots kept keep their pods):
    /// Warm → Switch → Stable.
    pub async fn scale(&mut self, fleet: &impl Fleet, pods: &[Pod]) -> TransitionRecord {
        self.scale_as("scale", fleet, pods).await
    }

    /// The replacement `pod` of an `Unavailable` slot `index` (its pod
    /// failed and its shards were rerouted) rejoins like a scale-up: the
    /// slot is `Joining` and gains shards through Warm → Switch → Stable.
    pub async fn rejoin(&mut self, fleet: &impl Fleet, index: u16, pod: Pod) -> TransitionRecord {
        let mut pods: Vec<Pod> = self.slots.iter().map(|s| s.pod.clone()).collect();
        pods[usize::from(index)] = pod;
        self.scale_as("rejoin", fleet, &pods).await
    }

    async fn scale_as(
        &mut self,
        kind: &'static str,
        fleet: &impl Fleet,
        pods: &[Pod],
    ) -> TransitionRecord {
        let before = self.stable();
        let old_n = self.slots.len();
        let new_n = pods.len();
        let indices: Vec<u16> = (0..new_n as u16).collect();
        let target = self.plan(&indices);
        let mut slots: Vec<Slot> = (0..old_n.max(new_n))
            .map(|i| {
                let pod = pods
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| self.slots[i].pod.clone());
                let state = if i >= new_n {
                    SlotState::Leaving
                } else if i >= old_n || self.slots[i].state == SlotState::Unavailable {
                    SlotState::Joining
                } else {
                    SlotState::Active
                };
                slot(i as u16, pod, state)
            })
            .collect();
        let gaining = gaining(&slots, &self.table, &target);
        self.version += 1;
        let warm = self.ring(
            slots.clone(),
            self.table.clone(),
            Transition::Warm {
                target: target.clone(),
            },
        );
        fleet.publish(&warm).await;
        let warm_version = warm.version();
        let warmed_in_time =
            Self::wait(fleet, &gaining, Instant::now() + self.timeouts.warm, |p| {
                p.warmed >= Some(warm_version)
            })
            .await;
        for s in &mut slots {
            s.state = match s.state {
                SlotState::Leaving => SlotState::Draining,
                _ => SlotState::Active,
            };
        }
        let losing = losing(&slots, &self.table, &target);
        let previous = std::mem::replace(&mut self.table, target);
        self.version += 1;
        let switch = self.ring(
            slots.clone(),
            self.table.clone(),
            Transition::Switch { previous },
        );
        let switched_at = Instant::now();
        let published = self.publish_switch(fleet, &switch).await;
        let settled_in_time = self.await_switch(fleet, &published, &losing).await;
        slots.truncate(new_n);
        self.slots = slots;
        self.publish_stable(fleet).await;
        self.record(
            kind,
            before,
            switch,
            switched_at,
            warmed_in_time,
            settled_in_time,
        )
    }

    /// Replaces the pod of `index` with `pod`: Warm (successor) → Switch
    /// (predecessor) → Stable.
    pub async fn replace(&mut self, fleet: &impl Fleet, index: u16, pod: Pod) -> TransitionRecord {
        let before = self.stable();
        let mut slots = self.slots.clone();
        slots[usize::from(index)].successor = Some(pod.clone());
        self.version += 1;
        let warm = self.ring(
            slots.clone(),
            self.table.clone(),
            Transition::Warm {
                target: self.table.clone(),
            },
        );
        fleet.publish(&warm).await;
        let warm_version = warm.version();
        let warmed_in_time = Self::wait(
            fleet,
            &BTreeSet::from([pod.name.clone()]),
            Instant::now() + self.timeouts.warm,
            |p| p.warmed >= Some(warm_version),
        )
        .await;
        let old = std::mem::replace(&mut slots[usize::from(index)].pod, pod);
        slots[usize::from(index)].successor = None;
        slots[usize::from(index)].predecessor = Some(old.clone());
        self.version += 1;
        let switch = self.ring(
            slots.clone(),
            self.table.clone(),
            Transition::Switch {
                previous: self.table.clone(),
            },
        );
        let switched_at = Instant::now();
        let published = self.publish_switch(fleet, &switch).await;
        let settled_in_time = self
            .await_switch(fleet, &published, &BTreeSet::from([old.name]))
            .await;
        slots[usize::from(index)].predecessor = None;
        self.slots = slots;
        self.publish_stable(fleet).await;
        self.record(
            "replace",
            before,
            switch,
            switched_at,
            warmed_in_time,
            settled_in_time,
        )
    }

    /// The pod of `index` is gone (policy `Reroute`): its shards go to the
    /// other slots in a Switch ring with no warm step; the slot stays,
    /// `Unavailable`, holding nothing.
    pub async fn reroute(&mut self, fleet: &impl Fleet, index: u16) -> TransitionRecord {
        let before = self.stable();
        let survivors: Vec<u16> = self
            .slots
            .iter()
            .filter(|s| s.index != index && s.state != SlotState::Unavailable)
            .map(|s| s.index)
            .collect();
        let target = self.plan(&survivors);
        let mut slots = self.slots.clone();
        slots[usize::from(index)].state = SlotState::Draining;
        let previous = std::mem::replace(&mut self.table, target);
        self.version += 1;
        let switch = self.ring(
            slots.clone(),
            self.table.clone(),
            Transition::Switch { previous },
        );
        let switched_at = Instant::now();
        let published = self.publish_switch(fleet, &switch).await;
        let settled_in_time = self.await_switch(fleet, &published, &BTreeSet::new()).await;
        slots[usize::from(index)].state = SlotState::Unavailable;
        self.slots = slots;
        self.publish_stable(fleet).await;
        self.record(
            "reroute",
            before,
            switch,
            switched_at,
            true,
            settled_in_time,
        )
    }

    /// Publishes `switch`, and again at the next version if
    /// [`republish`](Self::republish) says so; returns the last one published.
    async fn publish_switch(&mut self, fleet: &impl Fleet, switch: &Ring) -> Ring {
        fleet.publish(switch).await;
        let Some(after) = self.republish.take() else {
            return switch.clone();
        };
        tokio::time::sleep(after).await;
        self.version += 1;
        let mut parts = switch.parts().clone();
        parts.version = self.version;
        let again = Ring::new(parts).unwrap();
        fleet.publish(&again).await;
        again
    }

    /// Every member observed the switch and every losing pod drained (or
    /// the drain timeout passed).
    async fn await_switch(
        &self,
        fleet: &impl Fleet,
        switch: &Ring,
        losing: &BTreeSet<String>,
    ) -> bool {
        let version = switch.version();
        let until = Instant::now() + self.timeouts.drain;
        let members: BTreeSet<String> = switch
            .slots()
            .iter()
            .flat_map(|s| [Some(&s.pod), s.predecessor.as_ref()])
            .flatten()
            .map(|p| p.name.clone())
            .collect();
        let observed = Self::wait(fleet, &members, until, |p| p.observed >= Some(version)).await;
        let drained = Self::wait_drained(fleet, losing, version, self.timeouts.drain * 20).await;
        observed && drained
    }

    /// Waits until every pod of `losing` reported drained for `version` or
    /// is gone (no longer in the fleet): no timeout settles a switch. False
    /// if `cap` passed first (the switch then settles anyway, and the checker
    /// will see what that costs).
    async fn wait_drained(
        fleet: &impl Fleet,
        losing: &BTreeSet<String>,
        version: u64,
        cap: Duration,
    ) -> bool {
        let until = Instant::now() + cap;
        loop {
            let done = losing.iter().all(|pod| {
                fleet
                    .progress(pod)
                    .is_none_or(|p| p.latest().drained >= Some(version))
            });
            if done {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn record(
        &mut self,
        kind: &'static str,
        before: Ring,
        switch: Ring,
        switched_at: Instant,
        warmed_in_time: bool,
        settled_in_time: bool,
    ) -> TransitionRecord {
        let record = TransitionRecord {
            kind,
            before,
            switch,
            switched_at,
            warmed_in_time,
            settled_in_time,
        };
        self.log.push(record.clone());
        record
    }
}

/// Pods of slots that gain shards from `current` to `target`.
fn gaining(slots: &[Slot], current: &Assignment, target: &Assignment) -> BTreeSet<String> {
    moving(slots, current, target, |_, after| after)
}

/// Pods of slots that lose shards from `current` to `target`.
fn losing(slots: &[Slot], current: &Assignment, target: &Assignment) -> BTreeSet<String> {
    moving(slots, current, target, |before, _| before)
}

/// Pods of the slots `side(before, after)` picks for every shard that moves
/// from `current` to `target`.
fn moving(
    slots: &[Slot],
    current: &Assignment,
    target: &Assignment,
    side: impl Fn(u16, u16) -> u16,
) -> BTreeSet<String> {
    current
        .as_slice()
        .iter()
        .zip(target.as_slice())
        .filter(|(before, after)| before != after)
        .map(|(&before, &after)| slots[usize::from(side(before, after))].pod.name.clone())
        .collect()
}
