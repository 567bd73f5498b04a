//! The benchmark workloads; each returns table rows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docproc_broker::{pb, Broker, BrokerConfig, Durability};
use docproc_client::{Client, ConsumerOptions, NewMessage};
use futures::StreamExt;

use crate::{scaled, Row, PAYLOAD};

pub(crate) struct Served {
    _dir: tempfile::TempDir,
    pub(crate) broker: Broker,
    pub(crate) url: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

pub(crate) async fn serve(durability: Durability) -> anyhow::Result<Served> {
    let dir = tempfile::tempdir_in(".")?;
    let mut cfg = BrokerConfig::with_dir(dir.path());
    cfg.durability = match std::env::var("BENCH_DURABILITY") {
        Ok(d) => d.parse()?,
        Err(_) => durability,
    };
    let broker = Broker::open(cfg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("grpc://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let b = broker.clone();
    tokio::spawn(async move {
        let _ = docproc_broker::serve(b, listener, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(Served {
        _dir: dir,
        broker,
        url,
        stop,
    })
}

impl Served {
    pub(crate) fn finish(self) {
        let _ = self.stop.send(());
        self.broker.close();
    }
}

pub(crate) fn payload() -> Vec<u8> {
    (0..PAYLOAD).map(|i| (i % 251) as u8).collect()
}

pub(crate) fn percentiles(mut v: Vec<Duration>) -> Option<(Duration, Duration)> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Some((at(0.50), at(0.99)))
}

/// The peer: RocksDB alone, `sync=true`, 1 KiB values, one per write and in batches.
pub(crate) fn raw_rocksdb() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (batch, total) in [(1u64, scaled(5_000)), (100, scaled(200_000))] {
        let dir = tempfile::tempdir_in(".")?;
        let db = rocksdb::DB::open_default(dir.path())?;
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        let value = payload();
        let start = Instant::now();
        let mut key = 0u64;
        while key < total {
            let mut wb = rocksdb::WriteBatch::default();
            for _ in 0..batch {
                wb.put(key.to_be_bytes(), &value);
                key += 1;
            }
            db.write_opt(wb, &wo)?;
        }
        rows.push(Row {
            name: format!("peer: raw RocksDB put, batch {batch}"),
            messages: total,
            elapsed: start.elapsed(),
            latency: None,
            note: "sync=true, one writer thread, no broker".into(),
        });
    }
    Ok(rows)
}

/// Produce over gRPC with `batch` messages per request from `tasks` concurrent producers.
pub(crate) async fn produce(batch: u64, tasks: u64, total: u64) -> anyhow::Result<Row> {
    let s = serve(Durability::Sync).await?;
    let client = Client::connect(&s.url).await?;
    let per_task = total / tasks / batch;
    let body = payload();
    let mut lat = Vec::new();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task as usize);
                for _ in 0..per_task {
                    let msgs = (0..batch)
                        .map(|_| NewMessage::new("bench", body.clone()))
                        .collect();
                    let t = Instant::now();
                    client.produce(msgs).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    for h in handles {
        lat.extend(h.await??);
    }
    let elapsed = start.elapsed();
    s.finish();
    Ok(Row {
        name: format!("produce, batch {batch}, {tasks} producers"),
        messages: per_task * tasks * batch,
        elapsed,
        latency: percentiles(lat),
        note: "latency = produce call until durable".into(),
    })
}

/// Stores `total` messages in `queue` through the engine, priorities 0..=3 in turn.
pub(crate) async fn fill(
    broker: &Broker,
    queue: &str,
    total: u64,
    body: &[u8],
) -> anyhow::Result<()> {
    let mut left = total;
    while left > 0 {
        let n = left.min(1000);
        let msgs = (0..n)
            .map(|i| pb::NewMessage {
                queue: queue.into(),
                priority: (i % 4) as u32,
                payload: body.to_vec(),
                ..Default::default()
            })
            .collect();
        broker.produce(msgs).await?;
        left -= n;
    }
    Ok(())
}

/// Two stream consumers on `queue` that ack every delivery (acks in
/// parallel) until `total` are acked between them; returns the shared count.
fn ackers(
    client: &Client,
    queue: &str,
    total: u64,
) -> (
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) {
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(tokio::sync::watch::channel(false).0);
    let tasks = (0..2)
        .map(|c| {
            let (client, done, finished) = (client.clone(), done.clone(), finished.clone());
            let mut fin = finished.subscribe();
            let opts = ConsumerOptions {
                prefetch: 512,
                consumer_id: format!("c{c}"),
                ..Default::default()
            };
            let mut stream = client.consume(queue, opts);
            tokio::spawn(async move {
                let mut acks = futures::stream::FuturesUnordered::new();
                loop {
                    tokio::select! {
                        Some(d) = stream.next() => {
                            let d = d?;
                            acks.push(async move { d.ack(Vec::new()).await });
                        }
                        Some(r) = acks.next(), if !acks.is_empty() => {
                            r?;
                            if done.fetch_add(1, Ordering::AcqRel) + 1 >= total {
                                finished.send_replace(true);
                                return Ok(());
                            }
                        }
                        _ = fin.wait_for(|f| *f) => return Ok(()),
                    }
                }
            })
        })
        .collect();
    (done, tasks)
}

/// Consume over the gRPC stream and ack each message (acks in parallel).
pub(crate) async fn consume_ack(total: u64) -> anyhow::Result<Row> {
    let s = serve(Durability::Sync).await?;
    let body = payload();
    fill(&s.broker, "bench", total, &body).await?;
    let client = Client::connect(&s.url).await?;
    let start = Instant::now();
    let (_, consumers) = ackers(&client, "bench", total);
    for c in consumers {
        c.await??;
    }
    let elapsed = start.elapsed();
    s.finish();
    Ok(Row {
        name: "consume + ack, 2 stream consumers".into(),
        messages: total,
        elapsed,
        latency: None,
        note: "prefetch 512 each, every message acked (batched on the stream)".into(),
    })
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// End-to-end produce → delivery latency at a steady `rate` messages/s.
pub(crate) async fn latency(rate: u64, total: u64) -> anyhow::Result<Row> {
    let s = serve(Durability::Sync).await?;
    let client = Client::connect(&s.url).await?;
    let mut stream = client.consume(
        "lat",
        ConsumerOptions {
            prefetch: 1024,
            ..Default::default()
        },
    );
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total as usize);
        let mut acks = futures::stream::FuturesUnordered::new();
        while (lat.len() as u64) < total {
            tokio::select! {
                Some(d) = stream.next() => {
                    let d = d?;
                    let sent = u64::from_be_bytes(d.payload()[..8].try_into()?);
                    lat.push(Duration::from_nanos(now_nanos().saturating_sub(sent)));
                    acks.push(async move { d.ack(Vec::new()).await });
                }
                Some(r) = acks.next(), if !acks.is_empty() => { r?; }
            }
        }
        while let Some(r) = acks.next().await {
            r?;
        }
        anyhow::Ok(lat)
    });
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let body = payload();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = futures::stream::FuturesUnordered::new();
    for _ in 0..total {
        ticker.tick().await;
        let mut p = body.clone();
        p[..8].copy_from_slice(&now_nanos().to_be_bytes());
        let client = client.clone();
        inflight.push(tokio::spawn(async move {
            client.produce(vec![NewMessage::new("lat", p)]).await
        }));
        while let Some(Some(r)) = futures::FutureExt::now_or_never(inflight.next()) {
            r??;
        }
    }
    while let Some(r) = inflight.next().await {
        r??;
    }
    let lat = receiver.await??;
    let elapsed = start.elapsed();
    s.finish();
    Ok(Row {
        name: format!("end to end at {rate} msgs/s, batch 1"),
        messages: total,
        elapsed,
        latency: percentiles(lat),
        note: "latency = produce sent until delivery received".into(),
    })
}

/// `total` messages through one queue, produced and consumed at once; one
/// row per tenth, to show throughput does not decay as tombstones pile up.
pub(crate) async fn flow(total: u64) -> anyhow::Result<Vec<Row>> {
    let s = serve(Durability::Sync).await?;
    let client = Client::connect(&s.url).await?;
    let body = payload();
    let producers = 4u64;
    let batch = 100u64;
    let per = total / producers / batch;
    let total = per * producers * batch;
    let mut prod = Vec::new();
    for _ in 0..producers {
        let (client, body) = (client.clone(), body.clone());
        prod.push(tokio::spawn(async move {
            for _ in 0..per {
                let msgs = (0..batch)
                    .map(|_| NewMessage::new("flow", body.clone()))
                    .collect();
                client.produce(msgs).await?;
            }
            anyhow::Ok(())
        }));
    }
    let window = (total / 10).max(1);
    let (done, consumers) = ackers(&client, "flow", total);
    // Sample the acked count and report each tenth of the run.
    let mut rows = Vec::new();
    let (mut mark, mut next) = (Instant::now(), window);
    while next <= total {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if done.load(Ordering::Acquire) >= next {
            rows.push(Row {
                name: format!("flow: messages {}..{}", next - window, next),
                messages: window,
                elapsed: mark.elapsed(),
                latency: None,
                note: "4 producers × batch 100 while 2 consumers ack".into(),
            });
            mark = Instant::now();
            next += window;
        }
    }
    for c in consumers {
        c.await??;
    }
    for p in prod {
        p.await??;
    }
    s.finish();
    Ok(rows)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Restart time and memory with `total` messages queued.
pub(crate) async fn recovery(total: u64) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir_in(".")?;
    let mut cfg = BrokerConfig::with_dir(dir.path());
    cfg.durability = Durability::None;
    {
        let broker = Broker::open(cfg.clone())?;
        fill(&broker, "big", total, &payload()).await?;
        broker.close();
    }
    let before = rss_kib();
    let start = Instant::now();
    let broker = Broker::open(cfg)?;
    let elapsed = start.elapsed();
    let after = rss_kib();
    let ready: u64 = broker.stats(Some("big"))?[0]
        .priorities
        .iter()
        .map(|p| p.ready)
        .sum();
    anyhow::ensure!(ready == total, "recovered {ready} of {total}");
    broker.close();
    Ok(Row {
        name: format!("restart with {total} queued"),
        messages: total,
        elapsed,
        latency: None,
        note: format!(
            "open took {:.2} s, memory +{} MiB",
            elapsed.as_secs_f64(),
            after.saturating_sub(before) / 1024
        ),
    })
}
