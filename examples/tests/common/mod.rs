//! Helpers shared by the examples' integration tests: a temporary
//! directory, a ring over sample pods on 127.0.0.x written as `ring.json`,
//! sample pods served over real HTTP, and PostgreSQL started by `pg.sh`.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: not every test binary uses every helper; a failed unwrap is a failed test"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use locus::ring::{
    PlanRequest, Pod, Ring, RingDocument, RingParts, ShardCount, Slot, SlotState, Transition, plan,
};
use locus_examples::ring_source::RingSourceConfig;
use locus_examples::sample::{SampleConfig, SampleService};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const NAMESPACE: &str = "default";
pub const SERVICE: &str = "ledger";
pub const SHARDS: u32 = 256;
pub const WAIT: Duration = Duration::from_secs(10);

/// An HTTP client that goes straight to the pods, whatever the proxy
/// environment says.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "locus-ex-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Listeners on 127.0.0.2, .3, … (one per pod), so every pod has its own
/// address as in a cluster.
pub async fn listeners(count: u8) -> Vec<TcpListener> {
    let mut out = Vec::new();
    for i in 0..count {
        out.push(
            TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2 + i), 0))
                .await
                .unwrap(),
        );
    }
    out
}

pub fn pod_name(slot: u16) -> String {
    format!("{SERVICE}-{slot}-test")
}

/// A stable ring over `addresses` (slot `i` = `addresses[i]`), planned by
/// the operator's planner.
pub fn ring(version: u64, addresses: &[SocketAddr]) -> Ring {
    let slots: Vec<u16> = (0..addresses.len() as u16).collect();
    let planned = plan(&PlanRequest {
        shards: ShardCount::new(SHARDS).unwrap(),
        vnodes: 16,
        ..PlanRequest::new(NAMESPACE, SERVICE, &slots)
    })
    .unwrap();
    Ring::new(RingParts {
        namespace: NAMESPACE.into(),
        service: SERVICE.into(),
        version,
        shards: ShardCount::new(SHARDS).unwrap(),
        vnodes: 16,
        slots: addresses
            .iter()
            .enumerate()
            .map(|(i, address)| Slot {
                index: i as u16,
                pod: Pod {
                    name: pod_name(i as u16),
                    uid: format!("uid-{i}"),
                    address: *address,
                },
                state: SlotState::Active,
                successor: None,
                predecessor: None,
            })
            .collect(),
        current: planned.assignment,
        transition: Transition::Stable,
    })
    .unwrap()
}

/// Writes `ring` to `dir/ring.json` (atomically: temporary file, rename).
pub fn write_ring(dir: &Path, ring: &Ring) -> PathBuf {
    let path = dir.join("ring.json");
    let tmp = dir.join("ring.json.tmp");
    std::fs::write(&tmp, RingDocument::to_json(ring).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A sample pod served over HTTP until stopped.
pub struct SamplePod {
    pub name: String,
    pub address: SocketAddr,
    pub service: Option<SampleService>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl SamplePod {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn service(&self) -> &SampleService {
        self.service.as_ref().unwrap()
    }

    /// Stops serving (requests in flight finish), then shuts the service
    /// down (writes changed sessions back).
    pub async fn stop(mut self) -> locus_examples::sample::ShutdownReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        self.service.take().unwrap().shutdown().await
    }
}

/// Starts a sample pod named `name` on `listener` with `config`.
pub async fn serve(listener: TcpListener, config: SampleConfig) -> SamplePod {
    let address = listener.local_addr().unwrap();
    let name = config.pod.clone();
    let service = SampleService::new(config).await.unwrap();
    let app = service.router();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    SamplePod {
        name,
        address,
        service: Some(service),
        stop: Some(stop),
        server: Some(server),
    }
}

/// Starts `count` memory-only sample pods reading `dir/ring.json`, which is
/// written first (version 1) over their addresses. `configure` may change
/// each pod's configuration.
pub async fn start_ring_pods(
    dir: &Path,
    count: u8,
    configure: impl Fn(&mut SampleConfig),
) -> (Vec<SamplePod>, Ring, PathBuf) {
    let listeners = listeners(count).await;
    let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let ring = ring(1, &addresses);
    let path = write_ring(dir, &ring);
    let mut pods = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut config =
            SampleConfig::new(pod_name(i as u16), RingSourceConfig::File(path.clone()));
        configure(&mut config);
        pods.push(serve(listener, config).await);
    }
    (pods, ring, path)
}

/// PostgreSQL started by `tests/pg.sh` for one test; stopped on drop.
pub struct Postgres {
    dir: TempDir,
    pub url: String,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg.sh")
}

/// Starts a private PostgreSQL, or says why it cannot (`Err(reason)`).
/// With `LOCUS_REQUIRE_POSTGRES=1` a failure to start fails the test
/// instead of skipping it.
pub fn postgres() -> Result<Postgres, String> {
    let dir = TempDir::new("pg");
    let output = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(dir.path())
        .output()
        .map_err(|e| format!("cannot run pg.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = format!(
            "pg.sh start failed ({}): {}",
            output.status,
            stderr.lines().last().unwrap_or("no message")
        );
        assert!(
            !std::env::var("LOCUS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1"),
            "{reason}\n{stderr}"
        );
        return Err(reason);
    }
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .ok_or_else(|| format!("pg.sh printed no DATABASE_URL: {stdout}"))?
        .to_owned();
    Ok(Postgres { dir, url })
}

/// Runs `postgres()` or prints why the test is skipped and returns `None`.
pub fn postgres_or_skip(test: &str) -> Option<Postgres> {
    match postgres() {
        Ok(pg) => Some(pg),
        Err(reason) => {
            eprintln!("SKIPPED {test}: PostgreSQL is not available: {reason}");
            println!("SKIPPED {test}: PostgreSQL is not available: {reason}");
            None
        }
    }
}
