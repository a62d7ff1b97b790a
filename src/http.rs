//! `/metrics`, `/healthz` and `/readyz` on one port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::health::{Health, Probe};
use crate::metrics::Metrics;

/// Binds `address` (before anything else starts, so a taken port fails the process).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    Ok(listener)
}

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, health: Health) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health)).await
}

fn router(metrics: Arc<Metrics>, health: Health) -> Router {
    let live = health.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move { ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body) }
            }),
        )
        .route("/healthz", get(move || answer(live.liveness(Instant::now()))))
        .route("/readyz", get(move || answer(health.readiness(Instant::now()))))
}

async fn answer(probe: Probe) -> axum::response::Response {
    let status = if probe.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, probe.reason).into_response()
}
