//! The queue conformance suite run against every adapter of this build:
//! `rocksdb://` (embedded, on disk), `memory://`, `grpc://` (a broker
//! served on a loopback port, restarted on the same data directory) and
//! `redis://` (the Redis at `REDIS_URL`, a key prefix per test) and, with
//! the `kafka` feature, `kafka://` (the broker at `KAFKA_BROKERS`, topics
//! and groups of its own per test) and, with the `rabbitmq` feature,
//! `amqp://` (the RabbitMQ at `AMQP_URL`, queues of its own per test,
//! deleted afterwards).

use std::sync::Arc;

use async_trait::async_trait;
use docproc_broker::BrokerConfig;
use docproc_queue::{self as queue, Queue};
use docproc_tests::conformance::Harness;
use docproc_tests::TestBroker;

/// Short backoff so retry scenarios take milliseconds.
const RETRY: &str = "retry_base_ms=10&retry_max_ms=50";

mod rocksdb {
    use super::*;

    struct Embedded {
        dir: tempfile::TempDir,
        queue: Arc<dyn Queue>,
    }

    fn url(dir: &std::path::Path) -> String {
        format!("rocksdb://{}?durability=sync&{RETRY}", dir.display())
    }

    async fn open() -> Option<Box<dyn Harness>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = queue::open(&url(dir.path()))
            .await
            .expect("open rocksdb://");
        assert_eq!(queue.backend(), "rocksdb");
        Some(Box::new(Embedded { dir, queue }))
    }

    #[async_trait]
    impl Harness for Embedded {
        fn queue(&self) -> Arc<dyn Queue> {
            self.queue.clone()
        }

        async fn restart(&mut self) -> bool {
            self.queue.close().await;
            self.queue = queue::open(&url(self.dir.path())).await.expect("reopen");
            true
        }

        fn restart_hands_back_leases(&self) -> bool {
            true
        }
    }

    docproc_tests::conformance_suite!(open);
}

mod memory {
    use super::*;

    struct Memory(Arc<dyn Queue>);

    async fn open() -> Option<Box<dyn Harness>> {
        let q = queue::open(&format!("memory://?{RETRY}"))
            .await
            .expect("open memory://");
        assert_eq!(q.backend(), "memory");
        Some(Box::new(Memory(q)))
    }

    #[async_trait]
    impl Harness for Memory {
        fn queue(&self) -> Arc<dyn Queue> {
            self.0.clone()
        }

        async fn restart(&mut self) -> bool {
            false
        }
    }

    docproc_tests::conformance_suite!(open);
}

mod grpc {
    use super::*;

    struct Remote {
        dir: tempfile::TempDir,
        broker: Option<TestBroker>,
        queue: Arc<dyn Queue>,
    }

    async fn serve(dir: &std::path::Path) -> (TestBroker, Arc<dyn Queue>) {
        let broker = TestBroker::start(BrokerConfig::with_dir(dir))
            .await
            .expect("serve broker");
        let q = queue::open(&format!("{}?{RETRY}", broker.url()))
            .await
            .expect("open grpc://");
        assert_eq!(q.backend(), "grpc");
        (broker, q)
    }

    async fn open() -> Option<Box<dyn Harness>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (broker, queue) = serve(dir.path()).await;
        Some(Box::new(Remote {
            dir,
            broker: Some(broker),
            queue,
        }))
    }

    #[async_trait]
    impl Harness for Remote {
        fn queue(&self) -> Arc<dyn Queue> {
            self.queue.clone()
        }

        async fn restart(&mut self) -> bool {
            self.queue.close().await;
            if let Some(b) = self.broker.take() {
                b.stop().await;
            }
            let (broker, queue) = serve(self.dir.path()).await;
            self.broker = Some(broker);
            self.queue = queue;
            true
        }
    }

    docproc_tests::conformance_suite!(open);
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use docproc_tests::services::{redis_cleanup, redis_url, unique_prefix};

    /// A queue under its own key prefix, whose keys are deleted when dropped.
    struct Redis {
        server: String,
        prefix: String,
        queue: Arc<dyn Queue>,
    }

    fn url(server: &str, prefix: &str) -> String {
        format!("{server}/0?prefix={prefix}&{RETRY}")
    }

    async fn open() -> Option<Box<dyn Harness>> {
        let server = redis_url()?;
        let prefix = unique_prefix("conformance");
        let queue = queue::open(&url(&server, &prefix))
            .await
            .expect("open redis://");
        assert_eq!(queue.backend(), "redis");
        Some(Box::new(Redis {
            server,
            prefix,
            queue,
        }))
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            redis_cleanup(&self.server, &self.prefix);
        }
    }

    #[async_trait]
    impl Harness for Redis {
        fn queue(&self) -> Arc<dyn Queue> {
            self.queue.clone()
        }

        /// The process "restarts": the queue is closed and opened again on
        /// the same server and prefix.
        async fn restart(&mut self) -> bool {
            self.queue.close().await;
            self.queue = queue::open(&url(&self.server, &self.prefix))
                .await
                .expect("reopen redis://");
            true
        }
    }

    docproc_tests::conformance_suite!(open);
}

#[cfg(feature = "kafka")]
mod kafka {
    use super::*;
    use docproc_tests::services::{kafka_brokers, unique_prefix};

    /// A queue on its own topics (a prefix per test) and consumer groups.
    struct Kafka {
        brokers: String,
        prefix: String,
        queue: Arc<dyn Queue>,
    }

    fn url(brokers: &str, prefix: &str) -> String {
        format!("kafka://{brokers}?prefix={prefix}&{RETRY}")
    }

    async fn open() -> Option<Box<dyn Harness>> {
        let brokers = kafka_brokers()?;
        let prefix = unique_prefix("conf");
        let queue = queue::open(&url(&brokers, &prefix))
            .await
            .expect("open kafka://");
        assert_eq!(queue.backend(), "kafka");
        Some(Box::new(Kafka {
            brokers,
            prefix,
            queue,
        }))
    }

    #[async_trait]
    impl Harness for Kafka {
        fn queue(&self) -> Arc<dyn Queue> {
            self.queue.clone()
        }

        /// The process restarts: its consumers leave the group, a new
        /// process joins and rebuilds its view from the status topic.
        async fn restart(&mut self) -> bool {
            self.queue.close().await;
            self.queue = queue::open(&url(&self.brokers, &self.prefix))
                .await
                .expect("reopen kafka://");
            true
        }
    }

    docproc_tests::conformance_suite!(open);
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use super::*;
    use docproc_queue::rabbitmq::RabbitQueue;
    use docproc_queue::QueueUrl;
    use docproc_tests::services::{amqp_url, unique_prefix};

    /// A queue on its own queues and stream (a prefix per test); every
    /// handle's queues are deleted when the harness is dropped.
    struct Rabbit {
        server: String,
        prefix: String,
        queue: RabbitQueue,
        old: Vec<RabbitQueue>,
    }

    fn url(server: &str, prefix: &str) -> String {
        let sep = if server.contains('?') { '&' } else { '?' };
        format!("{server}{sep}prefix={prefix}&{RETRY}")
    }

    async fn connect(server: &str, prefix: &str) -> RabbitQueue {
        let u = QueueUrl::parse(&url(server, prefix)).expect("amqp url");
        docproc_queue::rabbitmq::open(&u)
            .await
            .expect("open amqp://")
    }

    async fn open() -> Option<Box<dyn Harness>> {
        let server = amqp_url()?;
        let prefix = unique_prefix("conf").replace('.', "-");
        let queue = connect(&server, &prefix).await;
        assert_eq!(queue.backend(), "rabbitmq");
        Some(Box::new(Rabbit {
            server,
            prefix,
            queue,
            old: Vec::new(),
        }))
    }

    impl Drop for Rabbit {
        fn drop(&mut self) {
            let mut all = std::mem::take(&mut self.old);
            all.push(self.queue.clone());
            // Dropped inside the test's runtime: clean up on a thread and
            // runtime of its own.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    for q in all {
                        q.close().await;
                        if let Err(e) = q.destroy().await {
                            eprintln!("rabbitmq cleanup: {e}");
                        }
                    }
                })
            })
            .join();
        }
    }

    #[async_trait]
    impl Harness for Rabbit {
        fn queue(&self) -> Arc<dyn Queue> {
            Arc::new(self.queue.clone())
        }

        /// The process restarts: its connection closes (RabbitMQ hands its
        /// unsettled messages back), a new one reads the status stream.
        async fn restart(&mut self) -> bool {
            self.queue.close().await;
            let fresh = connect(&self.server, &self.prefix).await;
            self.old.push(std::mem::replace(&mut self.queue, fresh));
            true
        }
    }

    docproc_tests::conformance_suite!(open);

    /// lapin does not reconnect: a lost connection makes the queue report
    /// itself failed (the server then stops, for its supervisor to restart
    /// it) and its calls fail at once; the job it held goes back to
    /// RabbitMQ and the next worker runs it as the next attempt.
    #[tokio::test]
    async fn a_lost_connection_stops_the_queue_and_its_job_runs_elsewhere() {
        use docproc_queue::{ConsumeOptions, JobStatus, NewJob};
        use futures::StreamExt;
        use std::time::Duration;
        let Some(server) = amqp_url() else { return };
        let prefix = unique_prefix("lost").replace('.', "-");
        let a = connect(&server, &prefix).await;
        let failure = a
            .storage_failure()
            .expect("amqp:// reports a lost connection");
        assert!(failure.borrow().is_none());
        let t = "conf_lost";
        let id = a
            .publish_one(NewJob::new(t, serde_json::json!({"n": 1})))
            .await
            .expect("publish");
        let mut leases = a
            .consume(&[t.to_string()], ConsumeOptions::worker("a"))
            .await
            .expect("consume");
        let held = leases.next().await.expect("a lease").expect("lease");
        assert_eq!(held.attempt(), 1);
        if !docproc_tests::services::close_amqp_connection(&prefix, std::process::id()) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but rabbitmqctl is missing"
            );
            eprintln!("skipped: no rabbitmqctl to close the connection with");
            a.close().await;
            let _ = a.destroy().await;
            return;
        }
        let mut failure = failure;
        let reason =
            tokio::time::timeout(Duration::from_secs(30), failure.wait_for(|f| f.is_some()))
                .await
                .expect("the lost connection is reported within 30 s")
                .expect("the queue is still there")
                .clone()
                .unwrap_or_default();
        assert!(reason.contains("connection"), "{reason}");
        let refused = tokio::time::timeout(
            Duration::from_secs(10),
            a.publish_one(NewJob::new(t, serde_json::json!({"n": 2}))),
        )
        .await
        .expect("a publish on a lost connection answers at once");
        assert!(refused.is_err(), "{refused:?}");
        drop((held, leases));

        let b = connect(&server, &prefix).await;
        let mut leases = b
            .consume(&[t.to_string()], ConsumeOptions::worker("b"))
            .await
            .expect("consume");
        let again = tokio::time::timeout(Duration::from_secs(30), leases.next())
            .await
            .expect("the job comes back")
            .expect("a lease")
            .expect("lease");
        assert_eq!(again.job().job_id, id);
        assert_eq!(again.attempt(), 2, "the lost delivery counts");
        again
            .complete(serde_json::json!("done"))
            .await
            .expect("complete");
        assert_eq!(b.get(&id).await.expect("get").status, JobStatus::Completed);
        drop(leases);
        for q in [a, b] {
            q.close().await;
            q.destroy().await.expect("cleanup");
        }
    }
}

#[tokio::test]
async fn unknown_and_unbuilt_schemes_are_clear_errors() {
    for (url, needle) in [
        ("ftp://x", "unknown scheme"),
        ("redis://", "needs HOST:PORT"),
        ("redis://127.0.0.1:6379?prefix=a*b", "prefix"),
        (
            "redis://127.0.0.1:6379?durability=sync",
            "unknown parameter",
        ),
        (
            "redis://127.0.0.1:6379?retention_secs=soon",
            "retention_secs",
        ),
        #[cfg(not(feature = "kafka"))]
        ("kafka://127.0.0.1:9092", "not part of this build"),
        #[cfg(feature = "kafka")]
        ("kafka://", "needs HOST:PORT"),
        #[cfg(feature = "kafka")]
        ("kafka://127.0.0.1:9092?prefix=a/b", "prefix"),
        #[cfg(feature = "kafka")]
        ("kafka://127.0.0.1:9092?partitions=0", "partitions"),
        #[cfg(not(feature = "rabbitmq"))]
        ("amqp://127.0.0.1:5672", "not part of this build"),
        #[cfg(feature = "rabbitmq")]
        ("amqp://guest:guest@/%2f", "needs [USER:PASS@]HOST:PORT"),
        #[cfg(feature = "rabbitmq")]
        ("amqp://127.0.0.1:5672?prefix=a.b", "prefix"),
        #[cfg(feature = "rabbitmq")]
        ("amqp://127.0.0.1:5672?retention_secs=5", "retention_secs"),
        #[cfg(feature = "rabbitmq")]
        ("amqp://127.0.0.1:5672?heartbeat=5", "unknown parameter"),
        ("no-scheme", "scheme://"),
        ("rocksdb://", "needs a directory"),
        ("memory://?durability=sync", "unknown parameter"),
        ("rocksdb:///tmp/x?durability=sometimes", "durability"),
        ("grpc://", "HOST:PORT"),
    ] {
        match queue::open(url).await {
            Err(e @ queue::QueueError::InvalidUrl { .. }) => {
                assert!(e.to_string().contains(needle), "{url}: {e}")
            }
            Err(e) => panic!("{url}: expected InvalidUrl, got {e}"),
            Ok(q) => panic!("{url}: opened a {} queue", q.backend()),
        }
    }
    // Nothing listening is Unavailable, not a hang.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    match queue::open(&format!("grpc://{addr}")).await {
        Err(queue::QueueError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {:?}", other.map(|q| q.backend())),
    }
}
