//! The `StatefulService` custom resource (`locus.dev/v1alpha1`), generated from Rust types.
//!
//! [`StatefulServiceSpec`] is what a user writes; [`StatefulServiceStatus`] is what the operator
//! reports. The `CustomResourceDefinition` is derived from these types ([`crd`]); the operator's
//! `crdgen` binary prints it as YAML and its output is committed as
//! `crds/statefulservices.locus.dev.yaml`, which a test of the operator compares with the types so
//! the two cannot drift apart.
//!
//! Validation lives in the schema so that the API server refuses a bad spec with a clear message
//! before the operator ever sees it: `OpenAPI` bounds and defaults on every field, and CEL rules
//! (`x-kubernetes-validations`) for what `OpenAPI` cannot say:
//!
//! - `spec.shards`, when set, is a power of two in `1..=65536` and never shrinks (unset, the
//!   operator chooses the count: [`auto_shards`]);
//! - `spec.port` names a container port of the pod template;
//! - `spec.replicas` does not exceed `spec.shards` (every slot holds at least one shard), or
//!   65536 when `spec.shards` is unset;
//! - every duration is a positive Go duration (`30s`, `1m30s`);
//! - `spec.snapshot.sizeLimit` is a positive quantity (`256Mi`);
//! - `spec.placement.targetPercent` is below `spec.placement.triggerPercent`.
//!
//! The rules are exported as constants ([`rules`]) so tests and docs quote the exact text.
//!
//! ```
//! use locus_contract::crd::StatefulServiceSpec;
//!
//! let spec: StatefulServiceSpec = serde_json::from_value(serde_json::json!({
//!     "port": "http",
//!     "template": { "spec": { "containers": [
//!         { "name": "app", "ports": [{ "name": "http", "containerPort": 8080 }] }
//!     ] } }
//! }))?;
//! assert_eq!(spec.replicas, 1);
//! assert_eq!(spec.shards, None);
//! assert_eq!(spec.desired_shards(), 4096);
//! # Ok::<(), serde_json::Error>(())
//! ```

pub mod rules;
mod schema;
mod spec;
mod status;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use spec::{
    AUTO_SHARDS_PER_REPLICA, BalanceMode, DEFAULT_DRAIN_TIMEOUT, DEFAULT_INTERVAL_SECONDS,
    DEFAULT_MAX_SHARDS_PER_ROUND, DEFAULT_REPLICAS, DEFAULT_SETTLE_TIMEOUT, DEFAULT_SHARDS,
    DEFAULT_SNAPSHOT_SIZE_LIMIT, DEFAULT_TARGET_PERCENT, DEFAULT_TRIGGER_PERCENT,
    DEFAULT_UNREADY_GRACE, DEFAULT_VNODES, DEFAULT_WARM_TIMEOUT, Placement, PodFailurePolicy,
    SnapshotSpec, StatefulService, StatefulServiceSpec, Timeouts, UpdateStrategy,
    UpdateStrategyType, auto_shards,
};
pub use status::{
    AVAILABLE, ColdSessions, DEGRADED, HotShardStatus, MOVED_SESSIONS_REPORTED,
    MovedSessionsSummary, PROGRESSING, Phase, PlacementStatus, PodLoad, RebalanceRecord,
    ServedSessions, StatefulServiceStatus, TransitionKind, TransitionRecord, TriggerHeld,
    WarmSessions,
};

/// API group of the resource.
pub const GROUP: &str = "locus.dev";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "StatefulService";
/// Plural resource name, as used in URLs and RBAC rules.
pub const PLURAL: &str = "statefulservices";
/// Short name accepted by `kubectl get` (chosen not to clash with `sts` or `svc`).
pub const SHORT_NAME: &str = "stsvc";
/// Name of the `CustomResourceDefinition` object (`<plural>.<group>`).
pub const CRD_NAME: &str = "statefulservices.locus.dev";

/// The `CustomResourceDefinition` of `StatefulService`, as the API server should receive it.
pub fn crd() -> CustomResourceDefinition {
    StatefulService::crd()
}
