//! One container's life: start, probe, restart with back-off, stop.
//!
//! A supervisor task per container resolves the image, builds the environment, starts
//! the process, runs its probes and waits for it. When the process ends it restarts it
//! as the pod's `restartPolicy` says (init containers restart only on failure, and not
//! under `Never`), after a back-off of 0 s for the first restart, then 10 s doubling up
//! to `--max-restart-backoff-secs`, reset after 10 minutes of running and after an image
//! change (a kubelet keys the back-off by the container spec); while it waits the
//! container is `Waiting` with reason `CrashLoopBackOff`. An image without a mapping
//! leaves it `Waiting` with `ErrImagePull`, then `ImagePullBackOff`, retried on the same
//! back-off. Every change is sent to the pod worker as a [`ContainerView`].
//!
//! Stopping (pod deletion, agent shutdown) sends SIGTERM to the container's process
//! group and SIGKILL when the deadline passes; a failed liveness or startup probe does
//! the same with the pod's termination grace period, then restarts per policy. A new
//! `image` in the pod spec (the one container field Kubernetes lets change in place)
//! stops the container the same way and restarts it at once with the new image, in the
//! same pod: same address, same volumes, `restartCount` + 1.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::agent::Agent;
use crate::env::{PodFacts, Sources, base_environment, container_environment};
use crate::probe::{self, ProbeEvent};
use crate::process::{Launch, Mount, note_in_log, signal_group};
use crate::status::{ContainerView, RunState, Termination, now};

/// Init or app container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs to completion before the app containers.
    Init,
    /// A regular container.
    App,
}

/// A change of one container, for the pod worker.
pub type Update = (Role, usize, ContainerView);

/// After this long running, a crash starts the back-off from scratch.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The delay before restart number `step + 1`: none for the first, then 10 s doubling,
/// at most `cap`.
pub fn backoff(step: u32, cap: Duration) -> Duration {
    if step == 0 {
        return Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1u64 << (step - 1).min(20));
    Duration::from_secs(secs).min(cap)
}

/// The delay before the next start of a container that just ended after running for
/// `ran_for`, advancing `crash_step`. A run stopped for a new image is not a crash and starts
/// the back-off afresh (a kubelet keys its back-off by the container spec's hash, so the
/// first crash after an image change restarts at once); so does a run of
/// [`BACKOFF_RESET`] or longer.
pub fn restart_delay(
    crash_step: &mut u32,
    replaced: bool,
    ran_for: Duration,
    cap: Duration,
) -> Duration {
    if replaced {
        *crash_step = 0;
        return Duration::ZERO;
    }
    if ran_for >= BACKOFF_RESET {
        *crash_step = 0;
    }
    let delay = backoff(*crash_step, cap);
    *crash_step = crash_step.saturating_add(1);
    delay
}

/// Whether a container that exited with `exit_code` runs again.
pub fn should_restart(policy: &str, role: Role, exit_code: i32) -> bool {
    match role {
        Role::Init => exit_code != 0 && policy != "Never",
        Role::App => match policy {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        },
    }
}

/// Exit code and signal the way Kubernetes reports them.
pub fn exit_of(status: std::process::ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    }
}

/// `runAsUser`/`runAsGroup`: the container's security context first, then the pod's.
pub fn run_as(pod: &Pod, container: &Container) -> Option<(u32, Option<u32>)> {
    let own = container.security_context.as_ref();
    let pods = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let uid = id(own.and_then(|c| c.run_as_user)).or(id(pods.and_then(|p| p.run_as_user)))?;
    let gid = id(own.and_then(|c| c.run_as_group)).or(id(pods.and_then(|p| p.run_as_group)));
    Some((uid, gid))
}

/// How a run ended, in Kubernetes' terms.
fn termination(
    status: std::io::Result<std::process::ExitStatus>,
    message: Option<String>,
    started_at: k8s_openapi::jiff::Timestamp,
    container_id: String,
) -> Termination {
    let (exit_code, signal) = match status {
        Ok(s) => exit_of(s),
        Err(e) => {
            tracing::warn!("waiting for container {container_id}: {e}");
            (-1, None)
        }
    };
    Termination {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
        message,
        started_at,
        finished_at: now(),
        container_id,
    }
}

/// Everything a supervisor needs.
pub struct Supervisor {
    /// Shared agent context.
    pub agent: Arc<Agent>,
    /// The pod (as when the container was first started).
    pub pod: Arc<Pod>,
    /// Init or app.
    pub role: Role,
    /// Index among the containers of its role.
    pub index: usize,
    /// The container spec.
    pub container: Container,
    /// The pod's network namespace.
    pub netns: String,
    /// Addresses.
    pub facts: PodFacts,
    /// Bind mounts.
    pub mounts: Vec<Mount>,
    /// Log file.
    pub log: PathBuf,
    /// `spec.restartPolicy`.
    pub restart_policy: String,
    /// The pod's termination grace period (for probe-triggered kills).
    pub grace: Duration,
    /// Where changes go.
    pub updates: mpsc::UnboundedSender<Update>,
    /// The stop deadline, once the container must stop.
    pub stop: watch::Receiver<Option<Instant>>,
    /// The container's latest spec: a new image restarts the container with it.
    pub spec: watch::Receiver<Container>,
}

/// How a run ended.
struct RunEnd {
    status: std::io::Result<std::process::ExitStatus>,
    /// Why the agent killed it (failed probe), if it did.
    kill_message: Option<String>,
    /// It was stopped to run a new image.
    replaced: bool,
}

enum Wait {
    Elapsed,
    Stopped,
}

impl Supervisor {
    fn send(&self, view: &ContainerView) {
        let _ = self.updates.send((self.role, self.index, view.clone()));
    }

    fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    async fn wait(&mut self, d: Duration) -> Wait {
        if self.stopping() {
            return Wait::Stopped;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => Wait::Elapsed,
            _ = self.stop.wait_for(Option::is_some) => Wait::Stopped,
        }
    }

    fn pod_label(&self) -> String {
        let m = &self.pod.metadata;
        format!(
            "{}_{}({})",
            m.name.as_deref().unwrap_or(""),
            m.namespace.as_deref().unwrap_or(""),
            m.uid.as_deref().unwrap_or("")
        )
    }

    fn waiting(&self, view: &mut ContainerView, reason: &str, message: String) {
        view.state = RunState::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        view.ready = false;
        view.started = false;
        self.send(view);
    }

    /// Builds the launch: environment, `$(VAR)` expansion, image resolution.
    async fn prepare(&self) -> Result<Launch, (String, String)> {
        let pod = &self.pod;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name.chars().take(63).collect());
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut sources = Sources::new(&self.agent.client, &ns);
        let base = base_environment(
            &hostname,
            &self.agent.flags.gateway.to_string(),
            self.agent.api_port,
        );
        let env = container_environment(pod, &self.container, &self.facts, base, &mut sources)
            .await
            .map_err(|e| ("CreateContainerConfigError".to_string(), e.to_string()))?;
        let command: Vec<String> = self
            .container
            .command
            .iter()
            .flatten()
            .map(|c| env.expand(c))
            .collect();
        let args: Vec<String> = self
            .container
            .args
            .iter()
            .flatten()
            .map(|a| env.expand(a))
            .collect();
        let image = self.container.image.clone().unwrap_or_default();
        let resolved = self
            .agent
            .images
            .current()
            .resolve(self.agent.images.path(), &image, &command, &args)
            .map_err(|e| {
                let reason = if e.is_pull_error() {
                    "ErrImagePull"
                } else {
                    "RunContainerError"
                };
                (reason.to_string(), e.to_string())
            })?;
        Ok(Launch {
            netns: self.netns.clone(),
            agent_exe: self.agent.exe.clone(),
            hostname,
            mounts: self.mounts.clone(),
            workdir: self.container.working_dir.clone().filter(|w| !w.is_empty()),
            user: run_as(pod, &self.container),
            program: resolved.program,
            args: resolved.args,
            env: env.vars().to_vec(),
            log: self.log.clone(),
        })
    }

    /// Waits for a started process while its probes run; stops it when asked to or when
    /// a liveness/startup probe fails. Returns how it ended and why it was killed.
    async fn watch_process(
        &mut self,
        child: &mut tokio::process::Child,
        pid: u32,
        view: &mut ContainerView,
    ) -> RunEnd {
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
        let running_image = self.container.image.clone();
        let mut replaced = false;
        let mut spec_open = true;
        let probes = match (self.role, self.facts.pod_ip.parse::<IpAddr>()) {
            (Role::App, Ok(ip)) => Some(tokio::spawn(probe::run(
                self.container.clone(),
                ip,
                probe_tx,
            ))),
            _ => None,
        };
        let mut kill_at: Option<Instant> = None;
        let mut kill_message: Option<String> = None;
        let mut stop_requested = self.stopping();
        if let Some(deadline) = *self.stop.borrow() {
            signal_group(pid, Signal::SIGTERM);
            kill_at = Some(deadline);
        }
        let status = loop {
            let killer = async {
                match kill_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => break status,
                Some(event) = probe_rx.recv() => match event {
                    ProbeEvent::Started => {
                        view.started = true;
                        self.send(view);
                    }
                    ProbeEvent::Ready(ready) => {
                        if view.ready != ready {
                            view.ready = ready;
                            self.send(view);
                        }
                    }
                    ProbeEvent::Failed(message) => {
                        tracing::info!(pod = %self.pod_label(), container = %self.container.name, "{message}: restarting");
                        note_in_log(&self.log, &format!("{message}; stopping the container"));
                        kill_message = Some(message);
                        view.ready = false;
                        self.send(view);
                        signal_group(pid, Signal::SIGTERM);
                        let at = Instant::now() + self.grace;
                        kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                    }
                },
                changed = self.stop.changed(), if !stop_requested => {
                    let deadline = if changed.is_ok() { *self.stop.borrow() } else { Some(Instant::now()) };
                    if let Some(deadline) = deadline {
                        stop_requested = true;
                        signal_group(pid, Signal::SIGTERM);
                        kill_at = Some(kill_at.map_or(deadline, |k| k.min(deadline)));
                    }
                }
                changed = self.spec.changed(), if !replaced && spec_open => {
                    let image = self.spec.borrow().image.clone();
                    if changed.is_err() {
                        // No more spec updates (init containers): stop watching.
                        spec_open = false;
                    } else if image != running_image {
                        replaced = true;
                        let image = image.unwrap_or_default();
                        tracing::info!(pod = %self.pod_label(), container = %self.container.name, %image, "image changed: restarting");
                        note_in_log(&self.log, &format!("image changed to {image}; stopping the container to restart it"));
                        view.ready = false;
                        self.send(view);
                        signal_group(pid, Signal::SIGTERM);
                        let at = Instant::now() + self.grace;
                        kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
                    }
                }
                () = killer => {
                    signal_group(pid, Signal::SIGKILL);
                    kill_at = None;
                }
            }
        };
        if let Some(p) = probes {
            p.abort();
        }
        // Whatever the container left running in its group goes with it.
        signal_group(pid, Signal::SIGKILL);
        RunEnd {
            status,
            kill_message,
            replaced,
        }
    }

    /// Reports a start that could not happen (image, command, environment) and waits
    /// out the back-off.
    async fn setup_failed(
        &mut self,
        view: &mut ContainerView,
        reason: &str,
        message: String,
        delay: Duration,
    ) -> Wait {
        tracing::warn!(pod = %self.pod_label(), container = %self.container.name, "{reason}: {message}");
        self.waiting(view, reason, message.clone());
        if reason == "ErrImagePull" {
            if let Wait::Stopped = self.wait(Duration::from_secs(1)).await {
                return Wait::Stopped;
            }
            let image = self.container.image.clone().unwrap_or_default();
            self.waiting(
                view,
                "ImagePullBackOff",
                format!("Back-off pulling image {image:?}: {message}"),
            );
        }
        self.wait(delay).await
    }

    /// Runs the container until it is done for good or told to stop; returns its last
    /// view.
    pub async fn run(mut self) -> ContainerView {
        let image = self.container.image.clone().unwrap_or_default();
        let mut view = ContainerView::creating(&self.container.name, &image);
        let cap = self.agent.flags.max_restart_backoff;
        let mut crash_step = 0u32;
        let mut setup_step = 0u32;
        loop {
            if self.stopping() {
                return view;
            }
            self.container = self.spec.borrow_and_update().clone();
            view.image = self.container.image.clone().unwrap_or_default();
            let launch = match self.prepare().await {
                Ok(l) => l,
                Err((reason, message)) => {
                    setup_step += 1;
                    let delay = backoff(setup_step, cap);
                    if let Wait::Stopped =
                        self.setup_failed(&mut view, &reason, message, delay).await
                    {
                        return view;
                    }
                    continue;
                }
            };
            setup_step = 0;
            let mut child = match launch.spawn(&self.agent.ip) {
                Ok(c) => c,
                Err(e) => {
                    setup_step += 1;
                    let message = format!("starting {}: {e}", launch.program.display());
                    note_in_log(&self.log, &message);
                    let delay = backoff(setup_step, cap);
                    if let Wait::Stopped = self
                        .setup_failed(&mut view, "RunContainerError", message, delay)
                        .await
                    {
                        return view;
                    }
                    continue;
                }
            };
            let pid = child.id().unwrap_or(0);
            let container_id = format!("locus://{pid}");
            let started_at = now();
            let started_instant = Instant::now();
            view.image_id = format!("locus-image://{}", launch.program.display());
            view.state = RunState::Running {
                started_at,
                container_id: container_id.clone(),
            };
            view.started = false;
            view.ready = false;
            self.send(&view);
            tracing::info!(pod = %self.pod_label(), container = %self.container.name, pid, "container started");

            let end = self.watch_process(&mut child, pid, &mut view).await;
            let termination = termination(end.status, end.kill_message, started_at, container_id);
            let exit_code = termination.exit_code;
            tracing::info!(pod = %self.pod_label(), container = %self.container.name, exit_code, "container exited");
            view.ready = false;
            view.started = false;
            let restart =
                end.replaced || should_restart(&self.restart_policy, self.role, exit_code);
            if self.stopping() || !restart {
                view.state = RunState::Terminated(termination);
                self.send(&view);
                return view;
            }
            let delay = restart_delay(
                &mut crash_step,
                end.replaced,
                started_instant.elapsed(),
                cap,
            );
            view.last = Some(termination);
            if !delay.is_zero() {
                self.waiting(
                    &mut view,
                    "CrashLoopBackOff",
                    format!(
                        "back-off {}s restarting failed container={} pod={}",
                        delay.as_secs(),
                        self.container.name,
                        self.pod_label()
                    ),
                );
                if let Wait::Stopped = self.wait(delay).await {
                    return view;
                }
            }
            view.restart_count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        let steps: Vec<u64> = (0..7).map(|s| backoff(s, cap).as_secs()).collect();
        assert_eq!(steps, vec![0, 10, 20, 40, 80, 160, 300]);
        assert_eq!(backoff(3, Duration::from_secs(10)), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX, cap), cap);
    }

    #[test]
    fn an_image_change_starts_the_back_off_afresh() {
        let cap = Duration::from_secs(300);
        let short = Duration::from_secs(1);
        let mut step = 0;
        // Two crashes: the first restarts at once, the second after 10 s.
        assert_eq!(restart_delay(&mut step, false, short, cap), Duration::ZERO);
        assert_eq!(
            restart_delay(&mut step, false, short, cap),
            Duration::from_secs(10)
        );
        // An image change restarts at once, and so does the first crash after it.
        assert_eq!(restart_delay(&mut step, true, short, cap), Duration::ZERO);
        assert_eq!(restart_delay(&mut step, false, short, cap), Duration::ZERO);
        assert_eq!(
            restart_delay(&mut step, false, short, cap),
            Duration::from_secs(10)
        );
        // A long run resets it too.
        assert_eq!(
            restart_delay(&mut step, false, BACKOFF_RESET, cap),
            Duration::ZERO
        );
    }

    #[test]
    fn restart_policy_decides() {
        assert!(should_restart("Always", Role::App, 0));
        assert!(should_restart("", Role::App, 0));
        assert!(should_restart("OnFailure", Role::App, 1));
        assert!(!should_restart("OnFailure", Role::App, 0));
        assert!(!should_restart("Never", Role::App, 1));
        assert!(should_restart("Always", Role::Init, 1));
        assert!(!should_restart("Always", Role::Init, 0));
        assert!(!should_restart("Never", Role::Init, 1));
    }

    #[test]
    fn run_as_prefers_the_container_over_the_pod() {
        use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};
        let pod = Pod {
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(1000),
                    run_as_group: Some(3000),
                    ..PodSecurityContext::default()
                }),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let mut c = Container::default();
        assert_eq!(run_as(&pod, &c), Some((1000, Some(3000))));
        c.security_context = Some(SecurityContext {
            run_as_user: Some(65532),
            ..SecurityContext::default()
        });
        assert_eq!(run_as(&pod, &c), Some((65532, Some(3000))));
        assert_eq!(run_as(&Pod::default(), &Container::default()), None);
    }

    #[test]
    fn exit_codes_and_signals() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(exit_of(std::process::ExitStatus::from_raw(0)), (0, None));
        assert_eq!(
            exit_of(std::process::ExitStatus::from_raw(3 << 8)),
            (3, None)
        );
        // Killed by SIGKILL (9).
        assert_eq!(
            exit_of(std::process::ExitStatus::from_raw(9)),
            (137, Some(9))
        );
    }
}
