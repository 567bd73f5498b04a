//! The delayed topic's mover: scheduled jobs and retries wait there (due
//! time in the message) and are moved to their job topic when due, their
//! status turning `queued` first. One group member per process; a
//! partition's offset is committed only past messages already moved.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::feed::{Track, STATUS_WAIT_MS};
use super::{now_ms, Inner};
use crate::error::Result;
use crate::model::JobStatus;
use crate::statuslog::settle::StatusLog;
use crate::statuslog::wire::{decode, JobMsg};

struct Waiting {
    partition: i32,
    offset: i64,
    msg: JobMsg,
    due: u64,
    seen_ms: u64,
}

/// What became of a due message.
enum Moved {
    Done,
    Hold,
}

/// Moves due messages until `closed`.
pub(super) async fn run(
    inner: Arc<Inner>,
    consumer: StreamConsumer,
    mut closed: watch::Receiver<bool>,
) {
    let topic = inner.delayed_topic();
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut tracks: HashMap<i32, Track> = HashMap::new();
    loop {
        let now = now_ms();
        let next_due = waiting.iter().map(|w| w.due).min();
        let sleep = next_due.map_or(Duration::from_secs(1), |d| {
            Duration::from_millis(d.saturating_sub(now).min(1000))
        });
        let mut failed = false;
        tokio::select! {
            m = consumer.recv() => match m {
                Ok(m) => {
                    let (partition, offset) = (m.partition(), m.offset());
                    let t = tracks.entry(partition).or_default();
                    t.next = offset + 1;
                    match m.payload().map(decode::<JobMsg>) {
                        Some(Ok(msg)) => {
                            t.outstanding.insert(offset);
                            let due = msg.due_ms.unwrap_or(0);
                            waiting.push(Waiting { partition, offset, msg, due, seen_ms: now });
                        }
                        _ => tracing::warn!(partition, offset, "skipping an unreadable delayed message"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka delayed topic");
                    failed = true;
                }
            },
            _ = tokio::time::sleep(sleep) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now = now_ms();
        let mut i = 0;
        while i < waiting.len() {
            if waiting[i].due > now {
                i += 1;
                continue;
            }
            match move_one(&inner, &waiting[i], now).await {
                Ok(Moved::Done) => {
                    let w = waiting.swap_remove(i);
                    if let Some(t) = tracks.get_mut(&w.partition) {
                        t.outstanding.remove(&w.offset);
                    }
                }
                Ok(Moved::Hold) => {
                    waiting[i].due = now + 50;
                    i += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka: moving a delayed job failed; will retry");
                    waiting[i].due = now + 500;
                    i += 1;
                }
            }
        }
        commit(&consumer, &topic, &mut tracks);
    }
}

fn commit(consumer: &StreamConsumer, topic: &str, tracks: &mut HashMap<i32, Track>) {
    let mut tpl = TopicPartitionList::new();
    for (p, t) in tracks.iter_mut() {
        if let Some(upto) = t.advance() {
            if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Offset(upto)) {
                tracing::warn!(error = %e, "kafka commit (delayed topic)");
            }
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "kafka commit (delayed topic)");
        }
    }
}

async fn move_one(inner: &Arc<Inner>, w: &Waiting, now: u64) -> Result<Moved> {
    let waited = now.saturating_sub(w.seen_ms) >= STATUS_WAIT_MS;
    let Some((mut snap, cancel)) = inner.view.get(&w.msg.job.job_id) else {
        return Ok(if waited { Moved::Done } else { Moved::Hold });
    };
    if snap.status.is_final() {
        return Ok(Moved::Done);
    }
    if snap.delivery != w.msg.delivery {
        // A newer delivery whose status is on its way, or a stale copy.
        let newer = w.msg.attempt > snap.attempts && !waited;
        return Ok(if newer { Moved::Hold } else { Moved::Done });
    }
    if cancel {
        inner.finish(&mut snap, JobStatus::Cancelled, now).await?;
        return Ok(Moved::Done);
    }
    // Status first: if this process dies before the message is sent, the
    // delayed message is not committed and is moved again.
    if snap.status != JobStatus::Queued {
        snap.rev += 1;
        snap.status = JobStatus::Queued;
        snap.updated_at_ms = now;
        inner.write_status(&snap).await?;
    }
    inner
        .send_job(&JobMsg {
            due_ms: None,
            ..w.msg.clone()
        })
        .await?;
    Ok(Moved::Done)
}
