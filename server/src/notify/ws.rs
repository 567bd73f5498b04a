//! `GET /api/ws`: status subscriptions over WebSocket. One task per
//! connection reads the client's commands and writes the frames the hub
//! pushes; the protocol is in the README ("WebSocket").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::hub::{record_event, status_frame, Hub, Push, Resume, Routed, Subscription};
use crate::http::split_names;
use crate::queue::{JobId, JobStatus, QueueError};

/// WebSocket settings (part of [`NotifyConfig`](super::NotifyConfig)).
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How often the server pings.
    pub ping_every: Duration,
    /// A connection silent this long (no pong, no message) is closed.
    pub idle_timeout: Duration,
    /// A frame the client does not take within this is the end of it.
    pub send_timeout: Duration,
    /// Job ids, correlation ids and `all` one connection may follow.
    pub max_subscriptions: usize,
    /// Largest client message, bytes.
    pub max_message: usize,
}

impl Default for WsConfig {
    /// Ping every 20 s, close after 60 s of silence, 10 s to take a frame,
    /// 1,000 subscriptions per connection, 64 KiB messages.
    fn default() -> Self {
        Self {
            ping_every: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            max_subscriptions: 1000,
            max_message: 64 * 1024,
        }
    }
}

/// Close code for a client that fell too far behind (RFC 6455: policy).
pub const CLOSE_TOO_SLOW: u16 = 1008;
/// Close code when the server shuts down (RFC 6455: going away).
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// What the handler needs from the app.
#[derive(Clone)]
pub struct WsState {
    /// The hub.
    pub hub: Hub,
    /// Settings.
    pub cfg: Arc<WsConfig>,
    /// Turns true when the server starts shutting down.
    pub closing: watch::Receiver<bool>,
}

/// A subscribe or unsubscribe, in a message or in the query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeArgs {
    #[serde(default)]
    job_ids: Vec<String>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    correlation_ids: Vec<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    last_event_id: Option<u64>,
}

/// The connect URL's query: the same fields as a subscribe message, ids
/// comma-separated.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConnectQuery {
    /// Job ids to follow, comma-separated.
    job_id: Option<String>,
    /// Correlation ids to follow, comma-separated.
    correlation_id: Option<String>,
    /// Follow every job.
    all: Option<bool>,
    /// Replay the matching events after this one (a reconnect).
    last_event_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Command {
    Subscribe(SubscribeArgs),
    Unsubscribe(SubscribeArgs),
    Ping,
}

/// Initial read buffer of a connection (client messages are small).
const READ_BUFFER: usize = 4096;

/// Longest job or correlation id accepted.
const MAX_ID: usize = 128;

impl SubscribeArgs {
    fn into_subscription(self) -> Result<(Subscription, Option<u64>), String> {
        let mut job_ids = self.job_ids;
        job_ids.extend(self.job_id);
        let mut corr = self.correlation_ids;
        corr.extend(self.correlation_id);
        if job_ids.is_empty() && corr.is_empty() && !self.all {
            return Err("name job_ids, correlation_ids or all".into());
        }
        for id in job_ids.iter().chain(&corr) {
            if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
                return Err(format!(
                    "ids are 1 to {MAX_ID} printable characters; got {id:?}"
                ));
            }
        }
        job_ids.sort();
        job_ids.dedup();
        corr.sort();
        corr.dedup();
        Ok((
            Subscription {
                job_ids: job_ids.into_iter().map(JobId).collect(),
                correlation_ids: corr,
                all: self.all,
            },
            self.last_event_id,
        ))
    }
}

/// The upgrade handler.
/// WebSocket status subscriptions: `subscribe`/`unsubscribe`/`ping`
/// messages in, `status`/`snapshot`/`subscribed`/`resync`/`error`/`pong`
/// frames out (README "WebSocket"). The subscription can also be given here.
#[utoipa::path(get, path = "/api/ws", tag = "jobs", params(ConnectQuery),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, body = crate::http::ErrorBody)))]
pub async fn handler(
    State(st): State<WsState>,
    caller: Option<axum::Extension<crate::http::guard::Caller>>,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Response {
    let initial = match query {
        Ok(Query(q)) if q.job_id.is_some() || q.correlation_id.is_some() || q.all == Some(true) => {
            Some(Ok(SubscribeArgs {
                job_ids: split_names(q.job_id.as_deref()),
                correlation_ids: split_names(q.correlation_id.as_deref()),
                all: q.all.unwrap_or(false),
                last_event_id: q.last_event_id,
                ..SubscribeArgs::default()
            }))
        }
        Ok(_) => None,
        Err(e) => Some(Err(e.body_text())),
    };
    let max = st.cfg.max_message;
    // Small buffers: tungstenite's default 128 KiB read buffer per
    // connection would be 1.3 GiB at 10,000 subscribers.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            let mut conn = Conn::new(st, socket);
            conn.tenant = caller.and_then(|c| c.0.tenant());
            conn.run(initial).await;
        })
}

/// Where a job's snapshot left it: events not newer are already in it.
#[derive(Debug, Clone, Copy)]
struct Floor {
    status: JobStatus,
    attempts: u32,
    at_ms: u64,
}

fn rank(s: JobStatus) -> u8 {
    match s {
        JobStatus::Pending => 0,
        JobStatus::Queued => 1,
        JobStatus::Processing => 2,
        JobStatus::Retrying => 3,
        JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled => 4,
    }
}

impl Floor {
    fn passed_by(&self, r: &Routed) -> bool {
        (r.attempts, r.at_ms, rank(r.status)) > (self.attempts, self.at_ms, rank(self.status))
    }
}

struct Conn {
    st: WsState,
    socket: WebSocket,
    floors: HashMap<JobId, Floor>,
    last_heard: Instant,
    /// A `write` key's name: only its own jobs are shown.
    tenant: Option<String>,
}

enum End {
    Close(u16, &'static str),
    Gone,
}

impl Conn {
    fn new(st: WsState, socket: WebSocket) -> Self {
        Self {
            st,
            socket,
            floors: HashMap::new(),
            last_heard: Instant::now(),
            tenant: None,
        }
    }

    async fn run(&mut self, initial: Option<Result<SubscribeArgs, String>>) {
        let hub = self.st.hub.clone();
        let mut reg = hub.connect();
        let mut closing = self.st.closing.clone();
        let end = self.serve(&mut reg, initial, &mut closing).await;
        hub.disconnect(reg.id);
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.socket.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    async fn serve(
        &mut self,
        reg: &mut super::hub::Registration,
        initial: Option<Result<SubscribeArgs, String>>,
        closing: &mut watch::Receiver<bool>,
    ) -> End {
        match initial {
            Some(Ok(args)) => {
                if let Err(e) = self.subscribe(reg.id, args).await {
                    return e;
                }
            }
            Some(Err(msg)) => {
                if let Err(e) = self.error("invalid_argument", &msg).await {
                    return e;
                }
            }
            None => {}
        }
        let cfg = self.st.cfg.clone();
        let mut ping = tokio::time::interval(cfg.ping_every);
        ping.tick().await;
        loop {
            let step = tokio::select! {
                biased;
                _ = reg.kicked.notified() => return End::Close(CLOSE_TOO_SLOW, "too slow: the client fell too far behind its events"),
                _ = async { closing.wait_for(|c| *c).await.is_ok() } => return End::Close(CLOSE_GOING_AWAY, "the server is shutting down"),
                push = reg.rx.recv() => match push {
                    Some(Push::Event(r)) => self.event(&r).await,
                    Some(Push::Resync(reason)) => self.resync(reg.id, &reason, None).await,
                    None => return End::Close(CLOSE_TOO_SLOW, "too slow: the client fell too far behind its events"),
                },
                msg = self.socket.recv() => {
                    self.last_heard = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(t))) => self.command(reg.id, t.as_str()).await,
                        Some(Ok(Message::Binary(_))) => self.error("invalid_argument", "messages are JSON text frames").await,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Gone,
                        Some(Ok(_)) => Ok(()),
                    }
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > cfg.idle_timeout {
                        return End::Gone;
                    }
                    self.send(Message::Ping(Default::default())).await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn send(&mut self, msg: Message) -> Result<(), End> {
        match tokio::time::timeout(self.st.cfg.send_timeout, self.socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn send_json(&mut self, v: &Value) -> Result<(), End> {
        self.send(Message::Text(Utf8Bytes::from(v.to_string())))
            .await
    }

    async fn error(&mut self, code: &str, message: &str) -> Result<(), End> {
        self.send_json(&json!({ "type": "error", "code": code, "message": message }))
            .await
    }

    /// Whether this connection may see a job submitted by `owner`.
    fn sees(&self, owner: Option<&str>) -> bool {
        self.tenant.as_deref().is_none_or(|t| owner == Some(t))
    }

    async fn event(&mut self, r: &Routed) -> Result<(), End> {
        if !self.sees(r.owner.as_deref()) {
            return Ok(());
        }
        if let Some(f) = self.floors.get(&r.job_id) {
            if !f.passed_by(r) {
                return Ok(());
            }
            self.floors.remove(&r.job_id);
        }
        self.send(Message::Text(r.frame.clone())).await
    }

    async fn command(&mut self, conn: u64, text: &str) -> Result<(), End> {
        let cmd: Command = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .error(
                        "invalid_argument",
                        &format!("not a command ({e}); send {{\"type\":\"subscribe\",\"job_ids\":[…]}}, unsubscribe or ping"),
                    )
                    .await
            }
        };
        match cmd {
            Command::Ping => self.send_json(&json!({ "type": "pong" })).await,
            Command::Subscribe(args) => self.subscribe(conn, args).await,
            Command::Unsubscribe(args) => {
                let (sub, _) = match args.into_subscription() {
                    Ok(s) => s,
                    Err(m) => return self.error("invalid_argument", &m).await,
                };
                self.st.hub.unsubscribe(conn, &sub);
                for j in &sub.job_ids {
                    self.floors.remove(j);
                }
                self.send_json(&json!({
                    "type": "unsubscribed",
                    "job_ids": sub.job_ids,
                    "correlation_ids": sub.correlation_ids,
                    "all": sub.all,
                }))
                .await
            }
        }
    }

    async fn subscribe(&mut self, conn: u64, args: SubscribeArgs) -> Result<(), End> {
        let (sub, since) = match args.into_subscription() {
            Ok(s) => s,
            Err(m) => return self.error("invalid_argument", &m).await,
        };
        let adding = sub.job_ids.len() + sub.correlation_ids.len() + usize::from(sub.all);
        let max = self.st.cfg.max_subscriptions;
        if self.st.hub.subscription_count(conn) + adding > max {
            return self
                .error(
                    "resource_exhausted",
                    &format!("a connection follows at most {max} jobs and correlation ids"),
                )
                .await;
        }
        let at = self.st.hub.last_event_id();
        let resume = self.st.hub.subscribe(conn, &sub, since);
        let replayed = match &resume {
            Some(Resume::Replay(m)) => Some(m.len()),
            _ => None,
        };
        self.send_json(&json!({
            "type": "subscribed",
            "job_ids": sub.job_ids,
            "correlation_ids": sub.correlation_ids,
            "all": sub.all,
            "last_event_id": at,
            "replayed": replayed,
        }))
        .await?;
        match resume {
            Some(Resume::Replay(missed)) => {
                for r in missed {
                    if self.sees(r.owner.as_deref()) {
                        self.send(Message::Text(r.frame.clone())).await?;
                    }
                }
                Ok(())
            }
            Some(Resume::Resync { oldest }) => {
                let reason = format!(
                    "events after {} are no longer held (oldest {oldest}); current states follow",
                    since.unwrap_or(0)
                );
                self.resync(conn, &reason, Some((&sub, at))).await
            }
            None => self.snapshots(conn, &sub, at).await,
        }
    }

    /// Sends a resync notice, then the current state of what it follows
    /// (`only`: of one subscription).
    async fn resync(
        &mut self,
        conn: u64,
        reason: &str,
        only: Option<(&Subscription, u64)>,
    ) -> Result<(), End> {
        let at = self.st.hub.last_event_id();
        self.send_json(&json!({ "type": "resync", "reason": reason, "last_event_id": at }))
            .await?;
        match only {
            Some((sub, at)) => self.snapshots(conn, sub, at).await,
            None => {
                let all = self.st.hub.followed(conn);
                self.snapshots(conn, &all, at).await
            }
        }
    }

    /// The state of each job now (and of the jobs known to carry a
    /// followed correlation id), as `snapshot` frames.
    async fn snapshots(&mut self, conn: u64, sub: &Subscription, at: u64) -> Result<(), End> {
        let mut ids: Vec<JobId> = sub.job_ids.clone();
        for c in &sub.correlation_ids {
            ids.extend(self.st.hub.jobs_of(c));
        }
        let queue = self.st.hub.queue().clone();
        let mut reads = futures::stream::iter(ids.into_iter().map(|id| {
            let q = queue.clone();
            async move {
                let r = q.get(&id).await;
                (id, r)
            }
        }))
        .buffered(16);
        let mut frames = Vec::new();
        let mut missing = Vec::new();
        while let Some((id, r)) = reads.next().await {
            match r {
                // Another key's job: as if it did not exist.
                Ok(rec) if !self.sees(crate::queue::owner_of(&rec.job)) => missing.push(id),
                Ok(rec) => {
                    self.floors.insert(
                        id,
                        Floor {
                            status: rec.status,
                            attempts: rec.attempts,
                            at_ms: rec.updated_at_ms,
                        },
                    );
                    let ev = record_event(&rec);
                    frames.push(status_frame(
                        "snapshot",
                        at,
                        &ev,
                        rec.job.correlation_id.as_deref(),
                        Some(&rec),
                    ));
                }
                Err(QueueError::NotFound(_)) => missing.push(id),
                Err(e) => {
                    frames.push(json!({
                        "type": "error",
                        "code": "unavailable",
                        "job_id": id,
                        "message": format!("could not read the job: {e}"),
                    }));
                }
            }
        }
        drop(reads);
        if !missing.is_empty() {
            self.st.hub.unsubscribe(
                conn,
                &Subscription {
                    job_ids: missing.clone(),
                    ..Subscription::default()
                },
            );
        }
        for f in frames {
            self.send_json(&f).await?;
        }
        for id in missing {
            self.send_json(&json!({
                "type": "error",
                "code": "not_found",
                "job_id": id,
                "message": format!("no job {id}; not subscribed"),
            }))
            .await?;
        }
        Ok(())
    }
}
