//! What the log-backed adapters (Kafka, RabbitMQ) write: job messages (the
//! job and the id of this delivery), status snapshots (the whole job
//! state, keyed `s:ID` in the status log) and cancel markers (`c:ID`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{QueueError, Result};
use crate::model::{Job, JobEvent, JobId, JobRecord, JobStatus, NewJob};

/// A job message on a job topic or the delayed topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobMsg {
    pub(crate) job: Job,
    /// Which delivery of the job this is; a message whose delivery is not
    /// the one the status names is a stale copy and is skipped.
    pub(crate) delivery: String,
    /// The attempt it will be (also in the `attempt` header).
    pub(crate) attempt: u32,
    /// Delayed topic only: when to move it to its job topic, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) due_ms: Option<u64>,
}

/// Where a leased message sits: its partition and offset (Kafka; the
/// RabbitMQ adapter leaves it empty).
pub(crate) type Coord = (i32, i64);

/// The job's state as the status topic keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// Incremented by every write; a reader keeps the highest.
    pub(crate) rev: u64,
    pub(crate) job: Job,
    pub(crate) status: JobStatus,
    pub(crate) attempts: u32,
    #[serde(default)]
    pub(crate) result: Option<Value>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) progress: Option<Value>,
    #[serde(default)]
    pub(crate) worker_id: Option<String>,
    #[serde(default)]
    pub(crate) started_at_ms: Option<u64>,
    #[serde(default)]
    pub(crate) completed_at_ms: Option<u64>,
    pub(crate) updated_at_ms: u64,
    /// The live message's delivery id.
    pub(crate) delivery: String,
    /// While processing: the leased message and the lease's end.
    #[serde(default)]
    pub(crate) leased_at: Option<Coord>,
    #[serde(default)]
    pub(crate) deadline_ms: Option<u64>,
    /// Failed attempts handed to the retry topic, and expired leases.
    #[serde(default)]
    pub(crate) retries: u32,
    #[serde(default)]
    pub(crate) expiries: u32,
    /// While processing (RabbitMQ): the token of the lease that holds the
    /// job, so a lease whose message went to another worker knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lease: Option<String>,
}

impl Snapshot {
    /// The first state of a published job.
    pub(crate) fn new(job: Job, status: JobStatus, delivery: String, now: u64) -> Self {
        Self {
            rev: 1,
            job,
            status,
            attempts: 0,
            result: None,
            error: None,
            progress: None,
            worker_id: None,
            started_at_ms: None,
            completed_at_ms: None,
            updated_at_ms: now,
            delivery,
            leased_at: None,
            deadline_ms: None,
            retries: 0,
            expiries: 0,
            lease: None,
        }
    }

    /// The state of a new attempt by `worker`, its lease running a job
    /// timeout from `now`; answers the lease's deadline. The adapter adds
    /// where the lease is (`lease` or `leased_at`).
    pub(crate) fn start(&mut self, worker: &str, now: u64) -> u64 {
        let deadline_ms = now + self.job.timeout.as_millis() as u64;
        self.rev += 1;
        self.status = JobStatus::Processing;
        self.attempts += 1;
        self.worker_id = Some(worker.to_string());
        self.started_at_ms = Some(now);
        self.updated_at_ms = now;
        self.progress = None;
        self.deadline_ms = Some(deadline_ms);
        deadline_ms
    }

    /// Forgets the lease that held the job (it ended).
    pub(crate) fn end_lease(&mut self) {
        self.leased_at = None;
        self.lease = None;
        self.deadline_ms = None;
    }

    /// As the queue trait shows it; `cancel` is whether a marker exists.
    pub(crate) fn record(&self, cancel: bool) -> JobRecord {
        JobRecord {
            job: self.job.clone(),
            status: self.status,
            attempts: self.attempts,
            result: self.result.clone(),
            error: self.error.clone(),
            progress: self.progress.clone(),
            worker_id: self.worker_id.clone(),
            started_at_ms: self.started_at_ms,
            completed_at_ms: self.completed_at_ms,
            updated_at_ms: self.updated_at_ms,
            cancel_requested: cancel && !self.status.is_final(),
        }
    }

    /// The event a change to this state is.
    pub(crate) fn event(&self, progress: bool) -> JobEvent {
        JobEvent {
            job_id: self.job.job_id.clone(),
            job_type: self.job.job_type.clone(),
            status: self.status,
            attempts: self.attempts,
            error: self.error.clone(),
            worker_id: self.worker_id.clone(),
            priority: self.job.priority,
            progress,
            at_ms: self.updated_at_ms,
        }
    }
}

/// Status topic key of a job's snapshot.
pub(crate) fn status_key(id: &JobId) -> String {
    format!("s:{id}")
}

/// Status topic key of a job's cancel marker.
pub(crate) fn cancel_key(id: &JobId) -> String {
    format!("c:{id}")
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| QueueError::Backend(format!("encoding: {e}")))
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(raw: &'a [u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| QueueError::Backend(format!("unreadable record: {e}")))
}

/// A fresh delivery id.
pub(crate) fn delivery_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A new job id: creation time, this process's sequence and randomness,
/// so ids sort by creation (in publish order within a process) and
/// processes never collide without coordinating.
pub(crate) fn job_id(now_ms: u64) -> JobId {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xffff;
    JobId(format!(
        "{now_ms:012x}{seq:04x}{:04x}",
        rand::random::<u16>()
    ))
}

/// Whether `id` has the shape [`job_id`] makes.
pub(crate) fn plausible_id(id: &JobId) -> bool {
    id.0.len() == 20 && id.0.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Largest payload, result or progress report, in bytes.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

/// A published job's first state (id and creation time assigned; pending
/// when it is due later) and when it is due, if later than `now`.
pub(crate) fn first_state(j: NewJob, now: u64) -> (Snapshot, Option<u64>) {
    let later = j.run_at_ms.filter(|t| *t > now);
    let job = Job {
        job_id: job_id(now),
        job_type: j.job_type,
        payload: j.payload,
        priority: j.priority,
        max_retries: j.max_retries,
        timeout: j.timeout,
        correlation_id: j.correlation_id,
        callback_context: j.callback_context,
        created_at_ms: now,
        owner: j.owner,
    };
    let status = if later.is_some() {
        JobStatus::Pending
    } else {
        JobStatus::Queued
    };
    (Snapshot::new(job, status, delivery_id(), now), later)
}

/// Refuses a job whose payload is larger than [`MAX_VALUE_BYTES`].
pub(crate) fn payload_fits(job: &NewJob) -> Result<()> {
    let size = serde_json::to_vec(&job.payload).map_or(0, |v| v.len());
    if size > MAX_VALUE_BYTES {
        return Err(QueueError::TooLarge(format!(
            "payload of {size} bytes exceeds {MAX_VALUE_BYTES}"
        )));
    }
    Ok(())
}

/// A worker's result or progress report as JSON, at most [`MAX_VALUE_BYTES`].
pub(crate) fn report(bytes: &[u8], what: &str) -> Result<Value> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(QueueError::TooLarge(format!(
            "{what} of {} bytes exceeds {MAX_VALUE_BYTES}",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| QueueError::InvalidArgument(format!("{what}: {e}")))
}
