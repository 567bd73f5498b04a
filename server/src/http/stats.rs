//! `GET /api/queue/stats`: depth per job type and priority by status,
//! counters, and the utilisation of this process's worker pools.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/queue/stats", get(stats))
}

/// Depth per job type and priority by state, lifetime counters, this
/// process's worker pools and WebSocket counters.
#[utoipa::path(get, path = "/api/queue/stats", tag = "operations",
    responses((status = 200, description = "`backend`, `job_types[]` (`job_type`, `priorities[]` with `priority, pending, queued, processing, retrying, failed`, `counters`), `workers`, `websocket`", body = Object),
        (status = 503, body = super::error::ErrorBody)))]
pub(super) async fn stats(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let types = st.queue.stats().await?;
    Ok(Json(json!({
        "backend": st.queue.backend(),
        "job_types": types,
        "workers": st.workers.as_ref().map(|w| w.utilisation()),
        "websocket": st.hub.stats(),
    })))
}
