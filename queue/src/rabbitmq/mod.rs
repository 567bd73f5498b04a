//! `amqp://USER:PASS@HOST:PORT/VHOST`: the job queue on RabbitMQ (built
//! with the `rabbitmq` cargo feature). RabbitMQ has queues and per-message
//! acks but no job status, so the rest is built on its own primitives:
//!
//! - a durable **quorum queue** per job type and priority,
//!   `PREFIX.TYPE.pN` (N = 0 low … 3 urgent); every publish waits for the
//!   broker's **publisher confirm** (a quorum queue confirms once a majority
//!   has the message on disk);
//! - workers **pull** (`basic.get`) from the most urgent queue of a type
//!   down, so priority order is exact and no job waits in a client buffer
//!   with its lease clock running; a message stays unacknowledged until its
//!   job is finished, failed or handed on, so a worker whose connection
//!   dies has its job redelivered at once by RabbitMQ, and the next holder
//!   counts that delivery as a lost attempt;
//! - retries and scheduled jobs wait in **delay buckets**: a quorum queue
//!   per delay (rounded up by at most 1/8) with that message TTL,
//!   dead-lettering at least once through the default exchange back to the
//!   job queue the message was addressed to (no plugin); a job due later
//!   than the longest bucket (1 h) goes round again;
//! - job status, results and cancel markers are records in the
//!   `PREFIX.status` **stream**, which every process reads from its start
//!   into a local view (get, list, stats, watch); it keeps records for
//!   `retention_secs` (default one day) and live jobs are written again
//!   before their records age out.
//!
//! A lease's timeout is kept by the process that handed it out: past it,
//! the job goes back to its queue as the next attempt.

mod lease;
mod status;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{watch, Notify};

use self::topology::{bucket_ms, Topology};
use super::error::{QueueError, Result};
use super::lease::RetryPolicy;
use super::model::{
    validate_batch, validate_job_types, CancelOutcome, JobId, JobPage, JobRecord, JobTypeStats,
    ListQuery, NewJob, WatchFilter,
};
use super::url::{QueueUrl, COMMON_PARAMS};
use crate::api::{ConsumeOptions, EventStream, LeaseStream, Queue};
use crate::statuslog::settle::StatusLog;
use crate::statuslog::view::View;
use crate::statuslog::wire::{self, cancel_key, encode, status_key, JobMsg, Snapshot};

/// Queue-name prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "docproc";
/// Largest payload, result or progress report, in bytes.
pub const MAX_VALUE_BYTES: usize = wire::MAX_VALUE_BYTES;
/// Most jobs in one publish call.
pub const MAX_BATCH: usize = 1000;

/// Unix ms now, by the system clock the broker engine reads too.
pub(super) fn now_ms() -> u64 {
    docproc_broker::Clock::now_ms(&docproc_broker::SystemClock)
}

/// Settings from the URL.
pub(crate) struct Settings {
    /// The AMQP URI lapin connects to (our parameters removed).
    uri: String,
    prefix: String,
    retention: Duration,
    retry: RetryPolicy,
}

/// What the queue's tasks, streams and leases share.
pub(crate) struct Inner {
    cfg: Settings,
    conn: Connection,
    /// In confirm mode: every publish is answered by the broker.
    publisher: Channel,
    topo: Topology,
    view: Arc<View>,
    /// Woken when this process puts a job in a job queue.
    wake: Arc<Notify>,
    closed: watch::Sender<bool>,
    /// Why the queue can do no more work (see [`Inner::lose`]).
    lost: watch::Sender<Option<String>>,
}

impl Inner {
    /// Records that the queue can do no more work: its connection is gone
    /// (lapin does not reconnect) or its view stopped following the status
    /// stream, so it would answer from stale state. The server stops on this
    /// as on a failed embedded store, for its supervisor to start it again;
    /// RabbitMQ has already handed the jobs this process held to others.
    /// Nothing is recorded after [`Queue::close`].
    pub(super) fn lose(&self, reason: String) {
        if *self.closed.borrow() {
            return;
        }
        self.lost.send_if_modified(|lost| {
            if lost.is_some() {
                return false;
            }
            tracing::error!(error = %reason, "rabbitmq: the queue stops working");
            *lost = Some(reason);
            true
        });
    }
}

/// The RabbitMQ adapter.
#[derive(Clone)]
pub struct RabbitQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("prefix", &self.inner.cfg.prefix)
            .finish_non_exhaustive()
    }
}

pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("rabbitmq {what}: {e}"))
}

/// Opens `amqp://[USER:PASS@]HOST:PORT[/VHOST][?prefix=…&retention_secs=…]`.
pub async fn open(u: &QueueUrl) -> Result<RabbitQueue> {
    let mut known = COMMON_PARAMS.to_vec();
    known.extend(["prefix", "retention_secs"]);
    u.only(&known)?;
    let target = u.target.as_str();
    let host = target.rsplit_once('@').map_or(target, |(_, h)| h);
    let host = host.split('/').next().unwrap_or_default();
    if host.is_empty() || !host.contains(':') {
        return Err(u.invalid(
            "amqp:// needs [USER:PASS@]HOST:PORT[/VHOST], e.g. amqp://guest:guest@127.0.0.1:5672/%2f",
        ));
    }
    let prefix = u.param("prefix").unwrap_or(DEFAULT_PREFIX).to_string();
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 100
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !prefix_ok {
        return Err(u.invalid("prefix must be 1 to 100 characters of A-Z a-z 0-9 _ -"));
    }
    let retention =
        match u.param("retention_secs") {
            Some(v) => Duration::from_secs(v.parse::<u64>().ok().filter(|s| *s >= 60).ok_or_else(
                || u.invalid(format!("retention_secs must be at least 60, got {v:?}")),
            )?),
            None => Duration::from_secs(24 * 3600),
        };
    let cfg = Settings {
        uri: format!("amqp://{target}"),
        prefix: prefix.clone(),
        retention,
        retry: u.retry_policy()?,
    };
    let conn = tokio::time::timeout(
        Duration::from_secs(15),
        Connection::connect(
            &cfg.uri,
            ConnectionProperties::default().with_connection_name(
                format!("docproc {prefix} pid {}", std::process::id()).into(),
            ),
        ),
    )
    .await
    .map_err(|_| unavailable("connect", "timed out after 15 s"))?
    .map_err(|e| unavailable("connect", e))?;
    let publisher = conn
        .create_channel()
        .await
        .map_err(|e| unavailable("channel", e))?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| unavailable("confirm mode", e))?;
    let topo = Topology::new(prefix, retention);
    topo.status(&publisher).await?;
    let inner = Arc::new(Inner {
        cfg,
        conn,
        publisher,
        topo,
        view: Arc::new(View::new()),
        wake: Arc::new(Notify::new()),
        closed: watch::channel(false).0,
        lost: watch::channel(None).0,
    });
    let owner = Arc::downgrade(&inner);
    inner.conn.on_error(move |e| {
        if let Some(inner) = owner.upgrade() {
            inner.lose(format!("rabbitmq connection lost: {e}"));
        }
    });
    let reader = inner
        .conn
        .create_channel()
        .await
        .map_err(|e| unavailable("channel", e))?;
    let token = status::token();
    let (marker, read_back) = tokio::sync::oneshot::channel();
    tokio::spawn(status::read(
        reader,
        inner.topo.status_stream(),
        inner.view.clone(),
        token.clone(),
        marker,
        Arc::downgrade(&inner),
    ));
    if let Err(e) = status::catch_up(&inner, &token, read_back).await {
        inner.closed.send_replace(true);
        let _ = inner.conn.close(200, "status stream unreadable").await;
        return Err(e);
    }
    tokio::spawn(status::maintain(inner.clone(), inner.closed.subscribe()));
    Ok(RabbitQueue { inner })
}

/// Waits for the broker's confirm of one publish.
async fn confirmed(
    what: &str,
    sent: lapin::Result<lapin::publisher_confirm::PublisherConfirm>,
) -> Result<()> {
    let confirm = sent.map_err(|e| unavailable(what, e))?;
    match confirm.await.map_err(|e| unavailable(what, e))? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(unavailable(what, "no queue took the message")),
        Confirmation::Nack(_) => Err(unavailable(what, "the broker refused the message")),
    }
}

/// Deletes the job queues of `job_types` under the URL's prefix, the delay
/// buckets this process declares on the way, and the status stream: for
/// tests and benchmarks that must leave a shared RabbitMQ as they found it.
pub async fn remove(url: &str, job_types: &[&str]) -> Result<()> {
    let q = open(&QueueUrl::parse(url)?).await?;
    for t in job_types {
        q.inner.topo.job_type(&q.inner.publisher, t).await?;
    }
    q.close().await;
    q.destroy().await
}

impl RabbitQueue {
    /// Deletes the queues and exchanges this handle declared, and the status
    /// stream, on a connection of its own (it works after [`Queue::close`]).
    /// Every job in them is lost: for tests and for retiring a prefix.
    /// Delay buckets that only another process declared are left.
    pub async fn destroy(&self) -> Result<()> {
        let conn = Connection::connect(&self.inner.cfg.uri, ConnectionProperties::default())
            .await
            .map_err(|e| unavailable("connect", e))?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| unavailable("channel", e))?;
        let (queues, exchanges) = self.inner.topo.names();
        for q in &queues {
            ch.queue_delete(q, QueueDeleteOptions::default())
                .await
                .map_err(|e| unavailable(&format!("delete queue {q}"), e))?;
        }
        for x in &exchanges {
            ch.exchange_delete(x, ExchangeDeleteOptions::default())
                .await
                .map_err(|e| unavailable(&format!("delete exchange {x}"), e))?;
        }
        let _ = conn.close(200, "destroyed").await;
        Ok(())
    }
}

impl Inner {
    /// Appends one record to the status stream and waits for its confirm.
    async fn log(&self, key: &str, body: &[u8]) -> Result<()> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(key));
        let sent = self
            .publisher
            .basic_publish(
                "",
                &self.topo.status_stream(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await;
        confirmed("status write", sent).await
    }

    /// Publishes a job message to `exchange` for the job queue of its type
    /// and priority, and waits for the confirm.
    async fn send(&self, exchange: &str, msg: &JobMsg) -> Result<()> {
        let queue = self.topo.job_queue(&msg.job.job_type, msg.job.priority);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(msg.job.job_id.0.as_str()));
        let sent = self
            .publisher
            .basic_publish(
                exchange,
                &queue,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &encode(msg)?,
                props,
            )
            .await;
        confirmed("publish", sent).await
    }
}

#[async_trait]
impl StatusLog for Inner {
    fn view(&self) -> &View {
        &self.view
    }

    async fn write_cancel(&self, id: &JobId) -> Result<()> {
        self.log(&cancel_key(id), b"{}").await
    }

    async fn write_status(&self, snap: &Snapshot) -> Result<()> {
        self.log(&status_key(&snap.job.job_id), &encode(snap)?)
            .await?;
        self.view.apply(snap.clone());
        Ok(())
    }

    /// To its job queue, ready now.
    async fn send_job(&self, msg: &JobMsg) -> Result<()> {
        self.topo
            .job_type(&self.publisher, &msg.job.job_type)
            .await?;
        self.send("", msg).await?;
        self.wake.notify_waiters();
        Ok(())
    }

    /// Through the delay bucket of its due time.
    async fn send_delayed(&self, msg: &JobMsg) -> Result<()> {
        let delay = msg.due_ms.unwrap_or(0).saturating_sub(now_ms());
        self.topo
            .job_type(&self.publisher, &msg.job.job_type)
            .await?;
        let exchange = self.topo.bucket(&self.publisher, bucket_ms(delay)).await?;
        self.send(&exchange, msg).await
    }
}

#[async_trait]
impl Queue for RabbitQueue {
    fn backend(&self) -> &'static str {
        "rabbitmq"
    }

    async fn publish(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        validate_batch(&jobs, MAX_BATCH)?;
        jobs.iter().try_for_each(wire::payload_fits)?;
        let inner = &self.inner;
        let now = now_ms();
        let mut snaps = Vec::with_capacity(jobs.len());
        for j in jobs {
            inner.topo.job_type(&inner.publisher, &j.job_type).await?;
            snaps.push(wire::first_state(j, now));
        }
        inner.publish_first(snaps).await
    }

    async fn consume(&self, job_types: &[String], opts: ConsumeOptions) -> Result<LeaseStream> {
        validate_job_types(job_types)?;
        for t in job_types {
            self.inner.topo.job_type(&self.inner.publisher, t).await?;
        }
        let ch = self
            .inner
            .conn
            .create_channel()
            .await
            .map_err(|e| unavailable("channel", e))?;
        Ok(lease::stream(self.inner.clone(), ch, job_types.to_vec(), opts.worker_id).boxed())
    }

    async fn get(&self, id: &JobId) -> Result<JobRecord> {
        self.inner.view.record(id)
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelOutcome> {
        self.inner.cancel(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<JobPage> {
        self.inner.view.list(query)
    }

    async fn stats(&self) -> Result<Vec<JobTypeStats>> {
        Ok(self.inner.view.stats())
    }

    async fn watch(&self, filter: WatchFilter) -> Result<EventStream> {
        Ok(self.inner.view.watch(filter, self.inner.closed.subscribe()))
    }

    /// Turns `Some` when the connection to RabbitMQ is lost or the status
    /// stream stops being read ([`Inner::lose`]).
    fn storage_failure(&self) -> Option<watch::Receiver<Option<String>>> {
        Some(self.inner.lost.subscribe())
    }

    /// Closes the connection: messages still held go back to their queues.
    async fn close(&self) {
        if self.inner.closed.send_replace(true) {
            return;
        }
        if let Err(e) = self.inner.conn.close(200, "closing").await {
            tracing::debug!(error = %e, "rabbitmq close");
        }
    }
}
