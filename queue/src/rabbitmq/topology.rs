//! What the RabbitMQ adapter declares on the broker and how it names it:
//! a quorum queue per job type and priority, delay buckets (a fanout
//! exchange and a quorum queue with a fixed message TTL that dead-letters
//! back to the job queue the message was addressed to), and the status
//! stream.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::unavailable;
use crate::error::Result;
use crate::model::Priority;

/// Longest a message waits in one delay bucket; a job due later goes round
/// again (it is re-sent to a bucket when it reaches its job queue early).
pub(super) const MAX_BUCKET_MS: u64 = 3_600_000;

/// Names and declares; remembers what it declared.
pub(super) struct Topology {
    prefix: String,
    retention: Duration,
    declared: Mutex<HashSet<String>>,
    /// Queues and exchanges declared, for [`Topology::names`].
    made: Mutex<(Vec<String>, Vec<String>)>,
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The bucket a delay waits in: the delay rounded up to four significant
/// bits (at most 1/8 longer, so a few dozen buckets cover a millisecond to
/// an hour), capped at [`MAX_BUCKET_MS`].
pub(super) fn bucket_ms(delay_ms: u64) -> u64 {
    let d = delay_ms.clamp(1, MAX_BUCKET_MS);
    let bits = 64 - d.leading_zeros();
    if bits <= 4 {
        return d;
    }
    let shift = bits - 4;
    let up = d.div_ceil(1 << shift) << shift;
    up.min(MAX_BUCKET_MS)
}

impl Topology {
    pub(super) fn new(prefix: String, retention: Duration) -> Self {
        Self {
            prefix,
            retention,
            declared: Mutex::default(),
            made: Mutex::default(),
        }
    }

    pub(super) fn status_stream(&self) -> String {
        format!("{}.status", self.prefix)
    }

    /// The job queue of a type and priority, `PREFIX.TYPE.pN`.
    pub(super) fn job_queue(&self, job_type: &str, p: Priority) -> String {
        format!("{}.{job_type}.p{}", self.prefix, p.level())
    }

    /// A type's job queues, most urgent first.
    pub(super) fn job_queues(&self, job_type: &str) -> Vec<String> {
        Priority::ALL
            .iter()
            .rev()
            .map(|p| self.job_queue(job_type, *p))
            .collect()
    }

    pub(super) fn delay_exchange(&self, bucket_ms: u64) -> String {
        format!("{}.delay.{bucket_ms}", self.prefix)
    }

    fn known(&self, name: &str) -> bool {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    fn remember(&self, name: String) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
    }

    /// The queues and exchanges this process declared, and the stream.
    pub(super) fn names(&self) -> (Vec<String>, Vec<String>) {
        let (mut q, x) = self.made.lock().unwrap_or_else(|p| p.into_inner()).clone();
        q.push(self.status_stream());
        (q, x)
    }

    fn made(&self, queue: Option<&str>, exchange: Option<&str>) {
        let mut m = self.made.lock().unwrap_or_else(|p| p.into_inner());
        m.0.extend(queue.map(str::to_string));
        m.1.extend(exchange.map(str::to_string));
    }

    async fn quorum(&self, ch: &Channel, name: &str, extra: &[(&str, AMQPValue)]) -> Result<()> {
        let mut args = vec![("x-queue-type", text("quorum"))];
        args.extend_from_slice(extra);
        ch.queue_declare(
            name,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&args),
        )
        .await
        .map_err(|e| unavailable(&format!("declare queue {name}"), e))?;
        self.made(Some(name), None);
        Ok(())
    }

    /// The four job queues of a type.
    pub(super) async fn job_type(&self, ch: &Channel, job_type: &str) -> Result<()> {
        let key = format!("t:{job_type}");
        if self.known(&key) {
            return Ok(());
        }
        for q in self.job_queues(job_type) {
            self.quorum(ch, &q, &[]).await?;
        }
        self.remember(key);
        Ok(())
    }

    /// A delay bucket: messages published to its exchange wait `bucket_ms`
    /// in its queue, then are dead-lettered (at least once) through the
    /// default exchange to the queue their routing key names.
    pub(super) async fn bucket(&self, ch: &Channel, bucket_ms: u64) -> Result<String> {
        let name = self.delay_exchange(bucket_ms);
        if self.known(&name) {
            return Ok(name);
        }
        let ttl = i64::try_from(bucket_ms).unwrap_or(i64::MAX);
        self.quorum(
            ch,
            &name,
            &[
                ("x-message-ttl", AMQPValue::LongLongInt(ttl)),
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-strategy", text("at-least-once")),
                ("x-overflow", text("reject-publish")),
            ],
        )
        .await?;
        ch.exchange_declare(
            &name,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(&format!("declare exchange {name}"), e))?;
        self.made(None, Some(&name));
        ch.queue_bind(
            &name,
            &name,
            "",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(&format!("bind {name}"), e))?;
        self.remember(name.clone());
        Ok(name)
    }

    /// The status stream, keeping records for the retention.
    pub(super) async fn status(&self, ch: &Channel) -> Result<()> {
        let name = self.status_stream();
        ch.queue_declare(
            &name,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[
                ("x-queue-type", text("stream")),
                (
                    "x-max-age",
                    text(&format!("{}s", self.retention.as_secs().max(1))),
                ),
            ]),
        )
        .await
        .map_err(|e| unavailable(&format!("declare stream {name}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_by_at_most_an_eighth() {
        assert_eq!(bucket_ms(0), 1);
        assert_eq!(bucket_ms(15), 15);
        assert_eq!(bucket_ms(16), 16);
        assert_eq!(bucket_ms(17), 18);
        assert_eq!(bucket_ms(1000), 1024);
        assert_eq!(bucket_ms(u64::MAX), MAX_BUCKET_MS);
        let mut seen = HashSet::new();
        for d in 1..=MAX_BUCKET_MS / 997 {
            let d = d * 997;
            let b = bucket_ms(d);
            assert!(b >= d.min(MAX_BUCKET_MS) && b <= d + d / 8, "{d} -> {b}");
            seen.insert(b);
        }
        assert!(seen.len() < 200, "{} buckets", seen.len());
    }
}
