//! The admin HTTP server: `/livez` (the process answers), `/readyz` (200 while the dependencies
//! that gate traffic are up and the service is not draining; the body lists every check,
//! gating or not) and `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::{metrics::Metrics, readiness::Readiness};

#[derive(Clone)]
struct AdminState {
    readiness: Arc<Readiness>,
    metrics: Metrics,
}

pub(crate) fn router(readiness: Arc<Readiness>, metrics: Metrics) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let code = if state.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, state.readiness.detail())
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.render() {
        Ok(body) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "metrics could not be encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
