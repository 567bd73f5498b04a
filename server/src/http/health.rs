//! `GET /healthz` (the process answers), `GET /readyz` (it can take work:
//! not shutting down, and the queue backend answers in time) and
//! `GET /metrics` (Prometheus text format).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use super::state::AppState;

/// How long the queue may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Prometheus text exposition: queue depth, job counters, job duration
/// and queue-wait histograms, worker utilisation, webhook outcomes, HTTP
/// requests, the embedded broker's fsync latency.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let queue = match tokio::time::timeout(PROBE_TIMEOUT, st.queue.stats()).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    };
    let snap = crate::metrics::Snapshot {
        queue,
        workers: st.workers.as_ref().map(|w| w.gauges()).unwrap_or_default(),
        scaling: st.workers.as_ref().map(|w| w.scaling()).unwrap_or_default(),
        fsync: st.queue.fsync_latency(),
        now_ms: crate::time::now_ms(),
        websockets: Some(st.hub.stats().connections as u64),
        connections: Some((st.connections.open() as u64, st.connections.rejected())),
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

/// What the probes answer when all is well.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Probe {
    /// `ok` (alive) or `ready`.
    status: &'static str,
    /// The queue backend (ready only).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'static str>,
}

impl Probe {
    /// The liveness answer.
    pub(crate) const ALIVE: Probe = Probe {
        status: "ok",
        backend: None,
    };
}

/// Alive: 200 whenever the process answers. No key needed.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Probe)))]
pub(super) async fn healthz() -> Json<Probe> {
    Json(Probe::ALIVE)
}

/// Ready: 200 with the backend, 503 while draining, once the embedded
/// queue's storage failed, or when the queue backend does not answer
/// within 2 s. No key needed.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Probe),
        (status = 503, description = "`draining`, `storage_failed` or `unavailable`", body = super::error::ErrorBody)))]
pub(super) async fn readyz(State(st): State<AppState>) -> Response {
    // A failed store also shuts the server down: say why first.
    if let Some(reason) = st.queue.storage_failure().and_then(|f| f.borrow().clone()) {
        return ApiError::StorageFailed(reason).into_response();
    }
    if *st.closing.borrow() {
        return ApiError::Draining("the server is shutting down").into_response();
    }
    match tokio::time::timeout(PROBE_TIMEOUT, st.queue.stats()).await {
        Ok(Ok(_)) => Json(Probe {
            status: "ready",
            backend: Some(st.queue.backend()),
        })
        .into_response(),
        Ok(Err(e)) => {
            ApiError::Unavailable(format!("the queue backend does not answer: {e}")).into_response()
        }
        Err(_) => ApiError::Unavailable(format!(
            "the queue backend did not answer within {PROBE_TIMEOUT:?}"
        ))
        .into_response(),
    }
}
