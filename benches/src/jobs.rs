//! The generic job workload, run through the server's `Queue` trait against
//! every adapter: publish N jobs while W workers consume and complete them
//! (jobs/s), then a paced run below capacity for submit→start latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use docproc_queue::{self as queue, ConsumeOptions, NewJob};
use futures::StreamExt;
use serde_json::json;

use crate::workloads::{percentiles, serve};
use crate::{Row, PAYLOAD};

/// Workers completing jobs.
const WORKERS: usize = 8;
/// Jobs per publish call in the throughput phase.
const BATCH: usize = 100;
/// Rate of the latency phase, well below every adapter's capacity.
const PACED_PER_SEC: u64 = 500;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn job(sent_us: u64, filler: &str) -> NewJob {
    NewJob::new("bench", json!({ "sent_us": sent_us, "data": filler }))
}

/// Jobs through every adapter of this build; one row each.
pub(crate) async fn all(n: u64) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir_in(".")?;
    let embedded = format!("rocksdb://{}/queue?durability=sync", dir.path().display());
    rows.push(through("rocksdb:// (embedded, sync)", &embedded, n).await?);
    rows.push(through("memory://", "memory://", n).await?);
    let served = serve(docproc_broker::Durability::Sync).await?;
    rows.push(through("grpc:// (loopback broker, sync)", &served.url, n).await?);
    served.finish();
    // The machine's Redis (no persistence), then one with every write fsynced.
    let server = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("docproc-bench-{}", std::process::id());
    let url = format!("{server}/0?prefix={prefix}");
    let row = through("redis:// (no persistence)", &url, n).await;
    docproc_tests::services::redis_cleanup(&server, &prefix);
    rows.push(row?);
    let (_always, port) = crate::peers::start_fsync_always()?;
    let url = format!("redis://127.0.0.1:{port}/0?prefix=bench");
    rows.push(through("redis:// (appendfsync always)", &url, n).await?);
    #[cfg(feature = "kafka")]
    match std::env::var("KAFKA_BROKERS") {
        Ok(b) => {
            let url = format!("kafka://{b}?prefix=docproc-bench-{}", std::process::id());
            rows.push(through("kafka:// (tansu, memory storage)", &url, n).await?);
        }
        Err(_) => eprintln!("kafka:// row skipped: KAFKA_BROKERS is not set"),
    }
    #[cfg(feature = "rabbitmq")]
    {
        let server = std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let url = format!("{server}?prefix=docproc-bench-{}", std::process::id());
        let row = through("amqp:// (RabbitMQ, quorum queues)", &url, n).await;
        if let Err(e) = docproc_queue::rabbitmq::remove(&url, &["bench"]).await {
            eprintln!("amqp:// cleanup: {e}");
        }
        rows.push(row?);
    }
    Ok(rows)
}

async fn through(name: &str, url: &str, n: u64) -> anyhow::Result<Row> {
    let q = queue::open(url).await?;
    // The payload makes the stored job about PAYLOAD bytes like the other rows.
    let filler = "x".repeat(PAYLOAD.saturating_sub(40));
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Samples::default());
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (q, done, lat) = (q.clone(), done.clone(), latencies.clone());
        let mut s = q
            .consume(
                &["bench".into()],
                ConsumeOptions::worker(format!("bench-{w}")),
            )
            .await?;
        workers.push(tokio::spawn(async move {
            while let Some(l) = s.next().await {
                let l = l?;
                let sent = l.job().payload["sent_us"].as_u64().unwrap_or(0);
                lat.push(now_us().saturating_sub(sent));
                l.complete(json!(null)).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }

    // Throughput: publish everything in batches while the workers drain it.
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(BATCH as u64);
        let batch = (0..k).map(|_| job(now_us(), &filler)).collect();
        q.publish(batch).await?;
        sent += k;
    }
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();

    // Latency: one job at a time at a fixed rate, measured at lease time.
    latencies.clear();
    let paced = (PACED_PER_SEC * 4).min(n.max(100));
    let before = done.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / PACED_PER_SEC));
    for _ in 0..paced {
        tick.tick().await;
        q.publish_one(job(now_us(), &filler)).await?;
    }
    while done.load(Ordering::Relaxed) < before + paced {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let lat = percentiles(
        latencies
            .take()
            .into_iter()
            .map(Duration::from_micros)
            .collect(),
    );
    q.close().await;
    for w in workers {
        w.abort();
    }
    Ok(Row {
        name: format!("jobs via Queue trait: {name}"),
        messages: n,
        elapsed,
        latency: lat,
        note: format!(
            "{WORKERS} workers, publish batches of {BATCH}; latency = submit→start at {PACED_PER_SEC} jobs/s paced"
        ),
    })
}

/// Latency samples shared by the workers (a mutex is fine at these rates).
#[derive(Default)]
struct Samples(std::sync::Mutex<Vec<u64>>);

impl Samples {
    fn push(&self, v: u64) {
        if let Ok(mut s) = self.0.lock() {
            s.push(v);
        }
    }

    fn clear(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.clear();
        }
    }

    fn take(&self) -> Vec<u64> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}
