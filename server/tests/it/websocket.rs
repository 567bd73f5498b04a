//! `GET /api/ws` with a real WebSocket client (tokio-tungstenite): status
//! pushed from a worker in another process, reconnect with a last event
//! id, 1,000 concurrent subscribers, bad messages, shutdown.

use crate::common;

use std::time::Duration;

use common::ws::{Closed, Ws};
use common::{no_local_workers, on_remote_broker, TestServer};
use docproc_queue::{self as queue, ConsumeOptions, NewJob};
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Statuses of the frames that are not progress updates.
fn statuses(frames: &[serde_json::Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["progress_update"] != true)
        .map(|f| f["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_a_job_run_by_a_worker_in_another_process() {
    let (_dir, broker, s) = on_remote_broker(|_| {}).await;
    let url = broker.url.clone();
    let id = s.submit("a.csv", b"name,n\nx,1\ny,2\n", &[]).await;

    let mut ws = Ws::connect(s.addr, "").await;
    ws.subscribe_jobs(&[&id]).await;
    let sub = ws.next(10).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["job_ids"], json!([id]));
    let snap = ws.next(10).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["status"], "queued");
    assert_eq!(snap["job_id"], id);
    assert!(snap["correlation_id"].is_string());
    assert!(snap["event_id"].is_u64());

    let _worker = common::excel_worker_process(&url, s.dir.path());
    let frames = ws.statuses_until_final(&id, 60).await;
    assert_eq!(statuses(&frames), ["processing", "completed"], "{frames:?}");
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f["event_id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids increase: {ids:?}"
    );
    assert!(ids[0] > snap["event_id"].as_u64().unwrap());
    let done = frames.last().unwrap();
    assert_eq!(done["type"], "status");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["result"]["json_url"], format!("/api/job/{id}/result"));
    assert!(done["worker_id"].is_string());
    assert!(done["at"].as_str().unwrap().ends_with('Z'));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_gets_what_it_missed_or_a_resync() {
    let s = TestServer::start(|_| {}).await;
    let mut ws = Ws::connect(s.addr, "?correlation_id=corr-replay").await;
    let sub = ws.next(10).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["correlation_ids"], json!(["corr-replay"]));
    let id = s
        .submit("a.csv", b"a,b\n1,2\n", &[("correlation_id", "corr-replay")])
        .await;
    let (first, _) = ws.until(10, |v| v["type"] == "status").await;
    assert_eq!(first["job_id"], id);
    assert_eq!(first["correlation_id"], "corr-replay");
    let last = first["event_id"].as_u64().unwrap();
    drop(ws);

    s.wait(&id, "completed", 60).await;
    let mut again = Ws::connect(s.addr, "").await;
    again
        .send(
            json!({ "type": "subscribe", "correlation_id": "corr-replay", "last_event_id": last }),
        )
        .await;
    let sub = again.next(10).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    let replayed = sub["replayed"].as_u64().expect("a replay");
    let frames = again.statuses_until_final(&id, 10).await;
    assert_eq!(frames.len() as u64, replayed, "{frames:?}");
    assert!(frames.iter().all(|f| f["type"] == "status"));
    assert!(frames
        .iter()
        .all(|f| f["event_id"].as_u64().unwrap() > last));
    let got = statuses(&frames);
    assert_eq!(got.last().map(String::as_str), Some("completed"), "{got:?}");
    assert!(got.contains(&"processing".to_string()), "{got:?}");

    // An id the server no longer holds (here: from before it started).
    let mut old = Ws::connect(s.addr, &format!("?job_id={id}&last_event_id=1")).await;
    assert_eq!(old.next(10).await["type"], "subscribed");
    let resync = old.next(10).await;
    assert_eq!(resync["type"], "resync", "{resync}");
    let snap = old.next(10).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["status"], "completed");
    assert_eq!(snap["result"]["json_url"], format!("/api/job/{id}/result"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_error_frames_and_the_connection_stays() {
    let s = TestServer::start(|c| {
        c.pools = no_local_workers();
        c.notify.ws.max_subscriptions = 2;
    })
    .await;
    let mut ws = Ws::connect(s.addr, "").await;
    ws.send_raw(Message::text("not json")).await;
    let e = ws.next(10).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("invalid_argument")),
        "{e}"
    );
    ws.send(json!({ "type": "subscribe" })).await;
    assert_eq!(ws.next(10).await["code"], "invalid_argument");
    ws.send(json!({ "type": "subscribe", "job_ids": ["x".repeat(200)] }))
        .await;
    assert_eq!(ws.next(10).await["code"], "invalid_argument");
    ws.send(json!({ "type": "launch" })).await;
    assert_eq!(ws.next(10).await["code"], "invalid_argument");
    ws.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(ws.next(10).await["code"], "invalid_argument");
    ws.send(json!({ "type": "subscribe", "job_ids": ["a", "b", "c"] }))
        .await;
    assert_eq!(ws.next(10).await["code"], "resource_exhausted");
    ws.subscribe_jobs(&["no-such-job"]).await;
    assert_eq!(ws.next(10).await["type"], "subscribed");
    let nf = ws.next(10).await;
    assert_eq!(
        (nf["code"].as_str(), nf["job_id"].as_str()),
        (Some("not_found"), Some("no-such-job")),
        "{nf}"
    );
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.next(10).await["type"], "pong");

    // A real job, then unsubscribe: nothing more arrives for it.
    let id = s.submit("a.csv", b"a,b\n1,2\n", &[]).await;
    ws.subscribe_jobs(&[&id]).await;
    assert_eq!(ws.next(10).await["type"], "subscribed");
    assert_eq!(ws.next(10).await["status"], "queued");
    ws.send(json!({ "type": "unsubscribe", "job_ids": [id] }))
        .await;
    assert_eq!(ws.next(10).await["type"], "unsubscribed");
    assert_eq!(s.delete(&format!("/api/job/{id}")).await.status, 200);
    assert!(ws
        .try_next(Duration::from_millis(500))
        .await
        .unwrap()
        .is_none());

    // Shutdown closes with 1001.
    let stopping = tokio::spawn(s.stop());
    match ws.try_next(Duration::from_secs(10)).await {
        Err(Closed::Frame(Some(f))) => assert_eq!(u16::from(f.code), 1001, "{f:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_each_get_their_own_events_and_nothing_else() {
    const N: usize = 1000;
    let (_dir, broker, s) = on_remote_broker(|_| {}).await;
    let q = queue::open(&broker.url).await.unwrap();
    let jobs: Vec<NewJob> = (0..N)
        .map(|i| NewJob::new("bulk", json!({ "n": i })))
        .collect();
    let ids: Vec<String> = q
        .publish(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.0)
        .collect();

    let addr = s.addr;
    let clients = futures::stream::iter(ids.clone())
        .map(|id| async move {
            let mut ws = Ws::connect(addr, &format!("?job_id={id}")).await;
            assert_eq!(ws.next(30).await["type"], "subscribed");
            let snap = ws.next(30).await;
            assert_eq!(
                (snap["type"].as_str(), snap["status"].as_str()),
                (Some("snapshot"), Some("queued"))
            );
            (id, ws)
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(clients.len(), N);
    let stats = s.get("/api/queue/stats").await.json();
    assert_eq!(stats["websocket"]["connections"], N, "{stats}");

    let mut leases = q
        .consume(
            &["bulk".into()],
            ConsumeOptions {
                prefetch: 16,
                ..ConsumeOptions::worker("bulk-worker")
            },
        )
        .await
        .unwrap();
    for _ in 0..N {
        let lease = leases.next().await.unwrap().unwrap();
        let n = lease.job().payload["n"].clone();
        lease.complete(json!({ "n": n })).await.unwrap();
    }

    let checks = futures::stream::iter(clients)
        .map(|(id, mut ws)| async move {
            let mut seen = Vec::new();
            loop {
                let f = ws.next(60).await;
                assert_eq!(f["job_id"], id, "a frame of another job: {f}");
                seen.push(f["status"].as_str().unwrap().to_string());
                if f["status"] == "completed" {
                    assert!(f["result"]["n"].is_u64(), "{f}");
                    break;
                }
            }
            assert_eq!(seen, ["processing", "completed"], "job {id}");
            assert!(ws
                .try_next(Duration::from_millis(100))
                .await
                .unwrap()
                .is_none());
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(checks.len(), N);
    let stats = s.get("/api/queue/stats").await.json();
    assert_eq!(stats["websocket"]["slow_disconnects"], 0, "{stats}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let (_dir, broker, s) = on_remote_broker(|c| {
        c.notify.hub.conn_buffer = 256;
        c.notify.ws.send_timeout = Duration::from_secs(30);
    })
    .await;
    let mut slow = Ws::connect(s.addr, "?all=true").await;
    assert_eq!(slow.next(10).await["type"], "subscribed");
    let mut fine = Ws::connect(s.addr, "?all=true").await;
    assert_eq!(fine.next(10).await["type"], "subscribed");
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = read.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = done.clone();
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            match fine.try_next(Duration::from_millis(200)).await {
                Ok(Some(_)) => {
                    n += 1;
                    counter.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(None) if !finished.load(std::sync::atomic::Ordering::Relaxed) => {}
                _ => return n,
            }
        }
    });
    // The slow client reads nothing while large `completed` frames (64 KiB
    // results) pile up behind it.
    let q = queue::open(&broker.url).await.unwrap();
    let mut leases = q
        .consume(
            &["flood".into()],
            ConsumeOptions {
                prefetch: 50,
                ..ConsumeOptions::worker("flood")
            },
        )
        .await
        .unwrap();
    let pad = "x".repeat(64 * 1024);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut published = 0u64;
    loop {
        let jobs: Vec<NewJob> = (0..50)
            .map(|i| NewJob::new("flood", json!({ "i": i })))
            .collect();
        q.publish(jobs).await.unwrap();
        for _ in 0..50 {
            let lease = leases.next().await.unwrap().unwrap();
            lease.complete(json!({ "pad": pad })).await.unwrap();
        }
        // queued, processing, completed
        published += 150;
        // The reading client drains each batch before the next (so its
        // queue never fills: a batch is 150 frames); the other one's socket
        // and queue fill batch after batch. Drained = nothing new for 300 ms
        // (under load the hub may resync instead of delivering every event).
        let mut seen = read.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = read.load(std::sync::atomic::Ordering::Relaxed);
            if now == seen {
                break;
            }
            seen = now;
        }
        let st = s.get("/api/queue/stats").await.json();
        if st["websocket"]["slow_disconnects"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never disconnected: {st}"
        );
    }
    // It gets what was already on its way, then the close (1008) or the end.
    let mut got = 0u64;
    let end = loop {
        match slow.try_next(Duration::from_secs(30)).await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("neither closed nor ended"),
            Err(c) => break c,
        }
    };
    if let Closed::Frame(Some(f)) = &end {
        assert_eq!(u16::from(f.code), 1008, "{f:?}");
    }
    assert!(
        got < published,
        "{got} of {published} frames: it was cut off"
    );
    let st = s.get("/api/queue/stats").await.json();
    assert_eq!(
        st["websocket"]["slow_disconnects"], 1,
        "only the slow client: {st}"
    );
    assert_eq!(
        st["websocket"]["connections"], 1,
        "the reading client is still there: {st}"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let fine_frames = reader.await.unwrap();
    assert!(
        fine_frames > got,
        "the reading client got {fine_frames} frames, the slow one {got}"
    );
    s.stop().await;
}
