//! `make bench`: broker throughput and latency over gRPC on loopback, with
//! raw RocksDB as the peer measured in the same run. Prints one table.
//!
//! Environment: `BENCH_SCALE` (default 1.0) scales every message count;
//! `BENCH_FLOW` sets the long-run message count (default 10,000,000);
//! `BENCH_ONLY` (comma-separated: raw, redis, streams, produce1, produce100, consume,
//! latency, flow, recovery, list, jobs, http, ws, pdf) runs a subset, and
//! `streams-docproc` runs the streams workloads without their peer (for
//! profiling). The http, ws
//! and pdf workloads need the release `docproc` binary beside this one
//! (`make bench` builds it); pdf needs the corpus (`make corpus`) and
//! poppler's `pdftotext`.

mod http;
mod jobs;
mod list;
mod pdf;
mod peers;
mod streams;
mod workloads;
mod ws;

use std::time::Duration;

/// The allocator `docproc` ships with, so the broker is measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Message payload size for every workload.
pub(crate) const PAYLOAD: usize = 1024;

/// One row of the result table.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) messages: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Option<(Duration, Duration)>,
    pub(crate) note: String,
}

impl Row {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// `n` scaled by `BENCH_SCALE`, at least 1.
pub(crate) fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(1)
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let flow: u64 = std::env::var("BENCH_FLOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    println!(
        "payload {PAYLOAD} B, durability sync unless noted, gRPC on 127.0.0.1, {} cores",
        num_cpus()
    );
    println!("| workload | messages | msgs/s | p50 ms | p99 ms | notes |");
    println!("|---|---:|---:|---:|---:|---|");
    let print = |rows: Vec<Row>| {
        for r in rows {
            let (p50, p99) = r
                .latency
                .map_or(("-".into(), "-".into()), |(a, b)| (fmt_ms(a), fmt_ms(b)));
            println!(
                "| {} | {} | {:.0} | {} | {} | {} |",
                r.name,
                r.messages,
                r.rate(),
                p50,
                p99,
                r.note
            );
        }
    };
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    rt.block_on(async {
        if run("raw") {
            print(workloads::raw_rocksdb()?);
        }
        if run("redis") {
            print(peers::redis(scaled(200_000))?);
        }
        if run("streams") {
            print(streams::all(scaled(200_000)).await?);
        }
        if only.split(',').any(|o| o == "streams-docproc") {
            print(streams::ours(scaled(200_000)).await?);
        }
        if run("produce1") {
            print(vec![workloads::produce(1, 64, scaled(60_000)).await?]);
        }
        if run("produce100") {
            print(vec![workloads::produce(100, 8, scaled(500_000)).await?]);
        }
        if run("consume") {
            print(vec![workloads::consume_ack(scaled(200_000)).await?]);
        }
        if run("latency") {
            print(vec![workloads::latency(5_000, scaled(50_000)).await?]);
        }
        if run("list") {
            print(list::all(scaled(100_000)).await?);
        }
        if run("jobs") {
            print(jobs::all(scaled(20_000)).await?);
        }
        if run("http") {
            print(http::all(scaled(500)).await?);
        }
        if run("ws") {
            print(ws::all(scaled(10_000)).await?);
        }
        if run("pdf") {
            print(pdf::all()?);
        }
        if run("flow") {
            print(workloads::flow(flow).await?);
        }
        if run("recovery") {
            print(vec![workloads::recovery(scaled(1_000_000)).await?]);
        }
        anyhow::Ok(())
    })
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
