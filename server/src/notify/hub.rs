//! The event hub: one [`Queue::watch`] stream for the whole process, turned
//! into numbered status frames, kept in a replay buffer and routed to the
//! WebSocket connections subscribed to a job, a correlation id or all jobs.
//!
//! Event ids increase for the life of the hub and across restarts (they
//! start at the hub's start second × 2^20), so a client's last id from an
//! earlier process is older than anything a new one holds and gets a resync.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};

use docproc_queue::{JobEvent, JobId, JobRecord, JobStatus, Queue, QueueError, WatchFilter};

/// Hub settings (part of [`NotifyConfig`](super::NotifyConfig)).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events kept for replay to reconnecting clients.
    pub replay_events: usize,
    /// Jobs whose correlation id is remembered (for correlation routing).
    pub known_jobs: usize,
    /// Frames queued per connection before it counts as too slow.
    pub conn_buffer: usize,
}

impl Default for HubConfig {
    /// 100,000 events for replay, 200,000 known jobs, 1,024 frames per connection.
    fn default() -> Self {
        Self {
            replay_events: 100_000,
            known_jobs: 200_000,
            conn_buffer: 1024,
        }
    }
}

/// One numbered status change as every subscriber receives it.
#[derive(Debug)]
pub struct Routed {
    /// The event id.
    pub id: u64,
    /// The job.
    pub job_id: JobId,
    /// Its correlation id, if any.
    pub correlation_id: Option<String>,
    /// The API key that submitted it, if any (connections of `write` keys
    /// see only their own jobs).
    pub owner: Option<String>,
    /// Its status after the change.
    pub status: JobStatus,
    /// Deliveries so far.
    pub attempts: u32,
    /// Unix ms of the change.
    pub at_ms: u64,
    /// The JSON frame (`type: "status"`), UTF-8, shared by every
    /// connection it goes to.
    pub frame: Bytes,
}

/// What the hub pushes to a connection.
#[derive(Debug, Clone)]
pub enum Push {
    /// A status event.
    Event(Arc<Routed>),
    /// Events were lost upstream: re-read the state of what you follow.
    Resync(String),
}

/// What a connection follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// These jobs.
    pub job_ids: Vec<JobId>,
    /// Jobs with these correlation ids.
    pub correlation_ids: Vec<String>,
    /// Every job.
    pub all: bool,
}

impl Subscription {
    fn matches(&self, r: &Routed) -> bool {
        self.all
            || self.job_ids.contains(&r.job_id)
            || r.correlation_id
                .as_ref()
                .is_some_and(|c| self.correlation_ids.contains(c))
    }
}

/// The answer to a subscription with a last event id.
#[derive(Debug)]
pub enum Resume {
    /// Every event after the given id that matches, in order.
    Replay(Vec<Arc<Routed>>),
    /// The hub no longer holds (or never held) what came after that id.
    Resync {
        /// The oldest event id still held.
        oldest: u64,
    },
}

/// Identifies a connection.
pub type ConnId = u64;

struct Conn {
    tx: mpsc::Sender<Push>,
    kick: Arc<Notify>,
    sub: Subscription,
}

struct State {
    next_id: u64,
    /// Ids `[oldest, next_id)` are all in `buffer`.
    oldest: u64,
    buffer: VecDeque<Arc<Routed>>,
    next_conn: ConnId,
    conns: HashMap<ConnId, Conn>,
    by_job: HashMap<JobId, HashSet<ConnId>>,
    by_corr: HashMap<String, HashSet<ConnId>>,
    all: HashSet<ConnId>,
    /// job → correlation id (`None`: the job has none), oldest first in `known_order`.
    known: HashMap<JobId, Option<String>>,
    /// job → the key that submitted it, for the jobs in `known` that have one.
    owners: HashMap<JobId, String>,
    known_order: VecDeque<JobId>,
    by_corr_jobs: HashMap<String, Vec<JobId>>,
    slow_kicked: u64,
}

/// Counters for stats and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HubStats {
    /// Open connections.
    pub connections: usize,
    /// The last event id given out (0: none yet).
    pub last_event_id: u64,
    /// The oldest event id a client can resume from.
    pub oldest_event_id: u64,
    /// Connections closed for being too slow.
    pub slow_disconnects: u64,
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Arc<dyn Queue>,
    cfg: HubConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("stats", &self.stats()).finish()
    }
}

/// A registered connection: its receiver and the signal that it is too slow.
pub struct Registration {
    /// The connection's id.
    pub id: ConnId,
    /// Pushed frames.
    pub rx: mpsc::Receiver<Push>,
    /// Notified when the hub dropped the connection for falling behind.
    pub kicked: Arc<Notify>,
}

/// How many events the enrichment reads ahead (`get`s in flight).
const ENRICH_AHEAD: usize = 32;

impl Hub {
    /// A hub over `queue`; call [`Hub::run`] to feed it.
    pub fn new(queue: Arc<dyn Queue>, cfg: HubConfig) -> Self {
        let first = (crate::time::now_ms() / 1000) << 20;
        Self {
            shared: Arc::new(Shared {
                queue,
                cfg,
                state: Mutex::new(State {
                    next_id: first,
                    oldest: first,
                    buffer: VecDeque::new(),
                    next_conn: 1,
                    conns: HashMap::new(),
                    by_job: HashMap::new(),
                    by_corr: HashMap::new(),
                    all: HashSet::new(),
                    known: HashMap::new(),
                    owners: HashMap::new(),
                    known_order: VecDeque::new(),
                    by_corr_jobs: HashMap::new(),
                    slow_kicked: 0,
                }),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-made in
        // a way that matters more than stopping notifications would.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queue it watches.
    fn queue(&self) -> &Arc<dyn Queue> {
        &self.shared.queue
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        let s = self.state();
        HubStats {
            connections: s.conns.len(),
            last_event_id: s.next_id.saturating_sub(1),
            oldest_event_id: s.oldest,
            slow_disconnects: s.slow_kicked,
        }
    }

    /// Remembers a job's correlation id (the upload handler knows it, which
    /// saves a read when its first event arrives).
    pub fn remember(&self, job: &JobId, correlation_id: Option<&str>, owner: Option<&str>) {
        let mut s = self.state();
        remember(
            &mut s,
            &self.shared.cfg,
            job,
            correlation_id.map(str::to_string),
            owner.map(str::to_string),
        );
    }

    /// Jobs known to carry this correlation id, oldest first.
    pub fn jobs_of(&self, correlation_id: &str) -> Vec<JobId> {
        self.state()
            .by_corr_jobs
            .get(correlation_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Registers a connection with no subscriptions yet.
    pub fn connect(&self) -> Registration {
        let (tx, rx) = mpsc::channel(self.shared.cfg.conn_buffer.max(1));
        let kick = Arc::new(Notify::new());
        let mut s = self.state();
        let id = s.next_conn;
        s.next_conn += 1;
        s.conns.insert(
            id,
            Conn {
                tx,
                kick: kick.clone(),
                sub: Subscription::default(),
            },
        );
        Registration {
            id,
            rx,
            kicked: kick,
        }
    }

    /// Forgets a connection.
    pub fn disconnect(&self, id: ConnId) {
        let mut s = self.state();
        drop_conn(&mut s, id);
    }

    /// Adds to what a connection follows. With `since` (the last event id
    /// the client saw), also answers what it missed or that it must resync.
    /// Events after this call are pushed to the connection; the replayed
    /// ones all come before them. `None` when the connection is gone.
    pub fn subscribe(&self, id: ConnId, add: &Subscription, since: Option<u64>) -> Option<Resume> {
        let mut guard = self.state();
        let s = &mut *guard;
        let conn = s.conns.get_mut(&id)?;
        for j in &add.job_ids {
            if !conn.sub.job_ids.contains(j) {
                conn.sub.job_ids.push(j.clone());
            }
            s.by_job.entry(j.clone()).or_default().insert(id);
        }
        for c in &add.correlation_ids {
            if !conn.sub.correlation_ids.contains(c) {
                conn.sub.correlation_ids.push(c.clone());
            }
            s.by_corr.entry(c.clone()).or_default().insert(id);
        }
        if add.all {
            conn.sub.all = true;
            s.all.insert(id);
        }
        let since = since?;
        Some(
            if since.saturating_add(1) >= s.oldest && since < s.next_id {
                let start = since.saturating_add(1) - s.oldest;
                let missed = s
                    .buffer
                    .iter()
                    .skip(usize::try_from(start).unwrap_or(usize::MAX))
                    .filter(|r| add.matches(r))
                    .cloned()
                    .collect();
                Resume::Replay(missed)
            } else {
                Resume::Resync { oldest: s.oldest }
            },
        )
    }

    /// Removes from what a connection follows.
    pub fn unsubscribe(&self, id: ConnId, remove: &Subscription) {
        let mut guard = self.state();
        let s = &mut *guard;
        let Some(conn) = s.conns.get_mut(&id) else {
            return;
        };
        conn.sub.job_ids.retain(|j| !remove.job_ids.contains(j));
        conn.sub
            .correlation_ids
            .retain(|c| !remove.correlation_ids.contains(c));
        if remove.all {
            conn.sub.all = false;
            s.all.remove(&id);
        }
        for j in &remove.job_ids {
            unlink(&mut s.by_job, j, id);
        }
        for c in &remove.correlation_ids {
            unlink(&mut s.by_corr, c, id);
        }
    }

    /// What a connection follows.
    pub fn followed(&self, id: ConnId) -> Subscription {
        self.state()
            .conns
            .get(&id)
            .map(|c| c.sub.clone())
            .unwrap_or_default()
    }

    /// How many jobs, correlation ids and `all` a connection follows.
    pub fn subscription_count(&self, id: ConnId) -> usize {
        self.state().conns.get(&id).map_or(0, |c| {
            c.sub.job_ids.len() + c.sub.correlation_ids.len() + usize::from(c.sub.all)
        })
    }

    /// Feeds the hub from the queue's watch stream until `stop` turns
    /// true; a broken stream is watched again and its subscribers resync.
    pub async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        while !*stop.borrow() {
            let stream = match self.queue().watch(WatchFilter::default()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the queue; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if !first {
                self.resync_all("the event stream was re-established; events may be missing");
            }
            first = false;
            backoff = Duration::from_millis(100);
            let hub = self.clone();
            let mut enriched = stream
                .map(move |item| {
                    let hub = hub.clone();
                    async move {
                        match item {
                            Ok(ev) => Ok(hub.enrich(ev).await),
                            Err(e) => Err(e),
                        }
                    }
                })
                .buffered(ENRICH_AHEAD);
            loop {
                let next = tokio::select! {
                    n = enriched.next() => n,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match next {
                    Some(Ok(e)) => {
                        if let Some(m) = &metrics {
                            m.job_event(&e.ev);
                        }
                        self.dispatch(e)
                    }
                    Some(Err(QueueError::Lagged(n))) => {
                        tracing::warn!(dropped = n, "the hub fell behind the queue's events");
                        self.resync_all(&format!("{n} events were dropped upstream"));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch stream failed; watching again");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Reads what an event needs that the event does not carry: the job's
    /// correlation id (once per job), its result when completed, its
    /// progress on a progress event.
    async fn enrich(&self, ev: JobEvent) -> Enriched {
        let known = self.state().known.get(&ev.job_id).cloned();
        let needs_record = known.is_none() || ev.progress || ev.status == JobStatus::Completed;
        let record = if needs_record {
            self.queue().get(&ev.job_id).await.ok()
        } else {
            None
        };
        let (correlation_id, owner) = match known {
            Some(c) => (c, self.state().owners.get(&ev.job_id).cloned()),
            None => (
                record.as_ref().and_then(|r| r.job.correlation_id.clone()),
                record.as_ref().and_then(|r| r.job.owner.clone()),
            ),
        };
        Enriched {
            ev,
            correlation_id,
            owner,
            record,
        }
    }

    fn dispatch(&self, e: Enriched) {
        let cfg = &self.shared.cfg;
        let mut guard = self.state();
        let s = &mut *guard;
        if !s.known.contains_key(&e.ev.job_id) {
            remember(
                s,
                cfg,
                &e.ev.job_id,
                e.correlation_id.clone(),
                e.owner.clone(),
            );
        }
        let id = s.next_id;
        s.next_id += 1;
        let frame = status_frame(
            "status",
            id,
            &e.ev,
            e.correlation_id.as_deref(),
            e.record.as_ref(),
        );
        let routed = Arc::new(Routed {
            id,
            job_id: e.ev.job_id.clone(),
            correlation_id: e.correlation_id,
            owner: e.owner,
            status: e.ev.status,
            attempts: e.ev.attempts,
            at_ms: e.ev.at_ms,
            frame: Bytes::from(frame.to_string()),
        });
        s.buffer.push_back(routed.clone());
        while s.buffer.len() > cfg.replay_events.max(1) {
            s.buffer.pop_front();
            s.oldest += 1;
        }
        let mut targets: Vec<ConnId> = s.all.iter().copied().collect();
        if let Some(c) = s.by_job.get(&routed.job_id) {
            targets.extend(c.iter().copied());
        }
        if let Some(corr) = &routed.correlation_id {
            if let Some(c) = s.by_corr.get(corr) {
                targets.extend(c.iter().copied());
            }
        }
        if targets.len() > 1 {
            targets.sort_unstable();
            targets.dedup();
        }
        for t in targets {
            let full = match s.conns.get(&t) {
                Some(c) => c.tx.try_send(Push::Event(routed.clone())).is_err(),
                None => false,
            };
            if full {
                // Full (or gone): the client does not keep up; it is closed
                // rather than buffered without bound.
                if let Some(c) = s.conns.get(&t) {
                    c.kick.notify_one();
                }
                drop_conn(s, t);
                s.slow_kicked += 1;
            }
        }
    }

    /// Tells every connection to re-read what it follows; nothing before
    /// now can be replayed any more.
    fn resync_all(&self, reason: &str) {
        let mut guard = self.state();
        let s = &mut *guard;
        s.buffer.clear();
        s.oldest = s.next_id;
        let ids: Vec<ConnId> = s.conns.keys().copied().collect();
        for id in ids {
            let full = s
                .conns
                .get(&id)
                .is_some_and(|c| c.tx.try_send(Push::Resync(reason.to_string())).is_err());
            if full {
                if let Some(c) = s.conns.get(&id) {
                    c.kick.notify_one();
                }
                drop_conn(s, id);
                s.slow_kicked += 1;
            }
        }
    }

    /// The last event id given out (a snapshot is as new as this).
    pub fn last_event_id(&self) -> u64 {
        self.state().next_id.saturating_sub(1)
    }
}

struct Enriched {
    ev: JobEvent,
    correlation_id: Option<String>,
    owner: Option<String>,
    record: Option<JobRecord>,
}

fn remember(
    s: &mut State,
    cfg: &HubConfig,
    job: &JobId,
    corr: Option<String>,
    owner: Option<String>,
) {
    if s.known.contains_key(job) {
        return;
    }
    if let Some(o) = owner {
        s.owners.insert(job.clone(), o);
    }
    if let Some(c) = &corr {
        s.by_corr_jobs
            .entry(c.clone())
            .or_default()
            .push(job.clone());
    }
    s.known.insert(job.clone(), corr);
    s.known_order.push_back(job.clone());
    while s.known_order.len() > cfg.known_jobs.max(1) {
        let Some(old) = s.known_order.pop_front() else {
            break;
        };
        s.owners.remove(&old);
        if let Some(Some(c)) = s.known.remove(&old) {
            if let Some(jobs) = s.by_corr_jobs.get_mut(&c) {
                jobs.retain(|j| j != &old);
                if jobs.is_empty() {
                    s.by_corr_jobs.remove(&c);
                }
            }
        }
    }
}

fn unlink<K: std::hash::Hash + Eq>(map: &mut HashMap<K, HashSet<ConnId>>, key: &K, id: ConnId) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

fn drop_conn(s: &mut State, id: ConnId) {
    let Some(conn) = s.conns.remove(&id) else {
        return;
    };
    for j in &conn.sub.job_ids {
        unlink(&mut s.by_job, j, id);
    }
    for c in &conn.sub.correlation_ids {
        unlink(&mut s.by_corr, c, id);
    }
    s.all.remove(&id);
}

/// A status frame (`type` `status` for events, `snapshot` for the state
/// sent on subscribe) in the documented schema.
pub fn status_frame(
    kind: &str,
    event_id: u64,
    ev: &JobEvent,
    correlation_id: Option<&str>,
    record: Option<&JobRecord>,
) -> Value {
    let result = match ev.status {
        JobStatus::Completed => record.and_then(|r| r.result.clone()),
        _ => None,
    };
    let progress = if ev.progress || kind == "snapshot" {
        record.and_then(|r| r.progress.clone())
    } else {
        None
    };
    json!({
        "type": kind,
        "event_id": event_id,
        "job_id": ev.job_id,
        "job_type": ev.job_type,
        "correlation_id": correlation_id,
        "status": ev.status,
        "progress_update": ev.progress,
        "progress": progress,
        "attempts": ev.attempts,
        "error": ev.error,
        "result": result,
        "worker_id": ev.worker_id,
        "at": crate::time::rfc3339(ev.at_ms),
        "at_ms": ev.at_ms,
    })
}

/// A record as the event it would have been (for snapshots).
pub fn record_event(r: &JobRecord) -> JobEvent {
    JobEvent {
        job_id: r.job.job_id.clone(),
        job_type: r.job.job_type.clone(),
        status: r.status,
        attempts: r.attempts,
        error: r.error.clone(),
        worker_id: r.worker_id.clone(),
        priority: r.job.priority,
        progress: false,
        at_ms: r.updated_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docproc_queue::{self as queue, NewJob};

    fn ev(id: &str, status: JobStatus, at: u64) -> Enriched {
        Enriched {
            ev: JobEvent {
                job_id: JobId(id.into()),
                job_type: "t".into(),
                status,
                attempts: 0,
                error: None,
                worker_id: None,
                priority: queue::Priority::Normal,
                progress: false,
                at_ms: at,
            },
            correlation_id: Some(format!("c-{id}")),
            owner: None,
            record: None,
        }
    }

    #[tokio::test]
    async fn routes_replays_and_drops_slow_connections() {
        let q = queue::open("memory://").await.unwrap();
        let _ = q.publish_one(NewJob::new("t", json!({}))).await.unwrap();
        let hub = Hub::new(
            q.clone(),
            HubConfig {
                replay_events: 4,
                known_jobs: 10,
                conn_buffer: 2,
            },
        );
        let mut a = hub.connect();
        let mut b = hub.connect();
        let sub_a = Subscription {
            job_ids: vec![JobId("1".into())],
            ..Subscription::default()
        };
        assert!(hub.subscribe(a.id, &sub_a, None).is_none());
        let sub_b = Subscription {
            correlation_ids: vec!["c-2".into()],
            ..Subscription::default()
        };
        hub.subscribe(b.id, &sub_b, None);
        hub.dispatch(ev("1", JobStatus::Queued, 1));
        hub.dispatch(ev("2", JobStatus::Queued, 2));
        let Some(Push::Event(e)) = a.rx.recv().await else {
            panic!("a gets job 1")
        };
        assert_eq!(e.job_id.0, "1");
        let first = e.id;
        let Some(Push::Event(e)) = b.rx.recv().await else {
            panic!("b gets job 2 by correlation")
        };
        assert_eq!((e.job_id.0.as_str(), e.id), ("2", first + 1));
        assert!(a.rx.try_recv().is_err(), "a gets nothing else");
        // A reconnecting client gets what it missed, in order.
        hub.dispatch(ev("1", JobStatus::Processing, 3));
        hub.dispatch(ev("1", JobStatus::Completed, 4));
        let c = hub.connect();
        match hub.subscribe(c.id, &sub_a, Some(first)) {
            Some(Resume::Replay(m)) => {
                let got: Vec<_> = m.iter().map(|r| r.status).collect();
                assert_eq!(got, [JobStatus::Processing, JobStatus::Completed]);
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        // Past the buffer: resync.
        hub.dispatch(ev("3", JobStatus::Queued, 5));
        hub.dispatch(ev("3", JobStatus::Queued, 6));
        let d = hub.connect();
        assert!(matches!(
            hub.subscribe(d.id, &sub_a, Some(first)),
            Some(Resume::Resync { .. })
        ));
        // a has not read its two frames (buffer 2): a third drops it.
        assert_eq!(hub.stats().slow_disconnects, 0);
        hub.dispatch(ev("1", JobStatus::Completed, 7));
        assert_eq!(hub.stats().slow_disconnects, 1);
        assert_eq!(hub.stats().connections, 3);
        hub.disconnect(b.id);
        assert_eq!(hub.stats().connections, 2);
    }
}
