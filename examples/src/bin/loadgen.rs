//! `locus-loadgen`: load on the sample, routed by the ring (see
//! `locus_examples::loadgen` and `examples/README.md`). A thin wrapper over
//! [`LoadGenerator`]: open the ring source, run phases (SIGUSR1 starts the
//! next), read every session back, print summaries (tables, or JSON lines
//! with `--json`; the last line is the `total`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use locus::{Metrics, RingSource as _};
use locus_examples::Error;
use locus_examples::args::Args;
use locus_examples::loadgen::options::{
    LoadgenCommand, LoadgenOptions, TargetSpec, USAGE, parse_command,
};
use locus_examples::loadgen::{LoadGenerator, Stop, Summary, Target};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match parse_command(Args::from_env()) {
        Ok(LoadgenCommand::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(LoadgenCommand::Run(options)) => match run(*options).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(3),
            Err(error) => {
                eprintln!("locus-loadgen: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("locus-loadgen: {error}\n(see locus-loadgen --help)");
            ExitCode::from(2)
        }
    }
}

fn print(summary: &Summary, json: bool) {
    if json {
        println!("{}", summary.to_json_line());
    } else {
        println!("{}", summary.table());
    }
}

/// Runs the load; `Ok(false)` if an invariant was broken.
async fn run(options: LoadgenOptions) -> Result<bool, Error> {
    let LoadgenOptions {
        target,
        mut config,
        ring_wait,
        verify,
        json,
    } = options;
    let metrics = Metrics::new();
    // Keeps the ring source running for the whole run.
    let _source = match target {
        TargetSpec::Ring(ring) => {
            let source = ring.open(&metrics).await?;
            let watch = source.watch();
            if watch.wait_for_ring(ring_wait).await.is_none() {
                return Err(Error::config(
                    "ring",
                    format!("no ring from {} within {ring_wait:?}", source.describe()),
                ));
            }
            config.target = Target::Ring(watch);
            Some(source)
        }
        TargetSpec::Direct(url) => {
            config.target = Target::Direct(url);
            None
        }
    };
    let stop = config.stop;
    let mut load = LoadGenerator::new(config)?;
    let mut next_phase = signal(SignalKind::user_defined1()).map_err(Error::Serve)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Serve)?;
    let started = Instant::now();
    let quit = AtomicBool::new(false);
    for phase in 1u32.. {
        let remaining = match stop {
            Stop::Duration(d) => Stop::Duration(d.saturating_sub(started.elapsed())),
            Stop::Requests(n) => Stop::Requests(n.saturating_sub(load.requests_sent())),
        };
        if matches!(remaining, Stop::Duration(d) if d.is_zero())
            || remaining == Stop::Requests(0)
            || quit.load(Ordering::SeqCst)
        {
            break;
        }
        let interrupt = async {
            tokio::select! {
                _ = next_phase.recv() => {}
                _ = terminate.recv() => quit.store(true, Ordering::SeqCst),
                _ = tokio::signal::ctrl_c() => quit.store(true, Ordering::SeqCst),
            }
        };
        let summary = load
            .phase_until(&format!("phase-{phase}"), remaining, interrupt)
            .await;
        print(&summary, json);
    }
    let verification = if verify {
        Some(load.verify().await)
    } else {
        None
    };
    let total = load.total("total", verification);
    print(&total, json);
    Ok(total.is_consistent())
}
