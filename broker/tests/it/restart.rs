//! Reopening the database: nothing acknowledged is lost, nothing acked comes
//! back, leases that expired while down are redelivered, and counts are exact.

use crate::common;

use common::{msg, payloads, Harness, T0};
use docproc_broker::pb::{self, State};

#[tokio::test]
async fn state_survives_reopen() {
    let mut h = Harness::new();
    let out = h
        .broker
        .produce((0..10).map(|i| msg("q", i % 3, &format!("m{i}"))).collect())
        .await
        .unwrap();
    let ids: Vec<u64> = out.iter().map(|o| o.0).collect();
    let delayed = h
        .produce_msg(pb::NewMessage {
            not_before_ms: T0 + 60_000,
            ..msg("q", 0, "later")
        })
        .await;
    let leased = h.lease("q", 4).await;
    // Ack two, keep two leased (short leases: they expire while down).
    for d in &leased[..2] {
        h.broker
            .ack(d.id, d.lease_token, b"done".to_vec())
            .await
            .unwrap();
    }
    let dead_id = ids[9];
    let counters_before = h.broker.stats(Some("q")).unwrap()[0].counters.unwrap();

    h.reopen(|_| {});

    for d in &leased[..2] {
        let m = h.broker.get(d.id, false).unwrap();
        assert_eq!(
            (m.state(), m.result.as_slice()),
            (State::Completed, b"done".as_slice())
        );
    }
    for d in &leased[2..] {
        let m = h.broker.get(d.id, false).unwrap();
        assert_eq!(
            m.state(),
            State::Leased,
            "a lease within its deadline is kept"
        );
        assert_eq!(m.lease_deadline_ms, d.lease_deadline_ms);
    }
    assert_eq!(h.state(delayed), State::Delayed);
    let s = h.broker.stats(Some("q")).unwrap().remove(0);
    let total = |f: fn(&pb::PriorityStats) -> u64| s.priorities.iter().map(f).sum::<u64>();
    assert_eq!(
        (
            total(|p| p.ready),
            total(|p| p.leased),
            total(|p| p.delayed)
        ),
        (6, 2, 1)
    );
    assert_eq!(
        s.counters.unwrap(),
        counters_before,
        "counters are persisted"
    );

    // The held token still works after the restart.
    h.broker
        .ack(leased[2].id, leased[2].lease_token, vec![])
        .await
        .unwrap();
    // Time passes beyond the other lease: it is redelivered, acked ones are not.
    h.advance(30_000).await;
    let next = h.lease("q", 100).await;
    let got: Vec<u64> = next.iter().map(|d| d.id).collect();
    assert!(got.contains(&leased[3].id));
    for d in &leased[..3] {
        assert!(!got.contains(&d.id), "acked message {} came back", d.id);
    }
    assert_eq!(got.len(), 7);
    assert!(got.contains(&dead_id));
    let redelivered = next.iter().find(|d| d.id == leased[3].id).unwrap();
    assert_eq!(redelivered.attempt, 2);

    // Ids keep increasing.
    let newer = h.produce("q", 0, "after").await;
    assert!(newer > *ids.iter().max().unwrap());
    assert!(newer > delayed);
}

#[tokio::test]
async fn dead_letters_dedup_and_queue_settings_survive_reopen() {
    let mut h = Harness::new();
    h.broker
        .configure_queue(
            "q",
            pb::QueueConfig {
                fair_share: true,
                retry_base_ms: 777,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = h
        .produce_msg(pb::NewMessage {
            dedup_key: "k".into(),
            ..msg("q", 4, "x")
        })
        .await;
    let d = h.lease("q", 1).await.remove(0);
    h.broker
        .nack(id, d.lease_token, "bad", 0, true)
        .await
        .unwrap();
    h.reopen(|_| {});
    let s = h.broker.stats(Some("q")).unwrap().remove(0);
    assert_eq!(s.priorities[0].dead, 1);
    assert_eq!(h.broker.list_dead("q", 0, 10).unwrap()[0].id, id);
    let again = h
        .broker
        .produce(vec![pb::NewMessage {
            dedup_key: "k".into(),
            ..msg("q", 4, "x")
        }])
        .await
        .unwrap();
    assert_eq!(again[0], (id, true), "dedup keys survive");
    let requeued = h.broker.requeue_dead("q", vec![], true).await.unwrap();
    assert_eq!(requeued, 1);
    let d = h.lease("q", 1).await.remove(0);
    let r = h
        .broker
        .nack(d.id, d.lease_token, "again", 0, false)
        .await
        .unwrap();
    let delay = r.retry_at_ms - h.now();
    assert!(
        (388..=777).contains(&delay),
        "queue backoff setting kept: {delay}"
    );
}

#[tokio::test]
async fn many_reopens_lose_nothing() {
    let mut h = Harness::new();
    let mut expected = Vec::new();
    for round in 0..8 {
        let out = h
            .broker
            .produce(
                (0..25)
                    .map(|i| msg("q", 0, &format!("r{round}-{i}")))
                    .collect(),
            )
            .await
            .unwrap();
        expected.extend(out.iter().map(|o| o.0));
        // Consume and ack 10 per round.
        for d in h.lease("q", 10).await {
            h.broker.ack(d.id, d.lease_token, vec![]).await.unwrap();
            expected.retain(|&id| id != d.id);
        }
        h.reopen(|_| {});
    }
    let rest = h.lease("q", 1000).await;
    let got: Vec<u64> = rest.iter().map(|d| d.id).collect();
    assert_eq!(got, expected, "every unacked message, in FIFO order");
    // 80 of 200 were acked oldest first, so the 81st (round 3, index 5) leads.
    assert_eq!(payloads(&rest[..1]), ["r3-5"]);
}

#[tokio::test]
async fn weaker_durability_modes_keep_everything_across_a_clean_close() {
    for mode in ["batch:5", "none"] {
        let mut h = Harness::with(|c| c.durability = mode.parse().unwrap());
        let out = h
            .broker
            .produce((0..50).map(|i| msg("q", 0, &format!("{i}"))).collect())
            .await
            .unwrap();
        h.reopen(|_| {});
        let got = h.lease("q", 100).await;
        assert_eq!(got.len(), 50, "{mode}");
        assert_eq!(got[0].id, out[0].0);
    }
}

#[tokio::test]
async fn an_owner_hands_back_its_dead_runs_leases_as_queued_without_an_attempt() {
    let mut h = Harness::new();
    let id = h.produce("q", 0, "p").await;
    let first = h.lease("q", 1).await;
    assert_eq!(first[0].attempt, 1);
    h.reopen(|_| {});
    assert_eq!(h.state(id), State::Leased, "kept by a plain open");
    assert_eq!(h.broker.release_all_leases().await.unwrap(), 1);
    assert_eq!(h.state(id), State::Queued, "ready at once");
    let again = h.lease("q", 1).await;
    assert_eq!((again[0].id, again[0].attempt), (id, 1));
    assert_eq!(h.broker.release_all_leases().await.unwrap(), 1);
}
