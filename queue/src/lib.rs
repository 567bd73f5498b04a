//! The queue seam: the one [`Queue`] trait the processing server runs on,
//! and its adapters, chosen by URL scheme with [`open`].
//!
//! # Adapters
//! | URL | Module | What it is |
//! |---|---|---|
//! | `rocksdb://PATH` | [`rocksdb`] | the broker engine in-process on RocksDB at `PATH` (default) |
//! | `memory://` | [`memory`] | the same engine on RocksDB's memory environment: nothing on disk |
//! | `grpc://HOST:PORT` | [`grpc`] | a remote `docproc broker` through the client library |
//! | `redis://HOST:PORT[/DB]` | `redis` | a Redis server, state changes as Lua scripts (cargo feature `redis`) |
//! | `kafka://HOST:PORT[,…]` | `kafka` | a Kafka cluster (cargo feature `kafka`) |
//! | `amqp://USER:PASS@HOST:PORT/VHOST` | `rabbitmq` | RabbitMQ: quorum queues, a status stream (cargo feature `rabbitmq`) |
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
//! # async fn main() -> Result<(), docproc_queue::QueueError> {
//! use docproc_queue::{self as queue, ConsumeOptions, JobStatus, NewJob, Priority};
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
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod api;
pub mod brokered;
pub mod error;
pub mod grpc;
#[cfg(feature = "kafka")]
pub mod kafka;
mod lease;
pub mod memory;
pub mod model;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
pub mod rocksdb;
#[cfg(any(feature = "kafka", feature = "rabbitmq"))]
mod statuslog;
mod url;

use std::sync::Arc;

pub use api::{ConsumeOptions, EventStream, LeaseStream, Queue, SyncLatency};
pub use error::{QueueError, Result};
pub use lease::{Completion, Heartbeat, Lease, LeaseOps, RetryPolicy};
pub use model::{
    CancelOutcome, Counters, Job, JobEvent, JobId, JobPage, JobRecord, JobStatus, JobTypeStats,
    ListQuery, NewJob, Priority, PriorityDepth, WatchFilter, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT,
};
pub use url::QueueUrl;

/// Opens the queue a URL names. An unknown scheme, or one not built into
/// this binary, is an [`QueueError::InvalidUrl`].
pub async fn open(url: &str) -> Result<Arc<dyn Queue>> {
    let u = QueueUrl::parse(url)?;
    match u.scheme.as_str() {
        "rocksdb" => Ok(Arc::new(rocksdb::open_owned(&u).await?)),
        "memory" => Ok(Arc::new(memory::open(&u)?)),
        "grpc" | "grpcs" => Ok(Arc::new(grpc::connect(&u).await?)),
        #[cfg(feature = "redis")]
        "redis" => Ok(Arc::new(redis::open(&u).await?)),
        #[cfg(feature = "kafka")]
        "kafka" => Ok(Arc::new(kafka::open(&u).await?)),
        #[cfg(feature = "rabbitmq")]
        "amqp" => Ok(Arc::new(rabbitmq::open(&u).await?)),
        #[cfg(not(feature = "redis"))]
        "redis" => Err(not_built(&u, "redis")),
        #[cfg(not(feature = "kafka"))]
        "kafka" => Err(not_built(&u, "kafka")),
        #[cfg(not(feature = "rabbitmq"))]
        "amqp" => Err(not_built(&u, "rabbitmq")),
        other => Err(u.invalid(format!(
            "unknown scheme {other:?}; use rocksdb://PATH, memory://, grpcs://HOST:PORT, grpc://HOST:PORT, redis://HOST:PORT, kafka://HOST:PORT or amqp://HOST:PORT"
        ))),
    }
}

/// The error for an adapter this binary was built without.
#[cfg(not(all(feature = "redis", feature = "kafka", feature = "rabbitmq")))]
fn not_built(u: &QueueUrl, feature: &str) -> QueueError {
    u.invalid(format!(
        "the {}:// adapter is not part of this build (cargo feature `{feature}`)",
        u.scheme
    ))
}
