//! The status log on a RabbitMQ stream: every change of a job is a record
//! (`message_id` `s:ID` with the snapshot, `c:ID` a cancel marker); every
//! process reads the stream from its first record into its view, and knows
//! it has caught up when it reads back a marker it wrote itself.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;
use tokio::sync::{oneshot, watch};

use super::{now_ms, unavailable, Inner};
use crate::error::{QueueError, Result};
use crate::model::JobId;
use crate::statuslog::settle::StatusLog;
use crate::statuslog::view::{take, View};
use crate::statuslog::wire::delivery_id;

/// Records read ahead of the acks the reader sends.
const READ_AHEAD: u16 = 500;
/// How often the maintenance pass runs.
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

/// Reads the status stream from its start into `view` until `owner` closes
/// (a reader that stops before makes `owner` lost);
/// `marker` is answered when the record keyed `m:TOKEN` is read.
pub(super) async fn read(
    ch: Channel,
    stream: String,
    view: Arc<View>,
    token: String,
    marker: oneshot::Sender<Result<()>>,
    owner: Weak<Inner>,
) {
    let Some(mut closed) = owner.upgrade().map(|i| i.closed.subscribe()) else {
        return;
    };
    // A reader that stops while the queue is open leaves the view behind.
    let stopped = |why: String| {
        if let Some(inner) = owner.upgrade() {
            inner.lose(format!("rabbitmq status reader stopped: {why}"));
        }
    };
    let mut marker = Some(marker);
    let started = async {
        ch.basic_qos(READ_AHEAD, BasicQosOptions::default())
            .await
            .map_err(|e| unavailable("status reader qos", e))?;
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString(LongString::from("first")),
        );
        ch.basic_consume(
            &stream,
            &format!("status-{token}"),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(|e| unavailable("status reader", e))
    };
    let mut consumer = match started.await {
        Ok(c) => c,
        Err(e) => {
            if let Some(m) = marker.take() {
                let _ = m.send(Err(e));
            }
            return;
        }
    };
    let mine = format!("m:{token}");
    loop {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = closed.wait_for(|c| *c) => return,
        };
        let d = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                stopped(e.to_string());
                if let Some(m) = marker.take() {
                    let _ = m.send(Err(unavailable("status reader", e)));
                }
                return;
            }
            None => {
                stopped("the stream's consumer ended".into());
                return;
            }
        };
        let key = d.properties.message_id().as_ref().map(|k| k.as_str());
        match key {
            Some(k) if k == mine => {
                if let Some(m) = marker.take() {
                    let _ = m.send(Ok(()));
                }
            }
            Some(k) if k.starts_with("m:") => {}
            Some(k) => {
                let value = (!d.data.is_empty()).then_some(d.data.as_slice());
                take(&view, Some(k.as_bytes()), value);
            }
            None => {}
        }
        // Streams need acks to keep sending; they do not remove anything.
        if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "rabbitmq status reader ack");
        }
    }
}

/// Writes a marker and waits until the reader reads it back: everything
/// written before is then in the view.
pub(super) async fn catch_up(
    inner: &Inner,
    token: &str,
    read_back: oneshot::Receiver<Result<()>>,
) -> Result<()> {
    inner.log(&format!("m:{token}"), b"{}").await?;
    match tokio::time::timeout(Duration::from_secs(60), read_back).await {
        Ok(Ok(r)) => r,
        _ => Err(QueueError::Unavailable(
            "rabbitmq: the status stream could not be read".into(),
        )),
    }
}

/// A fresh reader token.
pub(super) fn token() -> String {
    delivery_id()
}

/// Every minute: final jobs past the retention leave the view (the stream
/// drops their records by age), and live jobs whose last record is older
/// than half the retention are written again, so a process that starts
/// later still finds them when the stream has dropped their older records.
pub(super) async fn maintain(inner: Arc<Inner>, mut closed: watch::Receiver<bool>) {
    let mut refreshed: HashMap<JobId, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MAINTAIN_EVERY) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let retention = inner.cfg.retention.as_millis() as u64;
        let now = now_ms();
        for id in inner.view.finished_before(now.saturating_sub(retention)) {
            inner.view.forget(&id);
        }
        let stale = now.saturating_sub(retention / 2);
        let live = inner.view.live_before(stale);
        refreshed.retain(|id, _| live.iter().any(|s| &s.job.job_id == id));
        for snap in live {
            let id = snap.job.job_id.clone();
            if refreshed.get(&id).is_some_and(|t| *t >= stale) {
                continue;
            }
            // The same revision: readers that have it change nothing.
            if let Err(e) = inner.write_status(&snap).await {
                tracing::warn!(error = %e, job_id = %id, "rabbitmq status refresh");
                continue;
            }
            if inner.view.get(&id).is_some_and(|(_, c)| c) {
                if let Err(e) = inner.log(&format!("c:{id}"), b"{}").await {
                    tracing::warn!(error = %e, job_id = %id, "rabbitmq cancel refresh");
                }
            }
            refreshed.insert(id, now);
        }
    }
}
