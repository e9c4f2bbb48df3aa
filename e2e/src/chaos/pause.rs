//! Pauses: every process of one pod stopped with SIGSTOP, continued with SIGCONT.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{ChaosError, ChaosPod, STOP_WAIT};

/// Processes of one pod stopped with SIGSTOP; continued (SIGCONT) when dropped.
#[derive(Debug)]
pub struct Paused {
    pod: ChaosPod,
    pids: Vec<i32>,
    since: Instant,
    active: bool,
}

impl Paused {
    /// The pod.
    pub fn pod(&self) -> &ChaosPod {
        &self.pod
    }

    /// The processes stopped.
    pub fn pids(&self) -> &[i32] {
        &self.pids
    }

    /// When they were stopped.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Continues every stopped process (and any other process now in the pod).
    pub fn resume(mut self) -> Result<(), ChaosError> {
        self.active = false;
        continue_all(&self.pod, &self.pids)?;
        tracing::info!(pod = %self.pod, paused = ?self.since.elapsed(), "pod resumed");
        Ok(())
    }

    /// Kills (SIGKILL) the stopped processes without continuing them first: the pod dies
    /// as on a node failure, with no chance to run its shutdown (release a Lease, hand
    /// anything over). Returns how many were killed (a process gone meanwhile is not).
    pub fn kill(mut self) -> Result<usize, ChaosError> {
        self.active = false;
        let mut killed = 0;
        for &pid in &self.pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => killed += 1,
                Err(nix::Error::ESRCH) => {}
                Err(source) => {
                    return Err(ChaosError::Signal {
                        pod: self.pod.to_string(),
                        pid,
                        signal: "SIGKILL".into(),
                        source,
                    });
                }
            }
        }
        tracing::info!(pod = %self.pod, killed, "paused pod killed (SIGKILL)");
        Ok(killed)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.active
            && let Err(error) = continue_all(&self.pod, &self.pids)
        {
            tracing::warn!(pod = %self.pod, %error, "could not resume the pod on drop");
        }
    }
}

/// Stops (SIGSTOP) every process of `pod` and waits until each shows as stopped.
pub fn pause(pod: &ChaosPod) -> Result<Paused, ChaosError> {
    let pids = pod.pids()?;
    if pids.is_empty() {
        return Err(ChaosError::NotRunning {
            pod: pod.to_string(),
            reason: format!("no process in {}", pod.netns),
        });
    }
    // The guard exists before the first signal, so an error below continues what stopped.
    let guard = Paused {
        pod: pod.clone(),
        pids: pids.clone(),
        since: Instant::now(),
        active: true,
    };
    for &pid in &pids {
        match kill(Pid::from_raw(pid), Signal::SIGSTOP) {
            // Gone since the listing: nothing to stop.
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => {
                return Err(ChaosError::Signal {
                    pod: pod.to_string(),
                    pid,
                    signal: "SIGSTOP".into(),
                    source,
                });
            }
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        let running: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&pid| process_state(pid).is_some_and(|s| s != 'T' && s != 't'))
            .collect();
        if running.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(ChaosError::NotStopped {
                pod: pod.to_string(),
                pids: running,
                after: STOP_WAIT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(%pod, ?pids, "pod paused (SIGSTOP)");
    Ok(guard)
}

/// Continues (SIGCONT) every process now in `pod`'s network namespace; returns how many.
pub fn resume(pod: &ChaosPod) -> Result<usize, ChaosError> {
    let pids = pod.pids()?;
    continue_all(pod, &pids)?;
    Ok(pids.len())
}

pub(super) fn continue_all(pod: &ChaosPod, pids: &[i32]) -> Result<(), ChaosError> {
    // The recorded processes, and whatever runs in the namespace now (the listing fails
    // once the pod is gone; the recorded ones are still continued).
    let mut all: BTreeSet<i32> = pids.iter().copied().collect();
    if let Ok(now) = pod.pids() {
        all.extend(now);
    }
    let mut first_error = None;
    for pid in all {
        match kill(Pid::from_raw(pid), Signal::SIGCONT) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => {
                first_error.get_or_insert(ChaosError::Signal {
                    pod: pod.to_string(),
                    pid,
                    signal: "SIGCONT".into(),
                    source,
                });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The state letter of process `pid` (`/proc/<pid>/stat`), `None` if it is gone.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_state(&stat)
}

pub(super) fn parse_state(stat: &str) -> Option<char> {
    // "pid (comm) S ...": the command may hold spaces and parentheses; the state follows
    // the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

pub(super) fn parse_pids(out: &str) -> Vec<i32> {
    out.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
