//! The job rules both log-backed adapters apply to their status log — the
//! first publish, the start of an attempt, a worker's answer (complete,
//! fail, renew) and a lease running out; each adapter supplies how a state
//! is written and a job message sent ([`StatusLog`]).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::view::View;
use super::wire::{delivery_id, JobMsg, Snapshot};
use crate::error::{QueueError, Result};
use crate::model::{CancelOutcome, JobId, JobStatus};

/// A log-backed adapter's writes, and the rules built on them.
#[async_trait]
pub(crate) trait StatusLog: Send + Sync {
    /// Writes a job's state and takes it into this process's view.
    async fn write_status(&self, snap: &Snapshot) -> Result<()>;

    /// This process's view of the status log.
    fn view(&self) -> &View;

    /// Writes the cancel marker of a job.
    async fn write_cancel(&self, id: &JobId) -> Result<()>;

    /// Sends a job message to its job queue, ready now.
    async fn send_job(&self, msg: &JobMsg) -> Result<()>;

    /// Sends a job message that is due at its `due_ms`.
    async fn send_delayed(&self, msg: &JobMsg) -> Result<()>;

    /// Publishes new jobs from their first states ([`super::wire::first_state`]):
    /// every status record first, so a worker always finds the job's record,
    /// then the messages; if a message cannot be sent, the batch's jobs are
    /// recorded failed and the error answered.
    async fn publish_first(&self, snaps: Vec<(Snapshot, Option<u64>)>) -> Result<Vec<JobId>> {
        futures::future::try_join_all(snaps.iter().map(|(s, _)| self.write_status(s))).await?;
        let sent = futures::future::try_join_all(snaps.iter().map(|(s, later)| async move {
            let msg = JobMsg {
                job: s.job.clone(),
                delivery: s.delivery.clone(),
                attempt: 1,
                due_ms: *later,
            };
            match later {
                Some(_) => self.send_delayed(&msg).await,
                None => self.send_job(&msg).await,
            }
        }))
        .await;
        if let Err(e) = sent {
            let now = docproc_broker::Clock::now_ms(&docproc_broker::SystemClock);
            for (mut s, _) in snaps {
                s.error = Some(format!("publish failed: {e}"));
                let _ = self.finish(&mut s, JobStatus::Failed, now).await;
            }
            return Err(e);
        }
        Ok(snaps.into_iter().map(|(s, _)| s.job.job_id).collect())
    }

    /// Cancels a job: a waiting one ends cancelled at once (its message is
    /// dropped when taken), a running one is marked for its worker, which
    /// sees the marker on its next heartbeat.
    async fn cancel(&self, id: &JobId) -> Result<CancelOutcome> {
        let Some((mut snap, _)) = self.view().get(id) else {
            return Err(QueueError::NotFound(id.clone()));
        };
        if snap.status.is_final() {
            return Err(QueueError::Conflict {
                id: id.clone(),
                status: snap.status,
                action: "cancel",
            });
        }
        self.write_cancel(id).await?;
        self.view().set_cancel(id.clone(), true);
        if snap.status == JobStatus::Processing {
            return Ok(CancelOutcome::Requested);
        }
        let now = docproc_broker::Clock::now_ms(&docproc_broker::SystemClock);
        self.finish(&mut snap, JobStatus::Cancelled, now).await?;
        Ok(CancelOutcome::Cancelled)
    }

    /// Before a taken job starts: a job a cancel reached ends cancelled, one
    /// out of attempts ends failed; answers whether it ended.
    async fn ends_before_start(&self, snap: &mut Snapshot, cancel: bool, now: u64) -> Result<bool> {
        if cancel {
            self.finish(snap, JobStatus::Cancelled, now).await?;
        } else if snap.attempts > snap.job.max_retries {
            self.finish(snap, JobStatus::Failed, now).await?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// A lease this process handed out ran out: the job goes back to its
    /// queue as the next attempt (that message sent before the state is
    /// written, so a process dying between the two leaves the held message
    /// to run), or ends cancelled or failed.
    async fn expire_lease(&self, snap: &mut Snapshot, cancel: bool, now: u64) -> Result<()> {
        snap.expiries += 1;
        snap.error = Some(format!(
            "lease expired: no word from the worker for {} ms",
            snap.job.timeout.as_millis()
        ));
        if self.ends_before_start(snap, cancel, now).await? {
            return Ok(());
        }
        let delivery = delivery_id();
        self.send_job(&JobMsg {
            job: snap.job.clone(),
            delivery: delivery.clone(),
            attempt: snap.attempts + 1,
            due_ms: None,
        })
        .await?;
        snap.rev += 1;
        snap.status = JobStatus::Queued;
        snap.delivery = delivery;
        snap.updated_at_ms = now;
        snap.end_lease();
        self.write_status(snap).await
    }

    /// Ends a job in a final status.
    async fn finish(&self, snap: &mut Snapshot, to: JobStatus, now: u64) -> Result<()> {
        snap.rev += 1;
        snap.status = to;
        snap.completed_at_ms = Some(now);
        snap.updated_at_ms = now;
        snap.end_lease();
        self.write_status(snap).await
    }

    /// A worker finished a held job: it is completed with `result`, or
    /// cancelled when a cancel reached it meanwhile (answered `true`).
    async fn complete(
        &self,
        snap: &mut Snapshot,
        cancel: bool,
        result: Value,
        now: u64,
    ) -> Result<bool> {
        if cancel {
            self.finish(snap, JobStatus::Cancelled, now).await?;
        } else {
            snap.result = Some(result);
            snap.error = None;
            self.finish(snap, JobStatus::Completed, now).await?;
        }
        Ok(cancel)
    }

    /// A held job's attempt failed: cancelled when a cancel reached it,
    /// failed when no retry is asked for or none is left, else retried
    /// after `retry_after` as a new delivery. The retry message is sent
    /// before the state is written: if the process dies between the two,
    /// the job's current message is delivered again instead.
    async fn fail(
        &self,
        snap: &mut Snapshot,
        cancel: bool,
        error: &str,
        retry_after: Option<Duration>,
        now: u64,
    ) -> Result<JobStatus> {
        snap.error = Some(error.to_string());
        let delay = match retry_after {
            _ if cancel => {
                self.finish(snap, JobStatus::Cancelled, now).await?;
                return Ok(JobStatus::Cancelled);
            }
            Some(d) if snap.attempts <= snap.job.max_retries => d.as_millis() as u64,
            _ => {
                self.finish(snap, JobStatus::Failed, now).await?;
                return Ok(JobStatus::Failed);
            }
        };
        let delivery = delivery_id();
        self.send_delayed(&JobMsg {
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
        snap.updated_at_ms = now;
        snap.end_lease();
        self.write_status(snap).await?;
        Ok(JobStatus::Retrying)
    }

    /// A worker renewed its lease (with progress, perhaps): the deadline
    /// moves a job timeout from `now`; answers the new deadline.
    async fn renew(&self, snap: &mut Snapshot, progress: Option<Value>, now: u64) -> Result<u64> {
        let deadline_ms = now + snap.job.timeout.as_millis() as u64;
        snap.rev += 1;
        snap.deadline_ms = Some(deadline_ms);
        snap.updated_at_ms = now;
        if let Some(p) = progress {
            snap.progress = Some(p);
        }
        self.write_status(snap).await?;
        Ok(deadline_ms)
    }
}
