//! API keys on every route (HTTP, dashboard cookie, WebSocket), request
//! limits and timeouts, upload rate limits.

use crate::common;

use std::time::Duration;

use common::{request_with, TestServer};
use docproc_broker::auth::{generate, Keys, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Keyed {
    s: TestServer,
    write: String,
    read: String,
}

async fn keyed(edit: impl FnOnce(&mut docproc_server::config::ServeConfig)) -> Keyed {
    let (write, w) = generate("client", Scope::Write).unwrap();
    let (read, r) = generate("dashboard", Scope::Read).unwrap();
    let keys = Keys::parse(&[w.entry(), r.entry()]).unwrap();
    let s = TestServer::start(move |c| {
        c.keys = keys;
        edit(c);
    })
    .await;
    Keyed { s, write, read }
}

fn bearer(k: &str) -> String {
    format!("Bearer {k}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_key_with_the_right_scope() {
    let k = keyed(|_| {}).await;
    let addr = k.s.addr;
    let (ct, body) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    // A job to look at, made with the write key.
    let up = request_with(
        addr,
        "POST",
        "/api/upload-async",
        &[("Authorization", &bearer(&k.write))],
        Some((&ct, body.clone())),
    )
    .await;
    assert_eq!(up.status, 202, "{}", up.text());
    let id = up.json()["job_id"].as_str().unwrap().to_string();

    let reads = [
        "/api/jobs".to_string(),
        "/api/queue/stats".into(),
        format!("/api/job/{id}/status"),
        format!("/api/job/{id}/result"),
        format!("/api/job/{id}/html"),
        format!("/api/job/{id}/markdown"),
        "/metrics".into(),
        "/api/ws".into(),
        "/api/dead".into(),
        "/ui/app.js".into(),
    ];
    for path in &reads {
        let none = request_with(addr, "GET", path, &[], None).await;
        none.assert_error(401, "unauthenticated");
        let wrong = request_with(
            addr,
            "GET",
            path,
            &[("Authorization", "Bearer dp_nope")],
            None,
        )
        .await;
        wrong.assert_error(401, "unauthenticated");
        let basic = request_with(
            addr,
            "GET",
            path,
            &[("Authorization", &format!("Basic {}", k.read))],
            None,
        )
        .await;
        basic.assert_error(401, "unauthenticated");
        let ok = request_with(
            addr,
            "GET",
            path,
            &[("Authorization", &bearer(&k.read))],
            None,
        )
        .await;
        assert!(
            ![401, 403].contains(&ok.status),
            "{path} with the read key: {} {}",
            ok.status,
            ok.text()
        );
    }
    // Changes: refused without a key, forbidden to the read key.
    type Change<'a> = (&'a str, String, Option<(&'a str, Vec<u8>)>);
    let changes: [Change; 2] = [
        (
            "POST",
            "/api/upload-async".into(),
            Some((ct.as_str(), body.clone())),
        ),
        ("DELETE", format!("/api/job/{id}"), None),
    ];
    for (method, path, body) in changes {
        request_with(addr, method, &path, &[], body.clone())
            .await
            .assert_error(401, "unauthenticated");
        request_with(
            addr,
            method,
            &path,
            &[("Authorization", &bearer(&k.read))],
            body.clone(),
        )
        .await
        .assert_error(403, "permission_denied");
        let ok = request_with(
            addr,
            method,
            &path,
            &[("Authorization", &bearer(&k.write))],
            body,
        )
        .await;
        assert!(
            ![401, 403].contains(&ok.status),
            "{method} {path} with the write key: {}",
            ok.text()
        );
    }
    // Deleting a dead job needs admin, even for the write key.
    request_with(
        addr,
        "DELETE",
        &format!("/api/dead/{id}"),
        &[("Authorization", &bearer(&k.write))],
        None,
    )
    .await
    .assert_error(403, "permission_denied");
    request_with(
        addr,
        "POST",
        &format!("/api/dead/{id}/retry"),
        &[("Authorization", &bearer(&k.read))],
        None,
    )
    .await
    .assert_error(403, "permission_denied");
    // The dashboard: the sign-in page (401) without a key, the page with one.
    let ui = request_with(addr, "GET", "/ui", &[], None).await;
    assert_eq!(ui.status, 401);
    assert!(ui.text().contains("action=\"/ui/login\""), "{}", ui.text());
    let ui = request_with(
        addr,
        "GET",
        "/ui",
        &[("Authorization", &bearer(&k.read))],
        None,
    )
    .await;
    assert_eq!(ui.status, 200);
    assert!(ui.text().contains("/ui/app.js"));
    // Signing in sets an HttpOnly, SameSite=Strict cookie for a known key only.
    let form = |key: &str| {
        Some((
            "application/x-www-form-urlencoded",
            format!("key={key}").into_bytes(),
        ))
    };
    let bad = request_with(addr, "POST", "/ui/login", &[], form("dp_nope")).await;
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    let good = request_with(addr, "POST", "/ui/login", &[], form(&k.read)).await;
    assert_eq!(good.status, 303);
    let c = good.header("set-cookie").unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    // Probes answer without a key.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            request_with(addr, "GET", path, &[], None).await.status,
            200,
            "{path}"
        );
    }
    // The request id comes back, given or made.
    let r = request_with(addr, "GET", "/healthz", &[("x-request-id", "req-42")], None).await;
    assert_eq!(r.header("x-request-id"), Some("req-42"));
    assert!(request_with(addr, "GET", "/healthz", &[], None)
        .await
        .header("x-request-id")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_cookie_works_for_reads_and_needs_the_csrf_header_for_changes() {
    let k = keyed(|_| {}).await;
    let addr = k.s.addr;
    let cookie = format!("theme=dark; docproc_key={}", k.write);
    let r = request_with(addr, "GET", "/api/jobs", &[("Cookie", &cookie)], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (ct, body) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    request_with(
        addr,
        "POST",
        "/api/upload-async",
        &[("Cookie", &cookie)],
        Some((&ct, body.clone())),
    )
    .await
    .assert_error(403, "csrf");
    let ok = request_with(
        addr,
        "POST",
        "/api/upload-async",
        &[("Cookie", &cookie), ("x-docproc-ui", "1")],
        Some((&ct, body)),
    )
    .await;
    assert_eq!(ok.status, 202, "{}", ok.text());
    let bad = format!("docproc_key={}x", k.write);
    request_with(addr, "GET", "/api/jobs", &[("Cookie", &bad)], None)
        .await
        .assert_error(401, "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_needs_a_key() {
    let k = keyed(|_| {}).await;
    let url = format!("ws://{}/api/ws?all=true", k.s.addr);
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|(_, r)| r.status())),
    }
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", bearer(&k.read).parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade with a key");
    assert_eq!(resp.status(), 101);
    use futures::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame")
        .expect("open")
        .expect("frame");
    assert!(first.to_text().unwrap().contains("subscribed"), "{first}");
    // A cookie-authenticated WebSocket from another origin is refused.
    let mut cross = url.as_str().into_client_request().unwrap();
    cross
        .headers_mut()
        .insert("cookie", format!("docproc_key={}", k.read).parse().unwrap());
    cross
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(cross).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_rate_limited_per_key() {
    let (a, ea) = generate("a", Scope::Write).unwrap();
    let (b, eb) = generate("b", Scope::Write).unwrap();
    let keys = Keys::parse(&[ea.entry(), eb.entry()]).unwrap();
    let s = TestServer::start(move |c| {
        c.keys = keys;
        c.upload_rate_per_min = 2;
        c.pools = common::no_local_workers();
    })
    .await;
    let (ct, body) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    let up = |key: &str| {
        let auth = bearer(key);
        let (ct, body, addr) = (ct.clone(), body.clone(), s.addr);
        async move {
            request_with(
                addr,
                "POST",
                "/api/upload-async",
                &[("Authorization", &auth)],
                Some((&ct, body)),
            )
            .await
        }
    };
    assert_eq!(up(&a).await.status, 202);
    assert_eq!(up(&a).await.status, 202);
    let third = up(&a).await;
    third.assert_error(429, "rate_limited");
    let after: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=31).contains(&after), "Retry-After {after}");
    // A dead-job retry makes work too: it spends the same allowance.
    request_with(
        s.addr,
        "POST",
        "/api/dead/1/retry",
        &[("Authorization", &bearer(&a))],
        None,
    )
    .await
    .assert_error(429, "rate_limited");
    // Another key has its own allowance; reads are not limited.
    assert_eq!(up(&b).await.status, 202);
    let list = request_with(
        s.addr,
        "GET",
        "/api/jobs",
        &[("Authorization", &bearer(&a))],
        None,
    )
    .await;
    assert_eq!(list.status, 200);
    // Key a sees its own two jobs: the refused upload made none.
    assert_eq!(
        list.json()["jobs"].as_array().unwrap().len(),
        2,
        "the refused upload made no job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_slow_requests_are_cut_off() {
    let s = TestServer::start(|c| {
        c.max_header_bytes = 2048;
        c.request_timeout = Duration::from_secs(1);
        c.pools = common::no_local_workers();
    })
    .await;
    let big = "x".repeat(4096);
    request_with(s.addr, "GET", "/api/jobs", &[("x-padding", &big)], None)
        .await
        .assert_error(431, "headers_too_large");
    // An upload that announces a body and never sends it.
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/upload-async HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n--b\r\n",
        s.addr
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut raw))
        .await
        .expect("the server answers the stalled request")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_keys_see_only_their_own_jobs() {
    use common::ws::Ws;
    let (alice, a) = generate("alice", Scope::Write).unwrap();
    let (bob, b) = generate("bob", Scope::Write).unwrap();
    let (ops, o) = generate("ops", Scope::Read).unwrap();
    let (root, r) = generate("root", Scope::Admin).unwrap();
    let keys = Keys::parse(&[a.entry(), b.entry(), o.entry(), r.entry()]).unwrap();
    let s = TestServer::start(move |c| c.keys = keys).await;
    let addr = s.addr;
    let (ct, body) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    let submit = |key: &str| {
        let auth = bearer(key);
        let (ct, body) = (ct.clone(), body.clone());
        async move {
            let r = request_with(
                addr,
                "POST",
                "/api/upload-async",
                &[("Authorization", &auth)],
                Some((&ct, body)),
            )
            .await;
            assert_eq!(r.status, 202, "{}", r.text());
            r.json()["job_id"].as_str().unwrap().to_string()
        }
    };
    let get = |key: &str, path: String| {
        let auth = bearer(key);
        async move { request_with(addr, "GET", &path, &[("Authorization", &auth)], None).await }
    };
    // Both follow everything they may see.
    let mut bob_ws = Ws::connect_with_key(addr, "?all=true", Some(&bob)).await;
    let mut alice_ws = Ws::connect_with_key(addr, "?all=true", Some(&alice)).await;
    bob_ws.until(10, |f| f["type"] == "subscribed").await;
    alice_ws.until(10, |f| f["type"] == "subscribed").await;

    let job_a = submit(&alice).await;
    alice_ws
        .until(30, |f| {
            f["job_id"] == job_a.as_str() && f["status"] == "completed"
        })
        .await;
    let job_b = submit(&bob).await;
    let (_, seen_by_bob) = bob_ws
        .until(30, |f| {
            f["job_id"] == job_b.as_str() && f["status"] == "completed"
        })
        .await;
    assert!(
        seen_by_bob.iter().all(|f| f["job_id"] != job_a.as_str()),
        "bob's WebSocket saw alice's job: {seen_by_bob:?}"
    );

    // Another write key's job does not exist for bob; read and admin see it.
    for path in [
        format!("/api/job/{job_a}/status"),
        format!("/api/job/{job_a}/result"),
        format!("/api/job/{job_a}/html"),
        format!("/api/job/{job_a}/markdown"),
    ] {
        get(&bob, path.clone()).await.assert_error(404, "not_found");
        assert_eq!(get(&alice, path.clone()).await.status, 200, "{path}");
        assert_eq!(get(&ops, path.clone()).await.status, 200, "{path}");
        assert_eq!(get(&root, path.clone()).await.status, 200, "{path}");
    }
    request_with(
        addr,
        "DELETE",
        &format!("/api/job/{job_a}"),
        &[("Authorization", &bearer(&bob))],
        None,
    )
    .await
    .assert_error(404, "not_found");
    let ids = |r: common::Response| -> Vec<String> {
        r.json()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(get(&bob, "/api/jobs".into()).await),
        vec![job_b.clone()]
    );
    let all = ids(get(&ops, "/api/jobs".into()).await);
    assert!(all.contains(&job_a) && all.contains(&job_b), "{all:?}");
    // A key's pages hold its own jobs and are full, however many newer jobs
    // others submitted (the listing asks the queue for the owner's jobs,
    // not for a page that is then filtered).
    let newer = [submit(&alice).await, submit(&alice).await];
    let page = get(&bob, "/api/jobs?limit=1".into()).await;
    assert_eq!(page.json()["next_cursor"], serde_json::Value::Null);
    assert_eq!(ids(page), vec![job_b.clone()]);
    let first = get(&alice, "/api/jobs?limit=2".into()).await;
    let cursor = first.json()["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    assert_eq!(ids(first), vec![newer[1].clone(), newer[0].clone()]);
    let second = get(&alice, format!("/api/jobs?limit=2&cursor={cursor}")).await;
    assert_eq!(second.json()["next_cursor"], serde_json::Value::Null);
    assert_eq!(ids(second), vec![job_a.clone()]);
    // Subscribing to another key's job by id: not found, not subscribed.
    bob_ws
        .send(serde_json::json!({ "type": "subscribe", "job_ids": [job_a] }))
        .await;
    let (err, _) = bob_ws.until(10, |f| f["type"] == "error").await;
    assert_eq!(
        (err["code"].as_str(), err["job_id"].as_str()),
        (Some("not_found"), Some(job_a.as_str()))
    );
}

/// The status line of one raw HTTP/1.1 request with exactly `head`'s
/// headers (a `Host` of the test's choosing).
async fn raw_status(addr: std::net::SocketAddr, head: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Without keys the server trusts loopback, and a web page in the user's
/// browser can reach loopback too: a rebound name, a cross-site change
/// and a cross-site WebSocket are refused; the server's own pages and
/// plain clients work. Sign-in refuses other sites with keys too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_mode_answers_only_loopback_names_and_its_own_origin() {
    let s = TestServer::start(|_| {}).await;
    let addr = s.addr;
    let port = addr.port();
    // DNS rebinding: the page's own name arrives in Host.
    assert_eq!(
        raw_status(addr, "GET /api/jobs HTTP/1.1\r\nHost: evil.example\r\n").await,
        403
    );
    assert_eq!(
        raw_status(
            addr,
            &format!("GET /api/jobs HTTP/1.1\r\nHost: evil.example:{port}\r\n")
        )
        .await,
        403
    );
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(
            raw_status(addr, &format!("GET /api/jobs HTTP/1.1\r\nHost: {host}\r\n")).await,
            200,
            "{host}"
        );
    }
    let r = request_with(addr, "GET", "/api/jobs", &[], None).await;
    assert_eq!(r.status, 200);

    // A cross-site form post or fetch: refused; from the server's own page: accepted.
    let (ct, body) = common::multipart("a.csv", b"a,b\n1,2\n", &[]);
    let r = request_with(
        addr,
        "POST",
        "/api/upload-async",
        &[("Origin", "http://evil.example")],
        Some((&ct, body.clone())),
    )
    .await;
    r.assert_error(403, "cross_origin");
    let r = request_with(
        addr,
        "DELETE",
        "/api/job/1",
        &[("Sec-Fetch-Site", "cross-site")],
        None,
    )
    .await;
    r.assert_error(403, "cross_origin");
    let own = format!("http://127.0.0.1:{port}");
    let r = request_with(
        addr,
        "POST",
        "/api/upload-async",
        &[("Origin", &own), ("Sec-Fetch-Site", "same-origin")],
        Some((&ct, body)),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());

    // A cross-site WebSocket (which could subscribe to all=true).
    let mut req = format!("ws://{addr}/api/ws?all=true")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!(
            "a cross-site WebSocket was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    s.stop().await;

    // Login CSRF, with keys.
    let k = keyed(|_| {}).await;
    let form = Some((
        "application/x-www-form-urlencoded",
        format!("key={}", k.read).into_bytes(),
    ));
    let login = |header: (&'static str, &'static str)| {
        let (addr, form) = (k.s.addr, form.clone());
        async move { request_with(addr, "POST", "/ui/login", &[header], form).await }
    };
    login(("Origin", "http://evil.example"))
        .await
        .assert_error(403, "cross_origin");
    login(("Sec-Fetch-Site", "cross-site"))
        .await
        .assert_error(403, "cross_origin");
    assert_eq!(login(("Sec-Fetch-Site", "same-origin")).await.status, 303);
    k.s.stop().await;
}
