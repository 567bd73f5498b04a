//! The queue conformance suite: scenarios written once against
//! `dyn Queue` and run for every adapter through [`conformance_suite!`].
//!
//! Each scenario gets a fresh [`Harness`] (an empty queue with a 10–50 ms
//! retry backoff) and uses job types of its own. Time-dependent scenarios
//! use leases of a few hundred milliseconds, and every wait is bounded so a
//! broken adapter fails instead of hanging.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use docproc_queue::{
    CancelOutcome, Completion, ConsumeOptions, JobEvent, JobId, JobStatus, LeaseStream, ListQuery,
    NewJob, Priority, Queue, QueueError, WatchFilter,
};
use futures::StreamExt;
use serde_json::json;

/// Longest any single wait in a scenario may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// One backend under test.
#[async_trait]
pub trait Harness: Send {
    /// The queue now (a restart may replace it).
    fn queue(&self) -> Arc<dyn Queue>;
    /// Closes the queue and opens the same storage again. Returns `false`
    /// for backends that keep nothing across a restart.
    async fn restart(&mut self) -> bool;
    /// Whether a restart hands the old process's leases back at once,
    /// without counting the interrupted delivery as an attempt (the
    /// embedded queue, whose only consumer is the process that opens it);
    /// otherwise they come back when they expire, as a retry.
    fn restart_hands_back_leases(&self) -> bool {
        false
    }
}

/// Generates one `#[tokio::test]` per scenario; `$open` is an async fn
/// returning `Option<Box<dyn Harness>>` (`None`: the backend is not
/// available here and the test is skipped, which
/// [`crate::services`] allows only outside CI).
#[macro_export]
macro_rules! conformance_suite {
    ($open:path) => {
        $crate::conformance_suite!(@tests $open;
            priority_order_across_levels,
            fifo_within_a_priority,
            never_two_workers_at_once,
            lease_expiry_retries_and_counts_attempts,
            failures_retry_until_max_retries_then_fail,
            cancel_queued_and_processing,
            status_transitions_in_order_through_get_and_watch,
            stats_match_what_was_done,
            list_filters_and_pages,
            owner_lists_are_full_pages,
            concurrent_producers_and_consumers_complete_each_job_once,
            restart_keeps_queued_and_processing_jobs,
            scheduled_jobs_are_pending_until_due,
            bad_input_is_refused,
        );
    };
    (@tests $open:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(h) = $open().await else { return };
                $crate::conformance::$name(h).await;
            }
        )*
    };
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn consume(q: &dyn Queue, job_type: &str, worker: &str) -> LeaseStream {
    q.consume(&[job_type.to_string()], ConsumeOptions::worker(worker))
        .await
        .expect("consume")
}

async fn next_lease(s: &mut LeaseStream) -> docproc_queue::Lease {
    within("a lease", s.next())
        .await
        .expect("lease stream ended")
        .expect("lease")
}

fn job(job_type: &str, n: u64) -> NewJob {
    NewJob::new(job_type, json!({ "n": n }))
}

fn n_of(l: &docproc_queue::Lease) -> u64 {
    l.job().payload["n"].as_u64().expect("payload n")
}

async fn wait_status(q: &dyn Queue, id: &JobId, want: JobStatus) {
    within(&format!("job {id} to be {want}"), async {
        loop {
            if q.get(id).await.expect("get").status == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Four priorities published interleaved come out urgent, high, normal,
/// low; each level in publish order.
pub async fn priority_order_across_levels(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_priority";
    let mut jobs = Vec::new();
    for round in 0..3u64 {
        for (i, p) in Priority::ALL.into_iter().enumerate() {
            jobs.push(job(t, round * 10 + i as u64).priority(p));
        }
    }
    q.publish(jobs).await.expect("publish");
    let mut s = consume(q.as_ref(), t, "w1").await;
    let mut got = Vec::new();
    for _ in 0..12 {
        let l = next_lease(&mut s).await;
        got.push((l.job().priority, n_of(&l)));
        l.complete(json!(null)).await.expect("complete");
    }
    let mut want = Vec::new();
    for (i, p) in Priority::ALL.into_iter().enumerate().rev() {
        for round in 0..3u64 {
            want.push((p, round * 10 + i as u64));
        }
    }
    assert_eq!(got, want);
}

/// One priority is strictly first in, first out.
pub async fn fifo_within_a_priority(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_fifo";
    let ids = q
        .publish((0..50).map(|n| job(t, n)).collect())
        .await
        .expect("publish");
    assert_eq!(ids.len(), 50);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50, "distinct ids");
    let mut s = consume(q.as_ref(), t, "w1").await;
    for n in 0..50 {
        let l = next_lease(&mut s).await;
        assert_eq!((n_of(&l), &l.job().job_id), (n, &ids[n as usize]));
        l.complete(json!(n)).await.expect("complete");
    }
}

/// Four workers share a queue: no job is ever held by two at once, and
/// every job is done exactly once.
pub async fn never_two_workers_at_once(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_exclusive";
    q.publish((0..40).map(|n| job(t, n)).collect())
        .await
        .expect("publish");
    let held = Arc::new(Mutex::new(HashSet::new()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (q, held, done) = (q.clone(), held.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut s = consume(q.as_ref(), t, &format!("w{w}")).await;
            loop {
                if done.lock().unwrap().len() >= 40 {
                    return;
                }
                let Ok(Some(l)) = tokio::time::timeout(Duration::from_millis(500), s.next()).await
                else {
                    continue;
                };
                let l = l.expect("lease");
                let id = l.job().job_id.clone();
                assert!(
                    held.lock().unwrap().insert(id.clone()),
                    "job {id} handed to two workers at once"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
                held.lock().unwrap().remove(&id);
                assert_eq!(
                    l.complete(json!(w)).await.expect("complete"),
                    Completion::Completed
                );
                done.lock().unwrap().push(id);
            }
        }));
    }
    for w in within("all workers", futures::future::join_all(workers)).await {
        w.expect("worker");
    }
    let done = done.lock().unwrap().clone();
    assert_eq!(done.len(), 40);
    assert_eq!(done.iter().collect::<HashSet<_>>().len(), 40);
}

/// A worker that stalls past the timeout loses the job; it is delivered
/// again with the next attempt number, and the stale lease is refused.
pub async fn lease_expiry_retries_and_counts_attempts(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_expiry";
    let id = q
        .publish_one(job(t, 1).timeout(Duration::from_millis(300)).max_retries(3))
        .await
        .expect("publish");
    let mut s = consume(q.as_ref(), t, "stalls").await;
    let stalled = next_lease(&mut s).await;
    assert_eq!(stalled.attempt(), 1);
    let r = q.get(&id).await.expect("get");
    assert_eq!((r.status, r.attempts), (JobStatus::Processing, 1));
    assert_eq!(r.worker_id.as_deref(), Some("stalls"));

    let mut s2 = consume(q.as_ref(), t, "rescuer").await;
    let again = next_lease(&mut s2).await;
    assert_eq!((&again.job().job_id, again.attempt()), (&id, 2));
    let r = q.get(&id).await.expect("get");
    assert_eq!((r.status, r.attempts), (JobStatus::Processing, 2));
    assert!(matches!(
        stalled.complete(json!("late")).await,
        Err(QueueError::LeaseLost(_))
    ));
    assert_eq!(
        again.complete(json!("ok")).await.expect("complete"),
        Completion::Completed
    );
    let r = q.get(&id).await.expect("get");
    assert_eq!((r.status, r.attempts), (JobStatus::Completed, 2));
    assert_eq!(r.result, Some(json!("ok")));
    assert_eq!(r.worker_id.as_deref(), Some("rescuer"));
    drop(s);
}

/// Failures are retried until `max_retries`, then the job fails with the
/// last error; a permanent failure skips the retries.
pub async fn failures_retry_until_max_retries_then_fail(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_retry";
    let id = q
        .publish_one(job(t, 1).max_retries(2))
        .await
        .expect("publish");
    let mut s = consume(q.as_ref(), t, "w").await;
    for attempt in 1..=3u32 {
        let l = next_lease(&mut s).await;
        assert_eq!((&l.job().job_id, l.attempt()), (&id, attempt));
        let st = l.fail(&format!("boom {attempt}")).await.expect("fail");
        let want = if attempt < 3 {
            JobStatus::Retrying
        } else {
            JobStatus::Failed
        };
        assert_eq!(st, want, "after attempt {attempt}");
        if attempt < 3 {
            let r = q.get(&id).await.expect("get");
            // A streaming consumer (grpc) may already hold the next attempt.
            assert!(
                matches!(
                    r.status,
                    JobStatus::Retrying | JobStatus::Queued | JobStatus::Processing
                ),
                "after attempt {attempt}: {:?}",
                r.status
            );
            assert_eq!(r.error.as_deref(), Some(format!("boom {attempt}").as_str()));
        }
    }
    let r = q.get(&id).await.expect("get");
    assert_eq!((r.status, r.attempts), (JobStatus::Failed, 3));
    assert_eq!(r.error.as_deref(), Some("boom 3"));
    assert!(r.completed_at_ms.is_some());

    let id2 = q
        .publish_one(job(t, 2).max_retries(5))
        .await
        .expect("publish");
    let l = next_lease(&mut s).await;
    assert_eq!(l.job().job_id, id2);
    assert_eq!(
        l.fail_permanently("encrypted file").await.expect("fail"),
        JobStatus::Failed
    );
    let r = q.get(&id2).await.expect("get");
    assert_eq!((r.status, r.attempts), (JobStatus::Failed, 1));
    assert_eq!(r.error.as_deref(), Some("encrypted file"));
}

/// A queued job is cancelled at once and never delivered; a processing
/// job's worker learns of it through the lease and the job ends cancelled.
pub async fn cancel_queued_and_processing(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_cancel";
    let ids = q
        .publish(vec![job(t, 1), job(t, 2), job(t, 3)])
        .await
        .expect("publish");
    assert_eq!(
        q.cancel(&ids[0]).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        q.get(&ids[0]).await.expect("get").status,
        JobStatus::Cancelled
    );

    let mut s = consume(q.as_ref(), t, "w").await;
    let mut running = next_lease(&mut s).await;
    assert_eq!(running.job().job_id, ids[1], "the cancelled job is skipped");
    assert!(
        !running
            .progress(json!({"step": 1}))
            .await
            .expect("progress")
            .cancelled
    );
    assert_eq!(
        q.cancel(&ids[1]).await.expect("cancel"),
        CancelOutcome::Requested
    );
    let r = q.get(&ids[1]).await.expect("get");
    assert!(r.cancel_requested);
    assert!(running.heartbeat().await.expect("heartbeat").cancelled);
    assert_eq!(
        running.complete(json!("partial")).await.expect("complete"),
        Completion::Cancelled
    );
    assert_eq!(
        q.get(&ids[1]).await.expect("get").status,
        JobStatus::Cancelled
    );

    // A cancel requested while running, answered with a failure, ends cancelled too.
    let l = next_lease(&mut s).await;
    assert_eq!(l.job().job_id, ids[2]);
    q.cancel(&ids[2]).await.expect("cancel");
    assert_eq!(l.fail("stopped").await.expect("fail"), JobStatus::Cancelled);

    match q.cancel(&ids[0]).await {
        Err(QueueError::Conflict { status, .. }) => assert_eq!(status, JobStatus::Cancelled),
        other => panic!("cancel of a cancelled job: {other:?}"),
    }
    let done = q.publish_one(job(t, 4)).await.expect("publish");
    next_lease(&mut s)
        .await
        .complete(json!(1))
        .await
        .expect("complete");
    match q.cancel(&done).await {
        Err(QueueError::Conflict { status, .. }) => assert_eq!(status, JobStatus::Completed),
        other => panic!("cancel of a completed job: {other:?}"),
    }
    assert!(matches!(
        q.cancel(&JobId("999999999".into())).await,
        Err(QueueError::NotFound(_))
    ));
}

/// Collapses a watch into its status sequence: progress-only events and
/// repeats dropped, and the return to `queued` after a retry backoff (when
/// a backend reports it) folded into the retry.
fn transitions(events: &[JobEvent]) -> Vec<JobStatus> {
    let mut out: Vec<JobStatus> = Vec::new();
    for e in events.iter().filter(|e| !e.progress) {
        let last = out.last().copied();
        if last == Some(e.status)
            || (last == Some(JobStatus::Retrying) && e.status == JobStatus::Queued)
        {
            continue;
        }
        out.push(e.status);
    }
    out
}

/// Every step of a job's life is visible through get and, in order,
/// through watch (by job type and by job id).
pub async fn status_transitions_in_order_through_get_and_watch(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_watch";
    let mut by_type = q.watch(WatchFilter::job_types([t])).await.expect("watch");
    let mut other = q
        .watch(WatchFilter::job_types(["conf_watch_other"]))
        .await
        .expect("watch");
    let id = q.publish_one(job(t, 1)).await.expect("publish");
    let mut by_id = q
        .watch(WatchFilter::jobs([id.clone()]))
        .await
        .expect("watch");
    assert_eq!(q.get(&id).await.expect("get").status, JobStatus::Queued);

    let mut s = consume(q.as_ref(), t, "w").await;
    let mut l = next_lease(&mut s).await;
    assert_eq!(q.get(&id).await.expect("get").status, JobStatus::Processing);
    l.progress(json!({"pages": 1})).await.expect("progress");
    let r = q.get(&id).await.expect("get");
    assert_eq!(r.progress, Some(json!({"pages": 1})));
    assert_eq!(
        l.fail("transient").await.expect("fail"),
        JobStatus::Retrying
    );
    let l = next_lease(&mut s).await;
    assert_eq!(l.attempt(), 2);
    l.complete(json!({"text": "done"})).await.expect("complete");
    let r = q.get(&id).await.expect("get");
    assert_eq!(r.status, JobStatus::Completed);
    assert_eq!(r.result, Some(json!({"text": "done"})));
    assert!(r.processing_time().is_some());

    let want = vec![
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Retrying,
        JobStatus::Processing,
        JobStatus::Completed,
    ];
    let mut seen = Vec::new();
    within("watch events by type", async {
        while seen.last().map(|e: &JobEvent| e.status) != Some(JobStatus::Completed) {
            let e = by_type.next().await.expect("watch ended").expect("event");
            assert_eq!((&e.job_id, e.job_type.as_str()), (&id, t));
            seen.push(e);
        }
    })
    .await;
    assert_eq!(transitions(&seen), want);
    assert!(seen.iter().any(|e| e.progress), "progress is reported");
    let retry = seen
        .iter()
        .find(|e| e.status == JobStatus::Retrying)
        .expect("retry event");
    assert_eq!(retry.error.as_deref(), Some("transient"));

    let mut seen_by_id = Vec::new();
    within("watch events by id", async {
        while seen_by_id.last().map(|e: &JobEvent| e.status) != Some(JobStatus::Completed) {
            seen_by_id.push(by_id.next().await.expect("watch ended").expect("event"));
        }
    })
    .await;
    // Subscribed after publish: everything from processing on.
    assert_eq!(transitions(&seen_by_id), want[1..].to_vec());
    let stray = tokio::time::timeout(Duration::from_millis(200), other.next()).await;
    assert!(stray.is_err(), "a watch on another type saw {stray:?}");
}

/// Depth per priority and status, and the counters, match what was done.
pub async fn stats_match_what_was_done(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_stats";
    let mut jobs = vec![job(t, 0).priority(Priority::Urgent)];
    jobs.extend((1..=3).map(|n| job(t, n).priority(Priority::High)));
    jobs.extend((4..=5).map(|n| job(t, n).priority(Priority::Low)));
    let ids = q.publish(jobs).await.expect("publish");
    let mut s = consume(q.as_ref(), t, "w").await;
    next_lease(&mut s)
        .await
        .complete(json!(1))
        .await
        .expect("complete"); // urgent
    next_lease(&mut s)
        .await
        .fail_permanently("bad")
        .await
        .expect("fail"); // high 1
    let held = next_lease(&mut s).await; // high 2, processing
    q.cancel(&ids[5]).await.expect("cancel"); // low 5
    let stats = q.stats().await.expect("stats");
    let st = stats
        .iter()
        .find(|s| s.job_type == t)
        .expect("stats of the type");
    let depth = |p: Priority| {
        st.priorities
            .iter()
            .find(|d| d.priority == p)
            .map(|d| (d.pending, d.queued, d.processing, d.retrying, d.failed))
            .unwrap_or_default()
    };
    assert_eq!(depth(Priority::Urgent), (0, 0, 0, 0, 0));
    assert_eq!(depth(Priority::High), (0, 1, 1, 0, 1));
    assert_eq!(depth(Priority::Normal), (0, 0, 0, 0, 0));
    assert_eq!(depth(Priority::Low), (0, 1, 0, 0, 0));
    let c = &st.counters;
    assert_eq!(
        (c.published, c.started, c.completed, c.failed, c.cancelled),
        (6, 3, 1, 1, 1)
    );
    assert_eq!(st.total(|d| d.queued), 2);
    // How long the backlog has waited: the publish time of the oldest
    // queued job per priority (what autoscalers read as its age).
    let created = |i: usize| {
        let q = q.clone();
        let id = ids[i].clone();
        async move { q.get(&id).await.expect("get").job.created_at_ms }
    };
    let oldest = |p: Priority| {
        st.priorities
            .iter()
            .find(|d| d.priority == p)
            .and_then(|d| d.oldest_queued_at_ms)
    };
    let (high, low) = (created(3).await, created(4).await);
    assert_eq!(oldest(Priority::High), Some(high), "high 3 waits");
    assert_eq!(oldest(Priority::Low), Some(low), "low 4 waits");
    assert_eq!(oldest(Priority::Urgent), None, "nothing urgent waits");
    assert_eq!(st.oldest_queued_at_ms(), Some(high.min(low)));
    held.fail("again").await.expect("fail");
    let st = q.stats().await.expect("stats");
    let c = &st.iter().find(|s| s.job_type == t).expect("stats").counters;
    assert_eq!(c.retried, 1);
}

/// Listing by type, status and time, newest first, in pages that cover
/// everything once.
pub async fn list_filters_and_pages(h: Box<dyn Harness>) {
    let q = h.queue();
    let (a, b) = ("conf_list_a", "conf_list_b");
    let before = now_ms();
    let ids_a = q
        .publish((0..5).map(|n| job(a, n)).collect())
        .await
        .expect("publish");
    q.publish((0..3).map(|n| job(b, n)).collect())
        .await
        .expect("publish");
    let mut s = consume(q.as_ref(), a, "w").await;
    for _ in 0..2 {
        next_lease(&mut s)
            .await
            .complete(json!(1))
            .await
            .expect("complete");
    }
    let all_a = q
        .list(&ListQuery {
            job_types: vec![a.into()],
            ..Default::default()
        })
        .await
        .expect("list");
    let listed: Vec<_> = all_a.jobs.iter().map(|r| r.job.job_id.clone()).collect();
    let mut newest_first = ids_a.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert!(all_a.next_cursor.is_none());

    let completed = q
        .list(&ListQuery {
            job_types: vec![a.into(), b.into()],
            statuses: vec![JobStatus::Completed],
            ..Default::default()
        })
        .await
        .expect("list");
    let done: Vec<_> = completed
        .jobs
        .iter()
        .map(|r| r.job.job_id.clone())
        .collect();
    assert_eq!(done, vec![ids_a[1].clone(), ids_a[0].clone()]);
    assert!(completed.jobs.iter().all(|r| r.result == Some(json!(1))));

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = q
            .list(&ListQuery {
                job_types: vec![a.into(), b.into()],
                cursor: cursor.clone(),
                limit: Some(3),
                ..Default::default()
            })
            .await
            .expect("list");
        assert!(page.jobs.len() <= 3);
        pages.extend(page.jobs.into_iter().map(|r| r.job.job_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages.len(), 8);
    assert_eq!(
        pages.iter().collect::<HashSet<_>>().len(),
        8,
        "each job once"
    );

    let future = q
        .list(&ListQuery {
            created_from_ms: Some(now_ms() + 60_000),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(future.jobs.is_empty());
    let window = q
        .list(&ListQuery {
            job_types: vec![b.into()],
            created_from_ms: Some(before.saturating_sub(1000)),
            created_to_ms: Some(now_ms() + 1000),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(window.jobs.len(), 3);
    assert!(q
        .list(&ListQuery {
            cursor: Some("garbage".into()),
            ..Default::default()
        })
        .await
        .is_err());
}

/// The owner is stored, handed to workers, and listed from an index: one
/// owner's pages are full and hold only theirs, live and final, before and
/// after a restart.
pub async fn owner_lists_are_full_pages(mut h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_owner";
    let owner_of = |n: u64| match n % 5 {
        0 => Some("alice"),
        1 | 3 => Some("bob"),
        _ => None,
    };
    let jobs = (0..30)
        .map(|n| match owner_of(n) {
            Some(o) => job(t, n).owner(o),
            None => job(t, n),
        })
        .collect();
    let ids = q.publish(jobs).await.expect("publish");
    let alice: Vec<JobId> = (0..30)
        .rev()
        .filter(|n| owner_of(*n) == Some("alice"))
        .map(|n| ids[n as usize].clone())
        .collect();
    assert_eq!(alice.len(), 6);
    // The two oldest of alice's jobs (and the bob and ownerless ones
    // before them) complete: her listing spans live and final jobs.
    let mut s = consume(q.as_ref(), t, "w").await;
    let mut done = Vec::new();
    for _ in 0..6 {
        let l = next_lease(&mut s).await;
        let n = n_of(&l);
        assert_eq!(
            l.job().owner.as_deref(),
            owner_of(n),
            "the lease carries the owner"
        );
        done.push(l.job().job_id.clone());
        l.complete(json!(n)).await.expect("complete");
    }
    drop(s);
    for id in &done {
        wait_status(q.as_ref(), id, JobStatus::Completed).await;
    }
    let r = q.get(&alice[0]).await.expect("get");
    assert_eq!(r.job.owner.as_deref(), Some("alice"));
    assert_eq!(q.get(&ids[2]).await.expect("get").job.owner, None);

    async fn pages(q: &dyn Queue, query: ListQuery) -> Vec<Vec<JobId>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = q
                .list(&ListQuery {
                    cursor: cursor.clone(),
                    ..query.clone()
                })
                .await
                .expect("list");
            out.push(page.jobs.into_iter().map(|r| r.job.job_id).collect());
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }
    let by_alice = ListQuery {
        job_types: vec![t.into()],
        owner: Some("alice".into()),
        limit: Some(2),
        ..Default::default()
    };
    let check = |got: Vec<Vec<JobId>>| {
        assert_eq!(
            got.concat(),
            alice,
            "alice's jobs, newest first, nobody else's"
        );
        let (last, full) = got.split_last().expect("a page");
        assert!(
            full.iter().all(|p| p.len() == 2),
            "every page but the last is full: {got:?}"
        );
        assert!(!last.is_empty() || got.len() == 1);
    };
    check(pages(q.as_ref(), by_alice.clone()).await);
    let finished = q
        .list(&ListQuery {
            statuses: vec![JobStatus::Completed],
            limit: Some(100),
            ..by_alice.clone()
        })
        .await
        .expect("list");
    let finished: Vec<_> = finished.jobs.into_iter().map(|r| r.job.job_id).collect();
    let want: Vec<_> = alice.iter().filter(|i| done.contains(i)).cloned().collect();
    assert!(
        !want.is_empty(),
        "FIFO: the oldest jobs (alice's first among them) ran"
    );
    assert_eq!(finished, want);
    let nobody = q
        .list(&ListQuery {
            owner: Some("carol".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(nobody.jobs.is_empty() && nobody.next_cursor.is_none());
    for bad in ["", "line\nbreak", &"o".repeat(129)] {
        assert!(
            matches!(
                q.publish(vec![job(t, 99).owner(bad)]).await,
                Err(QueueError::InvalidArgument(_))
            ),
            "owner {bad:?} accepted"
        );
        assert!(
            matches!(
                q.list(&ListQuery {
                    owner: Some(bad.into()),
                    ..Default::default()
                })
                .await,
                Err(QueueError::InvalidArgument(_))
            ),
            "list owner {bad:?} accepted"
        );
    }
    drop(q);
    if h.restart().await {
        check(pages(h.queue().as_ref(), by_alice).await);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Four producers and four consumers: every job completes exactly once.
pub async fn concurrent_producers_and_consumers_complete_each_job_once(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_concurrent";
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 250;
    let total = (PRODUCERS * PER_PRODUCER) as usize;
    let completed: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let mut consumers = Vec::new();
    for w in 0..4 {
        let (q, completed) = (q.clone(), completed.clone());
        consumers.push(tokio::spawn(async move {
            let mut s = consume(q.as_ref(), t, &format!("w{w}")).await;
            while completed.lock().unwrap().values().sum::<u32>() < total as u32 {
                let Ok(Some(l)) = tokio::time::timeout(Duration::from_millis(300), s.next()).await
                else {
                    continue;
                };
                let l = l.expect("lease");
                let id = l.job().job_id.clone();
                l.complete(json!(w)).await.expect("complete");
                *completed.lock().unwrap().entry(id).or_default() += 1;
            }
        }));
    }
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let q = q.clone();
        producers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for chunk in 0..PER_PRODUCER / 25 {
                let batch = (0..25)
                    .map(|i| {
                        job(t, p * 1000 + chunk * 25 + i).priority(Priority::ALL[(i % 4) as usize])
                    })
                    .collect();
                ids.extend(q.publish(batch).await.expect("publish"));
            }
            ids
        }));
    }
    let mut published = HashSet::new();
    for p in within("producers", futures::future::join_all(producers)).await {
        published.extend(p.expect("producer"));
    }
    assert_eq!(published.len(), total, "ids are distinct");
    for c in within("consumers", futures::future::join_all(consumers)).await {
        c.expect("consumer");
    }
    let completed = completed.lock().unwrap().clone();
    assert_eq!(completed.len(), total, "every job completed");
    assert!(
        completed.values().all(|&n| n == 1),
        "no job completed twice"
    );
    assert_eq!(completed.keys().cloned().collect::<HashSet<_>>(), published);
    let st = q.stats().await.expect("stats");
    let c = &st.iter().find(|s| s.job_type == t).expect("stats").counters;
    assert_eq!((c.published, c.completed), (total as u64, total as u64));
}

/// Queued and processing jobs survive a restart (durable backends); a
/// job whose worker died with the old process runs again: handed back at
/// once by a queue that owns its leases, else retried when its lease ends.
pub async fn restart_keeps_queued_and_processing_jobs(mut h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_restart";
    let ids = q
        .publish(vec![
            job(t, 1)
                .priority(Priority::High)
                .timeout(Duration::from_millis(800)),
            job(t, 2),
            job(t, 3),
        ])
        .await
        .expect("publish");
    let mut s = consume(q.as_ref(), t, "old-process").await;
    let l = next_lease(&mut s).await;
    assert_eq!(l.job().job_id, ids[0]);
    drop((s, l, q));
    if !h.restart().await {
        return;
    }
    let q = h.queue();
    let r = q.get(&ids[0]).await.expect("get after restart");
    assert!(
        matches!(r.status, JobStatus::Processing | JobStatus::Queued),
        "the leased job is kept: {:?}",
        r.status
    );
    for id in &ids[1..] {
        assert_eq!(q.get(id).await.expect("get").status, JobStatus::Queued);
    }
    let mut s = consume(q.as_ref(), t, "new-process").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let l = next_lease(&mut s).await;
        got.push((l.job().job_id.clone(), l.attempt()));
        l.complete(json!(null)).await.expect("complete");
    }
    got.sort();
    let orphan_attempt = if h.restart_hands_back_leases() { 1 } else { 2 };
    let mut want = vec![
        (ids[0].clone(), orphan_attempt),
        (ids[1].clone(), 1),
        (ids[2].clone(), 1),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "the orphaned job runs again (handed back, or retried after its lease), the others run once"
    );
    wait_status(q.as_ref(), &ids[0], JobStatus::Completed).await;
}

/// A job published to run later is `pending` (in get and stats), is not
/// delivered early, and runs once due.
pub async fn scheduled_jobs_are_pending_until_due(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_scheduled";
    // The worker is listening before the jobs arrive.
    let mut s = consume(q.as_ref(), t, "w").await;
    let due = now_ms() + 400;
    let later = q
        .publish_one(job(t, 1).priority(Priority::Urgent).run_at_ms(due))
        .await
        .expect("publish");
    let now = q.publish_one(job(t, 2)).await.expect("publish");
    assert_eq!(q.get(&later).await.expect("get").status, JobStatus::Pending);
    let st = q.stats().await.expect("stats");
    let st = st.iter().find(|s| s.job_type == t).expect("stats");
    // The due job is queued, or already taken by the listening worker.
    assert_eq!(
        (
            st.total(|d| d.pending),
            st.total(|d| d.queued + d.processing)
        ),
        (1, 1)
    );
    let first = next_lease(&mut s).await;
    assert_eq!(first.job().job_id, now, "the urgent job waits for its time");
    first.complete(json!(null)).await.expect("complete");
    let second = next_lease(&mut s).await;
    assert_eq!(second.job().job_id, later);
    assert!(now_ms() >= due, "delivered before its time");
    second.complete(json!(null)).await.expect("complete");
}

/// Malformed requests are refused with a clear error, touching nothing.
pub async fn bad_input_is_refused(h: Box<dyn Harness>) {
    let q = h.queue();
    let t = "conf_bad";
    let bad = |r: Result<Vec<JobId>, QueueError>| {
        assert!(matches!(r, Err(QueueError::InvalidArgument(_))), "{r:?}")
    };
    bad(q.publish(vec![]).await);
    bad(q
        .publish(vec![job(t, 1), job("no spaces allowed", 2)])
        .await);
    bad(q.publish(vec![job(t, 1).timeout(Duration::ZERO)]).await);
    bad(q.publish(vec![job(t, 1).max_retries(1000)]).await);
    let listed = q
        .list(&ListQuery {
            job_types: vec![t.into()],
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(listed.jobs.is_empty(), "a refused batch stores nothing");
    assert!(matches!(
        q.consume(&[], ConsumeOptions::default()).await,
        Err(QueueError::InvalidArgument(_))
    ));
    for id in ["424242424", "not-an-id", ""] {
        assert!(matches!(
            q.get(&JobId(id.into())).await,
            Err(QueueError::NotFound(_))
        ));
    }
}
