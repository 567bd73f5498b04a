//! One job type's consumers: a group member per priority topic, each
//! buffering what it fetches (a full buffer stops that consumer taking
//! more, so a flood of low-priority jobs never blocks urgent ones), leases
//! handed out highest priority first, and a partition's offset committed
//! only up to the first message whose job is not yet finished, failed or
//! handed on.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};

use super::{now_ms, Inner};
use crate::error::{QueueError, Result};
use crate::lease::Lease;
use crate::model::{JobId, JobStatus};
use crate::statuslog::settle::StatusLog;
use crate::statuslog::wire::{decode, delivery_id, JobMsg, Snapshot};

/// Messages buffered per priority before that priority's partitions pause.
const BUFFER: usize = 64;
/// How long a high-watermark answer is trusted.
const HWM_TTL: Duration = Duration::from_millis(100);
/// How often expired leases are looked for.
const REAP_EVERY: Duration = Duration::from_millis(100);
/// How long a message waits for the status record naming its delivery.
pub(super) const STATUS_WAIT_MS: u64 = 10_000;

/// A partition, its next unfetched offset and its high watermark.
type Probe = ((String, i32), i64, i64);

/// A fetched message waiting for a worker.
struct Buffered {
    topic: String,
    partition: i32,
    offset: i64,
    msg: JobMsg,
    /// Not before this time (a job still leased by a worker that may be
    /// gone, or whose status record is still on its way).
    hold_until: u64,
    /// When it was fetched.
    seen_ms: u64,
}

/// Offsets of one partition: fetched but unfinished, and what is committed.
#[derive(Default)]
pub(super) struct Track {
    pub(super) outstanding: BTreeSet<i64>,
    /// The offset after the last one fetched.
    pub(super) next: i64,
    committed: i64,
}

impl Track {
    /// The offset to commit now, when it moved: the first unfinished
    /// message, or past the last fetched when none is unfinished.
    pub(super) fn advance(&mut self) -> Option<i64> {
        let upto = self.outstanding.first().copied().unwrap_or(self.next);
        (upto > self.committed).then(|| {
            self.committed = upto;
            upto
        })
    }
}

/// A lease this process handed out.
pub(super) struct InFlight {
    pub(super) token: String,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) deadline_ms: u64,
}

#[derive(Default)]
pub(super) struct FeedState {
    buffers: [VecDeque<Buffered>; 4],
    tracks: HashMap<(String, i32), Track>,
    pub(super) inflight: HashMap<JobId, InFlight>,
    hwm: HashMap<(String, i32), (i64, Instant)>,
}

impl FeedState {
    /// A revoked partition: what was buffered from it belongs to its next owner.
    fn drop_partition(&mut self, topic: &str, partition: i32) {
        for b in &mut self.buffers {
            b.retain(|m| !(m.topic == topic && m.partition == partition));
        }
        self.tracks.remove(&(topic.to_string(), partition));
    }
}

/// Drops buffered messages of revoked partitions.
pub(super) struct FeedContext {
    state: Arc<Mutex<FeedState>>,
    /// Set once the group has given this consumer its first assignment.
    joined: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientContext for FeedContext {}

impl ConsumerContext for FeedContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.joined
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for e in tpl.elements() {
                st.drop_partition(e.topic(), e.partition());
            }
        }
    }
}

/// A job type's consumers and what they hold.
pub(super) struct Feed {
    pub(super) job_type: String,
    topics: [String; 4],
    /// One per priority, subscribed to that priority's topic.
    consumers: [Arc<StreamConsumer<FeedContext>>; 4],
    /// Woken when a buffer has room again.
    space: Notify,
    /// Per priority: whether its consumer has joined its group.
    joined: [Arc<std::sync::atomic::AtomicBool>; 4],
    state: Arc<Mutex<FeedState>>,
    /// The queue's wake-up for idle consumers.
    wake: Arc<Notify>,
}

fn lock(m: &Mutex<FeedState>) -> MutexGuard<'_, FeedState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn backend(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("kafka {what}: {e}"))
}

impl Feed {
    /// Joins the consumer group on the type's topics and starts fetching
    /// and reaping.
    pub(super) fn start(inner: &Arc<Inner>, job_type: &str) -> Result<Arc<Self>> {
        let topics = inner.job_topics(job_type);
        let state = Arc::new(Mutex::new(FeedState::default()));
        let mut consumers = Vec::with_capacity(4);
        let joined: [Arc<std::sync::atomic::AtomicBool>; 4] = Default::default();
        for (level, topic) in topics.iter().enumerate() {
            // A group per priority: joining one never waits on the others.
            let c: StreamConsumer<FeedContext> = inner
                .consumer_config(&format!("{}.p{level}", inner.cfg.group))
                .set("queued.max.messages.kbytes", "1024")
                .create_with_context(FeedContext {
                    state: state.clone(),
                    joined: joined[level].clone(),
                })
                .map_err(|e| backend("consumer", e))?;
            c.subscribe(&[topic.as_str()])
                .map_err(|e| backend("subscribe", e))?;
            consumers.push(Arc::new(c));
        }
        let consumers: [Arc<StreamConsumer<FeedContext>>; 4] = consumers
            .try_into()
            .map_err(|_| QueueError::Backend("four consumers".into()))?;
        let feed = Arc::new(Self {
            job_type: job_type.to_string(),
            topics,
            consumers,
            space: Notify::new(),
            joined,
            state,
            wake: inner.wake.clone(),
        });
        for level in 0..4 {
            tokio::spawn(fetch(feed.clone(), level, inner.closed.subscribe()));
        }
        tokio::spawn(reap(feed.clone(), inner.clone(), inner.closed.subscribe()));
        Ok(feed)
    }

    /// Whether every priority's consumer has joined its group.
    pub(super) fn ready(&self) -> bool {
        self.joined
            .iter()
            .all(|j| j.load(std::sync::atomic::Ordering::Acquire))
    }

    fn level(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == topic)
    }

    fn partitions_of(&self, level: usize) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        if let Ok(a) = self.consumers[level].assignment() {
            for e in a.elements_for_topic(&self.topics[level]) {
                tpl.add_partition(&self.topics[level], e.partition());
            }
        }
        tpl
    }

    /// The message at `offset` is dealt with: commit as far as possible.
    pub(super) fn done(&self, topic: &str, partition: i32, offset: i64) {
        let commit = {
            let mut st = lock(&self.state);
            let Some(t) = st.tracks.get_mut(&(topic.to_string(), partition)) else {
                return;
            };
            t.outstanding.remove(&offset);
            t.advance()
        };
        if let Some(upto) = commit {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(topic, partition, Offset::Offset(upto))
                .is_ok()
            {
                let c = &self.consumers[self.level(topic).unwrap_or(0)];
                if let Err(e) = c.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(error = %e, topic, partition, "kafka commit");
                }
            }
        }
    }

    /// Whether a partition of a higher priority still has messages this
    /// consumer has not fetched (asked of the broker, cached briefly).
    async fn higher_backlog(&self, level: usize) -> Result<bool> {
        if !self.joined[level + 1..]
            .iter()
            .all(|j| j.load(std::sync::atomic::Ordering::Acquire))
        {
            // A higher priority's consumer has not joined yet.
            return Ok(true);
        }
        let mut probe = Vec::new();
        {
            let st = lock(&self.state);
            for l in level + 1..4 {
                for e in self.partitions_of(l).elements() {
                    let key = (e.topic().to_string(), e.partition());
                    let next = st.tracks.get(&key).map(|t| t.next);
                    match st.hwm.get(&key) {
                        Some((h, at)) if at.elapsed() < HWM_TTL => {
                            if next.is_none_or(|n| n < *h) && *h > 0 {
                                probe.push((key, next));
                            }
                        }
                        _ => probe.push((key, next)),
                    }
                }
            }
        }
        if probe.is_empty() {
            return Ok(false);
        }
        let c = self.consumers[3].clone();
        let answers = tokio::task::spawn_blocking(move || -> Result<Vec<Probe>> {
            let mut out = Vec::new();
            for ((topic, p), next) in probe {
                let (low, high) = c
                    .fetch_watermarks(&topic, p, Duration::from_secs(5))
                    .map_err(|e| backend("watermarks", e))?;
                let next = match next {
                    Some(n) => n,
                    None => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(&topic, p);
                        let got = c
                            .committed_offsets(tpl, Duration::from_secs(5))
                            .map_err(|e| backend("committed offsets", e))?;
                        match got.find_partition(&topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(n)) => n,
                            _ => low,
                        }
                    }
                };
                out.push(((topic, p), next, high));
            }
            Ok(out)
        })
        .await
        .map_err(|e| QueueError::Backend(e.to_string()))??;
        let mut st = lock(&self.state);
        let mut backlog = false;
        for (key, next, high) in answers {
            st.hwm.insert(key, (high, Instant::now()));
            backlog |= next < high;
        }
        Ok(backlog)
    }

    /// Leases the best ready job for `worker`, or `None` when there is none
    /// now (or a higher priority's messages are still on their way).
    pub(super) async fn try_lease(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        worker: &str,
    ) -> Result<Option<Lease>> {
        loop {
            let now = now_ms();
            let pick = {
                let st = lock(&self.state);
                (0..4).rev().find_map(|l| {
                    st.buffers[l]
                        .iter()
                        .position(|b| b.hold_until <= now)
                        .map(|i| (l, st.buffers[l][i].offset, st.buffers[l][i].partition))
                })
            };
            let Some((level, offset, partition)) = pick else {
                return Ok(None);
            };
            if level < 3 && self.higher_backlog(level).await? {
                return Ok(None);
            }
            let taken = {
                let mut st = lock(&self.state);
                let buf = &mut st.buffers[level];
                buf.iter()
                    .position(|b| b.offset == offset && b.partition == partition)
                    .and_then(|i| buf.remove(i))
            };
            self.space.notify_waiters();
            let Some(b) = taken else { continue };
            match self.lease_one(inner, b, worker, now).await? {
                Some(l) => return Ok(Some(l)),
                None => continue,
            }
        }
    }

    /// Decides what a buffered message is now and leases it if it is due.
    async fn lease_one(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        b: Buffered,
        worker: &str,
        now: u64,
    ) -> Result<Option<Lease>> {
        let id = b.msg.job.job_id.clone();
        let (mut snap, cancel) = inner.view.get(&id).unwrap_or_else(|| {
            // The status record is not read yet: the message says it all.
            let s = Snapshot::new(
                b.msg.job.clone(),
                JobStatus::Queued,
                b.msg.delivery.clone(),
                now,
            );
            (s, false)
        });
        let coord = (b.partition, b.offset);
        if !snap.status.is_final()
            && snap.delivery != b.msg.delivery
            && b.msg.attempt > snap.attempts
            && now.saturating_sub(b.seen_ms) < STATUS_WAIT_MS
        {
            // A newer delivery whose status record is still on its way.
            self.hold(b, now + 50);
            return Ok(None);
        }
        if snap.status.is_final() || snap.delivery != b.msg.delivery {
            self.done(&b.topic, b.partition, b.offset);
            return Ok(None);
        }
        if snap.status == JobStatus::Processing {
            if snap.leased_at != Some(coord) {
                // A copy of a message someone already leased.
                self.done(&b.topic, b.partition, b.offset);
                return Ok(None);
            }
            if lock(&self.state).inflight.contains_key(&id) {
                // Ours and still running: fetched again after a rebalance.
                return Ok(None);
            }
            let deadline = snap.deadline_ms.unwrap_or(0);
            if deadline > now {
                // Leased by a process that may have died: wait for its lease.
                self.hold(b, deadline);
                return Ok(None);
            }
            snap.expiries += 1;
            snap.error = Some("lease expired: the worker's process went away".into());
        }
        if inner.ends_before_start(&mut snap, cancel, now).await? {
            self.done(&b.topic, b.partition, b.offset);
            return Ok(None);
        }
        let token = delivery_id();
        let deadline_ms = snap.start(worker, now);
        snap.leased_at = Some(coord);
        inner.write_status(&snap).await?;
        lock(&self.state).inflight.insert(
            id.clone(),
            InFlight {
                token: token.clone(),
                topic: b.topic.clone(),
                partition: b.partition,
                offset: b.offset,
                deadline_ms,
            },
        );
        Ok(Some(super::lease::make(
            inner.clone(),
            self.clone(),
            snap.job.clone(),
            snap.attempts,
            deadline_ms,
            token,
        )))
    }

    /// Puts a message back at the front of its buffer until `until`.
    fn hold(&self, b: Buffered, until: u64) {
        let l = self.level(&b.topic).unwrap_or(0);
        lock(&self.state).buffers[l].push_front(Buffered {
            hold_until: until,
            ..b
        });
    }

    /// Checks a lease's token and deadline; answers where its message is.
    pub(super) fn holds(&self, id: &JobId, token: &str) -> Result<(String, i32, i64)> {
        let st = lock(&self.state);
        match st.inflight.get(id) {
            Some(f) if f.token == token && f.deadline_ms > now_ms() => {
                Ok((f.topic.clone(), f.partition, f.offset))
            }
            _ => Err(QueueError::LeaseLost(id.clone())),
        }
    }

    pub(super) fn extend(&self, id: &JobId, deadline_ms: u64) {
        if let Some(f) = lock(&self.state).inflight.get_mut(id) {
            f.deadline_ms = deadline_ms;
        }
    }

    pub(super) fn release(&self, id: &JobId) {
        lock(&self.state).inflight.remove(id);
    }

    /// Stops the consumers (they leave the group) off the async threads.
    pub(super) fn stop(self: Arc<Self>) {
        let consumers = self.consumers.clone();
        drop(self);
        tokio::task::spawn_blocking(move || {
            for c in consumers {
                c.unsubscribe();
            }
        });
    }
}

/// Moves one priority's fetched messages into its buffer until `closed`.
/// A full buffer stops the taking (the client's prefetch is bounded too);
/// it still takes one message a second so group rebalances never wait on it.
async fn fetch(feed: Arc<Feed>, level: usize, mut closed: watch::Receiver<bool>) {
    let consumer = feed.consumers[level].clone();
    loop {
        let full = lock(&feed.state).buffers[level].len() >= BUFFER;
        if full {
            let room = feed.space.notified();
            tokio::select! {
                _ = room => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
        let msg = tokio::select! {
            m = consumer.recv() => m,
            _ = closed.wait_for(|c| *c) => return,
        };
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, job_type = %feed.job_type, "kafka fetch");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
        let parsed = m.payload().map(decode::<JobMsg>);
        drop(m);
        let mut st = lock(&feed.state);
        let track = st.tracks.entry((topic.clone(), partition)).or_default();
        track.next = offset + 1;
        let Some(Ok(msg)) = parsed else {
            tracing::warn!(%topic, partition, offset, "skipping an unreadable job message");
            drop(st);
            feed.done(&topic, partition, offset);
            continue;
        };
        track.outstanding.insert(offset);
        st.buffers[level].push_back(Buffered {
            topic,
            partition,
            offset,
            msg,
            hold_until: 0,
            seen_ms: now_ms(),
        });
        drop(st);
        feed.wake.notify_waiters();
    }
}

/// Hands expired leases of this process back (or fails them when out of
/// attempts) until `closed`.
async fn reap(feed: Arc<Feed>, inner: Arc<Inner>, mut closed: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REAP_EVERY) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let now = now_ms();
        let expired: Vec<(JobId, InFlight)> = {
            let mut st = lock(&feed.state);
            let ids: Vec<JobId> = st
                .inflight
                .iter()
                .filter(|(_, f)| f.deadline_ms <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| st.inflight.remove(&id).map(|f| (id, f)))
                .collect()
        };
        for (id, f) in expired {
            match inner.expire(&id, now).await {
                Ok(()) => feed.done(&f.topic, f.partition, f.offset),
                Err(e) => {
                    tracing::warn!(error = %e, job = %id, "kafka lease expiry; will retry");
                    lock(&feed.state).inflight.insert(id, f);
                }
            }
        }
    }
}
