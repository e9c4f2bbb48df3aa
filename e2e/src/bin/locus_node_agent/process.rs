//! Container processes: how one is started in its pod's network namespace, and signalled.
//!
//! A container runs as
//! `ip netns exec <netns> <agent> exec-container [--hostname H] [--workdir D]
//! [--user UID[:GID]] --mount SRC:DST[:ro]… -- <program> <args…>`: `ip netns exec` enters the pod's network
//! namespace and gives the process a private mount namespace, `exec-container` (see
//! `exec.rs`) bind-mounts the pod's volumes there and then becomes the container's
//! program, so the process id the agent holds is the container's own. Each container is
//! the leader of its own process group (signals go to the whole group), starts from the
//! environment the agent gives it (nothing inherited), and appends its stdout and stderr
//! to its log file.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::network::IpCommand;

/// One bind mount into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Directory or file on the host.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Mount {
    /// The `SRC:DST[:ro]` form `exec-container` takes.
    pub fn to_arg(&self) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{ro}", self.source.display(), self.target)
    }

    /// Parses `SRC:DST[:ro|:rw]` (SRC may not contain `:`).
    pub fn parse(arg: &str) -> Result<Self, String> {
        let (body, read_only) = if let Some(b) = arg.strip_suffix(":ro") {
            (b, true)
        } else if let Some(b) = arg.strip_suffix(":rw") {
            (b, false)
        } else {
            (arg, false)
        };
        let (source, target) = body
            .split_once(':')
            .ok_or_else(|| format!("--mount {arg:?}: expected SRC:DST[:ro]"))?;
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(format!(
                "--mount {arg:?}: SRC and DST must be absolute paths"
            ));
        }
        Ok(Self {
            source: source.into(),
            target: target.into(),
            read_only,
        })
    }
}

/// Everything needed to start one container process.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The pod's network namespace.
    pub netns: String,
    /// The agent's own executable (for `exec-container`).
    pub agent_exe: PathBuf,
    /// Host name inside the container (the pod name).
    pub hostname: String,
    /// Volume mounts.
    pub mounts: Vec<Mount>,
    /// `workingDir`.
    pub workdir: Option<String>,
    /// `runAsUser` and `runAsGroup` (container's, else the pod's).
    pub user: Option<(u32, Option<u32>)>,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Log file (appended to).
    pub log: PathBuf,
}

impl Launch {
    /// The arguments given to `ip`.
    pub fn ip_args(&self) -> Vec<String> {
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            self.netns.clone(),
            self.agent_exe.display().to_string(),
            "exec-container".into(),
            "--hostname".into(),
            self.hostname.clone(),
        ];
        if let Some(dir) = &self.workdir {
            args.push("--workdir".into());
            args.push(dir.clone());
        }
        if let Some((uid, gid)) = self.user {
            args.push("--user".into());
            args.push(gid.map_or_else(|| uid.to_string(), |g| format!("{uid}:{g}")));
        }
        for m in &self.mounts {
            args.push("--mount".into());
            args.push(m.to_arg());
        }
        args.push("--".into());
        args.push(self.program.display().to_string());
        args.extend(self.args.iter().cloned());
        args
    }

    /// Starts the process.
    pub fn spawn(&self, ip: &IpCommand) -> std::io::Result<tokio::process::Child> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let err = log.try_clone()?;
        tokio::process::Command::new(ip.path())
            .args(self.ip_args())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
    }
}

/// Sends `signal` to the process group led by `pid`; false when no such group exists.
pub fn signal_group(pid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    killpg(Pid::from_raw(raw), signal).is_ok()
}

/// Appends one line to a container's log (used for the agent's own notes there, such
/// as why a container could not start).
pub fn note_in_log(log: &Path, line: &str) {
    use std::io::Write as _;
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "[locus-node-agent] {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_round_trip() {
        let m = Mount {
            source: "/run/x/vol".into(),
            target: "/data".into(),
            read_only: true,
        };
        assert_eq!(m.to_arg(), "/run/x/vol:/data:ro");
        assert_eq!(Mount::parse(&m.to_arg()).unwrap(), m);
        let rw = Mount::parse("/a:/b").unwrap();
        assert!(!rw.read_only);
        assert!(Mount::parse("/a").is_err());
        assert!(Mount::parse("a:/b").is_err());
    }

    #[test]
    fn ip_args_put_the_program_after_the_separator() {
        let l = Launch {
            netns: "locus-br-1234".into(),
            agent_exe: "/bin/agent".into(),
            hostname: "web-1".into(),
            mounts: vec![Mount::parse("/v:/data").unwrap()],
            workdir: Some("/data".into()),
            user: Some((1000, None)),
            program: "/bin/server".into(),
            args: vec!["--port".into(), "--".into()],
            env: vec![],
            log: "/tmp/x.log".into(),
        };
        assert_eq!(
            l.ip_args().join(" "),
            "netns exec locus-br-1234 /bin/agent exec-container --hostname web-1 \
             --workdir /data --user 1000 --mount /v:/data -- /bin/server --port --"
        );
    }
}
