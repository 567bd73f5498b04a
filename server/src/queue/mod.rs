//! The queue seam: the one [`Queue`] trait the processing server runs on,
//! and its adapters, chosen by URL scheme with [`open`].
//!
//! # Adapters
//! | URL | Module | What it is |
//! |---|---|---|
//! | `rocksdb://PATH` | [`rocksdb`] | the broker engine in-process on RocksDB at `PATH` (default) |
//! | `memory://` | [`memory`] | the same engine on RocksDB's memory environment: nothing on disk |
//! | `grpc://HOST:PORT` | [`grpc`] | a remote `docproc broker` through the client library |
//! | `redis://HOST:PORT[/DB]` | [`redis`] | a Redis server, state changes as Lua scripts |
//! | `kafka://HOST:PORT[,…]` | `kafka` | a Kafka cluster (cargo feature `kafka`) |
//!
//! Every URL takes `retry_base_ms` and `retry_max_ms` (the [`RetryPolicy`]);
//! `rocksdb://` also takes `durability` (`sync`, `batch`, `batch:MS`, `none`).
//!
//! # Semantics every adapter keeps (checked by the conformance suite)
//! - Delivery is at-least-once: a job whose lease expires (its worker died
//!   or went silent past the job's timeout) is delivered again with
//!   `attempts + 1`; a job is never held by two workers at once.
//! - Within a job type, higher priorities are served first and jobs of one
//!   priority in publish order.
//! - A failed attempt is retried after a backoff while retries are left,
//!   then the job is `failed` with the last error. An expired lease counts
//!   as an attempt.
//! - Cancelling a waiting job removes it at once; cancelling a running job
//!   is reported to its worker through the lease, and the job ends
//!   `cancelled` when the worker gives it back.
//! - Watch streams deliver status changes in the order they happened.
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), docproc_server::queue::QueueError> {
//! use docproc_server::queue::{self, ConsumeOptions, JobStatus, NewJob, Priority};
//! use futures::StreamExt;
//! use serde_json::json;
//!
//! let q = queue::open("memory://").await?;
//! let job = NewJob::new("pdf_processing", json!({ "path": "a.pdf" })).priority(Priority::High);
//! let id = q.publish_one(job).await?;
//! let mut leases = q
//!     .consume(&["pdf_processing".into()], ConsumeOptions::worker("w1"))
//!     .await?;
//! let mut lease = leases.next().await.expect("a lease")?;
//! lease.progress(json!({ "pages_done": 1 })).await?;
//! lease.complete(json!({ "pages": 3 })).await?;
//! assert_eq!(q.get(&id).await?.status, JobStatus::Completed);
//! q.close().await;
//! # Ok(()) }
//! ```

pub mod brokered;
pub mod error;
pub mod grpc;
#[cfg(feature = "kafka")]
pub mod kafka;
mod lease;
pub mod memory;
pub mod model;
pub mod redis;
pub mod rocksdb;
mod url;

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use error::{QueueError, Result};
pub use lease::{Completion, Heartbeat, Lease, LeaseOps, RetryPolicy};
pub use model::{
    CancelOutcome, Counters, Job, JobEvent, JobId, JobPage, JobRecord, JobStatus, JobTypeStats,
    ListQuery, NewJob, Priority, PriorityDepth, WatchFilter,
};
pub use url::QueueUrl;

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
    fn fsync_latency(&self) -> Option<crate::metrics::Histogram> {
        None
    }

    /// When the backend's storage runs in this process (the embedded
    /// broker): turns `Some(reason)` once a write or sync failed and the
    /// storage refuses every later write. `None`: nothing here can fail
    /// that way (a remote backend's failures come back as errors).
    fn storage_failure(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        None
    }
}

/// A watch stream over a backend's broadcast of events, until `closed`
/// turns true: `pick` turns each item into what the watcher gets (`None`
/// skips it); a receiver that fell behind yields [`QueueError::Lagged`].
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

/// The name of the API key that submitted `job` (its payload's `owner`),
/// if any.
pub fn owner_of(job: &Job) -> Option<&str> {
    job.payload.get("owner").and_then(serde_json::Value::as_str)
}

/// Opens the queue a URL names. An unknown scheme, or one not built into
/// this binary, is an [`QueueError::InvalidUrl`].
pub async fn open(url: &str) -> Result<Arc<dyn Queue>> {
    let u = QueueUrl::parse(url)?;
    match u.scheme.as_str() {
        "rocksdb" => Ok(Arc::new(rocksdb::open_owned(&u).await?)),
        "memory" => Ok(Arc::new(memory::open(&u)?)),
        "grpc" | "grpcs" => Ok(Arc::new(grpc::connect(&u).await?)),
        "redis" => Ok(Arc::new(redis::open(&u).await?)),
        #[cfg(feature = "kafka")]
        "kafka" => Ok(Arc::new(kafka::open(&u).await?)),
        #[cfg(not(feature = "kafka"))]
        "kafka" => Err(u.invalid(format!(
            "the {} adapter is not part of this build",
            u.scheme
        ))),
        other => Err(u.invalid(format!(
            "unknown scheme {other:?}; use rocksdb://PATH, memory://, grpc://HOST:PORT, redis://HOST:PORT"
        ))),
    }
}
