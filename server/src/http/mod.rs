//! The HTTP API: one file per resource, each with its `router()`; shared
//! state; the error body `{"code","message"}` every failure answers with.

mod dead;
pub mod guard;
mod health;
mod jobs;
pub mod listen;
mod openapi;
pub mod tls;
mod ui;

pub(crate) use jobs::{split, split_names};
mod stats;
mod upload;

use std::sync::{Arc, OnceLock};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::config::ServeConfig;
use crate::notify::ws::WsState;
use crate::notify::{Hub, Notifier};
use crate::queue::{Queue, QueueError};
use crate::results::ResultStore;
use crate::worker::WorkerContext;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The queue jobs go through.
    pub queue: Arc<dyn Queue>,
    /// Finished results.
    pub results: ResultStore,
    /// Settings.
    pub config: Arc<ServeConfig>,
    /// The local worker pools, when this process runs them (for stats).
    pub workers: Option<Arc<WorkerContext>>,
    /// Status events for WebSocket subscribers.
    pub hub: Hub,
    /// Webhook and mail senders.
    pub notifier: Arc<Notifier>,
    /// Turns true when the server starts shutting down (WebSockets close).
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Counters and histograms of `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Upload rate per API key.
    pub upload_limiter: Arc<guard::RateLimiter>,
    /// The connection gate of the listener (open and refused counts).
    pub connections: Arc<docproc_broker::conn::Gate>,
}

impl axum::extract::FromRef<AppState> for WsState {
    fn from_ref(st: &AppState) -> Self {
        WsState {
            hub: st.hub.clone(),
            cfg: Arc::new(st.config.notify.ws.clone()),
            closing: st.closing.clone(),
        }
    }
}

/// The whole API as a router (tests call it without a socket).
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(upload::router(state.config.max_upload_bytes))
        .merge(jobs::router())
        .merge(dead::router())
        .merge(ui::router())
        .merge(openapi::router())
        .merge(stats::router())
        .merge(health::router())
        .route("/api/ws", axum::routing::get(crate::notify::ws::handler))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// What answers while the server starts: `/healthz` 200, everything else
/// 503 `starting`; once `ready` holds the API, every request goes to it.
pub fn front(ready: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback(front_door).with_state(ready)
}

async fn front_door(
    axum::extract::State(ready): axum::extract::State<Arc<OnceLock<Router>>>,
    req: axum::extract::Request,
) -> Response {
    use tower::ServiceExt as _;
    match ready.get() {
        Some(app) => match app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
        None if req.uri().path() == "/healthz" => {
            Json(serde_json::json!({ "status": "ok" })).into_response()
        }
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the server is starting: opening the queue",
        )
        .into_response(),
    }
}

/// An error answered as `{"code","message"}` with its status.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with a status, a stable code and a human message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable and machine-readable: `invalid_argument`, `not_found`,
    /// `unauthenticated`, `permission_denied`, `rate_limited`, …
    code: &'static str,
    /// For people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            code: self.code,
            message: self.message,
        });
        (self.status, body).into_response()
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let msg = e.to_string();
        match e {
            QueueError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", msg),
            QueueError::InvalidArgument(_) | QueueError::InvalidUrl { .. } => {
                Self::bad_request(msg)
            }
            QueueError::Conflict { .. } | QueueError::LeaseLost(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", msg)
            }
            QueueError::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg),
            QueueError::Unavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
            other => Self::internal(other),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}
