//! The HTTP API: one file per resource, each with its `router()`, put
//! together here; the shared state ([`AppState`]) and the error body
//! `{"code","message"}` every failure answers with ([`ApiError`]).

mod dead;
mod error;
pub mod guard;
mod health;
mod jobs;
pub mod listen;
mod openapi;
pub mod rate;
mod state;
mod stats;
pub mod tls;
mod ui;
mod upload;
mod ws;

pub use error::{ApiError, ErrorBody};
pub(crate) use jobs::split;
pub use state::AppState;
pub use upload::read_upload;

use std::sync::{Arc, OnceLock};

use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

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
        .route("/api/ws", axum::routing::get(ws::handler))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .fallback(|| async { ApiError::NoRoute })
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
        None if req.uri().path() == "/healthz" => Json(health::Probe::ALIVE).into_response(),
        None => ApiError::Starting.into_response(),
    }
}
