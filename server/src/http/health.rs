//! `GET /healthz` (the process answers), `GET /readyz` (it can take work:
//! not shutting down, and the queue backend answers in time) and
//! `GET /metrics` (Prometheus text format).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, AppState};

/// How long the queue may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn metrics(State(st): State<AppState>) -> Response {
    let queue = match tokio::time::timeout(PROBE_TIMEOUT, st.queue.stats()).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    };
    let snap = crate::metrics::Snapshot {
        queue,
        workers: st.workers.as_ref().map(|w| w.gauges()).unwrap_or_default(),
        fsync: st.queue.fsync_latency(),
        websockets: Some(st.hub.stats().connections as u64),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(&snap),
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(st): State<AppState>) -> Response {
    let unavailable = |code, message: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response()
    };
    if *st.closing.borrow() {
        return unavailable("draining", "the server is shutting down".into());
    }
    match tokio::time::timeout(PROBE_TIMEOUT, st.queue.stats()).await {
        Ok(Ok(_)) => {
            Json(json!({ "status": "ready", "backend": st.queue.backend() })).into_response()
        }
        Ok(Err(e)) => unavailable(
            "unavailable",
            format!("the queue backend does not answer: {e}"),
        ),
        Err(_) => unavailable(
            "unavailable",
            format!("the queue backend did not answer within {PROBE_TIMEOUT:?}"),
        ),
    }
}
