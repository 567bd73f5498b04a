//! Auto-scaling of a worker pool between its `min` and `max`: the rule
//! ([`decide`], pure: sizes, depth, load and idle time in, a decision out)
//! and what a scaling pool keeps about its members. The supervisor that
//! applies the decisions is in the parent module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use docproc_broker::{Clock, SystemClock};
use tokio::sync::watch;

/// How many workers a pool of one job type may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    /// The job type the pool consumes.
    pub job_type: &'static str,
    /// Workers it always has (0: it starts when jobs wait).
    pub min: usize,
    /// Workers it may grow to; `max == min` is a fixed pool.
    pub max: usize,
}

/// Reads the 1-minute load average per core; `None` where it cannot be read.
pub type LoadProbe = Arc<dyn Fn() -> Option<f64> + Send + Sync>;

/// When pools grow and shrink. Every pool of a process shares it.
#[derive(Clone)]
pub struct Scaling {
    /// How often a scaling pool looks at its queue.
    pub tick: Duration,
    /// A worker idle this long leaves a pool above its `min`.
    pub idle: Duration,
    /// A pool grows only while the load per core is below this.
    pub max_load: f64,
    /// The clock idle time is measured on.
    pub clock: Arc<dyn Clock>,
    /// The load the pool reads before growing.
    pub load: LoadProbe,
}

impl std::fmt::Debug for Scaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaling")
            .field("tick", &self.tick)
            .field("idle", &self.idle)
            .field("max_load", &self.max_load)
            .finish_non_exhaustive()
    }
}

impl Default for Scaling {
    /// A look every second; idle workers leave after 60 s; grow while the
    /// load per core is below 1 (the machine's, from `/proc/loadavg`).
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            idle: Duration::from_secs(60),
            max_load: 1.0,
            clock: Arc::new(SystemClock),
            load: Arc::new(load_per_core),
        }
    }
}

/// The 1-minute load average over the cores this process may use.
pub fn load_per_core() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let one: f64 = text.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(one / cores as f64)
}

/// Why a pool changed size (a label of `docproc_pool_scale_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Fewer workers than `min` (a pool starting, or a worker that ended).
    BelowMin,
    /// Jobs of the type wait and every worker is busy.
    JobsWaiting,
    /// A worker has had nothing to do for the idle period.
    Idle,
}

impl Reason {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BelowMin => "below_min",
            Reason::JobsWaiting => "jobs_waiting",
            Reason::Idle => "idle",
        }
    }
}

/// What a pool does at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start one worker.
    Grow(Reason),
    /// Let the longest-idle worker go (it has no job in hand).
    Shrink(Reason),
    /// Stay; the reason a wanted growth did not happen, if any.
    Hold(Option<&'static str>),
}

/// What a pool sees at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Workers now.
    pub size: usize,
    /// Workers holding a job.
    pub busy: usize,
    /// Jobs of the type queued (ready and not taken).
    pub queued: u64,
    /// Load per core, when known.
    pub load: Option<f64>,
    /// How long the longest-idle worker has been idle, ms.
    pub longest_idle_ms: Option<u64>,
}

/// One step of the rule: grow by one while jobs wait, every worker is busy,
/// the pool is below `max` and the CPU has room; shrink by one when a
/// worker has been idle for `idle` and the pool is above `min`.
pub fn decide(spec: &PoolSpec, s: &Scaling, o: Observed) -> Decision {
    if o.size < spec.min {
        return Decision::Grow(Reason::BelowMin);
    }
    if o.queued > 0 && o.busy >= o.size && o.size < spec.max {
        if o.load.is_some_and(|l| l >= s.max_load) {
            return Decision::Hold(Some("cpu_busy"));
        }
        return Decision::Grow(Reason::JobsWaiting);
    }
    let idle_ms = s.idle.as_millis() as u64;
    if o.size > spec.min && o.longest_idle_ms.is_some_and(|i| i >= idle_ms) {
        return Decision::Shrink(Reason::Idle);
    }
    Decision::Hold(None)
}

/// A member of a scaling pool as its supervisor sees it.
pub(super) struct Member {
    /// Set to make the worker leave between jobs.
    pub(super) retire: watch::Sender<bool>,
    /// When it last became idle (clock ms); 0 while it holds a job.
    pub(super) idle_since: Arc<AtomicU64>,
}

impl Member {
    /// Whether the worker's task has ended.
    pub(super) fn gone(&self) -> bool {
        self.retire.is_closed()
    }

    /// Idle for how long at `now`, if idle.
    pub(super) fn idle_for(&self, now: u64) -> Option<u64> {
        match self.idle_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(now.saturating_sub(since)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PoolSpec {
        PoolSpec {
            job_type: "t",
            min: 1,
            max: 3,
        }
    }

    fn seen(size: usize, busy: usize, queued: u64) -> Observed {
        Observed {
            size,
            busy,
            queued,
            load: Some(0.2),
            longest_idle_ms: None,
        }
    }

    #[test]
    fn grows_while_jobs_wait_and_all_are_busy_up_to_max() {
        let s = Scaling::default();
        assert_eq!(
            decide(&spec(), &s, seen(0, 0, 0)),
            Decision::Grow(Reason::BelowMin)
        );
        assert_eq!(
            decide(&spec(), &s, seen(1, 1, 5)),
            Decision::Grow(Reason::JobsWaiting)
        );
        assert_eq!(
            decide(&spec(), &s, seen(2, 1, 5)),
            Decision::Hold(None),
            "a free worker will take the job"
        );
        assert_eq!(decide(&spec(), &s, seen(3, 3, 5)), Decision::Hold(None));
        let hot = Observed {
            load: Some(1.5),
            ..seen(1, 1, 5)
        };
        assert_eq!(decide(&spec(), &s, hot), Decision::Hold(Some("cpu_busy")));
        let unknown = Observed {
            load: None,
            ..seen(1, 1, 5)
        };
        assert_eq!(
            decide(&spec(), &s, unknown),
            Decision::Grow(Reason::JobsWaiting)
        );
    }

    #[test]
    fn shrinks_after_the_idle_period_down_to_min() {
        let s = Scaling::default();
        let idle = |size, ms| Observed {
            longest_idle_ms: Some(ms),
            ..seen(size, 0, 0)
        };
        assert_eq!(decide(&spec(), &s, idle(3, 59_999)), Decision::Hold(None));
        assert_eq!(
            decide(&spec(), &s, idle(3, 60_000)),
            Decision::Shrink(Reason::Idle)
        );
        assert_eq!(decide(&spec(), &s, idle(1, 600_000)), Decision::Hold(None));
        let fixed = PoolSpec {
            min: 2,
            max: 2,
            ..spec()
        };
        assert_eq!(decide(&fixed, &s, idle(2, 600_000)), Decision::Hold(None));
    }
}
