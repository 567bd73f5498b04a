//! The connection and every unary broker call.

use std::collections::HashMap;
use std::time::Duration;

use docproc_proto::broker::v1::{self as pb, broker_client::BrokerClient};
use futures::{Stream, StreamExt};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

/// A message to produce, built with chained setters.
#[derive(Debug, Clone, Default)]
pub struct NewMessage(pub pb::NewMessage);

impl NewMessage {
    /// A message for `queue` with priority 0 and the broker's defaults.
    pub fn new(queue: impl Into<String>, payload: Vec<u8>) -> Self {
        Self(pb::NewMessage {
            queue: queue.into(),
            payload,
            ..Default::default()
        })
    }
    /// 0..=255, higher first.
    pub fn priority(mut self, p: u8) -> Self {
        self.0.priority = u32::from(p);
        self
    }
    /// Adds a header.
    pub fn header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.0.headers.insert(k.into(), v.into());
        self
    }
    /// Replaces all headers.
    pub fn headers(mut self, h: HashMap<String, String>) -> Self {
        self.0.headers = h;
        self
    }
    /// Deliveries before the message is dead-lettered.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.0.max_attempts = n;
        self
    }
    /// How long a consumer holds the message before it is redelivered.
    pub fn lease_timeout(mut self, d: Duration) -> Self {
        self.0.lease_timeout_ms = d.as_millis() as u64;
        self
    }
    /// Not delivered before this Unix time in milliseconds.
    pub fn not_before_ms(mut self, t: u64) -> Self {
        self.0.not_before_ms = t;
        self
    }
    /// Duplicate produces with this key within the queue's window return the first id.
    pub fn dedup_key(mut self, k: impl Into<String>) -> Self {
        self.0.dedup_key = k.into();
        self
    }
}

impl From<pb::NewMessage> for NewMessage {
    fn from(m: pb::NewMessage) -> Self {
        Self(m)
    }
}

/// A handle to a broker. Cheap to clone; clones share one HTTP/2 connection,
/// which is re-established on demand after a failure.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) rpc: BrokerClient<InterceptedService<Channel, Auth>>,
}

/// Adds `authorization: Bearer KEY` to every call when a key is set.
#[derive(Debug, Clone)]
pub(crate) struct Auth(Option<AsciiMetadataValue>);

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Largest message the client sends or accepts.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A broker address: `grpc://[KEY@]HOST:PORT` (plaintext) or
/// `grpcs://[KEY@]HOST:PORT[?ca=PATH]` (TLS, the server's certificate
/// checked against the CA file, or the system's roots without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `HOST:PORT`.
    pub authority: String,
    /// TLS.
    pub tls: bool,
    /// API key presented on every call.
    pub api_key: Option<String>,
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: Option<String>,
}

impl BrokerUrl {
    /// Parses a broker URL.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: redact(url),
            reason: reason.to_string(),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("grpcs://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("grpc://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("expected grpc://HOST:PORT or grpcs://HOST:PORT"));
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let rest = rest.trim_end_matches('/');
        let (api_key, authority) = match rest.rsplit_once('@') {
            Some((k, a)) if !k.is_empty() => (Some(k.to_string()), a),
            Some((_, a)) => (None, a),
            None => (None, rest),
        };
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected HOST:PORT"));
        }
        let mut ca_file = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ca", v)) if tls && !v.is_empty() => ca_file = Some(v.to_string()),
                Some(("ca", _)) => return Err(bad("ca=PATH needs grpcs://")),
                _ => return Err(bad(&format!("unknown parameter {pair:?}"))),
            }
        }
        Ok(Self {
            authority: authority.to_string(),
            tls,
            api_key,
            ca_file,
        })
    }
}

/// The URL with any API key replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

fn endpoint(url: &BrokerUrl) -> Result<Endpoint> {
    let bad = |reason: String| Error::InvalidUrl {
        url: url.authority.clone(),
        reason,
    };
    let scheme = if url.tls { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{}", url.authority))
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if url.tls {
        let mut tls = ClientTlsConfig::new();
        match &url.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| bad(format!("cannot read the CA file {path}: {e}")))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_native_roots(),
        }
        ep = ep.tls_config(tls).map_err(|e| bad(format!("TLS: {e}")))?;
    }
    Ok(ep)
}

fn auth(url: &BrokerUrl) -> Result<Auth> {
    match &url.api_key {
        None => Ok(Auth(None)),
        Some(k) => format!("Bearer {k}")
            .parse::<AsciiMetadataValue>()
            .map(|v| Auth(Some(v)))
            .map_err(|_| Error::InvalidUrl {
                url: url.authority.clone(),
                reason: "the API key has characters a header cannot carry".into(),
            }),
    }
}

impl Client {
    /// Connects to a broker URL (see [`BrokerUrl`]) and fails if the broker
    /// is not reachable.
    pub async fn connect(url: &str) -> Result<Self> {
        let url = BrokerUrl::parse(url)?;
        let channel = endpoint(&url)?.connect().await?;
        Ok(Self::from_channel(channel, auth(&url)?))
    }

    /// A client that connects on first use (and reconnects after failures).
    pub fn connect_lazy(url: &str) -> Result<Self> {
        let url = BrokerUrl::parse(url)?;
        Ok(Self::from_channel(
            endpoint(&url)?.connect_lazy(),
            auth(&url)?,
        ))
    }

    fn from_channel(channel: Channel, auth: Auth) -> Self {
        Self {
            rpc: BrokerClient::with_interceptor(channel, auth)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }

    /// Produces a batch; returns one id per message once the batch is durable.
    pub async fn produce(&self, msgs: Vec<NewMessage>) -> Result<Vec<u64>> {
        Ok(self.produce_detailed(msgs).await?.ids)
    }

    /// Like [`Client::produce`], also telling which messages were duplicates.
    pub async fn produce_detailed(&self, msgs: Vec<NewMessage>) -> Result<pb::ProduceResponse> {
        let req = pb::ProduceRequest {
            messages: msgs.into_iter().map(|m| m.0).collect(),
        };
        Ok(self.rpc.clone().produce(req).await?.into_inner())
    }

    /// Leases up to `max` messages, waiting up to `wait` for the first.
    pub async fn fetch(
        &self,
        queue: &str,
        max: u32,
        wait: Duration,
        consumer_id: &str,
    ) -> Result<Vec<crate::Delivery>> {
        let req = pb::FetchRequest {
            queue: queue.to_string(),
            max,
            wait_ms: wait.as_millis() as u64,
            consumer_id: consumer_id.to_string(),
        };
        let out = self.rpc.clone().fetch(req).await?.into_inner();
        Ok(out
            .deliveries
            .into_iter()
            .map(|d| crate::Delivery::detached(self.clone(), d))
            .collect())
    }

    /// Completes a leased message. `Ok(true)`: it had been cancelled and ends cancelled.
    pub async fn ack(&self, id: u64, lease_token: u64, result: Vec<u8>) -> Result<bool> {
        let req = pb::AckRequest {
            id,
            lease_token,
            result,
        };
        Ok(self.rpc.clone().ack(req).await?.into_inner().cancelled)
    }

    /// Fails a leased message; see [`pb::NackRequest`].
    pub async fn nack(&self, req: pb::NackRequest) -> Result<pb::NackResponse> {
        Ok(self.rpc.clone().nack(req).await?.into_inner())
    }

    /// Renews a lease, optionally storing progress.
    pub async fn extend(
        &self,
        id: u64,
        lease_token: u64,
        extend: Option<Duration>,
        progress: Option<Vec<u8>>,
    ) -> Result<pb::ExtendResponse> {
        let req = pb::ExtendRequest {
            id,
            lease_token,
            extend_ms: extend.map_or(0, |d| d.as_millis() as u64),
            has_progress: progress.is_some(),
            progress: progress.unwrap_or_default(),
        };
        Ok(self.rpc.clone().extend(req).await?.into_inner())
    }

    /// Cancels a message; returns `Cancelled`, or `Leased` when its consumer will be told.
    pub async fn cancel(&self, id: u64) -> Result<pb::State> {
        let s = self
            .rpc
            .clone()
            .cancel(pb::CancelRequest { id })
            .await?
            .into_inner()
            .state;
        Ok(pb::State::try_from(s).unwrap_or(pb::State::Unspecified))
    }

    /// The full record of a message.
    pub async fn get(&self, id: u64, with_payload: bool) -> Result<pb::Message> {
        let out = self
            .rpc
            .clone()
            .get(pb::GetRequest { id, with_payload })
            .await?
            .into_inner();
        out.message
            .ok_or_else(|| Error::NotFound(format!("message {id}")))
    }

    /// Lifecycle events from now on for the given queues and ids (empty: all).
    /// The stream ends if the connection drops; events in between are not replayed.
    pub async fn watch(
        &self,
        queues: Vec<String>,
        ids: Vec<u64>,
    ) -> Result<impl Stream<Item = Result<pb::Event>> + use<>> {
        let s = self
            .rpc
            .clone()
            .watch(pb::WatchRequest { queues, ids })
            .await?
            .into_inner();
        Ok(s.map(|r| r.map_err(Error::from)))
    }

    /// Stats of one queue (`Some`) or all.
    pub async fn stats(&self, queue: Option<&str>) -> Result<Vec<pb::QueueStats>> {
        let req = pb::StatsRequest {
            queue: queue.unwrap_or_default().to_string(),
        };
        Ok(self.rpc.clone().stats(req).await?.into_inner().queues)
    }

    /// A page of messages, newest first (see [`pb::ListRequest`] for the filters).
    pub async fn list(&self, req: pb::ListRequest) -> Result<pb::ListResponse> {
        Ok(self.rpc.clone().list(req).await?.into_inner())
    }

    /// Sets a queue's fair share, backoff, lease and dedup settings.
    pub async fn configure_queue(
        &self,
        queue: &str,
        config: pb::QueueConfig,
    ) -> Result<pb::QueueConfig> {
        let req = pb::ConfigureQueueRequest {
            queue: queue.to_string(),
            config: Some(config),
        };
        Ok(self
            .rpc
            .clone()
            .configure_queue(req)
            .await?
            .into_inner()
            .config
            .unwrap_or_default())
    }

    /// A page of dead letters after `after_id`.
    pub async fn list_dead(
        &self,
        queue: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<pb::Message>> {
        let req = pb::ListDeadRequest {
            queue: queue.to_string(),
            after_id,
            limit,
        };
        Ok(self.rpc.clone().list_dead(req).await?.into_inner().messages)
    }

    /// Requeues the named dead letters, or all of the queue's with `all`.
    pub async fn requeue_dead(&self, queue: &str, ids: Vec<u64>, all: bool) -> Result<u64> {
        let req = pb::RequeueDeadRequest {
            queue: queue.to_string(),
            ids,
            all,
        };
        Ok(self
            .rpc
            .clone()
            .requeue_dead(req)
            .await?
            .into_inner()
            .requeued)
    }

    /// Deletes the named dead letters, or all of the queue's with `all`.
    pub async fn purge_dead(&self, queue: &str, ids: Vec<u64>, all: bool) -> Result<u64> {
        let req = pb::PurgeDeadRequest {
            queue: queue.to_string(),
            ids,
            all,
        };
        Ok(self.rpc.clone().purge_dead(req).await?.into_inner().purged)
    }
}
