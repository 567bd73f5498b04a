//! `GET /api/ws`: status subscriptions over WebSocket. One task per
//! connection reads the client's commands and writes the frames the hub
//! pushes; the protocol is in the README ("WebSocket").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::jobs::split_names;
use super::state::AppState;
use crate::app::{App, AppError, Viewer};
use crate::notify::hub::{record_event, status_frame, Hub, Push, Resume, Routed, Subscription};
use crate::notify::WsConfig;
use docproc_queue::{JobId, JobStatus};

impl axum::extract::FromRef<AppState> for WsState {
    fn from_ref(st: &AppState) -> Self {
        WsState {
            app: st.app.clone(),
            hub: st.hub.clone(),
            cfg: Arc::new(st.config.notify.ws.clone()),
            closing: st.closing.clone(),
        }
    }
}

/// Close code for a client that fell too far behind (RFC 6455: policy).
pub(super) const CLOSE_TOO_SLOW: u16 = 1008;
/// Close code when the server shuts down (RFC 6455: going away).
pub(super) const CLOSE_GOING_AWAY: u16 = 1001;

/// What the handler needs from the app.
#[derive(Clone)]
pub(super) struct WsState {
    /// The rules: a snapshot reads a job as the viewer may see it.
    pub app: App,
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
pub(super) struct SubscribeArgs {
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
pub(super) struct ConnectQuery {
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
        (status = 401, body = super::error::ErrorBody)))]
pub(super) async fn handler(
    State(st): State<WsState>,
    caller: Option<axum::Extension<super::guard::Caller>>,
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
            conn.viewer = super::guard::viewer(&caller);
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

/// What a connection speaks over: axum's `WebSocket`, or channels in tests.
trait Socket: Stream<Item = Result<Message, Self::Err>> + Sink<Message> + Unpin + Send {
    /// What a failed read carries.
    type Err;
}

impl<S, E> Socket for S
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin + Send,
{
    type Err = E;
}

/// One connection: its subscriptions' floors, when it was last heard, and
/// whose jobs it may see.
struct Conn<S> {
    st: WsState,
    socket: S,
    floors: HashMap<JobId, Floor>,
    last_heard: Instant,
    /// Whose jobs it may see (a `write` key: only its own).
    viewer: Viewer,
}

enum End {
    Close(u16, &'static str),
    Gone,
}

impl<S: Socket> Conn<S> {
    fn new(st: WsState, socket: S) -> Self {
        Self {
            st,
            socket,
            floors: HashMap::new(),
            last_heard: Instant::now(),
            viewer: Viewer::All,
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
        reg: &mut crate::notify::hub::Registration,
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
                msg = self.socket.next() => {
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

    /// A frame the hub wrote (JSON, so UTF-8: the check does not copy).
    async fn send_frame(&mut self, frame: &bytes::Bytes) -> Result<(), End> {
        match Utf8Bytes::try_from(frame.clone()) {
            Ok(text) => self.send(Message::Text(text)).await,
            Err(e) => {
                tracing::error!(error = %e, "a hub frame is not UTF-8; not sent");
                Ok(())
            }
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

    /// Whether this connection may see a job submitted by `owner` (the
    /// application's rule).
    fn sees(&self, owner: Option<&str>) -> bool {
        self.viewer.sees_owner(owner)
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
        self.send_frame(&r.frame).await
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
                        self.send_frame(&r.frame).await?;
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
        let (app, viewer) = (self.st.app.clone(), self.viewer.clone());
        let mut reads = futures::stream::iter(ids.into_iter().map(|id| {
            let (app, viewer) = (app.clone(), viewer.clone());
            async move {
                let r = app.job(&viewer, &id).await;
                (id, r)
            }
        }))
        .buffered(16);
        let mut frames = Vec::new();
        let mut missing = Vec::new();
        while let Some((id, r)) = reads.next().await {
            match r {
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
                // Absent, or another key's job: the two are not told apart.
                Err(AppError::NotFound(_)) => missing.push(id),
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

#[cfg(test)]
mod tests {
    //! The connection loop over channels instead of a socket: what a
    //! client sends goes in one, what the server writes comes out of the
    //! other.
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use docproc_queue::{self as queue, ConsumeOptions, NewJob, Queue};
    use futures::channel::mpsc;

    use super::*;
    use crate::notify::HubConfig;

    /// The server's end of a connection made of two channels.
    struct Pipe {
        from_client: mpsc::UnboundedReceiver<Result<Message, Infallible>>,
        to_client: mpsc::UnboundedSender<Message>,
    }

    impl Stream for Pipe {
        type Item = Result<Message, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.from_client.poll_next_unpin(cx)
        }
    }

    impl Sink<Message> for Pipe {
        type Error = mpsc::SendError;

        fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.to_client.poll_ready(cx)
        }

        fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.to_client.start_send(item)
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.to_client.close_channel();
            Poll::Ready(Ok(()))
        }
    }

    /// A client of a connection served over channels, on a queue whose
    /// events feed the hub.
    struct Client {
        queue: Arc<dyn Queue>,
        _dir: tempfile::TempDir,
        tx: mpsc::UnboundedSender<Result<Message, Infallible>>,
        rx: mpsc::UnboundedReceiver<Message>,
        stop: watch::Sender<bool>,
        conn: tokio::task::JoinHandle<()>,
    }

    impl Client {
        async fn connect() -> Self {
            let queue = queue::open("memory://").await.unwrap();
            let hub = Hub::new(queue.clone(), HubConfig::default());
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(hub.clone().run(stopped.clone(), None));
            let dir = tempfile::tempdir().unwrap();
            let results = crate::results::ResultStore::open(dir.path().join("results")).unwrap();
            let notifier = crate::notify::Notifier::new(
                &Default::default(),
                &crate::notify::webhook::Signer::generate(),
                results.clone(),
                queue.clone(),
            )
            .unwrap();
            let app = App::new(
                queue.clone(),
                results,
                Arc::new(notifier),
                hub.clone(),
                dir.path().join("uploads"),
                3,
                std::time::Duration::from_secs(60),
            );
            let st = WsState {
                app,
                hub,
                cfg: Arc::new(WsConfig::default()),
                closing: stopped,
            };
            let (tx, from_client) = mpsc::unbounded();
            let (to_client, rx) = mpsc::unbounded();
            let conn = tokio::spawn(async move {
                let pipe = Pipe {
                    from_client,
                    to_client,
                };
                Conn::new(st, pipe).run(None).await
            });
            Self {
                queue,
                _dir: dir,
                tx,
                rx,
                stop,
                conn,
            }
        }

        fn send(&self, v: Value) {
            let text = Utf8Bytes::from(v.to_string());
            self.tx.unbounded_send(Ok(Message::Text(text))).unwrap();
        }

        /// The next JSON frame (pings skipped).
        async fn frame(&mut self) -> Value {
            loop {
                match self.rx.next().await {
                    Some(Message::Text(t)) => return serde_json::from_str(t.as_str()).unwrap(),
                    Some(Message::Ping(_)) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        }

        /// The next frame of `status`, skipping earlier ones; every frame
        /// on the way is about `id`.
        async fn until(&mut self, id: &JobId, status: &str) -> Value {
            loop {
                let f = self.frame().await;
                assert_eq!(f["job_id"], id.0.as_str(), "a frame of another job: {f}");
                if f["status"] == status {
                    return f;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_follows_its_job_in_order_and_no_other() {
        let mut c = Client::connect().await;
        // Published first, so leased and finished first: all its events
        // have passed the hub before the subscribed job's last one.
        let publish = |q: Arc<dyn Queue>| async move {
            q.publish_one(NewJob::new("t", json!({}))).await.unwrap()
        };
        publish(c.queue.clone()).await;
        let id = publish(c.queue.clone()).await;
        c.send(json!({ "type": "subscribe", "job_ids": [id] }));
        let sub = c.frame().await;
        assert_eq!(sub["type"], "subscribed", "{sub}");
        let snap = c.frame().await;
        assert_eq!(
            (snap["type"].as_str(), snap["status"].as_str()),
            (Some("snapshot"), Some("queued")),
            "{snap}"
        );
        let mut leases = c
            .queue
            .consume(&["t".into()], ConsumeOptions::worker("w"))
            .await
            .unwrap();
        for _ in 0..2 {
            let lease = leases.next().await.unwrap().unwrap();
            lease.complete(json!({ "n": 1 })).await.unwrap();
        }
        let running = c.until(&id, "processing").await;
        let done = c.until(&id, "completed").await;
        assert_eq!(running["type"], "status");
        assert!(
            done["event_id"].as_u64() > running["event_id"].as_u64(),
            "{running} then {done}"
        );
        // Nothing came of the other job, before or after.
        c.send(json!({ "type": "ping" }));
        assert_eq!(c.frame().await["type"], "pong");
        c.stop.send_replace(true);
        c.conn.await.unwrap();
    }

    #[tokio::test]
    async fn a_bad_message_is_answered_and_the_connection_stays() {
        let mut c = Client::connect().await;
        c.tx.unbounded_send(Ok(Message::Binary(vec![1, 2].into())))
            .unwrap();
        let e = c.frame().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("invalid_argument"))
        );
        c.send(json!({ "type": "subscribe" }));
        let e = c.frame().await;
        assert_eq!(e["type"], "error", "{e}");
        c.send(json!({ "type": "ping" }));
        assert_eq!(c.frame().await["type"], "pong");
        // The client goes away: the connection ends.
        drop(c.tx);
        c.conn.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_closes_with_going_away() {
        let mut c = Client::connect().await;
        c.stop.send_replace(true);
        match c.rx.next().await {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, CLOSE_GOING_AWAY),
            other => panic!("expected a close frame, got {other:?}"),
        }
        c.conn.await.unwrap();
    }
}
