//! The shard count in the simulated cluster: chosen from `spec.replicas` when `spec.shards` is
//! unset, doubled in place before a scale-up that needs it, never shrunk; fixed when set.

use super::*;
use locus_contract::ring::Assignment;

use crate::crd::{TransitionKind, auto_shards};

impl World {
    /// A world of `replicas` slots whose spec leaves the shard count to the operator.
    fn automatic(replicas: i32) -> Self {
        let mut world = World::new(replicas);
        world.spec.shards = None;
        world
    }

    fn status_shards(&self) -> Option<u32> {
        self.status.as_ref().and_then(|s| s.shards)
    }
}

/// Every shard of `after` (a ring whose count is a multiple of `before`'s) has the owner its
/// parent shard had in `before`.
fn assert_no_shard_moved(before: &Assignment, after: &Assignment) {
    let factor = after.shard_count().get() / before.shard_count().get();
    assert!(factor > 1, "the count grew");
    for shard in 0..after.shard_count().get() {
        assert_eq!(
            after.slot_of(shard),
            before.slot_of(shard / factor),
            "shard {shard} moved"
        );
    }
}

#[test]
fn a_service_created_at_100_replicas_gets_8192_shards() {
    let mut world = World::automatic(100);
    world.settle(Reports::All);
    assert_converged(&world, 100);
    assert_eq!(world.ring().shards().get(), 8192);
    assert_eq!(world.status_shards(), Some(8192));
    assert!(
        world.publishes.iter().all(|r| r.shards().get() == 8192),
        "created at that count, never resharded"
    );
    assert!(!world.reasons().contains(&reasons::RESHARD));
}

#[test]
fn growing_60_to_70_replicas_doubles_4096_to_8192_in_one_publish_then_scales() {
    let mut world = World::automatic(60);
    world.settle(Reports::All);
    assert_converged(&world, 60);
    assert_eq!(world.ring().shards().get(), 4096);
    assert_eq!(world.status_shards(), Some(4096));
    let before = world.ring().current().clone();
    let published = world.publishes.len();

    world.spec.replicas = 70;
    let first = world.step();
    let ring = &first.publish.as_ref().expect("the reshard publishes").ring;
    assert_eq!(ring.shards().get(), 8192);
    assert_eq!(ring.phase(), RingPhase::Stable, "one publish, no handoff");
    assert_eq!(ring.slots().len(), 60, "the scale-up has not started");
    assert_no_shard_moved(&before, ring.current());
    assert_eq!(world.status_shards(), Some(8192));
    let record = world.last_transition();
    assert_eq!(record.kind, TransitionKind::Reshard);
    assert_eq!(record.shards_moved, 0);

    world.settle(Reports::All);
    assert_converged(&world, 70);
    let after: Vec<&Ring> = world.publishes[published..].iter().collect();
    assert!(
        after.iter().all(|r| r.shards().get() == 8192),
        "every later ring keeps 8192 shards"
    );
    assert_eq!(
        world.events_of(reasons::RESHARD).len(),
        1,
        "doubled once: {:?}",
        world.reasons()
    );
    assert!(
        after[1..].iter().any(|r| r.phase() == RingPhase::Warm
            && r.slots().iter().any(|s| s.state == SlotState::Joining)),
        "the scale-up followed the doubling"
    );
    assert_eq!(world.last_transition().kind, TransitionKind::ScaleUp);
    assert_eq!(world.status_shards(), Some(8192));
}

#[test]
fn scaling_down_keeps_the_shard_count() {
    let mut world = World::automatic(70);
    world.settle(Reports::All);
    assert_eq!(world.ring().shards().get(), 8192);
    world.spec.replicas = 10;
    assert_eq!(auto_shards(10), 4096, "the choice alone would halve it");
    world.settle(Reports::All);
    assert_converged(&world, 10);
    assert_eq!(world.ring().shards().get(), 8192);
    assert_eq!(world.status_shards(), Some(8192));
    assert!(!world.reasons().contains(&reasons::RESHARD));
}

#[test]
fn an_explicit_shard_count_is_respected() {
    let mut world = World::automatic(100);
    world.spec.shards = Some(4096);
    world.settle(Reports::All);
    assert_converged(&world, 100);
    assert_eq!(world.ring().shards().get(), 4096);
    assert_eq!(world.status_shards(), Some(4096));

    // Growing past 64 per slot does not double a fixed count.
    world.spec.replicas = 130;
    world.settle(Reports::All);
    assert_converged(&world, 130);
    assert_eq!(world.ring().shards().get(), 4096);
    assert!(!world.reasons().contains(&reasons::RESHARD));
}

#[test]
fn a_fixed_count_below_the_chosen_one_leaves_the_ring_as_it_is() {
    let mut world = World::automatic(70);
    world.settle(Reports::All);
    assert_eq!(world.ring().shards().get(), 8192);
    world.spec.shards = Some(4096);
    assert!(
        world.step().is_idle(),
        "nothing to do: the count never shrinks"
    );
    assert_eq!(world.ring().shards().get(), 8192);
    assert_eq!(world.status_shards(), Some(8192));
    // Raising it past the ring's count doubles it again.
    world.spec.shards = Some(16384);
    let actions = world.step();
    assert_eq!(actions.publish.unwrap().ring.shards().get(), 16384);
}
