//! The ring model: slots, their pods, the assignment tables and the
//! transition phase, with O(1) key lookup.
//!
//! A [`Ring`] is always valid: it can only be built through [`Ring::new`] or
//! the document codec, both of which check every rule listed in
//! `docs/ring-format.md`. Lookups therefore never fail: every key has an
//! owner slot under the `current` table.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{
    Assignment, MAX_NAME_BYTES, MAX_SLOTS, MAX_UID_BYTES, MAX_VERSION, MAX_VNODES, RingError,
    ShardCount,
};

/// What a slot is doing in the current step of a transition.
///
/// Routing never looks at the state (it uses the tables only), except that a
/// router may answer 503 at once for an [`Unavailable`](SlotState::Unavailable)
/// slot instead of trying its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Serving its shards; nothing special going on.
    Active,
    /// A new slot (scale up) warming the shards it gains under `target`; holds
    /// no shard under `current` yet.
    Joining,
    /// A slot being removed (scale down, or `Reroute` after a pod failure):
    /// still serves its shards under `current`, holds none under `target`.
    Leaving,
    /// After the switch, a removed slot handing its remaining keys to their
    /// new owners; holds shards only under `previous`.
    Draining,
    /// The slot's pod is not Ready (policy `Wait`): its keys get 503 until a
    /// replacement is Ready.
    Unavailable,
}

impl SlotState {
    /// The name used in the ring document.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Joining => "joining",
            Self::Leaving => "leaving",
            Self::Draining => "draining",
            Self::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step of a transition a ring is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// No transition: only `current`.
    Stable,
    /// `target` is published beside `current`; routers still use `current`,
    /// gaining pods pre-copy the sessions of the shards they gain.
    Warm,
    /// `current` is the new assignment, `previous` the one just left, so new
    /// owners know where to pull from and losing pods drain. The Settle step
    /// publishes a `Stable` ring that drops `previous`.
    Switch,
}

impl Phase {
    /// The name used in the ring document.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Warm => "warm",
            Self::Switch => "switch",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The second table a ring carries during a transition, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// No transition.
    Stable,
    /// Warm step: the assignment being moved to.
    Warm {
        /// Next assignment, being warmed.
        target: Assignment,
    },
    /// Switch step: the assignment just left.
    Switch {
        /// Assignment that `current` replaced.
        previous: Assignment,
    },
}

impl Transition {
    /// The phase this transition stands for.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Stable => Phase::Stable,
            Self::Warm { .. } => Phase::Warm,
            Self::Switch { .. } => Phase::Switch,
        }
    }
}

/// A pod serving (or about to serve, or having served) a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pod {
    /// Pod name, `<service>-<slot>-<random>`; 1..=253 bytes.
    pub name: String,
    /// Pod UID (`metadata.uid`); 1..=128 bytes. Tells a recreated pod of the
    /// same name from its predecessor.
    pub uid: String,
    /// Where the pod serves requests and handoffs; port non-zero.
    pub address: SocketAddr,
}

/// One slot of the ring and the pod(s) behind it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The slot index; equals its position in [`Ring::slots`].
    pub index: u16,
    /// The pod that serves the slot under `current`.
    pub pod: Pod,
    /// What the slot is doing in this step.
    pub state: SlotState,
    /// Phase `Warm` only: a surge pod warming the whole slot to take it over
    /// at the switch (rolling update, eviction).
    pub successor: Option<Pod>,
    /// Phase `Switch` only: the pod that served the slot before the switch;
    /// it drains, and the new pod pulls stale keys from it.
    pub predecessor: Option<Pod>,
}

/// Everything a ring consists of, unvalidated; [`Ring::new`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingParts {
    /// Namespace of the service; 1..=253 bytes. Part of the planner's token names.
    pub namespace: String,
    /// Name of the `StatefulService`; 1..=253 bytes. Part of the token names.
    pub service: String,
    /// Strictly increasing publish counter, starting at 1.
    pub version: u64,
    /// Number of shards `S`.
    pub shards: ShardCount,
    /// Tokens per slot the planner used (`1..=MAX_VNODES`).
    pub vnodes: u32,
    /// Slots `0..N`, in index order.
    pub slots: Vec<Slot>,
    /// The assignment routers use.
    pub current: Assignment,
    /// The transition step and its second table.
    pub transition: Transition,
}

/// A validated ring: slots, assignment tables, transition phase.
///
/// Lookups are O(1) and allocation-free: one xxh3-64 hash, one shift, two
/// array reads.
///
/// ```
/// use locus_contract::ring::{Assignment, Pod, Ring, RingParts, ShardCount, Slot, SlotState, Transition};
///
/// let shards = ShardCount::new(8).unwrap();
/// let slot = |index: u16| Slot {
///     index,
///     pod: Pod {
///         name: format!("chat-{index}-x1"),
///         uid: format!("uid-{index}"),
///         address: format!("10.0.0.{}:8080", index + 1).parse().unwrap(),
///     },
///     state: SlotState::Active,
///     successor: None,
///     predecessor: None,
/// };
/// let ring = Ring::new(RingParts {
///     namespace: "default".into(),
///     service: "chat".into(),
///     version: 1,
///     shards,
///     vnodes: 16,
///     slots: vec![slot(0), slot(1)],
///     current: Assignment::new(vec![0, 1, 0, 1, 0, 1, 0, 1]).unwrap(),
///     transition: Transition::Stable,
/// })
/// .unwrap();
/// let owner = ring.owner(b"session-7");
/// assert_eq!(owner.index, ring.current().slot_of(ring.shard_of(b"session-7")).unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    parts: RingParts,
}

fn check_name(field: impl FnOnce() -> String, value: &str, max: usize) -> Result<(), RingError> {
    if value.is_empty() {
        return Err(RingError::EmptyName { field: field() });
    }
    if value.len() > max {
        return Err(RingError::NameTooLong {
            field: field(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn check_pod(slot: u16, role: &str, pod: &Pod) -> Result<(), RingError> {
    check_name(
        || format!("slot {slot} {role} name"),
        &pod.name,
        MAX_NAME_BYTES,
    )?;
    check_name(
        || format!("slot {slot} {role} uid"),
        &pod.uid,
        MAX_UID_BYTES,
    )?;
    if pod.address.port() == 0 {
        return Err(RingError::InvalidAddress {
            field: format!("slot {slot} {role} address"),
            address: pod.address.to_string(),
            reason: "port 0".to_owned(),
        });
    }
    Ok(())
}

fn check_table(
    table: &Assignment,
    name: &'static str,
    shards: ShardCount,
    slots: usize,
) -> Result<(), RingError> {
    if table.shard_count() != shards {
        return Err(RingError::TableLength {
            table: name,
            found: table.shard_count().len(),
            expected: shards.len(),
        });
    }
    if let Some((shard, slot)) = table.first_unknown_slot(slots) {
        return Err(RingError::UnknownSlot {
            table: name,
            shard,
            slot,
            slots,
        });
    }
    Ok(())
}

impl Ring {
    /// Validates `parts` and builds the ring. The rules are those of
    /// `docs/ring-format.md` (§ Validation); the error names the first broken one.
    pub fn new(parts: RingParts) -> Result<Self, RingError> {
        if parts.version == 0 {
            return Err(RingError::VersionZero);
        }
        if parts.version > MAX_VERSION {
            return Err(RingError::VersionTooLarge {
                version: parts.version,
            });
        }
        check_name(|| "namespace".to_owned(), &parts.namespace, MAX_NAME_BYTES)?;
        check_name(|| "service".to_owned(), &parts.service, MAX_NAME_BYTES)?;
        if !(1..=MAX_VNODES).contains(&parts.vnodes) {
            return Err(RingError::InvalidVnodes {
                vnodes: u64::from(parts.vnodes),
            });
        }
        if parts.slots.is_empty() {
            return Err(RingError::NoSlots);
        }
        if parts.slots.len() > MAX_SLOTS {
            return Err(RingError::TooManySlots {
                count: parts.slots.len(),
            });
        }
        let phase = parts.transition.phase();
        for (position, slot) in parts.slots.iter().enumerate() {
            if usize::from(slot.index) != position {
                return Err(RingError::SlotIndexMismatch {
                    position,
                    index: slot.index,
                });
            }
            check_pod(slot.index, "pod", &slot.pod)?;
            if let Some(successor) = &slot.successor {
                if phase != Phase::Warm {
                    return Err(RingError::HandoverPodOutOfPhase {
                        slot: slot.index,
                        field: "successor",
                        allowed: Phase::Warm,
                    });
                }
                check_pod(slot.index, "successor", successor)?;
            }
            if let Some(predecessor) = &slot.predecessor {
                if phase != Phase::Switch {
                    return Err(RingError::HandoverPodOutOfPhase {
                        slot: slot.index,
                        field: "predecessor",
                        allowed: Phase::Switch,
                    });
                }
                check_pod(slot.index, "predecessor", predecessor)?;
            }
        }
        let slots = parts.slots.len();
        check_table(&parts.current, "current", parts.shards, slots)?;
        match &parts.transition {
            Transition::Stable => {}
            Transition::Warm { target } => check_table(target, "target", parts.shards, slots)?,
            Transition::Switch { previous } => {
                check_table(previous, "previous", parts.shards, slots)?;
            }
        }
        Ok(Self { parts })
    }

    /// The parts, e.g. to derive the next ring and validate it with [`Ring::new`].
    pub fn into_parts(self) -> RingParts {
        self.parts
    }

    /// The parts, borrowed.
    pub fn parts(&self) -> &RingParts {
        &self.parts
    }

    /// Namespace of the service.
    pub fn namespace(&self) -> &str {
        &self.parts.namespace
    }

    /// Name of the service.
    pub fn service(&self) -> &str {
        &self.parts.service
    }

    /// The publish counter.
    #[inline]
    pub fn version(&self) -> u64 {
        self.parts.version
    }

    /// True if `self` was published after `other` (strictly higher version).
    /// Readers keep the ring they hold unless the new one is newer.
    #[inline]
    pub fn is_newer_than(&self, other: &Ring) -> bool {
        self.parts.version > other.parts.version
    }

    /// True if a reader holding `held` should switch to `self`: it holds
    /// nothing yet, or `self` is newer.
    #[inline]
    pub fn supersedes(&self, held: Option<&Ring>) -> bool {
        held.is_none_or(|held| self.is_newer_than(held))
    }

    /// True if `self` and `other` are the same step of the same transition,
    /// whatever their versions: the same phase, assignment tables and pod
    /// names per slot. The operator publishes such a ring again at a new
    /// version when the ring's `ConfigMap` was deleted; it settles nothing.
    pub fn same_step(&self, other: &Ring) -> bool {
        let (a, b) = (&self.parts, &other.parts);
        let names = |slot: &Slot| {
            (
                slot.index,
                slot.pod.name.clone(),
                slot.state,
                slot.successor.as_ref().map(|p| p.name.clone()),
                slot.predecessor.as_ref().map(|p| p.name.clone()),
            )
        };
        a.shards == b.shards
            && a.vnodes == b.vnodes
            && a.current == b.current
            && a.transition == b.transition
            && a.slots.len() == b.slots.len()
            && a.slots.iter().map(names).eq(b.slots.iter().map(names))
    }

    /// The shard count `S`.
    #[inline]
    pub fn shards(&self) -> ShardCount {
        self.parts.shards
    }

    /// Tokens per slot the planner used.
    pub fn vnodes(&self) -> u32 {
        self.parts.vnodes
    }

    /// The transition phase.
    pub fn phase(&self) -> Phase {
        self.parts.transition.phase()
    }

    /// The transition and its second table.
    pub fn transition(&self) -> &Transition {
        &self.parts.transition
    }

    /// All slots, in index order.
    pub fn slots(&self) -> &[Slot] {
        &self.parts.slots
    }

    /// The slot with this index.
    pub fn slot(&self, index: u16) -> Option<&Slot> {
        self.parts.slots.get(usize::from(index))
    }

    /// The slot served by, warmed by (successor) or drained from
    /// (predecessor) the pod with this name.
    pub fn slot_for_pod(&self, name: &str) -> Option<&Slot> {
        self.parts.slots.iter().find(|slot| {
            slot.pod.name == name
                || slot.successor.as_ref().is_some_and(|p| p.name == name)
                || slot.predecessor.as_ref().is_some_and(|p| p.name == name)
        })
    }

    /// The assignment routers use.
    pub fn current(&self) -> &Assignment {
        &self.parts.current
    }

    /// The assignment being warmed (phase `Warm`).
    pub fn target(&self) -> Option<&Assignment> {
        match &self.parts.transition {
            Transition::Warm { target } => Some(target),
            _ => None,
        }
    }

    /// The assignment just left (phase `Switch`).
    pub fn previous(&self) -> Option<&Assignment> {
        match &self.parts.transition {
            Transition::Switch { previous } => Some(previous),
            _ => None,
        }
    }

    /// The shard of `key`: `xxh3_64(key) >> (64 - log2 S)`.
    #[inline]
    pub fn shard_of(&self, key: &[u8]) -> u32 {
        self.parts.shards.shard_of(key)
    }

    /// The slot that owns `key` under `current`: `slots[current[shard(key)]]`.
    /// This is the routing decision.
    #[inline]
    pub fn owner(&self, key: &[u8]) -> &Slot {
        self.owner_of_shard_in(&self.parts.current, self.shard_of(key))
    }

    /// The slot that owns `shard` under `current`, or `None` if `shard >= S`.
    pub fn owner_of_shard(&self, shard: u32) -> Option<&Slot> {
        (shard < self.parts.shards.get())
            .then(|| self.owner_of_shard_in(&self.parts.current, shard))
    }

    /// The owner of `key` under `target` (phase `Warm`), else `None`.
    #[inline]
    pub fn target_owner(&self, key: &[u8]) -> Option<&Slot> {
        let shard = self.shard_of(key);
        self.target().map(|t| self.owner_of_shard_in(t, shard))
    }

    /// The owner of `key` under `previous` (phase `Switch`), else `None`:
    /// where a new owner pulls the key's state from.
    #[inline]
    pub fn previous_owner(&self, key: &[u8]) -> Option<&Slot> {
        let shard = self.shard_of(key);
        self.previous().map(|p| self.owner_of_shard_in(p, shard))
    }

    /// Lookup in one of this ring's own tables; `shard < S` and every entry
    /// names an existing slot, both checked by [`Ring::new`].
    #[inline]
    fn owner_of_shard_in(&self, table: &Assignment, shard: u32) -> &Slot {
        let slot = table.as_slice()[shard as usize];
        &self.parts.slots[usize::from(slot)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(i: u16) -> Pod {
        Pod {
            name: format!("svc-{i}-x"),
            uid: format!("uid-{i}"),
            address: SocketAddr::from(([10, 0, 0, 1], 8000 + i)),
        }
    }

    fn slot(index: u16) -> Slot {
        Slot {
            index,
            pod: pod(index),
            state: SlotState::Active,
            successor: None,
            predecessor: None,
        }
    }

    fn parts(transition: Transition) -> RingParts {
        RingParts {
            namespace: "ns".into(),
            service: "svc".into(),
            version: 5,
            shards: ShardCount::new(4).unwrap(),
            vnodes: 8,
            slots: vec![slot(0), slot(1), slot(2)],
            current: Assignment::new(vec![0, 1, 2, 0]).unwrap(),
            transition,
        }
    }

    #[test]
    fn owners_under_each_table() {
        let target = Assignment::new(vec![2, 2, 2, 2]).unwrap();
        let ring = Ring::new(parts(Transition::Warm { target })).unwrap();
        for key in [&b""[..], b"k1", b"k2", b"another"] {
            let shard = ring.shard_of(key);
            assert_eq!(shard, ShardCount::new(4).unwrap().shard_of(key));
            let expected = [0, 1, 2, 0][shard as usize];
            assert_eq!(ring.owner(key).index, expected);
            assert_eq!(ring.owner(key).pod, pod(expected));
            assert_eq!(ring.owner_of_shard(shard).unwrap().index, expected);
            assert_eq!(ring.target_owner(key).unwrap().index, 2);
            assert!(ring.previous_owner(key).is_none());
        }
        assert!(ring.owner_of_shard(4).is_none());
        assert_eq!(ring.phase(), Phase::Warm);

        let previous = Assignment::new(vec![1, 1, 1, 1]).unwrap();
        let ring = Ring::new(parts(Transition::Switch { previous })).unwrap();
        assert_eq!(ring.previous_owner(b"k1").unwrap().index, 1);
        assert!(ring.target_owner(b"k1").is_none());
    }

    #[test]
    fn a_ring_published_again_is_the_same_step() {
        let switch = || Transition::Switch {
            previous: Assignment::new(vec![1, 1, 1, 1]).unwrap(),
        };
        let first = Ring::new(parts(switch())).unwrap();
        let mut again = parts(switch());
        again.version = 6;
        again.slots[1].pod.address = SocketAddr::from(([10, 0, 0, 9], 8001));
        let again = Ring::new(again).unwrap();
        assert!(
            again.same_step(&first),
            "a new version and address change nothing"
        );

        let mut moved = parts(switch());
        moved.version = 6;
        moved.current = Assignment::new(vec![0, 1, 2, 2]).unwrap();
        assert!(
            !Ring::new(moved).unwrap().same_step(&first),
            "another table"
        );
        let mut replaced = parts(switch());
        replaced.slots[2].pod.name = "svc-2-y".into();
        assert!(
            !Ring::new(replaced).unwrap().same_step(&first),
            "another pod"
        );
        let settled = Ring::new(parts(Transition::Stable)).unwrap();
        assert!(!settled.same_step(&first), "the ring that settles it");
    }

    #[test]
    fn new_refuses_inconsistent_parts() {
        let mut p = parts(Transition::Stable);
        p.current = Assignment::new(vec![0; 8]).unwrap();
        assert_eq!(
            Ring::new(p).unwrap_err().to_string(),
            "table `current` has 8 entries, expected 4 (one per shard)"
        );
        let mut p = parts(Transition::Stable);
        p.current = Assignment::new(vec![0, 1, 3, 0]).unwrap();
        assert_eq!(
            Ring::new(p).unwrap_err().to_string(),
            "table `current` assigns shard 2 to slot 3, but the ring has only 3 slots (0..3)"
        );
        let p = parts(Transition::Switch {
            previous: Assignment::new(vec![0, 0]).unwrap(),
        });
        assert!(matches!(
            Ring::new(p),
            Err(RingError::TableLength {
                table: "previous",
                ..
            })
        ));
        let mut p = parts(Transition::Stable);
        p.slots[1].pod.address = SocketAddr::from(([10, 0, 0, 1], 0));
        assert_eq!(
            Ring::new(p).unwrap_err().to_string(),
            "slot 1 pod address `10.0.0.1:0` is not a valid socket address (ip:port, port 1-65535): port 0"
        );
        let mut p = parts(Transition::Stable);
        p.slots.swap(0, 1);
        assert!(matches!(
            Ring::new(p),
            Err(RingError::SlotIndexMismatch {
                position: 0,
                index: 1
            })
        ));
    }

    #[test]
    fn pods_are_found_in_any_role() {
        let mut p = parts(Transition::Warm {
            target: Assignment::new(vec![0, 1, 2, 0]).unwrap(),
        });
        p.slots[2].successor = Some(pod(9));
        let ring = Ring::new(p).unwrap();
        assert_eq!(ring.slot_for_pod("svc-1-x").unwrap().index, 1);
        assert_eq!(ring.slot_for_pod("svc-9-x").unwrap().index, 2);
        assert!(ring.slot_for_pod("nope").is_none());
        assert_eq!(ring.into_parts().version, 5);
    }
}
