//! The Redis adapter's background work: one pub/sub subscription per open
//! queue that feeds watchers and wakes idle consumers, and a maintenance
//! tick that moves due jobs, expires leases and drops old final jobs even
//! when no worker is asking for jobs.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, oneshot, watch, Notify};

use super::records::WireEvent;
use super::Inner;
use crate::model::{JobEvent, JobStatus};

/// What watchers receive.
#[derive(Debug, Clone)]
pub(super) enum Signal {
    /// A status event and its sequence number.
    Event(u64, Arc<JobEvent>),
    /// The subscription dropped and was made again: events in between are
    /// lost to this process.
    Gap,
}

/// How often the maintenance script runs.
pub(super) const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// Keeps a subscription to `P:events` until `closed`, reconnecting with
/// backoff. `ready` fires once the first subscription is in place, so a
/// watch made after `open` returns misses nothing.
pub(super) async fn subscribe(
    client: redis::Client,
    channel: String,
    tx: broadcast::Sender<Signal>,
    wake: Arc<Notify>,
    mut closed: watch::Receiver<bool>,
    ready: oneshot::Sender<redis::RedisResult<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        let sub = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            redis::RedisResult::Ok(ps)
        };
        let ps = tokio::select! {
            r = sub => r,
            _ = closed.wait_for(|c| *c) => return,
        };
        match ps {
            Ok(ps) => {
                backoff = Duration::from_millis(50);
                match ready.take() {
                    Some(r) => {
                        let _ = r.send(Ok(()));
                    }
                    // A reconnect: whatever was published meanwhile is lost here.
                    None => {
                        let _ = tx.send(Signal::Gap);
                        wake.notify_waiters();
                    }
                }
                let mut messages = ps.into_on_message();
                loop {
                    let msg = tokio::select! {
                        m = messages.next() => m,
                        _ = closed.wait_for(|c| *c) => return,
                    };
                    let Some(msg) = msg else { break };
                    match WireEvent::parse(msg.get_payload_bytes()) {
                        Ok(w) => {
                            let seq = w.seq;
                            match w.into_event() {
                                Ok(e) => {
                                    if e.status == JobStatus::Queued {
                                        wake.notify_waiters();
                                    }
                                    let _ = tx.send(Signal::Event(seq, Arc::new(e)));
                                }
                                Err(e) => tracing::warn!(error = %e, "unreadable redis event"),
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable redis event"),
                    }
                }
                tracing::warn!(%channel, "redis event subscription dropped; resubscribing");
            }
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!(error = %e, "redis event subscription failed; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs the maintenance script every [`MAINTAIN_EVERY`] until `closed`.
pub(super) async fn maintain(inner: Arc<Inner>, mut closed: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        if let Err(e) = inner.maintain().await {
            tracing::warn!(error = %e, "redis queue maintenance failed");
        }
    }
}
