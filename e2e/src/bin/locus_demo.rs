//! `locus-demo`: what `make demo` runs (see `locus_e2e::demo`).
//!
//! On the cluster `$KUBECONFIG` points to (helm from `--helm`, else `PATH`), or else on a
//! local cluster started for the run (`locus-cluster up`, gone when this process ends):
//! installs the operator with its Helm chart, deploys the sample session ledger, runs the
//! load generator through steady load, a scale-up, a rolling update and a scale-down, and
//! prints a table and one JSON line per phase. Ctrl-C stops it; on an external cluster the
//! demo namespace and the operator's release are removed then.
//!
//! Exit status: 0 when no acknowledged write was lost and every phase converged, 3
//! otherwise, 1 when the demo could not run, 2 for bad flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use locus_e2e::cluster::Cluster;
use locus_e2e::demo::{self, DemoOptions, DemoTarget};

const USAGE: &str = "\
usage: locus-demo [--sessions N] [--concurrency N] [--rate R|0] [--steady DURATION_S]
                  [--helm PATH] [--keep] [--no-install]

  --sessions N      sessions of the load (default 1000)
  --concurrency N   requests in flight (default 16)
  --rate R          requests per second, 0 for unpaced (default 200)
  --steady S        seconds of the steady phase (default 15)
  --helm PATH       helm binary for an external cluster (default: helm on PATH)
  --no-install      the operator already runs (do not helm install it)
  --keep            leave everything in place at the end and wait for Ctrl-C

Uses $KUBECONFIG's cluster if set, else starts the local cluster (root needed).";

struct Flags {
    options: DemoOptions,
    helm: Option<PathBuf>,
    keep: bool,
}

fn parse_flags() -> Result<Flags, String> {
    let mut flags = Flags {
        options: DemoOptions::standard(),
        helm: None,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--sessions" => {
                flags.options.sessions = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?;
            }
            "--concurrency" => {
                flags.options.concurrency =
                    value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?;
            }
            "--rate" => {
                let rate: f64 = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?;
                flags.options.rate = (rate > 0.0).then_some(rate);
            }
            "--steady" => {
                let seconds: u64 = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?;
                for phase in &mut flags.options.phases {
                    if let demo::Change::Steady(d) = &mut phase.change {
                        *d = Duration::from_secs(seconds.max(1));
                    }
                }
            }
            "--helm" => flags.helm = Some(PathBuf::from(value(&arg)?)),
            "--no-install" => flags.options.operator = None,
            "--keep" => flags.keep = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(flags)
}

fn say(line: &str) {
    println!("[demo] {line}");
}

#[tokio::main]
async fn main() -> ExitCode {
    locus_e2e::support::init_tracing("warn");
    let flags = match parse_flags() {
        Ok(flags) => flags,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let external = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty());
    let target = if let Some(kubeconfig) = external.clone() {
        say(&format!(
            "using the cluster KUBECONFIG points to ({})",
            PathBuf::from(&kubeconfig).display()
        ));
        DemoTarget {
            kubeconfig: kubeconfig.into(),
            helm: flags.helm.clone().unwrap_or_else(|| PathBuf::from("helm")),
        }
    } else {
        say("starting the local cluster: control plane from Go modules + the Locus node agent");
        let started = std::time::Instant::now();
        match Cluster::shared().await {
            Ok(cluster) => {
                say(&format!(
                    "local cluster up in {:.1} s (export KUBECONFIG={} to look around)",
                    started.elapsed().as_secs_f64(),
                    cluster.kubeconfig().display()
                ));
                DemoTarget {
                    kubeconfig: cluster.kubeconfig().to_owned(),
                    helm: cluster.tool("helm"),
                }
            }
            Err(error) => {
                eprintln!("[demo] the local cluster did not start: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    let options = flags.options;
    let outcome = tokio::select! {
        outcome = demo::run(&target, &options, &say) => Some(outcome),
        _ = tokio::signal::ctrl_c() => None,
    };
    let code = match outcome {
        None => {
            say("interrupted");
            ExitCode::from(130)
        }
        Some(Err(error)) => {
            eprintln!("[demo] failed: {error}");
            ExitCode::FAILURE
        }
        Some(Ok(report)) => {
            println!();
            print!("{}", report.table());
            println!();
            for phase in &report.phases {
                println!("{}", phase.json_line());
            }
            println!("{}", report.total.to_json_line());
            let lost = report
                .total
                .verification
                .as_ref()
                .map_or(0, |v| v.lost_writes + v.stale_sessions);
            if lost == 0 && report.phases.iter().all(|p| !p.timed_out) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
    };
    if flags.keep {
        say("leaving everything in place; Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
    }
    if external.is_some() {
        say(&format!(
            "cleaning up: namespace {} and the operator's release",
            options.namespace
        ));
        for problem in demo::cleanup(&target, &options) {
            eprintln!("[demo] cleanup: {problem}");
        }
    } else {
        say("stopping the local cluster");
    }
    code
}
