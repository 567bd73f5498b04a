//! Taking and holding RabbitMQ jobs: a consume stream pulls from a type's
//! queues most urgent first, admits a message against the job's status
//! (stale copies, cancelled and finished jobs are dropped), and holds it
//! unacknowledged while a worker has the lease; the lease's deadline is
//! watched here, and past it the job goes back to its queue as the next
//! attempt.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use lapin::acker::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::Mutex;

use super::{now_ms, unavailable, Inner};
use crate::error::{QueueError, Result};
use crate::lease::{Heartbeat, Lease, LeaseOps};
use crate::model::{JobId, JobStatus};
use crate::statuslog::settle::StatusLog;
use crate::statuslog::wire::{decode, delivery_id, report, JobMsg, Snapshot};

/// First wait of an idle stream before it looks again; doubles to
/// [`IDLE_MAX`]. A publish in this process wakes it at once.
const IDLE_MIN: Duration = Duration::from_millis(10);
const IDLE_MAX: Duration = Duration::from_millis(250);
/// Longest a taken message waits for its job's record to reach this
/// process's view (the record is written before the message is sent).
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// A consume stream's channel, closed once the stream and every lease
/// taken on it are gone (lapin keeps a channel open until told).
struct OwnChannel(Channel);

impl Drop for OwnChannel {
    fn drop(&mut self) {
        let ch = self.0.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = ch.close(200, "consumer done").await {
                    tracing::debug!(error = %e, "rabbitmq channel close");
                }
            });
        }
    }
}

/// The leases of one worker: pulls on a channel of its own, job types in
/// turn.
pub(super) fn stream(
    inner: Arc<Inner>,
    ch: Channel,
    types: Vec<String>,
    worker: String,
) -> impl Stream<Item = Result<Lease>> + Send + 'static {
    let ch = Arc::new(OwnChannel(ch));
    let state = (inner, ch, types, worker, 0usize, IDLE_MIN);
    futures::stream::unfold(state, |(inner, ch, types, worker, turn, idle)| async move {
        let mut closed = inner.closed.subscribe();
        let mut idle = idle;
        loop {
            if *inner.closed.borrow() {
                return None;
            }
            let wake = inner.wake.clone();
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            for k in 0..types.len() {
                let t = &types[(turn + k) % types.len()];
                match take(&inner, &ch, t, &worker).await {
                    Ok(Some(lease)) => {
                        let next = (turn + k + 1) % types.len();
                        return Some((Ok(lease), (inner, ch, types, worker, next, IDLE_MIN)));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Some((Err(e), (inner, ch, types, worker, turn, IDLE_MIN)));
                    }
                }
            }
            tokio::select! {
                _ = &mut woken => idle = IDLE_MIN,
                _ = tokio::time::sleep(idle) => idle = (idle * 2).min(IDLE_MAX),
                _ = closed.wait_for(|c| *c) => return None,
            }
        }
    })
}

/// The next job of `job_type` this worker may run, if any is ready.
async fn take(
    inner: &Arc<Inner>,
    ch: &Arc<OwnChannel>,
    job_type: &str,
    worker: &str,
) -> Result<Option<Lease>> {
    for queue in inner.topo.job_queues(job_type) {
        loop {
            let got =
                ch.0.basic_get(&queue, BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|e| unavailable("get", e))?;
            let Some(got) = got else { break };
            let d = got.delivery;
            match admit(inner, ch, &d, worker).await {
                Ok(Some(lease)) => return Ok(Some(lease)),
                Ok(None) => settle(&d.acker, true).await,
                Err(e) => {
                    settle(&d.acker, false).await;
                    return Err(e);
                }
            }
        }
    }
    Ok(None)
}

/// Acknowledges a message (done with), or hands it back to its queue.
async fn settle(acker: &Acker, done: bool) {
    let r = if done {
        acker.ack(BasicAckOptions::default()).await
    } else {
        acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
    };
    if let Err(e) = r {
        // The channel is gone; RabbitMQ hands the message back itself.
        tracing::debug!(error = %e, "rabbitmq settle");
    }
}

/// The job's record, waiting a little for this process's view to read it.
async fn record(inner: &Inner, id: &JobId) -> Option<(Snapshot, bool)> {
    let until = tokio::time::Instant::now() + RECORD_WAIT;
    loop {
        if let Some(r) = inner.view.get(id) {
            return Some(r);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Decides what a taken message is: a lease (`Some`), or nothing to run
/// (`None`: the caller acknowledges it). An error hands it back.
async fn admit(
    inner: &Arc<Inner>,
    ch: &Arc<OwnChannel>,
    d: &Delivery,
    worker: &str,
) -> Result<Option<Lease>> {
    let msg: JobMsg = match decode(&d.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "rabbitmq: dropping an unreadable job message");
            return Ok(None);
        }
    };
    let now = now_ms();
    if msg.due_ms.is_some_and(|due| due > now) {
        // Due after the longest delay bucket: round again.
        inner.send_delayed(&msg).await?;
        return Ok(None);
    }
    let id = msg.job.job_id.clone();
    let (mut snap, cancel) = match record(inner, &id).await {
        Some(r) => r,
        None if msg.job.created_at_ms + inner.cfg.retention.as_millis() as u64 > now => {
            // The stream lost the record (it is not fsynced): the message
            // carries the whole job, so the job is not lost with it.
            tracing::warn!(job_id = %id, "rabbitmq: a job's record is missing; rebuilt from its message");
            let mut s = Snapshot::new(
                msg.job.clone(),
                JobStatus::Queued,
                msg.delivery.clone(),
                now,
            );
            s.attempts = msg.attempt.saturating_sub(1);
            (s, false)
        }
        None => {
            tracing::warn!(job_id = %id, "rabbitmq: dropping a message of a job past its retention");
            return Ok(None);
        }
    };
    if snap.status.is_final() || snap.delivery != msg.delivery {
        return Ok(None);
    }
    if snap.status == JobStatus::Processing {
        // Handed back by RabbitMQ: its holder's connection closed.
        snap.expiries += 1;
        snap.error = Some("lease lost: the worker's connection closed".into());
    }
    if inner.ends_before_start(&mut snap, cancel, now).await? {
        return Ok(None);
    }
    let token = delivery_id();
    let deadline_ms = snap.start(worker, now);
    snap.lease = Some(token.clone());
    inner.write_status(&snap).await?;
    let held = Arc::new(Mutex::new(Held {
        done: false,
        deadline_ms,
    }));
    let ops = RabbitLease {
        inner: inner.clone(),
        _channel: ch.clone(),
        id: id.clone(),
        token: token.clone(),
        acker: d.acker.clone(),
        held: held.clone(),
    };
    tokio::spawn(watch_deadline(
        inner.clone(),
        held,
        id,
        token,
        d.acker.clone(),
    ));
    Ok(Some(Lease::new(
        snap.job,
        snap.attempts,
        deadline_ms,
        inner.cfg.retry,
        Box::new(ops),
    )))
}

/// A lease's state shared by its worker and its deadline watch.
struct Held {
    /// Settled: completed, failed, handed on or expired.
    done: bool,
    deadline_ms: u64,
}

/// Waits out a lease; past its deadline the job goes back to its queue as
/// the next attempt (or fails when it has none left).
async fn watch_deadline(
    inner: Arc<Inner>,
    held: Arc<Mutex<Held>>,
    id: JobId,
    token: String,
    acker: Acker,
) {
    let mut closed = inner.closed.subscribe();
    loop {
        let deadline = {
            let h = held.lock().await;
            if h.done {
                return;
            }
            h.deadline_ms
        };
        let now = now_ms();
        if now < deadline {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(deadline - now)) => continue,
                _ = closed.wait_for(|c| *c) => return,
            }
        }
        let mut h = held.lock().await;
        if h.done {
            return;
        }
        if now_ms() < h.deadline_ms {
            continue;
        }
        match expire(&inner, &id, &token).await {
            Ok(()) => {
                h.done = true;
                drop(h);
                settle(&acker, true).await;
                return;
            }
            Err(e) => {
                drop(h);
                tracing::warn!(error = %e, job_id = %id, "rabbitmq lease expiry; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = closed.wait_for(|c| *c) => return,
                }
            }
        }
    }
}

/// The lease on `id` ran out: the job goes back to its queue as the next
/// attempt, or ends failed (cancelled when a cancel was asked for).
async fn expire(inner: &Inner, id: &JobId, token: &str) -> Result<()> {
    let Some((mut snap, cancel)) = inner.view.get(id) else {
        return Ok(());
    };
    if !holds(&snap, token) {
        return Ok(());
    }
    inner.expire_lease(&mut snap, cancel, now_ms()).await
}

struct RabbitLease {
    inner: Arc<Inner>,
    /// Keeps the channel the message was taken on open while the lease lives.
    _channel: Arc<OwnChannel>,
    id: JobId,
    /// This lease's token, recorded in the job's snapshot while it holds it.
    token: String,
    acker: Acker,
    held: Arc<Mutex<Held>>,
}

/// Whether the lease `token` still holds the job.
fn holds(snap: &Snapshot, token: &str) -> bool {
    snap.status == JobStatus::Processing && snap.lease.as_deref() == Some(token)
}

impl RabbitLease {
    /// The job's record while this lease still holds it.
    fn current(&self, held: &Held) -> Result<(Snapshot, bool)> {
        let lost = || QueueError::LeaseLost(self.id.clone());
        if held.done {
            return Err(lost());
        }
        let (snap, cancel) = self.inner.view.get(&self.id).ok_or_else(lost)?;
        if !holds(&snap, &self.token) {
            return Err(lost());
        }
        Ok((snap, cancel))
    }
}

#[async_trait]
impl LeaseOps for RabbitLease {
    async fn complete(&self, result: Vec<u8>) -> Result<bool> {
        let result = report(&result, "result")?;
        let mut held = self.held.lock().await;
        let (mut snap, cancel) = self.current(&held)?;
        let cancelled = self
            .inner
            .complete(&mut snap, cancel, result, now_ms())
            .await?;
        held.done = true;
        drop(held);
        settle(&self.acker, true).await;
        Ok(cancelled)
    }

    async fn fail(&self, error: &str, retry_after: Option<Duration>) -> Result<JobStatus> {
        let mut held = self.held.lock().await;
        let (mut snap, cancel) = self.current(&held)?;
        let status = self
            .inner
            .fail(&mut snap, cancel, error, retry_after, now_ms())
            .await?;
        held.done = true;
        drop(held);
        settle(&self.acker, true).await;
        Ok(status)
    }

    async fn renew(&self, progress: Option<Vec<u8>>) -> Result<Heartbeat> {
        let progress = progress.map(|p| report(&p, "progress")).transpose()?;
        let mut held = self.held.lock().await;
        let (mut snap, cancel) = self.current(&held)?;
        let deadline_ms = self.inner.renew(&mut snap, progress, now_ms()).await?;
        held.deadline_ms = deadline_ms;
        Ok(Heartbeat {
            cancelled: cancel,
            deadline_ms,
        })
    }
}
