//! CEL validation rules of the `StatefulService` schema and the messages the API server returns
//! when one of them fails.
//!
//! Each rule is a pair of constants: the CEL expression and its message (or message
//! expression). The schema is built from these constants, so tests and documentation can quote
//! the exact rule text. The API server prefixes every message with the path of the field it was
//! attached to, e.g. `spec.shards: Invalid value: "integer": spec.shards must be a power of two`.
//!
//! CEL has no bitwise operators, so "power of two" is a membership test; and every rule is kept
//! cheap enough for the API server's static cost estimate (the lists a rule iterates are bounded
//! in the schema, see [`MAX_CONTAINERS`] and [`MAX_CONTAINER_PORTS`]).

/// Largest number of shards: 2^16.
pub const MAX_SHARDS: u32 = 65_536;

/// `spec.shards`: a power of two between 1 and [`MAX_SHARDS`].
pub const SHARDS_POWER_OF_TWO: &str =
    "self in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]";
/// Message of [`SHARDS_POWER_OF_TWO`].
pub const SHARDS_POWER_OF_TWO_MESSAGE: &str =
    "spec.shards must be a power of two between 1 and 65536 (for example 1024, 4096 or 16384)";

/// `spec.shards` (transition rule): the shard count never shrinks. Doubling splits every shard
/// in two halves that keep their owner; halving would merge shards owned by different slots.
/// The API server checks a transition rule only when the old and the new object both set the
/// field; the operator itself never lowers the count of a published ring, so setting a value
/// below the count the operator chose leaves that count in place.
pub const SHARDS_ONLY_GROW: &str = "self >= oldSelf";
/// Message of [`SHARDS_ONLY_GROW`].
pub const SHARDS_ONLY_GROW_MESSAGE: &str =
    "spec.shards may only grow (each doubling splits every shard in place); it cannot be reduced";

/// `spec` (reported on `spec.port`): the session port names a container port of the template.
pub const PORT_NAMES_CONTAINER_PORT: &str = "has(self.template.spec) && self.template.spec.containers.exists(c, has(c.ports) && c.ports.exists(p, has(p.name) && p.name == self.port))";
/// Message expression of [`PORT_NAMES_CONTAINER_PORT`]: quotes the offending name.
pub const PORT_NAMES_CONTAINER_PORT_MESSAGE: &str = r#""spec.port '" + self.port + "' must name a containerPort in spec.template.spec.containers[*].ports""#;

/// `spec` (reported on `spec.replicas`): every slot holds at least one shard. With `spec.shards`
/// unset the operator chooses at least `replicas` shards, up to [`MAX_SHARDS`].
pub const REPLICAS_AT_MOST_SHARDS: &str =
    "self.replicas <= (has(self.shards) ? self.shards : 65536)";
/// Message of [`REPLICAS_AT_MOST_SHARDS`].
pub const REPLICAS_AT_MOST_SHARDS_MESSAGE: &str = "spec.replicas must not exceed spec.shards (65536 when spec.shards is unset): every slot needs at least one shard";

/// Every duration field (`spec.timeouts.*`, `spec.unreadyGrace`): strictly positive. A value
/// that does not match [`DURATION_PATTERN`] is left to the pattern's own error, so that `thirty`
/// gets one clear message instead of a CEL conversion error as well.
pub const DURATION_POSITIVE: &str = "!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) > duration('0s')";
/// Message of [`DURATION_POSITIVE`].
pub const DURATION_POSITIVE_MESSAGE: &str =
    "must be a positive duration such as 500ms, 30s, 1m30s or 2h";
/// `OpenAPI` pattern of every duration field: Go `time.ParseDuration` syntax without a sign.
pub const DURATION_PATTERN: &str = "^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// Longest accepted duration string (bounds the cost of [`DURATION_POSITIVE`]).
pub const DURATION_MAX_LENGTH: u32 = 32;

/// `spec` (reported on `spec.snapshot`): an in-place update keeps sessions across the restart
/// only through the snapshot volume, so it requires one.
pub const IN_PLACE_NEEDS_SNAPSHOT: &str =
    "self.updateStrategy.type != 'InPlace' || has(self.snapshot)";
/// Message of [`IN_PLACE_NEEDS_SNAPSHOT`].
pub const IN_PLACE_NEEDS_SNAPSHOT_MESSAGE: &str = "spec.updateStrategy.type InPlace needs spec.snapshot (for example snapshot: {sizeLimit: 256Mi}): the snapshot volume is what keeps the sessions across the restart";

/// `spec.snapshot.sizeLimit`: a strictly positive Kubernetes quantity.
pub const QUANTITY_POSITIVE: &str =
    "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))";
/// Message of [`QUANTITY_POSITIVE`].
pub const QUANTITY_POSITIVE_MESSAGE: &str =
    "must be a positive quantity such as 64Mi, 256Mi or 1Gi";
/// Longest accepted quantity string (bounds the cost of [`QUANTITY_POSITIVE`]).
pub const QUANTITY_MAX_LENGTH: u32 = 64;

/// Most containers a pod template may list (`spec.template.spec.containers`). Bounds the cost of
/// [`PORT_NAMES_CONTAINER_PORT`], which the API server estimates before accepting the CRD.
pub const MAX_CONTAINERS: u32 = 64;
/// Most ports one container of the template may list. See [`MAX_CONTAINERS`].
pub const MAX_CONTAINER_PORTS: u32 = 128;
/// Longest port name: a container port name is an IANA service name of at most 15 characters.
pub const PORT_NAME_MAX_LENGTH: u32 = 15;
/// `OpenAPI` pattern of `spec.port`: lower-case letters, digits and inner hyphens.
pub const PORT_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// `spec.placement` (reported on `spec.placement.targetPercent`): the target band lies strictly
/// inside the trigger band, so that a rebalanced service does not move again on small changes.
pub const PLACEMENT_TARGET_BELOW_TRIGGER: &str = "self.targetPercent < self.triggerPercent";
/// Message of [`PLACEMENT_TARGET_BELOW_TRIGGER`].
pub const PLACEMENT_TARGET_BELOW_TRIGGER_MESSAGE: &str = "spec.placement.targetPercent must be below spec.placement.triggerPercent (for example trigger 120, target 110): a rebalance moves shards until the busiest pod is within the target, and starts only past the trigger";
