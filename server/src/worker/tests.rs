//! A scaling pool under a burst of slow jobs, on the in-memory queue and a
//! manual clock: it grows to `max` while jobs wait, runs every job once,
//! and goes back to `min` once its workers have been idle long enough.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use docproc_broker::ManualClock;
use docproc_queue::{JobId, JobStatus, Lease, NewJob};
use serde_json::json;
use tokio::sync::watch;

use super::scale::{PoolSpec, Scaling};
use super::Pools;
use crate::jobs::Handler;

const TYPE: &str = "scale_burst";

/// Holds every job until the gate opens, then completes it; counts runs.
struct Slow {
    gate: watch::Receiver<bool>,
    runs: Mutex<HashMap<JobId, u32>>,
    completed: Mutex<usize>,
}

#[async_trait]
impl Handler for Slow {
    async fn run(&self, lease: Lease, _hand_back: watch::Receiver<bool>) {
        *self
            .runs
            .lock()
            .unwrap()
            .entry(lease.job().job_id.clone())
            .or_default() += 1;
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        lease.complete(json!("done")).await.expect("complete");
        *self.completed.lock().unwrap() += 1;
    }
}

/// Polls `f` every 5 ms until it holds (at most 20 s).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn size(p: &Pools) -> (usize, usize) {
    p.gauges()
        .into_iter()
        .find(|(t, _, _)| t == TYPE)
        .map(|(_, size, busy)| (size, busy))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_grows_the_pool_to_max_and_idleness_shrinks_it_to_min() {
    let queue = docproc_queue::open("memory://").await.unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let scaling = Scaling {
        tick: Duration::from_millis(20),
        idle: Duration::from_secs(60),
        max_load: 1.0,
        clock: clock.clone(),
        load: Arc::new(|| Some(0.0)),
    };
    let (open_gate, gate) = watch::channel(false);
    let handler = Arc::new(Slow {
        gate,
        runs: Mutex::default(),
        completed: Mutex::default(),
    });
    let spec = PoolSpec {
        job_type: TYPE,
        min: 1,
        max: 4,
    };
    let pools = Arc::new(Pools::new(queue.clone(), handler.clone(), &[spec], scaling));
    let (stop, stopped) = watch::channel(false);
    let mut set = pools.start(stopped);
    until("the pool starts at min", || size(&pools) == (1, 0)).await;

    let jobs = (0..12)
        .map(|n| NewJob::new(TYPE, json!({ "n": n })))
        .collect();
    let ids = queue.publish(jobs).await.unwrap();
    let mut largest = 0;
    until("four busy workers", || {
        let (n, busy) = size(&pools);
        largest = largest.max(n);
        (n, busy) == (4, 4)
    })
    .await;
    // Jobs still wait, but the pool stays at max.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        largest = largest.max(size(&pools).0);
    }
    assert_eq!(largest, 4, "never above max");

    open_gate.send_replace(true);
    until("every job completes", || {
        *handler.completed.lock().unwrap() == ids.len()
    })
    .await;
    for id in &ids {
        let r = queue.get(id).await.unwrap();
        assert_eq!(r.status, JobStatus::Completed);
    }
    // Idle, but not yet for the idle period: still four.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(size(&pools).0, 4);
    clock.advance(60_000);
    until("back to min", || size(&pools).0 == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(size(&pools).0, 1, "never below min");

    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 12, "every job ran");
    assert!(runs.values().all(|n| *n == 1), "no job ran twice: {runs:?}");
    let scaling = pools.scaling();
    let events: HashMap<&str, u64> = scaling[0]
        .events
        .iter()
        .map(|(_, reason, n)| (*reason, *n))
        .collect();
    assert_eq!(events["jobs_waiting"], 3);
    assert_eq!(events["idle"], 3);
    assert_eq!(events["below_min"], 0);
    assert_eq!(scaling[0].target, 1);

    stop.send_replace(true);
    while set.join_next().await.is_some() {}
    assert_eq!(size(&pools).0, 0);
    queue.close().await;
}
