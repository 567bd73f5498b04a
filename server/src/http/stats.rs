//! `GET /api/queue/stats`: depth per job type and priority by status,
//! counters, and the utilisation of this process's worker pools.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use docproc_queue::JobTypeStats;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::state::AppState;
use crate::notify::HubStats;
use crate::worker::PoolUse;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/queue/stats", get(stats))
}

/// What the stats endpoint answers.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatsView {
    /// The queue backend: rocksdb, memory, grpc, redis, kafka or rabbitmq.
    backend: &'static str,
    /// Per job type: `job_type`, `priorities[]` with `priority, pending,
    /// queued, processing, retrying, failed` and, while jobs wait,
    /// `oldest_queued_at_ms` (when the oldest queued job was published, ms
    /// since the Unix epoch), and lifetime `counters`.
    #[schema(value_type = Vec<Object>)]
    job_types: Vec<JobTypeStats>,
    /// This process's worker pools by job type (`size`, `busy`); null
    /// without local workers.
    #[schema(value_type = Option<Object>)]
    workers: Option<BTreeMap<String, PoolUse>>,
    /// WebSocket `connections`, `last_event_id`, `oldest_event_id`,
    /// `slow_disconnects`.
    #[schema(value_type = Object)]
    websocket: HubStats,
}

/// Depth per job type and priority by state, lifetime counters, this
/// process's worker pools and WebSocket counters.
#[utoipa::path(get, path = "/api/queue/stats", tag = "operations",
    responses((status = 200, body = StatsView),
        (status = 503, body = super::error::ErrorBody)))]
pub(super) async fn stats(State(st): State<AppState>) -> Result<Json<StatsView>, ApiError> {
    Ok(Json(StatsView {
        backend: st.queue.backend(),
        job_types: st.queue.stats().await?,
        workers: st.workers.as_ref().map(|w| w.utilisation()),
        websocket: st.hub.stats(),
    }))
}
