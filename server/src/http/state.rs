//! What every handler can reach: the queue, results, settings, the hub and
//! notifier, metrics and the listener's gate.

use std::sync::Arc;

use docproc_queue::Queue;

use crate::app::App;
use crate::config::ServeConfig;
use crate::notify::{Hub, Notifier};
use crate::results::ResultStore;
use crate::worker::Pools;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The rules: submit, status, results, cancel, lists, dead jobs.
    pub app: App,
    /// The queue jobs go through.
    pub queue: Arc<dyn Queue>,
    /// Finished results.
    pub results: ResultStore,
    /// Settings.
    pub config: Arc<ServeConfig>,
    /// The local worker pools, when this process runs them (for stats).
    pub workers: Option<Arc<Pools>>,
    /// Status events for WebSocket subscribers.
    pub hub: Hub,
    /// Webhook and mail senders.
    pub notifier: Arc<Notifier>,
    /// Turns true when the server starts shutting down (WebSockets close).
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Counters and histograms of `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Upload rate per API key.
    pub upload_limiter: Arc<super::rate::RateLimiter>,
    /// The connection gate of the listener (open and refused counts).
    pub connections: Arc<docproc_broker::conn::Gate>,
}
