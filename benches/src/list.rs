//! Listing beside a large live backlog: a queue of queued messages that
//! nobody consumes, a small second queue with a few leased, and lists over
//! gRPC of what a dashboard asks for (the newest page of everything, the
//! small queue, the leased ones, one tenant's jobs). Latency per call; the
//! backlog is the size a list must not pay for.

use std::time::Instant;

use docproc_broker::{pb, Durability};
use docproc_client::Client;

use crate::workloads::{fill, percentiles, serve};
use crate::Row;

/// Lists per row.
const CALLS: u64 = 300;

pub(crate) async fn all(backlog: u64) -> anyhow::Result<Vec<Row>> {
    let s = serve(Durability::Sync).await?;
    // One tenant's 100 messages, older than the whole backlog: a listing
    // that filtered pages by owner would walk every queued message first.
    let owned = (0..100)
        .map(|_| pb::NewMessage {
            queue: "backlog".into(),
            payload: vec![7u8; 64],
            owner: "tenant-a".into(),
            ..Default::default()
        })
        .collect();
    s.broker.produce(owned).await?;
    fill(&s.broker, "backlog", backlog, &[7u8; 64]).await?;
    fill(&s.broker, "small", 100, &[7u8; 64]).await?;
    let leased = s.broker.lease("small", 10, "bench").await?;
    anyhow::ensure!(leased.len() == 10, "leased {}", leased.len());
    let client = Client::connect(&s.url).await?;
    let page = |queues: &[&str], states: &[pb::State]| pb::ListRequest {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        states: states.iter().map(|s| *s as i32).collect(),
        limit: 100,
        ..Default::default()
    };
    let cases = [
        ("newest 100 of every queue", page(&[], &[]), 100),
        ("the small queue", page(&["small"], &[]), 100),
        ("leased only", page(&[], &[pb::State::Leased]), 10),
        (
            "one owner's newest 100",
            pb::ListRequest {
                owner: "tenant-a".into(),
                ..page(&[], &[])
            },
            100,
        ),
    ];
    let mut rows = Vec::new();
    for (name, req, expect) in cases {
        let mut lat = Vec::new();
        let start = Instant::now();
        for _ in 0..CALLS {
            let t = Instant::now();
            let got = client.list(req.clone()).await?;
            lat.push(t.elapsed());
            anyhow::ensure!(
                got.messages.len() == expect,
                "{name}: {} messages",
                got.messages.len()
            );
        }
        rows.push(Row {
            name: format!("list: {name}"),
            messages: CALLS,
            elapsed: start.elapsed(),
            latency: percentiles(lat),
            note: format!(
                "calls/s; {backlog} queued in `backlog` (100 older ones owned by one tenant), 100 in `small` (10 leased), page of 100"
            ),
        });
    }
    s.finish();
    Ok(rows)
}
