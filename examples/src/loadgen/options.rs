//! `locus-loadgen`'s flags. See [`USAGE`].

use std::path::PathBuf;
use std::time::Duration;

use super::{LoadConfig, Stop, Target, random_prefix};
use crate::Error;
use crate::args::Args;
use crate::ring_source::RingSourceConfig;

/// The help text.
pub const USAGE: &str = "\
locus-loadgen: load on the Locus sample (session ledger), routed by the ring; checks for lost writes.

usage: locus-loadgen TARGET [flags]

TARGET, one of:
  --ring-file PATH                 route by the ring in this file
  --namespace NS --service NAME    route by the ring ConfigMap NAME-ring
      [--kubeconfig PATH]          (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
  --target URL                     send everything to one URL (no routing: the load-balancer comparison)

flags:
  --sessions N          sessions (default 100, at most 1000000)
  --concurrency N       requests in flight (default 16, at most 4096)
  --duration DURATION   run this long (default 10s, at most 24h) ...
  --requests N          ... or send this many requests (at most 100000000)
  --read-percent P      share of reads, the rest are appends (default 20)
  --rate R              requests per second over all workers (default: unlimited)
  --timeout DURATION    longest wait for one answer (default 5s)
  --note-bytes N        note size per append (default 0, at most 256)
  --prefix STR          session ids are STR-0, STR-1, ... (default: random)
  --key-distribution D  uniform (each session in turn, the default) or zipf:S (session r gets a
                        share in proportion to 1/(r+1)^S, e.g. zipf:1.1: a few hot sessions)
  --ring-wait DURATION  longest wait for the first ring (default 30s)
  --no-verify           skip reading every session back at the end
  --json                print each summary as one JSON line instead of a table
  --help                this text

Phases: SIGUSR1 ends the current phase (its summary is printed, counters start again) and starts
the next; the run ends at --duration / --requests, or on Ctrl-C / SIGTERM. At the end every session
with an acknowledged append is read back and a `total` summary (all phases, with the verification)
is printed last. Exit status 0, or 3 if a lost write, stale read or version conflict was seen.";

/// Where the binary sends its load, before the ring source is opened.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// Route by this ring source.
    Ring(RingSourceConfig),
    /// Straight to this URL.
    Direct(String),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum LoadgenCommand {
    /// Print [`USAGE`].
    Help,
    /// Generate load.
    Run(Box<LoadgenOptions>),
}

/// The binary's options.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Where requests go.
    pub target: TargetSpec,
    /// The load (its `target` is a placeholder until the ring is open).
    pub config: LoadConfig,
    /// Longest wait for the first ring.
    pub ring_wait: Duration,
    /// Read every session back at the end.
    pub verify: bool,
    /// JSON lines instead of tables.
    pub json: bool,
}

/// Reads the flags in `args`.
pub fn parse_command(mut args: Args) -> Result<LoadgenCommand, Error> {
    let mut ring_file = None;
    let mut namespace = None;
    let mut service = None;
    let mut kubeconfig = None;
    let mut url = None;
    let mut duration = None;
    let mut requests = None;
    let mut ring_wait = Duration::from_secs(30);
    let mut verify = true;
    let mut json = false;
    // The placeholder target is replaced once the real one is known.
    let mut config = LoadConfig::new(Target::Direct("http://placeholder".into()));
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--help" | "-h" => return Ok(LoadgenCommand::Help),
            "--ring-file" => ring_file = Some(PathBuf::from(args.text(&flag)?)),
            "--namespace" => namespace = Some(args.text(&flag)?),
            "--service" => service = Some(args.text(&flag)?),
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(args.text(&flag)?)),
            "--target" => url = Some(args.text(&flag)?),
            "--sessions" => config.sessions = args.value(&flag)?,
            "--concurrency" => config.concurrency = args.value(&flag)?,
            "--duration" => duration = Some(args.duration(&flag)?),
            "--requests" => requests = Some(args.value(&flag)?),
            "--read-percent" => config.read_percent = args.value(&flag)?,
            "--rate" => config.rate = Some(args.value(&flag)?),
            "--timeout" => config.timeout = args.duration(&flag)?,
            "--note-bytes" => config.note_bytes = args.value(&flag)?,
            "--prefix" => config.prefix = args.text(&flag)?,
            "--key-distribution" => config.keys = args.value(&flag)?,
            "--ring-wait" => ring_wait = args.duration(&flag)?,
            "--no-verify" => verify = false,
            "--json" => json = true,
            other => return Err(Error::config(other, "unknown flag (see --help)")),
        }
    }
    config.stop = match (duration, requests) {
        (Some(_), Some(_)) => {
            return Err(Error::config(
                "--duration / --requests",
                "give one, not both",
            ));
        }
        (Some(d), None) => Stop::Duration(d),
        (None, Some(n)) => Stop::Requests(n),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    let target = match (ring_file, namespace, service, url) {
        (Some(path), None, None, None) => TargetSpec::Ring(RingSourceConfig::File(path)),
        (None, Some(namespace), Some(service), None) => TargetSpec::Ring(RingSourceConfig::Kube {
            namespace,
            service,
            kubeconfig,
        }),
        (None, None, None, Some(url)) => {
            config.target = Target::Direct(url.clone());
            TargetSpec::Direct(url)
        }
        _ => {
            return Err(Error::config(
                "target",
                "give exactly one of --ring-file, --namespace with --service, or --target",
            ));
        }
    };
    if config.prefix.is_empty() {
        config.prefix = random_prefix();
    }
    config.validate()?;
    Ok(LoadgenCommand::Run(Box::new(LoadgenOptions {
        target,
        config,
        ring_wait,
        verify,
        json,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<LoadgenOptions, Error> {
        match parse_command(Args::new(args.iter().copied()))? {
            LoadgenCommand::Run(options) => Ok(*options),
            LoadgenCommand::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn a_ring_file_run_with_every_knob() {
        let o = run(&[
            "--ring-file",
            "/tmp/ring.json",
            "--sessions",
            "50",
            "--concurrency=8",
            "--requests",
            "1000",
            "--read-percent",
            "0",
            "--rate",
            "200",
            "--timeout",
            "2s",
            "--note-bytes",
            "32",
            "--prefix",
            "demo",
            "--key-distribution",
            "zipf:1.1",
            "--json",
            "--no-verify",
        ])
        .unwrap();
        assert!(matches!(
            o.target,
            TargetSpec::Ring(RingSourceConfig::File(_))
        ));
        assert_eq!(o.config.sessions, 50);
        assert_eq!(o.config.concurrency, 8);
        assert_eq!(o.config.stop, Stop::Requests(1000));
        assert_eq!(o.config.read_percent, 0);
        assert_eq!(o.config.rate, Some(200.0));
        assert_eq!(o.config.timeout, Duration::from_secs(2));
        assert_eq!(o.config.note_bytes, 32);
        assert_eq!(o.config.prefix, "demo");
        assert_eq!(
            o.config.keys,
            crate::loadgen::KeyDistribution::Zipf { s: 1.1 }
        );
        assert!(o.json && !o.verify);
    }

    #[test]
    fn kubernetes_and_direct_targets() {
        let o = run(&["--namespace", "shop", "--service", "ledger"]).unwrap();
        assert!(matches!(
            o.target,
            TargetSpec::Ring(RingSourceConfig::Kube { ref namespace, ref service, kubeconfig: None })
                if namespace == "shop" && service == "ledger"
        ));
        assert_eq!(o.config.stop, Stop::Duration(Duration::from_secs(10)));
        let o = run(&["--target", "http://lb:80", "--duration", "1m"]).unwrap();
        assert!(matches!(o.config.target, Target::Direct(ref u) if u == "http://lb:80"));
        assert_eq!(o.config.stop, Stop::Duration(Duration::from_secs(60)));
    }

    #[test]
    fn mistakes_are_refused() {
        for args in [
            &[][..],
            &["--ring-file", "r", "--target", "http://x"],
            &["--namespace", "n"],
            &["--ring-file", "r", "--duration", "1s", "--requests", "5"],
            &["--ring-file", "r", "--sessions", "0"],
            &["--ring-file", "r", "--concurrency", "100000"],
            &["--ring-file", "r", "--requests", "0"],
            &["--ring-file", "r", "--what"],
            &["--target", "ftp://x"],
            &["--ring-file", "r", "--key-distribution", "zipf:0"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
    }
}
