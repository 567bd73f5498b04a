//! What the Redis adapter promises beyond the conformance suite, against
//! the Redis at `REDIS_URL`: several processes (queue instances) share one
//! deployment, a dead worker's job is retried by another process without
//! any client's help, prefixes keep deployments apart, and final jobs go
//! away after the retention.

#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use docproc_queue::{
    self as queue, ConsumeOptions, JobStatus, NewJob, Queue, QueueError, WatchFilter,
};
use docproc_tests::services::{redis_cleanup, redis_url, unique_prefix};
use futures::StreamExt;
use serde_json::json;

/// A deployment's prefix on the test Redis, cleaned up when dropped.
struct Deployment {
    server: String,
    prefix: String,
}

impl Deployment {
    fn new(what: &str) -> Option<Self> {
        Some(Self {
            server: redis_url()?,
            prefix: unique_prefix(what),
        })
    }

    /// One "process" of the deployment.
    async fn open(&self, extra: &str) -> Arc<dyn Queue> {
        queue::open(&format!(
            "{}/0?prefix={}&retry_base_ms=10&retry_max_ms=50{extra}",
            self.server, self.prefix
        ))
        .await
        .expect("open redis://")
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        redis_cleanup(&self.server, &self.prefix);
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_deployment() {
    let Some(d) = Deployment::new("share") else {
        return;
    };
    let (a, b) = (d.open("").await, d.open("").await);
    let mut events = a.watch(WatchFilter::job_types(["shared"])).await.unwrap();
    let id = a
        .publish_one(NewJob::new("shared", json!({ "doc": 1 })))
        .await
        .unwrap();
    let mut leases = b
        .consume(&["shared".into()], ConsumeOptions::worker("host-b"))
        .await
        .unwrap();
    let l = within("a lease on b", leases.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.job().job_id, id);
    assert_eq!(l.job().payload, json!({ "doc": 1 }));
    l.complete(json!({ "pages": 2 })).await.unwrap();
    // a sees b's work, through get and through its watch.
    let r = a.get(&id).await.unwrap();
    assert_eq!(r.status, JobStatus::Completed);
    assert_eq!(r.worker_id.as_deref(), Some("host-b"));
    assert_eq!(r.result, Some(json!({ "pages": 2 })));
    let mut seen = Vec::new();
    within("events on a", async {
        while seen.last() != Some(&JobStatus::Completed) {
            seen.push(events.next().await.unwrap().unwrap().status);
        }
    })
    .await;
    assert_eq!(
        seen,
        vec![
            JobStatus::Queued,
            JobStatus::Processing,
            JobStatus::Completed
        ]
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_retried_without_its_help() {
    let Some(d) = Deployment::new("dead") else {
        return;
    };
    let (a, b) = (d.open("").await, d.open("").await);
    let id = a
        .publish_one(NewJob::new("fragile", json!(1)).timeout(Duration::from_millis(300)))
        .await
        .unwrap();
    let mut leases = b
        .consume(&["fragile".into()], ConsumeOptions::worker("dies"))
        .await
        .unwrap();
    let held = within("a lease on b", leases.next())
        .await
        .unwrap()
        .unwrap();
    // The process dies: its queue, stream and lease are gone, nothing is said.
    b.close().await;
    drop((leases, held, b));
    // Nobody asks for jobs; a's once-a-second maintenance expires the lease.
    within("the lease to expire", async {
        loop {
            let r = a.get(&id).await.unwrap();
            if r.status == JobStatus::Queued {
                assert_eq!(r.attempts, 1);
                assert!(r.error.unwrap().contains("lease expired"));
                return;
            }
            assert_eq!(r.status, JobStatus::Processing);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut leases = a
        .consume(&["fragile".into()], ConsumeOptions::worker("rescuer"))
        .await
        .unwrap();
    let l = within("the retry", leases.next()).await.unwrap().unwrap();
    assert_eq!((&l.job().job_id, l.attempt()), (&id, 2));
    l.complete(json!("ok")).await.unwrap();
    let st = a.stats().await.unwrap();
    let c = &st
        .iter()
        .find(|s| s.job_type == "fragile")
        .unwrap()
        .counters;
    assert_eq!((c.started, c.lease_expired, c.completed), (2, 1, 1));
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_deployments_apart() {
    let (Some(x), Some(y)) = (Deployment::new("x"), Deployment::new("y")) else {
        return;
    };
    let (qx, qy) = (x.open("").await, y.open("").await);
    let id = qx.publish_one(NewJob::new("mine", json!(1))).await.unwrap();
    assert!(matches!(qy.get(&id).await, Err(QueueError::NotFound(_))));
    assert!(qy.stats().await.unwrap().is_empty());
    assert!(qy.list(&Default::default()).await.unwrap().jobs.is_empty());
    let mut leases = qy
        .consume(&["mine".into()], ConsumeOptions::worker("other"))
        .await
        .unwrap();
    let stray = tokio::time::timeout(Duration::from_millis(500), leases.next()).await;
    assert!(stray.is_err(), "another deployment's job was leased");
    assert_eq!(qx.get(&id).await.unwrap().status, JobStatus::Queued);
    qx.close().await;
    qy.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_jobs_go_after_the_retention() {
    let Some(d) = Deployment::new("retention") else {
        return;
    };
    let q = d.open("&retention_secs=1").await;
    let ids = q
        .publish(vec![
            NewJob::new("short", json!(1)).max_retries(0),
            NewJob::new("short", json!(2)),
        ])
        .await
        .unwrap();
    let mut leases = q
        .consume(&["short".into()], ConsumeOptions::worker("w"))
        .await
        .unwrap();
    let l = within("a lease", leases.next()).await.unwrap().unwrap();
    l.fail("bad input").await.unwrap();
    let depth = |q: Arc<dyn Queue>| async move {
        let st = q.stats().await.unwrap();
        st[0].total(|d| d.failed)
    };
    assert_eq!(depth(q.clone()).await, 1);
    within("the failed job to be dropped", async {
        while !matches!(q.get(&ids[0]).await, Err(QueueError::NotFound(_))) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(depth(q.clone()).await, 0);
    let listed = q.list(&Default::default()).await.unwrap();
    let listed: Vec<_> = listed.jobs.iter().map(|r| r.job.job_id.clone()).collect();
    assert_eq!(listed, vec![ids[1].clone()], "the waiting job stays");
    q.close().await;
}
