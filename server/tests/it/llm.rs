//! Analysis summaries from an OpenAI-compatible chat endpoint: the request
//! the server sends (path, bearer token, model, document text), the answer
//! replacing the built-in summary, and the built-in summary standing when
//! the endpoint fails or cannot be reached. The endpoint is a local HTTP
//! server speaking the chat-completions protocol.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::{pdf, TestServer};
use docproc_server::llm::LlmConfig;
use serde_json::{json, Value};

/// Requests the endpoint saw: (authorization header, JSON body).
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone)]
struct Endpoint {
    seen: Seen,
    status: StatusCode,
    answer: Value,
}

async fn completions(
    State(ep): State<Endpoint>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    ep.seen.lock().unwrap().push((auth, body));
    (ep.status, Json(ep.answer.clone()))
}

/// Starts an endpoint answering every chat completion with `status` and
/// `answer`.
async fn endpoint(status: StatusCode, answer: Value) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(Endpoint {
            seen: seen.clone(),
            status,
            answer,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn document() -> Vec<u8> {
    pdf(&[
        "The invoice for the harbour project is due on 2024-03-01.",
        "Please pay the invoice of 1200 EUR to billing@example.com today.",
    ])
}

/// Uploads the document with analysis and returns the analysis result.
async fn analysed(s: &TestServer) -> Value {
    let id = s
        .submit("report.pdf", &document(), &[("analyze", "true")])
        .await;
    s.wait(&id, "completed", 60).await;
    // The analysis job is queued right after the extraction completes.
    let a = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let list = s.get("/api/jobs?job_type=ai_analysis").await.json();
            if let Some(a) = list["jobs"][0]["job_id"].as_str() {
                return a.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("an analysis job");
    let st = s.wait(&a, "completed", 60).await;
    let res = s.get(&format!("/api/job/{a}/result")).await.json();
    assert_eq!(
        st["result"]["summary"]["summary_source"], res["summary_source"],
        "{st}"
    );
    res
}

fn llm(addr: SocketAddr) -> LlmConfig {
    let mut c = LlmConfig::new(format!("http://{addr}/v1"), "tiny-summariser");
    c.api_key = Some("sk-test-123".into());
    c.timeout = Duration::from_secs(5);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_writes_the_summary() {
    let answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "tiny-summariser",
        "choices": [ { "index": 0, "finish_reason": "stop",
            "message": { "role": "assistant",
                "content": "  An invoice of 1200 EUR for the harbour project is due.\n" } } ],
    });
    let (addr, seen) = endpoint(StatusCode::OK, answer).await;
    let s = TestServer::start(|c| c.llm = Some(llm(addr))).await;
    let res = analysed(&s).await;
    assert_eq!(res["schema"], "docproc.analysis");
    assert_eq!(
        res["summary"],
        json!(["An invoice of 1200 EUR for the harbour project is due."])
    );
    assert_eq!(res["summary_source"], "llm");
    assert_eq!(res["summary_model"], "tiny-summariser");
    assert!(res.get("summary_error").is_none(), "{res}");
    // The rest of the analysis is the built-in one.
    assert_eq!(res["language"], "en");
    assert_eq!(res["entities"]["emails"], json!(["billing@example.com"]));
    let html = s.get(&format!("/api/job/{}/html", res_job(&s).await)).await;
    assert!(html.text().contains("harbour project is due"));

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one request per analysis");
    let (auth, body) = &seen[0];
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-123"));
    assert_eq!(body["model"], "tiny-summariser");
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("detected: en"));
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("harbour project"), "{user}");
    assert!(user.contains("billing@example.com"), "{user}");
    s.stop().await;
}

/// The id of the (only) analysis job.
async fn res_job(s: &TestServer) -> String {
    let list = s.get("/api/jobs?job_type=ai_analysis").await.json();
    list["jobs"][0]["job_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_leaves_the_builtin_summary() {
    let (addr, seen) = endpoint(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": { "message": "model is overloaded" } }),
    )
    .await;
    let s = TestServer::start(|c| c.llm = Some(llm(addr))).await;
    let res = analysed(&s).await;
    assert_eq!(res["summary_source"], "builtin");
    let err = res["summary_error"].as_str().unwrap();
    assert!(err.contains("HTTP 503"), "{err}");
    assert!(err.contains("model is overloaded"), "{err}");
    let summary = res["summary"].as_array().unwrap();
    assert!(!summary.is_empty());
    assert!(summary[0].as_str().unwrap().contains("invoice"));
    assert_eq!(seen.lock().unwrap().len(), 1);
    s.stop().await;

    // An answer without text is refused the same way.
    let (addr, _) = endpoint(StatusCode::OK, json!({ "choices": [] })).await;
    let s = TestServer::start(|c| c.llm = Some(llm(addr))).await;
    let res = analysed(&s).await;
    assert_eq!(res["summary_source"], "builtin");
    assert!(res["summary_error"].as_str().unwrap().contains("unusable"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_leaves_the_builtin_summary() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = TestServer::start(|c| c.llm = Some(llm(closed))).await;
    let res = analysed(&s).await;
    assert_eq!(res["summary_source"], "builtin");
    assert!(
        res["summary_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{res}"
    );
    assert!(!res["summary"].as_array().unwrap().is_empty());
    s.stop().await;
}
