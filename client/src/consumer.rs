//! The consumer stream: credit-based flow control, reconnection, and
//! deliveries that ack, nack and extend their own lease (in batches on the
//! consumer's stream, see `settle`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use docproc_proto::broker::v1::{
    self as pb, consume_request::Request as ConsumeKind, settle_op::Op, settle_outcome::Outcome,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::settle::{self, mismatch, Batches, Request, Settler};

impl Client {
    /// A stream of deliveries from `queue`; see [`ConsumerOptions`].
    pub fn consume(&self, queue: &str, opts: ConsumerOptions) -> Consumer {
        Consumer::new(self.clone(), queue.to_string(), opts)
    }
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Most deliveries outstanding at once (handed out and neither acked,
    /// nacked, released nor dropped). Default 32.
    pub prefetch: u32,
    /// Recorded as the worker id of leased messages. Default: empty.
    pub consumer_id: String,
    /// First reconnect delay; doubles up to `max_backoff`. Default 100 ms.
    pub min_backoff: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub max_backoff: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            prefetch: 32,
            consumer_id: String::new(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What a consumer shares with its deliveries: credit bookkeeping and the
/// way to its stream.
#[derive(Debug)]
struct Link {
    /// Deliveries handed out and not yet dropped.
    in_flight: AtomicU64,
    grant: mpsc::UnboundedSender<u32>,
    settler: Settler,
}

/// A leased message. Acking, nacking or releasing it (when the operation is
/// sent, not when it is answered, so the next delivery is leased while the
/// ack is being written) or dropping it returns its credit to the consumer;
/// it stays leased until acked, nacked or its lease expires. A delivery from a
/// [`Consumer`] acks, nacks and extends through the consumer's stream,
/// batched with those of other deliveries; one from a fetch, or whose
/// consumer is gone, through the unary calls.
#[derive(Debug)]
pub struct Delivery {
    client: Client,
    msg: pb::Delivery,
    link: Option<Arc<Link>>,
    /// Its credit went back to the consumer already.
    credit_back: AtomicBool,
}

/// How a [`Delivery::run_with_lease`] ended.
#[derive(Debug)]
pub enum LeaseOutcome<T> {
    /// The work finished; ack or nack the delivery now.
    Done(T),
    /// The message was cancelled; the work was stopped. Ack or nack to release it.
    Cancelled,
    /// The lease was lost (expired and handed to someone else); the work was stopped.
    LeaseLost,
}

impl Delivery {
    pub(crate) fn detached(client: Client, msg: pb::Delivery) -> Self {
        Self {
            client,
            msg,
            link: None,
            credit_back: AtomicBool::new(true),
        }
    }

    /// Returns this delivery's credit to its consumer, once.
    fn give_credit_back(&self) {
        if let Some(link) = &self.link {
            if !self.credit_back.swap(true, Ordering::AcqRel) {
                link.in_flight.fetch_sub(1, Ordering::AcqRel);
                let _ = link.grant.send(1);
            }
        }
    }

    async fn settle(&self, op: Op) -> Result<Outcome> {
        if !matches!(op, Op::Extend(_)) {
            // The work is over: the next delivery may come while this
            // operation is written.
            self.give_credit_back();
        }
        match &self.link {
            Some(link) => link.settler.settle(&self.client, op).await,
            None => settle::unary(&self.client, op).await,
        }
    }

    /// The delivered message.
    pub fn message(&self) -> &pb::Delivery {
        &self.msg
    }
    /// Message id.
    pub fn id(&self) -> u64 {
        self.msg.id
    }
    /// Payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.msg.payload
    }
    /// 1 for the first delivery.
    pub fn attempt(&self) -> u32 {
        self.msg.attempt
    }

    /// Completes the message with a result. `Ok(true)` if it was cancelled meanwhile.
    pub async fn ack(&self, result: Vec<u8>) -> Result<bool> {
        let op = Op::Ack(pb::AckRequest {
            id: self.msg.id,
            lease_token: self.msg.lease_token,
            result,
        });
        match self.settle(op).await? {
            Outcome::Ack(a) => Ok(a.cancelled),
            o => Err(mismatch(&o)),
        }
    }

    /// Fails the message: retried after the queue's backoff (or `retry_after`),
    /// or dead-lettered when `dead_letter` is set or attempts are used up.
    pub async fn nack(
        &self,
        error: &str,
        retry_after: Option<Duration>,
        dead_letter: bool,
    ) -> Result<pb::NackResponse> {
        self.nack_with(pb::NackRequest {
            id: self.msg.id,
            lease_token: self.msg.lease_token,
            error: error.to_string(),
            retry_delay_ms: retry_after.map_or(0, |d| d.as_millis().max(1) as u64),
            dead_letter,
            release: false,
        })
        .await
    }

    /// Hands the message back unworked (this consumer is stopping): ready
    /// again at once, the delivery not counted as an attempt.
    pub async fn release(&self) -> Result<pb::NackResponse> {
        self.nack_with(pb::NackRequest {
            id: self.msg.id,
            lease_token: self.msg.lease_token,
            release: true,
            ..Default::default()
        })
        .await
    }

    async fn nack_with(&self, req: pb::NackRequest) -> Result<pb::NackResponse> {
        match self.settle(Op::Nack(req)).await? {
            Outcome::Nack(n) => Ok(n),
            o => Err(mismatch(&o)),
        }
    }

    /// Renews the lease by the message's lease timeout, storing `progress` if given.
    pub async fn extend(&self, progress: Option<Vec<u8>>) -> Result<pb::ExtendResponse> {
        let op = Op::Extend(pb::ExtendRequest {
            id: self.msg.id,
            lease_token: self.msg.lease_token,
            extend_ms: 0,
            has_progress: progress.is_some(),
            progress: progress.unwrap_or_default(),
        });
        match self.settle(op).await? {
            Outcome::Extend(e) => Ok(e),
            o => Err(mismatch(&o)),
        }
    }

    /// Runs `work` while renewing the lease every third of the lease timeout.
    /// Stops the work early if the message is cancelled or the lease is lost.
    pub async fn run_with_lease<F: Future>(&self, work: F) -> Result<LeaseOutcome<F::Output>> {
        let timeout = self.msg.lease_deadline_ms.saturating_sub(now_ms()).max(300);
        let period = Duration::from_millis((timeout / 3).max(100));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(LeaseOutcome::Done(out)),
                _ = ticker.tick() => match self.extend(None).await {
                    Ok(r) if r.cancelled => return Ok(LeaseOutcome::Cancelled),
                    Ok(_) => {}
                    Err(Error::FailedPrecondition(_)) | Err(Error::NotFound(_)) => return Ok(LeaseOutcome::LeaseLost),
                    // A passing outage: keep working, try again next period.
                    Err(e) if e.is_retryable() => tracing::warn!(id = self.msg.id, error = %e, "lease renewal failed"),
                    Err(e) => return Err(e),
                },
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.give_credit_back();
    }
}

/// A stream of deliveries from one queue. The broker never has more than
/// `prefetch` deliveries out to this consumer at once; the stream reconnects
/// with backoff when the connection drops and ends only when dropped or when
/// the broker rejects the subscription.
pub struct Consumer {
    rx: ReceiverStream<Result<Delivery>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(client: Client, queue: String, opts: ConsumerOptions) -> Self {
        let (tx, rx) = mpsc::channel(opts.prefetch.max(1) as usize);
        tokio::spawn(run(client, queue, opts, tx));
        Self {
            rx: ReceiverStream::new(rx),
        }
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

async fn run(
    client: Client,
    queue: String,
    opts: ConsumerOptions,
    out: mpsc::Sender<Result<Delivery>>,
) {
    let (grant, mut grants) = mpsc::unbounded_channel();
    let (settler, mut ops) = Settler::new();
    let link = Arc::new(Link {
        in_flight: AtomicU64::new(0),
        grant,
        settler,
    });
    // `return` in the block ends the consumer; afterwards, operations still
    // queued, and any sent later, use the unary calls.
    async {
        let prefetch = u64::from(opts.prefetch.max(1));
        let mut backoff = opts.min_backoff;
        loop {
            // Credit granted on a dropped connection is gone; start again from
            // what is not held by the application.
            while grants.try_recv().is_ok() {}
            let initial = prefetch.saturating_sub(link.in_flight.load(Ordering::Acquire)) as u32;
            let (req_tx, req_rx) = mpsc::channel(16);
            let sub = pb::ConsumeRequest {
                request: Some(ConsumeKind::Subscribe(pb::Subscribe {
                    queue: queue.clone(),
                    credit: initial,
                    consumer_id: opts.consumer_id.clone(),
                })),
            };
            let _ = req_tx.send(sub).await;
            let stream = client
                .rpc
                .clone()
                .consume(ReceiverStream::new(req_rx))
                .await;
            let stream = match stream {
                Ok(s) => s.into_inner(),
                Err(status) => {
                    let e = Error::from(status);
                    if !e.is_retryable() {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                    tracing::debug!(error = %e, ?backoff, "consumer reconnecting");
                    if !pause(backoff, &out, &mut ops).await {
                        return;
                    }
                    backoff = (backoff * 2).min(opts.max_backoff);
                    continue;
                }
            };
            let mut conn = Connection {
                client: &client,
                link: &link,
                out: &out,
                req_tx,
                batches: Batches::default(),
            };
            match conn.serve(stream, &mut grants, &mut ops).await {
                Ended::Fatal(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
                Ended::Dropped => return,
                Ended::Broken { delivered } => {
                    if delivered {
                        backoff = opts.min_backoff;
                    }
                }
            }
            settle::refuse_queued(&mut ops);
            if !pause(backoff, &out, &mut ops).await {
                return;
            }
            backoff = (backoff * 2).min(opts.max_backoff);
        }
    }
    .await;
    ops.close();
    settle::refuse_queued(&mut ops);
}

/// Waits `backoff` before reconnecting, sending operations that arrive
/// meanwhile back to be made with the unary calls. `false`: the consumer
/// was dropped.
async fn pause(
    backoff: Duration,
    out: &mpsc::Sender<Result<Delivery>>,
    ops: &mut mpsc::UnboundedReceiver<Request>,
) -> bool {
    let sleep = tokio::time::sleep(backoff);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = out.closed() => return false,
            Some(r) = ops.recv() => settle::refuse(r),
        }
    }
}

/// How a connected stream ended.
enum Ended {
    /// The broker refused the subscription for good.
    Fatal(Error),
    /// The application dropped the consumer.
    Dropped,
    /// The connection broke; reconnect.
    Broken { delivered: bool },
}

/// One connected consume stream.
struct Connection<'a> {
    client: &'a Client,
    link: &'a Arc<Link>,
    out: &'a mpsc::Sender<Result<Delivery>>,
    req_tx: mpsc::Sender<pb::ConsumeRequest>,
    batches: Batches,
}

impl Connection<'_> {
    async fn serve(
        &mut self,
        mut stream: tonic::Streaming<pb::ConsumeResponse>,
        grants: &mut mpsc::UnboundedReceiver<u32>,
        ops: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Ended {
        let mut delivered = false;
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(batch)) => {
                        for s in batch.settled {
                            self.batches.answer(s);
                        }
                        delivered |= !batch.deliveries.is_empty();
                        for d in batch.deliveries {
                            self.link.in_flight.fetch_add(1, Ordering::AcqRel);
                            let d = Delivery {
                                client: self.client.clone(),
                                msg: d,
                                link: Some(self.link.clone()),
                                credit_back: AtomicBool::new(false),
                            };
                            if self.out.send(Ok(d)).await.is_err() {
                                return self.finish(stream).await;
                            }
                        }
                    }
                    Ok(None) => return Ended::Broken { delivered },
                    Err(status) => {
                        let e = Error::from(status);
                        if !e.is_retryable() {
                            return Ended::Fatal(e);
                        }
                        return Ended::Broken { delivered };
                    }
                },
                Some(n) = grants.recv() => {
                    let mut n = n;
                    while let Ok(more) = grants.try_recv() {
                        n = n.saturating_add(more);
                    }
                    let req = pb::ConsumeRequest { request: Some(ConsumeKind::Credit(n)) };
                    if self.req_tx.send(req).await.is_err() {
                        return Ended::Broken { delivered };
                    }
                }
                Some(first) = ops.recv(), if self.batches.may_send() => {
                    let req = self.batches.batch(first, ops);
                    if self.req_tx.send(req).await.is_err() {
                        return Ended::Broken { delivered };
                    }
                }
                _ = self.out.closed() => return self.finish(stream).await,
            }
        }
    }

    /// The application dropped the consumer: no more deliveries are
    /// taken, but the answers of batches already sent are still read so
    /// that their callers learn them.
    async fn finish(&mut self, mut stream: tonic::Streaming<pb::ConsumeResponse>) -> Ended {
        while !self.batches.is_empty() {
            match stream.message().await {
                Ok(Some(batch)) => {
                    for s in batch.settled {
                        self.batches.answer(s);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ended::Dropped
    }
}
