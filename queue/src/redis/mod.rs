//! `redis://HOST:PORT[/DB]`: the job queue on a Redis server. Every state
//! change is one Lua script (kept as `.lua` files beside this module,
//! loaded once at open and called by hash), so a job is never held by two
//! workers and the listing index, depth counts and events stay in step.
//!
//! Parameters: `prefix` (default `docproc`; several deployments can share a
//! server), `retention_secs` (final jobs kept, default 86400), and the
//! common `retry_base_ms` / `retry_max_ms`.
//!
//! Nothing relies on a client staying alive: a worker that dies holding a
//! job simply stops renewing, and the next lease or maintenance call (every
//! open queue runs one a second) finds the deadline passed and retries or
//! fails the job. Deadlines and delays use the Redis server's clock.
//! Watchers get events through pub/sub; a dropped subscription is reported
//! as [`QueueError::Lagged`] when it is made again.

mod events;
mod list;
mod records;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::{broadcast, oneshot, watch, Notify};

use self::events::Signal;
use self::records::plausible_id;
use super::error::{QueueError, Result};
use super::lease::{Heartbeat, Lease, LeaseOps, RetryPolicy};
use super::model::{
    legacy_owner, validate_batch, validate_job_types, CancelOutcome, Job, JobId, JobPage,
    JobRecord, JobStatus, JobTypeStats, ListQuery, NewJob, Priority, WatchFilter,
};
use super::url::{QueueUrl, COMMON_PARAMS};
use crate::api::{broadcast_watch, ConsumeOptions, EventStream, LeaseStream, Queue};

/// Key prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "docproc";
/// How long final jobs are kept when the URL says nothing.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Largest payload, result or progress report, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most jobs in one publish call.
pub const MAX_BATCH: usize = 1000;
/// Jobs written per script call (a publish larger than this is several).
const PUBLISH_CHUNK: usize = 250;
/// Longest an idle consumer waits before asking again without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(1);

const COMMON: &str = include_str!("common.lua");

/// The scripts, each with `common.lua` in front.
struct Scripts {
    publish: Script,
    lease: Script,
    complete: Script,
    fail: Script,
    renew: Script,
    cancel: Script,
    maintain: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            publish: s(include_str!("publish.lua")),
            lease: s(include_str!("lease.lua")),
            complete: s(include_str!("complete.lua")),
            fail: s(include_str!("fail.lua")),
            renew: s(include_str!("renew.lua")),
            cancel: s(include_str!("cancel.lua")),
            maintain: s(include_str!("maintain.lua")),
        }
    }

    fn all(&self) -> [&Script; 7] {
        [
            &self.publish,
            &self.lease,
            &self.complete,
            &self.fail,
            &self.renew,
            &self.cancel,
            &self.maintain,
        ]
    }
}

/// What the queue's tasks, streams and leases share.
pub(crate) struct Inner {
    conn: ConnectionManager,
    prefix: String,
    retry: RetryPolicy,
    retention: Duration,
    scripts: Scripts,
    events: broadcast::Sender<Signal>,
    wake: Arc<Notify>,
    closed: watch::Sender<bool>,
}

/// The Redis adapter.
#[derive(Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Redis failures in queue terms: connection trouble is retryable.
fn map(e: redis::RedisError) -> QueueError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        QueueError::Unavailable(format!("redis: {e}"))
    } else {
        QueueError::Backend(format!("redis: {e}"))
    }
}

/// A script's `NOTFOUND` / `LEASELOST` error replies as lease errors.
fn lease_err(id: &JobId, e: redis::RedisError) -> QueueError {
    match e.code() {
        Some("NOTFOUND") | Some("LEASELOST") => QueueError::LeaseLost(id.clone()),
        _ => map(e),
    }
}

/// Opens `redis://[USER:PASSWORD@]HOST:PORT[/DB][?prefix=…&retention_secs=…]`.
pub async fn open(u: &QueueUrl) -> Result<RedisQueue> {
    let mut known = COMMON_PARAMS.to_vec();
    known.extend(["prefix", "retention_secs"]);
    u.only(&known)?;
    if u.target.is_empty() {
        return Err(u.invalid("redis:// needs HOST:PORT, e.g. redis://127.0.0.1:6379/0"));
    }
    let prefix = u.param("prefix").unwrap_or(DEFAULT_PREFIX).to_string();
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '*' && c != '?')
    {
        return Err(u.invalid("prefix must be 1 to 64 printable characters, no * or ?"));
    }
    let retention = match u.param("retention_secs") {
        Some(v) => Duration::from_secs(
            v.parse()
                .map_err(|_| u.invalid(format!("retention_secs must be seconds, got {v:?}")))?,
        ),
        None => DEFAULT_RETENTION,
    };
    let retry = u.retry_policy()?;
    let client = redis::Client::open(format!("redis://{}", u.target))
        .map_err(|e| u.invalid(e.to_string()))?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(3);
    let mut conn = client
        .get_connection_manager_with_config(cfg)
        .await
        .map_err(map)?;
    let scripts = Scripts::new();
    for s in scripts.all() {
        s.prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(map)?;
    }
    let (events, _) = broadcast::channel(4096);
    let (closed, _) = watch::channel(false);
    let inner = Arc::new(Inner {
        conn,
        prefix: prefix.clone(),
        retry,
        retention,
        scripts,
        events: events.clone(),
        wake: Arc::new(Notify::new()),
        closed,
    });
    let (ready, subscribed) = oneshot::channel();
    tokio::spawn(events::subscribe(
        client,
        format!("{prefix}:events"),
        events,
        inner.wake.clone(),
        inner.closed.subscribe(),
        ready,
    ));
    match subscribed.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(map(e)),
        Err(_) => return Err(QueueError::Unavailable("redis subscription ended".into())),
    }
    tokio::spawn(events::maintain(inner.clone(), inner.closed.subscribe()));
    Ok(RedisQueue { inner })
}

impl Inner {
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    async fn maintain(&self) -> Result<u64> {
        let mut c = self.conn.clone();
        self.scripts
            .maintain
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(self.retention.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(map)
    }

    /// Takes the first ready job of `types` (tried in that order), or says
    /// how long to wait (`None`: nothing is scheduled).
    async fn lease(self: &Arc<Self>, types: &[String], worker: &str) -> Result<Leased> {
        let token = format!("{:016x}", rand::random::<u64>());
        let mut c = self.conn.clone();
        let v: Vec<String> = self
            .scripts
            .lease
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(worker)
            .arg(&token)
            .arg(types)
            .invoke_async(&mut c)
            .await
            .map_err(map)?;
        let num = |i: usize| -> Result<u64> {
            v.get(i)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| QueueError::Backend(format!("bad lease answer {v:?}")))
        };
        if v.first().is_none_or(String::is_empty) {
            // -1 (or anything unreadable): nothing is scheduled.
            let wait = v.get(1).and_then(|s| s.parse::<u64>().ok());
            return Ok(Leased::Wait(wait.map(Duration::from_millis)));
        }
        if v.len() != 12 {
            return Err(QueueError::Backend(format!("bad lease answer {v:?}")));
        }
        let id = JobId(v[0].clone());
        let json = |s: &str| -> Result<Option<serde_json::Value>> {
            if s.is_empty() {
                return Ok(None);
            }
            serde_json::from_str(s)
                .map(Some)
                .map_err(|e| QueueError::Backend(format!("job {id}: stored JSON unreadable: {e}")))
        };
        let payload = json(&v[2])?.unwrap_or(serde_json::Value::Null);
        let job = Job {
            job_id: id.clone(),
            job_type: v[1].clone(),
            owner: (!v[11].is_empty())
                .then(|| v[11].clone())
                .or_else(|| legacy_owner(&payload)),
            payload,
            priority: Priority::from_level(num(3)? as u32),
            max_retries: num(4)? as u32,
            timeout: Duration::from_millis(num(5)?),
            correlation_id: (!v[6].is_empty()).then(|| v[6].clone()),
            callback_context: json(&v[7])?,
            created_at_ms: num(8)?,
        };
        let ops = RedisLease {
            inner: self.clone(),
            id,
            token,
        };
        Ok(Leased::Job(Box::new(Lease::new(
            job,
            num(9)? as u32,
            num(10)?,
            self.retry,
            Box::new(ops),
        ))))
    }
}

enum Leased {
    Job(Box<Lease>),
    Wait(Option<Duration>),
}

/// A worker's hold on a job in Redis: the job id and this lease's token.
struct RedisLease {
    inner: Arc<Inner>,
    id: JobId,
    token: String,
}

fn json_text(bytes: Vec<u8>, what: &str) -> Result<String> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(QueueError::TooLarge(format!(
            "{what} of {} bytes exceeds {MAX_VALUE_BYTES}",
            bytes.len()
        )));
    }
    String::from_utf8(bytes).map_err(|e| QueueError::InvalidArgument(format!("{what}: {e}")))
}

#[async_trait]
impl LeaseOps for RedisLease {
    async fn complete(&self, result: Vec<u8>) -> Result<bool> {
        let result = json_text(result, "result")?;
        let mut c = self.inner.conn.clone();
        let st: String = self
            .inner
            .scripts
            .complete
            .prepare_invoke()
            .arg(&self.inner.prefix)
            .arg(&self.id.0)
            .arg(&self.token)
            .arg(result)
            .invoke_async(&mut c)
            .await
            .map_err(|e| lease_err(&self.id, e))?;
        Ok(st == "cancelled")
    }

    async fn fail(&self, error: &str, retry_after: Option<Duration>) -> Result<JobStatus> {
        let delay: i64 = retry_after.map_or(-1, |d| d.as_millis().min(i64::MAX as u128) as i64);
        let mut c = self.inner.conn.clone();
        let st: String = self
            .inner
            .scripts
            .fail
            .prepare_invoke()
            .arg(&self.inner.prefix)
            .arg(&self.id.0)
            .arg(&self.token)
            .arg(error)
            .arg(delay)
            .invoke_async(&mut c)
            .await
            .map_err(|e| lease_err(&self.id, e))?;
        st.parse()
    }

    async fn renew(&self, progress: Option<Vec<u8>>) -> Result<Heartbeat> {
        let progress = match progress {
            Some(p) => json_text(p, "progress")?,
            None => String::new(),
        };
        let mut c = self.inner.conn.clone();
        let v: Vec<u64> = self
            .inner
            .scripts
            .renew
            .prepare_invoke()
            .arg(&self.inner.prefix)
            .arg(&self.id.0)
            .arg(&self.token)
            .arg(progress)
            .invoke_async(&mut c)
            .await
            .map_err(|e| lease_err(&self.id, e))?;
        match v[..] {
            [cancel, deadline_ms] => Ok(Heartbeat {
                cancelled: cancel == 1,
                deadline_ms,
            }),
            _ => Err(QueueError::Backend(format!("bad renew answer {v:?}"))),
        }
    }
}

/// The fields `publish.lua` takes for one job.
fn encode(job: NewJob) -> Result<[String; 9]> {
    let payload = serde_json::to_string(&job.payload)
        .map_err(|e| QueueError::InvalidArgument(format!("payload is not JSON: {e}")))?;
    if payload.len() > MAX_VALUE_BYTES {
        return Err(QueueError::TooLarge(format!(
            "payload of {} bytes exceeds {MAX_VALUE_BYTES}",
            payload.len()
        )));
    }
    let context = match &job.callback_context {
        Some(c) => serde_json::to_string(c)
            .map_err(|e| QueueError::InvalidArgument(format!("callback_context: {e}")))?,
        None => String::new(),
    };
    Ok([
        job.job_type,
        payload,
        job.priority.level().to_string(),
        job.max_retries.to_string(),
        job.timeout.as_millis().to_string(),
        job.correlation_id.unwrap_or_default(),
        context,
        job.run_at_ms.map(|t| t.to_string()).unwrap_or_default(),
        job.owner.unwrap_or_default(),
    ])
}

#[async_trait]
impl Queue for RedisQueue {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        validate_batch(&jobs, MAX_BATCH)?;
        let encoded = jobs.into_iter().map(encode).collect::<Result<Vec<_>>>()?;
        let mut ids = Vec::with_capacity(encoded.len());
        for chunk in encoded.chunks(PUBLISH_CHUNK) {
            let mut call = self.inner.scripts.publish.prepare_invoke();
            call.arg(&self.inner.prefix);
            for fields in chunk {
                call.arg(&fields[..]);
            }
            let mut c = self.inner.conn.clone();
            let got: Vec<String> = call.invoke_async(&mut c).await.map_err(map)?;
            ids.extend(got.into_iter().map(JobId));
        }
        Ok(ids)
    }

    async fn consume(&self, job_types: &[String], opts: ConsumeOptions) -> Result<LeaseStream> {
        validate_job_types(job_types)?;
        let state = (
            self.inner.clone(),
            job_types.to_vec(),
            opts.worker_id,
            0usize,
        );
        let s = futures::stream::unfold(state, |(inner, types, worker, turn)| async move {
            let mut closed = inner.closed.subscribe();
            let wake = inner.wake.clone();
            loop {
                if inner.is_closed() {
                    return None;
                }
                // Registered before asking, so a job published in between wakes us.
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let mut order = types[turn..].to_vec();
                order.extend_from_slice(&types[..turn]);
                let wait = match inner.lease(&order, &worker).await {
                    Ok(Leased::Job(lease)) => {
                        let next = (turn + 1) % types.len();
                        return Some((Ok(*lease), (inner, types, worker, next)));
                    }
                    Ok(Leased::Wait(w)) => w.unwrap_or(IDLE_POLL).min(IDLE_POLL),
                    Err(e) => {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = closed.wait_for(|c| *c) => return None,
                        }
                        return Some((Err(e), (inner, types, worker, turn)));
                    }
                };
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = closed.wait_for(|c| *c) => return None,
                }
            }
        });
        Ok(s.boxed())
    }

    async fn get(&self, id: &JobId) -> Result<JobRecord> {
        if !plausible_id(id) {
            return Err(QueueError::NotFound(id.clone()));
        }
        let mut c = self.inner.conn.clone();
        let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.inner.key(&format!("job:{id}")))
            .query_async(&mut c)
            .await
            .map_err(map)?;
        records::record(id, &h)?.ok_or_else(|| QueueError::NotFound(id.clone()))
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelOutcome> {
        if !plausible_id(id) {
            return Err(QueueError::NotFound(id.clone()));
        }
        let mut c = self.inner.conn.clone();
        let v: Vec<String> = self
            .inner
            .scripts
            .cancel
            .prepare_invoke()
            .arg(&self.inner.prefix)
            .arg(&id.0)
            .invoke_async(&mut c)
            .await
            .map_err(|e| match e.code() {
                Some("NOTFOUND") => QueueError::NotFound(id.clone()),
                _ => map(e),
            })?;
        match v.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["cancelled"] => Ok(CancelOutcome::Cancelled),
            ["requested"] => Ok(CancelOutcome::Requested),
            ["final", st] => Err(QueueError::Conflict {
                id: id.clone(),
                status: st.parse()?,
                action: "cancel",
            }),
            _ => Err(QueueError::Backend(format!("bad cancel answer {v:?}"))),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<JobPage> {
        list::list(&self.inner, query).await
    }

    async fn stats(&self) -> Result<Vec<JobTypeStats>> {
        list::stats(&self.inner).await
    }

    async fn watch(&self, filter: WatchFilter) -> Result<EventStream> {
        let rx = self.inner.events.subscribe();
        // Events up to this number happened before the watch began.
        let mut c = self.inner.conn.clone();
        let from: Option<u64> = redis::cmd("GET")
            .arg(self.inner.key("evseq"))
            .query_async(&mut c)
            .await
            .map_err(map)?;
        let from = from.unwrap_or(0);
        let closed = self.inner.closed.subscribe();
        Ok(broadcast_watch(rx, closed, move |sig| match sig {
            Signal::Event(seq, e) => (seq > from && filter.matches(&e)).then(|| Ok((*e).clone())),
            Signal::Gap => Some(Err(QueueError::Lagged(0))),
        }))
    }

    async fn close(&self) {
        self.inner.closed.send_replace(true);
    }
}
