//! Engine behaviour on a manual clock: ordering, leases, retries, dead
//! letters, delay, cancel, dedup, retention, stats and events.

use crate::common;

use common::{msg, payloads, Harness, T0};
use docproc_broker::{pb, Error};
use pb::State;

#[tokio::test]
async fn higher_priority_first_then_fifo() {
    let h = Harness::new();
    for (p, name) in [
        (1, "low-a"),
        (9, "high-a"),
        (5, "mid-a"),
        (1, "low-b"),
        (9, "high-b"),
        (0, "zero"),
    ] {
        h.produce("q", p, name).await;
    }
    let got = h.lease("q", 10).await;
    assert_eq!(
        payloads(&got),
        ["high-a", "high-b", "mid-a", "low-a", "low-b", "zero"]
    );
    assert!(got.iter().all(|d| d.attempt == 1 && d.lease_token != 0));
    assert_eq!(got[0].lease_deadline_ms, T0 + 30_000);
}

#[tokio::test]
async fn queues_are_independent() {
    let h = Harness::new();
    h.produce("a", 1, "in-a").await;
    h.produce("b", 9, "in-b").await;
    assert_eq!(payloads(&h.lease("a", 10).await), ["in-a"]);
    assert_eq!(payloads(&h.lease("b", 10).await), ["in-b"]);
    assert!(h.lease("a", 10).await.is_empty());
}

#[tokio::test]
async fn fair_share_lets_low_priority_through() {
    let h = Harness::new();
    let cfg = pb::QueueConfig {
        fair_share: true,
        weights: [(0, 1), (9, 4)].into(),
        ..Default::default()
    };
    let resolved = h.broker.configure_queue("q", cfg).await.unwrap();
    assert_eq!(
        resolved.default_lease_timeout_ms, 30_000,
        "defaults are filled in"
    );
    for i in 0..50 {
        h.produce("q", 0, &format!("low{i}")).await;
        h.produce("q", 9, &format!("high{i}")).await;
    }
    let got = payloads(&h.lease("q", 25).await);
    let lows: Vec<_> = got
        .iter()
        .filter(|p| p.starts_with("low"))
        .cloned()
        .collect();
    assert_eq!(
        lows,
        ["low0", "low1", "low2", "low3", "low4"],
        "1 in 5 goes to priority 0, in order"
    );
}

#[tokio::test]
async fn lease_expiry_redelivers_with_next_attempt() {
    let h = Harness::new();
    let id = h
        .produce_msg(pb::NewMessage {
            lease_timeout_ms: 1000,
            ..msg("q", 0, "x")
        })
        .await;
    let first = h.lease("q", 1).await;
    assert!(
        h.lease("q", 1).await.is_empty(),
        "a leased message is not handed out twice"
    );
    h.advance(999).await;
    assert!(h.lease("q", 1).await.is_empty(), "not before the deadline");
    h.advance(1).await;
    let second = h.lease("q", 1).await;
    assert_eq!(second[0].id, id);
    assert_eq!(second[0].attempt, 2);
    assert_ne!(second[0].lease_token, first[0].lease_token);
    // The first consumer's token is stale now.
    let err = h
        .broker
        .ack(id, first[0].lease_token, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StaleLease(_)), "{err}");
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::FailedPrecondition
    );
    let err = h
        .broker
        .extend(id, first[0].lease_token, 0, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StaleLease(_)));
    assert!(!h
        .broker
        .ack(id, second[0].lease_token, b"ok".to_vec())
        .await
        .unwrap());
    let m = h.broker.get(id, false).unwrap();
    assert_eq!(m.state(), State::Completed);
    assert_eq!(m.result, b"ok");
    assert_eq!(m.attempts, 2);
    let c = h.broker.stats(Some("q")).unwrap()[0].counters.unwrap();
    assert_eq!((c.delivered, c.redelivered, c.acked), (2, 1, 1));
}

#[tokio::test]
async fn extend_keeps_the_lease_and_stores_progress() {
    let h = Harness::new();
    let id = h
        .produce_msg(pb::NewMessage {
            lease_timeout_ms: 1000,
            ..msg("q", 0, "x")
        })
        .await;
    let d = h.lease("q", 1).await.remove(0);
    h.advance(800).await;
    let r = h
        .broker
        .extend(id, d.lease_token, 0, Some(b"50%".to_vec()))
        .await
        .unwrap();
    assert_eq!(r.lease_deadline_ms, T0 + 1800);
    assert!(!r.cancelled);
    h.advance(900).await;
    assert!(
        h.lease("q", 1).await.is_empty(),
        "extended lease still held"
    );
    assert_eq!(h.broker.get(id, false).unwrap().progress, b"50%");
    h.advance(100).await;
    assert_eq!(h.lease("q", 1).await[0].attempt, 2);
}

#[tokio::test]
async fn nack_retries_with_backoff_then_dead_letters() {
    let h = Harness::with(|c| {
        c.retry_base_ms = 1000;
        c.retry_max_ms = 60_000;
    });
    let id = h
        .produce_msg(pb::NewMessage {
            max_attempts: 3,
            ..msg("q", 2, "job")
        })
        .await;
    for attempt in 1..=2u32 {
        let d = h.lease("q", 1).await.remove(0);
        assert_eq!(d.attempt, attempt);
        let r = h
            .broker
            .nack(id, d.lease_token, &format!("boom {attempt}"), 0, false)
            .await
            .unwrap();
        assert_eq!(r.state(), State::Retrying);
        let full = 1000u64 << (attempt - 1);
        let delay = r.retry_at_ms - h.now();
        assert!(
            delay >= full / 2 && delay <= full,
            "attempt {attempt}: delay {delay}"
        );
        assert_eq!(h.state(id), State::Retrying);
        assert!(h.lease("q", 1).await.is_empty(), "not before the backoff");
        h.advance(delay).await;
    }
    let d = h.lease("q", 1).await.remove(0);
    assert_eq!(d.attempt, 3);
    let r = h
        .broker
        .nack(id, d.lease_token, "boom 3", 0, false)
        .await
        .unwrap();
    assert_eq!(r.state(), State::Dead);
    let m = h.broker.get(id, false).unwrap();
    assert_eq!(
        (m.state(), m.last_error.as_str(), m.attempts),
        (State::Dead, "boom 3", 3)
    );
    let dead = h.broker.list_dead("q", 0, 10).unwrap();
    assert_eq!(dead.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
    assert_eq!(dead[0].payload, b"job");
    let s = &h.broker.stats(Some("q")).unwrap()[0];
    assert_eq!(s.priorities[0].dead, 1);
    assert_eq!(s.counters.unwrap().dead_lettered, 1);
    // Requeue gives fresh attempts.
    assert_eq!(
        h.broker.requeue_dead("q", vec![id], false).await.unwrap(),
        1
    );
    assert!(h.broker.list_dead("q", 0, 10).unwrap().is_empty());
    let d = h.lease("q", 1).await.remove(0);
    assert_eq!((d.id, d.attempt), (id, 1));
    h.broker
        .nack(id, d.lease_token, "fatal", 0, true)
        .await
        .unwrap();
    assert_eq!(h.state(id), State::Dead, "dead_letter skips the retries");
    assert_eq!(h.broker.purge_dead("q", vec![], true).await.unwrap(), 1);
    assert!(matches!(h.broker.get(id, false), Err(Error::NotFound(_))));
    assert_eq!(h.broker.stats(Some("q")).unwrap()[0].priorities.len(), 0);
}

#[tokio::test]
async fn explicit_retry_delay_is_honoured() {
    let h = Harness::new();
    let id = h.produce("q", 0, "x").await;
    let d = h.lease("q", 1).await.remove(0);
    let r = h
        .broker
        .nack(id, d.lease_token, "later", 5000, false)
        .await
        .unwrap();
    assert_eq!(r.retry_at_ms, T0 + 5000);
    h.advance(4999).await;
    assert!(h.lease("q", 1).await.is_empty());
    h.advance(1).await;
    assert_eq!(h.lease("q", 1).await[0].attempt, 2);
}

#[tokio::test]
async fn lease_expiry_on_last_attempt_dead_letters() {
    let h = Harness::new();
    let id = h
        .produce_msg(pb::NewMessage {
            max_attempts: 1,
            lease_timeout_ms: 100,
            ..msg("q", 0, "x")
        })
        .await;
    h.lease("q", 1).await;
    h.advance(100).await;
    let m = h.broker.get(id, false).unwrap();
    assert_eq!(m.state(), State::Dead);
    assert!(m.last_error.contains("lease expired"), "{}", m.last_error);
}

#[tokio::test]
async fn a_released_message_is_ready_at_once_without_losing_an_attempt() {
    let h = Harness::new();
    let id = h
        .produce_msg(pb::NewMessage {
            max_attempts: 1,
            ..msg("q", 0, "x")
        })
        .await;
    let first = h.lease("q", 1).await;
    assert_eq!(first[0].attempt, 1);
    let answer = h.broker.release(id, first[0].lease_token).await.unwrap();
    // Queued at once (not a retry waiting for a timer), in the answer, in
    // get and in the stats.
    assert_eq!(
        (answer.state(), answer.retry_at_ms, h.state(id)),
        (State::Queued, 0, State::Queued)
    );
    let stats = h.broker.stats(Some("q")).unwrap();
    let level = &stats[0].priorities[0];
    assert_eq!((level.ready, level.retrying, level.leased), (1, 0, 0));
    // The stale token cannot complete it any more.
    assert!(h
        .broker
        .ack(id, first[0].lease_token, vec![])
        .await
        .is_err());
    let again = h.lease("q", 1).await;
    assert_eq!(
        (again[0].id, again[0].attempt),
        (id, 1),
        "its only attempt is still there"
    );
    h.broker
        .ack(id, again[0].lease_token, b"ok".to_vec())
        .await
        .unwrap();
    assert_eq!(h.state(id), State::Completed);
    // A cancel that reached a released message takes effect.
    let c = h.produce("q", 0, "c").await;
    let d = h.lease("q", 1).await;
    h.broker.cancel(c).await.unwrap();
    h.broker.release(c, d[0].lease_token).await.unwrap();
    assert_eq!(h.state(c), State::Cancelled);
}

#[tokio::test]
async fn delayed_messages_wait_for_not_before() {
    let h = Harness::new();
    let late = h
        .produce_msg(pb::NewMessage {
            not_before_ms: T0 + 5000,
            ..msg("q", 9, "late")
        })
        .await;
    h.produce("q", 0, "now").await;
    assert_eq!(h.state(late), State::Delayed);
    assert_eq!(h.broker.next_deadline(), Some(T0 + 5000));
    assert_eq!(payloads(&h.lease("q", 10).await), ["now"]);
    h.advance(5000).await;
    assert_eq!(h.state(late), State::Queued);
    assert_eq!(payloads(&h.lease("q", 10).await), ["late"]);
}

#[tokio::test]
async fn cancel_waiting_and_leased_messages() {
    let h = Harness::new();
    let queued = h.produce("q", 0, "queued").await;
    let delayed = h
        .produce_msg(pb::NewMessage {
            not_before_ms: T0 + 1000,
            ..msg("q", 0, "d")
        })
        .await;
    assert_eq!(h.broker.cancel(queued).await.unwrap(), State::Cancelled);
    assert_eq!(h.broker.cancel(delayed).await.unwrap(), State::Cancelled);
    h.advance(2000).await;
    assert!(
        h.lease("q", 10).await.is_empty(),
        "cancelled messages are never delivered"
    );

    let leased = h
        .produce_msg(pb::NewMessage {
            lease_timeout_ms: 1000,
            ..msg("q", 0, "l")
        })
        .await;
    let d = h.lease("q", 1).await.remove(0);
    assert_eq!(h.broker.cancel(leased).await.unwrap(), State::Leased);
    let m = h.broker.get(leased, false).unwrap();
    assert!(m.cancel_requested);
    assert!(
        h.broker
            .extend(leased, d.lease_token, 0, None)
            .await
            .unwrap()
            .cancelled
    );
    h.advance(5000).await;
    assert_eq!(
        h.state(leased),
        State::Cancelled,
        "an expired cancelled lease is not redelivered"
    );
    assert!(h.lease("q", 10).await.is_empty());

    let acked = h.produce("q", 0, "a").await;
    let d = h.lease("q", 1).await.remove(0);
    h.broker.cancel(acked).await.unwrap();
    assert!(
        h.broker
            .ack(acked, d.lease_token, b"r".to_vec())
            .await
            .unwrap(),
        "ack reports the cancel"
    );
    assert_eq!(h.state(acked), State::Cancelled);
    let err = h.broker.cancel(acked).await.unwrap_err();
    assert!(matches!(err, Error::WrongState { .. }), "{err}");
    assert!(matches!(
        h.broker.cancel(42).await,
        Err(Error::NotFound(42))
    ));
    assert_eq!(
        h.broker.stats(Some("q")).unwrap()[0]
            .counters
            .unwrap()
            .cancelled,
        4
    );
}

#[tokio::test]
async fn dedup_returns_the_first_id_within_the_window() {
    let h = Harness::with(|c| c.dedup_window_ms = 10_000);
    let m = pb::NewMessage {
        dedup_key: "upload-7".into(),
        ..msg("q", 0, "x")
    };
    let out = h.broker.produce(vec![m.clone(), m.clone()]).await.unwrap();
    assert_eq!(out[0].0, out[1].0);
    assert_eq!((out[0].1, out[1].1), (false, true));
    // Still a duplicate after the first one completed.
    let d = h.lease("q", 1).await.remove(0);
    h.broker.ack(d.id, d.lease_token, vec![]).await.unwrap();
    let again = h.broker.produce(vec![m.clone()]).await.unwrap();
    assert_eq!(again[0], (out[0].0, true));
    assert!(h.lease("q", 10).await.is_empty(), "nothing new stored");
    // Another queue has its own keys.
    let other = h
        .broker
        .produce(vec![pb::NewMessage {
            queue: "r".into(),
            ..m.clone()
        }])
        .await
        .unwrap();
    assert!(!other[0].1);
    h.advance(10_000).await;
    let fresh = h.broker.produce(vec![m]).await.unwrap();
    assert!(!fresh[0].1);
    assert_ne!(fresh[0].0, out[0].0);
    assert_eq!(
        h.broker.stats(Some("q")).unwrap()[0]
            .counters
            .unwrap()
            .deduplicated,
        2
    );
}

#[tokio::test]
async fn final_messages_are_kept_for_the_retention_window() {
    let h = Harness::with(|c| c.retention_ms = 60_000);
    let id = h.produce("q", 0, "x").await;
    let d = h.lease("q", 1).await.remove(0);
    h.broker
        .ack(id, d.lease_token, b"result".to_vec())
        .await
        .unwrap();
    h.advance(59_999).await;
    assert_eq!(h.broker.get(id, true).unwrap().payload, b"x");
    h.advance(1).await;
    assert!(matches!(h.broker.get(id, false), Err(Error::NotFound(_))));
    assert!(matches!(
        h.broker.ack(id, d.lease_token, vec![]).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn stats_count_every_state_per_priority() {
    let h = Harness::new();
    for p in [1, 1, 1, 7] {
        h.produce("q", p, "x").await;
    }
    h.produce_msg(pb::NewMessage {
        not_before_ms: T0 + 10,
        ..msg("q", 1, "later")
    })
    .await;
    let leased = h.lease("q", 3).await; // the 7 and two 1s
    h.broker
        .nack(leased[1].id, leased[1].lease_token, "e", 0, true)
        .await
        .unwrap();
    h.broker
        .nack(leased[2].id, leased[2].lease_token, "e", 0, false)
        .await
        .unwrap();
    let s = h.broker.stats(Some("q")).unwrap().remove(0);
    let p1 = s.priorities.iter().find(|p| p.priority == 1).unwrap();
    let p7 = s.priorities.iter().find(|p| p.priority == 7).unwrap();
    let counts = |p: &pb::PriorityStats| (p.ready, p.delayed, p.retrying, p.leased, p.dead);
    assert_eq!(counts(p1), (1, 1, 1, 0, 1));
    assert_eq!(counts(p7), (0, 0, 0, 1, 0));
    assert_eq!(s.priorities[0].priority, 7, "highest priority listed first");
    let c = s.counters.unwrap();
    assert_eq!(
        (
            c.produced,
            c.delivered,
            c.nacked,
            c.retried,
            c.dead_lettered
        ),
        (5, 3, 2, 1, 1)
    );
    // The retry becomes ready when its backoff passes and leaves `retrying`.
    h.advance(h.broker.config().retry_max_ms).await;
    let s = h.broker.stats(Some("q")).unwrap().remove(0);
    let p1 = s.priorities.iter().find(|p| p.priority == 1).unwrap();
    assert_eq!(counts(p1), (3, 0, 0, 0, 1), "retry and delay both due");
    assert!(h.broker.stats(Some("unknown")).unwrap().is_empty());
}

#[tokio::test]
async fn events_follow_the_lifecycle_in_order() {
    let h = Harness::new();
    let mut events = h.broker.watch();
    let id = h.produce("q", 3, "x").await;
    let d = h.lease("q", 1).await.remove(0);
    h.broker
        .extend(id, d.lease_token, 0, Some(b"1/2".to_vec()))
        .await
        .unwrap();
    h.broker.ack(id, d.lease_token, vec![]).await.unwrap();
    let mut seen = Vec::new();
    let mut last_seq = 0;
    while let Ok(ev) = events.try_recv() {
        assert!(ev.seq > last_seq, "event ids increase");
        last_seq = ev.seq;
        assert_eq!((ev.id, ev.queue.as_str(), ev.priority), (id, "q", 3));
        seen.push((ev.state(), ev.progress, ev.attempts));
    }
    assert_eq!(
        seen,
        [
            (State::Queued, false, 0),
            (State::Leased, false, 1),
            (State::Leased, true, 1),
            (State::Completed, false, 1)
        ]
    );
}

#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_stored() {
    let h = Harness::with(|c| c.max_message_bytes = 100);
    let cases: Vec<(pb::NewMessage, &str)> = vec![
        (msg("bad queue", 0, "x"), "invalid"),
        (msg("", 0, "x"), "invalid"),
        (msg("q", 256, "x"), "invalid"),
        (msg("q", 0, &"x".repeat(101)), "large"),
    ];
    for (m, kind) in cases {
        let err = h
            .broker
            .produce(vec![msg("q", 0, "ok"), m])
            .await
            .unwrap_err();
        let code = tonic::Status::from(err).code();
        match kind {
            "invalid" => assert_eq!(code, tonic::Code::InvalidArgument),
            _ => assert_eq!(code, tonic::Code::ResourceExhausted),
        }
    }
    assert!(h.broker.produce(vec![]).await.is_err());
    assert!(
        h.lease("q", 10).await.is_empty(),
        "a rejected batch stores nothing"
    );
    assert!(matches!(
        h.broker.lease("no/slash", 1, "w").await,
        Err(Error::InvalidArgument(_))
    ));
    let id = h.produce("q", 0, "fine").await;
    // A token that never leased this message is stale, not a state error.
    assert!(matches!(
        h.broker.ack(id, 1, vec![]).await,
        Err(Error::StaleLease(_))
    ));
}

#[tokio::test]
async fn batch_limit_is_enforced() {
    let h = Harness::with(|c| c.max_batch = 3);
    let err = h
        .broker
        .produce(vec![msg("q", 0, "x"); 4])
        .await
        .unwrap_err();
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::ResourceExhausted
    );
}

#[tokio::test]
async fn ids_increase() {
    let h = Harness::new();
    let out = h.broker.produce(vec![msg("q", 0, "a"); 100]).await.unwrap();
    assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(out[0].0 >> 16 >= T0, "ids carry their creation time");
}
