//! The controller: a kube-runtime `Controller` over `StatefulService` that owns the service's
//! pods and ring `ConfigMap` (watched by the `locus.dev/service` label), and a reconcile that
//! observes, plans ([`crate::plan::plan`]) and executes ([`crate::executor::Executor`]).
//!
//! ## Reads come from the watch caches
//!
//! The watches of pods and `ConfigMap`s feed reflector stores ([`crate::cache::Caches`])
//! before they trigger reconciles, and the services come from the controller's own store, so
//! a reconcile triggered by an event already sees that event. Pods report progress by
//! annotating themselves, so a report is a pod event and needs no polling; the controller's
//! queue coalesces the reports that arrive while a reconcile runs into one more reconcile. A
//! store is a consistent snapshot of its resource at some `resourceVersion` (events apply in
//! order; a re-list replaces the whole store at once), so a cached view is what a fresh read
//! would have returned a little earlier. That is safe for what other writers change, and
//! for this process's own writes only under the rules below:
//!
//! - **The ring.** A plan is never made from a ring older than the one this process last
//!   wrote or saw ([`Context::remember_ring`]): when the cached ring's version is lower than
//!   the highest remembered (or the cached `ConfigMap` is missing while a ring is
//!   remembered), the ring is read fresh once ([`crate::cache::ring_is_behind`]). Whatever
//!   the view, the ring write keeps its `resourceVersion` precondition
//!   ([`crate::executor::RingWrite`]): a plan from a stale ring is refused with 409 and
//!   requeued, so no version is ever published twice; the reconcile after a refusal reads
//!   the ring fresh ([`Context::ring_refused`]) rather than wait for the watch.
//! - **Pods.** The planner's progress is monotonic: the ring version a pod reports observed,
//!   warmed or drained only grows, and each step waits until every pod it needs reports at
//!   least the version in question, so a stale pod list only delays steps. The steps that act
//!   on what the list shows or lacks are creations and deletions. A pod this process created
//!   but the cache does not show yet would be planned again: its name is a pure function of
//!   service, slot, revision and attempt (`plan::naming`), so the server-side apply
//!   would hit the same pod, but the attempt depends on the names the list shows, so instead
//!   the plan waits for the cache: every creation and deletion this process makes is recorded
//!   ([`Context::wrote_pods`]) and a cached list that does not show them all (created pods
//!   present, deleted pods gone or terminating) is replaced by one fresh list. Deletions
//!   carry the pod's UID as a precondition, so a deletion planned from a stale view never
//!   removes a newer pod of the same name.
//! - **The service.** Its status is written when the plan's status differs from the cached
//!   one; a stale cache causes at most a redundant write, and a write this process made is
//!   itself a service event that triggers another reconcile.
//!
//! ## No plan when nothing changed
//!
//! When a plan changes nothing (no pod, ring, status or event) and no deadline is pending,
//! its inputs are remembered ([`crate::cache::Inputs`]: the service's, the pods' and the
//! ring's `resourceVersion`s). A reconcile whose inputs are the same is skipped: no plan, no
//! reads, no writes, as long as the last full reconcile is more recent than [`RESYNC`] (the
//! safety net, which also re-checks the fixed objects: account, Role, Service, Secret,
//! budget).
//!
//! ## Memory between reconciles
//!
//! Kept per service: the last ring seen or published ([`Context::remember_ring`]): if the
//! ring `ConfigMap` is deleted, it is recreated from that copy rather than from a fresh table
//! (which would move shards without handoff); when this process first saw the ring's version
//! and phase and each pod's readiness ([`Sightings`](crate::sightings::Sightings)), so that no
//! step deadline runs out before its full duration has passed on this process's own clock,
//! whatever the clocks that recorded the times it counts from. A fresh process (or one that
//! takes over) restarts the deadlines of the states it had not seen from its first reconcile:
//! a step may wait up to one more timeout, never less.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use locus_contract::ring::RingDocument;
use tracing::{debug, warn};

use crate::cache::{self, Caches};
pub use crate::context::Context;
use crate::crd::StatefulService;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::metrics::{ErrorLabels, ResultLabels, ServiceLabels};
use crate::plan::{self, LABEL_SERVICE, Observed, ObservedPod, PublishedRing};

/// Reconcile again after this long even if nothing changed (a safety net; a converged service
/// costs reads only, no writes).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How long a reconcile waits for the watch caches' first list.
pub const CACHE_WAIT: Duration = Duration::from_secs(30);
/// Retry delay after a failed reconcile.
pub const ERROR_RETRY: Duration = Duration::from_secs(5);
/// Retry delay after a ring write refused because the ring changed since it was read.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(250);

/// What reconciles share: the context and the caches of this controller run.
struct Reconciler {
    ctx: Arc<Context>,
    caches: Caches,
}

/// What a reconcile reads: the service's pods and ring `ConfigMap`, with its ring.
struct Inputs {
    pods: Vec<Arc<Pod>>,
    ring_map: Option<Arc<ConfigMap>>,
    published: Option<PublishedRing>,
}

/// The ring published in `config_map`, if any.
fn parse_ring(
    config_map: Option<&ConfigMap>,
) -> std::result::Result<Option<PublishedRing>, plan::ObserveError> {
    config_map.map(plan::published_ring).transpose()
}

/// Reads the pods and the ring of service `name` (UID `uid`) in `namespace` from the caches,
/// or fresh where the caches are behind this process (see the module docs).
async fn read_inputs(
    reconciler: &Reconciler,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Inputs> {
    let read = |kind: &'static str, object: &str| {
        let (namespace, object) = (namespace.to_owned(), object.to_owned());
        move |source| Error::Read {
            kind,
            namespace,
            name: object,
            source,
        }
    };
    let (caches, ctx) = (&reconciler.caches, &*reconciler.ctx);
    // A cache that has not finished its first list would show no pods and no ring.
    for (kind, ready) in [
        ("pods", caches.pods.wait_until_ready().boxed()),
        ("ConfigMaps", caches.config_maps.wait_until_ready().boxed()),
    ] {
        if !matches!(tokio::time::timeout(CACHE_WAIT, ready).await, Ok(Ok(()))) {
            return Err(Error::CacheNotReady {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
    }
    // The pods: cached, unless the cache does not show this process's own pod writes yet.
    let mut pods = caches.pods_of(namespace, name);
    let writes = ctx.pod_writes(uid);
    if !writes.is_empty() {
        if !writes.shown_by(&pods) {
            debug!(%namespace, %name, ?writes, "the pod cache is behind this process's writes: listing fresh");
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            pods = api
                .list(&ListParams::default().labels(&plan::selector(name)))
                .await
                .map_err(read("pods", name))?
                .items
                .into_iter()
                .map(Arc::new)
                .collect();
        }
        ctx.pod_writes_seen(uid);
    }
    // The ring: cached, unless older than the one this process last wrote or saw.
    let ring_name = RingDocument::config_map_name(name);
    let invalid = |source| Error::InvalidRing {
        namespace: namespace.to_owned(),
        name: ring_name.clone(),
        source,
    };
    let mut ring_map = caches.config_map(namespace, &ring_name);
    let mut published = parse_ring(ring_map.as_deref()).map_err(invalid)?;
    let highest = ctx.remembered_ring(uid).map(|r| r.highest);
    let refused = ctx.take_ring_refused(uid);
    if refused || cache::ring_is_behind(published.as_ref().map(|r| r.ring.version()), highest) {
        debug!(%namespace, %name, ?highest, refused, "the ring cache is behind: reading it fresh");
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
        ring_map = config_maps
            .get_opt(&ring_name)
            .await
            .map_err(read("ConfigMap", &ring_name))?
            .map(Arc::new);
        published = parse_ring(ring_map.as_deref()).map_err(invalid)?;
    }
    Ok(Inputs {
        pods,
        ring_map,
        published,
    })
}

/// Observes, plans and executes one service.
async fn reconcile_service(svc: &StatefulService, reconciler: &Reconciler) -> Result<Action> {
    let (Some(namespace), Some(uid)) = (svc.namespace(), svc.uid()) else {
        return Err(Error::MissingIdentity {
            name: svc.name_any(),
        });
    };
    let name = svc.name_any();
    if svc.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        reconciler.ctx.forget_service(&uid);
        return Ok(Action::await_change());
    }
    let ctx = &*reconciler.ctx;
    let Inputs {
        pods,
        ring_map,
        published,
    } = read_inputs(reconciler, &namespace, &name, &uid).await?;

    // Nothing changed since an idle plan: nothing to do until the safety net.
    let inputs = cache::Inputs::of(svc, &pods, ring_map.as_deref());
    if let Some(settled) = ctx.settled(&uid)
        && settled.inputs == inputs
        && settled.at.elapsed() < RESYNC
    {
        debug!(%namespace, %name, "unchanged since an idle plan: skipped");
        return Ok(Action::requeue(RESYNC.saturating_sub(settled.at.elapsed())));
    }

    let observed: Vec<ObservedPod> = pods
        .iter()
        .filter_map(|p| plan::observe_pod(p, &uid, &svc.spec.port))
        .collect();
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

    let settled = actions.is_idle()
        && actions.events.is_empty()
        && actions.requeue_after.is_none()
        && svc.status.as_ref() == Some(&actions.status);
    ctx.settle(&uid, settled.then_some(inputs));

    ctx.metrics.record_steps(&actions.steps);
    ctx.metrics.record_placement(
        &ServiceLabels {
            namespace: namespace.clone(),
            service: name.clone(),
        },
        &actions.steps,
        actions.status.placement.as_ref(),
    );
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

async fn reconcile(svc: Arc<StatefulService>, reconciler: Arc<Reconciler>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_service(&svc, &reconciler).await;
    let ctx = &reconciler.ctx;
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
fn error_policy(svc: Arc<StatefulService>, error: &Error, reconciler: Arc<Reconciler>) -> Action {
    warn!(service = %svc.name_any(), %error, "reconcile failed");
    let ctx = &reconciler.ctx;
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
    // The pods and ConfigMaps are reflected into stores, then trigger reconciles: a
    // reconcile always sees the event that triggered it.
    let owned = || watcher::Config::default().labels(LABEL_SERVICE);
    let (pod_store, pod_writer) = reflector::store();
    let (map_store, map_writer) = reflector::store();
    let pod_events = watcher(pods, owned())
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects();
    let map_events = watcher(config_maps, owned())
        .default_backoff()
        .reflect(map_writer)
        .touched_objects();
    let reconciler = Arc::new(Reconciler {
        ctx,
        caches: Caches {
            pods: pod_store,
            config_maps: map_store,
        },
    });
    Controller::new(services, watcher::Config::default())
        .owns_stream(pod_events)
        .owns_stream(map_events)
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(20)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, reconciler)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(service = %object.name, "reconcile done"),
                Err(error) => debug!(%error, "controller"),
            }
        })
        .await;
}
