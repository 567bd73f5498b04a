//! Peers measured in the same run: Redis lists through `redis-benchmark`,
//! once as this machine runs it (no persistence) and once started here with
//! `appendfsync always`, the durability our `sync` mode gives.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Row, PAYLOAD};

pub(crate) struct TempRedis {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A throwaway `redis-server` with `appendfsync always`, on a free port.
pub(crate) fn start_fsync_always() -> anyhow::Result<(TempRedis, u16)> {
    let dir = tempfile::tempdir_in(".")?;
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()?;
    let redis = TempRedis { child, _dir: dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((redis, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("redis-server on port {port} did not start")
}

/// `redis-benchmark -t lpush` with 64 clients; returns (rps, p50, p99).
fn lpush(port: u16, pipeline: u32, n: u64) -> anyhow::Result<(f64, f64, f64)> {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "lpush",
            "-c",
            "64",
            "--csv",
        ])
        .args([
            "-n",
            &n.to_string(),
            "-d",
            &PAYLOAD.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("\"LPUSH"))
        .ok_or_else(|| anyhow::anyhow!("no LPUSH line in {text}"))?;
    let f: Vec<f64> = line
        .split(',')
        .skip(1)
        .filter_map(|v| v.trim_matches('"').parse().ok())
        .collect();
    // rps, avg, min, p50, p95, p99, max
    anyhow::ensure!(f.len() >= 6, "unexpected redis-benchmark output {line}");
    Ok((f[0], f[3], f[5]))
}

/// Redis LPUSH rows, or none with a note when Redis tools are missing.
pub(crate) fn redis(n: u64) -> anyhow::Result<Vec<Row>> {
    if Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("peers: redis-benchmark not installed; skipping Redis rows");
        return Ok(Vec::new());
    }
    let shared_port: u16 = std::env::var("REDIS_URL")
        .ok()
        .and_then(|u| {
            u.rsplit(':').next().and_then(|p| {
                p.trim_end_matches('/')
                    .split('/')
                    .next()
                    .and_then(|p| p.parse().ok())
            })
        })
        .unwrap_or(6379);
    let (_redis, durable_port) = start_fsync_always()?;
    let mut rows = Vec::new();
    for (port, mode) in [
        (shared_port, "no persistence"),
        (durable_port, "appendfsync always"),
    ] {
        for pipeline in [1u32, 100] {
            let (rps, p50, p99) = lpush(port, pipeline, n)?;
            rows.push(Row {
                name: format!("peer: Redis 7 LPUSH, pipeline {pipeline}, 64 clients"),
                messages: n,
                elapsed: Duration::from_secs_f64(n as f64 / rps),
                latency: Some((
                    Duration::from_secs_f64(p50 / 1000.0),
                    Duration::from_secs_f64(p99 / 1000.0),
                )),
                note: format!("{mode}; redis-benchmark"),
            });
        }
    }
    Ok(rows)
}
