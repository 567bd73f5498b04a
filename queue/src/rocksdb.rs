//! `rocksdb://PATH`: the broker engine in-process on RocksDB at `PATH`, with
//! no network hop. The default queue of `docproc serve`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use docproc_broker::{pb, Broker, BrokerConfig, Error as BrokerError};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use super::brokered::{BrokerApi, BrokerQueue, Deliveries, Held};
use super::error::{QueueError, Result};
use super::lease::RetryPolicy;
use super::model::JobId;
use super::url::{QueueUrl, COMMON_PARAMS};

/// The embedded broker as a [`Queue`](super::Queue).
pub type RocksDbQueue = BrokerQueue<Embedded>;

/// Opens `rocksdb://PATH[?durability=sync|batch|batch:MS|none]`.
pub fn open(u: &QueueUrl) -> Result<RocksDbQueue> {
    let mut known = COMMON_PARAMS.to_vec();
    known.push("durability");
    u.only(&known)?;
    if u.target.is_empty() {
        return Err(u.invalid("rocksdb:// needs a directory, e.g. rocksdb://./data/queue"));
    }
    let mut cfg = BrokerConfig::with_dir(&u.target);
    if let Some(d) = u.param("durability") {
        cfg.durability = d
            .parse()
            .map_err(|e: BrokerError| u.invalid(e.to_string()))?;
    }
    open_with(cfg, u.retry_policy()?, "rocksdb")
}

/// Opens `rocksdb://…` for a process that is its only consumer (`docproc
/// serve` or `docproc worker`: RocksDB lets one process open it): jobs its
/// previous run had leased (it was killed, or lost power) died with it, so
/// they are handed back at once, without spending an attempt, instead of
/// waiting out their leases. `docproc broker` opens with [`open_with`] and
/// keeps its remote consumers' leases.
pub async fn open_owned(u: &QueueUrl) -> Result<RocksDbQueue> {
    let q = open(u)?;
    let n = q.api().broker().release_all_leases().await.map_err(map)?;
    if n > 0 {
        tracing::warn!(
            jobs = n,
            "handed back jobs the previous run was working on when it stopped"
        );
    }
    Ok(q)
}

/// Opens the embedded broker with explicit settings. Needs a tokio runtime
/// (the broker's timer driver runs on it).
pub fn open_with(
    cfg: BrokerConfig,
    retry: RetryPolicy,
    name: &'static str,
) -> Result<RocksDbQueue> {
    let broker = Broker::open(cfg).map_err(map)?;
    Ok(BrokerQueue::new(Embedded::new(broker), retry, name))
}

/// The embedded broker with a close signal for the streams built on it.
#[derive(Debug, Clone)]
pub struct Embedded {
    broker: Broker,
    closed: Arc<watch::Sender<bool>>,
    /// Releases of leases whose consumer went away, still running; closing
    /// waits for them.
    releasing: Arc<watch::Sender<usize>>,
}

/// Longest close waits for leases still being released.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Embedded {
    fn new(broker: Broker) -> Self {
        Self {
            broker,
            closed: Arc::new(watch::channel(false).0),
            releasing: Arc::new(watch::channel(0).0),
        }
    }

    /// The broker, for callers that also serve it over gRPC.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

/// Broker errors in queue terms; a stale lease or wrong state is `LeaseLost`.
fn map(e: BrokerError) -> QueueError {
    match e {
        BrokerError::InvalidArgument(m) => QueueError::InvalidArgument(m),
        BrokerError::TooLarge(m) => QueueError::TooLarge(m),
        BrokerError::NotFound(id) => QueueError::NotFound(JobId(id.to_string())),
        BrokerError::StaleLease(id) | BrokerError::WrongState { id, .. } => {
            QueueError::LeaseLost(JobId(id.to_string()))
        }
        BrokerError::Unavailable(m) => QueueError::Unavailable(m),
        other => QueueError::Backend(other.to_string()),
    }
}

#[async_trait]
impl BrokerApi for Embedded {
    fn sync_latency(&self) -> Option<(Vec<u64>, f64, u64)> {
        Some(self.broker.sync_latency())
    }

    fn storage_failure(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        Some(self.broker.fatal())
    }

    async fn produce(&self, msgs: Vec<pb::NewMessage>) -> Result<Vec<u64>> {
        let out = self.broker.produce(msgs).await.map_err(map)?;
        Ok(out.into_iter().map(|(id, _)| id).collect())
    }

    async fn get(&self, id: u64) -> Result<pb::Message> {
        self.broker.get_settled(id, true).await.map_err(map)
    }

    async fn cancel(&self, id: u64) -> Result<pb::State> {
        self.broker.cancel(id).await.map_err(map)
    }

    async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse> {
        self.broker.list(req).await.map_err(map)
    }

    async fn stats(&self) -> Result<Vec<pb::QueueStats>> {
        self.broker.stats(None).map_err(map)
    }

    async fn ack(&self, _: &Held, id: u64, token: u64, result: Vec<u8>) -> Result<bool> {
        self.broker.ack(id, token, result).await.map_err(map)
    }

    async fn nack(
        &self,
        _: &Held,
        id: u64,
        token: u64,
        error: &str,
        delay_ms: u64,
        dead: bool,
    ) -> Result<pb::State> {
        let r = self
            .broker
            .nack(id, token, error, delay_ms, dead)
            .await
            .map_err(map)?;
        Ok(r.state())
    }

    async fn release(&self, _: &Held, id: u64, token: u64) -> Result<pb::State> {
        let r = self.broker.release(id, token).await.map_err(map)?;
        Ok(r.state())
    }

    async fn extend(
        &self,
        _: &Held,
        id: u64,
        token: u64,
        progress: Option<Vec<u8>>,
    ) -> Result<pb::ExtendResponse> {
        self.broker
            .extend(id, token, 0, progress)
            .await
            .map_err(map)
    }

    async fn deliveries(
        &self,
        queues: Vec<String>,
        worker: String,
        prefetch: usize,
    ) -> Result<Deliveries> {
        let notifies = queues
            .iter()
            .map(|q| self.broker.ready_notify(q))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map)?;
        let pull = Pull {
            broker: self.broker.clone(),
            closed: self.closed.subscribe(),
            releasing: self.releasing.clone(),
            queues,
            notifies,
            worker,
            prefetch,
            next: 0,
            buf: VecDeque::new(),
            inflight: None,
            done: false,
        };
        Ok(futures::stream::unfold(pull, Pull::next).boxed())
    }

    async fn events(
        &self,
        queues: Vec<String>,
        ids: Vec<u64>,
    ) -> Result<BoxStream<'static, Result<pb::Event>>> {
        let w = Watch {
            rx: self.broker.watch(),
            closed: self.closed.subscribe(),
            queues,
            ids,
        };
        Ok(futures::stream::unfold(w, Watch::next).boxed())
    }

    async fn close(&self) {
        self.closed.send_replace(true);
        let mut releasing = self.releasing.subscribe();
        let _ = tokio::time::timeout(RELEASE_WAIT, releasing.wait_for(|n| *n == 0)).await;
        self.broker.close();
    }
}

/// Leases from several queues in turn, waiting on their ready notifications.
struct Pull {
    broker: Broker,
    closed: watch::Receiver<bool>,
    releasing: Arc<watch::Sender<usize>>,
    queues: Vec<String>,
    notifies: Vec<Arc<Notify>>,
    worker: String,
    prefetch: usize,
    /// The queue to try first next time, so types take turns.
    next: usize,
    buf: VecDeque<pb::Delivery>,
    /// A lease call under way. It runs as its own task so that a consumer
    /// dropping this stream mid-call (a worker shutting down) cannot lose
    /// messages the broker already leased: see `Drop`.
    inflight: Option<JoinHandle<Result<Vec<pb::Delivery>, BrokerError>>>,
    done: bool,
}

impl Drop for Pull {
    /// Messages leased for a consumer that went away go back at once,
    /// without counting the delivery as an attempt, instead of waiting out
    /// their lease.
    fn drop(&mut self) {
        let buf: Vec<pb::Delivery> = self.buf.drain(..).collect();
        let inflight = self.inflight.take();
        if buf.is_empty() && inflight.is_none() {
            return;
        }
        let broker = self.broker.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let releasing = self.releasing.clone();
        releasing.send_modify(|n| *n += 1);
        rt.spawn(async move {
            let mut all = buf;
            if let Some(Ok(Ok(got))) = match inflight {
                Some(h) => Some(h.await),
                None => None,
            } {
                all.extend(got);
            }
            for d in all {
                if let Err(e) = broker.release(d.id, d.lease_token).await {
                    tracing::debug!(id = d.id, error = %e, "could not release a lease");
                }
            }
            releasing.send_modify(|n| *n -= 1);
        });
    }
}

impl Pull {
    async fn next(mut self) -> Option<(Result<(pb::Delivery, Held)>, Self)> {
        loop {
            if let Some(d) = self.buf.pop_front() {
                let held: Held = Box::new(());
                return Some((Ok((d, held)), self));
            }
            if self.done || *self.closed.borrow() {
                return None;
            }
            // Listen before looking, so a job that arrives in between wakes us.
            let mut waits: Vec<Pin<Box<tokio::sync::futures::OwnedNotified>>> = self
                .notifies
                .iter()
                .map(|n| Box::pin(n.clone().notified_owned()))
                .collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let n = self.queues.len();
            for i in 0..n {
                let at = (self.next + i) % n;
                let (broker, queue, prefetch, worker) = (
                    self.broker.clone(),
                    self.queues[at].clone(),
                    self.prefetch,
                    self.worker.clone(),
                );
                let call = self.inflight.insert(tokio::spawn(async move {
                    broker.lease(&queue, prefetch, &worker).await
                }));
                let leased = match call.await {
                    Ok(r) => r,
                    Err(e) => Err(BrokerError::Unavailable(format!("lease task: {e}"))),
                };
                self.inflight = None;
                match leased {
                    Ok(got) if got.is_empty() => {}
                    Ok(got) => {
                        self.next = (at + 1) % n;
                        self.buf.extend(got);
                        break;
                    }
                    Err(e) => {
                        // The broker is closed or failed: report once and end.
                        self.done = true;
                        return Some((Err(map(e)), self));
                    }
                }
            }
            if !self.buf.is_empty() {
                continue;
            }
            let mut closed = self.closed.clone();
            tokio::select! {
                _ = futures::future::select_all(waits) => {}
                _ = closed.wait_for(|c| *c) => return None,
            }
        }
    }
}

/// Lifecycle events of the embedded broker, filtered.
struct Watch {
    rx: broadcast::Receiver<pb::Event>,
    closed: watch::Receiver<bool>,
    queues: Vec<String>,
    ids: Vec<u64>,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<pb::Event>, Self)> {
        loop {
            let mut closed = self.closed.clone();
            let got = tokio::select! {
                got = self.rx.recv() => got,
                _ = closed.wait_for(|c| *c) => return None,
            };
            match got {
                Ok(e) => {
                    let wanted = (self.queues.is_empty() || self.queues.contains(&e.queue))
                        && (self.ids.is_empty() || self.ids.contains(&e.id));
                    if wanted {
                        return Some((Ok(e), self));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let lag = pb::Event {
                        lagged: n,
                        ..Default::default()
                    };
                    return Some((Ok(lag), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
