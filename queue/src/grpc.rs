//! `grpc://[KEY@]HOST:PORT`, `grpcs://…` (TLS): a remote `docproc broker` through the client library,
//! so workers can run on other hosts than the broker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use docproc_client::{pb, Client, ConsumerOptions, Error as ClientError};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;

use super::brokered::{BrokerApi, BrokerQueue, Deliveries, Held};
use super::error::{QueueError, Result};
use super::model::JobId;
use super::url::{QueueUrl, COMMON_PARAMS};

/// A remote broker as a [`Queue`](super::Queue).
pub type GrpcQueue = BrokerQueue<Remote>;

/// Connects to `grpc://[KEY@]HOST:PORT` or `grpcs://[KEY@]HOST:PORT[?ca=PATH]`
/// (TLS); fails at once when nothing answers there.
pub async fn connect(u: &QueueUrl) -> Result<GrpcQueue> {
    u.only(&[COMMON_PARAMS[0], COMMON_PARAMS[1], "ca"])?;
    if u.target.is_empty() {
        return Err(u.invalid(format!("{}:// needs HOST:PORT", u.scheme)));
    }
    let ca = u
        .param("ca")
        .map(|p| format!("?ca={p}"))
        .unwrap_or_default();
    let client = Client::connect(&format!("{}://{}{ca}", u.scheme, u.target))
        .await
        .map_err(map(0))?;
    // A missing or wrong API key stops startup instead of every later call.
    if let Err(e @ (ClientError::Unauthenticated(_) | ClientError::PermissionDenied(_))) =
        client.stats(Some("docproc.auth-check")).await
    {
        return Err(u.invalid(format!("the broker refused the connection: {e}")));
    }
    let remote = Remote {
        client,
        closed: Arc::new(watch::channel(false).0),
    };
    Ok(BrokerQueue::new(remote, u.retry_policy()?, "grpc"))
}

/// The broker client with a close signal for the streams built on it.
#[derive(Debug, Clone)]
pub struct Remote {
    client: Client,
    closed: Arc<watch::Sender<bool>>,
}

/// Client errors in queue terms, about message `id` (0: none in particular).
fn map(id: u64) -> impl Fn(ClientError) -> QueueError {
    move |e| {
        let job = || JobId(id.to_string());
        match e {
            ClientError::InvalidUrl { url, reason } => QueueError::InvalidUrl { url, reason },
            ClientError::InvalidArgument(m) => QueueError::InvalidArgument(m),
            ClientError::TooLarge(m) => QueueError::TooLarge(m),
            ClientError::NotFound(_) => QueueError::NotFound(job()),
            ClientError::FailedPrecondition(_) => QueueError::LeaseLost(job()),
            ClientError::Unavailable(m) => QueueError::Unavailable(m),
            other => QueueError::Backend(other.to_string()),
        }
    }
}

impl Remote {
    /// Ends a stream when the queue is closed.
    fn until_closed<T: Send + 'static>(&self, s: BoxStream<'static, T>) -> BoxStream<'static, T> {
        let mut closed = self.closed.subscribe();
        s.take_until(async move {
            let _ = closed.wait_for(|c| *c).await;
        })
        .boxed()
    }
}

#[async_trait]
impl BrokerApi for Remote {
    async fn produce(&self, msgs: Vec<pb::NewMessage>) -> Result<Vec<u64>> {
        let msgs = msgs.into_iter().map(docproc_client::NewMessage).collect();
        self.client.produce(msgs).await.map_err(map(0))
    }

    async fn get(&self, id: u64) -> Result<pb::Message> {
        self.client.get(id, true).await.map_err(map(id))
    }

    async fn cancel(&self, id: u64) -> Result<pb::State> {
        self.client.cancel(id).await.map_err(map(id))
    }

    async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse> {
        self.client.list(req).await.map_err(map(0))
    }

    async fn stats(&self) -> Result<Vec<pb::QueueStats>> {
        self.client.stats(None).await.map_err(map(0))
    }

    async fn ack(&self, held: &Held, id: u64, _: u64, result: Vec<u8>) -> Result<bool> {
        delivery(held)?.ack(result).await.map_err(map(id))
    }

    async fn nack(
        &self,
        held: &Held,
        id: u64,
        _: u64,
        error: &str,
        delay_ms: u64,
        dead: bool,
    ) -> Result<pb::State> {
        let after = (delay_ms > 0).then(|| Duration::from_millis(delay_ms));
        let r = delivery(held)?.nack(error, after, dead).await;
        Ok(r.map_err(map(id))?.state())
    }

    async fn release(&self, held: &Held, id: u64, _: u64) -> Result<pb::State> {
        let r = delivery(held)?.release().await;
        Ok(r.map_err(map(id))?.state())
    }

    async fn extend(
        &self,
        held: &Held,
        id: u64,
        _: u64,
        progress: Option<Vec<u8>>,
    ) -> Result<pb::ExtendResponse> {
        delivery(held)?.extend(progress).await.map_err(map(id))
    }

    async fn deliveries(
        &self,
        queues: Vec<String>,
        worker: String,
        prefetch: usize,
    ) -> Result<Deliveries> {
        let opts = ConsumerOptions {
            prefetch: u32::try_from(prefetch).unwrap_or(u32::MAX),
            consumer_id: worker,
            ..ConsumerOptions::default()
        };
        // One credit-controlled stream per queue; the delivery object is
        // held with the lease so its credit returns only when the job is done.
        let streams = queues.iter().map(|q| {
            self.client.consume(q, opts.clone()).map(|d| {
                let d = d.map_err(map(0))?;
                let msg = d.message().clone();
                let held: Held = Box::new(d);
                Ok((msg, held))
            })
        });
        Ok(self.until_closed(futures::stream::select_all(streams).boxed()))
    }

    async fn events(
        &self,
        queues: Vec<String>,
        ids: Vec<u64>,
    ) -> Result<BoxStream<'static, Result<pb::Event>>> {
        let s = self.client.watch(queues, ids).await.map_err(map(0))?;
        Ok(self.until_closed(s.map(|e| e.map_err(map(0))).boxed()))
    }

    async fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// The consumer's delivery a lease came with (every lease of this adapter
/// comes from [`BrokerApi::deliveries`]): it settles on the consumer's
/// stream, batched with the other workers' operations.
fn delivery(held: &Held) -> Result<&docproc_client::Delivery> {
    held.downcast_ref()
        .ok_or_else(|| QueueError::Backend("a grpc:// lease without its delivery".into()))
}
