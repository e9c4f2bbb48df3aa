//! The `exec-container` subcommand: the last step before a container's program runs.
//!
//! It runs inside the pod's network namespace with a private mount namespace (both made
//! by `ip netns exec`). It takes a private UTS namespace and sets the host name to the
//! pod's name, bind-mounts each volume onto its target (creating the target first; a
//! read-only mount is remounted read-only), changes to the working directory and replaces
//! itself with the container's program, as `runAsUser`/`runAsGroup` when the pod asks
//! for them (the group defaults to the user's id; supplementary groups are not set). The mounts are visible to this process and its
//! children only, so two pods mounting the same path each see their own volume.
//!
//! The target directories are created on the host's file system (that is where the
//! private mount namespace's tree lives); they are left behind empty.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::process::Mount;

/// What `exec-container` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    /// Host name to set.
    pub hostname: Option<String>,
    /// Directory to start in.
    pub workdir: Option<PathBuf>,
    /// User and group to run as (root when absent).
    pub user: Option<(u32, Option<u32>)>,
    /// Bind mounts, in order.
    pub mounts: Vec<Mount>,
    /// The program to become.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Parses the arguments after `exec-container`.
pub fn parse(args: &[String]) -> Result<ExecSpec, String> {
    let mut spec = ExecSpec {
        hostname: None,
        workdir: None,
        user: None,
        mounts: Vec::new(),
        program: PathBuf::new(),
        args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("exec-container: {name} needs a value"))
        };
        match arg.as_str() {
            "--" => {
                let program = it.next().ok_or("exec-container: no program after --")?;
                spec.program = program.into();
                spec.args = it.cloned().collect();
                return Ok(spec);
            }
            "--hostname" => spec.hostname = Some(value("--hostname")?),
            "--workdir" => spec.workdir = Some(value("--workdir")?.into()),
            "--user" => spec.user = Some(parse_user(&value("--user")?)?),
            "--mount" => spec.mounts.push(Mount::parse(&value("--mount")?)?),
            other => return Err(format!("exec-container: unknown argument {other:?}")),
        }
    }
    Err("exec-container: missing `-- PROGRAM [ARGS...]`".into())
}

/// Parses `UID[:GID]`.
fn parse_user(v: &str) -> Result<(u32, Option<u32>), String> {
    let bad = || format!("exec-container: --user {v:?}: expected UID[:GID]");
    let (uid, gid) = match v.split_once(':') {
        Some((u, g)) => (u, Some(g.parse().map_err(|_| bad())?)),
        None => (v, None),
    };
    Ok((uid.parse().map_err(|_| bad())?, gid))
}

fn bind(m: &Mount) -> Result<(), String> {
    let target = Path::new(&m.target);
    let what =
        |e: &dyn std::fmt::Display| format!("mounting {} on {}: {e}", m.source.display(), m.target);
    if m.source.is_dir() {
        std::fs::create_dir_all(target).map_err(|e| what(&e))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| what(&e))?;
        }
        if !target.exists() {
            std::fs::File::create(target).map_err(|e| what(&e))?;
        }
    }
    mount(
        Some(&m.source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| what(&e))?;
    if m.read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| what(&e))?;
    }
    Ok(())
}

/// Sets up the container's view and becomes its program. Returns only on failure.
pub fn run(spec: &ExecSpec) -> String {
    if let Some(name) = &spec.hostname {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS) {
            return format!("exec-container: unshare(CLONE_NEWUTS): {e}");
        }
        if let Err(e) = nix::unistd::sethostname(name) {
            return format!("exec-container: sethostname({name}): {e}");
        }
    }
    for m in &spec.mounts {
        if let Err(e) = bind(m) {
            return format!("exec-container: {e}");
        }
    }
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args);
    if let Some(dir) = &spec.workdir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return format!("exec-container: workingDir {}: {e}", dir.display());
        }
        cmd.current_dir(dir);
    }
    if let Some((uid, gid)) = spec.user {
        // The group first: after giving up root the process could not change it.
        cmd.gid(gid.unwrap_or(uid)).uid(uid);
    }
    let err = cmd.exec();
    format!(
        "exec-container: cannot run {}: {err}",
        spec.program.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn parses_mounts_and_program() {
        let spec = parse(&s(&[
            "--hostname",
            "web",
            "--mount",
            "/a:/b:ro",
            "--mount",
            "/c:/d",
            "--workdir",
            "/d",
            "--user",
            "1000:2000",
            "--",
            "/bin/x",
            "--mount",
            "y",
        ]))
        .unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web"));
        assert_eq!(spec.user, Some((1000, Some(2000))));
        assert_eq!(parse_user("7"), Ok((7, None)));
        assert!(parse_user("x:1").is_err());
        assert_eq!(spec.mounts.len(), 2);
        assert!(spec.mounts[0].read_only);
        assert_eq!(spec.program, PathBuf::from("/bin/x"));
        assert_eq!(spec.args, s(&["--mount", "y"]));
        assert!(parse(&s(&["--mount", "/a:/b"])).is_err());
        assert!(parse(&s(&["--bogus", "--", "/x"])).is_err());
        assert!(parse(&s(&["--"])).is_err());
    }
}
