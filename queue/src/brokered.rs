//! The job model on the docproc broker protocol: one [`Queue`] implementation
//! shared by the embedded (`rocksdb://`, `memory://`) and remote (`grpc://`)
//! adapters, over the small [`BrokerApi`] each of them provides.
//!
//! Mapping: a job type is a broker queue; priorities low..urgent are broker
//! priorities 0..3; `max_retries` is `max_attempts - 1`; the timeout is the
//! lease timeout; the job id is the broker's message id in decimal; the
//! owner is the message's owner, which the broker indexes for listing. The
//! payload, correlation id, callback context and timeout travel in a small
//! JSON envelope as the message payload; results and progress are stored as
//! JSON bytes. Broker states map onto job statuses one to one (delayed is
//! pending, leased is processing, dead is failed).

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use docproc_broker::pb;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{QueueError, Result};
use super::lease::{Heartbeat, Lease, LeaseOps, RetryPolicy};
use super::model::{
    legacy_owner, validate_job_type, validate_job_types, CancelOutcome, Counters, Job, JobEvent,
    JobId, JobPage, JobRecord, JobStatus, JobTypeStats, ListQuery, NewJob, Priority, PriorityDepth,
    WatchFilter,
};
use crate::api::{ConsumeOptions, EventStream, LeaseStream, Queue, SyncLatency};

/// Kept alive while a lease is held (the remote consumer's flow-control
/// credit), and handed back to the adapter with each call on the lease (a
/// remote consumer's delivery settles on its stream).
pub type Held = Box<dyn Any + Send + Sync>;
/// Deliveries with what must be held while they are leased.
pub type Deliveries = BoxStream<'static, Result<(pb::Delivery, Held)>>;

/// Most messages per broker produce call.
const PRODUCE_CHUNK: usize = 1000;

/// What an adapter on the broker protocol offers: the broker calls, with
/// errors already mapped (a stale lease or wrong state is
/// [`QueueError::LeaseLost`]).
#[async_trait]
pub trait BrokerApi: Clone + Send + Sync + 'static {
    /// Latency of durable writes, when the broker runs in this process:
    /// cumulative bucket counts, sum in seconds, count.
    fn sync_latency(&self) -> Option<(Vec<u64>, f64, u64)> {
        None
    }
    /// The in-process broker's storage failure, see
    /// [`Queue::storage_failure`].
    fn storage_failure(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        None
    }
    /// Stores messages; their ids in order.
    async fn produce(&self, msgs: Vec<pb::NewMessage>) -> Result<Vec<u64>>;
    /// A message with its payload.
    async fn get(&self, id: u64) -> Result<pb::Message>;
    /// `Cancelled`, or `Leased` when the consumer will be told.
    async fn cancel(&self, id: u64) -> Result<pb::State>;
    /// A page of messages.
    async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse>;
    /// Stats of every queue.
    async fn stats(&self) -> Result<Vec<pb::QueueStats>>;
    /// Completes a lease; `true` when the message had been cancelled.
    /// `held` is what [`BrokerApi::deliveries`] gave with the lease.
    async fn ack(&self, held: &Held, id: u64, token: u64, result: Vec<u8>) -> Result<bool>;
    /// Fails a lease: retried after `delay_ms`, or dead when `dead`.
    async fn nack(
        &self,
        held: &Held,
        id: u64,
        token: u64,
        error: &str,
        delay_ms: u64,
        dead: bool,
    ) -> Result<pb::State>;
    /// Hands a leased message back unworked, not counted as an attempt.
    async fn release(&self, held: &Held, id: u64, token: u64) -> Result<pb::State>;
    /// Renews a lease by its timeout, storing progress if given.
    async fn extend(
        &self,
        held: &Held,
        id: u64,
        token: u64,
        progress: Option<Vec<u8>>,
    ) -> Result<pb::ExtendResponse>;
    /// Leases of these queues as they become ready.
    async fn deliveries(
        &self,
        queues: Vec<String>,
        worker: String,
        prefetch: usize,
    ) -> Result<Deliveries>;
    /// Lifecycle events of these queues and ids (empty: all); lag is
    /// reported as an event with `lagged` set.
    async fn events(
        &self,
        queues: Vec<String>,
        ids: Vec<u64>,
    ) -> Result<BoxStream<'static, Result<pb::Event>>>;
    /// Ends the streams made by this adapter and releases the backend.
    async fn close(&self);
}

/// A [`Queue`] over any [`BrokerApi`].
#[derive(Debug, Clone)]
pub struct BrokerQueue<B> {
    api: B,
    retry: RetryPolicy,
    name: &'static str,
}

impl<B> BrokerQueue<B> {
    pub(crate) fn new(api: B, retry: RetryPolicy, name: &'static str) -> Self {
        Self { api, retry, name }
    }

    /// The adapter underneath.
    pub fn api(&self) -> &B {
        &self.api
    }
}

/// The message payload: what the broker does not model itself.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_context: Option<Value>,
    timeout_ms: u64,
}

fn encode(job: NewJob) -> Result<pb::NewMessage> {
    job.validate()?;
    let timeout_ms = job.timeout.as_millis().min(u128::from(u64::MAX)) as u64;
    let env = Envelope {
        payload: job.payload,
        correlation_id: job.correlation_id,
        callback_context: job.callback_context,
        timeout_ms,
    };
    Ok(pb::NewMessage {
        queue: job.job_type,
        priority: u32::from(job.priority.level()),
        payload: serde_json::to_vec(&env)
            .map_err(|e| QueueError::InvalidArgument(format!("payload is not JSON: {e}")))?,
        max_attempts: job.max_retries + 1,
        lease_timeout_ms: timeout_ms,
        not_before_ms: job.run_at_ms.unwrap_or(0),
        owner: job.owner.unwrap_or_default(),
        ..Default::default()
    })
}

fn job_id(id: u64) -> JobId {
    JobId(id.to_string())
}

/// A job id this adapter could have made; anything else is not found.
fn parse_id(id: &JobId) -> Result<u64> {
    id.0.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| QueueError::NotFound(id.clone()))
}

/// What the broker keeps of a message besides its envelope.
struct Stored {
    id: u64,
    queue: String,
    priority: u32,
    max_attempts: u32,
    created_at_ms: u64,
    owner: String,
}

fn job(m: Stored, payload: &[u8]) -> Result<Job> {
    let Stored {
        id,
        queue,
        priority,
        max_attempts,
        created_at_ms,
        owner,
    } = m;
    let env: Envelope = serde_json::from_slice(payload).map_err(|e| {
        QueueError::Backend(format!(
            "message {id} in queue {queue} is not a docproc job: {e}"
        ))
    })?;
    let owner = nonempty(owner).or_else(|| legacy_owner(&env.payload));
    Ok(Job {
        job_id: job_id(id),
        job_type: queue,
        owner,
        payload: env.payload,
        priority: Priority::from_level(priority),
        max_retries: max_attempts.saturating_sub(1),
        timeout: Duration::from_millis(env.timeout_ms),
        correlation_id: env.correlation_id,
        callback_context: env.callback_context,
        created_at_ms,
    })
}

fn status(s: pb::State) -> JobStatus {
    match s {
        pb::State::Delayed => JobStatus::Pending,
        pb::State::Queued | pb::State::Unspecified => JobStatus::Queued,
        pb::State::Leased => JobStatus::Processing,
        pb::State::Retrying => JobStatus::Retrying,
        pb::State::Completed => JobStatus::Completed,
        pb::State::Dead => JobStatus::Failed,
        pb::State::Cancelled => JobStatus::Cancelled,
    }
}

fn state(s: JobStatus) -> pb::State {
    match s {
        JobStatus::Pending => pb::State::Delayed,
        JobStatus::Queued => pb::State::Queued,
        JobStatus::Processing => pb::State::Leased,
        JobStatus::Retrying => pb::State::Retrying,
        JobStatus::Completed => pb::State::Completed,
        JobStatus::Failed => pb::State::Dead,
        JobStatus::Cancelled => pb::State::Cancelled,
    }
}

fn json(bytes: &[u8]) -> Option<Value> {
    (!bytes.is_empty()).then(|| serde_json::from_slice(bytes).ok())?
}

fn nonzero(ms: u64) -> Option<u64> {
    (ms > 0).then_some(ms)
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn record(m: pb::Message) -> Result<JobRecord> {
    let st = m.state();
    let job = job(
        Stored {
            id: m.id,
            queue: m.queue,
            priority: m.priority,
            max_attempts: m.max_attempts,
            created_at_ms: m.created_at_ms,
            owner: m.owner,
        },
        &m.payload,
    )?;
    Ok(JobRecord {
        job,
        status: status(st),
        attempts: m.attempts,
        result: json(&m.result),
        // A completed job's last error is history, not its outcome.
        error: if st == pb::State::Completed {
            None
        } else {
            nonempty(m.last_error)
        },
        progress: json(&m.progress),
        worker_id: nonempty(m.worker_id),
        started_at_ms: nonzero(m.started_at_ms),
        completed_at_ms: nonzero(m.finished_at_ms),
        updated_at_ms: m.updated_at_ms,
        cancel_requested: m.cancel_requested,
    })
}

fn event(e: pb::Event) -> JobEvent {
    let st = e.state();
    JobEvent {
        job_id: job_id(e.id),
        job_type: e.queue,
        status: status(st),
        attempts: e.attempts,
        error: if matches!(st, pb::State::Retrying | pb::State::Dead) {
            nonempty(e.error)
        } else {
            None
        },
        worker_id: nonempty(e.worker_id),
        priority: Priority::from_level(e.priority),
        progress: e.progress,
        at_ms: e.at_ms,
    }
}

fn type_stats(q: pb::QueueStats) -> JobTypeStats {
    let c = q.counters.unwrap_or_default();
    JobTypeStats {
        job_type: q.queue,
        priorities: q
            .priorities
            .into_iter()
            .map(|p| PriorityDepth {
                priority: Priority::from_level(p.priority),
                pending: p.delayed,
                queued: p.ready,
                processing: p.leased,
                retrying: p.retrying,
                failed: p.dead,
                oldest_queued_at_ms: (p.ready > 0 && p.oldest_ready_created_at_ms > 0)
                    .then_some(p.oldest_ready_created_at_ms),
            })
            .collect(),
        counters: Counters {
            published: c.produced,
            started: c.delivered,
            completed: c.acked,
            retried: c.retried,
            lease_expired: c.redelivered,
            failed: c.dead_lettered,
            cancelled: c.cancelled,
        },
    }
}

fn cursor_string(c: &pb::ListCursor) -> String {
    format!("{}-{}", c.created_at_ms, c.id)
}

fn parse_cursor(s: &str) -> Result<pb::ListCursor> {
    let bad = || QueueError::InvalidArgument(format!("invalid cursor {s:?}"));
    let (c, id) = s.split_once('-').ok_or_else(bad)?;
    Ok(pb::ListCursor {
        created_at_ms: c.parse().map_err(|_| bad())?,
        id: id.parse().map_err(|_| bad())?,
    })
}

fn list_request(q: &ListQuery) -> Result<pb::ListRequest> {
    q.validate()?;
    Ok(pb::ListRequest {
        owner: q.owner.clone().unwrap_or_default(),
        queues: q.job_types.clone(),
        states: q.statuses.iter().map(|s| state(*s) as i32).collect(),
        created_from_ms: q.created_from_ms.unwrap_or(0),
        created_to_ms: q.created_to_ms.unwrap_or(0),
        after: q.cursor.as_deref().map(parse_cursor).transpose()?,
        limit: q.limit.unwrap_or(0),
        with_payload: true,
    })
}

#[async_trait]
impl<B: BrokerApi> Queue for BrokerQueue<B> {
    fn backend(&self) -> &'static str {
        self.name
    }

    fn storage_failure(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        self.api.storage_failure()
    }

    fn fsync_latency(&self) -> Option<SyncLatency> {
        let (counts, sum, count) = self.api.sync_latency()?;
        Some(SyncLatency {
            bounds: &docproc_broker::SYNC_BOUNDS,
            counts,
            sum,
            count,
        })
    }

    async fn publish(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Err(QueueError::InvalidArgument(
                "publish needs at least one job".into(),
            ));
        }
        let msgs = jobs
            .into_iter()
            .enumerate()
            .map(|(i, j)| encode(j).map_err(|e| at_index(e, i)))
            .collect::<Result<Vec<_>>>()?;
        let mut ids = Vec::with_capacity(msgs.len());
        let mut msgs = msgs.into_iter().peekable();
        while msgs.peek().is_some() {
            let chunk: Vec<_> = msgs.by_ref().take(PRODUCE_CHUNK).collect();
            ids.extend(self.api.produce(chunk).await?.into_iter().map(job_id));
        }
        Ok(ids)
    }

    async fn consume(&self, job_types: &[String], opts: ConsumeOptions) -> Result<LeaseStream> {
        validate_job_types(job_types)?;
        let deliveries = self
            .api
            .deliveries(job_types.to_vec(), opts.worker_id, opts.prefetch.max(1))
            .await?;
        let (api, retry) = (self.api.clone(), self.retry);
        Ok(deliveries
            .map(move |item| {
                let (d, held) = item?;
                let job = job(
                    Stored {
                        id: d.id,
                        queue: d.queue,
                        priority: d.priority,
                        max_attempts: d.max_attempts,
                        created_at_ms: d.created_at_ms,
                        owner: d.owner,
                    },
                    &d.payload,
                )?;
                let ops = BrokerLease {
                    api: api.clone(),
                    id: d.id,
                    token: d.lease_token,
                    held,
                };
                Ok(Lease::new(
                    job,
                    d.attempt,
                    d.lease_deadline_ms,
                    retry,
                    Box::new(ops),
                ))
            })
            .boxed())
    }

    async fn get(&self, id: &JobId) -> Result<JobRecord> {
        record(self.api.get(parse_id(id)?).await?)
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelOutcome> {
        let n = parse_id(id)?;
        match self.api.cancel(n).await {
            Ok(pb::State::Cancelled) => Ok(CancelOutcome::Cancelled),
            Ok(_) => Ok(CancelOutcome::Requested),
            Err(QueueError::LeaseLost(_)) => Err(QueueError::Conflict {
                id: id.clone(),
                status: status(self.api.get(n).await?.state()),
                action: "cancel",
            }),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<JobPage> {
        let resp = self.api.list(list_request(query)?).await?;
        Ok(JobPage {
            jobs: resp
                .messages
                .into_iter()
                .map(record)
                .collect::<Result<_>>()?,
            next_cursor: resp.next.as_ref().map(cursor_string),
        })
    }

    async fn stats(&self) -> Result<Vec<JobTypeStats>> {
        Ok(self
            .api
            .stats()
            .await?
            .into_iter()
            .map(type_stats)
            .collect())
    }

    async fn watch(&self, filter: WatchFilter) -> Result<EventStream> {
        for t in &filter.job_types {
            validate_job_type(t)?;
        }
        let ids: Vec<u64> = filter
            .job_ids
            .iter()
            .filter_map(|i| parse_id(i).ok())
            .collect();
        if ids.is_empty() && !filter.job_ids.is_empty() {
            // Only ids this backend never made: nothing will ever match.
            return Ok(futures::stream::pending().boxed());
        }
        let events = self.api.events(filter.job_types, ids).await?;
        Ok(events
            .map(|e| {
                let e = e?;
                if e.lagged > 0 {
                    return Err(QueueError::Lagged(e.lagged));
                }
                Ok(event(e))
            })
            .boxed())
    }

    async fn close(&self) {
        self.api.close().await;
    }
}

fn at_index(e: QueueError, i: usize) -> QueueError {
    match e {
        QueueError::InvalidArgument(m) => QueueError::InvalidArgument(format!("job {i}: {m}")),
        e => e,
    }
}

/// A lease on the broker protocol.
struct BrokerLease<B> {
    api: B,
    id: u64,
    token: u64,
    held: Held,
}

#[async_trait]
impl<B: BrokerApi> LeaseOps for BrokerLease<B> {
    async fn complete(&self, result: Vec<u8>) -> Result<bool> {
        self.api.ack(&self.held, self.id, self.token, result).await
    }

    async fn fail(&self, error: &str, retry_after: Option<Duration>) -> Result<JobStatus> {
        let delay_ms = retry_after.map_or(0, |d| (d.as_millis() as u64).max(1));
        let st = self
            .api
            .nack(
                &self.held,
                self.id,
                self.token,
                error,
                delay_ms,
                retry_after.is_none(),
            )
            .await?;
        Ok(status(st))
    }

    async fn release(&self, _reason: &str) -> Result<JobStatus> {
        Ok(status(
            self.api.release(&self.held, self.id, self.token).await?,
        ))
    }

    async fn renew(&self, progress: Option<Vec<u8>>) -> Result<Heartbeat> {
        let r = self
            .api
            .extend(&self.held, self.id, self.token, progress)
            .await?;
        Ok(Heartbeat {
            cancelled: r.cancelled,
            deadline_ms: r.lease_deadline_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_through_messages() {
        let new = NewJob::new("pdf_processing", serde_json::json!({"path": "/x"}))
            .priority(Priority::Urgent)
            .max_retries(2)
            .timeout(Duration::from_millis(1500))
            .correlation_id("c-1")
            .callback_context(serde_json::json!({"user": 7}))
            .owner("team-a");
        let m = encode(new.clone()).unwrap();
        assert_eq!(m.owner, "team-a");
        assert_eq!(
            (m.priority, m.max_attempts, m.lease_timeout_ms),
            (3, 3, 1500)
        );
        let stored = |id, queue: String, owner: &str| Stored {
            id,
            queue,
            priority: m.priority,
            max_attempts: m.max_attempts,
            created_at_ms: 9,
            owner: owner.into(),
        };
        let j = job(stored(42, m.queue.clone(), &m.owner), &m.payload).unwrap();
        assert_eq!(j.job_id, JobId("42".into()));
        assert_eq!(
            (j.job_type.as_str(), j.priority, j.max_retries, j.timeout),
            (
                "pdf_processing",
                Priority::Urgent,
                2,
                Duration::from_millis(1500)
            )
        );
        assert_eq!(
            (j.payload, j.correlation_id, j.callback_context, j.owner),
            (
                new.payload,
                new.correlation_id,
                new.callback_context,
                new.owner
            )
        );
        assert!(job(stored(1, "q".into(), ""), b"not json").is_err());
        // A job stored before owners were a field: its payload's `owner`.
        let legacy = br#"{"payload": {"owner": "team-b"}, "timeout_ms": 1000}"#;
        let j = job(stored(2, "q".into(), ""), legacy).unwrap();
        assert_eq!(j.owner.as_deref(), Some("team-b"));
    }

    #[test]
    fn ids_and_cursors_parse_strictly() {
        assert_eq!(parse_id(&"17".into()).unwrap(), 17);
        for bad in ["0", "-1", "abc", "", "1.5"] {
            assert!(matches!(
                parse_id(&bad.into()),
                Err(QueueError::NotFound(_))
            ));
        }
        let c = pb::ListCursor {
            created_at_ms: 5,
            id: 9,
        };
        assert_eq!(parse_cursor(&cursor_string(&c)).unwrap(), c);
        assert!(parse_cursor("x").is_err());
    }

    #[test]
    fn every_status_maps_to_a_state_and_back() {
        for s in JobStatus::ALL {
            assert_eq!(status(state(s)), s);
        }
    }
}
