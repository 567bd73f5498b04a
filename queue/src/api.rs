//! The seam itself: the [`Queue`] trait every adapter implements, how a
//! worker consumes ([`ConsumeOptions`]), the stream types, and the watch
//! stream over a broadcast that the Redis and Kafka adapters share.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::{QueueError, Result};
use crate::lease::Lease;
use crate::model::{
    CancelOutcome, JobEvent, JobId, JobPage, JobRecord, JobTypeStats, ListQuery, NewJob,
    WatchFilter,
};

/// Latency of a backend's fsyncs: cumulative bucket counts (seconds, as
/// Prometheus histograms have them), their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncLatency {
    /// Upper bounds of the buckets, in seconds, ascending.
    pub bounds: &'static [f64],
    /// Syncs that took at most each bound (cumulative).
    pub counts: Vec<u64>,
    /// Seconds spent in all syncs.
    pub sum: f64,
    /// Syncs observed.
    pub count: u64,
}

/// Leases as workers may take them.
pub type LeaseStream = BoxStream<'static, Result<Lease>>;
/// Status events; a [`QueueError::Lagged`] item says events were dropped
/// and the stream goes on.
pub type EventStream = BoxStream<'static, Result<JobEvent>>;

/// How a worker consumes.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Recorded as the worker of the jobs it takes. Default `worker-PID-RANDOM`.
    pub worker_id: String,
    /// Jobs leased ahead of the one being worked on, per job type for remote
    /// brokers. Their lease clocks run while they wait, so keep it small.
    /// Default 1.
    pub prefetch: usize,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            worker_id: format!(
                "worker-{}-{:04x}",
                std::process::id(),
                rand::random::<u16>()
            ),
            prefetch: 1,
        }
    }
}

impl ConsumeOptions {
    /// Defaults with this worker id.
    pub fn worker(id: impl Into<String>) -> Self {
        Self {
            worker_id: id.into(),
            ..Self::default()
        }
    }
}

/// A job queue as the processing server needs it. Object-safe: the server
/// holds an `Arc<dyn Queue>` and never knows the backend.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The backend's name (`rocksdb`, `memory`, `grpc`, …).
    fn backend(&self) -> &'static str;

    /// Publishes jobs; answers their ids in order once the backend has
    /// accepted them durably (as durable as the backend is configured).
    /// The batch is validated whole first.
    async fn publish(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>>;

    /// Publishes one job.
    async fn publish_one(&self, job: NewJob) -> Result<JobId> {
        self.publish(vec![job])
            .await?
            .pop()
            .ok_or_else(|| QueueError::Backend("publish answered no id".into()))
    }

    /// Leases jobs of these types as they become ready, highest priority
    /// first within a type; types take turns. The stream ends when the
    /// queue closes.
    async fn consume(&self, job_types: &[String], opts: ConsumeOptions) -> Result<LeaseStream>;

    /// Everything known about a job.
    async fn get(&self, id: &JobId) -> Result<JobRecord>;

    /// Cancels a waiting job at once, or asks its worker to stop. A final
    /// job answers [`QueueError::Conflict`].
    async fn cancel(&self, id: &JobId) -> Result<CancelOutcome>;

    /// A page of jobs, newest first.
    async fn list(&self, query: &ListQuery) -> Result<JobPage>;

    /// Depth by priority and status, and counters, per job type.
    async fn stats(&self) -> Result<Vec<JobTypeStats>>;

    /// Status events from now on, filtered.
    async fn watch(&self, filter: WatchFilter) -> Result<EventStream>;

    /// Stops consumers and releases the backend (for the embedded broker:
    /// writes everything and closes the database). Idempotent.
    async fn close(&self);

    /// Latency of the backend's fsyncs, when it runs in this process.
    fn fsync_latency(&self) -> Option<SyncLatency> {
        None
    }

    /// Turns `Some(reason)` once the queue can do no more work and the
    /// process should stop (to be started again by its supervisor): the
    /// embedded broker's storage after a failed write or sync, or an
    /// adapter's connection it does not re-establish (`amqp://`). `None`:
    /// nothing here fails that way (the other remote backends reconnect, and
    /// their failures come back as errors).
    fn storage_failure(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        None
    }
}

/// A watch stream over a backend's broadcast of events, until `closed`
/// turns true: `pick` turns each item into what the watcher gets (`None`
/// skips it); a receiver that fell behind yields [`QueueError::Lagged`].
#[cfg(any(feature = "redis", feature = "kafka", feature = "rabbitmq"))]
pub(crate) fn broadcast_watch<T, F>(
    rx: tokio::sync::broadcast::Receiver<T>,
    closed: tokio::sync::watch::Receiver<bool>,
    pick: F,
) -> EventStream
where
    T: Clone + Send + 'static,
    F: FnMut(T) -> Option<Result<JobEvent>> + Send + 'static,
{
    use futures::StreamExt;
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold(
        (rx, closed, pick),
        |(mut rx, mut closed, mut pick)| async move {
            loop {
                let got = tokio::select! {
                    r = rx.recv() => r,
                    _ = closed.wait_for(|c| *c) => return None,
                };
                let item = match got {
                    Ok(v) => match pick(v) {
                        Some(item) => item,
                        None => continue,
                    },
                    Err(RecvError::Lagged(n)) => Err(QueueError::Lagged(n)),
                    Err(RecvError::Closed) => return None,
                };
                return Some((item, (rx, closed, pick)));
            }
        },
    )
    .boxed()
}
