//! WebSocket fan-out: 10,000 subscribers, each following its own job on
//! `GET /api/ws` of a `docproc serve` child process (release binary, no
//! local workers) on a loopback broker in this process. This process takes
//! and completes the jobs through the queue; each subscriber records when
//! its `completed` frame arrives. Latency = the worker's `complete` call
//! → the frame received; jobs are completed at a paced rate, then in a burst.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docproc_queue::{self as queue, ConsumeOptions, NewJob};
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::workloads::{percentiles, serve};
use crate::Row;

/// Connections opened at once while subscribing.
const CONNECTING: usize = 200;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// The rows: paced completions, then a burst.
pub(crate) async fn all(subscribers: u64) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe()?.with_file_name("docproc");
    anyhow::ensure!(
        exe.is_file(),
        "{} is missing: build it with `cargo build --release -p docproc-server`",
        exe.display()
    );
    let served = serve(docproc_broker::Durability::Sync).await?;
    let dir = tempfile::tempdir_in(".")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let server = Proc(
        Command::new(&exe)
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--queue",
                &served.url,
            ])
            .args([
                "--excel-workers",
                "0",
                "--pdf-workers",
                "0",
                "--ai-workers",
                "0",
                "--webhook-workers",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    // It listens at once and answers 503 `starting` until its queue is open.
    while !ready(addr).await {
        anyhow::ensure!(Instant::now() < deadline, "docproc serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q = queue::open(&served.url).await?;
    let mut rows = Vec::new();
    let n = subscribers as usize;
    let half = n / 2;
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("wsbench", json!({ "i": i })))
        .collect();
    let mut ids = Vec::new();
    for chunk in jobs.chunks(1000) {
        ids.extend(q.publish(chunk.to_vec()).await?.into_iter().map(|j| j.0));
    }
    let arrivals: Arrivals = Arc::default();
    let connect_started = Instant::now();
    let connected = futures::stream::iter(ids.clone())
        .map(|id| subscriber(addr, id, arrivals.clone()))
        .buffer_unordered(CONNECTING)
        .collect::<Vec<_>>()
        .await;
    let tasks: Vec<_> = connected.into_iter().collect::<anyhow::Result<_>>()?;
    let connect_time = connect_started.elapsed();
    settle(addr).await?;
    let rss = rss_kib(server.0.id());

    let mut leases = q
        .consume(
            &["wsbench".into()],
            ConsumeOptions {
                prefetch: 64,
                ..ConsumeOptions::worker("ws-bench")
            },
        )
        .await?;
    // Paced: 1,000 completions a second for the first half.
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let pace = Duration::from_millis(1);
    let start = Instant::now();
    for k in 0..half {
        let lease = leases
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("lease stream ended"))??;
        let id = lease.job().job_id.0.clone();
        let due = start + pace * k as u32;
        tokio::time::sleep_until(due.into()).await;
        sent.insert(id, Instant::now());
        lease.complete(json!({ "ok": true })).await?;
    }
    let paced = wait_arrivals(&arrivals, &sent).await?;
    rows.push(Row {
        name: format!("WebSocket: {n} subscribers, paced 1,000 completions/s"),
        messages: half as u64,
        elapsed: paced.0,
        latency: percentiles(paced.1),
        note: format!(
            "complete() → `completed` frame at its subscriber; {n} connections opened in {:.1} s; server RSS {} MiB with all connected; release, sync broker on loopback",
            connect_time.as_secs_f64(),
            rss / 1024
        ),
    });
    // Burst: the rest as fast as the queue completes them, 8 at a time.
    let mut burst: HashMap<String, Instant> = HashMap::new();
    let mut pending = futures::stream::FuturesUnordered::new();
    for _ in half..n {
        let lease = leases
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("lease stream ended"))??;
        burst.insert(lease.job().job_id.0.clone(), Instant::now());
        pending.push(lease.complete(json!({ "ok": true })));
        if pending.len() >= 8 {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    let b = wait_arrivals(&arrivals, &burst).await?;
    rows.push(Row {
        name: format!(
            "WebSocket: {n} subscribers, burst of {} completions",
            n - half
        ),
        messages: (n - half) as u64,
        elapsed: b.0,
        latency: percentiles(b.1),
        note: "8 completions in flight; rate = completions whose frame arrived per second".into(),
    });
    for t in tasks {
        t.abort();
    }
    drop(server);
    served.finish();
    Ok(rows)
}

/// Connects, subscribes to `id`, waits for the snapshot; then records when
/// the `completed` frame arrives.
async fn subscriber(
    addr: std::net::SocketAddr,
    id: String,
    arrivals: Arrivals,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/api/ws?job_id={id}"), tcp).await?;
    let mut got_snapshot = false;
    while !got_snapshot {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => got_snapshot = t.as_str().contains("\"snapshot\""),
            Some(Ok(_)) => {}
            other => anyhow::bail!("subscriber {id}: {other:?}"),
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.as_str().contains("\"status\":\"completed\"") {
                    arrivals
                        .lock()
                        .map(|mut a| a.insert(id.clone(), Instant::now()))
                        .ok();
                    break;
                }
            }
        }
        // Keep the connection open until the run ends.
        std::future::pending::<()>().await;
    }))
}

/// Waits until every job in `sent` has its frame; answers the time from
/// the first send to the last arrival and each job's latency.
async fn wait_arrivals(
    arrivals: &Arrivals,
    sent: &HashMap<String, Instant>,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let a = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            sent.keys().all(|k| a.contains_key(k))
        };
        if done {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "frames missing after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let first = sent.values().min().copied().unwrap_or_else(Instant::now);
    let last = sent
        .keys()
        .filter_map(|k| a.get(k))
        .max()
        .copied()
        .unwrap_or(first);
    let lat = sent
        .iter()
        .filter_map(|(k, t0)| a.get(k).map(|t1| t1.saturating_duration_since(*t0)))
        .collect();
    Ok((last.saturating_duration_since(first), lat))
}

/// Waits until the server's hub has taken every event so far (its last
/// event id stops moving), so measurements do not include the backlog of
/// the publish and the subscriptions.
async fn settle(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..600 {
        let id = last_event_id(addr).await?;
        if last == Some(id) {
            return Ok(());
        }
        last = Some(id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("the hub never settled")
}

async fn last_event_id(addr: std::net::SocketAddr) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head =
        format!("GET /api/queue/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| &raw[p + 4..])
        .ok_or_else(|| anyhow::anyhow!("no response"))?;
    let v: serde_json::Value = serde_json::from_slice(body)?;
    v["websocket"]["last_event_id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no last_event_id in {v}"))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether `GET /readyz` answers 200.
async fn ready(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.is_ok() && head.ends_with(b" 200")
}
