//! The status view: every job's latest snapshot and the cancel markers,
//! read from the status log by every process (and written through by the
//! process making a change), serving get, list, stats and watch.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::wire::{decode, plausible_id, Snapshot};
use crate::api::{broadcast_watch, EventStream};
use crate::error::{QueueError, Result};
use crate::model::{
    legacy_owner, Counters, JobEvent, JobId, JobPage, JobRecord, JobStatus, JobTypeStats,
    ListQuery, Priority, PriorityDepth, WatchFilter,
};

#[derive(Default)]
struct State {
    jobs: HashMap<JobId, Snapshot>,
    cancels: HashSet<JobId>,
}

/// Jobs as this process knows them.
pub(crate) struct View {
    state: Mutex<State>,
    events: broadcast::Sender<JobEvent>,
}

impl View {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::default(),
            events: broadcast::channel(4096).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a snapshot unless a later one is known; publishes the change.
    pub(crate) fn apply(&self, snap: Snapshot) {
        let mut st = self.lock();
        let event = match st.jobs.get(&snap.job.job_id) {
            Some(cur) if cur.rev > snap.rev => None,
            Some(cur) if (cur.status, cur.attempts) == (snap.status, snap.attempts) => {
                (cur.progress != snap.progress).then(|| snap.event(true))
            }
            _ => Some(snap.event(false)),
        };
        if st
            .jobs
            .get(&snap.job.job_id)
            .is_none_or(|cur| cur.rev <= snap.rev)
        {
            st.jobs.insert(snap.job.job_id.clone(), snap);
        }
        drop(st);
        if let Some(e) = event {
            let _ = self.events.send(e);
        }
    }

    /// A tombstone: the job is gone (past retention).
    pub(crate) fn forget(&self, id: &JobId) {
        let mut st = self.lock();
        st.jobs.remove(id);
        st.cancels.remove(id);
    }

    pub(crate) fn set_cancel(&self, id: JobId, on: bool) {
        let mut st = self.lock();
        if on {
            st.cancels.insert(id);
        } else {
            st.cancels.remove(&id);
        }
    }

    /// The job's snapshot and whether a cancel was asked for.
    pub(crate) fn get(&self, id: &JobId) -> Option<(Snapshot, bool)> {
        let st = self.lock();
        st.jobs
            .get(id)
            .map(|s| (s.clone(), st.cancels.contains(id)))
    }

    /// The job as the queue trait shows it (`get`); an id of another
    /// shape is not found without a lookup.
    pub(crate) fn record(&self, id: &JobId) -> Result<JobRecord> {
        plausible_id(id)
            .then(|| self.get(id))
            .flatten()
            .map(|(s, cancel)| s.record(cancel))
            .ok_or_else(|| QueueError::NotFound(id.clone()))
    }

    /// The changes `filter` matches, from now until `closed` (`watch`).
    pub(crate) fn watch(
        &self,
        filter: WatchFilter,
        closed: tokio::sync::watch::Receiver<bool>,
    ) -> EventStream {
        broadcast_watch(self.events.subscribe(), closed, move |e| {
            filter.matches(&e).then_some(Ok(e))
        })
    }

    /// Final jobs that finished before `before_ms`.
    pub(crate) fn finished_before(&self, before_ms: u64) -> Vec<JobId> {
        self.lock()
            .jobs
            .values()
            .filter(|s| s.status.is_final() && s.completed_at_ms.unwrap_or(0) < before_ms)
            .map(|s| s.job.job_id.clone())
            .collect()
    }

    /// Jobs not final whose last change is older than `before_ms`.
    #[cfg_attr(not(feature = "rabbitmq"), allow(dead_code))]
    pub(crate) fn live_before(&self, before_ms: u64) -> Vec<Snapshot> {
        self.lock()
            .jobs
            .values()
            .filter(|s| !s.status.is_final() && s.updated_at_ms < before_ms)
            .cloned()
            .collect()
    }

    /// A page of jobs, newest first; the cursor is `CREATED:ID` of the last
    /// job of the previous page.
    pub(crate) fn list(&self, q: &ListQuery) -> Result<JobPage> {
        let limit = q.page_size();
        q.validate()?;
        let after = match &q.cursor {
            None => None,
            Some(c) => {
                let bad = || QueueError::InvalidArgument(format!("bad cursor {c:?}"));
                let (t, id) = c.split_once(':').ok_or_else(bad)?;
                Some((t.parse::<u64>().map_err(|_| bad())?, id.to_string()))
            }
        };
        let st = self.lock();
        let mut hits: Vec<&Snapshot> = st
            .jobs
            .values()
            .filter(|s| q.owner.is_none() || s.job.owner == q.owner)
            .filter(|s| q.job_types.is_empty() || q.job_types.contains(&s.job.job_type))
            .filter(|s| q.statuses.is_empty() || q.statuses.contains(&s.status))
            .filter(|s| q.created_from_ms.is_none_or(|f| s.job.created_at_ms >= f))
            .filter(|s| q.created_to_ms.is_none_or(|t| s.job.created_at_ms <= t))
            .filter(|s| {
                after.as_ref().is_none_or(|(t, id)| {
                    (s.job.created_at_ms, s.job.job_id.0.as_str()) < (*t, id.as_str())
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            (b.job.created_at_ms, &b.job.job_id).cmp(&(a.job.created_at_ms, &a.job.job_id))
        });
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next_cursor = more
            .then(|| {
                hits.last()
                    .map(|s| format!("{}:{}", s.job.created_at_ms, s.job.job_id))
            })
            .flatten();
        Ok(JobPage {
            jobs: hits
                .into_iter()
                .map(|s| s.record(st.cancels.contains(&s.job.job_id)))
                .collect(),
            next_cursor,
        })
    }

    /// Depth per type, priority and status; counters from the jobs kept.
    pub(crate) fn stats(&self) -> Vec<JobTypeStats> {
        let st = self.lock();
        let mut by_type: HashMap<&str, JobTypeStats> = HashMap::new();
        for s in st.jobs.values() {
            let t = by_type
                .entry(s.job.job_type.as_str())
                .or_insert_with(|| JobTypeStats {
                    job_type: s.job.job_type.clone(),
                    priorities: Priority::ALL
                        .into_iter()
                        .map(|p| PriorityDepth {
                            priority: p,
                            ..Default::default()
                        })
                        .collect(),
                    counters: Counters::default(),
                });
            let d = &mut t.priorities[s.job.priority.level() as usize];
            match s.status {
                JobStatus::Pending => d.pending += 1,
                JobStatus::Queued => {
                    d.queued += 1;
                    let at = s.job.created_at_ms;
                    d.oldest_queued_at_ms = Some(d.oldest_queued_at_ms.map_or(at, |o| o.min(at)));
                }
                JobStatus::Processing => d.processing += 1,
                JobStatus::Retrying => d.retrying += 1,
                JobStatus::Failed => d.failed += 1,
                JobStatus::Completed | JobStatus::Cancelled => {}
            }
            let c = &mut t.counters;
            c.published += 1;
            c.started += u64::from(s.attempts);
            c.retried += u64::from(s.retries);
            c.lease_expired += u64::from(s.expiries);
            match s.status {
                JobStatus::Completed => c.completed += 1,
                JobStatus::Failed => c.failed += 1,
                JobStatus::Cancelled => c.cancelled += 1,
                _ => {}
            }
        }
        let mut out: Vec<JobTypeStats> = by_type.into_values().collect();
        out.sort_by(|a, b| a.job_type.cmp(&b.job_type));
        out
    }
}

/// One status log record (key `s:ID` or `c:ID`, no value: a tombstone)
/// into the view.
pub(crate) fn take(view: &View, key: Option<&[u8]>, value: Option<&[u8]>) {
    let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
        return;
    };
    let Some((kind, id)) = key.split_once(':') else {
        return;
    };
    let id = JobId(id.to_string());
    match (kind, value) {
        ("s", Some(v)) => match decode::<Snapshot>(v) {
            Ok(mut s) => {
                if s.job.owner.is_none() {
                    s.job.owner = legacy_owner(&s.job.payload);
                }
                view.apply(s)
            }
            Err(e) => tracing::warn!(error = %e, "skipping a status record"),
        },
        ("s", None) => view.forget(&id),
        ("c", v) => view.set_cancel(id, v.is_some()),
        _ => {}
    }
}
