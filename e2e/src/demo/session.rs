//! The demo's handle on the service: applying its spec, evicting a pod, waiting for
//! convergence, and one phase of load around a change.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{DynamicObject, EvictParams, Patch, PatchParams};
use locus::ring::Ring;
use locus_examples::loadgen::{LoadGenerator, Stop, Summary};
use serde_json::{Value, json};

use crate::accounting::{self, HandoffCheck};
use crate::support::service::{is_settled, live_pods, read_ring, serves, shards_moved};
use crate::support::wait;

use super::{
    Change, DemoError, DemoOptions, MANAGER, Phase, PhaseReport, RingChange, api, manifest,
};

/// The demo's handle on the cluster and the service.
pub(crate) struct Session {
    pub(crate) options: DemoOptions,
    pub(crate) services: Api<DynamicObject>,
    pub(crate) maps: Api<ConfigMap>,
    pub(crate) pods: Api<Pod>,
}

impl Session {
    pub(crate) async fn apply(&self, replicas: u16, revision: u32) -> Result<i64, DemoError> {
        let applied = self
            .services
            .patch(
                &self.options.service,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(manifest(&self.options, replicas, revision)),
            )
            .await
            .map_err(api(format!(
                "apply StatefulService {}",
                self.options.service
            )))?;
        Ok(applied.metadata.generation.unwrap_or_default())
    }

    /// Evicts the pod serving `slot`; returns its name.
    pub(crate) async fn evict(&self, slot: u16) -> Result<String, DemoError> {
        let ring = self
            .ring()
            .await
            .map_err(api("read the ring ConfigMap"))?
            .ok_or_else(|| DemoError::NoRing(self.options.service.clone()))?;
        let pod =
            ring.slot(slot)
                .map(|s| s.pod.name.clone())
                .ok_or_else(|| DemoError::Command {
                    command: format!("evict slot {slot}"),
                    output: format!("the ring has {} slots", ring.slots().len()),
                })?;
        self.disruption_allowed().await?;
        self.pods
            .evict(&pod, &EvictParams::default())
            .await
            .map_err(api(format!("evict pod {pod}")))?;
        Ok(pod)
    }

    /// Waits until the service's PodDisruptionBudget allows an eviction. The disruption
    /// controller resolves the pods' controller (the `StatefulService`) through a REST
    /// mapping it refreshes every 30 s; a budget it failed to sync before the CRD was in its
    /// mapping is retried with a growing backoff, so the wait nudges it (an annotation
    /// change is an update event that requeues it).
    pub(crate) async fn disruption_allowed(&self) -> Result<(), DemoError> {
        let budgets: Api<PodDisruptionBudget> =
            Api::namespaced(self.pods.clone().into_client(), &self.options.namespace);
        let name = &self.options.service;
        let nudges = std::sync::atomic::AtomicU32::new(0);
        let last_nudge = Mutex::new(Instant::now());
        wait::until(
            Duration::from_secs(120),
            &format!("the PodDisruptionBudget {name} to allow a disruption"),
            || async {
                let budget = budgets.get(name).await?;
                let status = budget.status.unwrap_or_default();
                if status.disruptions_allowed.unwrap_or_default() >= 1
                    && status.observed_generation == budget.metadata.generation
                {
                    return Ok(Some(()));
                }
                let due = last_nudge.lock().is_ok_and(|mut at| {
                    let due = at.elapsed() >= Duration::from_secs(10);
                    if due {
                        *at = Instant::now();
                    }
                    due
                });
                if due {
                    let n = nudges.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    let patch = json!({"metadata": {"annotations": {"locus.dev/demo-resync": n.to_string()}}});
                    budgets
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                Ok::<_, kube::Error>(None)
            },
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn ring(&self) -> Result<Option<Ring>, kube::Error> {
        read_ring(&self.maps, &self.options.service).await
    }

    /// `Some(status)` once the service is converged on `replicas` slots for `generation`.
    pub(crate) async fn converged_now(
        &self,
        replicas: u16,
        generation: i64,
    ) -> Result<Option<Value>, kube::Error> {
        let service = self.services.get(&self.options.service).await?;
        let status = service.data.get("status").cloned().unwrap_or(Value::Null);
        if !is_settled(&status, Some(generation)) {
            return Ok(None);
        }
        let Some(ring) = self.ring().await? else {
            return Ok(None);
        };
        let pods = live_pods(&self.pods, &self.options.service).await?;
        let wanted = usize::from(replicas);
        if ring.slots().len() != wanted || pods.len() != wanted {
            return Ok(None);
        }
        Ok(serves(&ring, &pods).then_some(status))
    }

    pub(crate) async fn converged(
        &self,
        replicas: u16,
        generation: i64,
    ) -> Result<Value, DemoError> {
        let what = format!(
            "{}/{} converged on {replicas} slots (generation {generation})",
            self.options.namespace, self.options.service
        );
        Ok(wait::until(self.options.converge_timeout, &what, || {
            self.converged_now(replicas, generation)
        })
        .await?)
    }
}

/// The spec the demo applied last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceState {
    pub(crate) replicas: u16,
    pub(crate) revision: u32,
    /// `metadata.generation` of the last apply.
    pub(crate) generation: i64,
}

impl Session {
    /// Runs one phase: the change, load until converged plus the tail, the read-back.
    pub(crate) async fn phase(
        &self,
        load: &mut LoadGenerator,
        phase: &Phase,
        state: &mut ServiceState,
        lost_before: u64,
        log: &dyn Fn(&str),
    ) -> Result<PhaseReport, DemoError> {
        let before = self.ring().await.ok().flatten();
        let change_started = Instant::now();
        let (summary, converge) = match &phase.change {
            Change::Steady(duration) => {
                log(&format!(
                    "phase {}: {} replicas, load for {duration:?}",
                    phase.name, state.replicas
                ));
                let summary = load.phase(&phase.name, Stop::Duration(*duration)).await;
                (summary, Some(Duration::ZERO))
            }
            Change::Scale(to) => {
                log(&format!(
                    "phase {}: scaling {} → {to} under load",
                    phase.name, state.replicas
                ));
                state.replicas = *to;
                state.generation = self.apply(state.replicas, state.revision).await?;
                self.load_until_converged(load, &phase.name, state.replicas, state.generation)
                    .await
            }
            Change::Rollout => {
                state.revision += 1;
                log(&format!(
                    "phase {}: template change (DEMO_REVISION={}) → surge rollout of {} pods under load",
                    phase.name, state.revision, state.replicas
                ));
                state.generation = self.apply(state.replicas, state.revision).await?;
                self.load_until_converged(load, &phase.name, state.replicas, state.generation)
                    .await
            }
            Change::Evict(slot) => {
                let pod = self.evict(*slot).await?;
                log(&format!(
                    "phase {}: evicted pod {pod} (slot {slot}) through the Eviction API under load",
                    phase.name
                ));
                self.load_until_converged(load, &phase.name, state.replicas, state.generation)
                    .await
            }
        };
        let converge_s = converge.map_or_else(
            || change_started.elapsed().as_secs_f64(),
            |c| c.as_secs_f64(),
        );
        let after = self.ring().await.ok().flatten();
        let verification = load.verify().await;
        let from_version = before.as_ref().map_or(0, Ring::version);
        let to_version = after.as_ref().map_or(0, Ring::version);
        // The pods' reports of the phase's last transition are final once their handoff
        // deadline has passed; the operator sums them then.
        let handoff = if to_version > from_version {
            log(&format!(
                "phase {}: waiting for the pods' handoff reports",
                phase.name
            ));
            accounting::wait_reported(
                &self.services,
                &self.options.service,
                from_version,
                accounting::REPORTS_WITHIN,
            )
            .await
            .and_then(|status| {
                let record = status.last_transition.as_ref()?;
                (record.to_version > from_version).then(|| {
                    HandoffCheck::of(
                        &status,
                        record,
                        [&summary.takeovers, &verification.takeovers],
                    )
                })
            })
        } else {
            None
        };
        let status = self
            .services
            .get(&self.options.service)
            .await
            .ok()
            .and_then(|s| s.data.get("status").cloned());
        Ok(PhaseReport {
            name: phase.name.clone(),
            summary,
            lost_writes: verification.lost_writes.saturating_sub(lost_before),
            verification,
            handoff,
            ring: RingChange {
                from_version,
                to_version,
                shards_moved: match (&before, &after) {
                    (Some(b), Some(a)) => shards_moved(b, a),
                    _ => 0,
                },
                converge_s: (converge_s * 10.0).round() / 10.0,
                last_transition: status.and_then(|s| s.get("lastTransition").cloned()),
            },
            timed_out: converge.is_none(),
        })
    }

    /// Runs load until the service converges on `replicas` slots for `generation`, then for
    /// the options' tail (so that most moved sessions get touched on their new pod). Returns
    /// the summary and the time to converge (`None`: not within the converge timeout).
    pub(crate) async fn load_until_converged(
        &self,
        load: &mut LoadGenerator,
        name: &str,
        replicas: u16,
        generation: i64,
    ) -> (Summary, Option<Duration>) {
        let started = Instant::now();
        let converged: Mutex<Option<Duration>> = Mutex::new(None);
        let interrupt = async {
            // A wait that fails (timeout) leaves the phase to its own duration bound.
            if self.converged(replicas, generation).await.is_ok() {
                if let Ok(mut at) = converged.lock() {
                    *at = Some(started.elapsed());
                }
                tokio::time::sleep(self.options.tail).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let summary = load
            .phase_until(
                name,
                Stop::Duration(self.options.converge_timeout + self.options.tail),
                interrupt,
            )
            .await;
        let at = converged.lock().ok().and_then(|at| *at);
        (summary, at)
    }
}
