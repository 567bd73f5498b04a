//! Slow, silent and greedy clients against real `docproc serve` and
//! `docproc broker` processes on real sockets: a client that sends nothing,
//! half a request line or its headers a byte at a time is disconnected at
//! the header timeout; connections beyond the cap are refused (HTTP 503)
//! while those open keep working; an idle HTTP/2 connection is closed;
//! SIGTERM finishes within the drain grace whatever clients hold open.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{broker_process, request, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn serve(extra: &[&str]) -> (tempfile::TempDir, Proc, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = common::serve_process(dir.path(), extra).await;
    (dir, p, addr)
}

/// Reads until the server closes the connection; the bytes it sent, and
/// how long that took. Panics if it is still open after `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "connection still open after {within:?}");
    (got, start.elapsed())
}

/// A kept-alive HTTP/1.1 connection that has made one request.
async fn kept_alive(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\"ok\"") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

#[tokio::test]
async fn silent_half_and_dripping_clients_are_disconnected_at_the_header_timeout() {
    let (_dir, _p, addr) = serve(&["--header-timeout-secs", "1"]).await;
    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTT").await.unwrap();
    let mut drip = TcpStream::connect(addr).await.unwrap();
    let dripping = tokio::spawn(async move {
        // One header byte every 200 ms: the request never completes in 1 s.
        for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n"
        {
            if drip.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed_by_server(&mut drip, Duration::from_secs(10)).await
    });
    closed_by_server(&mut silent, Duration::from_secs(10)).await;
    let t_silent = opened.elapsed();
    closed_by_server(&mut half, Duration::from_secs(10)).await;
    let t_half = opened.elapsed();
    let (drip_got, _) = dripping.await.unwrap();
    assert!(
        t_silent >= Duration::from_millis(900) && t_half >= Duration::from_millis(900),
        "closed at the timeout, not at once: {t_silent:?} {t_half:?}"
    );
    assert!(
        !String::from_utf8_lossy(&drip_got).contains("\"ok\""),
        "a dripped request was not served"
    );
    // A kept-alive connection idle past the header timeout is closed too.
    let mut idle = kept_alive(addr).await;
    closed_by_server(&mut idle, Duration::from_secs(10)).await;
    // Prompt clients are served all along.
    assert_eq!(request(addr, "GET", "/healthz", None).await.status, 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_with_503_and_room_comes_back() {
    let (_dir, _p, addr) = serve(&["--max-connections", "3", "--header-timeout-secs", "60"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(kept_alive(addr).await);
    }
    let over = request(addr, "GET", "/healthz", None).await;
    assert_eq!(over.status, 503, "{}", over.text());
    assert_eq!(over.json()["code"], "too_many_connections");
    // Those admitted keep working.
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = held[0].read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A client leaving frees its room.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let r = request(addr, "GET", "/metrics", None).await;
        if r.status == 200 {
            break r.text();
        }
        assert!(
            Instant::now() < deadline,
            "room never came back: {}",
            r.status
        );
        tokio::task::yield_now().await;
    };
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("docproc_http_connections_refused_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("refused counter");
    assert!(refused >= 1, "{metrics}");
    assert!(metrics.contains("docproc_http_connections 3"), "{metrics}");
}

#[tokio::test]
async fn http2_streams_are_capped_and_an_idle_connection_is_closed() {
    let (_dir, _p, addr) = serve(&["--max-streams", "7", "--idle-timeout-secs", "1"]).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let mut conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/healthz"))
        .body(())
        .unwrap();
    h2 = h2.ready().await.unwrap();
    let (resp, _) = h2.send_request(req, true).unwrap();
    let resp = resp.await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(h2.current_max_send_streams(), 7, "the server's stream cap");
    // No request for a second: the server says GOAWAY and closes.
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection still open");
}

#[tokio::test]
async fn sigterm_drains_within_its_grace_whatever_clients_hold_open() {
    let (_dir, mut p, addr) = serve(&[
        "--header-timeout-secs",
        "60",
        "--drain-secs",
        "2",
        "--shutdown-grace-secs",
        "1",
    ])
    .await;
    // A request whose headers stall half-way (the header timeout is long),
    // a kept-alive idle connection, and one that never spoke.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        .await
        .unwrap();
    let _idle = kept_alive(addr).await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    // The server has read the stalled bytes once it answers a later client.
    assert_eq!(request(addr, "GET", "/healthz", None).await.status, 200);
    let start = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = common::exit_within(&mut p, 20).await;
    assert!(status.success(), "{status:?}");
    eprintln!("exited {:?} after SIGTERM", start.elapsed());
    // The stalled client is gone with the process.
    let (_, _) = closed_by_server(&mut stalled, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn broker_disconnects_silent_grpc_clients_and_refuses_beyond_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_process(
        dir.path(),
        &["--header-timeout-secs", "1", "--max-connections", "2"],
    );
    let addr: SocketAddr = broker.url.trim_start_matches("grpc://").parse().unwrap();
    // A connection that never speaks is closed at the deadline.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, took) = closed_by_server(&mut silent, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");
    drop(silent);
    // Two silent ones fill the cap: a third is closed at once.
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    let (_, took) = closed_by_server(&mut third, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_millis(800),
        "refused at once: {took:?}"
    );
    // Once they are gone, a real client is served.
    drop((_a, _b));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let client = docproc_client::Client::connect(&broker.url).await;
        if let Ok(c) = client {
            if c.stats(None).await.is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "broker never served a client");
        tokio::task::yield_now().await;
    }
}
