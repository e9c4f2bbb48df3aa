//! `kubectl locus`: a kubectl plugin that shows a Locus `StatefulService` at a glance.
//!
//! ```text
//! kubectl locus status <service> [-n NAMESPACE] [-o json] [--kubeconfig PATH] [--context NAME]
//! ```
//!
//! It reads, through the API server and without writing anything, the `StatefulService`
//! (spec and status), the ring `ConfigMap` the operator publishes (`<service>-ring`, parsed
//! with the SDK's ring document reader) and the service's pods (label
//! `locus.dev/service=<service>`, controlled by the service), with the progress each pod
//! reports in its `locus.dev/*-ring-version` and `locus.dev/moved-sessions` annotations. The
//! caller needs `get` on `statefulservices.locus.dev` and `configmaps` and `list` on `pods`
//! in the namespace.
//!
//! - [`args`]: the command line, parsed by hand.
//! - [`fetch`]: the client (kubeconfig and namespace as kubectl picks them) and the three
//!   reads.
//! - [`report`]: the facts as plain data, built by a pure function of the objects and the
//!   time.
//! - [`warnings`]: what needs attention, a pure function of the report.
//! - [`render`]: the text for an 80-column terminal, and the JSON.
//!
//! Exit codes: 0 when the status was shown (warnings included), 1 when it could not be read
//! ([`Error`]: e.g. `statefulservice demo/ledger not found`), 2 on a bad command line.
//!
//! # `-o json`
//!
//! One JSON object. Field names are stable; new fields may be added. Times are RFC 3339,
//! durations and ages in seconds; absent facts are `null`, never missing.
//!
//! | field | meaning |
//! |---|---|
//! | `service`, `namespace` | the service |
//! | `generation`, `observedGeneration` | `metadata.generation`; the generation the status describes |
//! | `phase` | `status.phase`: `Stable`, `Warm`, `Switch` or `Settle`; `null` without a status |
//! | `replicas` | `{desired, current, ready, active}`: `spec.replicas`; slots with a pod, with a Ready pod, holding shards (from the status) |
//! | `shards` | the shard count in use: `status.shards`; without it, the count the spec asks for (`spec.shards`, or the operator's choice for `spec.replicas` when unset) |
//! | `revision` | `{current, update}`: template revisions (they differ during a rollout) |
//! | `ring` | `{configMap, version, phase, shards, vnodes, publishedAt, ageSeconds, timedOut}`; `phase` is `stable`, `warm` or `switch`; `timedOut` lists steps that rolled forward on their timeout. `null` when there is no valid ring |
//! | `ringProblem` | `{reason, message}` when `ring` is `null`: `reason` is `NotFound`, `MissingKey` or `Invalid` |
//! | `slots[]` | `{index, state, pod, ready, shards, sharePercent, targetShards, previousShards, gaining, losing, successor, predecessor}`: `shards` under the current table, `sharePercent` of all shards (one decimal; the slots' shares add up to exactly 100), `targetShards` in `warm`, `previousShards` in `switch`, `gaining`/`losing` the shards this step moves, `successor`/`predecessor` pod names |
//! | `pods[]` | `{name, slot, ringRole, phase, ready, terminating, restarts, node, ip, ageSeconds, progress: {observed, warmed, drained}, movedSessions, movedReport, unreadableAnnotations}`; `ringRole` is `slot`, `successor`, `predecessor` or `none`; `movedSessions` is `{version, warm: {precopied, transferred, pushed, promoted, total}, cold: {absent, rolledForward, fencedLoad, total}, served: {warm, cold}}`, the pod's counts for the last finished transition (else its newest), `null` without; `movedReport` the state of that report: `counting`, `final`, `partial`, `missing` or `unreadable` |
//! | `conditions[]` | `{type, status, reason, message, lastTransitionTime, sinceSeconds}` |
//! | `lastTransition` | `{kind, fromVersion, toVersion, shardsMoved, startedAt, finishedAt, durationSeconds, finishedSecondsAgo, inProgress, warmHitPercent, movedSessions, reports}`: `status.lastTransition`; `movedSessions` is the operator's sums over the pods expected to report (`{warm, cold, served, coldWhilePreviousAlive, coldPreviousGone, podsExpected, podsReported, pending, missing, final}`, `null` while the transition runs); `warmHitPercent` is set only once `final`; `reports` is the reason of the `MovedSessionsReported` condition (`Complete`, `Pending`, `ReportsMissing`, `TransitionInProgress`) |
//! | `placement` | `{mode, triggerPercent, targetPercent, busiestPercent, message, pods, lastRebalance, lastRebalanceSecondsAgo, hotShards, triggerHeld}`: `spec.placement` and `status.placement` (`pods[]`: `{slot, pod, requestsPerSecond, bytesPerSecond, ringVersion, seenAt, problem}`); `null` when the service balances by key count and has no placement status |
//! | `warnings[]` | `{kind, subject, message}`; kinds in [`warnings`] |
//!
//! # Text
//!
//! Sections: a header (service, ring version and phase, transition phase, replicas,
//! revision), `Slots` (with each pod's `OBS`/`WARM`/`DRAIN` reported versions while a
//! transition runs), `Pods`, `Conditions`, the last transition (warm % only once every pod's
//! report is final, else `pending (N of M pods final)` or `reports missing: pod…`, and each
//! pod's report: state, warm, cold and the cold paths) and `Warnings`. The width is
//! `$COLUMNS` when set (at least 60), else 80.

pub mod args;
pub mod error;
pub mod fetch;
pub mod render;
pub mod report;
pub mod warnings;

use k8s_openapi::jiff::Timestamp;

pub use error::{Error, Result};

use args::{OutputFormat, StatusArgs};

/// The width the text is laid out for: `$COLUMNS` if it is a number of at least 60, else
/// [`render::DEFAULT_WIDTH`].
pub fn terminal_width(columns: Option<&str>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c >= 60)
        .unwrap_or(render::DEFAULT_WIDTH)
}

/// Runs `status`: reads the service and returns what to print, in the format asked for.
pub async fn status(args: &StatusArgs, width: usize) -> Result<String> {
    let (client, default_namespace) =
        fetch::client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let namespace = args.namespace.clone().unwrap_or(default_namespace);
    let objects = fetch::objects(&client, &namespace, &args.service).await?;
    let report = report::build(&objects, Timestamp::now());
    tracing::debug!(warnings = report.warnings.len(), "report built");
    match args.output {
        OutputFormat::Text => Ok(render::text(&report, width)),
        OutputFormat::Json => Ok(render::json(&report)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_width_comes_from_columns_when_sensible() {
        assert_eq!(terminal_width(None), 80);
        assert_eq!(terminal_width(Some("120")), 120);
        assert_eq!(terminal_width(Some("20")), 80);
        assert_eq!(terminal_width(Some("wide")), 80);
    }
}
