//! Three processes: `docproc broker`, the server (uploads only, no local
//! workers) on `grpc://`, and `docproc worker` started after the uploads.
//! The worker processes every job, highest priority first.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestServer;
use docproc_server::config::Pools;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn broker(dir: &std::path::Path) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_docproc"))
        .args(["broker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn docproc broker");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("listen=") {
                let addr = line[pos + 7..]
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
    (Proc(child), format!("grpc://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_on_a_remote_broker_runs_jobs_in_priority_order() {
    let broker_dir = tempfile::tempdir().unwrap();
    let (_broker, url) = broker(broker_dir.path());
    let queue = url.clone();
    let s = TestServer::start(move |c| {
        c.queue_url = Some(queue);
        c.pools = Pools {
            excel: 0,
            pdf: 0,
            ai: 0,
        };
    })
    .await;
    let mut ids = Vec::new();
    for p in ["low", "normal", "urgent", "high"] {
        let csv = format!("priority,n\n{p},1\n");
        ids.push((
            p,
            s.submit("p.csv", csv.as_bytes(), &[("priority", p)]).await,
        ));
    }
    assert_eq!(
        s.get(&format!("/api/job/{}/status", ids[0].1)).await.json()["status"],
        "queued"
    );

    let _worker = Proc(
        Command::new(env!("CARGO_BIN_EXE_docproc"))
            .args([
                "worker",
                "--queue",
                &url,
                "--excel-workers",
                "1",
                "--pdf-workers",
                "0",
                "--ai-workers",
                "0",
            ])
            .arg("--data-dir")
            .arg(s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docproc worker"),
    );
    let mut started = Vec::new();
    for (p, id) in &ids {
        let st = s.wait(id, "completed", 60).await;
        assert!(st["result"]["summary"]["cells"].as_u64().is_some(), "{st}");
        let res = s.get(&format!("/api/job/{id}/result")).await.json();
        assert_eq!(res["sheets"][0]["cells"][1][0], *p);
        started.push((st["started_at"].as_str().unwrap().to_string(), *p));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, p)| *p).collect();
    assert_eq!(order, ["urgent", "high", "normal", "low"]);
    s.stop().await;
}
