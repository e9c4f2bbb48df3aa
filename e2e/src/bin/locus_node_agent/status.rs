//! Pod status, computed purely from what the agent knows about a pod's containers.
//!
//! The phase follows the kubelet's rules (`Pending` while a container waits for its first
//! start or init containers run, `Running` once all started, `Succeeded`/`Failed` when
//! all terminated for good). Conditions are `PodReadyToStartContainers`, `Initialized`,
//! `ContainersReady` and `Ready` (which also needs every readiness gate); a condition's
//! `lastTransitionTime` changes only when its status does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The present time, to the second (as the API stores it).
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// How one run of a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    /// Exit code (128 + signal number when killed by a signal).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed` or `Error`.
    pub reason: String,
    /// Why it was stopped, when the agent stopped it.
    pub message: Option<String>,
    /// When that run started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// `locus://<pid>`.
    pub container_id: String,
}

/// Where a container is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Not running: being created, pulling (mapping) its image, or backing off.
    Waiting {
        /// Kubernetes reason: `ContainerCreating`, `ErrImagePull`, `CrashLoopBackOff`…
        reason: String,
        /// Detail for humans.
        message: Option<String>,
    },
    /// Its process runs.
    Running {
        /// Since when.
        started_at: Timestamp,
        /// `locus://<pid>`.
        container_id: String,
    },
    /// It ended and will not be restarted (or not yet).
    Terminated(Termination),
}

/// The agent's view of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image as in the spec.
    pub image: String,
    /// `locus-image://<local executable>` once resolved.
    pub image_id: String,
    /// Current state.
    pub state: RunState,
    /// How the previous run ended.
    pub last: Option<Termination>,
    /// How often it was restarted.
    pub restart_count: i32,
    /// Readiness (probe or started).
    pub ready: bool,
    /// Startup probe passed (or none).
    pub started: bool,
}

impl ContainerView {
    /// A container not started yet.
    pub fn creating(name: &str, image: &str) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            state: RunState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, RunState::Terminated(t) if t.exit_code == 0)
    }
}

/// Everything the status is computed from.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The pod's address once its network exists.
    pub pod_ip: Option<String>,
    /// The node's address.
    pub host_ip: String,
    /// When the agent accepted the pod.
    pub start_time: Option<Timestamp>,
    /// The network namespace is ready.
    pub sandbox_ready: bool,
    /// Init containers, in spec order.
    pub init: Vec<ContainerView>,
    /// App containers, in spec order.
    pub containers: Vec<ContainerView>,
    /// `spec.restartPolicy` (`Always` when unset).
    pub restart_policy: String,
    /// Readiness gates that are not `True` in the pod's conditions.
    pub unready_gates: Vec<String>,
    /// A terminal phase reached earlier: phases never leave `Succeeded`/`Failed`.
    pub terminal: Option<String>,
}

/// Remembers when each condition last changed status.
#[derive(Clone, Debug, Default)]
pub struct ConditionClock {
    seen: BTreeMap<String, (String, Timestamp)>,
}

impl ConditionClock {
    fn stamp(&mut self, kind: &str, status: &str, now: Timestamp) -> Timestamp {
        match self.seen.get(kind) {
            Some((old, at)) if old == status => *at,
            _ => {
                self.seen
                    .insert(kind.to_string(), (status.to_string(), now));
                now
            }
        }
    }
}

/// The pod phase for `view`.
pub fn phase(view: &PodView) -> String {
    if let Some(t) = &view.terminal {
        return t.clone();
    }
    let never = view.restart_policy == "Never";
    let init_failed = view
        .init
        .iter()
        .any(|c| matches!(&c.state, RunState::Terminated(t) if t.exit_code != 0));
    if init_failed && never {
        return "Failed".into();
    }
    if !view.init.iter().all(ContainerView::succeeded) {
        return "Pending".into();
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.state {
            RunState::Waiting { .. } if c.last.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
        }
    }
    let phase = if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if view.restart_policy == "Always" || view.restart_policy.is_empty() {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if never {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    };
    phase.to_string()
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn termination(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(t.container_id.clone()),
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: Some(time(t.started_at)),
        finished_at: Some(time(t.finished_at)),
    }
}

/// The API form of one container's status.
pub fn container_status(c: &ContainerView) -> ContainerStatus {
    let (state, container_id) = match &c.state {
        RunState::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            None,
        ),
        RunState::Running {
            started_at,
            container_id,
        } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(*started_at)),
                }),
                ..ContainerState::default()
            },
            Some(container_id.clone()),
        ),
        RunState::Terminated(t) => (
            ContainerState {
                terminated: Some(termination(t)),
                ..ContainerState::default()
            },
            Some(t.container_id.clone()),
        ),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id,
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: Some(c.last.as_ref().map_or_else(ContainerState::default, |t| {
            ContainerState {
                terminated: Some(termination(t)),
                ..ContainerState::default()
            }
        })),
        ..ContainerStatus::default()
    }
}

fn condition(
    clock: &mut ConditionClock,
    now: Timestamp,
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    PodCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        last_transition_time: Some(time(clock.stamp(kind, status, now))),
        reason: if ok { None } else { reason.map(String::from) },
        message: if ok { None } else { message },
        ..PodCondition::default()
    }
}

/// The pod status the agent owns, computed from `view`.
pub fn compute(view: &PodView, clock: &mut ConditionClock, now: Timestamp) -> PodStatus {
    let phase = phase(view);
    let completed = phase == "Succeeded" || phase == "Failed";
    let names = |cs: &[&ContainerView]| {
        format!(
            "[{}]",
            cs.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let uninitialized: Vec<&ContainerView> = view.init.iter().filter(|c| !c.succeeded()).collect();
    let unready: Vec<&ContainerView> = view.containers.iter().filter(|c| !c.ready).collect();
    let initialized = uninitialized.is_empty();
    let containers_ready = !completed && unready.is_empty();
    let (not_ready_reason, not_ready_message) = if completed {
        ("PodCompleted", None)
    } else if !unready.is_empty() {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: {}",
                names(&unready)
            )),
        )
    } else {
        (
            "ReadinessGatesNotReady",
            Some(format!(
                "the status of pod readiness gate {} is not \"True\", but False",
                view.unready_gates.join(", ")
            )),
        )
    };
    let ready = containers_ready && view.unready_gates.is_empty();
    let conditions = vec![
        condition(
            clock,
            now,
            "PodReadyToStartContainers",
            view.sandbox_ready,
            None,
            None,
        ),
        condition(
            clock,
            now,
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: {}",
                names(&uninitialized)
            )),
        ),
        condition(
            clock,
            now,
            "ContainersReady",
            containers_ready,
            Some(if completed {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            if completed {
                None
            } else {
                Some(format!(
                    "containers with unready status: {}",
                    names(&unready)
                ))
            },
        ),
        condition(
            clock,
            now,
            "Ready",
            ready,
            Some(not_ready_reason),
            not_ready_message,
        ),
    ];
    let pod_ip = view.pod_ip.clone();
    PodStatus {
        observed_generation: view.generation,
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.clone(),
        }]),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        start_time: view.start_time.map(time),
        init_container_statuses: (!view.init.is_empty())
            .then(|| view.init.iter().map(container_status).collect()),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn running(name: &str, ready: bool) -> ContainerView {
        ContainerView {
            state: RunState::Running {
                started_at: ts(10),
                container_id: "locus://1".into(),
            },
            ready,
            started: true,
            ..ContainerView::creating(name, "img")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerView {
        ContainerView {
            state: RunState::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: ts(10),
                finished_at: ts(20),
                container_id: "locus://1".into(),
            }),
            ..ContainerView::creating(name, "img")
        }
    }

    fn view(containers: Vec<ContainerView>, policy: &str) -> PodView {
        PodView {
            pod_ip: Some("10.213.1.2".into()),
            host_ip: "10.213.1.1".into(),
            sandbox_ready: true,
            containers,
            restart_policy: policy.into(),
            ..PodView::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let creating = ContainerView::creating("a", "img");
        assert_eq!(phase(&view(vec![creating.clone()], "Always")), "Pending");
        assert_eq!(
            phase(&view(vec![running("a", false), creating], "Always")),
            "Pending"
        );
        assert_eq!(phase(&view(vec![running("a", false)], "Always")), "Running");
        assert_eq!(phase(&view(vec![exited("a", 0)], "Never")), "Succeeded");
        assert_eq!(phase(&view(vec![exited("a", 0)], "OnFailure")), "Succeeded");
        assert_eq!(phase(&view(vec![exited("a", 1)], "Never")), "Failed");
        assert_eq!(phase(&view(vec![exited("a", 1)], "OnFailure")), "Running");
        assert_eq!(phase(&view(vec![exited("a", 0)], "Always")), "Running");
        let mut backing_off = ContainerView::creating("a", "img");
        backing_off.last = match exited("a", 1).state {
            RunState::Terminated(t) => Some(t),
            _ => None,
        };
        assert_eq!(phase(&view(vec![backing_off], "Always")), "Running");
        let mut with_init = view(vec![ContainerView::creating("a", "img")], "Never");
        with_init.init = vec![running("init", false)];
        assert_eq!(phase(&with_init), "Pending");
        with_init.init = vec![exited("init", 2)];
        assert_eq!(phase(&with_init), "Failed");
        let mut terminal = view(vec![running("a", true)], "Always");
        terminal.terminal = Some("Succeeded".into());
        assert_eq!(phase(&terminal), "Succeeded");
    }

    #[test]
    fn ready_needs_every_container_and_gate() {
        let mut clock = ConditionClock::default();
        let v = view(vec![running("a", true), running("b", false)], "Always");
        let s = compute(&v, &mut clock, ts(100));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.213.1.2");
        let mut gated = view(vec![running("a", true)], "Always");
        gated.unready_gates = vec!["example.com/gate".into()];
        let s = compute(&gated, &mut clock, ts(100));
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ReadinessGatesNotReady")
        );
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut clock = ConditionClock::default();
        let unready = view(vec![running("a", false)], "Always");
        let ready = view(vec![running("a", true)], "Always");
        let at = |s: &PodStatus| cond(s, "Ready").last_transition_time.clone().unwrap().0;
        let s1 = compute(&unready, &mut clock, ts(100));
        let s2 = compute(&unready, &mut clock, ts(200));
        assert_eq!(at(&s1), ts(100));
        assert_eq!(at(&s2), ts(100));
        let s3 = compute(&ready, &mut clock, ts(300));
        assert_eq!(at(&s3), ts(300));
        assert_eq!(
            cond(&s3, "PodReadyToStartContainers")
                .last_transition_time
                .clone()
                .unwrap()
                .0,
            ts(100)
        );
        // Same inputs, same output: the writer can skip unchanged statuses.
        assert_eq!(
            compute(&ready, &mut clock, ts(400)),
            compute(&ready, &mut clock, ts(500))
        );
    }

    #[test]
    fn container_statuses_carry_state_and_last_state() {
        let mut c = running("a", true);
        c.restart_count = 2;
        c.last = match exited("a", 137).state {
            RunState::Terminated(t) => Some(t),
            _ => None,
        };
        let s = container_status(&c);
        assert_eq!(s.restart_count, 2);
        assert_eq!(s.container_id.as_deref(), Some("locus://1"));
        assert!(s.state.unwrap().running.is_some());
        let last = s.last_state.unwrap().terminated.unwrap();
        assert_eq!(last.exit_code, 137);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        let waiting = container_status(&ContainerView {
            state: RunState::Waiting {
                reason: "ErrImagePull".into(),
                message: Some("no mapping".into()),
            },
            ..ContainerView::creating("a", "img")
        });
        let w = waiting.state.unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
        assert!(waiting.container_id.is_none());
    }

    #[test]
    fn completed_pods_are_not_ready_with_reason() {
        let mut clock = ConditionClock::default();
        let s = compute(&view(vec![exited("a", 0)], "Never"), &mut clock, ts(1));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
    }
}
