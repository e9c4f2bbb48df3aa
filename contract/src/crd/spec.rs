//! The desired state a user writes: [`StatefulServiceSpec`], and the root type
//! [`StatefulService`] the `CustomResource` derive generates around it.
//!
//! Doc comments on fields are the text `kubectl explain statefulservice.spec` shows.

// Doc comments of these types become the schema's descriptions, which users read through
// `kubectl explain`: field names there are written as users type them, without backticks.
#![allow(clippy::doc_markdown)]

use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::rules;
use super::status::StatefulServiceStatus;

/// A sticky stateful service: pods that each own a share of the session key space, and the
/// ring that tells routers which pod owns which key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[allow(
    clippy::duplicated_attributes,
    reason = "every printcolumn repeats keys such as type_ = \"integer\"; they are separate columns"
)]
#[kube(
    group = "locus.dev",
    version = "v1alpha1",
    kind = "StatefulService",
    plural = "statefulservices",
    shortname = "stsvc",
    category = "locus",
    namespaced,
    status = "StatefulServiceStatus",
    derive = "PartialEq",
    doc = "StatefulService runs a sticky stateful service: each session's state lives in the memory of one pod, every request for the session is routed to that pod, and the state moves with ownership when pods come and go.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[kube(printcolumn(
    name = "Replicas",
    type_ = "integer",
    json_path = ".spec.replicas",
    description = "Desired number of slots"
))]
#[kube(printcolumn(
    name = "Ready",
    type_ = "integer",
    json_path = ".status.readyReplicas",
    description = "Slots whose pod is Ready"
))]
#[kube(printcolumn(
    name = "Ring",
    type_ = "integer",
    json_path = ".status.ringVersion",
    description = "Version of the last published ring"
))]
#[kube(printcolumn(
    name = "Phase",
    type_ = "string",
    json_path = ".status.phase",
    description = "Stable, or the step of the transition in progress"
))]
#[kube(printcolumn(
    name = "Shards",
    type_ = "integer",
    json_path = ".status.shards",
    description = "Number of shards of the current ring (spec.shards, or the count the operator chose)",
    priority = 1
))]
#[kube(printcolumn(
    name = "Active",
    type_ = "integer",
    json_path = ".status.activeReplicas",
    description = "Slots that own shards in the current ring",
    priority = 1
))]
#[kube(printcolumn(
    name = "Age",
    type_ = "date",
    json_path = ".metadata.creationTimestamp"
))]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::crd::schema::for_kubernetes)]
#[x_kube(
    validation = Rule::new(rules::PORT_NAMES_CONTAINER_PORT)
        .message(Message::Expression(rules::PORT_NAMES_CONTAINER_PORT_MESSAGE.into()))
        .field_path(".port"),
    validation = Rule::new(rules::REPLICAS_AT_MOST_SHARDS)
        .message(rules::REPLICAS_AT_MOST_SHARDS_MESSAGE)
        .field_path(".replicas"),
    validation = Rule::new(rules::IN_PLACE_NEEDS_SNAPSHOT)
        .message(rules::IN_PLACE_NEEDS_SNAPSHOT_MESSAGE)
        .field_path(".updateStrategy.type"),
)]
pub struct StatefulServiceSpec {
    /// Number of slots. Each slot is served by one pod at a time and owns an equal share of the
    /// shards. Changing it (also through the scale subresource: kubectl scale, HPA) starts a
    /// warm scale-up or scale-down transition. At most spec.shards (at most 65536 when
    /// spec.shards is unset).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Number of shards the 64-bit hash ring is cut into: a power of two, at most 65536. A key
    /// belongs to shard H(key) >> (64 - log2(shards)). Unset (the default): the operator
    /// chooses it, the smallest power of two at least 64 x replicas, at least 4096 and at most
    /// 65536, and doubles it as replicas grow; status.shards shows the count in use. Set: the
    /// count is fixed at this value. Either way it may only grow (each doubling splits every
    /// shard in two halves that keep their owner, so nothing moves); it never shrinks, and a
    /// value below the count in use (status.shards) leaves that count in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    #[x_kube(
        validation = Rule::new(rules::SHARDS_POWER_OF_TWO).message(rules::SHARDS_POWER_OF_TWO_MESSAGE),
        validation = Rule::new(rules::SHARDS_ONLY_GROW).message(rules::SHARDS_ONLY_GROW_MESSAGE),
    )]
    pub shards: Option<u32>,

    /// Template of the pods of every slot. The operator adds its own labels, the snapshot
    /// volume and the environment the Locus SDK reads. The template may list at most 64
    /// containers with at most 128 ports each.
    #[schemars(schema_with = "crate::crd::schema::pod_template")]
    pub template: PodTemplateSpec,

    /// Name of the container port that serves session traffic (and the handoff endpoints). It
    /// must name a port in `spec.template.spec.containers[*].ports`; routers send each request to
    /// this port of the owner pod.
    #[schemars(length(min = 1, max = 15), regex(pattern = rules::PORT_NAME_PATTERN))]
    pub port: String,

    /// Number of tokens per slot on the consistent-hashing circle that gives every shard its
    /// order of preferred slots. More tokens spread shards more evenly when slots are added or
    /// removed; 1 to 1024.
    #[serde(default = "default_vnodes")]
    #[schemars(range(min = 1, max = 1024))]
    pub vnodes: u32,

    /// How pods are replaced when spec.template changes.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// Largest number of shards moved by one transition step; a larger change is split into
    /// several steps so that warm-up load stays bounded. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_shard_moves_per_step: Option<u32>,

    /// Deadlines of the transition steps. Each step rolls forward when its deadline passes (cold
    /// loads instead of warm ones), so a stuck pod cannot wedge the service.
    #[serde(default)]
    pub timeouts: Timeouts,

    /// How long a slot's pod may stay unready before spec.onPodFailure applies, as a Go
    /// duration (for example 10s).
    #[serde(default = "default_unready_grace")]
    #[schemars(transform = crate::crd::schema::positive_duration)]
    pub unready_grace: Duration,

    /// What happens to a slot whose pod stays unready longer than spec.unreadyGrace.
    ///
    /// Reroute (default): the pod is deleted and its shards move to the other slots, which take
    /// its sessions over from its hand-off or, once it is gone, from the persistence.
    ///
    /// Wait: the slot keeps its shards and requests for them get 503 until a replacement pod is
    /// Ready.
    #[serde(default)]
    pub on_pod_failure: PodFailurePolicy,

    /// In-place restart snapshots: before exiting on SIGTERM a pod writes its sessions to a
    /// memory-backed emptyDir volume and restores them on start, so an image-only update keeps
    /// the slot's pod, address and state. Unset: no snapshot volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSpec>,

    /// How shards are spread over the slots besides membership changes: balanced by key count
    /// (Keys, the default), by the load the pods report (Load), or left where membership changes
    /// put them (Off).
    #[serde(default)]
    pub placement: Placement,
}

/// How shards are spread over the slots (docs/adr/0002-load-aware-placement.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(rules::PLACEMENT_TARGET_BELOW_TRIGGER)
        .message(rules::PLACEMENT_TARGET_BELOW_TRIGGER_MESSAGE)
        .field_path(".targetPercent"),
)]
pub struct Placement {
    /// What the operator balances.
    ///
    /// Keys (default): every slot holds floor or ceil(shards / replicas) shards; a table left
    /// unbalanced (a capped step, a change of mode) is evened out by key count.
    ///
    /// Load: in a Stable ring, shards move from the busiest pods to the least busy, by the
    /// requests per second each pod reports in its annotation locus.dev/shard-load, through the
    /// same Warm, Switch, Settle handoff as a scale change: when every pod reported for the
    /// current ring, the busiest pod serves more than triggerPercent of the mean and
    /// intervalSeconds passed since the last rebalance, at most maxShardsPerRound shards move
    /// until the busiest is at most targetPercent of the mean.
    ///
    /// Off: shards move only for membership changes (slots joining, leaving or failing) and the
    /// later capped steps of those; the table is otherwise left as it is.
    #[serde(default)]
    pub balance: BalanceMode,

    /// Load: a rebalance starts only when the busiest pod's requests per second exceed this
    /// percentage of the mean over the pods (101 to 1000). Above targetPercent, so that a
    /// rebalanced service does not move again on small changes.
    #[serde(default = "default_trigger_percent")]
    #[schemars(range(min = 101, max = 1000))]
    pub trigger_percent: u32,

    /// Load: a rebalance moves shards until the busiest pod is predicted at most this
    /// percentage of the mean (100 to 999, below triggerPercent). A single shard busier than
    /// this percentage of the mean cannot be placed within it: it is reported in
    /// status.placement.hotShards and stays where it is (doubling spec.shards splits it).
    #[serde(default = "default_target_percent")]
    #[schemars(range(min = 100, max = 999))]
    pub target_percent: u32,

    /// Load: most shards one rebalance moves (1 to 65536); spec.maxShardMovesPerStep, when
    /// lower, caps it as well.
    #[serde(default = "default_max_shards_per_round")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_shards_per_round: u32,

    /// Load: least time from the end of one rebalance (or any other transition) to the start of
    /// the next, in seconds (1 to 86400); also the least time the current ring must have been
    /// in place, so that the pods' reports measure it.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub interval_seconds: u32,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            balance: BalanceMode::default(),
            trigger_percent: DEFAULT_TRIGGER_PERCENT,
            target_percent: DEFAULT_TARGET_PERCENT,
            max_shards_per_round: DEFAULT_MAX_SHARDS_PER_ROUND,
            interval_seconds: DEFAULT_INTERVAL_SECONDS,
        }
    }
}

/// What the operator balances (spec.placement.balance).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum BalanceMode {
    /// Shards move only for membership changes.
    Off,
    /// Every slot holds floor or ceil(shards / replicas) shards.
    #[default]
    Keys,
    /// Shards move from the busiest pods to the least busy, by reported load.
    Load,
}

/// How pods are replaced when the pod template changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// Surge (default): a new pod is started beside the old one, warms the whole slot, then
    /// takes it over.
    ///
    /// InPlace: an image-only change restarts each pod in place and the pod restores its
    /// sessions from its snapshot (requires spec.snapshot); any other change falls back to Surge.
    #[serde(rename = "type", default)]
    pub type_: UpdateStrategyType,
}

/// Kind of pod replacement on a template change.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum UpdateStrategyType {
    /// Start a surge pod, warm the whole slot on it, then hand the slot over.
    #[default]
    Surge,
    /// Restart the pod in place, keeping its state through a memory-backed snapshot.
    InPlace,
}

/// Deadlines of the transition steps, as Go durations (for example 30s or 1m30s).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Longest wait in the Warm step for the pods that gain shards to report them pre-copied;
    /// then the ring switches anyway.
    #[serde(default = "default_warm_timeout")]
    #[schemars(transform = crate::crd::schema::positive_duration)]
    pub warm: Duration,

    /// How long the Settle step waits for the pods that lost shards to report them drained
    /// (handed over to the new owners) before acting: then a pod that leaves anyway is deleted
    /// and the ring settles once it is gone, while a pod that stays in the ring is waited for
    /// (condition DrainStalled). A timeout never settles the ring by itself.
    #[serde(default = "default_drain_timeout")]
    #[schemars(transform = crate::crd::schema::positive_duration)]
    pub drain: Duration,

    /// Longest wait after the Switch for every member to report that it observed the new ring;
    /// then the transition settles without those reports (once every pod that lost shards
    /// drained or is gone).
    #[serde(default = "default_settle_timeout")]
    #[schemars(transform = crate::crd::schema::positive_duration)]
    pub settle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            warm: default_warm_timeout(),
            drain: default_drain_timeout(),
            settle: default_settle_timeout(),
        }
    }
}

/// Policy for a slot whose pod stays unready past the grace period.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PodFailurePolicy {
    /// Delete the failed pod and move the slot's shards to other slots, which take the
    /// sessions over from its hand-off or, once it is gone, from the persistence.
    #[default]
    Reroute,
    /// Keep the slot (static membership) and answer 503 until a replacement pod is Ready.
    Wait,
}

/// The memory-backed snapshot volume used by in-place restarts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    /// Size limit of the memory-backed emptyDir that holds the snapshot, as a Kubernetes
    /// quantity (for example 256Mi). It counts against the pod's memory limit.
    #[serde(default = "default_snapshot_size_limit")]
    #[schemars(transform = crate::crd::schema::positive_quantity)]
    pub size_limit: String,
}

impl Default for SnapshotSpec {
    fn default() -> Self {
        Self {
            size_limit: default_snapshot_size_limit(),
        }
    }
}

/// Default of `spec.replicas`.
pub const DEFAULT_REPLICAS: i32 = 1;
/// Fewest shards the operator chooses when `spec.shards` is unset (the shard count of every
/// service before the count was chosen automatically).
pub const DEFAULT_SHARDS: u32 = 4096;
/// Shards per slot the operator aims at when `spec.shards` is unset: at 64 or more, the busiest
/// of 1000 slots holds about 1.01x the mean keys (docs/benchmarks.md).
pub const AUTO_SHARDS_PER_REPLICA: u32 = 64;
/// Default of `spec.vnodes`.
pub const DEFAULT_VNODES: u32 = 128;
/// Default of `spec.timeouts.warm`.
pub const DEFAULT_WARM_TIMEOUT: StdDuration = StdDuration::from_secs(30);
/// Default of `spec.timeouts.drain`.
pub const DEFAULT_DRAIN_TIMEOUT: StdDuration = StdDuration::from_secs(30);
/// Default of `spec.timeouts.settle`.
pub const DEFAULT_SETTLE_TIMEOUT: StdDuration = StdDuration::from_secs(60);
/// Default of `spec.unreadyGrace`.
pub const DEFAULT_UNREADY_GRACE: StdDuration = StdDuration::from_secs(10);
/// Default of `spec.snapshot.sizeLimit`.
pub const DEFAULT_SNAPSHOT_SIZE_LIMIT: &str = "256Mi";
/// Default of `spec.placement.triggerPercent`.
pub const DEFAULT_TRIGGER_PERCENT: u32 = 120;
/// Default of `spec.placement.targetPercent`.
pub const DEFAULT_TARGET_PERCENT: u32 = 110;
/// Default of `spec.placement.maxShardsPerRound`.
pub const DEFAULT_MAX_SHARDS_PER_ROUND: u32 = 64;
/// Default of `spec.placement.intervalSeconds`.
pub const DEFAULT_INTERVAL_SECONDS: u32 = 300;

/// The shard count the operator chooses for `replicas` slots when `spec.shards` is unset: the
/// smallest power of two at least [`AUTO_SHARDS_PER_REPLICA`] x `replicas`, at least
/// [`DEFAULT_SHARDS`] and at most [`rules::MAX_SHARDS`].
///
/// It is a power of two, so growing from one choice to a larger one is a series of doublings
/// (every shard split in place, nothing moves).
///
/// ```
/// use locus_contract::crd::auto_shards;
///
/// assert_eq!(auto_shards(1), 4096);
/// assert_eq!(auto_shards(64), 4096);
/// assert_eq!(auto_shards(65), 8192);
/// assert_eq!(auto_shards(1000), 65536);
/// ```
#[must_use]
pub fn auto_shards(replicas: i32) -> u32 {
    let replicas = u64::try_from(replicas).unwrap_or(0);
    let wanted = replicas.saturating_mul(u64::from(AUTO_SHARDS_PER_REPLICA));
    let shards = wanted
        .clamp(u64::from(DEFAULT_SHARDS), u64::from(rules::MAX_SHARDS))
        .next_power_of_two();
    u32::try_from(shards).unwrap_or(rules::MAX_SHARDS)
}

impl StatefulServiceSpec {
    /// The shard count this spec asks for: `spec.shards` when set, else
    /// [`auto_shards`]`(spec.replicas)`. The operator uses the larger of this and the count of
    /// the ring already published (the count never shrinks).
    #[must_use]
    pub fn desired_shards(&self) -> u32 {
        self.shards.unwrap_or_else(|| auto_shards(self.replicas))
    }
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

fn default_vnodes() -> u32 {
    DEFAULT_VNODES
}

fn default_warm_timeout() -> Duration {
    DEFAULT_WARM_TIMEOUT.into()
}

fn default_drain_timeout() -> Duration {
    DEFAULT_DRAIN_TIMEOUT.into()
}

fn default_settle_timeout() -> Duration {
    DEFAULT_SETTLE_TIMEOUT.into()
}

fn default_unready_grace() -> Duration {
    DEFAULT_UNREADY_GRACE.into()
}

fn default_trigger_percent() -> u32 {
    DEFAULT_TRIGGER_PERCENT
}

fn default_target_percent() -> u32 {
    DEFAULT_TARGET_PERCENT
}

fn default_max_shards_per_round() -> u32 {
    DEFAULT_MAX_SHARDS_PER_ROUND
}

fn default_interval_seconds() -> u32 {
    DEFAULT_INTERVAL_SECONDS
}

fn default_snapshot_size_limit() -> String {
    DEFAULT_SNAPSHOT_SIZE_LIMIT.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_shards_is_the_smallest_power_of_two_at_64_per_replica_within_bounds() {
        // At least the former default, whatever the replicas.
        for replicas in [-1, 0, 1, 2, 63, 64] {
            assert_eq!(auto_shards(replicas), 4096, "replicas {replicas}");
        }
        // 64 x replicas, rounded up to a power of two.
        assert_eq!(auto_shards(65), 8192);
        assert_eq!(auto_shards(100), 8192);
        assert_eq!(auto_shards(128), 8192);
        assert_eq!(auto_shards(129), 16384);
        assert_eq!(auto_shards(256), 16384);
        assert_eq!(auto_shards(257), 32768);
        assert_eq!(auto_shards(512), 32768);
        assert_eq!(auto_shards(513), 65536);
        // Capped at the format's limit.
        for replicas in [1000, 1024, 2048, i32::MAX] {
            assert_eq!(
                auto_shards(replicas),
                rules::MAX_SHARDS,
                "replicas {replicas}"
            );
        }
    }

    #[test]
    fn auto_shards_keeps_at_least_64_shards_per_replica_below_the_cap_and_grows_by_doubling() {
        let mut previous = auto_shards(0);
        for replicas in 0..=2048 {
            let shards = auto_shards(replicas);
            assert!(shards.is_power_of_two(), "replicas {replicas}: {shards}");
            assert!(
                shards >= previous,
                "replicas {replicas}: {shards} < {previous}"
            );
            assert!(
                shards >= u32::try_from(replicas).unwrap(),
                "every slot holds a shard"
            );
            if shards < rules::MAX_SHARDS {
                let per = u64::from(shards) / u64::try_from(replicas.max(1)).unwrap();
                assert!(
                    per >= 64,
                    "replicas {replicas}: {shards} is {per} per replica"
                );
                // The smallest such power of two: half of it would be too few (or below 4096).
                assert!(
                    shards == DEFAULT_SHARDS
                        || u64::from(shards / 2) < 64 * u64::try_from(replicas).unwrap(),
                    "replicas {replicas}: {shards} is larger than needed"
                );
            }
            previous = shards;
        }
    }

    #[test]
    fn desired_shards_is_the_fixed_count_when_set() {
        let mut spec: StatefulServiceSpec = serde_json::from_value(serde_json::json!({
            "replicas": 100,
            "port": "http",
            "template": {},
        }))
        .unwrap();
        assert_eq!(spec.shards, None);
        assert_eq!(spec.desired_shards(), 8192);
        spec.shards = Some(1024);
        assert_eq!(spec.desired_shards(), 1024);
        spec.shards = None;
        spec.replicas = 70;
        assert_eq!(spec.desired_shards(), 8192);
        spec.replicas = 60;
        assert_eq!(spec.desired_shards(), 4096);
    }
}
