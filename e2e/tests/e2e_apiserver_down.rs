//! Routing never waits on the API server: with the local cluster's kube-apiserver stopped
//! (SIGSTOP) for 30 s under load, the load generator keeps routing by its last ring and the
//! sample pods keep serving — no failed request, no lost write — and once the API server
//! runs again (SIGCONT) the service is still converged on the same ring.
//!
//! Only the API server of this test binary's own local cluster is stopped: it is found by
//! its run directory in `/proc/<pid>/cmdline`. On an external cluster (kind) the test says
//! it is skipped and passes.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a test failure"
)]

mod demo_support;

use std::path::Path;
use std::time::Duration;

use demo_support::*;
use locus_e2e::demo::{Change, Demo, Phase};
use locus_e2e::support::wait;
use locus_examples::loadgen::Stop;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The pids of `kube-apiserver` processes whose command line names `run_dir`.
fn apiserver_pids(run_dir: &Path) -> Vec<i32> {
    let run_dir = run_dir.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_apiserver = args.first().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n == "kube-apiserver")
        });
        if is_apiserver && args.iter().any(|a| a.contains(&run_dir)) {
            pids.push(pid);
        }
    }
    pids
}

/// Continues the stopped process when dropped, so a failing test does not leave the API
/// server stopped for the other tests.
struct Stopped(Pid);

impl Stopped {
    fn new(pid: i32) -> Self {
        let pid = Pid::from_raw(pid);
        kill(pid, Signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// True if the process is stopped (state `T` in `/proc/<pid>/stat`).
fn is_stopped(pid: Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T")
}

#[tokio::test]
async fn routing_continues_while_the_api_server_is_stopped() {
    let env = setup("e2e-apidown").await;
    if env.external {
        println!("SKIPPED: the API server of an external cluster cannot be stopped from here");
        return;
    }
    let options = env.options(3);
    let mut demo = Demo::deploy(&env.target, &options, &say).await.unwrap();
    let steady = demo
        .run_phase(
            &Phase::new("steady", Change::Steady(Duration::from_secs(3))),
            &say,
        )
        .await
        .unwrap()
        .clone();
    assert_eq!(
        steady.summary.errors, 0,
        "{:?}",
        steady.summary.errors_by_kind
    );
    let ring_before = demo.ring().await.unwrap().unwrap();

    let pids = apiserver_pids(&env.cluster.info().run_dir);
    assert_eq!(pids.len(), 1, "exactly this cluster's API server: {pids:?}");
    let stopped = Stopped::new(pids[0]);
    // The signal stops every thread of the process, not at once.
    let pid = stopped.0;
    wait::until(
        Duration::from_secs(5),
        "kube-apiserver stopped",
        || async move { Ok::<_, String>(is_stopped(pid).then_some(())) },
    )
    .await
    .unwrap();
    say("kube-apiserver stopped (SIGSTOP) for 30 s under load");
    let during = demo
        .load()
        .phase("apiserver-stopped", Stop::Duration(Duration::from_secs(30)))
        .await;
    assert!(
        is_stopped(stopped.0),
        "still stopped at the end of the phase"
    );
    drop(stopped);
    say("kube-apiserver continued (SIGCONT)");
    println!("{}", during.table());

    assert!(during.requests > 1000, "load ran: {}", during.requests);
    assert_eq!(
        during.errors, 0,
        "failed requests: {:?}",
        during.errors_by_kind
    );
    assert_eq!(during.not_owner, 0, "every answer from the owner");
    assert!(during.is_consistent(), "{}", during.to_json_line());

    // Everything acknowledged, before and during the outage, is there.
    let verification = demo.load().verify().await;
    assert_eq!(
        verification.lost_writes, 0,
        "{:?}",
        verification.lost_examples
    );
    assert_eq!(verification.sessions_unreadable, 0);
    assert_eq!(verification.stale_sessions, 0);

    // The cluster comes back to the same converged service: no transition was started by
    // the outage (pods stayed Ready, the ring did not move).
    demo.converged().await.unwrap();
    let ring_after = demo.ring().await.unwrap().unwrap();
    assert_eq!(
        locus_e2e::support::service::shards_moved(&ring_before, &ring_after),
        0,
        "no shard moved: ring v{} → v{}",
        ring_before.version(),
        ring_after.version()
    );
}
