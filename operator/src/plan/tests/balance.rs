//! Placement by load in the simulated cluster: the pods' load reports are set by the test (as
//! the SDK's reporter would write them), from a true load per shard.

use locus_contract::progress::{ShardLoad, ShardLoadReport};

use super::*;
use crate::crd::BalanceMode;

/// The window the simulated reports cover, in seconds.
const WINDOW: u32 = 10;

impl World {
    /// A converged world of `replicas` slots placing by load with `budget` shards per round
    /// and a 60 s interval.
    fn placing_by_load(replicas: i32, budget: u32) -> Self {
        let mut world = World::converged(replicas);
        world.spec.placement.balance = BalanceMode::Load;
        world.spec.placement.max_shards_per_round = budget;
        world.spec.placement.interval_seconds = 60;
        world
    }

    /// Every pod of a slot holding shards reports, for the current ring, the load `truth`
    /// (requests per second, by shard) puts on its shards.
    fn report_load(&mut self, truth: &[f64]) {
        let ring = self.ring().clone();
        let end = u64::try_from(self.now.as_millisecond()).unwrap();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let count = |rps: f64| (rps * f64::from(WINDOW)).round() as u64;
        for slot in ring.slots() {
            let Some(report) =
                ShardLoadReport::of_slot(&ring, slot.index, WINDOW, end, |shard| ShardLoad {
                    shard,
                    requests: count(truth[shard as usize]),
                    bytes: count(truth[shard as usize]) * 100,
                })
            else {
                continue;
            };
            assert_eq!(report.validate(), Ok(()));
            let name = slot.pod.name.clone();
            self.pod_mut(&name).progress.load = Some(Ok(report));
        }
    }

    /// Two windows of reports of `truth` in a row (hysteresis: a rebalance starts only on the
    /// second): reports, a pass that starts nothing, a window later reports again.
    fn confirm_load(&mut self, truth: &[f64]) {
        self.report_load(truth);
        assert!(self.step().publish.is_none(), "one window starts nothing");
        self.advance(i64::from(WINDOW));
        self.report_load(truth);
    }

    /// The true busiest slot's load over the mean under the current table.
    fn true_ratio(&self, truth: &[f64]) -> f64 {
        let mut loads: BTreeMap<u16, f64> = BTreeMap::new();
        for (shard, &slot) in self.ring().current().as_slice().iter().enumerate() {
            *loads.entry(slot).or_default() += truth[shard];
        }
        let mean = loads.values().sum::<f64>() / f64::from(u32::try_from(loads.len()).unwrap());
        loads.values().fold(0.0_f64, |a, &b| a.max(b)) / mean
    }

    fn placement(&self) -> crate::crd::PlacementStatus {
        self.status
            .as_ref()
            .and_then(|s| s.placement.clone())
            .expect("status.placement")
    }
}

/// 64 shards over 4 slots; slot 0's shards are three times as busy as the others.
fn skewed(world: &World) -> Vec<f64> {
    let mut truth = vec![1.0; 64];
    for shard in world.ring().current().shards_of(0) {
        truth[shard as usize] = 3.0;
    }
    truth
}

#[test]
fn load_mode_moves_shards_from_the_busiest_pod_within_the_budget_then_stays() {
    let mut world = World::placing_by_load(4, 6);
    let truth = skewed(&world);
    let start = world.true_ratio(&truth);
    assert!((start - 2.0).abs() < 1e-9, "{start}");
    world.report_load(&truth);

    // Not before the interval has passed since the ring was published.
    let actions = world.step();
    assert!(actions.publish.is_none());
    let placement = world.placement();
    assert_eq!(placement.busiest_percent, Some(200));
    assert!(
        placement
            .message
            .as_deref()
            .unwrap()
            .contains("the next rebalance may start at"),
        "{placement:?}"
    );
    assert!(
        actions.requeue_after.is_some(),
        "wakes up when the interval ends"
    );
    assert_eq!(placement.pods.len(), 4);
    assert!(placement.pods.iter().all(|p| p.problem.is_none()));

    let mut rounds = 0;
    let mut moved_total = 0;
    while world.true_ratio(&truth) > 1.10 {
        rounds += 1;
        assert!(
            rounds <= 8,
            "still {} after {rounds} rounds",
            world.true_ratio(&truth)
        );
        world.advance(61);
        if rounds == 1 {
            // The reports read before the interval ended were above the trigger already: this
            // is the second window in a row.
            world.report_load(&truth);
        } else {
            world.confirm_load(&truth);
        }
        let before = world.ring().current().clone();
        let actions = world.step();
        let next = actions
            .publish
            .as_ref()
            .expect("a rebalance starts")
            .ring
            .clone();
        assert_eq!(next.phase(), RingPhase::Warm);
        let moves: Vec<_> = before.moves_to(next.target().unwrap()).unwrap().collect();
        assert!(!moves.is_empty() && moves.len() <= 6, "{moves:?}");
        moved_total += moves.len();
        let record = world.last_transition();
        assert_eq!(record.kind, crate::crd::TransitionKind::Rebalance);
        assert_eq!(record.shards_moved as usize, moves.len());
        assert_eq!(world.events_of(reasons::REBALANCE).len(), rounds);
        // Through Warm, Switch and Settle like any other transition.
        world.settle(Reports::All);
        assert_eq!(world.ring().phase(), RingPhase::Stable);
        let last = world.placement().last_rebalance.expect("lastRebalance");
        assert_eq!(last.shards_moved as usize, moves.len());
        assert!(last.busiest_percent_predicted < last.busiest_percent_before);
        // The reports are for the ring before: nothing more until the pods report again.
        world.advance(1000);
        assert!(world.step().publish.is_none());
        assert!(
            world
                .placement()
                .message
                .unwrap()
                .contains("waiting for every pod's load report"),
        );
        world.report_load(&truth);
    }
    // 64 shards, 16 per slot; slot 0 at 48 of 96 req/s. Reaching 1.10 takes 8 of its
    // shards (3 req/s each) to the three others: 24, 24+... within 2 rounds of 6.
    assert!(rounds <= 2, "{rounds} rounds");
    println!(
        "rounds {rounds}, shards moved {moved_total}, ratio {start} -> {}",
        world.true_ratio(&truth)
    );
    // Placed by load, the table is no longer balanced by key count, and stays so.
    assert!(world.counts()[&0] < 16, "{:?}", world.counts());
    // Balanced load: no further rebalance, however long (hysteresis).
    for _ in 0..3 {
        world.advance(1000);
        world.report_load(&truth);
        let actions = world.step();
        assert!(actions.publish.is_none(), "{:?}", world.placement());
    }
    let placement = world.placement();
    assert!(placement.busiest_percent.unwrap() <= 110, "{placement:?}");
    assert!(placement.message.unwrap().contains("within the trigger"));
}

#[test]
fn keys_mode_ignores_load_reports_and_writes_no_placement_status() {
    let mut world = World::converged(4);
    let truth = skewed(&world);
    world.report_load(&truth);
    world.advance(1000);
    let actions = world.step();
    assert!(actions.is_idle());
    assert!(world.status.as_ref().unwrap().placement.is_none());
}

#[test]
fn off_keeps_a_table_placed_by_load_and_keys_evens_it_out_again() {
    let mut world = World::placing_by_load(4, 6);
    let truth = skewed(&world);
    world.advance(61);
    world.confirm_load(&truth);
    world.settle(Reports::All);
    let placed = world.ring().current().clone();
    assert!(world.counts()[&0] < 16, "{:?}", world.counts());
    world.spec.placement.balance = BalanceMode::Off;
    world.advance(1000);
    world.settle(Reports::All);
    assert_eq!(world.ring().current(), &placed, "Off moves nothing");
    world.spec.placement.balance = BalanceMode::Keys;
    world.settle(Reports::All);
    assert_converged(&world, 4);
}

#[test]
fn a_report_for_another_ring_or_unreadable_holds_the_rebalance_back() {
    let mut world = World::placing_by_load(4, 6);
    let truth = skewed(&world);
    world.advance(1000);
    world.report_load(&truth);
    let pod = world.slot_pod(2);
    let version = world.ring().version();
    if let Some(Ok(report)) = world.pod_mut(&pod).progress.load.as_mut() {
        report.ring_version = version - 1;
    }
    assert!(world.step().publish.is_none());
    let placement = world.placement();
    let entry = placement.pods.iter().find(|p| p.slot == 2).unwrap();
    assert_eq!(
        entry.problem.as_deref(),
        Some(
            format!(
                "reports for ring version {}, the ring is at {version}",
                version - 1
            )
            .as_str()
        )
    );
    assert!(placement.busiest_percent.is_none());
    world.pod_mut(&pod).progress.load = Some(Err("shard load report is not a report".into()));
    assert!(world.step().publish.is_none());
    world.pod_mut(&pod).progress.load = None;
    assert!(world.step().publish.is_none());
    assert!(
        world
            .placement()
            .message
            .unwrap()
            .contains("slot 2: no load report"),
        "{:?}",
        world.placement()
    );
    world.confirm_load(&truth);
    assert!(world.step().publish.is_some());
}

/// The problem status.placement names for slot 2's pod.
fn slot_2_problem(world: &World) -> Option<String> {
    world
        .placement()
        .pods
        .iter()
        .find(|p| p.slot == 2)
        .and_then(|p| p.problem.clone())
}

#[test]
fn a_report_whose_window_ended_long_ago_holds_the_rebalance_back() {
    let mut world = World::placing_by_load(4, 6);
    let truth = skewed(&world);
    world.advance(1000);
    world.report_load(&truth);
    let pod = world.slot_pod(2);
    let edit = |world: &mut World, end: &dyn Fn(u64) -> u64| {
        if let Some(Ok(report)) = world.pod_mut(&pod).progress.load.as_mut() {
            report.window_end_ms = end(report.window_end_ms);
        }
    };
    // The other pods report on; slot 2's reporter stopped 33 s ago: more than three windows
    // of 10 s and the 2 s allowed for clocks.
    edit(&mut world, &|end| end - 33_000);
    assert!(world.step().publish.is_none());
    assert_eq!(
        slot_2_problem(&world).as_deref(),
        Some(
            "stale: its window ended 33.0 s ago, more than 3 windows of 10 s (is the pod's reporter running?)"
        )
    );
    let message = world.placement().message.unwrap();
    assert!(message.contains("slot 2: stale"), "{message}");
    assert!(world.placement().busiest_percent.is_none());
    // 32 s ago is within three windows and the clocks' allowance: the trigger holds (and
    // holds again a window later).
    edit(&mut world, &|end| end + 1000);
    assert!(world.step().publish.is_none());
    assert!(world.placement().trigger_held.is_some());
    world.advance(i64::from(WINDOW));
    world.report_load(&truth);
    assert!(world.step().publish.is_some(), "{:?}", world.placement());

    // A window that ended before the ring was published (its pod's clock far behind), or ends
    // in the future (far ahead): not used either.
    let mut world = World::placing_by_load(4, 6);
    world.advance(1000);
    world.report_load(&truth);
    let published = world
        .ring
        .as_ref()
        .unwrap()
        .meta
        .as_ref()
        .unwrap()
        .published_at;
    let published = published.as_millisecond();
    edit(&mut world, &|_| u64::try_from(published).unwrap() - 3000);
    assert!(world.step().publish.is_none());
    let problem = slot_2_problem(&world).unwrap();
    assert!(
        problem.starts_with("stale: its window ended 3.0 s before ring version"),
        "{problem}"
    );
    world.report_load(&truth);
    edit(&mut world, &|end| end + 5000);
    assert!(world.step().publish.is_none());
    assert_eq!(
        slot_2_problem(&world).as_deref(),
        Some("its window ends 5.0 s in the future: the pod's clock is ahead")
    );
    // A clock 2 s ahead is allowed.
    world.report_load(&truth);
    edit(&mut world, &|end| end + 2000);
    assert!(world.step().publish.is_none());
    assert!(world.placement().trigger_held.is_some());
    world.advance(i64::from(WINDOW));
    world.report_load(&truth);
    edit(&mut world, &|end| end + 2000);
    assert!(world.step().publish.is_some(), "{:?}", world.placement());
}

#[test]
fn a_rebalance_starts_only_when_two_windows_in_a_row_are_above_the_trigger() {
    let mut world = World::placing_by_load(4, 6);
    let truth = skewed(&world);
    let even = vec![1.0; 64];
    world.advance(1000);

    // One window above the trigger: remembered, nothing starts, however often it is read.
    world.report_load(&truth);
    assert!(world.step().publish.is_none());
    let held = world.placement().trigger_held.expect("triggerHeld");
    assert_eq!((held.ring_version, held.busiest_percent), (1, 200));
    let message = world.placement().message.unwrap();
    assert!(
        message.contains("if the next report of every pod shows it too"),
        "{message}"
    );
    world.advance(5);
    assert!(
        world.step().publish.is_none(),
        "the same windows read again"
    );

    // The next window within the trigger clears it; one more above starts nothing.
    world.report_load(&even);
    assert!(world.step().publish.is_none());
    assert_eq!(world.placement().trigger_held, None);
    world.advance(i64::from(WINDOW));
    world.report_load(&truth);
    assert!(
        world.step().publish.is_none(),
        "one window after an even one"
    );
    let held = world.placement().trigger_held.expect("triggerHeld again");

    // A later window of some pods only: not yet.
    world.advance(i64::from(WINDOW));
    let early = world.slot_pod(3);
    let kept = world.pod_mut(&early).progress.load.clone();
    world.report_load(&truth);
    world.pod_mut(&early).progress.load = kept;
    assert!(
        world.step().publish.is_none(),
        "slot 3 still reports the window before"
    );
    assert_eq!(world.placement().trigger_held, Some(held));

    // Every pod's next window above it too: the rebalance starts.
    world.report_load(&truth);
    let actions = world.step();
    let next = actions.publish.expect("a rebalance starts");
    assert_eq!(next.ring.phase(), RingPhase::Warm);
    assert_eq!(world.events_of(reasons::REBALANCE).len(), 1);
    // The record belongs to the ring before: gone with the new ring.
    world.settle(Reports::All);
    assert_eq!(world.placement().trigger_held, None);
}

#[test]
fn a_shard_too_hot_for_any_pod_is_reported_once_and_not_moved() {
    let mut world = World::placing_by_load(4, 6);
    let mut truth = vec![1.0; 64];
    let hot = world.ring().current().shards_of(1).next().unwrap();
    truth[hot as usize] = 100.0; // mean (63 + 100) / 4 = 40.75
    world.advance(61);
    world.confirm_load(&truth);
    let actions = world.step();
    let placement = world.placement();
    assert_eq!(placement.hot_shards.len(), 1);
    assert_eq!(
        (placement.hot_shards[0].shard, placement.hot_shards[0].slot),
        (hot, 1)
    );
    assert_eq!(world.events_of(reasons::HOT_SHARDS).len(), 1);
    if let Some(next) = &actions.publish {
        let target = next.ring.target().unwrap();
        assert_eq!(target.slot_of(hot), Some(1), "the hot shard stays");
    }
    world.settle(Reports::All);
    world.report_load(&truth);
    world.step();
    assert_eq!(
        world.events_of(reasons::HOT_SHARDS).len(),
        1,
        "once per set"
    );
}

#[test]
fn a_shard_too_hot_for_any_pod_is_split_by_doubling_when_the_operator_chose_the_count() {
    let mut world = World::new(4);
    world.spec.shards = None;
    world.settle(Reports::All);
    world.spec.placement.balance = BalanceMode::Load;
    world.spec.placement.max_shards_per_round = 64;
    world.spec.placement.interval_seconds = 60;
    assert_eq!(world.ring().shards().get(), 4096);
    let mut truth = vec![1.0; 4096];
    let hot = world.ring().current().shards_of(1).next().unwrap();
    truth[hot as usize] = 3000.0; // alone 169% of the mean (4095 + 3000) / 4
    world.advance(61);
    world.confirm_load(&truth);
    let before = world.ring().clone();
    let actions = world.step();
    let next = actions.publish.expect("the split").ring;
    // Every shard split in place: nothing moves, the ring stays Stable.
    assert_eq!(next.shards().get(), 8192);
    assert_eq!(next.phase(), RingPhase::Stable);
    for shard in 0..8192 {
        assert_eq!(
            next.current().slot_of(shard),
            before.current().slot_of(shard / 2)
        );
    }
    assert_eq!(world.events_of(reasons::SPLIT_HOT_SHARDS).len(), 1);
    let note = &world.events_of(reasons::SPLIT_HOT_SHARDS)[0].note;
    assert!(
        note.contains(&format!("the hottest, shard {hot} on slot 1"))
            && note.contains("shards 4096 -> 8192"),
        "{note}"
    );
    assert_eq!(
        world.last_transition().kind,
        crate::crd::TransitionKind::Reshard
    );
    let last = world.placement().last_rebalance.expect("lastRebalance");
    assert_eq!((last.shards_moved, last.split_to_shards), (0, Some(8192)));

    // The pods report per new shard: the hot shard's halves, each placeable, move.
    let halves: Vec<f64> = (0..8192).map(|s| truth[s / 2] / 2.0).collect();
    world.advance(61);
    world.confirm_load(&halves);
    let actions = world.step();
    let next = actions.publish.expect("a rebalance").ring;
    assert_eq!(next.phase(), RingPhase::Warm, "moves, not another split");
    assert_eq!(next.shards().get(), 8192);
    assert_eq!(world.events_of(reasons::SPLIT_HOT_SHARDS).len(), 1);
    world.settle(Reports::All);
    // The halves on two slots: 4023 + 3 × 1024 req/s over 4 pods, from 227 % of the mean to
    // 142 % (1023 + 1500 at most on one pod: the best two halves allow).
    let table = world.ring().current();
    assert_ne!(
        table.slot_of(hot * 2),
        table.slot_of(hot * 2 + 1),
        "the halves apart"
    );
    let ratio = world.true_ratio(&halves);
    assert!(ratio < 1.43, "{ratio}");
}

#[test]
fn with_spec_shards_set_a_hot_shard_is_only_reported() {
    let mut world = World::placing_by_load(4, 6);
    let mut truth = vec![1.0; 64];
    let hot = world.ring().current().shards_of(1).next().unwrap();
    truth[hot as usize] = 100.0;
    world.advance(61);
    world.confirm_load(&truth);
    let actions = world.step();
    assert!(world.events_of(reasons::SPLIT_HOT_SHARDS).is_empty());
    assert_eq!(world.placement().hot_shards.len(), 1);
    if let Some(next) = actions.publish {
        assert_eq!(next.ring.shards().get(), 64, "the user's count stays");
    }
}

/// `cargo test -p locus-operator --release --lib load_plan_cost -- --ignored --nocapture`:
/// one `plan()` of a settled service placing by load whose pods all reported an even load (so
/// every pass reads the reports and runs the load planner, and moves nothing), against the
/// same service placing by keys.
#[test]
#[ignore = "a measurement; run by hand"]
fn load_plan_cost_of_a_settled_service() {
    for (slots, shards) in [(100, 4096), (1000, 4096), (1000, 65_536)] {
        let mut world = World::new(slots);
        world.spec.shards = Some(shards);
        world.settle(Reports::All);
        let keys = mean_plan_ms(&world);
        world.spec.placement.balance = BalanceMode::Load;
        world.report_load(&vec![1.0; shards as usize]);
        world.advance(1000);
        assert!(world.step().is_idle());
        assert!(world.placement().busiest_percent.is_some());
        let load = mean_plan_ms(&world);
        println!(
            "plan of a settled service, {slots} slots, {shards} shards: keys {keys:.2} ms, load {load:.2} ms"
        );
    }
}

fn mean_plan_ms(world: &World) -> f64 {
    let rounds = 10;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(world.plan());
    }
    started.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
}
