//! The controller: a kube-runtime `Controller` over `StatefulService` that owns the service's
//! pods and ring `ConfigMap` (watched by the `locus.dev/service` label), and a reconcile that
//! observes (fresh reads: the pods, the ring), plans ([`crate::plan::plan`]) and executes
//! ([`crate::executor::Executor`]).
//!
//! Reconcile reads the pods and the ring from the API server rather than from a cache: the
//! next step must be planned from the ring just published, never from a stale copy. The
//! watches only trigger reconciles; pods report progress by annotating themselves, so a
//! report is a pod event and needs no polling.
//!
//! Two things are kept in memory between reconciles, per service: the last ring seen or
//! published ([`Context::remember_ring`]): if the ring `ConfigMap` is deleted, it is recreated
//! from that copy rather than from a fresh table (which would move shards without handoff);
//! and when this process first saw the ring's version and phase and each pod's readiness
//! ([`Sightings`](crate::sightings::Sightings)), so that no step deadline runs out before its full duration has passed on
//! this process's own clock, whatever the clocks that recorded the times it counts from. A
//! fresh process (or one that takes over) restarts the deadlines of the states it had not
//! seen from its first reconcile: a step may wait up to one more timeout, never less.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use locus_contract::ring::RingDocument;
use tracing::{debug, warn};

pub use crate::context::Context;
use crate::crd::StatefulService;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::metrics::{ErrorLabels, ResultLabels, ServiceLabels};
use crate::plan::{self, LABEL_SERVICE, Observed, ObservedPod};

/// Reconcile again after this long even if nothing changed (a safety net; a converged service
/// costs reads only, no writes).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry delay after a failed reconcile.
pub const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Retry delay after a ring write refused because the ring changed since it was read.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(250);

/// Observes, plans and executes one service.
async fn reconcile_service(svc: &StatefulService, ctx: &Context) -> Result<Action> {
    let (Some(namespace), Some(uid)) = (svc.namespace(), svc.uid()) else {
        return Err(Error::MissingIdentity {
            name: svc.name_any(),
        });
    };
    let name = svc.name_any();
    if svc.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        ctx.forget_service(&uid);
        return Ok(Action::await_change());
    }
    let read = |kind: &'static str, object: String| {
        let namespace = namespace.clone();
        move |source| Error::Read {
            kind,
            namespace,
            name: object,
            source,
        }
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&plan::selector(&name)))
        .await
        .map_err(read("pods", name.clone()))?;
    let observed: Vec<ObservedPod> = listed
        .items
        .iter()
        .filter_map(|p| plan::observe_pod(p, &uid, &svc.spec.port))
        .collect();
    let ring_name = RingDocument::config_map_name(&name);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let ring_map = config_maps
        .get_opt(&ring_name)
        .await
        .map_err(read("ConfigMap", ring_name.clone()))?;
    let published = ring_map
        .as_ref()
        .map(plan::published_ring)
        .transpose()
        .map_err(|source| Error::InvalidRing {
            namespace: namespace.clone(),
            name: ring_name.clone(),
            source,
        })?;
    let ring_resource_version = ring_map
        .as_ref()
        .and_then(|m| m.metadata.resource_version.clone());
    let remembered = match &published {
        Some(ring) => {
            ctx.remember_ring(&uid, ring);
            None
        }
        None => ctx.remembered_ring(&uid),
    };
    // The states just read were seen no earlier than now, on both clocks.
    let (now, at) = (Timestamp::now(), Instant::now());
    let first_seen = ctx.observe_states(&uid, published.as_ref(), &observed, now, at);
    let actions = plan::plan(&Observed {
        namespace: &namespace,
        name: &name,
        uid: &uid,
        generation: svc.metadata.generation,
        spec: &svc.spec,
        status: svc.status.as_ref(),
        pods: &observed,
        ring: published.as_ref(),
        remembered: remembered.as_ref(),
        first_seen: &first_seen,
        now,
    })
    .map_err(|source| Error::Plan {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;

    let executor = Executor::new(ctx, svc);
    let mut pod_names: Vec<String> = observed.iter().map(|p| p.name.clone()).collect();
    pod_names.extend(actions.create.iter().map(|c| c.name.clone()));
    executor.ensure_owned(&pod_names).await?;
    executor
        .execute(
            &actions,
            svc.status.as_ref(),
            ring_resource_version.as_deref(),
        )
        .await?;

    ctx.metrics.record_steps(&actions.steps);
    if let Some(version) = actions.status.ring_version {
        ctx.metrics
            .ring_version
            .get_or_create(&ServiceLabels {
                namespace: namespace.clone(),
                service: name.clone(),
            })
            .set(version);
    }
    debug!(%namespace, %name, idle = actions.is_idle(), requeue = ?actions.requeue_after, "reconciled");
    Ok(Action::requeue(actions.requeue_after.unwrap_or(RESYNC)))
}

async fn reconcile(svc: Arc<StatefulService>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_service(&svc, &ctx).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconcile_duration
        .get_or_create(&ResultLabels { result: label })
        .observe(started.elapsed().as_secs_f64());
    result
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime's Controller::run expects"
)]
fn error_policy(svc: Arc<StatefulService>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(service = %svc.name_any(), %error, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    match error {
        Error::RingConflict { .. } => Action::requeue(CONFLICT_RETRY),
        _ => Action::requeue(ERROR_RETRY),
    }
}

/// Runs the controller until `shutdown` resolves (then finishes the reconciles in flight).
/// `namespace` limits it to one namespace; `None` watches all.
pub async fn run_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (services, pods, config_maps) = match namespace {
        Some(ns) => (
            Api::<StatefulService>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let owned = || watcher::Config::default().labels(LABEL_SERVICE);
    Controller::new(services, watcher::Config::default())
        .owns(pods, owned())
        .owns(config_maps, owned())
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(20)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(service = %object.name, "reconcile done"),
                Err(error) => debug!(%error, "controller"),
            }
        })
        .await;
}
