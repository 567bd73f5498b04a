//! Real time, many tasks: no message is held by two consumers at once and
//! every message is completed exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use docproc_broker::{pb, Broker, BrokerConfig};
use parking_lot::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_and_consumers_complete_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::with_dir(dir.path())).unwrap();
    const PRODUCERS: u64 = 8;
    const PER_PRODUCER: u64 = 250;
    let held: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();

    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let b = broker.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER / 10 {
                let batch = (0..10)
                    .map(|j| pb::NewMessage {
                        queue: "work".into(),
                        priority: ((p + i + j) % 4) as u32,
                        payload: format!("{p}-{i}-{j}").into_bytes(),
                        ..Default::default()
                    })
                    .collect();
                b.produce(batch).await.unwrap();
            }
        }));
    }
    for c in 0..6 {
        let (b, held, acked) = (broker.clone(), held.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let got = b
                    .fetch("work", 7, &format!("c{c}"), Duration::from_millis(300))
                    .await
                    .unwrap();
                if got.is_empty() {
                    if acked.lock().len() as u64 == PRODUCERS * PER_PRODUCER {
                        return;
                    }
                    continue;
                }
                for d in &got {
                    assert!(held.lock().insert(d.id), "message {} held twice", d.id);
                }
                tokio::task::yield_now().await;
                for d in got {
                    held.lock().remove(&d.id);
                    b.ack(d.id, d.lease_token, vec![]).await.unwrap();
                    acked.lock().push(d.id);
                }
            }
        }));
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::try_join_all(tasks),
    )
    .await
    .expect("finished in time")
    .unwrap();
    let acked = acked.lock().clone();
    let unique: HashSet<u64> = acked.iter().copied().collect();
    assert_eq!(acked.len() as u64, PRODUCERS * PER_PRODUCER);
    assert_eq!(unique.len(), acked.len(), "no message acked twice");
    let c = broker.stats(Some("work")).unwrap()[0].counters.unwrap();
    assert_eq!(
        (c.produced, c.delivered, c.acked, c.redelivered),
        (2000, 2000, 2000, 0)
    );
    broker.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_wakes_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::with_dir(dir.path())).unwrap();
    let b = broker.clone();
    let waiter = tokio::spawn(async move { b.fetch("q", 1, "w", Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiter.is_finished(),
        "fetch waits while the queue is empty"
    );
    broker
        .produce(vec![pb::NewMessage {
            queue: "q".into(),
            payload: b"wake".to_vec(),
            ..Default::default()
        }])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got[0].payload, b"wake");
    // A short wait on an empty queue returns empty.
    assert!(broker
        .fetch("q", 1, "w", Duration::from_millis(20))
        .await
        .unwrap()
        .is_empty());
    broker.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_driver_expires_leases_in_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::with_dir(dir.path())).unwrap();
    let m = pb::NewMessage {
        queue: "q".into(),
        lease_timeout_ms: 100,
        ..Default::default()
    };
    let id = broker.produce(vec![m]).await.unwrap()[0].0;
    let first = broker.lease("q", 1, "w").await.unwrap();
    assert_eq!(first[0].id, id);
    // No tick is called: the driver must redeliver on its own, and wake the fetch.
    let again = broker
        .fetch("q", 1, "w", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((again[0].id, again[0].attempt), (id, 2));
    broker.close();
}

/// A reader polling a message while it is completed sees it live or
/// completed, never "not found" (its final record is still being written
/// when it leaves the live set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_being_completed_is_never_missing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::with_dir(dir.path())).unwrap();
    const N: usize = 300;
    let msgs = (0..N)
        .map(|i| pb::NewMessage {
            queue: "q".into(),
            payload: format!("{i}").into_bytes(),
            ..Default::default()
        })
        .collect();
    broker.produce(msgs).await.unwrap();
    let deliveries = broker.lease("q", N, "w").await.unwrap();
    assert_eq!(deliveries.len(), N);
    for d in deliveries {
        let reader = {
            let b = broker.clone();
            tokio::spawn(async move {
                loop {
                    let m = b.get_settled(d.id, false).await.expect("never NotFound");
                    if m.state() == pb::State::Completed {
                        return m.result;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        broker
            .ack(d.id, d.lease_token, b"done".to_vec())
            .await
            .unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("reader finished")
            .unwrap();
        assert_eq!(result, b"done");
    }
}
