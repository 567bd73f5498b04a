//! `docproc broker` as a real process, killed with SIGKILL mid-stream:
//! every acknowledged produce survives and no acked message comes back.

use crate::common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::{broker_process, BrokerProcess};

use docproc_client::{Client, NewMessage};

/// Starts the broker on a free port with the given durability.
fn start(dir: &std::path::Path, durability: &str) -> BrokerProcess {
    broker_process(dir, &["--durability", durability])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut produced = Vec::new();
    let mut acked = HashSet::new();
    let mut p = start(dir.path(), "sync");
    let mut client = Client::connect(&p.url).await?;
    for round in 0..3u32 {
        // Concurrent producers: their writes share fsyncs.
        let sends = (0..20u32).map(|i| {
            let c = client.clone();
            async move {
                let msgs = (0..10u32)
                    .map(|j| NewMessage::new("jobs", format!("{round}-{i}-{j}").into_bytes()))
                    .collect();
                c.produce(msgs).await
            }
        });
        for ids in futures::future::try_join_all(sends).await? {
            produced.extend(ids);
        }
        for d in client
            .fetch("jobs", 50, Duration::from_secs(5), "w")
            .await?
        {
            d.ack(b"ok".to_vec()).await?;
            acked.insert(d.id());
        }
        // Leave some leased and unacked, then kill without warning.
        client
            .fetch("jobs", 10, Duration::from_secs(5), "w")
            .await?;
        p.child.kill()?;
        p.child.wait()?;
        p = start(dir.path(), "sync");
        client = Client::connect(&p.url).await?;
        for &id in &produced {
            let m = client.get(id, false).await?;
            if acked.contains(&id) {
                assert_eq!(
                    m.state(),
                    docproc_client::pb::State::Completed,
                    "acked {id} survives as completed"
                );
            }
        }
    }
    let stats = client.stats(Some("jobs")).await?.remove(0);
    let waiting: u64 = stats.priorities.iter().map(|s| s.ready + s.leased).sum();
    assert_eq!(
        waiting as usize,
        produced.len() - acked.len(),
        "every unacked message is still there"
    );
    // Drain what is ready: no acked message is among it.
    let mut seen = HashSet::new();
    loop {
        let got = client
            .fetch("jobs", 100, Duration::from_millis(200), "w")
            .await?;
        if got.is_empty() {
            break;
        }
        for d in got {
            assert!(!acked.contains(&d.id()), "acked {} delivered again", d.id());
            seen.insert(d.id());
        }
    }
    assert!(!seen.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_ack_answered_on_the_consume_stream() -> anyhow::Result<()> {
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir()?;
    let mut p = start(dir.path(), "sync");
    let client = Client::connect(&p.url).await?;
    let mut produced = Vec::new();
    for b in 0..4u32 {
        let msgs = (0..500u32)
            .map(|i| NewMessage::new("jobs", format!("{b}-{i}").into_bytes()))
            .collect();
        produced.extend(client.produce(msgs).await?);
    }
    let mut consumer = client.consume(
        "jobs",
        docproc_client::ConsumerOptions {
            prefetch: 256,
            ..Default::default()
        },
    );
    // Every delivery acked from its own task (the consumer batches them on
    // its stream); the broker is killed while batches are in flight.
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let (count, mut counted) = tokio::sync::watch::channel(0usize);
    let count = Arc::new(count);
    // Each ack task holds a sender: when all are dropped, all are done.
    let (running, mut finished) = tokio::sync::mpsc::channel::<()>(1);
    let acking = {
        let answered = answered.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let (answered, count, running) = (answered.clone(), count.clone(), running.clone());
                tokio::spawn(async move {
                    if d.ack(b"ok".to_vec()).await.is_ok() {
                        answered.lock().expect("lock").insert(d.id());
                        count.send_modify(|n| *n += 1);
                    }
                    drop(running);
                });
            }
        })
    };
    counted.wait_for(|n| *n >= 600).await?;
    p.child.kill()?;
    p.child.wait()?;
    // The consumer reconnects forever: drop it, then let every ack end
    // (answered, or failed with the broker gone).
    acking.abort();
    let _ = acking.await;
    tokio::time::timeout(Duration::from_secs(30), finished.recv()).await?;
    let answered = answered.lock().expect("lock").clone();
    assert!(answered.len() >= 600);
    let p = start(dir.path(), "sync");
    let client = Client::connect(&p.url).await?;
    let mut completed = 0;
    for &id in &produced {
        let state = client.get(id, false).await?.state();
        if answered.contains(&id) {
            assert_eq!(
                state,
                docproc_client::pb::State::Completed,
                "answered ack of {id} survives"
            );
        }
        completed += usize::from(state == docproc_client::pb::State::Completed);
    }
    let stats = client.stats(Some("jobs")).await?.remove(0);
    let live: u64 = stats.priorities.iter().map(|s| s.ready + s.leased).sum();
    assert_eq!(live as usize + completed, produced.len(), "nothing is lost");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_closes_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut p = start(dir.path(), "batch:50");
    let client = Client::connect(&p.url).await?;
    let ids = client
        .produce(
            (0..100u32)
                .map(|i| NewMessage::new("q", i.to_be_bytes().to_vec()))
                .collect(),
        )
        .await?;
    // An open consumer stream must not hold the shutdown up.
    let mut consumer = client.consume(
        "q",
        docproc_client::ConsumerOptions {
            prefetch: 1,
            ..Default::default()
        },
    );
    use futures::StreamExt;
    let held = consumer.next().await.expect("a delivery")?;
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()?;
    assert!(status.success());
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(code) = p.child.try_wait()? {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "broker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "clean exit, got {code}");
    drop((held, consumer));
    // Even in batch mode a clean shutdown loses nothing that was acknowledged.
    let p = start(dir.path(), "sync");
    let client = Client::connect(&p.url).await?;
    let stats = client.stats(Some("q")).await?.remove(0);
    let total: u64 = stats.priorities.iter().map(|s| s.ready + s.leased).sum();
    assert_eq!(total, ids.len() as u64);
    Ok(())
}
