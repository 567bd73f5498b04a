//! A `docproc worker` process killed with SIGKILL while it holds a job, on
//! the shared backends (Redis, and Kafka and RabbitMQ when built in):
//! nothing relies on the dead process, the job is retried by another worker
//! process (after its lease runs out, or at once when the backend sees the
//! connection drop) and completes as attempt 2.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{script, Proc, TestServer};

fn worker(url: &str, dir: &std::path::Path, extractor: Option<&std::path::Path>) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_docproc"));
    cmd.args(["worker", "--queue", url, "--excel-workers", "1"])
        .args(["--pdf-workers", "0", "--ai-workers", "0"])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(x) = extractor {
        cmd.arg("--extractor").arg(x);
    }
    Proc(cmd.spawn().expect("spawn docproc worker"))
}

/// Uploads a file, lets a worker that hangs take it, kills that worker,
/// and checks a second worker completes it as the second attempt.
async fn survives_a_killed_worker(url: String) {
    let queue = url.clone();
    let s = TestServer::start(move |c| {
        c.queue_url = Some(queue);
        c.job_timeout = Duration::from_secs(2);
        c.pools = common::no_local_workers();
    })
    .await;
    let hang = script(s.dir.path(), "sleep 60");
    let id = s.submit("a.csv", b"region,total\nNorth,3\n", &[]).await;
    let mut first = worker(&url, s.dir.path(), Some(&hang));
    let st = s.wait(&id, "processing", 60).await;
    assert_eq!(st["attempts"], 1);
    first.0.kill().expect("SIGKILL the worker");
    let _ = first.0.wait();
    let _second = worker(&url, s.dir.path(), None);
    let st = s.wait(&id, "completed", 90).await;
    assert_eq!(st["attempts"], 2, "{st}");
    let res = s.get(&format!("/api/job/{id}/result")).await.json();
    assert_eq!(res["sheets"][0]["cells"][1][0], "North");
    s.stop().await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_job_of_a_killed_worker_is_retried() {
    let server = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("docproc-test-crash-{}", std::process::id());
    let reachable = redis::Client::open(server.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .is_ok();
    if !reachable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Redis at {server} does not answer"
        );
        eprintln!("SKIPPED: Redis at {server} does not answer");
        return;
    }
    survives_a_killed_worker(format!("{server}/0?prefix={prefix}")).await;
    if let Ok(mut c) = redis::Client::open(server.as_str()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<u64, _> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

/// Needs a broker that expires a dead member's session and hands its
/// partitions to a new member: against tansu 0.6 the job stayed with the
/// killed worker past 90 s (see README), so this runs only when asked:
/// `KAFKA_BROKERS=… cargo test --features kafka -- --ignored`.
#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6 keeps a killed member's partitions; run against Kafka with --ignored"]
async fn kafka_job_of_a_killed_worker_is_retried() {
    let Some(brokers) = std::env::var("KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but KAFKA_BROKERS is not"
        );
        eprintln!("SKIPPED: KAFKA_BROKERS is not set");
        return;
    };
    let prefix = format!("docproc-test-crash-{}", std::process::id());
    survives_a_killed_worker(format!("kafka://{brokers}?prefix={prefix}")).await;
}

/// RabbitMQ hands the killed worker's unacknowledged message back as soon
/// as its connection drops; the next worker counts that delivery as a lost
/// attempt.
#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_job_of_a_killed_worker_is_retried() {
    let Some(server) = docproc_tests::services::amqp_url() else {
        return;
    };
    let url = format!("{server}?prefix=docproc-test-crash-{}", std::process::id());
    survives_a_killed_worker(url.clone()).await;
    remove_rabbitmq_queues(&url).await;
}

/// A worker whose RabbitMQ connection is closed under it (a RabbitMQ
/// restart, an operator) cannot go on — lapin does not reconnect — so the
/// process stops with an error for its supervisor to start it again,
/// instead of running on with a dead queue; the job it held runs on the
/// next worker as attempt 2.
#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_worker_whose_connection_is_closed_stops() {
    let Some(server) = docproc_tests::services::amqp_url() else {
        return;
    };
    let prefix = format!("docproc-test-closed-{}", std::process::id());
    let url = format!("{server}?prefix={prefix}");
    let queue = url.clone();
    let s = TestServer::start(move |c| {
        c.queue_url = Some(queue);
        c.pools = common::no_local_workers();
    })
    .await;
    let hang = script(s.dir.path(), "sleep 60");
    let id = s.submit("a.csv", b"region,total\nNorth,3\n", &[]).await;
    let mut first = worker(&url, s.dir.path(), Some(&hang));
    s.wait(&id, "processing", 60).await;
    if !docproc_tests::services::close_amqp_connection(&prefix, first.0.id()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but rabbitmqctl is missing"
        );
        eprintln!("SKIPPED: no rabbitmqctl to close the connection with");
        s.stop().await;
        remove_rabbitmq_queues(&url).await;
        return;
    }
    let status = common::exit_within(&mut first, 30).await;
    assert!(!status.success(), "{status}");
    let _second = worker(&url, s.dir.path(), None);
    let st = s.wait(&id, "completed", 60).await;
    assert_eq!(st["attempts"], 2, "{st}");
    s.stop().await;
    remove_rabbitmq_queues(&url).await;
}

/// Leaves nothing of a test behind on the shared RabbitMQ.
#[cfg(feature = "rabbitmq")]
async fn remove_rabbitmq_queues(url: &str) {
    let types = [
        "excel_processing",
        "pdf_processing",
        "ai_analysis",
        "webhook_delivery",
        "email_delivery",
    ];
    docproc_queue::rabbitmq::remove(url, &types)
        .await
        .expect("delete the test's queues");
}
