//! A worker's hold on one job: complete, fail (retry with backoff or fail for
//! good), report progress (which renews the lease and tells of a cancel).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::error::{QueueError, Result};
use super::model::{Job, JobStatus};

/// What an adapter does for a [`Lease`]. Implemented once per backend.
#[async_trait]
pub trait LeaseOps: Send + Sync {
    /// Stores the result and completes the job. `Ok(true)` when the job had
    /// been cancelled meanwhile and so ends cancelled instead.
    async fn complete(&self, result: Vec<u8>) -> Result<bool>;
    /// Records a failure: retried after `retry_after`, or failed for good when
    /// `None` or when the job is out of retries. Answers the status it went to.
    async fn fail(&self, error: &str, retry_after: Option<Duration>) -> Result<JobStatus>;
    /// Renews the lease by the job's timeout, storing `progress` if given.
    async fn renew(&self, progress: Option<Vec<u8>>) -> Result<Heartbeat>;
    /// Hands the job back unworked, ready again at once. Backends that can
    /// (the embedded and gRPC brokers) do not count the delivery as an
    /// attempt; the others record it as a failed attempt retried at once.
    async fn release(&self, reason: &str) -> Result<JobStatus> {
        self.fail(reason, Some(Duration::from_millis(1))).await
    }
}

/// The answer to a progress report or heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The job was cancelled: stop working and give it back (complete or fail).
    pub cancelled: bool,
    /// When the lease now ends, Unix ms.
    pub deadline_ms: u64,
}

/// How a completed lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The result is stored; the job is completed.
    Completed,
    /// The job had been cancelled while running; it ends cancelled.
    Cancelled,
}

/// Exponential backoff between retries of a failed job, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubles per attempt.
    pub base: Duration,
    /// Cap on the delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 1 s doubling up to 5 min.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay after the failure of delivery `attempt` (1 for the first):
    /// `base * 2^(attempt-1)` capped at `max`, of which the upper half is
    /// random so that jobs failed together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = full / 2;
        let jitter = rand::random::<f64>();
        (half + half.mul_f64(jitter)).max(Duration::from_millis(1))
    }
}

/// A job held by a worker until its deadline. Finish it with
/// [`complete`](Lease::complete) or [`fail`](Lease::fail); report
/// [`progress`](Lease::progress) (or [`heartbeat`](Lease::heartbeat)) more
/// often than the job's timeout, or the lease expires and the job is retried.
pub struct Lease {
    job: Job,
    attempt: u32,
    deadline_ms: u64,
    retry: RetryPolicy,
    ops: Box<dyn LeaseOps>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("job_id", &self.job.job_id)
            .field("job_type", &self.job.job_type)
            .field("attempt", &self.attempt)
            .field("deadline_ms", &self.deadline_ms)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Made by adapters.
    pub fn new(
        job: Job,
        attempt: u32,
        deadline_ms: u64,
        retry: RetryPolicy,
        ops: Box<dyn LeaseOps>,
    ) -> Self {
        Self {
            job,
            attempt,
            deadline_ms,
            retry,
            ops,
        }
    }

    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// This delivery's number: 1 the first time, higher on retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the lease ends unless renewed, Unix ms.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// Completes the job with `result`.
    pub async fn complete(self, result: Value) -> Result<Completion> {
        let bytes = serde_json::to_vec(&result)
            .map_err(|e| QueueError::InvalidArgument(format!("result is not JSON: {e}")))?;
        Ok(if self.ops.complete(bytes).await? {
            Completion::Cancelled
        } else {
            Completion::Completed
        })
    }

    /// Fails this attempt: the job is retried after the backoff while it has
    /// retries left, then failed with `error`. Answers `Retrying`, `Failed`
    /// or `Cancelled`.
    pub async fn fail(self, error: &str) -> Result<JobStatus> {
        let delay = self.retry.delay(self.attempt);
        self.ops.fail(error, Some(delay)).await
    }

    /// Fails this attempt and asks for the retry after `delay` instead of
    /// the backoff (a receiver's `Retry-After`, say); failed with `error`
    /// when no retries are left.
    pub async fn fail_after(self, error: &str, delay: Duration) -> Result<JobStatus> {
        self.ops
            .fail(error, Some(delay.max(Duration::from_millis(1))))
            .await
    }

    /// Hands the job back unworked (this worker is shutting down): it is
    /// ready again at once, and on the broker backends this delivery does
    /// not count as an attempt.
    pub async fn release(self, reason: &str) -> Result<JobStatus> {
        self.ops.release(reason).await
    }

    /// Fails the job for good, whatever retries it has left (for input that
    /// can never succeed, such as an encrypted or damaged file).
    pub async fn fail_permanently(self, error: &str) -> Result<JobStatus> {
        self.ops.fail(error, None).await
    }

    /// Stores progress and renews the lease; tells whether the job was cancelled.
    pub async fn progress(&mut self, progress: Value) -> Result<Heartbeat> {
        let bytes = serde_json::to_vec(&progress)
            .map_err(|e| QueueError::InvalidArgument(format!("progress is not JSON: {e}")))?;
        let hb = self.ops.renew(Some(bytes)).await?;
        self.deadline_ms = hb.deadline_ms;
        Ok(hb)
    }

    /// Renews the lease without new progress; tells whether the job was cancelled.
    pub async fn heartbeat(&mut self) -> Result<Heartbeat> {
        let hb = self.ops.renew(None).await?;
        self.deadline_ms = hb.deadline_ms;
        Ok(hb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d50 = p.delay(50);
            assert!(d50 >= Duration::from_millis(500) && d50 <= Duration::from_millis(1000));
        }
        let zero = RetryPolicy {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(1), Duration::from_millis(1), "never zero");
    }
}
