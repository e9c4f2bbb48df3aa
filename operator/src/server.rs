//! The operator's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the
//! process runs) and `/readyz` (it reached the API server: a leader running its controller,
//! or a standby taking part in the election).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Shared state of the endpoints.
#[derive(Clone, Debug)]
pub struct Health {
    /// The metrics served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` answers.
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The router of the three endpoints.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Binds `addr`; the returned future serves until dropped. Binding happens before it returns,
/// so a port conflict is reported at once.
pub async fn bind(
    addr: SocketAddr,
    health: Health,
) -> Result<(SocketAddr, impl Future<Output = ()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Serve { addr, source })?;
    let serve = async move {
        if let Err(error) = axum::serve(listener, router(health)).await {
            tracing::warn!(%error, "metrics server stopped");
        }
    };
    Ok((local, serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_answer_over_http() {
        let health = Health {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let (addr, serve) = bind("127.0.0.1:0".parse().unwrap(), health.clone())
            .await
            .unwrap();
        let server = tokio::spawn(serve);
        let get = |path: &str| {
            let url = format!("http://{addr}{path}");
            async move {
                let response = reqwest::get(url).await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
        assert_eq!(get("/readyz").await.0, 503);
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz").await.0, 200);
        health.metrics.write("pods", "apply");
        let (status, body) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("locus_operator_writes_total"), "{body}");
        server.abort();
    }
}
