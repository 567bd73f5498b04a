//! `GET /healthz` (the process answers) and `GET /readyz` (it can take
//! work: not shutting down, and the queue backend answers in time).

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
