//! Worker pools: per job type, a number of tasks each taking one lease at a
//! time from the queue and giving it to the [`Handler`], with the shutdown
//! contract: no new job once shutdown starts, the job in hand runs on
//! through the grace, then [`Pools::hand_back`] asks handlers to return it.
//! What a job does is the handler's ([`crate::jobs`]); the pools know only
//! leases.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use docproc_queue::{ConsumeOptions, Lease, Queue};

use crate::jobs::Handler;

/// Busy and total workers of one pool.
#[derive(Debug, Default)]
pub struct PoolGauge {
    /// Workers in the pool.
    pub size: AtomicUsize,
    /// Workers holding a job now.
    pub busy: AtomicUsize,
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
    gauges: BTreeMap<&'static str, Arc<PoolGauge>>,
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
    /// Pools of `(job type, size)` consuming from `queue`.
    pub fn new(
        queue: Arc<dyn Queue>,
        handler: Arc<dyn Handler>,
        sizes: &[(&'static str, usize)],
    ) -> Self {
        let gauges = sizes
            .iter()
            .map(|(t, n)| {
                let g = PoolGauge::default();
                g.size.store(*n, Ordering::Relaxed);
                (*t, Arc::new(g))
            })
            .collect();
        Self {
            queue,
            handler,
            gauges,
            hand_back: watch::channel(false).0,
        }
    }

    /// `(job type, workers, busy)` of every pool.
    pub fn gauges(&self) -> Vec<(String, usize, usize)> {
        self.gauges
            .iter()
            .map(|(t, g)| {
                (
                    t.to_string(),
                    g.size.load(Ordering::Relaxed),
                    g.busy.load(Ordering::Relaxed),
                )
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

    /// Starts every pool; the tasks stop taking jobs when `shutdown` turns
    /// true and finish the job in hand (or hand it back after
    /// [`Pools::hand_back`]).
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for (job_type, gauge) in &self.gauges {
            for i in 0..gauge.size.load(Ordering::Relaxed) {
                let worker_id = format!("{}-{job_type}-{i}", std::process::id());
                set.spawn(
                    self.clone()
                        .run(job_type, gauge.clone(), worker_id, shutdown.clone()),
                );
            }
        }
        set
    }

    async fn run(
        self: Arc<Self>,
        job_type: &'static str,
        gauge: Arc<PoolGauge>,
        worker_id: String,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            let opts = ConsumeOptions::worker(worker_id.clone());
            let mut leases = match self.queue.consume(&[job_type.to_string()], opts).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, job_type, "cannot consume; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            loop {
                // Shutdown first: no new job once it is set.
                let next = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => return,
                    n = leases.next() => n,
                };
                match next {
                    Some(Ok(lease)) => {
                        gauge.busy.fetch_add(1, Ordering::Relaxed);
                        self.handle(lease).await;
                        gauge.busy.fetch_sub(1, Ordering::Relaxed);
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
