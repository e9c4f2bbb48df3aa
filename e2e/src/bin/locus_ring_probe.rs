//! `locus-ring-probe`: a minimal pod program for the operator's end-to-end tests (image
//! `locus/ring-probe:dev`), standing in for a service built on the Locus SDK.
//!
//! It watches its ring `ConfigMap` (`$LOCUS_RING_CONFIGMAP`, with the pod's own
//! credentials) and, for every newer ring version `V`, annotates its own pod the way the SDK
//! reports progress: `locus.dev/observed-ring-version = V`; `locus.dev/warmed-ring-version =
//! V` when the ring is in phase `warm` (it has nothing to copy); `locus.dev/drained-ring-version
//! = V` when it is in phase `switch` (nothing to hand over).
//!
//! HTTP on `$LOCUS_PORT` (else `$PORT`, else 8080):
//!
//! | request | effect |
//! |---|---|
//! | `GET /healthz` | 200, or 500 after `POST /fail` (a readiness-probe failure switch) |
//! | `POST /fail`, `POST /recover` | turn health checks off and on |
//! | `POST /stall`, `POST /unstall` | stop and resume progress reports (resuming reports the newest ring at once) |
//! | `GET /ring` | `{"version": V, "phase": "...", "reported": V}` as last seen |
//!
//! With `LOCUS_PROBE_STALLED=true` it starts stalled. On SIGTERM it keeps serving (and
//! reporting) for `LOCUS_PROBE_TERM_DELAY_MS` milliseconds (default 0), then exits 0.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

const OBSERVED: &str = "locus.dev/observed-ring-version";
const WARMED: &str = "locus.dev/warmed-ring-version";
const DRAINED: &str = "locus.dev/drained-ring-version";

#[derive(Default)]
struct Probe {
    failing: bool,
    stalled: bool,
    /// Newest ring seen: version and phase.
    ring: Option<(u64, String)>,
    /// Newest version reported on the pod.
    reported: Option<u64>,
}

#[derive(Clone)]
struct Shared {
    probe: Arc<Mutex<Probe>>,
    wake: Arc<Notify>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn healthz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    if shared.probe.lock().await.failing {
        (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn set(shared: &Shared, f: impl FnOnce(&mut Probe)) -> &'static str {
    f(&mut *shared.probe.lock().await);
    shared.wake.notify_one();
    "ok"
}

async fn ring(State(shared): State<Shared>) -> String {
    let probe = shared.probe.lock().await;
    json!({
        "version": probe.ring.as_ref().map(|r| r.0),
        "phase": probe.ring.as_ref().map(|r| r.1.clone()),
        "reported": probe.reported,
    })
    .to_string()
}

/// Reads version and phase from a ring `ConfigMap` (no full validation: the probe only needs
/// these two fields).
fn version_and_phase(config_map: &ConfigMap) -> Option<(u64, String)> {
    let text = config_map.data.as_ref()?.get("ring.json")?;
    let document: Value = serde_json::from_str(text).ok()?;
    Some((
        document.get("version")?.as_u64()?,
        document.get("phase")?.as_str()?.to_owned(),
    ))
}

/// Reports the newest ring on the pod whenever it changes (and reporting is not stalled).
async fn reporter(shared: Shared, pods: Api<Pod>, pod_name: String) {
    loop {
        let pending = {
            let probe = shared.probe.lock().await;
            match &probe.ring {
                Some((version, phase))
                    if !probe.stalled && probe.reported.is_none_or(|r| r < *version) =>
                {
                    Some((*version, phase.clone()))
                }
                _ => None,
            }
        };
        let Some((version, phase)) = pending else {
            shared.wake.notified().await;
            continue;
        };
        let mut annotations = serde_json::Map::new();
        annotations.insert(OBSERVED.into(), json!(version.to_string()));
        match phase.as_str() {
            "warm" => {
                annotations.insert(WARMED.into(), json!(version.to_string()));
            }
            "switch" => {
                annotations.insert(DRAINED.into(), json!(version.to_string()));
            }
            _ => {}
        }
        let patch = json!({ "metadata": { "annotations": annotations } });
        let params = PatchParams {
            field_manager: Some("locus-ring-probe".into()),
            ..PatchParams::default()
        };
        match pods.patch(&pod_name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                eprintln!("reported ring version {version} ({phase})");
                shared.probe.lock().await.reported = Some(version);
            }
            Err(error) => {
                eprintln!("could not report ring version {version}: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn watch_ring(shared: Shared, config_maps: Api<ConfigMap>, name: String) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(config_maps, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(item) = stream.next().await {
        match item {
            Ok(config_map) => {
                if let Some((version, phase)) = version_and_phase(&config_map) {
                    let mut probe = shared.probe.lock().await;
                    if probe.ring.as_ref().is_none_or(|(v, _)| *v < version) {
                        eprintln!("ring version {version} ({phase})");
                        probe.ring = Some((version, phase));
                        drop(probe);
                        shared.wake.notify_one();
                    }
                }
            }
            Err(error) => eprintln!("ring watch: {error}"),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let port: u16 = env("LOCUS_PORT")
        .or_else(|| env("PORT"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let (Some(pod_name), Some(namespace), Some(ring_map)) = (
        env("POD_NAME"),
        env("POD_NAMESPACE"),
        env("LOCUS_RING_CONFIGMAP"),
    ) else {
        eprintln!("locus-ring-probe needs POD_NAME, POD_NAMESPACE and LOCUS_RING_CONFIGMAP");
        return std::process::ExitCode::from(2);
    };
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("no API client: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shared = Shared {
        probe: Arc::new(Mutex::new(Probe {
            stalled: env("LOCUS_PROBE_STALLED").is_some_and(|v| v == "true"),
            ..Probe::default()
        })),
        wake: Arc::new(Notify::new()),
    };
    tokio::spawn(watch_ring(
        shared.clone(),
        Api::namespaced(client.clone(), &namespace),
        ring_map,
    ));
    tokio::spawn(reporter(
        shared.clone(),
        Api::namespaced(client, &namespace),
        pod_name,
    ));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/ring", get(ring))
        .route(
            "/fail",
            post(|State(s): State<Shared>| async move { set(&s, |p| p.failing = true).await }),
        )
        .route(
            "/recover",
            post(|State(s): State<Shared>| async move { set(&s, |p| p.failing = false).await }),
        )
        .route(
            "/stall",
            post(|State(s): State<Shared>| async move { set(&s, |p| p.stalled = true).await }),
        )
        .route(
            "/unstall",
            post(|State(s): State<Shared>| async move { set(&s, |p| p.stalled = false).await }),
        )
        .with_state(shared);
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on port {port}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("locus-ring-probe listening on port {port}");
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                eprintln!("cannot handle SIGTERM: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::select! {
        result = server => {
            let result = result.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(error) = result {
                eprintln!("server: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
        _ = terminate.recv() => {
            let delay = env("LOCUS_PROBE_TERM_DELAY_MS").and_then(|d| d.parse().ok()).unwrap_or(0);
            eprintln!("SIGTERM: exiting in {delay} ms");
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    std::process::ExitCode::SUCCESS
}
