//! Three processes: `docproc broker`, the server (uploads only, no local
//! workers) on `grpc://`, and `docproc worker` started after the uploads.
//! The worker processes every job, highest priority first.

mod common;

use common::{broker_process, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_on_a_remote_broker_runs_jobs_in_priority_order() {
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = broker_process(broker_dir.path(), &[]);
    let url = broker.url.clone();
    let queue = url.clone();
    let s = TestServer::start(move |c| {
        c.queue_url = Some(queue);
        c.pools = common::no_local_workers();
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

    let _worker = common::excel_worker_process(&url, s.dir.path());
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
