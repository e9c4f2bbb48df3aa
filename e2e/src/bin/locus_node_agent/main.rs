//! `locus-node-agent`: the node of the local test cluster, running pods as processes.
//!
//! It registers a Node, keeps its Lease and Ready condition fresh, and runs every pod
//! bound to it as local processes, each pod in its own network namespace on the
//! cluster's bridge, with volumes bind-mounted in a private mount namespace, probes,
//! restarts, pod status and graceful deletion, as a kubelet would.
//!
//! ```text
//! locus-node-agent --kubeconfig PATH --node-name NAME --bridge NAME \
//!     --pod-cidr 10.213.N.0/24 --gateway 10.213.N.1 --service-cidr 10.96.0.0/16 \
//!     --images PATH --run-dir DIR [--max-restart-backoff-secs 10]
//! ```
//!
//! The images file maps container images to local executables (see `images.rs`).
//!
//! # The run directory
//!
//! ```text
//! <run-dir>/pods/<namespace>_<pod>_<uid>/
//!     <container>.log        stdout and stderr of every run of the container, appended
//!                            (lines starting "[locus-node-agent]" are the agent's notes,
//!                            e.g. a failed liveness probe)
//!     volumes/<volume>/      emptyDir, secret, configMap, downwardAPI, projected volumes
//!     serviceaccount/        token, ca.crt, namespace (when the agent mounts its own)
//! ```
//!
//! Logs stay after the pod is gone (tests read them); `volumes/` and `serviceaccount/`
//! are removed with the pod.
//!
//! The same binary also serves as the last step of every container start
//! (`locus-node-agent exec-container …`, see `exec.rs`).

mod agent;
mod container;
mod env;
mod exec;
mod flags;
mod images;
mod network;
mod node;
mod pod;
mod pods;
mod probe;
mod process;
mod resources;
mod status;
mod volumes;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("exec-container") {
        let message = match exec::parse(&args[1..]) {
            Ok(spec) => exec::run(&spec),
            Err(e) => e,
        };
        eprintln!("{message}");
        return ExitCode::from(127);
    }
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{}", flags::USAGE);
        return ExitCode::SUCCESS;
    }
    let flags = match flags::Flags::parse(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("locus-node-agent: {e}\n{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (ip, images) = match agent::check_host(&flags) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("locus-node-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("locus-node-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let agent = agent::build(flags, ip, images).await?;
        agent::run(agent).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("locus-node-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
