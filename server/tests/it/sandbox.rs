//! The extractor sandbox without outside tools: the child limits itself
//! (a result over its file-size limit kills it with SIGXFSZ and fails only
//! that job; its address-space limit holds), and a cancelled job's
//! extractor is killed with everything it started (its process group).

use crate::common;

use std::time::Duration;

use common::{script, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_limits_itself_and_a_result_over_the_file_limit_fails_its_job() {
    let s = TestServer::start(|c| c.limits.max_output_bytes = 4096).await;
    // Rows enough for result files well over 4 KiB.
    let mut csv = String::from("n,square,label\n");
    for i in 0..2000 {
        csv.push_str(&format!("{i},{},row number {i}\n", i * i));
    }
    let big = s.submit("big.csv", csv.as_bytes(), &[]).await;
    let st = s.wait(&big, "failed", 60).await;
    let error = st["error"].as_str().unwrap_or_default();
    assert!(error.contains("SIGXFSZ"), "{st}");
    // A small one on the same server is fine.
    let small = s.submit("small.csv", b"a,b\n1,2\n", &[]).await;
    s.wait(&small, "completed", 60).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_space_limit_holds_for_the_extractor() {
    // 16 MiB is less than the extractor has mapped by the time it limits
    // itself, so its first sizeable allocation must fail; an allocator
    // arena reserved before the limit would let the parse run on.
    let s = TestServer::start(|c| c.limits.memory_bytes = 16 << 20).await;
    let mut csv = String::from("n,label\n");
    for i in 0..5000 {
        csv.push_str(&format!("{i},row number {i}\n"));
    }
    let job = s.submit("rows.csv", csv.as_bytes(), &[]).await;
    let st = s.wait(&job, "failed", 60).await;
    let error = st["error"].as_str().unwrap_or_default();
    // An allocation refused: an I/O error or an aborted process.
    assert!(
        error.contains("out of memory") || error.contains("SIGABRT"),
        "{st}"
    );
    s.stop().await;
}

fn alive(pid: u32) -> bool {
    // A zombie is dead too: it only waits for its parent to read it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_jobs_extractor_is_killed_with_what_it_started() {
    let tools = tempfile::tempdir().unwrap();
    let pid_file = tools.path().join("grandchild.pid");
    // An extractor that starts a process of its own and hangs.
    let hang = script(
        tools.path(),
        &format!("sleep 600 &\necho $! > {}\nwait", pid_file.display()),
    );
    let s = TestServer::start(move |c| {
        c.extractor = Some(hang);
        c.heartbeat = Some(Duration::from_millis(100));
    })
    .await;
    let id = s.submit("t.csv", b"a,b\n1,2\n", &[]).await;
    s.wait(&id, "processing", 60).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let grandchild: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "no grandchild");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(alive(grandchild));
    let c = s.delete(&format!("/api/job/{id}")).await;
    assert_eq!(c.status, 200, "{}", c.text());
    s.wait(&id, "cancelled", 30).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(grandchild) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the extractor's own process {grandchild} outlived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}
