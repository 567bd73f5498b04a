//! Worker pools: per job type, tasks each taking one lease at a time from
//! the queue and giving it to the [`Handler`], as many as the pool's
//! [`PoolSpec`] allows ([`scale`]: between `min` and `max`), with the
//! shutdown contract: no new job once shutdown starts, the job in hand runs
//! on through the grace, then [`Pools::hand_back`] asks handlers to return
//! it. What a job does is the handler's ([`crate::jobs`]); the pools know
//! only leases.

pub mod scale;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use docproc_queue::{ConsumeOptions, Lease, Queue};

use self::scale::{decide, Decision, Member, Observed, PoolSpec, Reason, Scaling};
use crate::jobs::Handler;
use crate::metrics::PoolScaling;

/// Busy and total workers of one pool, and its scaling.
#[derive(Debug, Default)]
pub struct PoolGauge {
    /// Workers in the pool.
    pub size: AtomicUsize,
    /// Workers holding a job now.
    pub busy: AtomicUsize,
    /// The size the pool is heading for after its last decision.
    pub target: AtomicUsize,
    /// Decisions taken, by [`Reason`] (below_min, jobs_waiting, idle).
    pub events: [AtomicU64; 3],
}

const REASONS: [Reason; 3] = [Reason::BelowMin, Reason::JobsWaiting, Reason::Idle];

fn slot(r: Reason) -> usize {
    match r {
        Reason::BelowMin => 0,
        Reason::JobsWaiting => 1,
        Reason::Idle => 2,
    }
}

/// One pool's workers and how many hold a job, as the stats endpoint shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PoolUse {
    /// Workers in the pool.
    pub size: usize,
    /// Workers holding a job now.
    pub busy: usize,
}

/// The worker pools of one process: what they consume from and hand
/// leases to, and a gauge per job type.
pub struct Pools {
    queue: Arc<dyn Queue>,
    handler: Arc<dyn Handler>,
    gauges: BTreeMap<&'static str, (PoolSpec, Arc<PoolGauge>)>,
    scaling: Scaling,
    hand_back: watch::Sender<bool>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("backend", &self.queue.backend())
            .field("pools", &self.gauges.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Pools {
    /// Pools of these specs consuming from `queue`, scaling (those whose
    /// `max` exceeds their `min`) by `scaling`.
    pub fn new(
        queue: Arc<dyn Queue>,
        handler: Arc<dyn Handler>,
        specs: &[PoolSpec],
        scaling: Scaling,
    ) -> Self {
        let gauges = specs
            .iter()
            .map(|spec| {
                let g = PoolGauge::default();
                g.size.store(spec.min, Ordering::Relaxed);
                g.target.store(spec.min, Ordering::Relaxed);
                (spec.job_type, (*spec, Arc::new(g)))
            })
            .collect();
        Self {
            queue,
            handler,
            gauges,
            scaling,
            hand_back: watch::channel(false).0,
        }
    }

    /// `(job type, workers, busy)` of every pool.
    pub fn gauges(&self) -> Vec<(String, usize, usize)> {
        self.gauges
            .iter()
            .map(|(t, (_, g))| {
                (
                    t.to_string(),
                    g.size.load(Ordering::Relaxed),
                    g.busy.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Bounds, target and decisions of every pool.
    pub fn scaling(&self) -> Vec<PoolScaling> {
        self.gauges
            .iter()
            .map(|(t, (spec, g))| PoolScaling {
                job_type: t.to_string(),
                min: spec.min,
                max: spec.max,
                target: g.target.load(Ordering::Relaxed),
                events: REASONS
                    .iter()
                    .map(|r| {
                        let dir = if *r == Reason::Idle { "down" } else { "up" };
                        (dir, r.as_str(), g.events[slot(*r)].load(Ordering::Relaxed))
                    })
                    .collect(),
            })
            .collect()
    }

    /// `{job_type: {size, busy}}`, for the stats endpoint.
    pub fn utilisation(&self) -> BTreeMap<String, PoolUse> {
        self.gauges()
            .into_iter()
            .map(|(t, size, busy)| (t, PoolUse { size, busy }))
            .collect()
    }

    /// Tells the handlers that the shutdown grace is over: jobs in hand
    /// that can stop (extractions) go back to the queue at once.
    pub fn hand_back(&self) {
        self.hand_back.send_replace(true);
    }

    /// Starts every pool (a supervisor task each, owning its workers); the
    /// workers stop taking jobs when `shutdown` turns true and finish the
    /// job in hand (or hand it back after [`Pools::hand_back`]).
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for (spec, gauge) in self.gauges.values() {
            set.spawn(
                self.clone()
                    .supervise(*spec, gauge.clone(), shutdown.clone()),
            );
        }
        set
    }

    /// Runs one pool: `min` workers, and for a scaling pool a look at its
    /// queue every tick, growing or shrinking it by one worker as
    /// [`decide`] says. A worker told to leave does so between jobs; a job
    /// in hand is never dropped. Ends when every worker has ended.
    async fn supervise(
        self: Arc<Self>,
        spec: PoolSpec,
        gauge: Arc<PoolGauge>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut set = JoinSet::new();
        let mut members: Vec<Member> = Vec::new();
        let mut next_id = 0usize;
        let stop = shutdown.clone();
        let mut spawn = |members: &mut Vec<Member>, set: &mut JoinSet<()>| {
            let (retire, retired) = watch::channel(false);
            let idle_since = Arc::new(AtomicU64::new(self.scaling.clock.now_ms().max(1)));
            let worker_id = format!("{}-{}-{next_id}", std::process::id(), spec.job_type);
            next_id += 1;
            set.spawn(self.clone().run(
                spec.job_type,
                gauge.clone(),
                worker_id,
                stop.clone(),
                retired,
                idle_since.clone(),
            ));
            members.push(Member { retire, idle_since });
        };
        for _ in 0..spec.min {
            spawn(&mut members, &mut set);
        }
        gauge.size.store(members.len(), Ordering::Relaxed);
        if spec.max > spec.min {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.scaling.tick) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                while set.try_join_next().is_some() {}
                members.retain(|m| !m.gone());
                let now = self.scaling.clock.now_ms();
                let seen = Observed {
                    size: members.len(),
                    busy: gauge.busy.load(Ordering::Relaxed),
                    queued: self.queued(spec.job_type).await,
                    load: (self.scaling.load)(),
                    longest_idle_ms: members.iter().filter_map(|m| m.idle_for(now)).max(),
                };
                match decide(&spec, &self.scaling, seen) {
                    Decision::Grow(reason) => {
                        spawn(&mut members, &mut set);
                        gauge.events[slot(reason)].fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            job_type = spec.job_type,
                            workers = members.len(),
                            queued = seen.queued,
                            reason = reason.as_str(),
                            "pool grows"
                        );
                    }
                    Decision::Shrink(reason) => {
                        let longest = members
                            .iter()
                            .enumerate()
                            .filter_map(|(i, m)| m.idle_for(now).map(|d| (d, i)))
                            .max();
                        if let Some((_, i)) = longest {
                            let m = members.swap_remove(i);
                            m.retire.send_replace(true);
                            gauge.events[slot(reason)].fetch_add(1, Ordering::Relaxed);
                            tracing::info!(
                                job_type = spec.job_type,
                                workers = members.len(),
                                reason = reason.as_str(),
                                "pool shrinks"
                            );
                        }
                    }
                    Decision::Hold(Some(why)) => {
                        tracing::debug!(job_type = spec.job_type, why, "pool would grow but holds");
                    }
                    Decision::Hold(None) => {}
                }
                gauge.target.store(members.len(), Ordering::Relaxed);
                gauge.size.store(members.len(), Ordering::Relaxed);
            }
        }
        while set.join_next().await.is_some() {}
        gauge.size.store(0, Ordering::Relaxed);
    }

    /// Jobs of `job_type` queued now (0 when the queue does not answer).
    async fn queued(&self, job_type: &str) -> u64 {
        match self.queue.stats().await {
            Ok(stats) => stats
                .iter()
                .find(|s| s.job_type == job_type)
                .map_or(0, |s| s.total(|d| d.queued)),
            Err(e) => {
                tracing::warn!(error = %e, job_type, "pool scaling cannot read the queue depth");
                0
            }
        }
    }

    async fn run(
        self: Arc<Self>,
        job_type: &'static str,
        gauge: Arc<PoolGauge>,
        worker_id: String,
        mut shutdown: watch::Receiver<bool>,
        mut retired: watch::Receiver<bool>,
        idle_since: Arc<AtomicU64>,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() && !*retired.borrow() {
            let opts = ConsumeOptions::worker(worker_id.clone());
            let mut leases = match self.queue.consume(&[job_type.to_string()], opts).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, job_type, "cannot consume; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    _ = retired.wait_for(|r| *r) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            loop {
                // Shutdown first: no new job once it is set; a worker told
                // to leave goes the same way, between jobs.
                let next = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = retired.wait_for(|r| *r) => return,
                    n = leases.next() => n,
                };
                match next {
                    Some(Ok(lease)) => {
                        idle_since.store(0, Ordering::Relaxed);
                        gauge.busy.fetch_add(1, Ordering::Relaxed);
                        self.handle(lease).await;
                        gauge.busy.fetch_sub(1, Ordering::Relaxed);
                        idle_since.store(self.scaling.clock.now_ms().max(1), Ordering::Relaxed);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, job_type, "lease stream failed");
                        break;
                    }
                    // The queue closed.
                    None => return,
                }
            }
        }
    }

    async fn handle(&self, lease: Lease) {
        let job = lease.job();
        let span = tracing::info_span!("job", id = %job.job_id, job_type = %job.job_type, attempt = lease.attempt());
        self.handler
            .run(lease, self.hand_back.subscribe())
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests;
