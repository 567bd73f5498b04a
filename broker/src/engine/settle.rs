//! Settling leased messages in bulk: acks, nacks and extends applied in
//! order as one transaction (one entry in the group commit) and answered
//! one by one.

use std::future::Future;

use docproc_proto::broker::v1::{
    self as pb, settle_op::Op, settle_outcome::Outcome, ExtendResponse, NackResponse, State as S,
};

use super::{ops, Broker};
use crate::error::{Error, Result};

/// Most operations in one settle batch.
pub const MAX_SETTLE_BATCH: usize = 4096;

/// What one operation did, before its batch is durable.
enum Applied {
    Ack { cancelled: bool },
    Nack { state: S, retry_at_ms: u64 },
    Extend { deadline_ms: u64, cancelled: bool },
}

impl Broker {
    /// Applies `ops` now, in order, as one transaction: each succeeds or
    /// fails alone (a stale lease token fails its own operation, nothing
    /// else). The returned future answers one outcome per operation once
    /// the batch's writes are durable; if they cannot be made durable,
    /// every operation fails `UNAVAILABLE`.
    ///
    /// Taking effect at the call, not at the first poll, keeps batches of
    /// one caller in the order it sent them.
    pub fn settle(
        &self,
        ops: Vec<pb::SettleOp>,
    ) -> Result<impl Future<Output = Vec<pb::SettleOutcome>> + Send + 'static> {
        if ops.len() > MAX_SETTLE_BATCH {
            return Err(Error::TooLarge(format!(
                "settle batch of {} operations exceeds the limit of {MAX_SETTLE_BATCH}",
                ops.len()
            )));
        }
        let limit = self.inner.cfg.max_message_bytes;
        let (results, durable) = self.transact(|st, tx| {
            Ok(ops
                .into_iter()
                .map(|op| {
                    let (id, action) = describe(&op);
                    let applied = match op.op {
                        None => Err(Error::InvalidArgument(
                            "a settle operation names no ack, nack or extend".into(),
                        )),
                        Some(Op::Ack(a)) => {
                            within(limit, "result", a.result.len()).and_then(|()| {
                                ops::ack(st, tx, a.id, a.lease_token, a.result)
                                    .map(|cancelled| Applied::Ack { cancelled })
                            })
                        }
                        Some(Op::Nack(n)) if n.release => ops::release(st, tx, n.id, n.lease_token)
                            .map(|state| Applied::Nack {
                                state,
                                retry_at_ms: 0,
                            }),
                        Some(Op::Nack(n)) => ops::nack(
                            st,
                            tx,
                            n.id,
                            n.lease_token,
                            &n.error,
                            n.retry_delay_ms,
                            n.dead_letter,
                        )
                        .map(|(state, retry_at_ms)| Applied::Nack { state, retry_at_ms }),
                        Some(Op::Extend(e)) => {
                            let progress = e.has_progress.then_some(e.progress);
                            within(limit, "progress", progress.as_ref().map_or(0, Vec::len))
                                .and_then(|()| {
                                    ops::extend(st, tx, e.id, e.lease_token, e.extend_ms, progress)
                                })
                                .map(|(deadline_ms, cancelled)| Applied::Extend {
                                    deadline_ms,
                                    cancelled,
                                })
                        }
                    };
                    (id, action, applied)
                })
                .collect::<Vec<_>>())
        })?;
        // Failures are explained now (a message that is no longer live is
        // looked up among the final ones), so the future only waits.
        let outcomes: Vec<Outcome> = results
            .into_iter()
            .map(|(id, action, applied)| match applied {
                Ok(a) => answer(a),
                Err(e) => failure(self.why_not(e, id, action)),
            })
            .collect();
        Ok(async move {
            let durable = durable.wait().await;
            outcomes
                .into_iter()
                .map(|o| pb::SettleOutcome {
                    outcome: Some(match (&durable, o) {
                        (Err(e), _) => Outcome::Failure(pb::Failure {
                            code: tonic::Code::Unavailable as i32,
                            message: e.to_string(),
                        }),
                        (Ok(()), o) => o,
                    }),
                })
                .collect()
        })
    }
}

/// The message id and the verb of an operation, for its error.
fn describe(op: &pb::SettleOp) -> (u64, &'static str) {
    match &op.op {
        None => (0, "settle"),
        Some(Op::Ack(a)) => (a.id, "ack"),
        Some(Op::Nack(n)) if n.release => (n.id, "release"),
        Some(Op::Nack(n)) => (n.id, "nack"),
        Some(Op::Extend(e)) => (e.id, "extend"),
    }
}

fn within(limit: usize, what: &str, len: usize) -> Result<()> {
    if len > limit {
        return Err(Error::TooLarge(format!(
            "{what} of {len} bytes exceeds the limit of {limit} bytes"
        )));
    }
    Ok(())
}

fn answer(a: Applied) -> Outcome {
    match a {
        Applied::Ack { cancelled } => Outcome::Ack(pb::AckResponse { cancelled }),
        Applied::Nack { state, retry_at_ms } => Outcome::Nack(NackResponse {
            state: state as i32,
            retry_at_ms,
        }),
        Applied::Extend {
            deadline_ms,
            cancelled,
        } => Outcome::Extend(ExtendResponse {
            lease_deadline_ms: deadline_ms,
            cancelled,
        }),
    }
}

fn failure(e: Error) -> Outcome {
    let status = tonic::Status::from(e);
    Outcome::Failure(pb::Failure {
        code: status.code() as i32,
        message: status.message().to_string(),
    })
}
