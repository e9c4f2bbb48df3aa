//! One pod's lifecycle, from scheduling to deletion.
//!
//! Stages: the network (namespace, veth, address), then the volumes (and service
//! account tokens), then the init containers one at a time, then every app container
//! under its own supervisor (`container.rs`). The worker collects the containers'
//! changes and applies the pod status (server-side apply on `pods/status` with the pod's
//! UID in the applied object, so a same-named newer pod is never written) whenever the
//! computed status differs from the last one written.
//!
//! Ending: when the pod gets a `deletionTimestamp` the containers get SIGTERM and, after
//! the grace period (`deletionGracePeriodSeconds`, else the pod's
//! `terminationGracePeriodSeconds`, else 30 s; at least 2 s as with a kubelet), SIGKILL;
//! then the network goes, the address is released, the final status is written and the
//! pod is deleted with grace period 0 and a UID precondition. A pod deleted outright is
//! stopped the same way without the API calls; on agent shutdown pods get a short grace.
//! Logs stay in the pod's directory after it is gone; volumes are removed.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::agent::{Agent, FIELD_MANAGER, SHUTDOWN_GRACE};
use crate::container::{Role, Supervisor, Update};
use crate::env::PodFacts;
use crate::network::{self, PodNetwork};
use crate::status::{self, ConditionClock, ContainerView, PodView, RunState, now};
use crate::volumes::{self, VolumeContext, Volumes};

/// What the dispatcher tells a pod worker.
#[derive(Clone, Debug)]
pub struct PodSignal {
    /// The latest version of the pod.
    pub pod: Pod,
    /// The pod disappeared from the API.
    pub gone: bool,
    /// The agent is shutting down.
    pub agent_stopping: bool,
}

/// The directory of one pod: `<run-dir>/pods/<namespace>_<name>_<uid>`.
pub fn pod_dir(run_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    run_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"))
}

/// Why a pod is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Deleted,
    Gone,
    AgentStopping,
}

/// How long a pod's containers get to stop, and why.
fn ending(signal: &PodSignal) -> Option<(Why, Duration)> {
    let pod = &signal.pod;
    let spec_grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(spec_grace)
        .max(2);
    let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(30));
    if signal.agent_stopping {
        Some((Why::AgentStopping, grace.min(SHUTDOWN_GRACE)))
    } else if signal.gone {
        Some((Why::Gone, grace))
    } else if pod.metadata.deletion_timestamp.is_some() {
        Some((Why::Deleted, grace))
    } else {
        None
    }
}

/// Readiness gates of `pod` whose condition is not `True`.
fn unready_gates(pod: &Pod) -> Vec<String> {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    pod.spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten())
        .filter(|g| {
            !conditions.is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == g.condition_type && c.status == "True")
            })
        })
        .map(|g| g.condition_type.clone())
        .collect()
}

/// Applies the pod status when it changed.
struct StatusWriter {
    api: Api<Pod>,
    name: String,
    namespace: String,
    uid: String,
    clock: ConditionClock,
    last: Option<Value>,
}

impl StatusWriter {
    async fn sync(&mut self, view: &PodView) -> Result<(), kube::Error> {
        let status = status::compute(view, &mut self.clock, now());
        let body = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": self.name, "namespace": self.namespace, "uid": self.uid },
            "status": status,
        });
        if self.last.as_ref() == Some(&body) {
            return Ok(());
        }
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        self.last = Some(body);
        Ok(())
    }
}

enum Stage {
    Sandbox,
    Volumes,
    StartInit(usize),
    InitRunning(usize),
    StartApps,
    Running,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Marks every not-yet-started container as `ContainerCreating` with `message`.
fn creating_message(view: &mut PodView, message: &str) {
    for c in view.init.iter_mut().chain(view.containers.iter_mut()) {
        if let RunState::Waiting { reason, message: m } = &mut c.state
            && reason == "ContainerCreating"
        {
            *m = Some(message.to_string());
        }
    }
}

struct Worker {
    agent: Arc<Agent>,
    pod: Pod,
    uid: String,
    name: String,
    namespace: String,
    dir: PathBuf,
    view: PodView,
    net: Option<PodNetwork>,
    ip: Option<Ipv4Addr>,
    volumes: Option<Volumes>,
    updates: mpsc::UnboundedSender<Update>,
    stop: watch::Sender<Option<Instant>>,
    /// The latest spec of each started app container, by index.
    specs: Vec<Option<watch::Sender<k8s_openapi::api::core::v1::Container>>>,
    tasks: JoinSet<()>,
    ending: Option<(Why, Instant)>,
}

impl Worker {
    fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn on_signal(&mut self, signal: &PodSignal) {
        self.pod = signal.pod.clone();
        self.view.generation = self.pod.metadata.generation;
        self.view.unready_gates = unready_gates(&self.pod);
        let containers = self.pod.spec.iter().flat_map(|s| s.containers.iter());
        for (sender, container) in self.specs.iter().zip(containers) {
            if let Some(sender) = sender {
                sender.send_if_modified(|current| {
                    let changed = current.image != container.image;
                    if changed {
                        *current = container.clone();
                    }
                    changed
                });
            }
        }
        if let Some((why, grace)) = ending(signal) {
            let deadline = Instant::now() + grace;
            let (why, deadline) = match self.ending {
                Some((old_why, old)) if old <= deadline => (old_why, old),
                Some(_) | None => (why, deadline),
            };
            if self.ending.is_none() {
                tracing::info!(pod = %self.label(), ?why, ?grace, "stopping pod");
            }
            self.ending = Some((why, deadline));
            self.stop.send_replace(Some(deadline));
        }
    }

    fn spawn(&mut self, role: Role, index: usize) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let container = match role {
            Role::Init => spec.init_containers.unwrap_or_default().get(index).cloned(),
            Role::App => spec.containers.get(index).cloned(),
        };
        let (Some(container), Some(net), Some(volumes)) = (container, &self.net, &self.volumes)
        else {
            return;
        };
        let views = match role {
            Role::Init => &mut self.view.init,
            Role::App => &mut self.view.containers,
        };
        let mounts = match volumes::container_mounts(&container, volumes) {
            Ok(m) => m,
            Err(e) => {
                if let Some(v) = views.get_mut(index) {
                    v.state = RunState::Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: Some(e.to_string()),
                    };
                }
                return;
            }
        };
        let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(2);
        let (spec_tx, spec_rx) = watch::channel(container.clone());
        if role == Role::App {
            if self.specs.len() <= index {
                self.specs.resize_with(index + 1, || None);
            }
            self.specs[index] = Some(spec_tx);
        }
        let supervisor = Supervisor {
            agent: self.agent.clone(),
            pod: Arc::new(self.pod.clone()),
            role,
            index,
            log: self.dir.join(format!("{}.log", container.name)),
            container,
            netns: net.netns.clone(),
            facts: PodFacts {
                pod_ip: net.ip.to_string(),
                host_ip: self.agent.flags.gateway.to_string(),
            },
            mounts,
            restart_policy: self.view.restart_policy.clone(),
            grace: Duration::from_secs(u64::try_from(grace).unwrap_or(30)),
            updates: self.updates.clone(),
            stop: self.stop.subscribe(),
            spec: spec_rx,
        };
        self.tasks.spawn(async move {
            supervisor.run().await;
        });
    }

    /// Advances set-up by one stage; returns when to try again (`None`: wait for events).
    async fn advance(&mut self, stage: &mut Stage) -> Option<Instant> {
        let retry = Some(Instant::now() + Duration::from_secs(3));
        match stage {
            Stage::Sandbox => {
                let Some(ip) = self.ip.or_else(|| self.agent.allocate_ip()) else {
                    creating_message(
                        &mut self.view,
                        &format!("no free address left in {}", self.agent.flags.pod_cidr),
                    );
                    return retry;
                };
                self.ip = Some(ip);
                let f = &self.agent.flags;
                match network::set_up(
                    &self.agent.ip,
                    &f.bridge,
                    &f.extra_bridges,
                    f.pod_cidr,
                    f.service_cidr,
                    &self.uid,
                    ip,
                )
                .await
                {
                    Ok(net) => {
                        tracing::info!(pod = %self.label(), %ip, netns = %net.netns, "pod network ready");
                        self.net = Some(net);
                        self.view.pod_ip = Some(ip.to_string());
                        self.view.sandbox_ready = true;
                        *stage = Stage::Volumes;
                        Some(Instant::now())
                    }
                    Err(e) => {
                        tracing::warn!(pod = %self.label(), "setting up the pod network: {e}");
                        creating_message(&mut self.view, &format!("pod network: {e}"));
                        retry
                    }
                }
            }
            Stage::Volumes => {
                let facts = PodFacts {
                    pod_ip: self.view.pod_ip.clone().unwrap_or_default(),
                    host_ip: self.agent.flags.gateway.to_string(),
                };
                let vc = VolumeContext {
                    client: &self.agent.client,
                    ca_pem: &self.agent.ca_pem,
                    facts: &facts,
                };
                match volumes::prepare(&vc, &self.pod, &self.dir).await {
                    Ok(v) => {
                        self.volumes = Some(v);
                        *stage = Stage::StartInit(0);
                        Some(Instant::now())
                    }
                    Err(e) => {
                        tracing::warn!(pod = %self.label(), "preparing volumes: {e}");
                        creating_message(&mut self.view, &format!("MountVolume failed: {e}"));
                        retry
                    }
                }
            }
            Stage::StartInit(i) => {
                let i = *i;
                if i < self.view.init.len() {
                    self.spawn(Role::Init, i);
                    *stage = Stage::InitRunning(i);
                    None
                } else {
                    *stage = Stage::StartApps;
                    Some(Instant::now())
                }
            }
            Stage::StartApps => {
                for i in 0..self.view.containers.len() {
                    self.spawn(Role::App, i);
                }
                *stage = Stage::Running;
                None
            }
            Stage::InitRunning(_) | Stage::Running => None,
        }
    }

    fn apply(&mut self, (role, index, view): Update, stage: &mut Stage) -> Option<Instant> {
        let slot = match role {
            Role::Init => self.view.init.get_mut(index),
            Role::App => self.view.containers.get_mut(index),
        };
        let done_ok = matches!(&view.state, RunState::Terminated(t) if t.exit_code == 0);
        if let Some(slot) = slot {
            *slot = view;
        }
        if role == Role::Init && done_ok && matches!(stage, Stage::InitRunning(i) if *i == index) {
            *stage = Stage::StartInit(index + 1);
            return Some(Instant::now());
        }
        None
    }

    async fn refresh_tokens(&mut self) {
        let Some(volumes) = &mut self.volumes else {
            return;
        };
        let now = Instant::now();
        let label = format!("{}/{}", self.namespace, self.name);
        for token in volumes.tokens.iter_mut().filter(|t| t.refresh_at <= now) {
            if let Err(e) = volumes::refresh_token(&self.agent.client, &self.pod, token).await {
                tracing::warn!(pod = %label, "refreshing token: {e}");
                token.refresh_at = now + Duration::from_secs(10);
            }
        }
    }
}

/// The worker, its status writer and the receiving end of its containers' updates.
fn new_worker(
    agent: Arc<Agent>,
    pod: Pod,
) -> (Worker, StatusWriter, mpsc::UnboundedReceiver<Update>) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let creating = |c: &k8s_openapi::api::core::v1::Container| {
        ContainerView::creating(&c.name, c.image.as_deref().unwrap_or(""))
    };
    let view = PodView {
        generation: pod.metadata.generation,
        pod_ip: None,
        host_ip: agent.flags.gateway.to_string(),
        start_time: Some(now()),
        sandbox_ready: false,
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(creating)
            .collect(),
        containers: spec.containers.iter().map(creating).collect(),
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        unready_gates: unready_gates(&pod),
        terminal: None,
    };
    let (updates, update_rx) = mpsc::unbounded_channel();
    let writer = StatusWriter {
        api: Api::namespaced(agent.client.clone(), &namespace),
        name: name.clone(),
        namespace: namespace.clone(),
        uid: uid.clone(),
        clock: ConditionClock::default(),
        last: None,
    };
    let worker = Worker {
        dir: pod_dir(&agent.flags.run_dir, &namespace, &name, &uid),
        agent,
        pod,
        uid,
        name,
        namespace,
        view,
        net: None,
        ip: None,
        volumes: None,
        updates,
        stop: watch::Sender::new(None),
        specs: Vec::new(),
        tasks: JoinSet::new(),
        ending: None,
    };
    (worker, writer, update_rx)
}

/// Runs one pod until it is deleted (or the agent stops).
pub async fn run(agent: Arc<Agent>, mut signals: watch::Receiver<PodSignal>) {
    let first = signals.borrow_and_update().clone();
    let (mut w, mut writer, mut update_rx) = new_worker(agent, first.pod.clone());
    tracing::info!(pod = %w.label(), uid = %w.uid, "pod accepted");
    w.on_signal(&first);
    let mut stage = Stage::Sandbox;
    let mut retry_at = Some(Instant::now());
    let mut status_retry: Option<Instant> = None;
    loop {
        if w.ending.is_none() && retry_at.is_some_and(|t| t <= Instant::now()) {
            retry_at = w.advance(&mut stage).await;
        }
        if w.ending.is_some() && w.tasks.is_empty() {
            while let Ok(update) = update_rx.try_recv() {
                w.apply(update, &mut stage);
            }
            break;
        }
        let phase = status::phase(&w.view);
        if phase == "Succeeded" || phase == "Failed" {
            w.view.terminal = Some(phase);
        }
        if w.ending.is_none_or(|(why, _)| why == Why::Deleted) {
            match writer.sync(&w.view).await {
                Ok(()) => status_retry = None,
                Err(e) => {
                    tracing::warn!(pod = %w.label(), "writing pod status: {e}");
                    status_retry = Some(Instant::now() + Duration::from_secs(2));
                }
            }
        }
        let token_at = w.volumes.as_ref().and_then(Volumes::next_refresh);
        let setup_at = if w.ending.is_none() { retry_at } else { None };
        tokio::select! {
            changed = signals.changed() => {
                let signal = match changed {
                    Ok(()) => signals.borrow_and_update().clone(),
                    Err(_) => PodSignal { pod: w.pod.clone(), gone: true, agent_stopping: false },
                };
                w.on_signal(&signal);
            }
            Some(update) = update_rx.recv() => {
                if let Some(at) = w.apply(update, &mut stage) {
                    retry_at = Some(at);
                }
                // Take every change already queued before writing once.
                while let Ok(update) = update_rx.try_recv() {
                    if let Some(at) = w.apply(update, &mut stage) {
                        retry_at = Some(at);
                    }
                }
            }
            Some(_) = w.tasks.join_next(), if !w.tasks.is_empty() => {}
            () = sleep_until(setup_at) => {}
            () = sleep_until(token_at) => w.refresh_tokens().await,
            () = sleep_until(status_retry) => {}
        }
    }
    finish(w, writer).await;
}

async fn finish(mut w: Worker, mut writer: StatusWriter) {
    if let Some(net) = &w.net {
        network::tear_down(&w.agent.ip, net).await;
    }
    if let Some(ip) = w.ip.take() {
        w.agent.release_ip(ip);
    }
    for sub in ["volumes", "serviceaccount"] {
        let dir = w.dir.join(sub);
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(pod = %w.label(), "removing {}: {e}", dir.display());
        }
    }
    let why = w.ending.map(|(why, _)| why);
    tracing::info!(pod = %w.label(), ?why, "pod stopped");
    if why != Some(Why::Deleted) {
        return;
    }
    w.view.sandbox_ready = false;
    if let Err(e) = writer.sync(&w.view).await {
        tracing::debug!(pod = %w.label(), "final status: {e}");
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(w.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match writer.api.delete(&w.name, &params).await {
        Ok(_) => tracing::info!(pod = %w.label(), "pod deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(pod = %w.label(), "deleting pod: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodReadinessGate, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn signal(pod: Pod) -> PodSignal {
        PodSignal {
            pod,
            gone: false,
            agent_stopping: false,
        }
    }

    #[test]
    fn grace_comes_from_deletion_then_spec_then_default() {
        let mut pod = Pod::default();
        assert_eq!(ending(&signal(pod.clone())), None);
        pod.metadata.deletion_timestamp = Some(Time(now()));
        assert_eq!(
            ending(&signal(pod.clone())),
            Some((Why::Deleted, Duration::from_secs(30)))
        );
        pod.spec = Some(PodSpec {
            termination_grace_period_seconds: Some(5),
            ..PodSpec::default()
        });
        assert_eq!(
            ending(&signal(pod.clone())).unwrap().1,
            Duration::from_secs(5)
        );
        pod.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(
            ending(&signal(pod.clone())).unwrap().1,
            Duration::from_secs(2),
            "at least 2 s, as a kubelet"
        );
        let stopping = PodSignal {
            agent_stopping: true,
            ..signal(Pod::default())
        };
        assert_eq!(
            ending(&stopping),
            Some((Why::AgentStopping, SHUTDOWN_GRACE))
        );
    }

    #[test]
    fn readiness_gates_need_true_conditions() {
        let pod = Pod {
            metadata: ObjectMeta::default(),
            spec: Some(PodSpec {
                readiness_gates: Some(vec![
                    PodReadinessGate {
                        condition_type: "a".into(),
                    },
                    PodReadinessGate {
                        condition_type: "b".into(),
                    },
                ]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "a".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        };
        assert_eq!(unready_gates(&pod), vec!["b".to_string()]);
    }

    #[test]
    fn pod_dirs_follow_the_documented_layout() {
        assert_eq!(
            pod_dir(Path::new("/run/n"), "ns", "web-1", "u-1"),
            PathBuf::from("/run/n/pods/ns_web-1_u-1")
        );
    }
}
