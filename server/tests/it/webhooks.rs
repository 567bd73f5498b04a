//! Webhooks end to end with a receiver on loopback (allowlisted): Standard
//! Webhooks signatures, retries after 500s, 410 stops, 429 Retry-After,
//! failed and cancelled jobs, a delivery pending across a restart, and the
//! SSRF guard refusing callback URLs at upload.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::TestServer;
use docproc_server::config::ServeConfig;
use docproc_server::notify::webhook::Signer;
use serde_json::Value;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }

    /// Checks the Standard Webhooks signature and timestamp.
    fn assert_signed(&self) {
        let id = self.header("webhook-id");
        let ts: u64 = self.header("webhook-timestamp").parse().expect("timestamp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(ts) < 300, "timestamp {ts} vs now {now}");
        let signer = Signer::from_secret(SECRET).unwrap();
        assert!(
            signer.verify(id, ts, &self.body, self.header("webhook-signature")),
            "bad signature: {:?}",
            self.headers
        );
        assert!(!signer.verify(id, ts, b"{}", self.header("webhook-signature")));
        assert_eq!(self.header("content-type"), "application/json");
    }
}

/// Answers per path: status and `Retry-After`.
type Script = Arc<Mutex<HashMap<String, Vec<(u16, Option<&'static str>)>>>>;

/// A receiver answering each path from a script (then 200), recording hits.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, Vec<Hit>>>>,
    script: Script,
}

impl Receiver {
    async fn start() -> Self {
        let hits: Arc<Mutex<HashMap<String, Vec<Hit>>>> = Arc::default();
        let script: Script = Arc::default();
        let (h, sc) = (hits.clone(), script.clone());
        let app = axum::Router::new().route(
            "/{path}",
            axum::routing::post(
                move |Path(path): Path<String>, headers: HeaderMap, body: Bytes| {
                    let (h, sc) = (h.clone(), sc.clone());
                    async move {
                        let hit = Hit {
                            at: Instant::now(),
                            headers: headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect(),
                            body: body.to_vec(),
                        };
                        h.lock().unwrap().entry(path.clone()).or_default().push(hit);
                        let next = {
                            let mut sc = sc.lock().unwrap();
                            let q = sc.entry(path).or_default();
                            if q.is_empty() {
                                None
                            } else {
                                Some(q.remove(0))
                            }
                        };
                        let (code, retry_after) = next.unwrap_or((200, None));
                        let status = StatusCode::from_u16(code).unwrap();
                        match retry_after {
                            Some(ra) => (status, [("retry-after", ra)], "scripted").into_response(),
                            None => (status, "scripted").into_response(),
                        }
                    }
                },
            ),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Self { addr, hits, script }
    }

    fn answer(&self, path: &str, answers: &[(u16, Option<&'static str>)]) {
        self.script
            .lock()
            .unwrap()
            .insert(path.to_string(), answers.to_vec());
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    async fn wait_hits(&self, path: &str, n: usize, secs: u64) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let h = self.hits(path);
            if h.len() >= n {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} hits after {secs} s",
                h.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn webhook_settings(c: &mut ServeConfig) {
    c.notify.webhook.secret = Some(SECRET.into());
    c.notify.webhook.allowlist = vec!["127.0.0.1".into()];
    c.notify.webhook.retry_base = Duration::from_millis(200);
}

/// Polls the status until its webhook record reaches `state`.
async fn webhook_state(s: &TestServer, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = s.get(&format!("/api/job/{id}/status")).await.json();
        if st["webhook"]["state"] == state {
            return st["webhook"].clone();
        }
        assert!(Instant::now() < deadline, "webhook never {state}: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_retried_after_two_500s() {
    let rx = Receiver::start().await;
    rx.answer("hook", &[(500, None), (500, None)]);
    let s = TestServer::start(webhook_settings).await;
    let id = s
        .submit("a.csv", b"a,b\n1,2\n", &[("callback_url", &rx.url("hook"))])
        .await;
    s.wait(&id, "completed", 60).await;
    let hits = rx.wait_hits("hook", 3, 30).await;
    for h in &hits {
        h.assert_signed();
    }
    let ids: Vec<&str> = hits.iter().map(|h| h.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one id on every retry: {ids:?}"
    );
    assert_eq!(ids[0], format!("msg_{id}_completed"));
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(90),
        "backoff"
    );
    assert!(
        hits[2].at - hits[1].at >= Duration::from_millis(190),
        "backoff doubles"
    );
    let body = hits[2].json();
    assert_eq!(body["job_id"], id);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["result"]["json_url"], format!("/api/job/{id}/result"));
    assert!(body["error"].is_null());
    assert!(body["completed_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let w = webhook_state(&s, &id, "delivered").await;
    assert_eq!(w["attempts"], 3, "{w}");
    assert_eq!(w["last_status_code"], 200);
    assert_eq!(w["url"], rx.url("hook"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits("hook").len(), 3, "nothing after success");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_retrying_and_too_many_requests_waits_for_retry_after() {
    let rx = Receiver::start().await;
    rx.answer("gone", &[(410, None)]);
    rx.answer("busy", &[(429, Some("1"))]);
    rx.answer("moved", &[(302, None)]);
    let s = TestServer::start(webhook_settings).await;
    let gone = s
        .submit("a.csv", b"a,b\n1,2\n", &[("callback_url", &rx.url("gone"))])
        .await;
    let busy = s
        .submit("b.csv", b"b,c\n2,3\n", &[("callback_url", &rx.url("busy"))])
        .await;
    let moved = s
        .submit(
            "c.csv",
            b"c,d\n3,4\n",
            &[("callback_url", &rx.url("moved"))],
        )
        .await;
    // A failed job is announced too (a damaged PDF fails for good).
    let broken = s
        .submit(
            "d.pdf",
            b"%PDF-1.4\nthis is not a pdf body",
            &[("callback_url", &rx.url("failed"))],
        )
        .await;

    let w = webhook_state(&s, &gone, "failed").await;
    assert_eq!(
        (w["attempts"].as_u64(), w["last_status_code"].as_u64()),
        (Some(1), Some(410)),
        "{w}"
    );
    let b = rx.wait_hits("busy", 2, 30).await;
    assert!(
        b[1].at - b[0].at >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
    webhook_state(&s, &busy, "delivered").await;
    let m = rx.wait_hits("moved", 2, 30).await;
    assert!(m
        .iter()
        .all(|h| h.header("webhook-id") == format!("msg_{moved}_completed")));
    let w = webhook_state(&s, &moved, "delivered").await;
    assert_eq!(w["attempts"], 2, "a redirect is a failed attempt: {w}");

    let f = rx.wait_hits("failed", 1, 60).await;
    f[0].assert_signed();
    let body = f[0].json();
    assert_eq!(
        (body["job_id"].as_str(), body["status"].as_str()),
        (Some(broken.as_str()), Some("failed")),
        "{body}"
    );
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(body["result"].is_null());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits("gone").len(), 1, "410 is not retried");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_pending_across_a_restart_is_delivered_after_it() {
    let rx = Receiver::start().await;
    rx.answer("hook", &[(503, None)]);
    let settings = |c: &mut ServeConfig| {
        webhook_settings(c);
        // The retry is due after the restart.
        c.notify.webhook.retry_base = Duration::from_secs(4);
        c.pools = common::no_local_workers();
    };
    let s = TestServer::start(settings).await;
    let id = s
        .submit("a.csv", b"a,b\n1,2\n", &[("callback_url", &rx.url("hook"))])
        .await;
    assert_eq!(
        s.delete(&format!("/api/job/{id}")).await.json()["status"],
        "cancelled"
    );
    let first = rx.wait_hits("hook", 1, 30).await;
    let w = webhook_state(&s, &id, "pending").await;
    assert_eq!(
        (w["attempts"].as_u64(), w["last_status_code"].as_u64()),
        (Some(1), Some(503)),
        "{w}"
    );
    assert!(w["next_attempt_at"].is_string());

    let dir = s.stop_keep().await;
    let s = TestServer::start_in(dir, settings).await;
    let hits = rx.wait_hits("hook", 2, 30).await;
    assert!(hits[1].at - first[0].at >= Duration::from_secs(2));
    hits[1].assert_signed();
    assert_eq!(hits[1].header("webhook-id"), format!("msg_{id}_cancelled"));
    let body = hits[1].json();
    assert_eq!(
        (body["status"].as_str(), body["type"].as_str()),
        (Some("cancelled"), Some("job.cancelled"))
    );
    let w = webhook_state(&s, &id, "delivered").await;
    assert_eq!(w["attempts"], 2, "{w}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_to_private_addresses_are_refused_at_upload() {
    let s = TestServer::start(|c| {
        c.pools = common::no_local_workers();
    })
    .await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://localhost/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://[ff02::1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
    ] {
        s.upload("a.csv", b"a,b\n1,2\n", &[("callback_url", url)])
            .await
            .assert_error(400, "invalid_callback_url");
    }
    for url in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
    ] {
        s.upload("a.csv", b"a,b\n1,2\n", &[("callback_url", url)])
            .await
            .assert_error(400, "invalid_callback_url");
    }
    // Nothing was queued or kept.
    assert!(s.uploads().is_empty(), "{:?}", s.uploads());
    s.upload("a.csv", b"a,b\n1,2\n", &[("email", "x@example.com")])
        .await
        .assert_error(400, "email_not_configured");
    s.stop().await;
}
