//! `locus-sample`'s flags and environment variables.
//!
//! Every flag has an environment variable (the flag wins); in a pod the
//! operator sets `POD_NAME`, `POD_NAMESPACE`, `LOCUS_SERVICE`,
//! `LOCUS_RING_CONFIGMAP` and `LOCUS_PORT`, so the sample needs no flag
//! there. See [`USAGE`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use locus::Mode;
use locus::ring::RingDocument;
use locus::server::session::ShutdownIntent;
use locus::store::Limits;

use super::handoff::{DEFAULT_COORDINATION_WAIT, HandoffOptions, ProgressTarget, SecretSource};
use super::{DEFAULT_MAX_EVENT_BYTES, DEFAULT_SHUTDOWN_TIMEOUT, SampleConfig, SampleMode};
use crate::Error;
use crate::args::{Args, parse, parse_duration};
use crate::ledger::LedgerRules;
use crate::postgres::PgConfig;
use crate::ring_source::{RingSourceConfig, service_of_config_map};

/// The help text.
pub const USAGE: &str = "\
locus-sample: a session ledger served by the pod that owns each session (Locus SDK).

usage: locus-sample [flags]          (each flag also reads the environment variable shown)

  --listen ADDR             listen address             LOCUS_SAMPLE_LISTEN (default 0.0.0.0:$LOCUS_PORT, else 0.0.0.0:8080)
  --pod NAME                this pod's name in the ring POD_NAME
  --ring-file PATH          read the ring from a file   LOCUS_RING_FILE
                            (else the ring ConfigMap: POD_NAMESPACE + LOCUS_RING_CONFIGMAP [+ LOCUS_SERVICE])
  --postgres URL            write sessions back to PostgreSQL   DATABASE_URL
  --pg-pool N               PostgreSQL connections      LOCUS_SAMPLE_PG_POOL (default 8)
  --stateless               keep nothing in memory: every request goes to PostgreSQL   LOCUS_SAMPLE_STATELESS=true
  --test-stall              fault injection: appends wait x-sample-stall-ms after admission   LOCUS_SAMPLE_TEST_STALL=true
  --pg-timeout DURATION     stateless: longest PostgreSQL time per request   LOCUS_SAMPLE_PG_TIMEOUT (default 5s)
  --ownership MODE          forward | redirect (421) for keys owned elsewhere   LOCUS_SAMPLE_OWNERSHIP (default forward)
  --max-sessions N          resident sessions           LOCUS_SAMPLE_MAX_SESSIONS (default 100000)
  --max-session-bytes N     bytes per session           LOCUS_SAMPLE_MAX_SESSION_BYTES (default 262144)
  --max-total-bytes N       bytes of all sessions       LOCUS_SAMPLE_MAX_TOTAL_BYTES (default 268435456)
  --memory-limit N          the container's memory in bytes: the store's bounds fit inside it
                            (locus::store::MemoryBudget)   LOCUS_MEMORY_LIMIT (set by the operator from resources.limits.memory)
  --max-pending-updates N   queued appends per session  LOCUS_SAMPLE_MAX_PENDING_UPDATES (default 32)
  --idle-timeout DURATION   passivate sessions idle this long   LOCUS_SAMPLE_IDLE_TIMEOUT (default 5m)
  --max-event-bytes N       largest request body        LOCUS_SAMPLE_MAX_EVENT_BYTES (default 4096)
  --recent-events N         events kept verbatim per session   LOCUS_SAMPLE_RECENT_EVENTS (default 16)
  --handoff-secret-file PATH  take part in transitions (handoff endpoints, driver, drain)
                            with this shared secret      LOCUS_HANDOFF_SECRET_FILE (set by the operator)
  --snapshot-dir DIR        fast restarts: snapshot on SIGTERM, restore at start   LOCUS_SNAPSHOT_DIR
  --shutdown-intent WHAT    with a snapshot dir, why SIGTERM comes: restart (snapshot) | retire (hand over)
                            | auto (in Kubernetes: the pod's deletionTimestamp tells)   LOCUS_SAMPLE_SHUTDOWN_INTENT (default auto)
  --coordination-wait DURATION  on SIGTERM, wait this long for the operator to retire the pod
                            before handing sessions over alone   LOCUS_SAMPLE_COORDINATION_WAIT (default 15s)
  --shutdown-timeout DURATION   longest hand-over on SIGTERM   LOCUS_SAMPLE_SHUTDOWN_TIMEOUT (default 25s)
  --load-report-interval DURATION  time between the pod's per-shard load reports (its annotation
                            locus.dev/shard-load; 0: none)   LOCUS_LOAD_REPORT_INTERVAL (default 15s)
  --help                    this text

Durations: 500ms, 30s, 5m, 1h. Logs: RUST_LOG (default info).";

/// The flags and the variable each falls back to.
const FLAGS: &[(&str, &str)] = &[
    ("--listen", "LOCUS_SAMPLE_LISTEN"),
    ("--pod", "POD_NAME"),
    ("--ring-file", "LOCUS_RING_FILE"),
    ("--postgres", "DATABASE_URL"),
    ("--pg-pool", "LOCUS_SAMPLE_PG_POOL"),
    ("--pg-timeout", "LOCUS_SAMPLE_PG_TIMEOUT"),
    ("--ownership", "LOCUS_SAMPLE_OWNERSHIP"),
    ("--max-sessions", "LOCUS_SAMPLE_MAX_SESSIONS"),
    ("--max-session-bytes", "LOCUS_SAMPLE_MAX_SESSION_BYTES"),
    ("--max-total-bytes", "LOCUS_SAMPLE_MAX_TOTAL_BYTES"),
    ("--memory-limit", "LOCUS_MEMORY_LIMIT"),
    ("--max-pending-updates", "LOCUS_SAMPLE_MAX_PENDING_UPDATES"),
    ("--idle-timeout", "LOCUS_SAMPLE_IDLE_TIMEOUT"),
    ("--max-event-bytes", "LOCUS_SAMPLE_MAX_EVENT_BYTES"),
    ("--recent-events", "LOCUS_SAMPLE_RECENT_EVENTS"),
    ("--handoff-secret-file", "LOCUS_HANDOFF_SECRET_FILE"),
    ("--snapshot-dir", "LOCUS_SNAPSHOT_DIR"),
    ("--shutdown-intent", "LOCUS_SAMPLE_SHUTDOWN_INTENT"),
    ("--coordination-wait", "LOCUS_SAMPLE_COORDINATION_WAIT"),
    ("--shutdown-timeout", "LOCUS_SAMPLE_SHUTDOWN_TIMEOUT"),
    ("--load-report-interval", "LOCUS_LOAD_REPORT_INTERVAL"),
];

/// What the command line asks for.
#[derive(Debug)]
pub enum SampleCommand {
    /// Print [`USAGE`].
    Help,
    /// Serve.
    Serve {
        /// The service's configuration.
        config: Box<SampleConfig>,
        /// Where to listen.
        listen: SocketAddr,
        /// Longest hand-over on SIGTERM.
        shutdown_timeout: Duration,
    },
}

/// Largest `--recent-events`.
const MAX_RECENT_EVENTS: usize = 1024;
/// Largest `--max-event-bytes`.
const MAX_EVENT_BYTES: usize = 1 << 20;
/// Largest `--pg-pool`.
const MAX_PG_POOL: usize = 256;

/// The flags given, with the environment behind them.
struct Values<E> {
    given: BTreeMap<&'static str, String>,
    env: E,
}

impl<E: Fn(&str) -> Option<String>> Values<E> {
    /// The value of `flag` (or of its variable) with the name it came from.
    fn get(&self, flag: &'static str) -> Option<(String, String)> {
        if let Some(v) = self.given.get(flag) {
            return Some((flag.to_owned(), v.clone()));
        }
        let var = FLAGS.iter().find(|(name, _)| *name == flag)?.1;
        (self.env)(var).map(|v| (var.to_owned(), v))
    }

    fn number(&self, flag: &'static str, default: usize) -> Result<usize, Error> {
        self.get(flag)
            .map_or(Ok(default), |(what, v)| parse(&what, &v))
    }

    fn duration(&self, flag: &'static str, default: Duration) -> Result<Duration, Error> {
        self.get(flag).map_or(Ok(default), |(what, v)| {
            parse_duration(&v).map_err(|reason| Error::config(what, reason))
        })
    }

    fn listen(&self) -> Result<SocketAddr, Error> {
        if let Some((what, v)) = self.get("--listen") {
            return parse(&what, &v);
        }
        let port = (self.env)("LOCUS_PORT").map_or(Ok(8080), |p| parse::<u16>("LOCUS_PORT", &p))?;
        Ok(SocketAddr::from(([0, 0, 0, 0], port)))
    }

    fn mode(&self, stateless: bool) -> Result<SampleMode, Error> {
        let pool_size = self.number("--pg-pool", 8)?;
        if !(1..=MAX_PG_POOL).contains(&pool_size) {
            return Err(Error::config(
                "--pg-pool",
                format!("must be 1 to {MAX_PG_POOL}"),
            ));
        }
        let postgres = self.get("--postgres").map(|(_, url)| PgConfig {
            pool_size,
            ..PgConfig::new(url)
        });
        if !stateless {
            return Ok(SampleMode::InMemory { postgres });
        }
        let Some(postgres) = postgres else {
            return Err(Error::config(
                "--stateless",
                "needs PostgreSQL (--postgres or DATABASE_URL)",
            ));
        };
        Ok(SampleMode::Stateless {
            postgres,
            timeout: self.duration("--pg-timeout", Duration::from_secs(5))?,
        })
    }

    fn ring(&self) -> Result<Option<RingSourceConfig>, Error> {
        if let Some((_, path)) = self.get("--ring-file") {
            return Ok(Some(RingSourceConfig::File(PathBuf::from(path))));
        }
        let (Some(namespace), Some(config_map)) = (
            (self.env)("POD_NAMESPACE"),
            (self.env)("LOCUS_RING_CONFIGMAP"),
        ) else {
            return Ok(None);
        };
        let service = if let Some(service) = (self.env)("LOCUS_SERVICE") {
            let expected = RingDocument::config_map_name(&service);
            if expected != config_map {
                return Err(Error::config(
                    "LOCUS_SERVICE / LOCUS_RING_CONFIGMAP",
                    format!("the ring of service {service:?} is {expected:?}, not {config_map:?}"),
                ));
            }
            service
        } else {
            service_of_config_map(&config_map)
                .ok_or_else(|| {
                    Error::config(
                        "LOCUS_RING_CONFIGMAP",
                        format!("{config_map:?} is not named <service>-ring"),
                    )
                })?
                .to_owned()
        };
        Ok(Some(RingSourceConfig::Kube {
            namespace,
            service,
            kubeconfig: None,
        }))
    }

    /// `--shutdown-intent`: `None` for auto (the pod object tells).
    fn shutdown_intent(&self) -> Result<Option<ShutdownIntent>, Error> {
        match self.get("--shutdown-intent") {
            None => Ok(None),
            Some((what, v)) => match v.as_str() {
                "auto" => Ok(None),
                "restart" => Ok(Some(ShutdownIntent::Restart)),
                "retire" => Ok(Some(ShutdownIntent::Retire)),
                other => Err(Error::config(
                    what,
                    format!("{other:?}: expected auto, restart or retire"),
                )),
            },
        }
    }

    fn ownership(&self) -> Result<Mode, Error> {
        match self.get("--ownership") {
            None => Ok(Mode::Forward),
            Some((what, v)) => match v.as_str() {
                "forward" => Ok(Mode::Forward),
                "redirect" => Ok(Mode::Redirect421),
                other => Err(Error::config(
                    what,
                    format!("{other:?}: expected forward or redirect"),
                )),
            },
        }
    }

    /// The handoff driver's options: on when a secret file is given.
    /// Progress goes to the pod's annotations when the ring comes from the
    /// `ConfigMap` (the operator runs the pod).
    fn handoff(
        &self,
        ring: Option<&RingSourceConfig>,
        stateless: bool,
    ) -> Result<Option<HandoffOptions>, Error> {
        let Some((_, secret_file)) = self
            .get("--handoff-secret-file")
            .filter(|(_, f)| !f.is_empty())
        else {
            return Ok(None);
        };
        if stateless {
            // Nothing is kept in memory: nothing to hand over.
            return Ok(None);
        }
        let progress = match ring {
            Some(RingSourceConfig::Kube {
                namespace,
                kubeconfig,
                ..
            }) => ProgressTarget::Kube {
                namespace: namespace.clone(),
                kubeconfig: kubeconfig.clone(),
            },
            _ => ProgressTarget::None,
        };
        Ok(Some(HandoffOptions {
            progress,
            snapshot_dir: self
                .get("--snapshot-dir")
                .map(|(_, dir)| PathBuf::from(dir))
                .filter(|dir| !dir.as_os_str().is_empty()),
            coordination_wait: self.duration("--coordination-wait", DEFAULT_COORDINATION_WAIT)?,
            shutdown_intent: self.shutdown_intent()?,
            load_report_interval: self
                .get("--load-report-interval")
                .map(|_| self.duration("--load-report-interval", Duration::ZERO))
                .transpose()?,
            ..HandoffOptions::new(SecretSource::File(PathBuf::from(secret_file)))
        }))
    }

    fn limits(&self) -> Result<Limits, Error> {
        let defaults = Limits::default();
        let limits = Limits::builder()
            .max_sessions(self.number("--max-sessions", defaults.max_sessions())?)
            .max_session_bytes(self.number("--max-session-bytes", 256 << 10)?)
            .max_total_bytes(self.number("--max-total-bytes", defaults.max_total_bytes())?)
            .max_pending_updates(
                self.number("--max-pending-updates", defaults.max_pending_updates())?,
            )
            .idle_timeout(self.duration("--idle-timeout", defaults.idle_timeout())?);
        let limits = match self.get("--memory-limit") {
            Some((what, v)) => limits.within_memory(parse(&what, &v)?),
            None => limits,
        };
        Ok(limits.build()?)
    }
}

/// Reads the flags in `args`, falling back to `env` for each.
pub fn parse_command(
    mut args: Args,
    env: impl Fn(&str) -> Option<String>,
) -> Result<SampleCommand, Error> {
    let mut given: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut stateless_flag = false;
    let mut stall_flag = false;
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--help" | "-h" => return Ok(SampleCommand::Help),
            "--stateless" => stateless_flag = true,
            "--test-stall" => stall_flag = true,
            other => {
                let Some((name, _)) = FLAGS.iter().find(|(name, _)| *name == other) else {
                    return Err(Error::config(other, "unknown flag (see --help)"));
                };
                given.insert(name, args.text(name)?);
            }
        }
    }
    let stateless = stateless_flag || env("LOCUS_SAMPLE_STATELESS").is_some_and(|v| v == "true");
    let test_stall = stall_flag || env("LOCUS_SAMPLE_TEST_STALL").is_some_and(|v| v == "true");
    let values = Values { given, env };
    let listen = values.listen()?;
    let mode = values.mode(stateless)?;
    let ring = values.ring()?;
    if ring.is_none() && !stateless {
        return Err(Error::config(
            "ring source",
            "give --ring-file, or run in Kubernetes (POD_NAMESPACE and LOCUS_RING_CONFIGMAP), or use --stateless",
        ));
    }
    let pod = match values.get("--pod") {
        Some((_, pod)) => pod,
        None if stateless => (values.env)("HOSTNAME").unwrap_or_else(|| "locus-sample".to_owned()),
        None => return Err(Error::config("--pod", "required (or POD_NAME)")),
    };
    let recent_events = values.number("--recent-events", LedgerRules::default().recent_events)?;
    if recent_events > MAX_RECENT_EVENTS {
        return Err(Error::config(
            "--recent-events",
            format!("at most {MAX_RECENT_EVENTS}"),
        ));
    }
    let max_event_bytes = values.number("--max-event-bytes", DEFAULT_MAX_EVENT_BYTES)?;
    if !(64..=MAX_EVENT_BYTES).contains(&max_event_bytes) {
        return Err(Error::config(
            "--max-event-bytes",
            format!("must be 64 to {MAX_EVENT_BYTES}"),
        ));
    }
    let handoff = values.handoff(ring.as_ref(), stateless)?;
    let shutdown_timeout = values.duration("--shutdown-timeout", DEFAULT_SHUTDOWN_TIMEOUT)?;
    Ok(SampleCommand::Serve {
        config: Box::new(SampleConfig {
            pod,
            mode,
            ring,
            limits: values.limits()?,
            rules: LedgerRules {
                recent_events,
                ..LedgerRules::default()
            },
            max_event_bytes,
            ownership: values.ownership()?,
            handoff,
            test_stall,
        }),
        listen,
        shutdown_timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn serve(args: &[&str], env: &[(&str, &str)]) -> Result<(SampleConfig, SocketAddr), Error> {
        match parse_command(Args::new(args.iter().copied()), env_of(env))? {
            SampleCommand::Serve { config, listen, .. } => Ok((*config, listen)),
            SampleCommand::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn in_a_pod_the_operator_environment_is_enough() {
        let (config, listen) = serve(
            &[],
            &[
                ("POD_NAME", "ledger-0-abcde"),
                ("POD_NAMESPACE", "shop"),
                ("LOCUS_SERVICE", "ledger"),
                ("LOCUS_RING_CONFIGMAP", "ledger-ring"),
                ("LOCUS_PORT", "9000"),
                ("DATABASE_URL", "postgres://u@db/ledger"),
            ],
        )
        .unwrap();
        assert_eq!(listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.pod, "ledger-0-abcde");
        assert!(matches!(
            config.ring,
            Some(RingSourceConfig::Kube { ref namespace, ref service, kubeconfig: None })
                if namespace == "shop" && service == "ledger"
        ));
        assert!(matches!(
            config.mode,
            SampleMode::InMemory { postgres: Some(ref pg) } if pg.url == "postgres://u@db/ledger" && pg.pool_size == 8
        ));
        assert_eq!(config.limits.max_session_bytes(), 256 << 10);
        assert_eq!(config.ownership, Mode::Forward);
        assert!(config.handoff.is_none(), "no secret, no handoff");
    }

    #[test]
    fn the_operators_memory_limit_bounds_the_store() {
        let ring = ["--ring-file", "ring.json", "--pod", "p-0"];
        let (config, _) = serve(&ring, &[("LOCUS_MEMORY_LIMIT", "134217728")]).unwrap();
        assert_eq!(config.limits.max_total_bytes(), 64 << 20);
        assert_eq!(config.limits.max_sessions(), 32_768);
        let (config, _) = serve(&ring, &[]).unwrap();
        assert_eq!(config.limits.max_total_bytes(), 256 << 20, "no limit given");
        let flag = [
            "--ring-file",
            "r.json",
            "--pod",
            "p-0",
            "--memory-limit",
            "8589934592",
        ];
        let (config, _) = serve(&flag, &[("LOCUS_MEMORY_LIMIT", "134217728")]).unwrap();
        assert_eq!(
            config.limits.max_total_bytes(),
            256 << 20,
            "the flag wins over the operator's variable"
        );
        let bad = [
            "--ring-file",
            "r.json",
            "--pod",
            "p-0",
            "--memory-limit",
            "lots",
        ];
        assert!(serve(&bad, &[]).is_err());
    }

    #[test]
    fn the_operator_handoff_environment_turns_the_driver_on() {
        let (config, _) = serve(
            &[],
            &[
                ("POD_NAME", "ledger-0-abcde"),
                ("POD_NAMESPACE", "shop"),
                ("LOCUS_SERVICE", "ledger"),
                ("LOCUS_RING_CONFIGMAP", "ledger-ring"),
                ("LOCUS_HANDOFF_SECRET_FILE", "/var/run/locus/handoff/key"),
                ("LOCUS_SNAPSHOT_DIR", "/var/run/locus/snapshot"),
                ("LOCUS_SAMPLE_COORDINATION_WAIT", "3s"),
                ("LOCUS_LOAD_REPORT_INTERVAL", "2s"),
            ],
        )
        .unwrap();
        let handoff = config.handoff.unwrap();
        assert!(
            matches!(handoff.secret, SecretSource::File(ref f) if f == Path::new("/var/run/locus/handoff/key"))
        );
        assert!(matches!(
            handoff.progress,
            ProgressTarget::Kube { ref namespace, kubeconfig: None } if namespace == "shop"
        ));
        assert_eq!(
            handoff.snapshot_dir.as_deref(),
            Some(Path::new("/var/run/locus/snapshot"))
        );
        assert_eq!(handoff.coordination_wait, Duration::from_secs(3));
        assert_eq!(handoff.load_report_interval, Some(Duration::from_secs(2)));
        assert_eq!(handoff.shutdown_intent, None, "auto: the pod tells");
        // A ring file: the driver runs, nobody to report progress to.
        let (config, _) = serve(
            &[
                "--ring-file",
                "r",
                "--pod",
                "a",
                "--handoff-secret-file",
                "k",
            ],
            &[],
        )
        .unwrap();
        let handoff = config.handoff.unwrap();
        assert!(matches!(handoff.progress, ProgressTarget::None));
        assert!(handoff.snapshot_dir.is_none());
        // Outside Kubernetes the caller says why SIGTERM comes.
        for (given, expected) in [
            ("restart", Some(ShutdownIntent::Restart)),
            ("retire", Some(ShutdownIntent::Retire)),
            ("auto", None),
        ] {
            let (config, _) = serve(
                &[
                    "--ring-file",
                    "r",
                    "--pod",
                    "a",
                    "--handoff-secret-file",
                    "k",
                ],
                &[("LOCUS_SAMPLE_SHUTDOWN_INTENT", given)],
            )
            .unwrap();
            assert_eq!(config.handoff.unwrap().shutdown_intent, expected, "{given}");
        }
        let refused = serve(
            &[
                "--ring-file",
                "r",
                "--pod",
                "a",
                "--handoff-secret-file",
                "k",
                "--shutdown-intent",
                "later",
            ],
            &[],
        );
        assert!(refused.is_err());
        match parse_command(
            Args::new(["--ring-file", "r", "--pod", "a", "--shutdown-timeout", "7s"]),
            env_of(&[]),
        )
        .unwrap()
        {
            SampleCommand::Serve {
                shutdown_timeout, ..
            } => assert_eq!(shutdown_timeout, Duration::from_secs(7)),
            SampleCommand::Help => panic!("unexpected help"),
        }
    }

    #[test]
    fn the_test_stall_is_off_unless_asked_for() {
        let ring = ["--ring-file", "/tmp/ring.json", "--pod=a"];
        assert!(!serve(&ring, &[]).unwrap().0.test_stall);
        let with_flag = [&ring[..], &["--test-stall"]].concat();
        assert!(serve(&with_flag, &[]).unwrap().0.test_stall);
        let by_env = serve(&ring, &[("LOCUS_SAMPLE_TEST_STALL", "true")]).unwrap();
        assert!(by_env.0.test_stall);
        let other = serve(&ring, &[("LOCUS_SAMPLE_TEST_STALL", "yes")]).unwrap();
        assert!(!other.0.test_stall, "only \"true\" turns it on");
    }

    #[test]
    fn flags_win_over_the_environment() {
        let (config, listen) = serve(
            &[
                "--ring-file",
                "/tmp/ring.json",
                "--pod=a",
                "--listen",
                "127.0.0.2:7000",
                "--max-sessions",
                "10",
                "--idle-timeout",
                "30s",
                "--ownership",
                "redirect",
            ],
            &[("POD_NAME", "b"), ("LOCUS_SAMPLE_MAX_SESSIONS", "99")],
        )
        .unwrap();
        assert_eq!(config.pod, "a");
        assert_eq!(listen, "127.0.0.2:7000".parse().unwrap());
        assert_eq!(config.limits.max_sessions(), 10);
        assert_eq!(config.limits.idle_timeout(), Duration::from_secs(30));
        assert_eq!(config.ownership, Mode::Redirect421);
        assert!(matches!(config.ring, Some(RingSourceConfig::File(_))));
        assert!(matches!(
            config.mode,
            SampleMode::InMemory { postgres: None }
        ));
    }

    #[test]
    fn stateless_needs_postgres_but_no_ring() {
        assert!(serve(&["--stateless"], &[]).is_err());
        let (config, _) = serve(&["--stateless", "--postgres", "host=/tmp"], &[]).unwrap();
        assert!(config.ring.is_none());
        assert!(matches!(config.mode, SampleMode::Stateless { .. }));
    }

    #[test]
    fn mistakes_are_refused_by_name() {
        let error = |args: &[&str], env: &[(&str, &str)]| serve(args, env).unwrap_err().to_string();
        assert!(error(&[], &[("POD_NAME", "a")]).contains("ring source"));
        assert!(error(&["--ring-file", "r"], &[]).contains("--pod"));
        assert!(error(&["--bogus"], &[]).contains("--bogus"));
        assert!(
            error(
                &["--ring-file", "r", "--pod", "a", "--max-sessions", "0"],
                &[]
            )
            .contains("max_sessions")
        );
        assert!(
            error(&["--ring-file", "r", "--pod", "a", "--pg-pool", "0"], &[]).contains("--pg-pool")
        );
        assert!(
            error(
                &[],
                &[
                    ("POD_NAME", "a"),
                    ("POD_NAMESPACE", "n"),
                    ("LOCUS_SERVICE", "x"),
                    ("LOCUS_RING_CONFIGMAP", "y-ring")
                ]
            )
            .contains("LOCUS_SERVICE")
        );
        assert!(
            error(
                &["--ring-file", "r", "--pod", "a"],
                &[("LOCUS_SAMPLE_MAX_SESSIONS", "many")]
            )
            .contains("LOCUS_SAMPLE_MAX_SESSIONS")
        );
        assert!(matches!(
            parse_command(Args::new(["--help"]), env_of(&[])),
            Ok(SampleCommand::Help)
        ));
    }
}
