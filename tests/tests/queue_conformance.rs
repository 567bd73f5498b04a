//! The queue conformance suite run against every adapter of this build:
//! `rocksdb://` (embedded, on disk), `memory://` and `grpc://` (a broker
//! served on a loopback port, restarted on the same data directory).

use std::sync::Arc;

use async_trait::async_trait;
use docproc_broker::BrokerConfig;
use docproc_server::queue::{self, Queue};
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

    async fn open() -> Box<dyn Harness> {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = queue::open(&url(dir.path()))
            .await
            .expect("open rocksdb://");
        assert_eq!(queue.backend(), "rocksdb");
        Box::new(Embedded { dir, queue })
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
    }

    docproc_tests::conformance_suite!(open);
}

mod memory {
    use super::*;

    struct Memory(Arc<dyn Queue>);

    async fn open() -> Box<dyn Harness> {
        let q = queue::open(&format!("memory://?{RETRY}"))
            .await
            .expect("open memory://");
        assert_eq!(q.backend(), "memory");
        Box::new(Memory(q))
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

    async fn open() -> Box<dyn Harness> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (broker, queue) = serve(dir.path()).await;
        Box::new(Remote {
            dir,
            broker: Some(broker),
            queue,
        })
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

#[tokio::test]
async fn unknown_and_unbuilt_schemes_are_clear_errors() {
    for (url, needle) in [
        ("ftp://x", "unknown scheme"),
        ("redis://127.0.0.1:6379/0", "not part of this build"),
        ("kafka://127.0.0.1:9092", "not part of this build"),
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
