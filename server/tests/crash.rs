//! `docproc broker` as a real process, killed with SIGKILL mid-stream:
//! every acknowledged produce survives and no acked message comes back.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docproc_client::{Client, NewMessage};

struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the broker on a free port and waits for its "serving" line.
fn start(dir: &std::path::Path, durability: &str) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_docproc"))
        .args([
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--durability",
            durability,
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn docproc");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("listen=") {
                let addr: String = line[pos + 7..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("broker announced its address");
    Proc {
        child,
        url: format!("grpc://{addr}"),
    }
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
