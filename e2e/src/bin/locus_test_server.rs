//! `locus-test-server`: a small HTTP server that cluster tests run as a pod.
//!
//! Listens on `0.0.0.0:$PORT` (default 8080):
//!
//! - `GET /` → `{"pod", "namespace", "ip"}` from `POD_NAME`, `POD_NAMESPACE`, `POD_IP`
//!   (set through `fieldRef` in test manifests);
//! - `GET /healthz` → 200;
//! - `GET /configmap/{name}` → reads that ConfigMap in the pod's namespace through the
//!   API server with the pod's own service account (kube-rs in-cluster configuration):
//!   200 and its `data`, or the API's status code and message;
//! - `GET /secrets` → tries to list Secrets in its namespace: the API's status code and
//!   message (403 under a Role that does not allow it).
//!
//! On SIGTERM it prints `received SIGTERM`, keeps serving for `$TERM_DELAY_MS`
//! milliseconds (default 0) and exits 0.

use std::io::Write as _;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

type Reply = (StatusCode, Json<Value>);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

async fn identity() -> Json<Value> {
    Json(json!({
        "pod": env("POD_NAME"),
        "namespace": env("POD_NAMESPACE"),
        "ip": env("POD_IP"),
    }))
}

fn api_error(e: &kube::Error) -> Reply {
    match e {
        kube::Error::Api(status) => (
            StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(
                json!({ "code": status.code, "reason": status.reason, "message": status.message }),
            ),
        ),
        other => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "code": 502, "message": other.to_string() })),
        ),
    }
}

async fn client() -> Result<kube::Client, Reply> {
    kube::Client::try_default().await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "code": 500, "message": format!("no Kubernetes client: {e}") })),
        )
    })
}

async fn configmap(Path(name): Path<String>) -> Reply {
    let client = match client().await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    match api.get(&name).await {
        Ok(cm) => (StatusCode::OK, Json(json!(cm.data.unwrap_or_default()))),
        Err(e) => api_error(&e),
    }
}

async fn secrets() -> Reply {
    let client = match client().await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let api: Api<Secret> = Api::default_namespaced(client);
    match api.list(&ListParams::default()).await {
        Ok(list) => (
            StatusCode::OK,
            Json(json!({ "code": 200, "count": list.items.len() })),
        ),
        Err(e) => api_error(&e),
    }
}

async fn sigterm_then_delay() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(e) => {
            eprintln!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "received SIGTERM");
    let _ = out.flush();
    drop(out);
    let delay: u64 = env("TERM_DELAY_MS").parse().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(delay)).await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let port: u16 = match std::env::var("PORT") {
        Err(_) => 8080,
        Ok(p) => {
            let Ok(port) = p.parse() else {
                eprintln!("locus-test-server: PORT={p:?} is not a port number");
                return std::process::ExitCode::from(2);
            };
            port
        }
    };
    let app = Router::new()
        .route("/", get(identity))
        .route("/healthz", get(|| async { "ok" }))
        .route("/configmap/{name}", get(configmap))
        .route("/secrets", get(secrets));
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("locus-test-server: cannot listen on 0.0.0.0:{port}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening on 0.0.0.0:{port}");
    let _ = std::io::stdout().flush();
    let served = tokio::select! {
        r = axum::serve(listener, app) => r,
        () = sigterm_then_delay() => Ok(()),
    };
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("locus-test-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
