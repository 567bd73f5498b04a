//! The small HTTP listener of `docproc worker` and `docproc broker`
//! (`--metrics-listen`): `GET /metrics` in the Prometheus text format and
//! `GET /healthz`, with the same API keys as everything else (scope read).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use docproc_broker::auth::{Keys, Scope};
use tokio::net::TcpListener;

use crate::metrics::{Metrics, Snapshot};
use crate::worker::Pools;
use docproc_queue::Queue;

/// What the listener reports on.
#[derive(Clone)]
pub struct OpsState {
    /// Depth and counters come from here (and the fsync latency, embedded).
    pub queue: Arc<dyn Queue>,
    /// This process's pools, if it runs any.
    pub workers: Option<Arc<Pools>>,
    /// This process's own counters.
    pub metrics: Arc<Metrics>,
    /// Keys a scrape must present; empty: none needed.
    pub keys: Keys,
}

async fn metrics(State(st): State<OpsState>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(d) = st.keys.authorize(auth, Scope::Read) {
        let status = if d.is_forbidden() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        return (status, d.to_string()).into_response();
    }
    let queue = match tokio::time::timeout(Duration::from_secs(2), st.queue.stats()).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    };
    let snap = Snapshot {
        queue,
        workers: st.workers.as_ref().map(|w| w.gauges()).unwrap_or_default(),
        scaling: st.workers.as_ref().map(|w| w.scaling()).unwrap_or_default(),
        fsync: st.queue.fsync_latency(),
        now_ms: crate::time::now_ms(),
        websockets: None,
        connections: None,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(&snap),
    )
        .into_response()
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: OpsState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    let limits = crate::http::listen::HttpLimits::default();
    let gate = Arc::new(limits.gate());
    crate::http::listen::serve(listener, None, app, limits, 16 * 1024, gate, shutdown).await
}
