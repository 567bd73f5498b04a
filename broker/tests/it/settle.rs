//! Settling in bulk through the engine: a batch is applied in order as one
//! transaction, each operation answered on its own, and what was answered
//! is what a reopened database holds.

use crate::common::*;
use docproc_broker::{pb, Error, MAX_SETTLE_BATCH};
use pb::{settle_op::Op, settle_outcome::Outcome, State};

fn op(o: Op) -> pb::SettleOp {
    pb::SettleOp { op: Some(o) }
}

fn ack(d: &pb::Delivery, result: &[u8]) -> pb::SettleOp {
    op(Op::Ack(pb::AckRequest {
        id: d.id,
        lease_token: d.lease_token,
        result: result.to_vec(),
    }))
}

fn code(o: &pb::SettleOutcome) -> Option<i32> {
    match &o.outcome {
        Some(Outcome::Failure(f)) => Some(f.code),
        _ => None,
    }
}

#[tokio::test]
async fn a_batch_applies_each_operation_alone_and_survives_a_reopen() {
    let mut h = Harness::with(|c| c.max_message_bytes = 1024);
    for i in 0..4 {
        h.produce("q", 0, &format!("m{i}")).await;
    }
    let d = h.lease("q", 4).await;
    let ops = vec![
        ack(&d[0], b"done"),
        // Over the size limit: this ack fails, its lease stays.
        ack(&d[1], &[0u8; 2048]),
        op(Op::Nack(pb::NackRequest {
            id: d[2].id,
            lease_token: d[2].lease_token,
            error: "bad page".into(),
            dead_letter: true,
            ..Default::default()
        })),
        // A stale token: fails alone.
        op(Op::Extend(pb::ExtendRequest {
            id: d[3].id,
            lease_token: d[3].lease_token + 2,
            ..Default::default()
        })),
        // Later operations see earlier ones: d[1] is still leased.
        ack(&d[1], b"small"),
    ];
    let outcomes = h.broker.settle(ops).unwrap().await;
    assert_eq!(outcomes.len(), 5);
    assert!(matches!(outcomes[0].outcome, Some(Outcome::Ack(_))));
    assert_eq!(
        code(&outcomes[1]),
        Some(tonic::Code::ResourceExhausted as i32)
    );
    match &outcomes[2].outcome {
        Some(Outcome::Nack(n)) => assert_eq!(n.state(), State::Dead),
        other => panic!("nack answered {other:?}"),
    }
    assert_eq!(
        code(&outcomes[3]),
        Some(tonic::Code::FailedPrecondition as i32)
    );
    assert!(matches!(outcomes[4].outcome, Some(Outcome::Ack(_))));
    // What was answered is on disk.
    h.reopen(|_| {});
    let m0 = h.broker.get(d[0].id, false).unwrap();
    assert_eq!(
        (m0.state(), m0.result),
        (State::Completed, b"done".to_vec())
    );
    let m1 = h.broker.get(d[1].id, false).unwrap();
    assert_eq!(
        (m1.state(), m1.result),
        (State::Completed, b"small".to_vec())
    );
    let m2 = h.broker.get(d[2].id, false).unwrap();
    assert_eq!(
        (m2.state(), m2.last_error.as_str()),
        (State::Dead, "bad page")
    );
    assert_eq!(h.state(d[3].id), State::Leased);
    let c = h.broker.stats(Some("q")).unwrap()[0].counters.unwrap();
    assert_eq!((c.acked, c.nacked, c.dead_lettered), (2, 1, 1));
}

#[tokio::test]
async fn an_oversize_batch_is_refused_whole() {
    let h = Harness::new();
    h.produce("q", 0, "x").await;
    let d = h.lease("q", 1).await;
    let ops = vec![ack(&d[0], b""); MAX_SETTLE_BATCH + 1];
    assert!(matches!(h.broker.settle(ops), Err(Error::TooLarge(_))));
    assert_eq!(h.state(d[0].id), State::Leased, "nothing was applied");
    // An empty batch is answered with nothing.
    assert!(h.broker.settle(Vec::new()).unwrap().await.is_empty());
}
