//! A worker's hold on a Kafka job: complete, fail (through the delayed
//! topic when retries are left) or renew, each a status record; the job
//! message's offset is released for commit only once the job is finished,
//! failed or handed on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::feed::Feed;
use super::{now_ms, Inner};
use crate::error::{QueueError, Result};
use crate::lease::{Heartbeat, Lease, LeaseOps};
use crate::model::{Job, JobId, JobStatus};
use crate::statuslog::wire::{delivery_id, report, JobMsg};

struct KafkaLease {
    inner: Arc<Inner>,
    feed: Arc<Feed>,
    id: JobId,
    token: String,
}

pub(super) fn make(
    inner: Arc<Inner>,
    feed: Arc<Feed>,
    job: Job,
    attempt: u32,
    deadline_ms: u64,
    token: String,
) -> Lease {
    let retry = inner.cfg.retry;
    let id = job.job_id.clone();
    Lease::new(
        job,
        attempt,
        deadline_ms,
        retry,
        Box::new(KafkaLease {
            inner,
            feed,
            id,
            token,
        }),
    )
}

impl KafkaLease {
    /// The message this lease holds, after checking the lease is still ours.
    fn check(&self) -> Result<(String, i32, i64)> {
        self.feed.holds(&self.id, &self.token)
    }

    fn snapshot(&self) -> Result<(crate::statuslog::wire::Snapshot, bool)> {
        self.inner
            .view
            .get(&self.id)
            .ok_or_else(|| QueueError::LeaseLost(self.id.clone()))
    }
}

#[async_trait]
impl LeaseOps for KafkaLease {
    async fn complete(&self, result: Vec<u8>) -> Result<bool> {
        let result = report(&result, "result")?;
        let (topic, partition, offset) = self.check()?;
        let (mut snap, cancel) = self.snapshot()?;
        let now = now_ms();
        if cancel {
            self.inner
                .finish(&mut snap, JobStatus::Cancelled, now)
                .await?;
        } else {
            snap.result = Some(result);
            snap.error = None;
            self.inner
                .finish(&mut snap, JobStatus::Completed, now)
                .await?;
        }
        self.feed.release(&self.id);
        self.feed.done(&topic, partition, offset);
        Ok(cancel)
    }

    async fn fail(&self, error: &str, retry_after: Option<Duration>) -> Result<JobStatus> {
        let (topic, partition, offset) = self.check()?;
        let (mut snap, cancel) = self.snapshot()?;
        let now = now_ms();
        snap.error = Some(error.to_string());
        let status = if cancel {
            self.inner
                .finish(&mut snap, JobStatus::Cancelled, now)
                .await?;
            JobStatus::Cancelled
        } else if retry_after.is_none() || snap.attempts > snap.job.max_retries {
            self.inner.finish(&mut snap, JobStatus::Failed, now).await?;
            JobStatus::Failed
        } else {
            let delay = retry_after.unwrap_or_default().as_millis() as u64;
            let delivery = delivery_id();
            // The retry message first: if this process dies before the
            // status is written, the job's own message is fetched again.
            self.inner
                .send_delayed(&JobMsg {
                    job: snap.job.clone(),
                    delivery: delivery.clone(),
                    attempt: snap.attempts + 1,
                    due_ms: Some(now + delay),
                })
                .await?;
            snap.rev += 1;
            snap.status = JobStatus::Retrying;
            snap.retries += 1;
            snap.delivery = delivery;
            snap.leased_at = None;
            snap.deadline_ms = None;
            snap.updated_at_ms = now;
            self.inner.write_status(&snap).await?;
            JobStatus::Retrying
        };
        self.feed.release(&self.id);
        self.feed.done(&topic, partition, offset);
        Ok(status)
    }

    async fn renew(&self, progress: Option<Vec<u8>>) -> Result<Heartbeat> {
        let progress = progress.map(|p| report(&p, "progress")).transpose()?;
        self.check()?;
        let (mut snap, cancel) = self.snapshot()?;
        let now = now_ms();
        let deadline_ms = now + snap.job.timeout.as_millis() as u64;
        snap.rev += 1;
        snap.deadline_ms = Some(deadline_ms);
        snap.updated_at_ms = now;
        if let Some(p) = progress {
            snap.progress = Some(p);
        }
        self.inner.write_status(&snap).await?;
        self.feed.extend(&self.id, deadline_ms);
        Ok(Heartbeat {
            cancelled: cancel,
            deadline_ms,
        })
    }
}
