//! Graceful drain of a real `docproc serve` process on SIGTERM: no accepted
//! upload is lost during a burst, jobs in hand finish within the grace, and
//! jobs still running after it are handed back to the queue at once (not
//! after their lease), all on the embedded RocksDB broker.

use crate::common;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{exit_within, request, script, serve_process, try_request};
use parking_lot::Mutex;

fn sigterm(child: &Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "SIGTERM sent");
}

async fn status_of(addr: SocketAddr, id: &str) -> serde_json::Value {
    request(addr, "GET", &format!("/api/job/{id}/status"), None)
        .await
        .json()
}

async fn wait_status(addr: SocketAddr, id: &str, want: &str, secs: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status_of(addr, id).await;
        if s["status"] == want {
            return s;
        }
        assert!(Instant::now() < deadline, "job {id}: {s}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_upload_burst_loses_no_accepted_job() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, addr) = serve_process(dir.path(), &["--shutdown-grace-secs", "2"]).await;
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<u16>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (accepted, refused, stop) = (accepted.clone(), refused.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let body = format!("task,n\n{t},{n}\n");
                let (ct, b) = common::multipart("burst.csv", body.as_bytes(), &[]);
                // No connection or no answer once the listener closes:
                // that upload was not accepted (0).
                let r = tokio::time::timeout(
                    Duration::from_secs(30),
                    try_request(addr, "POST", "/api/upload-async", &[], Some((&ct, b))),
                )
                .await;
                match r {
                    Ok(Some(r)) if r.status == 202 => accepted
                        .lock()
                        .push(r.json()["job_id"].as_str().unwrap().to_string()),
                    Ok(Some(r)) => refused.lock().push(r.status),
                    Ok(None) | Err(_) => {
                        refused.lock().push(0);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    // Let the burst run, then stop the server in the middle of it.
    while accepted.lock().len() < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&p.0);
    let status = exit_within(&mut p, 30).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    assert!(status.success(), "clean exit: {status:?}");
    let accepted = accepted.lock().clone();
    let refused = refused.lock().clone();
    assert!(
        refused.iter().all(|s| [0, 503].contains(s)),
        "refusals are 503 draining (or no connection): {refused:?}"
    );
    // Restart on the same data directory: every accepted job is there and runs.
    let (_p2, addr2) = serve_process(dir.path(), &[]).await;
    for id in &accepted {
        wait_status(addr2, id, "completed", 120).await;
    }
    eprintln!(
        "{} uploads accepted before/while draining, all completed after restart; {} refused",
        accepted.len(),
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_hand_finishes_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let slow = script(
        tools.path(),
        &format!("sleep 2\nexec {} \"$@\"", env!("CARGO_BIN_EXE_docproc")),
    );
    let slow = slow.to_str().unwrap().to_string();
    let (mut p, addr) = serve_process(
        dir.path(),
        &["--shutdown-grace-secs", "20", "--extractor", &slow],
    )
    .await;
    let (ct, b) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    let r = request(addr, "POST", "/api/upload-async", Some((&ct, b))).await;
    assert_eq!(r.status, 202);
    let id = r.json()["job_id"].as_str().unwrap().to_string();
    wait_status(addr, &id, "processing", 30).await;
    sigterm(&p.0);
    let status = exit_within(&mut p, 25).await;
    assert!(status.success(), "{status:?}");
    let (_p2, addr2) = serve_process(dir.path(), &[]).await;
    let s = status_of(addr2, &id).await;
    assert_eq!(
        s["status"], "completed",
        "finished before the process exited: {s}"
    );
    assert_eq!(s["attempts"], 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_after_the_grace_is_handed_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let stuck = script(tools.path(), "sleep 600");
    let stuck = stuck.to_str().unwrap().to_string();
    // The lease is long (300 s): only an explicit hand-back returns the job soon.
    let (mut p, addr) = serve_process(
        dir.path(),
        &[
            "--shutdown-grace-secs",
            "1",
            "--job-timeout-secs",
            "300",
            "--extractor",
            &stuck,
        ],
    )
    .await;
    let (ct, b) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    let r = request(addr, "POST", "/api/upload-async", Some((&ct, b))).await;
    let id = r.json()["job_id"].as_str().unwrap().to_string();
    wait_status(addr, &id, "processing", 30).await;
    let started = Instant::now();
    sigterm(&p.0);
    let status = exit_within(&mut p, 20).await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Restarted with the real extractor: the job runs again well before its
    // old lease would have ended.
    let (_p2, addr2) = serve_process(dir.path(), &[]).await;
    let s = wait_status(addr2, &id, "completed", 60).await;
    assert_eq!(
        s["attempts"], 1,
        "handing back does not use up an attempt: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_the_restarted_server_hands_back_its_own_leases_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let stuck = script(tools.path(), "sleep 600");
    let stuck = stuck.to_str().unwrap().to_string();
    // A 300 s lease: only the restart's hand-back can bring the job back soon.
    let (mut p, addr) = serve_process(
        dir.path(),
        &["--job-timeout-secs", "300", "--extractor", &stuck],
    )
    .await;
    let (ct, b) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    let r = request(addr, "POST", "/api/upload-async", Some((&ct, b))).await;
    let id = r.json()["job_id"].as_str().unwrap().to_string();
    wait_status(addr, &id, "processing", 30).await;
    p.0.kill().expect("SIGKILL");
    p.0.wait().expect("reaped");
    // The extractor child dies with its process group or runs on; either
    // way the restarted server owns the job again.
    let (_p2, addr2) = serve_process(dir.path(), &["--job-timeout-secs", "300"]).await;
    let s = wait_status(addr2, &id, "completed", 60).await;
    assert_eq!(
        s["attempts"], 1,
        "the killed run's delivery is not counted as an attempt: {s}"
    );
}
