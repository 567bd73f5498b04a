//! A WebSocket client for the tests (tokio-tungstenite): connect, send
//! commands, read frames as JSON with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

pub type Stream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub struct Ws {
    pub stream: Stream,
}

/// How a connection ended.
#[derive(Debug)]
pub enum Closed {
    Frame(Option<CloseFrame>),
    Eof,
}

impl Ws {
    pub async fn connect(addr: SocketAddr, query: &str) -> Self {
        Self::connect_with_key(addr, query, None).await
    }

    /// Connects presenting `Authorization: Bearer KEY`.
    pub async fn connect_with_key(addr: SocketAddr, query: &str, key: Option<&str>) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("ws://{addr}/api/ws{query}")
            .into_client_request()
            .expect("request");
        if let Some(k) = key {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {k}").parse().expect("header"),
            );
        }
        let (stream, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("websocket handshake");
        assert_eq!(resp.status(), 101);
        Self { stream }
    }

    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.stream.send(m).await.expect("send");
    }

    pub async fn subscribe_jobs(&mut self, ids: &[&str]) {
        self.send(json!({ "type": "subscribe", "job_ids": ids }))
            .await;
    }

    /// The next text frame as JSON (pings are answered by the library),
    /// panicking after `secs`.
    pub async fn next(&mut self, secs: u64) -> Value {
        match self.try_next(Duration::from_secs(secs)).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("no frame within {secs} s"),
            Err(c) => panic!("connection closed: {c:?}"),
        }
    }

    /// The next text frame, `Ok(None)` on timeout, `Err` when closed.
    pub async fn try_next(&mut self, wait: Duration) -> Result<Option<Value>, Closed> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Err(_))) => return Err(Closed::Eof),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Ok(Some(serde_json::from_str(t.as_str()).expect("JSON frame")))
                }
                Message::Close(c) => return Err(Closed::Frame(c)),
                _ => continue,
            }
        }
    }

    /// Frames until one of `type` `kind` for which `pred` holds; returns
    /// it and the frames before it.
    pub async fn until(
        &mut self,
        secs: u64,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Ok(Some(v)) if pred(&v) => return (v, before),
                Ok(Some(v)) => before.push(v),
                Ok(None) => panic!("not seen within {secs} s; got {before:?}"),
                Err(c) => panic!("closed ({c:?}) before it; got {before:?}"),
            }
        }
    }

    /// Statuses of `job` from `status`/`snapshot` frames until it is final.
    pub async fn statuses_until_final(&mut self, job: &str, secs: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let (v, _) = self
                .until(secs, |v| {
                    matches!(v["type"].as_str(), Some("status" | "snapshot")) && v["job_id"] == job
                })
                .await;
            let done = matches!(
                v["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            );
            seen.push(v);
            if done {
                return seen;
            }
        }
    }
}
