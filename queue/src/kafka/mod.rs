//! `kafka://HOST:PORT[,HOST:PORT…]`: the job queue on a Kafka cluster
//! (built with the `kafka` cargo feature). Kafka has no per-message ack, no
//! priority and no job status, so they are built on its own primitives:
//!
//! - a topic per job type and priority, `PREFIX.TYPE.pN` (N = 0 low … 3
//!   urgent), consumed by one consumer group; each process buffers a few
//!   messages per priority and leases the highest first (a full buffer
//!   pauses its partitions; a lower-priority lease first checks the higher
//!   topics have nothing left unfetched);
//! - a partition's offset is committed only up to the first message whose
//!   job is not finished, failed or handed on, so a crash redelivers and
//!   nothing acknowledged is lost;
//! - retries and scheduled jobs wait in `PREFIX.delayed` (due time and
//!   attempt in the message, attempt also in a header) and are moved back
//!   when due;
//! - job status, results and cancel markers live in the compacted
//!   `PREFIX.status` topic keyed by job id, which every process reads into
//!   a local view (get, list, stats, watch); workers check the cancel
//!   marker on every heartbeat;
//! - the producer is idempotent with `acks=all`.
//!
//! A lease's timeout is kept by the process that handed it out: past it,
//! the job goes back to its topic (attempt + 1). If that process dies, the
//! uncommitted message reaches another group member, which waits out the
//! recorded deadline and then runs it as the next attempt.

mod delayed;
mod feed;
mod lease;
mod reader;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{watch, Notify};

use self::feed::Feed;
use super::error::{QueueError, Result};
use super::lease::RetryPolicy;
use super::model::{
    validate_batch, validate_job_types, CancelOutcome, JobId, JobPage, JobRecord, JobStatus,
    JobTypeStats, ListQuery, NewJob, WatchFilter,
};
use super::url::{QueueUrl, COMMON_PARAMS};
use crate::api::{ConsumeOptions, EventStream, LeaseStream, Queue};
use crate::statuslog::settle::StatusLog;
use crate::statuslog::view::View;
use crate::statuslog::wire::{self, cancel_key, delivery_id, encode, status_key, JobMsg, Snapshot};

/// Topic prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "docproc";
/// Largest payload, result or progress report, in bytes.
pub const MAX_VALUE_BYTES: usize = wire::MAX_VALUE_BYTES;
/// Most jobs in one publish call.
pub const MAX_BATCH: usize = 1000;
/// How long a send may wait for the cluster's acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often final jobs past the retention are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Longest `consume` waits for its consumers to join their groups.
const JOIN_WAIT: Duration = Duration::from_secs(15);
/// Longest an idle consumer waits before looking again.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Unix ms now, by the system clock the broker engine reads too.
pub(super) fn now_ms() -> u64 {
    docproc_broker::Clock::now_ms(&docproc_broker::SystemClock)
}

/// Settings from the URL.
pub(crate) struct Settings {
    brokers: String,
    prefix: String,
    group: String,
    partitions: i32,
    replication: i32,
    retention: Duration,
    retry: RetryPolicy,
}

/// What the queue's tasks, feeds and leases share.
pub(crate) struct Inner {
    cfg: Settings,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    view: Arc<View>,
    topics: Mutex<HashSet<String>>,
    feeds: tokio::sync::Mutex<HashMap<String, Arc<Feed>>>,
    /// Woken when any feed buffers a message.
    wake: Arc<Notify>,
    closed: watch::Sender<bool>,
}

/// The Kafka adapter.
#[derive(Clone)]
pub struct KafkaQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaQueue")
            .field("brokers", &self.inner.cfg.brokers)
            .field("prefix", &self.inner.cfg.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("kafka {what}: {e}"))
}

fn int_param(
    u: &QueueUrl,
    key: &str,
    default: i32,
    range: std::ops::RangeInclusive<i32>,
) -> Result<i32> {
    match u.param(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| u.invalid(format!("{key} must be a number in {range:?}, got {v:?}"))),
    }
}

/// Opens `kafka://HOST:PORT[,HOST:PORT…][?prefix=…&group=…&partitions=…&replication=…&retention_secs=…]`.
pub async fn open(u: &QueueUrl) -> Result<KafkaQueue> {
    let mut known = COMMON_PARAMS.to_vec();
    known.extend([
        "prefix",
        "group",
        "partitions",
        "replication",
        "retention_secs",
    ]);
    u.only(&known)?;
    let brokers = u.target.trim_end_matches('/').to_string();
    if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
        return Err(u.invalid("kafka:// needs HOST:PORT[,HOST:PORT…], e.g. kafka://127.0.0.1:9092"));
    }
    let prefix = u.param("prefix").unwrap_or(DEFAULT_PREFIX).to_string();
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if !name_ok(&prefix) {
        return Err(u.invalid("prefix must be 1 to 100 characters of A-Z a-z 0-9 . _ -"));
    }
    let group = u
        .param("group")
        .map_or_else(|| format!("{prefix}-workers"), str::to_string);
    if !name_ok(&group) {
        return Err(u.invalid("group must be 1 to 100 characters of A-Z a-z 0-9 . _ -"));
    }
    let retention = match u.param("retention_secs") {
        Some(v) => Duration::from_secs(
            v.parse()
                .map_err(|_| u.invalid(format!("retention_secs must be seconds, got {v:?}")))?,
        ),
        None => Duration::from_secs(24 * 3600),
    };
    let cfg = Settings {
        brokers,
        prefix,
        group,
        partitions: int_param(u, "partitions", 1, 1..=1000)?,
        replication: int_param(u, "replication", 1, 1..=10)?,
        retention,
        retry: u.retry_policy()?,
    };
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", &cfg.brokers);
    let producer: FutureProducer = base
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| unavailable("producer", e))?;
    let admin: AdminClient<DefaultClientContext> =
        base.create().map_err(|e| unavailable("admin client", e))?;
    let inner = Arc::new(Inner {
        cfg,
        producer,
        admin,
        view: Arc::new(View::new()),
        topics: Mutex::default(),
        feeds: tokio::sync::Mutex::default(),
        wake: Arc::new(Notify::new()),
        closed: watch::channel(false).0,
    });
    inner.ensure_topics(&[inner.status_topic()], true).await?;
    inner.ensure_topics(&[inner.delayed_topic()], false).await?;

    // Every process reads the whole status topic; no group, nothing committed.
    let reader: StreamConsumer = inner
        .consumer_config(&format!("{}-view-{}", inner.cfg.prefix, delivery_id()))
        .create()
        .map_err(|e| unavailable("status reader", e))?;
    let (caught_up, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(reader::read(
        Arc::new(reader),
        inner.status_topic(),
        inner.view.clone(),
        caught_up,
        inner.closed.subscribe(),
    ));
    match tokio::time::timeout(Duration::from_secs(60), ready).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        _ => {
            return Err(QueueError::Unavailable(
                "kafka: the status topic could not be read".into(),
            ))
        }
    }

    let mover: StreamConsumer = inner
        .consumer_config(&format!("{}-delayed", inner.cfg.group))
        .create()
        .map_err(|e| unavailable("delayed-topic consumer", e))?;
    mover
        .subscribe(&[&inner.delayed_topic()])
        .map_err(|e| unavailable("subscribe", e))?;
    tokio::spawn(delayed::run(inner.clone(), mover, inner.closed.subscribe()));
    tokio::spawn(sweep(inner.clone(), inner.closed.subscribe()));
    Ok(KafkaQueue { inner })
}

/// Drops final jobs past the retention: tombstones in the status topic.
async fn sweep(inner: Arc<Inner>, mut closed: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let before = now_ms().saturating_sub(inner.cfg.retention.as_millis() as u64);
        for id in inner.view.finished_before(before) {
            let (topic, skey, ckey) = (inner.status_topic(), status_key(&id), cancel_key(&id));
            let status = inner.send(&topic, &skey, None, None);
            let cancel = inner.send(&topic, &ckey, None, None);
            match futures::future::try_join(status, cancel).await {
                Ok(_) => inner.view.forget(&id),
                Err(e) => tracing::warn!(error = %e, "kafka retention sweep"),
            }
        }
    }
}

impl Inner {
    fn status_topic(&self) -> String {
        format!("{}.status", self.cfg.prefix)
    }

    fn delayed_topic(&self) -> String {
        format!("{}.delayed", self.cfg.prefix)
    }

    fn job_topics(&self, job_type: &str) -> [String; 4] {
        [0, 1, 2, 3].map(|p| format!("{}.{job_type}.p{p}", self.cfg.prefix))
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.cfg.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Also the rebalance timeout: a member that died is waited for at
            // most this long. Every consumer polls at least once a second
            // (a full buffer takes one message a second), so this is safe.
            .set("max.poll.interval.ms", "30000")
            .set("fetch.wait.max.ms", "50");
        c
    }

    /// Creates the topics not known to exist (an existing topic is fine).
    async fn ensure_topics(&self, names: &[String], compact: bool) -> Result<()> {
        let missing: Vec<&String> = {
            let known = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            names.iter().filter(|n| !known.contains(*n)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|n| {
                let t = NewTopic::new(
                    n.as_str(),
                    self.cfg.partitions,
                    TopicReplication::Fixed(self.cfg.replication),
                );
                if compact {
                    t.set("cleanup.policy", "compact")
                } else {
                    t
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(|e| unavailable("create topics", e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(unavailable(&format!("create topic {t}"), code)),
            }
        }
        let mut known = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(missing.into_iter().cloned());
        Ok(())
    }

    /// Sends one record and waits for the cluster to acknowledge it.
    async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: Option<&[u8]>,
        attempt: Option<u32>,
    ) -> Result<()> {
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        let attempt = attempt.map(|a| a.to_string());
        if let Some(a) = &attempt {
            rec = rec.headers(OwnedHeaders::new().insert(Header {
                key: "attempt",
                value: Some(a.as_str()),
            }));
        }
        self.producer
            .send(rec, SEND_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| unavailable("send", e))
    }

    /// A lease this process handed out ran out: the job goes back to its
    /// topic as the next attempt, or fails when out of attempts.
    async fn expire(&self, id: &JobId, now: u64) -> Result<()> {
        let Some((mut snap, cancel)) = self.view.get(id) else {
            return Ok(());
        };
        if snap.status != JobStatus::Processing {
            return Ok(());
        }
        self.expire_lease(&mut snap, cancel, now).await
    }

    /// The feed of a job type, started on first use.
    async fn feed(self: &Arc<Self>, job_type: &str) -> Result<Arc<Feed>> {
        let mut feeds = self.feeds.lock().await;
        if let Some(f) = feeds.get(job_type) {
            return Ok(f.clone());
        }
        self.ensure_topics(&self.job_topics(job_type), false)
            .await?;
        let f = Feed::start(self, job_type)?;
        feeds.insert(job_type.to_string(), f.clone());
        Ok(f)
    }
}

#[async_trait]
impl StatusLog for Inner {
    fn view(&self) -> &View {
        &self.view
    }

    async fn write_cancel(&self, id: &JobId) -> Result<()> {
        self.send(&self.status_topic(), &cancel_key(id), Some(b"{}"), None)
            .await
    }

    async fn write_status(&self, snap: &Snapshot) -> Result<()> {
        let bytes = encode(snap)?;
        self.send(
            &self.status_topic(),
            &status_key(&snap.job.job_id),
            Some(&bytes),
            None,
        )
        .await?;
        self.view.apply(snap.clone());
        Ok(())
    }

    /// To its job topic.
    async fn send_job(&self, msg: &JobMsg) -> Result<()> {
        let topics = self.job_topics(&msg.job.job_type);
        self.ensure_topics(&topics, false).await?;
        let topic = &topics[msg.job.priority.level() as usize];
        self.send(
            topic,
            &msg.job.job_id.0,
            Some(&encode(msg)?),
            Some(msg.attempt),
        )
        .await
    }

    /// Through the delayed topic.
    async fn send_delayed(&self, msg: &JobMsg) -> Result<()> {
        self.send(
            &self.delayed_topic(),
            &msg.job.job_id.0,
            Some(&encode(msg)?),
            Some(msg.attempt),
        )
        .await
    }
}

#[async_trait]
impl Queue for KafkaQueue {
    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        validate_batch(&jobs, MAX_BATCH)?;
        jobs.iter().try_for_each(wire::payload_fits)?;
        let inner = &self.inner;
        let now = now_ms();
        let mut snaps = Vec::with_capacity(jobs.len());
        for j in jobs {
            inner
                .ensure_topics(&inner.job_topics(&j.job_type), false)
                .await?;
            snaps.push(wire::first_state(j, now));
        }
        inner.publish_first(snaps).await
    }

    async fn consume(&self, job_types: &[String], opts: ConsumeOptions) -> Result<LeaseStream> {
        validate_job_types(job_types)?;
        let mut feeds = Vec::new();
        for t in job_types {
            feeds.push(self.inner.feed(t).await?);
        }
        // Answer once the consumers have joined their groups (bounded), so a
        // worker that starts before jobs arrive is really listening.
        let _ = tokio::time::timeout(JOIN_WAIT, async {
            while !feeds.iter().all(|f| f.ready()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let state = (self.inner.clone(), feeds, opts.worker_id, 0usize);
        let s = futures::stream::unfold(state, |(inner, feeds, worker, turn)| async move {
            let mut closed = inner.closed.subscribe();
            let wake = inner.wake.clone();
            loop {
                if *inner.closed.borrow() {
                    return None;
                }
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                for k in 0..feeds.len() {
                    let f = &feeds[(turn + k) % feeds.len()];
                    match f.try_lease(&inner, &worker).await {
                        Ok(Some(lease)) => {
                            let next = (turn + k + 1) % feeds.len();
                            return Some((Ok(lease), (inner, feeds, worker, next)));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return Some((Err(e), (inner, feeds, worker, turn)));
                        }
                    }
                }
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = closed.wait_for(|c| *c) => return None,
                }
            }
        });
        Ok(s.boxed())
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

    async fn close(&self) {
        if self.inner.closed.send_replace(true) {
            return;
        }
        let feeds: Vec<Arc<Feed>> = self
            .inner
            .feeds
            .lock()
            .await
            .drain()
            .map(|(_, f)| f)
            .collect();
        for f in feeds {
            f.stop();
        }
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.producer.flush(Duration::from_secs(10)))
            .await;
    }
}
