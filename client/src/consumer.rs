//! The consumer stream: credit-based flow control, reconnection, and
//! deliveries that ack, nack and extend their own lease.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use docproc_proto::broker::v1::{self as pb, consume_request::Request as ConsumeKind};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Client;
use crate::error::{Error, Result};

impl Client {
    /// A stream of deliveries from `queue`; see [`ConsumerOptions`].
    pub fn consume(&self, queue: &str, opts: ConsumerOptions) -> Consumer {
        Consumer::new(self.clone(), queue.to_string(), opts)
    }
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Most deliveries held at once (handed out and not yet dropped). Default 32.
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

/// Credit bookkeeping shared by a consumer and its deliveries.
#[derive(Debug)]
struct Credit {
    /// Deliveries handed out and not yet dropped.
    in_flight: AtomicU64,
    grant: mpsc::UnboundedSender<u32>,
}

/// A leased message. Dropping it returns its credit to the consumer; it stays
/// leased until acked, nacked or its lease expires.
#[derive(Debug)]
pub struct Delivery {
    client: Client,
    msg: pb::Delivery,
    credit: Option<Arc<Credit>>,
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
            credit: None,
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
        self.client
            .ack(self.msg.id, self.msg.lease_token, result)
            .await
    }

    /// Fails the message: retried after the queue's backoff (or `retry_after`),
    /// or dead-lettered when `dead_letter` is set or attempts are used up.
    pub async fn nack(
        &self,
        error: &str,
        retry_after: Option<Duration>,
        dead_letter: bool,
    ) -> Result<pb::NackResponse> {
        self.client
            .nack(pb::NackRequest {
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
        self.client
            .nack(pb::NackRequest {
                id: self.msg.id,
                lease_token: self.msg.lease_token,
                release: true,
                ..Default::default()
            })
            .await
    }

    /// Renews the lease by the message's lease timeout, storing `progress` if given.
    pub async fn extend(&self, progress: Option<Vec<u8>>) -> Result<pb::ExtendResponse> {
        self.client
            .extend(self.msg.id, self.msg.lease_token, None, progress)
            .await
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
        if let Some(c) = self.credit.take() {
            c.in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = c.grant.send(1);
        }
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
    let credit = Arc::new(Credit {
        in_flight: AtomicU64::new(0),
        grant,
    });
    let prefetch = u64::from(opts.prefetch.max(1));
    let mut backoff = opts.min_backoff;
    loop {
        // Credit granted on a dropped connection is gone; start again from
        // what is not held by the application.
        while grants.try_recv().is_ok() {}
        let initial = prefetch.saturating_sub(credit.in_flight.load(Ordering::Acquire)) as u32;
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
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(status) => {
                let e = Error::from(status);
                if !e.is_retryable() {
                    let _ = out.send(Err(e)).await;
                    return;
                }
                tracing::debug!(error = %e, ?backoff, "consumer reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = out.closed() => return,
                }
                backoff = (backoff * 2).min(opts.max_backoff);
                continue;
            }
        };
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(d)) => {
                        backoff = opts.min_backoff;
                        credit.in_flight.fetch_add(1, Ordering::AcqRel);
                        let d = Delivery { client: client.clone(), msg: d, credit: Some(credit.clone()) };
                        if out.send(Ok(d)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let e = Error::from(status);
                        if !e.is_retryable() {
                            let _ = out.send(Err(e)).await;
                            return;
                        }
                        break;
                    }
                },
                Some(n) = grants.recv() => {
                    let mut n = n;
                    while let Ok(more) = grants.try_recv() {
                        n += more;
                    }
                    let req = pb::ConsumeRequest { request: Some(ConsumeKind::Credit(n)) };
                    if req_tx.send(req).await.is_err() {
                        break;
                    }
                }
                _ = out.closed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = out.closed() => return,
        }
        backoff = (backoff * 2).min(opts.max_backoff);
    }
}
