//! The flags.

use std::path::PathBuf;

use locus_e2e::postgres::pg_script;

pub(crate) const USAGE: &str = "\
usage: locus-restart-report [--sessions N] [--appends N] [--note-bytes N]
                            [--load-concurrency N] [--read-concurrency N] [--pg-pool N]
                            [--pg-script PATH]

  --sessions N          sessions loaded and read back (default 100000, at most 1000000)
  --appends N           acknowledged appends per session (default 4)
  --note-bytes N        note bytes per append, at most 256 (default 200; with 4 appends a
                        session is about 1 KiB of JSON)
  --load-concurrency N  appends in flight while loading (default 64)
  --read-concurrency N  reads in flight while reading every session back (default 64)
  --pg-pool N           PostgreSQL connections of the pod (default 8)
  --pg-script PATH      the private PostgreSQL's start/stop script (default examples/tests/pg.sh)

Runs as root on the local cluster (started for the run, or LOCUS_E2E_KUBECONFIG's);
see e2e/bench/inplace-restart.sh.";

/// The flags.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) sessions: u32,
    pub(crate) appends: u32,
    pub(crate) note_bytes: usize,
    pub(crate) load_concurrency: usize,
    pub(crate) read_concurrency: usize,
    pub(crate) pg_pool: usize,
    pub(crate) pg_script: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sessions: 100_000,
            appends: 4,
            note_bytes: 200,
            load_concurrency: 64,
            read_concurrency: 64,
            pg_pool: 8,
            pg_script: pg_script(),
        }
    }
}

pub(crate) fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Settings, String> {
    fn number<T>(flag: &str, value: &str, range: (T, T)) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let n: T = value
            .parse()
            .map_err(|_| format!("{flag} {value:?}: expected a whole number"))?;
        if n < range.0 || n > range.1 {
            return Err(format!("{flag} must be {} to {}", range.0, range.1));
        }
        Ok(n)
    }
    let mut settings = Settings::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if matches!(flag.as_str(), "-h" | "--help") {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--sessions" => settings.sessions = number(&flag, &value, (1, 1_000_000))?,
            "--appends" => settings.appends = number(&flag, &value, (1, 1000))?,
            "--note-bytes" => settings.note_bytes = number(&flag, &value, (0, 256))?,
            "--load-concurrency" => settings.load_concurrency = number(&flag, &value, (1, 4096))?,
            "--read-concurrency" => settings.read_concurrency = number(&flag, &value, (1, 4096))?,
            "--pg-pool" => settings.pg_pool = number(&flag, &value, (1, 256))?,
            "--pg-script" => settings.pg_script = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_have_defaults_and_bounds() {
        let s = parse_flags(args(&[])).unwrap();
        assert_eq!((s.sessions, s.appends, s.note_bytes), (100_000, 4, 200));
        let s = parse_flags(args(&["--sessions", "20000", "--read-concurrency", "8"])).unwrap();
        assert_eq!((s.sessions, s.read_concurrency), (20_000, 8));
        assert!(parse_flags(args(&["--note-bytes", "257"])).is_err());
        assert!(parse_flags(args(&["--sessions", "0"])).is_err());
        assert!(parse_flags(args(&["--sessions"])).is_err());
        assert!(parse_flags(args(&["--bogus", "1"])).is_err());
    }
}
