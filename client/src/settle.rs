//! Settling deliveries over their consumer's stream: acks, nacks and
//! extends from many tasks coalesced into `Settle` batches, each answered
//! to its own caller; the unary calls when no stream can carry them.

use std::collections::HashMap;

use docproc_proto::broker::v1::{
    self as pb, consume_request::Request as ConsumeKind, settle_op::Op, settle_outcome::Outcome,
};
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::error::{Error, Result};

/// Most operations the client puts in one batch (the broker takes 4096).
const MAX_BATCH: usize = 1024;
/// Batches sent and not yet answered on one stream; while this many are
/// out, new operations wait and join the next, larger batch.
const MAX_OUTSTANDING: usize = 8;

/// One operation waiting for its stream.
#[derive(Debug)]
pub(crate) struct Request {
    op: Op,
    reply: oneshot::Sender<Reply>,
}

/// What the consumer's task answers an operation.
#[derive(Debug)]
enum Reply {
    /// The broker's answer, once durable.
    Done(Outcome),
    /// No stream was connected: the caller sends it by itself.
    NotSent(Op),
}

/// The handle a delivery settles through.
#[derive(Debug, Clone)]
pub(crate) struct Settler(mpsc::UnboundedSender<Request>);

impl Settler {
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }

    /// Settles `op` on the stream, or with the unary call when the stream
    /// is gone or reconnecting. An operation sent on a stream that then
    /// breaks fails `Unavailable`: it may or may not have been applied.
    pub(crate) async fn settle(&self, client: &Client, op: Op) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let op = match self.0.send(Request { op, reply }) {
            Ok(()) => match answer.await {
                Ok(Reply::Done(outcome)) => return checked(outcome),
                Ok(Reply::NotSent(op)) => op,
                Err(_) => {
                    return Err(Error::Unavailable(
                        "the consume stream broke before the broker answered; \
                         the operation may have been applied"
                            .into(),
                    ))
                }
            },
            Err(mpsc::error::SendError(r)) => r.op,
        };
        unary(client, op).await
    }
}

/// A failure outcome as the error it stands for.
fn checked(outcome: Outcome) -> Result<Outcome> {
    match outcome {
        Outcome::Failure(f) => Err(Error::from(tonic::Status::new(
            tonic::Code::from(f.code),
            f.message,
        ))),
        o => Ok(o),
    }
}

/// `op` through its own RPC.
pub(crate) async fn unary(client: &Client, op: Op) -> Result<Outcome> {
    let mut rpc = client.rpc.clone();
    Ok(match op {
        Op::Ack(r) => Outcome::Ack(rpc.ack(r).await?.into_inner()),
        Op::Nack(r) => Outcome::Nack(rpc.nack(r).await?.into_inner()),
        Op::Extend(r) => Outcome::Extend(rpc.extend(r).await?.into_inner()),
    })
}

/// The answer of the wrong kind: the broker broke the protocol.
pub(crate) fn mismatch(o: &Outcome) -> Error {
    Error::Other {
        code: tonic::Code::Internal,
        message: format!("the broker answered a settle operation with {o:?}"),
    }
}

/// The settle side of one connected stream: numbers batches and routes
/// each answer to the callers of its operations.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    seq: u64,
    waiting: HashMap<u64, Vec<oneshot::Sender<Reply>>>,
}

impl Batches {
    /// Whether another batch may be sent now.
    pub(crate) fn may_send(&self) -> bool {
        self.waiting.len() < MAX_OUTSTANDING
    }

    /// Whether answers are still owed.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// `first` and every operation already queued behind it, as one request.
    pub(crate) fn batch(
        &mut self,
        first: Request,
        queued: &mut mpsc::UnboundedReceiver<Request>,
    ) -> pb::ConsumeRequest {
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        let mut next = Some(first);
        while let Some(r) = next.take() {
            ops.push(pb::SettleOp { op: Some(r.op) });
            replies.push(r.reply);
            if ops.len() < MAX_BATCH {
                next = queued.try_recv().ok();
            }
        }
        self.seq += 1;
        self.waiting.insert(self.seq, replies);
        pb::ConsumeRequest {
            request: Some(ConsumeKind::Settle(pb::Settle { seq: self.seq, ops })),
        }
    }

    /// Hands each outcome of an answered batch to its caller.
    pub(crate) fn answer(&mut self, settled: pb::Settled) {
        let Some(replies) = self.waiting.remove(&settled.seq) else {
            tracing::warn!(seq = settled.seq, "answer to a settle batch never sent");
            return;
        };
        // A missing outcome drops its caller's reply: it sees `Unavailable`.
        for (reply, o) in replies.into_iter().zip(settled.outcomes) {
            if let Some(outcome) = o.outcome {
                let _ = reply.send(Reply::Done(outcome));
            }
        }
    }
}

/// Sends every queued operation back to its caller unsent (no stream).
pub(crate) fn refuse_queued(queued: &mut mpsc::UnboundedReceiver<Request>) {
    while let Ok(r) = queued.try_recv() {
        refuse(r);
    }
}

/// Sends one operation back to its caller unsent.
pub(crate) fn refuse(r: Request) {
    let _ = r.reply.send(Reply::NotSent(r.op));
}
