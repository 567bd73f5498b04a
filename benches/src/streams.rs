//! The broker workload of issue 19, side by side in one run: Redis Streams
//! with `appendfsync always` (XADD pipelined per batch, XREADGROUP COUNT
//! 100, XACK per read) and docproc `sync` over gRPC (produce batches,
//! stream consumers with prefetch 100 that ack every message). 1 KiB
//! messages, 4 producers sending batches of 100 and waiting for each to be
//! durable, 4 consumers. Rows: produce, consume + ack of a filled queue,
//! end to end flat out, and end to end paced at half that rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docproc_broker::Durability;
use docproc_client::{Client, ConsumerOptions, NewMessage};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;

use crate::workloads::serve;
use crate::{Row, PAYLOAD};

const PRODUCERS: u64 = 4;
const CONSUMERS: u64 = 4;
const BATCH: u64 = 100;
const STREAM: &str = "bench";
const GROUP: &str = "g";

/// Figures of one run of one workload.
struct Run {
    messages: u64,
    elapsed: Duration,
    /// Produce sent until delivery received, when measured.
    latency: Vec<Duration>,
}

impl Run {
    /// The run of `messages` started at `start`, once every consumer task
    /// has ended, with their latencies.
    async fn gather(
        tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
        messages: u64,
        start: Instant,
    ) -> anyhow::Result<Run> {
        let mut latency = Vec::new();
        for t in tasks {
            latency.extend(t.await??);
        }
        Ok(Run {
            messages,
            elapsed: start.elapsed(),
            latency,
        })
    }

    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A payload stamped with the time it is sent.
fn stamped(body: &[u8]) -> Vec<u8> {
    let mut p = body.to_vec();
    p[..8].copy_from_slice(&now_nanos().to_be_bytes());
    p
}

fn since_stamp(p: &[u8]) -> Duration {
    let sent = p
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    Duration::from_nanos(now_nanos().saturating_sub(sent))
}

/// p50, p99 and p99.9.
fn quantiles(mut v: Vec<Duration>) -> Option<[Duration; 3]> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Some([at(0.5), at(0.99), at(0.999)])
}

/// Paces producers at `rate` messages/s in all (`None`: flat out).
fn pace(rate: Option<f64>) -> Option<Duration> {
    rate.map(|r| Duration::from_secs_f64((BATCH * PRODUCERS) as f64 / r))
}

/// One task per sender, each sending `per_producer / BATCH` batches of
/// stamped payloads through `send` (paced when `rate` is set) and waiting
/// for each; answers how long all took.
async fn producers<S, F, Fut>(
    senders: Vec<S>,
    per_producer: u64,
    rate: Option<f64>,
    send: F,
) -> anyhow::Result<Duration>
where
    S: Send + 'static,
    F: Fn(S, Vec<Vec<u8>>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<S>> + Send,
{
    let body = crate::workloads::payload();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut sender in senders {
        let (body, send, every) = (body.clone(), send.clone(), pace(rate));
        tasks.push(tokio::spawn(async move {
            let mut tick = every.map(tokio::time::interval);
            for _ in 0..per_producer / BATCH {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let batch = (0..BATCH).map(|_| stamped(&body)).collect();
                sender = send(sender, batch).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed())
}

/// The peer's side: one Redis started here with `appendfsync always`.
struct Redis {
    _server: crate::peers::TempRedis,
    url: String,
}

impl Redis {
    fn start() -> anyhow::Result<Self> {
        let (server, port) = crate::peers::start_fsync_always()?;
        Ok(Self {
            _server: server,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }

    async fn conn(&self) -> anyhow::Result<MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// A fresh stream with its consumer group.
    async fn reset(&self) -> anyhow::Result<()> {
        let mut c = self.conn().await?;
        redis::cmd("DEL")
            .arg(STREAM)
            .query_async::<()>(&mut c)
            .await?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(STREAM)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// `per_producer` messages from each producer, XADD pipelined per batch.
    async fn produce(&self, per_producer: u64, rate: Option<f64>) -> anyhow::Result<Duration> {
        let mut conns = Vec::new();
        for _ in 0..PRODUCERS {
            conns.push(self.conn().await?);
        }
        producers(
            conns,
            per_producer,
            rate,
            |mut c: MultiplexedConnection, batch| async move {
                let mut pipe = redis::pipe();
                for p in batch {
                    pipe.cmd("XADD").arg(STREAM).arg("*").arg("d").arg(p);
                }
                pipe.query_async::<Vec<String>>(&mut c).await?;
                Ok(c)
            },
        )
        .await
    }

    /// Consumers read and ack until `total` are acked; latencies when `measure`.
    async fn consume(&self, total: u64, measure: bool) -> anyhow::Result<Run> {
        let acked = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..CONSUMERS {
            let mut c = self.conn().await?;
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while acked.load(Ordering::Acquire) < total {
                    let reply: redis::Value = redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(format!("c{n}"))
                        .arg("COUNT")
                        .arg(BATCH)
                        .arg("BLOCK")
                        .arg(50)
                        .arg("STREAMS")
                        .arg(STREAM)
                        .arg(">")
                        .query_async(&mut c)
                        .await?;
                    let mut ids = Vec::new();
                    for (id, payload) in entries(reply) {
                        if measure {
                            lat.push(since_stamp(&payload));
                        }
                        ids.push(id);
                    }
                    if ids.is_empty() {
                        continue;
                    }
                    redis::cmd("XACK")
                        .arg(STREAM)
                        .arg(GROUP)
                        .arg(&ids)
                        .query_async::<u64>(&mut c)
                        .await?;
                    acked.fetch_add(ids.len() as u64, Ordering::AcqRel);
                }
                anyhow::Ok(lat)
            }));
        }
        Run::gather(tasks, total, start).await
    }
}

/// The `(id, payload)` entries of an XREADGROUP reply (RESP2: streams of
/// `[id, [field, value, …]]`; nil when the read timed out).
fn entries(reply: redis::Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    use redis::Value::{Array, BulkString};
    let mut out = Vec::new();
    let Array(streams) = reply else {
        return out;
    };
    for stream in streams {
        let Array(mut parts) = stream else { continue };
        let Some(Array(items)) = parts.pop() else {
            continue;
        };
        for item in items {
            let Array(mut entry) = item else { continue };
            let (Some(Array(fields)), Some(BulkString(id))) = (entry.pop(), entry.pop()) else {
                continue;
            };
            let payload = match fields.into_iter().nth(1) {
                Some(BulkString(p)) => p,
                _ => Vec::new(),
            };
            out.push((id, payload));
        }
    }
    out
}

/// docproc's side: a broker served over gRPC on loopback, `sync`.
struct Docproc {
    client: Client,
    /// Ack with one unary call per message (the path before acks rode
    /// the stream), for the same-run comparison.
    unary: bool,
}

impl Docproc {
    async fn produce(&self, per_producer: u64, rate: Option<f64>) -> anyhow::Result<Duration> {
        let clients = (0..PRODUCERS).map(|_| self.client.clone()).collect();
        producers(
            clients,
            per_producer,
            rate,
            |client: Client, batch| async move {
                let msgs = batch
                    .into_iter()
                    .map(|p| NewMessage::new(STREAM, p))
                    .collect();
                client.produce(msgs).await?;
                Ok(client)
            },
        )
        .await
    }

    async fn consume(&self, total: u64, measure: bool) -> anyhow::Result<Run> {
        let acked = Arc::new(AtomicU64::new(0));
        let done = Arc::new(tokio::sync::watch::channel(false).0);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..CONSUMERS {
            let opts = ConsumerOptions {
                prefetch: BATCH as u32,
                consumer_id: format!("c{n}"),
                ..Default::default()
            };
            let mut stream = self.client.consume(STREAM, opts);
            let (acked, done) = (acked.clone(), done.clone());
            let (client, unary) = (self.client.clone(), self.unary);
            let mut finished = done.subscribe();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut acks = futures::stream::FuturesUnordered::new();
                loop {
                    tokio::select! {
                        Some(d) = stream.next() => {
                            let d = d?;
                            if measure {
                                lat.push(since_stamp(d.payload()));
                            }
                            let client = client.clone();
                            acks.push(async move {
                                if unary {
                                    let token = d.message().lease_token;
                                    client.ack(d.id(), token, Vec::new()).await
                                } else {
                                    d.ack(Vec::new()).await
                                }
                            });
                        }
                        Some(r) = acks.next(), if !acks.is_empty() => {
                            r?;
                            if acked.fetch_add(1, Ordering::AcqRel) + 1 >= total {
                                done.send_replace(true);
                            }
                        }
                        _ = finished.wait_for(|f| *f) => return anyhow::Ok(lat),
                    }
                }
            }));
        }
        Run::gather(tasks, total, start).await
    }
}

/// The four workloads on one system.
trait System {
    async fn reset(&mut self) -> anyhow::Result<()>;
    async fn produce(&self, per_producer: u64, rate: Option<f64>) -> anyhow::Result<Duration>;
    async fn consume(&self, total: u64, measure: bool) -> anyhow::Result<Run>;
}

impl System for Redis {
    async fn reset(&mut self) -> anyhow::Result<()> {
        Redis::reset(self).await
    }
    async fn produce(&self, per_producer: u64, rate: Option<f64>) -> anyhow::Result<Duration> {
        Redis::produce(self, per_producer, rate).await
    }
    async fn consume(&self, total: u64, measure: bool) -> anyhow::Result<Run> {
        Redis::consume(self, total, measure).await
    }
}

impl System for Docproc {
    async fn reset(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn produce(&self, per_producer: u64, rate: Option<f64>) -> anyhow::Result<Duration> {
        Docproc::produce(self, per_producer, rate).await
    }
    async fn consume(&self, total: u64, measure: bool) -> anyhow::Result<Run> {
        Docproc::consume(self, total, measure).await
    }
}

/// Produce, consume + ack, end to end, and end to end at half its rate.
async fn measure(sys: &mut impl System, total: u64) -> anyhow::Result<[Run; 4]> {
    let per = (total / PRODUCERS / BATCH).max(1) * BATCH;
    let total = per * PRODUCERS;
    sys.reset().await?;
    let produced = sys.produce(per, None).await?;
    let produce = Run {
        messages: total,
        elapsed: produced,
        latency: Vec::new(),
    };
    let consume = sys.consume(total, false).await?;
    let flat_out = end_to_end(sys, per, None).await?;
    let half = flat_out.rate() / 2.0;
    let paced = end_to_end(sys, per, Some(half)).await?;
    Ok([produce, consume, flat_out, paced])
}

async fn end_to_end(sys: &impl System, per: u64, rate: Option<f64>) -> anyhow::Result<Run> {
    let total = per * PRODUCERS;
    let (consumed, produced) = tokio::join!(sys.consume(total, true), sys.produce(per, rate));
    produced?;
    consumed
}

/// docproc's four workloads alone, without the peer (`BENCH_ONLY=streams-docproc`:
/// for profiling the broker without Redis in the same process's samples).
pub(crate) async fn ours(total: u64) -> anyhow::Result<Vec<Row>> {
    let runs = docproc_runs(total).await?;
    Ok(NAMES
        .iter()
        .zip(runs.iter())
        .map(|(name, run)| row(&format!("docproc sync: {name}"), run, None))
        .collect())
}

/// The four workloads on a broker served over gRPC, `sync`, stream acks.
async fn docproc_runs(total: u64) -> anyhow::Result<[Run; 4]> {
    let served = serve(Durability::Sync).await?;
    let mut docproc = Docproc {
        client: Client::connect(&served.url).await?,
        unary: false,
    };
    let runs = measure(&mut docproc, total).await?;
    served.finish();
    Ok(runs)
}

const NAMES: [&str; 4] = [
    "produce, 4 producers × batch 100",
    "consume + ack, 4 consumers, prefetch 100",
    "end to end, flat out",
    "end to end, paced at half the flat-out rate",
];

/// A row of `run`, with its ratio to `peer` when given.
fn row(name: &str, run: &Run, peer: Option<&Run>) -> Row {
    let q = quantiles(run.latency.clone());
    let mut note = format!("{:.1} MB/s", run.rate() * PAYLOAD as f64 / 1e6);
    if let Some([_, _, p999]) = q {
        note.push_str(&format!(", p99.9 {:.2} ms", p999.as_secs_f64() * 1e3));
    }
    if let Some(peer) = peer {
        note.push_str(&format!(", {:.2}× Redis", run.rate() / peer.rate()));
    }
    Row {
        name: name.to_string(),
        messages: run.messages,
        elapsed: run.elapsed,
        latency: q.map(|[p50, p99, _]| (p50, p99)),
        note,
    }
}

/// Both systems, four rows each; ours carry the ratio to the peer.
pub(crate) async fn all(total: u64) -> anyhow::Result<Vec<Row>> {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        anyhow::bail!("streams: redis-server is not installed (make bench needs it)");
    }
    let mut redis = Redis::start()?;
    let theirs = measure(&mut redis, total).await?;
    drop(redis);
    let ours = docproc_runs(total).await?;
    // The same consume + ack with one unary ack per message.
    let served = serve(Durability::Sync).await?;
    let unary = Docproc {
        client: Client::connect(&served.url).await?,
        unary: true,
    };
    let per = (total / PRODUCERS / BATCH).max(1) * BATCH;
    unary.produce(per, None).await?;
    let before = unary.consume(per * PRODUCERS, false).await?;
    served.finish();
    let mut rows = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        rows.push(row(
            &format!("peer: Redis 7 Streams, appendfsync always: {name}"),
            &theirs[i],
            None,
        ));
        rows.push(row(
            &format!("docproc sync: {name}"),
            &ours[i],
            Some(&theirs[i]),
        ));
    }
    rows.insert(
        4,
        Row {
            name: "docproc sync: consume + ack, unary acks (one RPC per ack)".into(),
            messages: before.messages,
            elapsed: before.elapsed,
            latency: None,
            note: format!(
                "the path before acks rode the stream: {:.2}× Redis; the stream path is {:.2}× this",
                before.rate() / theirs[1].rate(),
                ours[1].rate() / before.rate()
            ),
        },
    );
    Ok(rows)
}
