//! Control-plane processes: each runs in its own process group with its output in a log file,
//! and stops with SIGTERM, a grace period, then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::ClusterError;
use crate::support::logs::tail;

/// A running component of the local cluster.
#[derive(Debug)]
pub struct Component {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Sends `signal` to process group `group`, ignoring a group that is already gone.
pub fn kill_group(group: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(group), signal);
}

impl Component {
    /// Starts `program` with `args`, logging to `<log_dir>/<name>.log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Self, ClusterError> {
        use std::os::unix::process::CommandExt as _;
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|source| ClusterError::Io {
            action: format!("create {}", log.display()),
            source,
        })?;
        let err = out.try_clone().map_err(|source| ClusterError::Io {
            action: format!("open {}", log.display()),
            source,
        })?;
        tracing::debug!(name, program = %program.display(), ?args, "starting");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| ClusterError::Io {
                action: format!("start {name} ({})", program.display()),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process group id (the child's pid, as it leads its own group).
    pub fn group(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails with the log's last lines if the process has exited.
    pub fn check_running(&mut self) -> Result<(), ClusterError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(ClusterError::ComponentExited {
                name: self.name.clone(),
                status: status.to_string(),
                log_tail: tail(&self.log, 20),
            }),
            Err(source) => Err(ClusterError::Io {
                action: format!("wait for {}", self.name),
                source,
            }),
        }
    }

    /// Stops the whole process group: SIGTERM, up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            kill_group(self.group(), Signal::SIGKILL);
            return;
        }
        kill_group(self.group(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group (the leader or its children) is killed.
        kill_group(self.group(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
