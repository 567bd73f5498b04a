//! Three processes: `docproc broker`, the server (uploads only, no local
//! workers) on `grpc://`, and `docproc worker` started after the uploads.
//! The worker processes every job, highest priority first.

use crate::common;

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

/// Anyone who can produce to the queue writes extraction payloads: a job
/// naming a file outside the uploads directory (an absolute path, `..`,
/// a bare name that is not an upload's) fails for good, and the file is
/// neither read nor deleted. A well-formed name still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produced_job_cannot_read_or_delete_files_outside_the_uploads() {
    use docproc_queue::{self as queue, NewJob};
    let (_broker_dir, broker, s) = common::on_remote_broker(|_| {}).await;
    let secret = s.dir.path().join("secret.csv");
    std::fs::write(&secret, "password,hunter2\n").unwrap();
    let uploads = s.dir.path().join("uploads");
    let q = queue::open(&broker.url).await.unwrap();
    let hostile = [
        secret.to_string_lossy().into_owned(),
        format!("{}/../secret.csv", uploads.display()),
        "../secret.csv".to_string(),
        format!("{}/../{:032x}.upload", uploads.display(), 7),
    ];
    let mut ids = Vec::new();
    for file in &hostile {
        let payload = serde_json::json!({ "file": file, "format": "csv", "title": "x" });
        ids.push(
            q.publish_one(NewJob::new("excel_processing", payload))
                .await
                .unwrap()
                .0,
        );
    }
    // A real upload, produced the same way by name.
    let name = format!("{:032x}.upload", 42);
    std::fs::write(uploads.join(&name), "a,b\n1,2\n").unwrap();
    let good = q
        .publish_one(NewJob::new(
            "excel_processing",
            serde_json::json!({ "file": name, "format": "csv", "title": "ok" }),
        ))
        .await
        .unwrap()
        .0;
    let _worker = common::excel_worker_process(&broker.url, s.dir.path());
    for (id, file) in ids.iter().zip(&hostile) {
        let st = s.wait(id, "failed", 60).await;
        assert!(
            st["error"]
                .as_str()
                .unwrap_or("")
                .contains("not an upload of this server"),
            "{file}: {st}"
        );
        assert_eq!(st["attempts"], 1, "{file}: failed for good at once");
    }
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "password,hunter2\n"
    );
    s.wait(&good, "completed", 60).await;
    let r = s.get(&format!("/api/job/{good}/result")).await.json();
    assert_eq!(r["sheets"][0]["cells"][1], serde_json::json!([1, 2]));
}

/// Processes of one deployment start in any order: a worker started
/// before its broker waits for it (`queue.wait_secs`, default 60 s) and
/// then runs the jobs the server takes; one that waits in vain stops with
/// the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_its_broker_waits_for_it() {
    let port = common::free_port();
    let url = format!("grpc://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut worker = worker_logging(&url, dir.path(), &["--excel-workers", "1"]);
    // It found no broker and says it waits.
    let stderr = worker.0.stderr.take().unwrap();
    let (said, waiting) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut said = Some(said);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("waiting for the queue backend") {
                if let Some(s) = said.take() {
                    let _ = s.send(());
                }
            }
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the worker says it waits for the broker")
        .unwrap();
    let broker_dir = tempfile::tempdir().unwrap();
    let mut broker = std::process::Command::new(env!("CARGO_BIN_EXE_docproc"));
    broker
        .args(["broker", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(broker_dir.path());
    let _broker = common::Proc(common::announced(broker).0);
    let queue = url.clone();
    let s = TestServer::start_in(dir, move |c| {
        c.queue_url = Some(queue);
        c.pools = common::no_local_workers();
    })
    .await;
    let id = s.submit("late.csv", b"a,b\n1,2\n", &[]).await;
    s.wait(&id, "completed", 60).await;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the same worker ran it"
    );
    s.stop().await;

    // Nothing ever answers: the wait ends with the reason.
    let silent = format!("grpc://127.0.0.1:{}", common::free_port());
    let data = tempfile::tempdir().unwrap();
    let mut gives_up = worker_logging(&silent, data.path(), &["--queue-wait-secs", "1"]);
    let status = common::exit_within(&mut gives_up, 30).await;
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut gives_up.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("waiting for the queue backend"), "{err}");
    assert!(
        err.to_lowercase().contains("unavailable") || err.contains("connect"),
        "{err}"
    );
}

/// `docproc worker` on `queue` without PDF or analysis workers, with
/// `extra` flags, its log readable on stderr.
fn worker_logging(queue: &str, dir: &std::path::Path, extra: &[&str]) -> common::Proc {
    common::Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_docproc"))
            .args(["worker", "--queue", queue])
            .args(["--pdf-workers", "0", "--ai-workers", "0"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}
