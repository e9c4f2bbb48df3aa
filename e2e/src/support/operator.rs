//! `locus-operator` run as a process on the host, outside the cluster, through a kubeconfig:
//! how the restart report runs its operator and how the fault-injection suite runs a standby
//! beside the chart's (with leader election, optionally with its wall clock shifted by
//! libfaketime).
//!
//! Its output goes to a log file; [`HostOperator::check`] fails with the log's last lines
//! once the process has exited; dropping it stops it (SIGTERM, a grace period, SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::SupportError;
use super::logs::tail;

/// How long a stopped operator may take to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a [`HostOperator`] is started; [`HostOperatorOptions::start`] starts it.
#[derive(Debug, Clone)]
pub struct HostOperatorOptions {
    exe: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
    log: PathBuf,
    election: Option<(String, String)>,
    clock_ahead: Option<Duration>,
}

/// A `locus-operator` process on the host; stopped when dropped.
#[derive(Debug)]
pub struct HostOperator {
    child: Child,
    /// Its Lease identity (empty without leader election).
    pub identity: String,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// Host wall clock when it was started.
    started: SystemTime,
}

impl HostOperator {
    /// An operator from `bin_dir/locus-operator` watching only `namespace` through
    /// `kubeconfig`, logging to `log`; without leader election, metrics or a shifted clock
    /// unless the options say so.
    pub fn options(
        bin_dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
        log: PathBuf,
    ) -> HostOperatorOptions {
        HostOperatorOptions {
            exe: bin_dir.join("locus-operator"),
            kubeconfig: kubeconfig.to_owned(),
            namespace: namespace.to_owned(),
            log,
            election: None,
            clock_ahead: None,
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails, with the end of its log, when the process has exited.
    pub fn check(&mut self) -> Result<(), SupportError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(SupportError::Exited {
                name: "locus-operator".to_owned(),
                status: status.to_string(),
                log_tail: tail(&self.log, 10),
            }),
            Err(source) => Err(SupportError::Io {
                action: "wait for locus-operator".to_owned(),
                source,
            }),
        }
    }

    /// Waits (bounded) until its log holds `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// How far its wall clock is ahead of the host's: the timestamp of its first log line
    /// minus the host's clock when it was started (an upper bound off by its start-up time).
    pub fn clock_ahead_s(&self) -> Option<f64> {
        let text = self.log_text();
        let stamp = text
            .lines()
            .find_map(|l| parse_rfc3339(l.split_whitespace().next()?))?;
        let started = self.started.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        Some(stamp - started)
    }
}

impl HostOperatorOptions {
    /// With leader election on Lease `lease` (in the watched namespace) as `identity`.
    #[must_use]
    pub fn leader_election(mut self, identity: &str, lease: &str) -> Self {
        self.election = Some((identity.to_owned(), lease.to_owned()));
        self
    }

    /// Under libfaketime with its clocks `ahead` of the host's (`LD_PRELOAD`,
    /// `FAKETIME=+<seconds>`).
    #[must_use]
    pub fn clock_ahead(mut self, ahead: Duration) -> Self {
        self.clock_ahead = Some(ahead);
        self
    }

    /// Starts the process.
    pub fn start(self) -> Result<HostOperator, SupportError> {
        let exe = &self.exe;
        if !exe.is_file() {
            return Err(SupportError::Missing(format!(
                "{} is missing: build it first (cargo build -p locus-operator)",
                exe.display()
            )));
        }
        let io = |action: String| move |source| SupportError::Io { action, source };
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        }
        let out = std::fs::File::create(&self.log)
            .map_err(io(format!("create {}", self.log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("open {}", self.log.display())))?;
        let mut command = Command::new(exe);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("LOCUS_OPERATOR_WATCH_NAMESPACE", &self.namespace)
            .env("LOCUS_OPERATOR_METRICS_ADDR", "off")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let identity = if let Some((identity, lease)) = &self.election {
            command
                .env("POD_NAME", identity)
                .env("POD_NAMESPACE", &self.namespace)
                .env("LOCUS_OPERATOR_LEADER_ELECTION", "true")
                .env("LOCUS_OPERATOR_LEASE_NAME", lease);
            identity.clone()
        } else {
            command.env("LOCUS_OPERATOR_LEADER_ELECTION", "false");
            String::new()
        };
        if let Some(ahead) = self.clock_ahead {
            let lib = libfaketime().ok_or_else(|| {
                SupportError::Missing(
                    "libfaketime is not installed (apt-get install libfaketime; `make chaos` does)"
                        .to_owned(),
                )
            })?;
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME", format!("+{}", ahead.as_secs()));
        }
        let started = SystemTime::now();
        let child = command
            .spawn()
            .map_err(io(format!("start {}", exe.display())))?;
        Ok(HostOperator {
            child,
            identity,
            log: self.log,
            started,
        })
    }
}

impl Drop for HostOperator {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared object of libfaketime (Debian's `libfaketime`), if installed.
pub fn libfaketime() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib").ok()?;
    lib.filter_map(Result::ok)
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.is_file())
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as `tracing` prints it
/// (`2026-12-06T12:50:01.123456Z`).
#[allow(
    clippy::many_single_char_names,
    reason = "the civil-date arithmetic reads best in its usual short names"
)]
fn parse_rfc3339(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let s: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (proleptic Gregorian), 1970-01-01 = 0.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds since 1970 fit an f64 exactly"
    )]
    let whole = (days * 86_400 + h * 3600 + min * 60) as f64;
    Some(whole + s)
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn tracing_timestamps_are_read() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
        assert_eq!(parse_rfc3339("not a time"), None);
    }
}
