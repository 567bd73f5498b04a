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
use crate::statuslog::settle::StatusLog;
use crate::statuslog::wire::report;

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
        let cancelled = self
            .inner
            .complete(&mut snap, cancel, result, now_ms())
            .await?;
        self.feed.release(&self.id);
        self.feed.done(&topic, partition, offset);
        Ok(cancelled)
    }

    async fn fail(&self, error: &str, retry_after: Option<Duration>) -> Result<JobStatus> {
        let (topic, partition, offset) = self.check()?;
        let (mut snap, cancel) = self.snapshot()?;
        let status = self
            .inner
            .fail(&mut snap, cancel, error, retry_after, now_ms())
            .await?;
        self.feed.release(&self.id);
        self.feed.done(&topic, partition, offset);
        Ok(status)
    }

    async fn renew(&self, progress: Option<Vec<u8>>) -> Result<Heartbeat> {
        let progress = progress.map(|p| report(&p, "progress")).transpose()?;
        self.check()?;
        let (mut snap, cancel) = self.snapshot()?;
        let deadline_ms = self.inner.renew(&mut snap, progress, now_ms()).await?;
        self.feed.extend(&self.id, deadline_ms);
        Ok(Heartbeat {
            cancelled: cancel,
            deadline_ms,
        })
    }
}
