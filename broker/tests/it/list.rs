//! Listing messages: filters by queue, state and creation time, newest-first
//! paging, and the `finals` index across restarts and upgrades.

use crate::common;

use common::{msg, Harness, T0};
use docproc_broker::{pb, pb::State};

fn ids(r: &pb::ListResponse) -> Vec<u64> {
    r.messages.iter().map(|m| m.id).collect()
}

fn req(queues: &[&str], states: &[State]) -> pb::ListRequest {
    pb::ListRequest {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        states: states.iter().map(|s| *s as i32).collect(),
        ..Default::default()
    }
}

/// Six messages one second apart in queues x and y, taken to different
/// states. Returns ids in creation order: [retrying x, completed x, dead y,
/// cancelled y, leased x, retrying y].
async fn fixture(h: &Harness) -> Vec<u64> {
    let mut out = Vec::new();
    for q in ["x", "x", "y", "y", "x", "y"] {
        out.push(h.produce(q, 0, "p").await);
        h.clock.advance(1000);
    }
    let x = h.lease("x", 3).await; // out[0], out[1], out[4]
    let y = h.lease("y", 3).await; // out[2], out[3], out[5]
    h.broker
        .nack(x[0].id, x[0].lease_token, "", 0, false)
        .await
        .unwrap();
    h.broker
        .ack(x[1].id, x[1].lease_token, b"r".to_vec())
        .await
        .unwrap();
    h.broker
        .nack(y[0].id, y[0].lease_token, "bad", 0, true)
        .await
        .unwrap();
    h.broker.cancel(y[1].id).await.unwrap();
    h.broker
        .nack(y[1].id, y[1].lease_token, "stopped", 0, true)
        .await
        .unwrap();
    h.broker
        .nack(y[2].id, y[2].lease_token, "again", 0, false)
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn lists_newest_first_with_every_filter() {
    let h = Harness::new();
    let all = fixture(&h).await;
    let got = h.broker.list(req(&[], &[])).await.unwrap();
    let mut newest_first = all.clone();
    newest_first.reverse();
    assert_eq!(ids(&got), newest_first);
    assert!(got.next.is_none());

    let x = h.broker.list(req(&["x"], &[])).await.unwrap();
    assert_eq!(ids(&x), vec![all[4], all[1], all[0]]);
    assert!(x.messages.iter().all(|m| m.queue == "x"));

    let done = h
        .broker
        .list(req(&[], &[State::Completed, State::Dead, State::Cancelled]))
        .await
        .unwrap();
    assert_eq!(ids(&done), vec![all[3], all[2], all[1]]);
    let states: Vec<State> = done.messages.iter().map(|m| m.state()).collect();
    assert_eq!(
        states,
        vec![State::Cancelled, State::Dead, State::Completed]
    );

    let retrying = h
        .broker
        .list(req(&["y"], &[State::Retrying]))
        .await
        .unwrap();
    assert_eq!(ids(&retrying), vec![all[5]]);
    let leased = h.broker.list(req(&[], &[State::Leased])).await.unwrap();
    assert_eq!(ids(&leased), vec![all[4]]);

    // Creation time window [T0 + 1 s, T0 + 4 s).
    let window = h
        .broker
        .list(pb::ListRequest {
            created_from_ms: T0 + 1000,
            created_to_ms: T0 + 4000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&window), vec![all[3], all[2], all[1]]);

    assert!(h
        .broker
        .list(req(&["nope"], &[]))
        .await
        .unwrap()
        .messages
        .is_empty());
    assert!(h.broker.list(req(&["bad name"], &[])).await.is_err());
    let mut bad_state = req(&[], &[]);
    bad_state.states = vec![42];
    assert!(h.broker.list(bad_state.clone()).await.is_err());
}

#[tokio::test]
async fn pages_cover_everything_once() {
    let h = Harness::new();
    let mut produced = Vec::new();
    for i in 0..25u64 {
        // Several messages share a millisecond: the id breaks ties.
        if i % 3 == 0 {
            h.clock.advance(1);
        }
        produced.push(h.produce("q", (i % 4) as u32, "p").await);
    }
    for d in h.lease("q", 10).await {
        h.broker.ack(d.id, d.lease_token, vec![]).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = h
            .broker
            .list(pb::ListRequest {
                queues: vec!["q".into()],
                limit: 7,
                after,
                ..Default::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.messages.len() <= 7);
        seen.extend(ids(&page));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    produced.reverse();
    assert_eq!(seen, produced, "newest first, each once, across pages");
}

#[tokio::test]
async fn final_messages_stay_listed_across_restart_and_leave_with_retention() {
    let mut h = Harness::with(|c| c.retention_ms = 60_000);
    let all = fixture(&h).await;
    h.reopen(|_| {});
    let done = h
        .broker
        .list(req(&[], &[State::Completed, State::Dead, State::Cancelled]))
        .await
        .unwrap();
    assert_eq!(ids(&done), vec![all[3], all[2], all[1]]);
    let requeued = h
        .broker
        .requeue_dead("y", vec![all[2]], false)
        .await
        .unwrap();
    assert_eq!(requeued, 1);
    let dead = h.broker.list(req(&[], &[State::Dead])).await.unwrap();
    assert!(dead.messages.is_empty(), "requeued leaves the dead listing");
    let queued = h.broker.list(req(&["y"], &[State::Queued])).await.unwrap();
    assert_eq!(ids(&queued), vec![all[2]]);

    h.advance(61_000).await;
    let done = h
        .broker
        .list(req(&[], &[State::Completed, State::Cancelled]))
        .await
        .unwrap();
    assert!(done.messages.is_empty(), "swept messages are not listed");
}

#[tokio::test]
async fn databases_from_before_the_index_are_indexed_at_open() {
    let mut h = Harness::new();
    let id = h.produce("q", 0, "p").await;
    let d = h.lease("q", 1).await.remove(0);
    h.broker.ack(d.id, d.lease_token, vec![]).await.unwrap();
    let cfg = h.broker.config().clone();
    h.broker.close();
    {
        // Make the database look like one written by a broker without the index.
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &cfg.data_dir).unwrap();
        let mut db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), &cfg.data_dir, &names).unwrap();
        db.drop_cf("finals").unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.delete_cf(&meta, b"finals_indexed").unwrap();
    }
    h.reopen(|_| {});
    let got = h.broker.list(req(&[], &[State::Completed])).await.unwrap();
    assert_eq!(ids(&got), vec![id]);
    // And the marker is written, so the next open does not scan again.
    h.reopen(|_| {});
    assert_eq!(ids(&h.broker.list(req(&[], &[])).await.unwrap()), vec![id]);
}

/// A client names the queues: repeats count once (thousands of one name
/// list like one), and more than 32 distinct names are refused.
#[tokio::test]
async fn list_filters_are_deduplicated_and_bounded() {
    let h = Harness::new();
    let all = fixture(&h).await;
    let many_x = vec!["x"; 5000];
    let r = h.broker.list(req(&many_x, &[])).await.unwrap();
    let once = h.broker.list(req(&["x"], &[])).await.unwrap();
    assert_eq!(ids(&r), ids(&once));
    assert!(ids(&r).contains(&all[4]) && ids(&r).contains(&all[1]));
    let names: Vec<String> = (0..33).map(|i| format!("q{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let err = h.broker.list(req(&names, &[])).await.unwrap_err();
    assert!(err.to_string().contains("at most 32"), "{err}");
    assert!(h.broker.list(req(&names[..32], &[])).await.is_ok());
}

#[tokio::test]
async fn live_messages_are_listed_the_same_after_a_restart() {
    let mut h = Harness::new();
    let all = fixture(&h).await;
    let before = ids(&h.broker.list(req(&[], &[])).await.unwrap());
    h.reopen(|_| {});
    assert_eq!(ids(&h.broker.list(req(&[], &[])).await.unwrap()), before);
    let live = h
        .broker
        .list(req(
            &[],
            &[
                State::Queued,
                State::Leased,
                State::Retrying,
                State::Delayed,
            ],
        ))
        .await
        .unwrap();
    // Leases die with the restart only when their deadline passes.
    assert_eq!(ids(&live), vec![all[5], all[4], all[0]]);
    // One that completes leaves the live listing at once (past its backoff).
    h.advance(600_000).await;
    let d = h.lease("x", 5).await;
    let done = d
        .iter()
        .find(|d| d.id == all[0])
        .expect("retrying x is due");
    h.broker
        .ack(done.id, done.lease_token, vec![])
        .await
        .unwrap();
    let live = h
        .broker
        .list(req(&["x"], &[State::Queued, State::Leased]))
        .await
        .unwrap();
    assert!(!ids(&live).contains(&all[0]), "{:?}", ids(&live));
}

/// A message turning final while a list runs is listed once, live or
/// final: it is never in neither place (its final record is scanned only
/// once written), for plain and owner lists alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_during_acks_misses_no_message() {
    let h = Harness::new();
    for i in 0..200 {
        let mut m = msg("q", 0, "p");
        if i % 2 == 0 {
            m.owner = "o".into();
        }
        h.produce_msg(m).await;
    }
    let leased = h.lease("q", 200).await;
    assert_eq!(leased.len(), 200);
    let broker = h.broker.clone();
    let acks = tokio::spawn(async move {
        for d in leased {
            broker.ack(d.id, d.lease_token, vec![]).await.unwrap();
        }
    });
    let mut lists = 0;
    let every = pb::ListRequest {
        limit: 1000,
        ..Default::default()
    };
    while !acks.is_finished() {
        let all = h.broker.list(every.clone()).await.unwrap();
        assert_eq!(all.messages.len(), 200, "list {lists} missed messages");
        let mine = h
            .broker
            .list(pb::ListRequest {
                owner: "o".into(),
                ..every.clone()
            })
            .await
            .unwrap();
        assert_eq!(
            mine.messages.len(),
            100,
            "owner list {lists} missed messages"
        );
        lists += 1;
    }
    acks.await.unwrap();
    assert!(lists > 0);
    let mut done = req(&[], &[State::Completed]);
    done.limit = 1000;
    assert_eq!(h.broker.list(done).await.unwrap().messages.len(), 200);
}
