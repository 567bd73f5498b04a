//! The broker engine: the public API over the in-memory indexes and the store.
//!
//! Every call takes the state lock, applies its transition in memory,
//! submits the matching [`Commit`](crate::store::Commit) to the writer while
//! still holding the lock (so disk order equals memory order), releases the
//! lock and then waits for durability before answering.

mod list;
mod ops;
mod recovery;
mod settle;
mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use docproc_proto::broker::v1::{
    Delivery, Event, ExtendResponse, Message, NackResponse, NewMessage, QueueConfig, QueueStats,
    State as S,
};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::{broadcast, watch, Notify};

use crate::clock::{Clock, SystemClock};
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::keys::{self, Blob};
use crate::record::{is_final, MsgRecord, Status};
use crate::store::{Cf, Durable, Store};
use ops::Tx;
use state::State;

pub use list::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
pub use settle::MAX_SETTLE_BATCH;

/// Most messages one lease or fetch call hands out.
pub const MAX_LEASE_BATCH: usize = 1000;
/// Longest wait of a fetch.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);
/// Most expired messages removed per retention sweep step.
const SWEEP_STEP: usize = 1000;

/// An embedded broker. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: BrokerConfig,
    clock: Arc<dyn Clock>,
    store: Store,
    state: Mutex<State>,
    /// Poked when a timer or lease earlier than the driver's sleep may exist.
    timers_changed: Notify,
    /// Serializes retention sweeps and dead-letter admin, which read the disk.
    admin: tokio::sync::Mutex<()>,
    /// Expiry time up to which the retention sweep has removed everything.
    swept_to: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.inner.cfg.data_dir)
            .field("durability", &self.inner.cfg.durability)
            .finish()
    }
}

impl Broker {
    /// Opens the broker on the system clock and starts its timer driver
    /// (lease expiry, delays, retries, retention) on the current tokio runtime.
    /// Fails with `Unavailable` when called outside a tokio runtime.
    pub fn open(cfg: BrokerConfig) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Unavailable("Broker::open needs a tokio runtime".into()))?;
        let broker = Self::open_with_clock(cfg, Arc::new(SystemClock))?;
        let weak = Arc::downgrade(&broker.inner);
        let shutdown = broker.inner.shutdown.subscribe();
        runtime.spawn(drive(weak, shutdown));
        Ok(broker)
    }

    /// Opens the broker on the given clock without a timer driver: time moves
    /// only when the caller calls [`Broker::tick`]. For tests and simulations.
    pub fn open_with_clock(cfg: BrokerConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let store = Store::open(
            &cfg.data_dir,
            cfg.durability,
            cfg.event_buffer,
            cfg.in_memory,
        )?;
        let now = clock.now_ms();
        let started = std::time::Instant::now();
        let (state, cleanup) = recovery::recover(&store, &cfg, now)?;
        tracing::info!(
            live = state.jobs.len(),
            queues = state.queues.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            dir = %cfg.data_dir.display(),
            durability = %cfg.durability,
            "broker recovered"
        );
        let (shutdown, _) = watch::channel(false);
        let broker = Self {
            inner: Arc::new(Inner {
                cfg,
                clock,
                store,
                state: Mutex::new(state),
                timers_changed: Notify::new(),
                admin: tokio::sync::Mutex::new(()),
                swept_to: AtomicU64::new(0),
                shutdown,
            }),
        };
        // Dedup keys that expired while the broker was down; not worth an fsync.
        drop(broker.inner.store.submit(cleanup));
        Ok(broker)
    }

    /// The settings the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.cfg
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Runs `f` on the state under the lock, then submits its commit.
    fn transact<T>(
        &self,
        f: impl FnOnce(&mut State, &mut Tx<'_>) -> Result<T>,
    ) -> Result<(T, Durable)> {
        let now = self.now();
        let mut st = self.inner.state.lock();
        let mut tx = Tx::new(&self.inner.cfg, now);
        let out = f(&mut st, &mut tx);
        // On error nothing may be half-applied: transitions check before they change.
        let (commit, timers_changed) = tx.finish(&st);
        let durable = self.inner.store.submit(commit);
        drop(st);
        if timers_changed {
            self.inner.timers_changed.notify_one();
        }
        Ok((out?, durable))
    }

    /// Stores a batch of messages; answers `(id, duplicate)` per message once
    /// the batch is durable. The batch is validated whole before anything is stored.
    pub async fn produce(&self, msgs: Vec<NewMessage>) -> Result<Vec<(u64, bool)>> {
        if msgs.is_empty() {
            return Err(Error::InvalidArgument(
                "produce needs at least one message".into(),
            ));
        }
        if msgs.len() > self.inner.cfg.max_batch {
            return Err(Error::TooLarge(format!(
                "batch of {} messages exceeds the limit of {}",
                msgs.len(),
                self.inner.cfg.max_batch
            )));
        }
        for (i, m) in msgs.iter().enumerate() {
            ops::validate(m, &self.inner.cfg).map_err(|e| prefix_index(e, i))?;
        }
        let (ids, durable) = self.transact(|st, tx| {
            let ids = msgs
                .into_iter()
                .map(|m| ops::produce(st, tx, m))
                .collect::<Vec<_>>();
            // Ids keep increasing across restarts even if the clock goes back.
            tx.commit.put(
                Cf::Meta,
                keys::META_LAST_ID,
                st.last_id.to_be_bytes().to_vec(),
            );
            Ok(ids)
        })?;
        durable.wait().await?;
        Ok(ids)
    }

    /// Leases up to `max` ready messages of `queue` without waiting.
    pub async fn lease(&self, queue: &str, max: usize, consumer: &str) -> Result<Vec<Delivery>> {
        keys::validate_queue(queue)?;
        let max = max.clamp(1, MAX_LEASE_BATCH);
        let (leased, durable) =
            self.transact(|st, tx| Ok(ops::lease(st, tx, queue, max, consumer)))?;
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        durable.wait().await?;
        self.deliveries(leased)
    }

    /// Leases up to `max` messages, waiting up to `wait` for the first one.
    pub async fn fetch(
        &self,
        queue: &str,
        max: usize,
        consumer: &str,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let notify = self.ready_notify(queue)?;
        let deadline = tokio::time::Instant::now() + wait.min(MAX_FETCH_WAIT);
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.lease(queue, max, consumer).await?;
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                _ = shutdown.wait_for(|s| *s) => return Ok(Vec::new()),
            }
        }
    }

    /// Woken whenever a message of `queue` becomes ready. Create the
    /// `notified()` future before calling [`Broker::lease`] so no wake-up is missed.
    pub fn ready_notify(&self, queue: &str) -> Result<Arc<Notify>> {
        keys::validate_queue(queue)?;
        let mut st = self.inner.state.lock();
        Ok(st.queue(queue, &self.inner.cfg).notify.clone())
    }

    /// The deliveries of freshly leased messages: records and payloads
    /// read with one batched lookup each.
    fn deliveries(&self, leased: Vec<(u64, Status)>) -> Result<Vec<Delivery>> {
        let ids: Vec<Vec<u8>> = leased
            .iter()
            .map(|(id, _)| keys::id_key(*id).to_vec())
            .collect();
        let blobs: Vec<Vec<u8>> = leased
            .iter()
            .map(|(id, _)| keys::blob_key(*id, Blob::Payload).to_vec())
            .collect();
        let records = self.inner.store.multi_get(Cf::Msgs, &ids)?;
        let payloads = self.inner.store.multi_get(Cf::Blobs, &blobs)?;
        leased
            .into_iter()
            .zip(records.into_iter().zip(payloads))
            .map(|((id, s), (rec, payload))| {
                let rec = MsgRecord::decode(rec.ok_or(Error::NotFound(id))?.as_slice())?;
                Ok(Delivery {
                    id,
                    queue: s.queue,
                    priority: s.priority,
                    payload: payload.unwrap_or_default(),
                    headers: rec.headers,
                    attempt: s.attempts,
                    max_attempts: s.max_attempts,
                    lease_token: s.lease_token,
                    lease_deadline_ms: s.lease_deadline_ms,
                    created_at_ms: s.created_at_ms,
                    owner: s.owner,
                })
            })
            .collect()
    }

    fn record(&self, id: u64) -> Result<MsgRecord> {
        let raw = self
            .inner
            .store
            .get(Cf::Msgs, &keys::id_key(id))?
            .ok_or(Error::NotFound(id))?;
        Ok(MsgRecord::decode(raw.as_slice())?)
    }

    fn done_status(&self, id: u64) -> Result<Option<Status>> {
        match self.inner.store.get(Cf::Done, &keys::id_key(id))? {
            Some(raw) => Ok(Some(Status::decode(raw.as_slice())?)),
            None => Ok(None),
        }
    }

    /// Completes a leased message, storing `result`. Returns `true` when the
    /// message had been cancelled meanwhile and so ends cancelled instead.
    pub async fn ack(&self, id: u64, lease_token: u64, result: Vec<u8>) -> Result<bool> {
        if result.len() > self.inner.cfg.max_message_bytes {
            return Err(Error::TooLarge(format!(
                "result of {} bytes exceeds the limit of {} bytes",
                result.len(),
                self.inner.cfg.max_message_bytes
            )));
        }
        let (cancelled, durable) = self
            .transact(|st, tx| ops::ack(st, tx, id, lease_token, result))
            .or_else(|e| self.explain(e, id, "ack"))?;
        durable.wait().await?;
        Ok(cancelled)
    }

    /// Turns "not found among live messages" into the state of a final one.
    fn explain<T>(&self, e: Error, id: u64, action: &'static str) -> Result<T> {
        Err(self.why_not(e, id, action))
    }

    /// Why `action` on `id` failed with `e`: "not found among live
    /// messages" becomes the state of a final one.
    fn why_not(&self, e: Error, id: u64, action: &'static str) -> Error {
        match e {
            Error::NotFound(_) => match self.done_status(id) {
                Ok(done) => ops::not_live(done, id, action),
                Err(read) => read,
            },
            e => e,
        }
    }

    /// Fails a leased message: retried after `retry_delay_ms` (or the queue's
    /// backoff), or dead-lettered when `dead_letter` is set or attempts are used up.
    pub async fn nack(
        &self,
        id: u64,
        lease_token: u64,
        error: &str,
        retry_delay_ms: u64,
        dead_letter: bool,
    ) -> Result<NackResponse> {
        let ((state, retry_at), durable) = self
            .transact(|st, tx| {
                ops::nack(st, tx, id, lease_token, error, retry_delay_ms, dead_letter)
            })
            .or_else(|e| self.explain(e, id, "nack"))?;
        durable.wait().await?;
        Ok(NackResponse {
            state: state as i32,
            retry_at_ms: retry_at,
        })
    }

    /// Hands a leased message back unworked: ready again at once and the
    /// delivery not counted as an attempt (for a consumer shutting down).
    pub async fn release(&self, id: u64, lease_token: u64) -> Result<NackResponse> {
        let (state, durable) = self
            .transact(|st, tx| ops::release(st, tx, id, lease_token))
            .or_else(|e| self.explain(e, id, "release"))?;
        durable.wait().await?;
        Ok(NackResponse {
            state: state as i32,
            retry_at_ms: 0,
        })
    }

    /// Hands back every lease at once: queued again (ready, not waiting
    /// for a timer), the interrupted delivery not counted as an attempt.
    /// For an owner that knows every lease died with its previous run (the
    /// embedded queue of `docproc serve`, whose only consumers are its own
    /// workers); a broker serving remote consumers must not call it.
    /// Answers how many were handed back, once that is durable.
    pub async fn release_all_leases(&self) -> Result<usize> {
        let (n, durable) = self.transact(|st, tx| {
            let held: Vec<u64> = st.leases.iter().map(|&(_, id)| id).collect();
            for &id in &held {
                ops::hand_back(st, tx, id)?;
            }
            Ok(held.len())
        })?;
        durable.wait().await?;
        Ok(n)
    }

    /// Renews a lease by `extend_ms` (0: the message's lease timeout) and
    /// optionally stores progress. Tells whether the message was cancelled.
    pub async fn extend(
        &self,
        id: u64,
        lease_token: u64,
        extend_ms: u64,
        progress: Option<Vec<u8>>,
    ) -> Result<ExtendResponse> {
        if progress
            .as_ref()
            .is_some_and(|p| p.len() > self.inner.cfg.max_message_bytes)
        {
            return Err(Error::TooLarge(
                "progress payload exceeds the message size limit".into(),
            ));
        }
        let ((deadline, cancelled), durable) = self
            .transact(|st, tx| ops::extend(st, tx, id, lease_token, extend_ms, progress))
            .or_else(|e| self.explain(e, id, "extend"))?;
        durable.wait().await?;
        Ok(ExtendResponse {
            lease_deadline_ms: deadline,
            cancelled,
        })
    }

    /// Cancels a message: a waiting one at once (`Cancelled`), a leased one
    /// by flagging it (`Leased`); it is never delivered again.
    pub async fn cancel(&self, id: u64) -> Result<S> {
        let (state, durable) = self
            .transact(|st, tx| ops::cancel(st, tx, id))
            .or_else(|e| self.explain(e, id, "cancel"))?;
        durable.wait().await?;
        Ok(state)
    }

    /// [`get`](Self::get) for readers running beside writers: a message
    /// whose final state is still being written (it has left the live set
    /// but is not on disk yet) is read once that write lands, instead of
    /// answering `NotFound` for a message that exists; and a message
    /// completed in memory whose result is still being written is read once
    /// the result is on disk, instead of answering an empty result.
    pub async fn get_settled(&self, id: u64, with_payload: bool) -> Result<Message> {
        match self.get(id, with_payload) {
            Err(Error::NotFound(_)) => {
                self.inner.store.barrier().wait().await?;
                self.get(id, with_payload)
            }
            Ok(m) if m.state() == S::Completed && m.result.is_empty() => {
                self.inner.store.barrier().wait().await?;
                self.get(id, with_payload)
            }
            other => other,
        }
    }

    /// The full record of a message, live or retained, as stored now.
    pub fn get(&self, id: u64, with_payload: bool) -> Result<Message> {
        let live = self.inner.state.lock().jobs.get(&id).cloned();
        let s = match live {
            Some(s) => s,
            None => self.done_status(id)?.ok_or(Error::NotFound(id))?,
        };
        let rec = self.record(id)?;
        let blob = |b: Blob| -> Result<Vec<u8>> {
            Ok(self
                .inner
                .store
                .get(Cf::Blobs, &keys::blob_key(id, b))?
                .unwrap_or_default())
        };
        let completed = s.state() == S::Completed;
        Ok(Message {
            id,
            state: s.state,
            payload: if with_payload {
                blob(Blob::Payload)?
            } else {
                Vec::new()
            },
            headers: rec.headers,
            attempts: s.attempts,
            max_attempts: s.max_attempts,
            lease_timeout_ms: s.lease_timeout_ms,
            not_before_ms: rec.not_before_ms,
            dedup_key: rec.dedup_key,
            last_error: s.last_error,
            worker_id: s.worker_id,
            result: if completed {
                blob(Blob::Result)?
            } else {
                Vec::new()
            },
            progress: blob(Blob::Progress)?,
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            started_at_ms: s.started_at_ms,
            finished_at_ms: s.finished_at_ms,
            lease_deadline_ms: s.lease_deadline_ms,
            cancel_requested: s.cancel_requested,
            owner: s.owner,
            queue: s.queue,
            priority: s.priority,
        })
    }

    /// Lifecycle events from now on, each published after it is durable.
    /// A receiver that falls more than the event buffer behind gets `Lagged`.
    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.inner.store.subscribe()
    }

    /// Counts and counters of one queue, or of all queues.
    pub fn stats(&self, queue: Option<&str>) -> Result<Vec<QueueStats>> {
        let st = self.inner.state.lock();
        match queue {
            Some(q) => {
                keys::validate_queue(q)?;
                Ok(st
                    .queues
                    .get(q)
                    .map(|qs| qs.stats(q, &st.jobs))
                    .into_iter()
                    .collect())
            }
            None => {
                let mut all: Vec<QueueStats> = st
                    .queues
                    .iter()
                    .map(|(n, q)| q.stats(n, &st.jobs))
                    .collect();
                all.sort_by(|a, b| a.queue.cmp(&b.queue));
                Ok(all)
            }
        }
    }

    /// Replaces a queue's settings (unset fields take the broker defaults).
    pub async fn configure_queue(&self, queue: &str, config: QueueConfig) -> Result<QueueConfig> {
        keys::validate_queue(queue)?;
        if config.weights.values().any(|&w| w == 0 || w > 1_000_000) {
            return Err(Error::InvalidArgument(
                "fair-share weights must be 1..=1000000".into(),
            ));
        }
        if config.weights.keys().any(|&p| p > 255) {
            return Err(Error::InvalidArgument(
                "fair-share weights name priorities 0..=255".into(),
            ));
        }
        let resolved = state::resolve_config(config, &self.inner.cfg);
        let (_, durable) = self.transact(|st, tx| {
            st.queue(queue, tx.cfg).config = resolved.clone();
            tx.commit.put(
                Cf::Meta,
                keys::meta_queue_config(queue),
                resolved.encode_to_vec(),
            );
            Ok(())
        })?;
        durable.wait().await?;
        Ok(resolved)
    }

    /// Ids of a queue's dead letters after `after_id`, oldest first.
    fn dead_ids(&self, queue: &str, after_id: u64, limit: usize) -> Result<Vec<u64>> {
        keys::validate_queue(queue)?;
        let from = keys::dead_key(queue, after_id.saturating_add(1));
        let to = keys::queue_key(queue, &[0xff; 9]);
        let mut ids = Vec::new();
        self.inner.store.scan(Cf::Dead, &from, Some(&to), |k, _| {
            let (_, suffix) = keys::decode_queue_key(k)?;
            ids.push(keys::decode_id(suffix)?);
            Ok(ids.len() < limit)
        })?;
        Ok(ids)
    }

    /// A page of a queue's dead letters (payloads included).
    pub fn list_dead(&self, queue: &str, after_id: u64, limit: usize) -> Result<Vec<Message>> {
        let ids = self.dead_ids(queue, after_id, limit.clamp(1, 1000))?;
        ids.into_iter().map(|id| self.get(id, true)).collect()
    }

    /// Applies `f` to the dead letters named (or all of the queue's), in steps.
    async fn on_dead(
        &self,
        queue: &str,
        ids: Vec<u64>,
        all: bool,
        f: fn(&mut State, &mut Tx<'_>, u64, Status),
    ) -> Result<u64> {
        keys::validate_queue(queue)?;
        let _admin = self.inner.admin.lock().await;
        let mut done = 0u64;
        let mut after = 0u64;
        let mut explicit = Some(ids);
        loop {
            let batch = match (all, explicit.take()) {
                (true, _) => self.dead_ids(queue, after, SWEEP_STEP)?,
                (false, Some(ids)) => ids,
                (false, None) => break,
            };
            if batch.is_empty() {
                break;
            }
            after = batch.iter().copied().max().unwrap_or(after);
            let mut found = Vec::new();
            for id in batch {
                if let Some(s) = self.done_status(id)? {
                    if s.state() == S::Dead && s.queue == queue {
                        found.push((id, s));
                    }
                }
            }
            done += found.len() as u64;
            let (_, durable) = self.transact(|st, tx| {
                for (id, s) in found {
                    f(st, tx, id, s);
                }
                Ok(())
            })?;
            durable.wait().await?;
        }
        Ok(done)
    }

    /// Puts dead letters back in their queue with fresh attempts.
    pub async fn requeue_dead(&self, queue: &str, ids: Vec<u64>, all: bool) -> Result<u64> {
        self.on_dead(queue, ids, all, ops::requeue).await
    }

    /// Deletes dead letters for good.
    pub async fn purge_dead(&self, queue: &str, ids: Vec<u64>, all: bool) -> Result<u64> {
        self.on_dead(queue, ids, all, |st, tx, id, s| {
            ops::remove_final(st, tx, id, &s)
        })
        .await
    }

    /// Handles everything due by now: delayed and retrying messages become
    /// ready, expired leases are redelivered or dead-lettered, dedup keys and
    /// retained final messages past their window are removed.
    pub async fn tick(&self) -> Result<()> {
        let (_, durable) = self.transact(|st, tx| {
            ops::tick(st, tx);
            Ok(())
        })?;
        durable.wait().await?;
        self.sweep().await
    }

    async fn sweep(&self) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        loop {
            let now = self.now();
            let from = keys::expiry_key(self.inner.swept_to.load(Ordering::Acquire), 0);
            let to = keys::expiry_key(now.saturating_add(1), 0);
            let mut due = Vec::new();
            self.inner
                .store
                .scan(Cf::Expiry, &from, Some(&to), |k, _| {
                    due.push(keys::decode_expiry_key(k)?);
                    Ok(due.len() < SWEEP_STEP)
                })?;
            let Some(&(last, _)) = due.last() else {
                return Ok(());
            };
            let mut finals = Vec::new();
            for &(exp, id) in &due {
                finals.push((exp, id, self.done_status(id)?));
            }
            let (_, durable) = self.transact(|st, tx| {
                for (exp, id, done) in finals {
                    match done {
                        // Requeued since: only the stale expiry entry goes.
                        _ if st.jobs.contains_key(&id) => {
                            tx.commit
                                .delete(Cf::Expiry, keys::expiry_key(exp, id).to_vec());
                        }
                        Some(s) if is_final(s.state()) && s.expires_at_ms == exp => {
                            ops::remove_final(st, tx, id, &s)
                        }
                        _ => tx
                            .commit
                            .delete(Cf::Expiry, keys::expiry_key(exp, id).to_vec()),
                    }
                }
                Ok(())
            })?;
            durable.wait().await?;
            self.inner.swept_to.store(last, Ordering::Release);
            if due.len() < SWEEP_STEP {
                return Ok(());
            }
        }
    }

    /// When [`Broker::tick`] next has timed work to do, in Unix ms.
    pub fn next_deadline(&self) -> Option<u64> {
        self.inner.state.lock().next_deadline()
    }

    /// Becomes `Some(reason)` if storage failed; the broker then refuses writes
    /// and the process should exit.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.inner.store.fatal()
    }

    /// Latency of durable writes (fsync of group commits; WAL syncs in
    /// batch mode): cumulative counts per [`SYNC_BOUNDS`](crate::SYNC_BOUNDS),
    /// sum in seconds, count.
    pub fn sync_latency(&self) -> (Vec<u64>, f64, u64) {
        self.inner.store.sync_latency().snapshot()
    }

    /// Stops the timer driver, writes everything submitted, syncs and closes
    /// the database. Calls made afterwards fail with `Unavailable`.
    pub fn close(&self) {
        self.inner.shutdown.send_replace(true);
        self.inner.store.close();
    }
}

fn prefix_index(e: Error, i: usize) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("message {i}: {m}")),
        Error::TooLarge(m) => Error::TooLarge(format!("message {i}: {m}")),
        e => e,
    }
}

/// Sleeps until the next timer, lease or dedup deadline (at most a second, for
/// the retention sweep) and ticks; stops with the broker.
async fn drive(weak: Weak<Inner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let broker = Broker { inner };
        if let Err(e) = broker.tick().await {
            tracing::error!(error = %e, "broker tick failed");
        }
        let now = broker.now();
        let wait = broker
            .next_deadline()
            .map_or(1000, |d| d.saturating_sub(now))
            .min(1000);
        let inner = broker.inner.clone();
        drop(broker);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = inner.timers_changed.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
