//! The job model every queue backend speaks: jobs, statuses, events, stats
//! and listing queries. Plain data, serializable as the HTTP API shows it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::QueueError;

/// Longest job type name; `A-Z a-z 0-9 . _ -` only, so every backend can
/// use it in a key or topic name.
pub const MAX_JOB_TYPE_LEN: usize = 100;

/// A job's id, assigned by the backend at publish. Opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_string())
    }
}

/// How urgently a job runs: higher priorities are always served first
/// within a job type; FIFO within one priority.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal work.
    High,
    /// Ahead of everything.
    Urgent,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    /// 0 (low) to 3 (urgent): the number backends store and order by.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// The priority of a stored level; levels above 3 count as urgent.
    pub fn from_level(level: u32) -> Self {
        match level {
            0 => Priority::Low,
            1 => Priority::Normal,
            2 => Priority::High,
            _ => Priority::Urgent,
        }
    }

    /// Lowercase name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                QueueError::InvalidArgument(format!(
                    "unknown priority {s:?}; use low, normal, high or urgent"
                ))
            })
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted but not yet eligible to run (scheduled for later).
    Pending,
    /// Waiting for a worker.
    Queued,
    /// Held by a worker under a lease.
    Processing,
    /// Finished with a result.
    Completed,
    /// Failed for good: out of retries, or failed permanently.
    Failed,
    /// Failed and waiting for its retry backoff.
    Retrying,
    /// Cancelled by a client.
    Cancelled,
}

impl JobStatus {
    /// Every status.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Retrying,
        JobStatus::Cancelled,
    ];

    /// Completed, failed and cancelled jobs never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Lowercase name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Retrying => "retrying",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| QueueError::InvalidArgument(format!("unknown job status {s:?}")))
    }
}

/// A job to publish. Build with [`NewJob::new`] and the setters; each
/// setter's doc names its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// What kind of work: `excel_processing`, `pdf_processing`, `ai_analysis`, …
    pub job_type: String,
    /// Input of the handler.
    pub payload: Value,
    /// Default normal.
    pub priority: Priority,
    /// Failures retried before the job fails for good. Default 3.
    pub max_retries: u32,
    /// The lease: a worker silent for longer loses the job. Default 300 s.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Shared by related jobs (an upload and its analysis). Default none.
    pub correlation_id: Option<String>,
    /// Opaque data handed back with notifications. Default none.
    pub callback_context: Option<Value>,
    /// Not to run before this time (Unix ms); the job is `pending` until
    /// then. Default none: at once.
    #[serde(default)]
    pub run_at_ms: Option<u64>,
    /// Who the job belongs to (the API key that submitted it); listings can
    /// ask for one owner's jobs. Default none.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Default failures retried.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default lease of a job.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Most retries a job may ask for.
pub const MAX_RETRIES_LIMIT: u32 = 100;
/// Shortest and longest lease a job may ask for.
pub const TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(24 * 3600));

impl NewJob {
    /// A normal-priority job with 3 retries and a 300 s timeout.
    pub fn new(job_type: impl Into<String>, payload: Value) -> Self {
        Self {
            job_type: job_type.into(),
            payload,
            priority: Priority::Normal,
            max_retries: DEFAULT_MAX_RETRIES,
            timeout: DEFAULT_TIMEOUT,
            correlation_id: None,
            callback_context: None,
            run_at_ms: None,
            owner: None,
        }
    }

    /// Sets the priority (default normal).
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Sets the failures retried before the job fails (default 3).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the lease (default 300 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets the correlation id (default none).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the callback context (default none).
    pub fn callback_context(mut self, ctx: Value) -> Self {
        self.callback_context = Some(ctx);
        self
    }

    /// Sets the owner (default none).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Holds the job back until `unix_ms` (default: runs at once).
    pub fn run_at_ms(mut self, unix_ms: u64) -> Self {
        self.run_at_ms = Some(unix_ms);
        self
    }

    /// Checks what every backend needs: a usable job type, bounded retries
    /// and timeout.
    pub fn validate(&self) -> Result<(), QueueError> {
        validate_job_type(&self.job_type)?;
        if let Some(o) = &self.owner {
            validate_owner(o)?;
        }
        if self.max_retries > MAX_RETRIES_LIMIT {
            return Err(QueueError::InvalidArgument(format!(
                "max_retries {} exceeds {MAX_RETRIES_LIMIT}",
                self.max_retries
            )));
        }
        let (lo, hi) = TIMEOUT_RANGE;
        if self.timeout < lo || self.timeout > hi {
            return Err(QueueError::InvalidArgument(format!(
                "timeout must be between {lo:?} and {hi:?}, got {:?}",
                self.timeout
            )));
        }
        Ok(())
    }
}

/// Longest owner name.
pub const MAX_OWNER_LEN: usize = 128;

/// Checks an owner name: 1..=128 bytes without control characters.
pub fn validate_owner(owner: &str) -> Result<(), QueueError> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN || owner.chars().any(char::is_control) {
        return Err(QueueError::InvalidArgument(format!(
            "owner must be 1 to {MAX_OWNER_LEN} bytes without control characters, got {} bytes",
            owner.len()
        )));
    }
    Ok(())
}

/// The owner of a job stored before owners were a field of their own: the
/// server kept it in the payload's `owner`. Adapters fall back to it when a
/// stored job has no owner, so old jobs stay visible to their API key.
pub(crate) fn legacy_owner(payload: &Value) -> Option<String> {
    payload
        .get("owner")
        .and_then(Value::as_str)
        .filter(|o| validate_owner(o).is_ok())
        .map(str::to_string)
}

/// Checks the job types a consumer asks for: at least one, each valid.
pub fn validate_job_types(types: &[String]) -> Result<(), QueueError> {
    if types.is_empty() {
        return Err(QueueError::InvalidArgument(
            "consume needs at least one job type".into(),
        ));
    }
    types.iter().try_for_each(|t| validate_job_type(t))
}

/// Checks a publish batch whole: not empty, at most `max` jobs, each job
/// valid (errors name the job's index).
pub fn validate_batch(jobs: &[NewJob], max: usize) -> Result<(), QueueError> {
    if jobs.is_empty() {
        return Err(QueueError::InvalidArgument(
            "publish needs at least one job".into(),
        ));
    }
    if jobs.len() > max {
        return Err(QueueError::TooLarge(format!(
            "{} jobs in one publish; at most {max}",
            jobs.len()
        )));
    }
    jobs.iter().enumerate().try_for_each(|(i, j)| {
        j.validate().map_err(|e| match e {
            QueueError::InvalidArgument(m) => QueueError::InvalidArgument(format!("job {i}: {m}")),
            other => other,
        })
    })
}

/// Checks a job type name: 1..=100 of `A-Z a-z 0-9 . _ -`.
pub fn validate_job_type(t: &str) -> Result<(), QueueError> {
    let ok = !t.is_empty()
        && t.len() <= MAX_JOB_TYPE_LEN
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument(format!(
            "job type {t:?} must be 1 to {MAX_JOB_TYPE_LEN} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// A published job: what was asked for plus its id and creation time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Assigned at publish.
    pub job_id: JobId,
    /// What kind of work.
    pub job_type: String,
    /// Input of the handler.
    pub payload: Value,
    /// Its priority.
    pub priority: Priority,
    /// Failures retried before the job fails for good.
    pub max_retries: u32,
    /// The lease.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Shared by related jobs.
    pub correlation_id: Option<String>,
    /// Opaque data handed back with notifications.
    pub callback_context: Option<Value>,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Who the job belongs to.
    #[serde(default)]
    pub owner: Option<String>,
}

/// A job with everything known about its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job as published.
    pub job: Job,
    /// Where it is now.
    pub status: JobStatus,
    /// Deliveries so far (1 once a worker first took it).
    pub attempts: u32,
    /// What the handler returned (completed jobs).
    pub result: Option<Value>,
    /// The last failure (retrying and failed jobs; also the lease expiry).
    pub error: Option<String>,
    /// The last progress a worker reported.
    pub progress: Option<Value>,
    /// The worker holding or last holding the job.
    pub worker_id: Option<String>,
    /// Unix ms of the last delivery.
    pub started_at_ms: Option<u64>,
    /// Unix ms at which it became final.
    pub completed_at_ms: Option<u64>,
    /// Unix ms of the last change.
    pub updated_at_ms: u64,
    /// Cancel was asked while a worker held it.
    pub cancel_requested: bool,
}

impl JobRecord {
    /// Time from the last start to the end, for final jobs that ran.
    pub fn processing_time(&self) -> Option<Duration> {
        match (self.started_at_ms, self.completed_at_ms) {
            (Some(s), Some(e)) if e >= s => Some(Duration::from_millis(e - s)),
            _ => None,
        }
    }
}

/// A status change, as pushed by [`Queue::watch`](super::Queue::watch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// Its type.
    pub job_type: String,
    /// Its status after the change.
    pub status: JobStatus,
    /// Deliveries so far.
    pub attempts: u32,
    /// The failure, for retrying and failed jobs.
    pub error: Option<String>,
    /// The worker, when one is involved.
    pub worker_id: Option<String>,
    /// Its priority.
    pub priority: Priority,
    /// Only the progress changed (the status stays processing).
    pub progress: bool,
    /// Unix ms of the change.
    pub at_ms: u64,
}

/// Which events a watch delivers; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only these jobs.
    pub job_ids: Vec<JobId>,
    /// Only jobs of these types.
    pub job_types: Vec<String>,
}

impl WatchFilter {
    /// Events of these jobs.
    pub fn jobs(ids: impl IntoIterator<Item = JobId>) -> Self {
        Self {
            job_ids: ids.into_iter().collect(),
            job_types: Vec::new(),
        }
    }

    /// Events of jobs of these types.
    pub fn job_types<S: Into<String>>(types: impl IntoIterator<Item = S>) -> Self {
        Self {
            job_ids: Vec::new(),
            job_types: types.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether an event passes the filter.
    pub fn matches(&self, e: &JobEvent) -> bool {
        (self.job_ids.is_empty() || self.job_ids.contains(&e.job_id))
            && (self.job_types.is_empty() || self.job_types.contains(&e.job_type))
    }
}

/// A listing request: filters (empty or `None` match everything) and a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only these job types.
    pub job_types: Vec<String>,
    /// Only these statuses.
    pub statuses: Vec<JobStatus>,
    /// Created at or after (Unix ms).
    pub created_from_ms: Option<u64>,
    /// Created before (Unix ms).
    pub created_to_ms: Option<u64>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<u32>,
    /// Only jobs of this owner. Every backend answers it from an index, so
    /// a page holds up to `limit` of the owner's jobs whatever others hold.
    pub owner: Option<String>,
}

/// Page size when a query names none.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest page.
pub const MAX_LIST_LIMIT: usize = 1000;

impl ListQuery {
    /// The page size asked for: `limit` up to [`MAX_LIST_LIMIT`],
    /// [`DEFAULT_LIST_LIMIT`] when unset or 0.
    pub fn page_size(&self) -> usize {
        match self.limit {
            None | Some(0) => DEFAULT_LIST_LIMIT,
            Some(n) => (n as usize).min(MAX_LIST_LIMIT),
        }
    }

    /// Checks the filters every backend needs valid: job types and owner.
    pub fn validate(&self) -> Result<(), QueueError> {
        self.job_types
            .iter()
            .try_for_each(|t| validate_job_type(t))?;
        self.owner.as_deref().map_or(Ok(()), validate_owner)
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Counts of one job type and priority, by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityDepth {
    /// The priority.
    pub priority: Priority,
    /// Scheduled for later.
    pub pending: u64,
    /// Waiting for a worker.
    pub queued: u64,
    /// Held by workers.
    pub processing: u64,
    /// Waiting for a retry.
    pub retrying: u64,
    /// Failed for good and still retained.
    pub failed: u64,
    /// When the oldest job waiting for a worker (`queued`) was published,
    /// in ms since the Unix epoch; `None` when none waits. Jobs scheduled
    /// for later or waiting out a retry backoff are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_at_ms: Option<u64>,
}

/// Lifetime counts of one job type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Jobs published.
    pub published: u64,
    /// Deliveries to workers (first runs and retries).
    pub started: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failures that scheduled a retry.
    pub retried: u64,
    /// Leases that expired and put their job back in the queue.
    pub lease_expired: u64,
    /// Jobs failed for good.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
}

/// Depth and counters of one job type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTypeStats {
    /// The job type.
    pub job_type: String,
    /// Highest priority first; priorities with nothing in them are left out.
    pub priorities: Vec<PriorityDepth>,
    /// Lifetime counts.
    pub counters: Counters,
}

impl JobTypeStats {
    /// Sum of one depth over every priority.
    pub fn total(&self, f: impl Fn(&PriorityDepth) -> u64) -> u64 {
        self.priorities.iter().map(f).sum()
    }

    /// When the oldest job of any priority waiting for a worker was
    /// published (ms since the Unix epoch).
    pub fn oldest_queued_at_ms(&self) -> Option<u64> {
        self.priorities
            .iter()
            .filter_map(|p| p.oldest_queued_at_ms)
            .min()
    }
}

/// What [`Queue::cancel`](super::Queue::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was waiting and is now cancelled.
    Cancelled,
    /// A worker holds the job; it is told through its lease and the job
    /// ends cancelled when the worker gives it back.
    Requested,
}

/// Serializes a `Duration` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_order_and_parse() {
        assert!(Priority::Urgent > Priority::High && Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().ok(), Some(p));
            assert_eq!(Priority::from_level(u32::from(p.level())), p);
        }
        assert!("URGENT".parse::<Priority>().is_ok());
        assert!("asap".parse::<Priority>().is_err());
        assert_eq!(Priority::default(), Priority::Normal);
    }

    #[test]
    fn statuses_parse_and_know_finality() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().ok(), Some(s));
        }
        let finals: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            vec![
                JobStatus::Completed,
                JobStatus::Failed,
                JobStatus::Cancelled
            ]
        );
    }

    #[test]
    fn new_jobs_are_validated() {
        let ok = NewJob::new("excel_processing", Value::Null);
        assert!(ok.validate().is_ok());
        assert!(NewJob::new("", Value::Null).validate().is_err());
        assert!(NewJob::new("has space", Value::Null).validate().is_err());
        assert!(NewJob::new("a/b", Value::Null).validate().is_err());
        assert!(ok.clone().max_retries(101).validate().is_err());
        assert!(ok.clone().timeout(Duration::ZERO).validate().is_err());
        assert!(ok.timeout(Duration::from_secs(90_000)).validate().is_err());
    }

    #[test]
    fn jobs_serialize_as_the_api_shows_them() {
        let j = NewJob::new("pdf_processing", serde_json::json!({"file": "x"}))
            .priority(Priority::High)
            .timeout(Duration::from_secs(2));
        let v = serde_json::to_value(&j).expect("serializes");
        assert_eq!(v["priority"], "high");
        assert_eq!(v["timeout"], 2000);
        let back: NewJob = serde_json::from_value(v).expect("deserializes");
        assert_eq!(back, j);
    }
}
