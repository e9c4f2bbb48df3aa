//! `locus-cluster`: runs the local Kubernetes cluster (control plane + node agent).
//!
//! ```text
//! locus-cluster up [--run-dir DIR] [--image NAME=PATH]... [--pods N] [--no-node] [--json] [--lifeline]
//! locus-cluster build
//! locus-cluster clean
//! ```
//!
//! `up` builds the control plane if it is not cached, starts it, prints how to use it and
//! keeps it up until Ctrl-C or SIGTERM (with `--lifeline`, also until its stdin closes: the
//! test harness holds that pipe). Stopping removes every process, pod network namespace,
//! the bridge, the bridge's iptables FORWARD rules and (unless it was given with `--run-dir`
//! or `LOCUS_KEEP` is set) the run directory.
//!
//! `--pods N` starts a node that admits at least `N` pods: beyond the 240 of the default /24
//! the cluster takes a wider pod range (at most 971 pods, the ports of one bridge).
//!
//! `clean` removes what clusters whose supervisor was killed left behind (processes, pod
//! namespaces, bridges, FORWARD rules; not their run directories), leaving running clusters
//! alone.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use locus_e2e::cluster::local::progress;
use locus_e2e::cluster::network;
use locus_e2e::cluster::{ClusterError, LocalCluster, LocalClusterConfig, random_suffix};

/// Workspace binaries the node can run as images `locus/<name>:dev` (binary `locus-<name>`).
const WORKSPACE_IMAGES: &[&str] = &["test-server", "ring-probe", "operator", "sample", "loadgen"];

const USAGE: &str = "usage: locus-cluster up [--run-dir DIR] [--image NAME=PATH]... [--pods N] [--no-node] [--json] [--lifeline]\n       locus-cluster build\n       locus-cluster clean";

struct Args {
    command: String,
    run_dir: Option<PathBuf>,
    images: Vec<(String, PathBuf)>,
    pod_prefix: u8,
    node: bool,
    json: bool,
    lifeline: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let command = it.next().ok_or_else(|| USAGE.to_owned())?;
    let mut args = Args {
        command,
        run_dir: None,
        images: Vec::new(),
        pod_prefix: network::DEFAULT_POD_PREFIX,
        node: true,
        json: false,
        lifeline: false,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--run-dir" => {
                args.run_dir = Some(it.next().ok_or("--run-dir needs a directory")?.into());
            }
            "--image" => {
                let v = it.next().ok_or("--image needs NAME=PATH")?;
                let (name, path) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--image {v}: expected NAME=PATH"))?;
                args.images.push((name.to_owned(), PathBuf::from(path)));
            }
            "--pods" => {
                let v = it.next().ok_or("--pods needs a number")?;
                let pods: u32 = v
                    .parse()
                    .map_err(|_| format!("--pods {v}: expected a number of pods"))?;
                args.pod_prefix = network::pod_prefix_for(pods).map_err(|e| e.to_string())?;
            }
            "--no-node" => args.node = false,
            "--json" => args.json = true,
            "--lifeline" => args.lifeline = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// Where the control-plane binaries are: `LOCUS_K8S_BIN`, or whatever `build.sh` builds
/// or finds cached.
fn control_plane_bins() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("LOCUS_K8S_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| ClusterError::Io {
            action: format!("run {}", script.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(ClusterError::Build(format!(
            "{} exited with {} (its messages are above)",
            script.display(),
            out.status
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| ClusterError::Build("build.sh printed no directory".into()))
}

fn own_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

fn report_error(json: bool, e: &dyn std::fmt::Display) {
    if json {
        println!("{}", serde_json::json!({ "error": e.to_string() }));
    }
    eprintln!("locus-cluster: {e}");
}

#[tokio::main]
async fn main() -> ExitCode {
    locus_e2e::support::init_tracing("warn,kube_client=off");
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match args.command.as_str() {
        "build" => match control_plane_bins() {
            Ok(dir) => {
                println!("{}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                report_error(false, &e);
                ExitCode::FAILURE
            }
        },
        "clean" => clean(),
        // Exit at once: the lifeline reader may still block on stdin (after a signal), and
        // the runtime would wait for it on shutdown.
        "up" => {
            let code = up(args).await;
            std::process::exit(i32::from(code != ExitCode::SUCCESS));
        }
        other => {
            eprintln!("unknown command {other}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn up(args: Args) -> ExitCode {
    let bin_dir = match control_plane_bins() {
        Ok(d) => d,
        Err(e) => {
            report_error(args.json, &e);
            return ExitCode::FAILURE;
        }
    };
    let temporary = args.run_dir.is_none();
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("locus-cluster-{}", random_suffix())));
    let here = own_dir();
    // Images of the workspace's own binaries: `locus/<name>:dev` runs `locus-<name>` from the
    // directory this binary was built into.
    let mut images: Vec<(String, PathBuf)> = WORKSPACE_IMAGES
        .iter()
        .map(|name| {
            (
                format!("locus/{name}:dev"),
                here.join(format!("locus-{name}")),
            )
        })
        .collect();
    // A second tag of the test server, for tests that change a pod's image in place.
    images.push((
        "locus/test-server:v2".to_owned(),
        here.join("locus-test-server"),
    ));
    images.push(("locus/sample:v2".to_owned(), here.join("locus-sample")));
    images.extend(args.images.iter().cloned());
    let config = LocalClusterConfig {
        bin_dir,
        run_dir: run_dir.clone(),
        node_agent: args.node.then(|| here.join("locus-node-agent")),
        images,
        node_name: "locus-node-1".into(),
        pod_prefix: args.pod_prefix,
    };
    progress(&format!("starting in {}", run_dir.display()));

    // Start, but give up (and clean up) on Ctrl-C or a closed lifeline meanwhile.
    let mut cluster = tokio::select! {
        r = LocalCluster::start(config) => match r {
            Ok(c) => c,
            Err(e) => {
                report_error(args.json, &e);
                cleanup_run_dir(&run_dir, temporary);
                return ExitCode::FAILURE;
            }
        },
        () = stop_requested(args.lifeline) => {
            progress("interrupted while starting; cleaning up");
            cleanup_run_dir(&run_dir, temporary);
            return ExitCode::FAILURE;
        }
    };

    let info = cluster.info().clone();
    if args.json {
        println!("{}", serde_json::json!({ "ready": info }));
    } else {
        let kubectl = info.bin_dir.join("kubectl");
        println!(
            "\nThe local cluster is up ({:.1}s).\n\n  export KUBECONFIG={}\n  export PATH={}:$PATH   # kubectl, helm\n  kubectl get nodes\n\nAPI server {}  pods on {} ({}, {} pods)\nLogs: {}/logs, pod logs: {}/pods\nPress Ctrl-C to stop and clean up.",
            info.start_seconds,
            info.kubeconfig.display(),
            kubectl.parent().unwrap_or(Path::new("")).display(),
            info.server,
            info.bridge,
            info.pod_cidr,
            info.pod_capacity,
            info.run_dir.display(),
            info.node_run_dir.display(),
        );
    }

    stop_requested(args.lifeline).await;
    progress("stopping");
    cluster.stop();
    cleanup_run_dir(&run_dir, temporary);
    progress("stopped");
    ExitCode::SUCCESS
}

/// `locus-cluster clean`: removes the leftovers of killed clusters and says what it removed.
fn clean() -> ExitCode {
    if !nix::unistd::Uid::effective().is_root() {
        report_error(false, &ClusterError::NotRoot);
        return ExitCode::FAILURE;
    }
    match network::clean_stale() {
        Ok(report) if report.is_empty() => {
            progress("nothing to clean: no leftovers of a stopped local cluster");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            for line in report {
                progress(&line);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_error(false, &e);
            ExitCode::FAILURE
        }
    }
}

fn cleanup_run_dir(dir: &Path, temporary: bool) {
    if temporary && std::env::var_os("LOCUS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Resolves on Ctrl-C, SIGTERM, or (with `lifeline`) when stdin reaches end of file.
async fn stop_requested(lifeline: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let stdin_closed = async {
        if lifeline {
            let _ = tokio::task::spawn_blocking(|| {
                let mut buf = [0u8; 64];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            })
            .await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = stdin_closed => {}
    }
}
