//! Settling on the consume stream, spoken in the published proto by a raw
//! gRPC client (as a client in another language would) and through the
//! client library: batched deliveries that honour credit exactly, settle
//! batches answered one outcome per operation, and the limits.

use std::time::Duration;

use docproc_broker::BrokerConfig;
use docproc_client::pb::{
    self, broker_client::BrokerClient, consume_request::Request as Kind, settle_op::Op,
    settle_outcome::Outcome,
};
use docproc_client::{Client, ConsumerOptions, Error, NewMessage};
use docproc_tests::TestBroker;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// A consume stream opened with the raw generated client.
struct Raw {
    rpc: BrokerClient<Channel>,
    send: mpsc::Sender<pb::ConsumeRequest>,
    recv: tonic::Streaming<pb::ConsumeResponse>,
}

impl Raw {
    async fn open(b: &TestBroker, queue: &str, credit: u32) -> anyhow::Result<Self> {
        let mut rpc = BrokerClient::connect(format!("http://{}", b.addr)).await?;
        let (send, rx) = mpsc::channel(16);
        send.send(request(Kind::Subscribe(pb::Subscribe {
            queue: queue.into(),
            credit,
            consumer_id: "raw".into(),
        })))
        .await?;
        let recv = rpc.consume(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { rpc, send, recv })
    }

    /// The next message from the server, within 10 s.
    async fn next(&mut self) -> anyhow::Result<pb::ConsumeResponse> {
        let got = tokio::time::timeout(Duration::from_secs(10), self.recv.message()).await??;
        got.ok_or_else(|| anyhow::anyhow!("the stream ended"))
    }

    /// Deliveries until `n` have come (answers to settle batches meanwhile
    /// are a protocol error here: none was sent).
    async fn deliveries(&mut self, n: usize) -> anyhow::Result<Vec<pb::Delivery>> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = self.next().await?;
            anyhow::ensure!(batch.settled.is_empty(), "an answer nobody asked for");
            out.extend(batch.deliveries);
        }
        anyhow::ensure!(out.len() == n, "{} deliveries for credit {n}", out.len());
        Ok(out)
    }

    /// Sends one settle batch and waits for its answer; deliveries that
    /// arrive meanwhile are returned beside it.
    async fn settle(
        &mut self,
        seq: u64,
        ops: Vec<Op>,
    ) -> anyhow::Result<(pb::Settled, Vec<pb::Delivery>)> {
        let ops = ops
            .into_iter()
            .map(|op| pb::SettleOp { op: Some(op) })
            .collect();
        self.send
            .send(request(Kind::Settle(pb::Settle { seq, ops })))
            .await?;
        let mut delivered = Vec::new();
        loop {
            let batch = self.next().await?;
            delivered.extend(batch.deliveries);
            if let Some(s) = batch.settled.into_iter().next() {
                return Ok((s, delivered));
            }
        }
    }
}

fn request(kind: Kind) -> pb::ConsumeRequest {
    pb::ConsumeRequest {
        request: Some(kind),
    }
}

fn ack(d: &pb::Delivery) -> Op {
    Op::Ack(pb::AckRequest {
        id: d.id,
        lease_token: d.lease_token,
        result: format!("r{}", d.id).into_bytes(),
    })
}

async fn next(c: &mut docproc_client::Consumer) -> anyhow::Result<docproc_client::Delivery> {
    let got = tokio::time::timeout(Duration::from_secs(10), c.next()).await?;
    Ok(got.ok_or_else(|| anyhow::anyhow!("the consumer ended"))??)
}

fn failure(o: &pb::SettleOutcome) -> Option<(tonic::Code, &str)> {
    match &o.outcome {
        Some(Outcome::Failure(f)) => Some((tonic::Code::from(f.code), f.message.as_str())),
        _ => None,
    }
}

async fn produce(client: &Client, queue: &str, n: u8) -> anyhow::Result<Vec<u64>> {
    Ok(client
        .produce((0..n).map(|i| NewMessage::new(queue, vec![i])).collect())
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_come_in_batches_and_never_beyond_the_credit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let b = TestBroker::start(BrokerConfig::with_dir(dir.path())).await?;
    let client = Client::connect(&b.url()).await?;
    produce(&client, "q", 20).await?;
    let mut raw = Raw::open(&b, "q", 5).await?;
    let first = raw.recv.message().await?.expect("a batch");
    assert_eq!(
        first.deliveries.len(),
        5,
        "ready messages up to the credit come as one batch"
    );
    raw.send.send(request(Kind::Credit(3))).await?;
    let more = raw.deliveries(3).await?;
    // The credit is spent: a settle round trip (answered after everything
    // sent before it was taken) brings no further delivery.
    let (settled, extra) = raw.settle(1, vec![ack(&more[0])]).await?;
    assert!(extra.is_empty(), "deliveries beyond the credit: {extra:?}");
    assert_eq!(settled.seq, 1);
    let s = client.stats(Some("q")).await?.remove(0);
    let level = &s.priorities[0];
    assert_eq!((level.leased, level.ready), (7, 12), "8 leased, one acked");
    let c = s.counters.expect("counters");
    assert_eq!((c.delivered, c.acked), (8, 1));
    // Credit given back brings exactly that many more.
    raw.send.send(request(Kind::Credit(2))).await?;
    assert_eq!(raw.deliveries(2).await?.len(), 2);
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_batch_answers_each_operation_on_its_own() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let b = TestBroker::start(BrokerConfig::with_dir(dir.path())).await?;
    let client = Client::connect(&b.url()).await?;
    let ids = produce(&client, "q", 4).await?;
    let mut raw = Raw::open(&b, "q", 4).await?;
    let d = raw.deliveries(4).await?;
    let ops = vec![
        ack(&d[0]),
        // A stale token fails alone.
        Op::Ack(pb::AckRequest {
            id: d[1].id,
            lease_token: d[1].lease_token ^ 2,
            result: Vec::new(),
        }),
        Op::Nack(pb::NackRequest {
            id: d[2].id,
            lease_token: d[2].lease_token,
            error: "boom".into(),
            retry_delay_ms: 60_000,
            ..Default::default()
        }),
        Op::Extend(pb::ExtendRequest {
            id: d[3].id,
            lease_token: d[3].lease_token,
            extend_ms: 120_000,
            progress: b"half".to_vec(),
            has_progress: true,
        }),
        // Acked a moment ago in this very batch: now it is completed.
        ack(&d[0]),
        Op::Ack(pb::AckRequest {
            id: 987_654_321,
            lease_token: 1,
            result: Vec::new(),
        }),
        Op::Nack(pb::NackRequest {
            id: d[1].id,
            lease_token: d[1].lease_token,
            release: true,
            ..Default::default()
        }),
    ];
    let (settled, _) = raw.settle(7, ops).await?;
    assert_eq!(settled.seq, 7);
    let o = &settled.outcomes;
    assert_eq!(o.len(), 7, "one outcome per operation");
    assert!(matches!(
        o[0].outcome,
        Some(Outcome::Ack(pb::AckResponse { cancelled: false }))
    ));
    assert_eq!(
        failure(&o[1]).map(|f| f.0),
        Some(tonic::Code::FailedPrecondition)
    );
    match &o[2].outcome {
        Some(Outcome::Nack(n)) => {
            assert_eq!(n.state(), pb::State::Retrying);
            assert!(n.retry_at_ms > 0);
        }
        other => panic!("nack answered {other:?}"),
    }
    match &o[3].outcome {
        Some(Outcome::Extend(e)) => assert!(e.lease_deadline_ms > d[3].lease_deadline_ms),
        other => panic!("extend answered {other:?}"),
    }
    assert!(
        failure(&o[4]).is_some(),
        "a second ack of the same lease fails"
    );
    assert_eq!(failure(&o[5]).map(|f| f.0), Some(tonic::Code::NotFound));
    match &o[6].outcome {
        Some(Outcome::Nack(n)) => assert_eq!(n.state(), pb::State::Queued),
        other => panic!("release answered {other:?}"),
    }
    // What the answers say is what is stored.
    let got = |id| client.get(id, false);
    let m0 = got(ids[0]).await?;
    assert_eq!(
        (m0.state(), m0.result.clone()),
        (pb::State::Completed, format!("r{}", ids[0]).into_bytes())
    );
    assert_eq!(got(ids[1]).await?.state(), pb::State::Queued);
    let m2 = got(ids[2]).await?;
    assert_eq!(
        (m2.state(), m2.last_error.as_str()),
        (pb::State::Retrying, "boom")
    );
    let m3 = got(ids[3]).await?;
    assert_eq!(
        (m3.state(), m3.progress.clone()),
        (pb::State::Leased, b"half".to_vec())
    );
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_operations_oversize_batches_and_late_subscribes_get_clear_codes(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let b = TestBroker::start(BrokerConfig::with_dir(dir.path())).await?;
    let client = Client::connect(&b.url()).await?;
    produce(&client, "q", 1).await?;
    let mut raw = Raw::open(&b, "q", 1).await?;
    let d = raw.deliveries(1).await?;
    // An operation naming nothing fails alone.
    raw.send
        .send(request(Kind::Settle(pb::Settle {
            seq: 1,
            ops: vec![
                pb::SettleOp { op: None },
                pb::SettleOp {
                    op: Some(ack(&d[0])),
                },
            ],
        })))
        .await?;
    let s = raw.next().await?.settled.remove(0);
    assert_eq!(
        failure(&s.outcomes[0]).map(|f| f.0),
        Some(tonic::Code::InvalidArgument)
    );
    assert!(matches!(s.outcomes[1].outcome, Some(Outcome::Ack(_))));
    // A batch over the limit ends the stream with RESOURCE_EXHAUSTED.
    let ops = (0..=docproc_broker::MAX_SETTLE_BATCH as u64)
        .map(|i| pb::SettleOp {
            op: Some(Op::Ack(pb::AckRequest {
                id: i + 1,
                lease_token: 1,
                result: Vec::new(),
            })),
        })
        .collect();
    raw.send
        .send(request(Kind::Settle(pb::Settle { seq: 2, ops })))
        .await?;
    let err = raw.recv.message().await.expect_err("the stream ends");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    // A second subscribe is refused.
    let mut raw = Raw::open(&b, "q", 1).await?;
    raw.send
        .send(request(Kind::Subscribe(pb::Subscribe::default())))
        .await?;
    let err = raw.recv.message().await.expect_err("the stream ends");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // The server is still serving.
    assert_eq!(
        raw.rpc
            .stats(pb::StatsRequest::default())
            .await?
            .into_inner()
            .queues
            .len(),
        1
    );
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_acks_ride_its_stream_and_outlive_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let b = TestBroker::start(BrokerConfig::with_dir(dir.path())).await?;
    let client = Client::connect(&b.url()).await?;
    let ids = produce(&client, "q", 200).await?;
    let mut consumer = client.consume(
        "q",
        ConsumerOptions {
            prefetch: 64,
            ..Default::default()
        },
    );
    // Many acks at once from separate tasks: coalesced into batches.
    let mut acks = futures::stream::FuturesUnordered::new();
    let mut held = Vec::new();
    for i in 0..200 {
        let d = next(&mut consumer).await?;
        if i < 190 {
            acks.push(tokio::spawn(async move {
                d.ack(d.id().to_be_bytes().to_vec()).await
            }));
        } else {
            held.push(d);
        }
        while let Some(Some(r)) = futures::FutureExt::now_or_never(acks.next()) {
            assert!(!r??);
        }
    }
    while let Some(r) = acks.next().await {
        assert!(!r??);
    }
    // A stale token is refused on the stream as over the unary call.
    let stale = held.pop().expect("held");
    stale.ack(Vec::new()).await?;
    assert!(matches!(
        stale.ack(Vec::new()).await,
        Err(Error::FailedPrecondition(_))
    ));
    // With the consumer gone, its deliveries still settle (unary calls).
    drop(consumer);
    for d in &held {
        d.nack("later", Some(Duration::from_secs(60)), false)
            .await?;
    }
    let s = client.stats(Some("q")).await?.remove(0);
    let c = s.counters.expect("counters");
    assert_eq!((c.acked, c.nacked, c.retried), (191, 9, 9));
    let m = client.get(ids[5], false).await?;
    assert_eq!(m.state(), pb::State::Completed);
    assert_eq!(m.result, ids[5].to_be_bytes());
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_gives_its_credit_back_before_it_is_answered_or_dropped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let b = TestBroker::start(BrokerConfig::with_dir(dir.path())).await?;
    let client = Client::connect(&b.url()).await?;
    produce(&client, "q", 3).await?;
    let mut consumer = client.consume(
        "q",
        ConsumerOptions {
            prefetch: 1,
            ..Default::default()
        },
    );
    let first = next(&mut consumer).await?;
    // Acked and still held: the next delivery comes all the same.
    first.ack(Vec::new()).await?;
    let second = next(&mut consumer).await?;
    // Released and held: the same.
    second.release().await?;
    let third = next(&mut consumer).await?;
    assert_ne!(third.id(), first.id());
    // Extending does not give credit back; dropping does.
    third.extend(None).await?;
    drop((first, second));
    let s = client.stats(Some("q")).await?.remove(0);
    assert_eq!(s.priorities[0].leased, 1, "only the credit of one is out");
    b.stop().await;
    Ok(())
}
