//! The gRPC service: a thin shell that validates requests and calls the engine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use docproc_proto::broker::v1::{
    self as pb, broker_server::BrokerServer, consume_request::Request as ConsumeKind,
};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Keys, Scope};
use crate::conn::{mark_seen, ConnLimits, Gate, Guarded};
use crate::engine::{Broker, MAX_LEASE_BATCH};

/// Deliveries leased per engine call on a consume stream.
const CONSUME_STEP: u64 = 256;

/// Implements `docproc.broker.v1.Broker` over an engine.
#[derive(Debug, Clone)]
pub struct BrokerService {
    broker: Broker,
    /// API keys callers must present; empty: no authentication.
    keys: Keys,
    /// Set when the server drains: open consume and watch streams and
    /// waiting fetches end so that graceful shutdown can complete.
    draining: Arc<watch::Sender<bool>>,
}

impl BrokerService {
    /// A service over `broker`.
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            keys: Keys::default(),
            draining: Arc::new(watch::channel(false).0),
        }
    }

    /// Callers must present one of `keys` (metadata `authorization: Bearer
    /// KEY`) with a scope wide enough for the call.
    pub fn with_keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    fn allow<T>(&self, req: &Request<T>, need: Scope) -> Result<(), Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.keys.authorize(header, need) {
            Ok(_) => Ok(()),
            Err(d) if d.is_forbidden() => Err(Status::permission_denied(d.to_string())),
            Err(d) => Err(Status::unauthenticated(d.to_string())),
        }
    }

    /// Ends every open stream and waiting fetch; new ones end at once.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.draining.subscribe();
        async move {
            let _ = rx.wait_for(|d| *d).await;
        }
    }

    /// The tonic server for this service with the broker's size limits.
    pub fn into_server(self) -> BrokerServer<Self> {
        let limit = self.broker.config().max_request_bytes;
        let encode = limit.max(self.broker.config().max_message_bytes * 2);
        BrokerServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(encode)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::broker_server::Broker for BrokerService {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        self.allow(&req, Scope::Worker)?;
        let out = self.broker.produce(req.into_inner().messages).await?;
        Ok(Response::new(pb::ProduceResponse {
            ids: out.iter().map(|p| p.0).collect(),
            duplicate: out.iter().map(|p| p.1).collect(),
        }))
    }

    type ConsumeStream = BoxStream<pb::ConsumeResponse>;

    async fn consume(
        &self,
        req: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        self.allow(&req, Scope::Worker)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("consume stream closed before subscribe"))?;
        let Some(ConsumeKind::Subscribe(sub)) = first.request else {
            return Err(Status::invalid_argument(
                "the first consume message must be a subscribe",
            ));
        };
        // Validates the queue name before the stream starts.
        self.broker.ready_notify(&sub.queue)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(consume_loop(
            self.broker.clone(),
            sub,
            inbound,
            tx,
            self.drained(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        self.allow(&req, Scope::Worker)?;
        let r = req.into_inner();
        let max = (r.max as usize).clamp(1, MAX_LEASE_BATCH);
        let fetch = self.broker.fetch(
            &r.queue,
            max,
            &r.consumer_id,
            Duration::from_millis(r.wait_ms),
        );
        let deliveries = tokio::select! {
            got = fetch => got?,
            _ = self.drained() => Vec::new(),
        };
        Ok(Response::new(pb::FetchResponse { deliveries }))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        self.allow(&req, Scope::Worker)?;
        let r = req.into_inner();
        let cancelled = self.broker.ack(r.id, r.lease_token, r.result).await?;
        Ok(Response::new(pb::AckResponse { cancelled }))
    }

    async fn nack(
        &self,
        req: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        self.allow(&req, Scope::Worker)?;
        let r = req.into_inner();
        let out = if r.release {
            self.broker.release(r.id, r.lease_token).await?
        } else {
            self.broker
                .nack(
                    r.id,
                    r.lease_token,
                    &r.error,
                    r.retry_delay_ms,
                    r.dead_letter,
                )
                .await?
        };
        Ok(Response::new(out))
    }

    async fn extend(
        &self,
        req: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        self.allow(&req, Scope::Worker)?;
        let r = req.into_inner();
        let progress = r.has_progress.then_some(r.progress);
        Ok(Response::new(
            self.broker
                .extend(r.id, r.lease_token, r.extend_ms, progress)
                .await?,
        ))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        self.allow(&req, Scope::Write)?;
        let state = self.broker.cancel(req.into_inner().id).await?;
        Ok(Response::new(pb::CancelResponse {
            state: state as i32,
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.allow(&req, Scope::Read)?;
        let r = req.into_inner();
        let message = self.broker.get_settled(r.id, r.with_payload).await?;
        Ok(Response::new(pb::GetResponse {
            message: Some(message),
        }))
    }

    type WatchStream = BoxStream<pb::Event>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.allow(&req, Scope::Read)?;
        let r = req.into_inner();
        for q in &r.queues {
            crate::keys::validate_queue(q)?;
        }
        let rx = self.broker.watch();
        let (tx, out) = mpsc::channel(1024);
        tokio::spawn(watch_loop(rx, r, tx, self.drained()));
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.allow(&req, Scope::Read)?;
        let r = req.into_inner();
        let queue = (!r.queue.is_empty()).then_some(r.queue.as_str());
        Ok(Response::new(pb::StatsResponse {
            queues: self.broker.stats(queue)?,
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.allow(&req, Scope::Read)?;
        Ok(Response::new(self.broker.list(req.into_inner()).await?))
    }

    async fn configure_queue(
        &self,
        req: Request<pb::ConfigureQueueRequest>,
    ) -> Result<Response<pb::ConfigureQueueResponse>, Status> {
        self.allow(&req, Scope::Admin)?;
        let r = req.into_inner();
        let config = self
            .broker
            .configure_queue(&r.queue, r.config.unwrap_or_default())
            .await?;
        Ok(Response::new(pb::ConfigureQueueResponse {
            config: Some(config),
        }))
    }

    async fn list_dead(
        &self,
        req: Request<pb::ListDeadRequest>,
    ) -> Result<Response<pb::ListDeadResponse>, Status> {
        self.allow(&req, Scope::Read)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let messages = self.broker.list_dead(&r.queue, r.after_id, limit)?;
        Ok(Response::new(pb::ListDeadResponse { messages }))
    }

    async fn requeue_dead(
        &self,
        req: Request<pb::RequeueDeadRequest>,
    ) -> Result<Response<pb::RequeueDeadResponse>, Status> {
        self.allow(&req, Scope::Write)?;
        let r = req.into_inner();
        let requeued = self.broker.requeue_dead(&r.queue, r.ids, r.all).await?;
        Ok(Response::new(pb::RequeueDeadResponse { requeued }))
    }

    async fn purge_dead(
        &self,
        req: Request<pb::PurgeDeadRequest>,
    ) -> Result<Response<pb::PurgeDeadResponse>, Status> {
        self.allow(&req, Scope::Admin)?;
        let r = req.into_inner();
        let purged = self.broker.purge_dead(&r.queue, r.ids, r.all).await?;
        Ok(Response::new(pb::PurgeDeadResponse { purged }))
    }
}

/// Settle batches of one stream applied and waiting for durability; beyond
/// this the stream stops reading until answers go out (back-pressure).
const MAX_SETTLING: usize = 64;

type Settling = FuturesOrdered<Pin<Box<dyn Future<Output = pb::Settled> + Send>>>;

/// Pushes leased deliveries in batches while the client has credit, applies
/// the settle batches it sends and answers each once durable; waits on the
/// queue's ready notification (never polls) when nothing is ready.
async fn consume_loop(
    broker: Broker,
    sub: pb::Subscribe,
    mut inbound: Streaming<pb::ConsumeRequest>,
    tx: mpsc::Sender<Result<pb::ConsumeResponse, Status>>,
    drained: impl Future<Output = ()>,
) {
    let Ok(notify) = broker.ready_notify(&sub.queue) else {
        return;
    };
    tokio::pin!(drained);
    let mut credit = u64::from(sub.credit);
    let mut settling = Settling::new();
    loop {
        // Take every request already received before leasing, so that
        // many small grants become one lease (one commit) instead of many.
        while settling.len() < MAX_SETTLING {
            let Some(msg) = inbound.message().now_or_never() else {
                break;
            };
            if let Err(stop) = take(&broker, msg, &mut credit, &mut settling) {
                return stop.send(&tx, settling).await;
            }
        }
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if credit > 0 {
            let n = credit.min(CONSUME_STEP) as usize;
            match broker.lease(&sub.queue, n, &sub.consumer_id).await {
                Ok(deliveries) if !deliveries.is_empty() => {
                    credit -= deliveries.len() as u64;
                    let settled = answered(&mut settling);
                    let batch = pb::ConsumeResponse {
                        deliveries,
                        settled,
                    };
                    if tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
        tokio::select! {
            _ = &mut notified, if credit > 0 => {}
            msg = inbound.message(), if settling.len() < MAX_SETTLING => {
                if let Err(stop) = take(&broker, msg, &mut credit, &mut settling) {
                    return stop.send(&tx, settling).await;
                }
            }
            Some(first) = settling.next(), if !settling.is_empty() => {
                let mut settled = vec![first];
                settled.extend(answered(&mut settling));
                let batch = pb::ConsumeResponse { deliveries: Vec::new(), settled };
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = &mut drained => {
                return Stop::Draining.send(&tx, settling).await;
            }
        }
    }
}

/// The answers of settle batches that are durable by now, in order.
fn answered(settling: &mut Settling) -> Vec<pb::Settled> {
    let mut out = Vec::new();
    while let Some(Some(s)) = settling.next().now_or_never() {
        out.push(s);
    }
    out
}

/// Why a consume stream ends.
enum Stop {
    /// The client closed its side or the connection broke.
    Closed,
    /// The client sent a second subscribe or an empty request.
    Invalid,
    /// A settle batch was refused whole (too many operations).
    Refused(Status),
    /// The server is shutting down.
    Draining,
}

impl Stop {
    /// Answers the settle batches already applied (a client that closed
    /// its side still reads them), then the reason, if any, and ends.
    async fn send(
        self,
        tx: &mpsc::Sender<Result<pb::ConsumeResponse, Status>>,
        mut settling: Settling,
    ) {
        while let Some(s) = settling.next().await {
            let batch = pb::ConsumeResponse {
                deliveries: Vec::new(),
                settled: vec![s],
            };
            if tx.send(Ok(batch)).await.is_err() {
                return;
            }
        }
        let status = match self {
            Stop::Closed => return,
            Stop::Invalid => Status::invalid_argument(
                "after subscribe a consume stream takes only credit and settle batches",
            ),
            Stop::Refused(status) => status,
            Stop::Draining => Status::unavailable("broker is shutting down"),
        };
        let _ = tx.send(Err(status)).await;
    }
}

/// Applies one message received after subscribe: a credit grant, a settle
/// batch (applied now, answered once durable), or the end.
fn take(
    broker: &Broker,
    msg: Result<Option<pb::ConsumeRequest>, Status>,
    credit: &mut u64,
    settling: &mut Settling,
) -> Result<(), Stop> {
    match msg {
        Ok(Some(pb::ConsumeRequest {
            request: Some(ConsumeKind::Credit(n)),
        })) => {
            *credit = credit.saturating_add(u64::from(n));
            Ok(())
        }
        Ok(Some(pb::ConsumeRequest {
            request: Some(ConsumeKind::Settle(batch)),
        })) => {
            let seq = batch.seq;
            let outcomes = broker
                .settle(batch.ops)
                .map_err(|e| Stop::Refused(e.into()))?;
            settling.push_back(Box::pin(async move {
                pb::Settled {
                    seq,
                    outcomes: outcomes.await,
                }
            }));
            Ok(())
        }
        Ok(Some(_)) => Err(Stop::Invalid),
        Ok(None) | Err(_) => Err(Stop::Closed),
    }
}

async fn watch_loop(
    mut rx: broadcast::Receiver<pb::Event>,
    filter: pb::WatchRequest,
    tx: mpsc::Sender<Result<pb::Event, Status>>,
    drained: impl Future<Output = ()>,
) {
    tokio::pin!(drained);
    let ids: std::collections::HashSet<u64> = filter.ids.into_iter().collect();
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tx.closed() => return,
            _ = &mut drained => {
                let _ = tx.send(Err(Status::unavailable("broker is shutting down"))).await;
                return;
            }
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => pb::Event {
                lagged: n,
                ..Default::default()
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let wanted = ev.lagged > 0
            || ((filter.queues.is_empty() || filter.queues.contains(&ev.queue))
                && (ids.is_empty() || ids.contains(&ev.id)));
        if wanted && tx.send(Ok(ev)).await.is_err() {
            return;
        }
    }
}

/// Accepted connections with Nagle's algorithm off (small responses, acks
/// and produce answers, must not wait for the peer's delayed ACK), admitted
/// at the gate: beyond its cap a connection is closed at once (the client
/// sees `UNAVAILABLE` and retries).
fn incoming(
    listener: TcpListener,
    gate: Arc<Gate>,
) -> impl Stream<Item = std::io::Result<Guarded<tokio::net::TcpStream>>> {
    TcpListenerStream::new(listener).filter_map(move |conn| {
        let admitted = match conn {
            Err(e) => Some(Err(e)),
            Ok(conn) => {
                let _ = conn.set_nodelay(true);
                match gate.admit(conn) {
                    Ok(g) => Some(Ok(g)),
                    Err(refused) => {
                        tracing::warn!(
                            peer = ?refused.peer_addr().ok(),
                            max = gate.limits().max_connections,
                            "gRPC connection refused: too many open"
                        );
                        None
                    }
                }
            }
        };
        std::future::ready(admitted)
    })
}

/// How [`serve_with`] serves: API keys, TLS, and the limits that keep
/// silent, slow or greedy clients from holding the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Keys callers must present; empty: no authentication.
    pub keys: Keys,
    /// PEM certificate chain and private key; `None`: plaintext.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Connections open at once, and the deadline of a new connection's
    /// first call (the TLS handshake included).
    pub limits: ConnLimits,
    /// Calls in flight on one HTTP/2 connection (streams included).
    pub max_streams: u32,
    /// Connections older than this are asked to reconnect (GOAWAY), so
    /// clients spread over new brokers; `None`: they may stay.
    pub max_connection_age: Option<Duration>,
    /// On shutdown, how long calls in flight may take to finish before
    /// their connections are dropped.
    pub drain: Duration,
}

impl Default for ServeOptions {
    /// No keys, plaintext, [`ConnLimits::default`], 256 calls per
    /// connection, no age limit, 10 s to drain.
    fn default() -> Self {
        Self {
            keys: Keys::default(),
            tls: None,
            limits: ConnLimits::default(),
            max_streams: 256,
            max_connection_age: None,
            drain: Duration::from_secs(10),
        }
    }
}

/// Pings sent on a quiet HTTP/2 connection; a peer that does not answer
/// one within [`KEEPALIVE_TIMEOUT`] is disconnected.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest header block a call may send.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Serves the broker, gRPC health and reflection on `listener` until
/// `shutdown` resolves; then ends open streams (clients see `UNAVAILABLE` and
/// reconnect) and finishes in-flight calls. Closing the broker is left to
/// the caller, after this returns.
pub async fn serve(
    broker: Broker,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), crate::Error> {
    serve_with(broker, listener, ServeOptions::default(), shutdown).await
}

/// [`serve`] with API keys and TLS. gRPC health answers without a key (for
/// load balancers and orchestrators); every broker call needs one when keys
/// are configured.
pub async fn serve_with(
    broker: Broker,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), crate::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<BrokerServer<BrokerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(docproc_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| crate::Error::Unavailable(format!("reflection: {e}")))?;
    let service = BrokerService::new(broker).with_keys(options.keys);
    let drain = service.clone();
    let (draining_tx, draining) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        health
            .set_not_serving::<BrokerServer<BrokerService>>()
            .await;
        drain.drain();
        let _ = draining_tx.send(());
    };
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(options.max_streams)
        .http2_keepalive_interval(Some(KEEPALIVE_EVERY))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(MAX_HEADER_LIST);
    if let Some(age) = options.max_connection_age {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(options.drain);
    }
    if let Some((cert, key)) = options.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(identity)
                    .timeout(options.limits.first_request),
            )
            .map_err(|e| crate::Error::Unavailable(format!("TLS: {e}")))?;
    }
    let gate = Arc::new(Gate::new(options.limits));
    let served = builder
        .layer(tonic::service::InterceptorLayer::new(mark_seen))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming(listener, gate), shutdown);
    // tonic waits for every connection to close after the signal; a client
    // that keeps a call open must not hold the shutdown past the drain.
    let grace = options.drain;
    let overdue = async move {
        if draining.await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = served => r.map_err(|e| crate::Error::Unavailable(format!("gRPC server: {e}"))),
        _ = overdue => {
            tracing::warn!(?grace, "gRPC calls still open after the drain; closing them");
            Ok(())
        }
    }
}
