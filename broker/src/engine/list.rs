//! Listing messages newest first: live ones from the in-memory indexes
//! (per queue, per owner), final ones from the `finals` or `owners` index,
//! merged by `(created_at, id)`.

use std::collections::HashSet;
use std::sync::Arc;

use docproc_proto::broker::v1::{ListCursor, ListRequest, ListResponse, Message, State as S};

use super::Broker;
use crate::error::{Error, Result};
use crate::keys;
use crate::record::is_final;
use crate::store::{Cf, Durable};

/// Page size when a request names none.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest page.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Decodes an index key into `(created_at, id)`.
type DecodeKey = fn(&[u8]) -> Result<(u64, u64)>;

/// Most distinct queues one list may name.
const MAX_LIST_QUEUES: usize = 32;

const ALL_STATES: [S; 7] = [
    S::Queued,
    S::Delayed,
    S::Leased,
    S::Retrying,
    S::Completed,
    S::Dead,
    S::Cancelled,
];

impl Broker {
    /// A page of messages, newest first, filtered by queue, state, owner and
    /// creation time. Live messages come from the in-memory indexes (see
    /// [`live_hits`]); final ones from range scans of the `finals` (or
    /// `owners`) index, one per queue and final state asked for. A message
    /// that left the live indexes is scanned only once its final record is
    /// written, so a message turning final during the listing is never
    /// missed. Both halves run on the blocking pool, off the async
    /// runtime's threads.
    pub async fn list(&self, req: ListRequest) -> Result<ListResponse> {
        let plan = Arc::new(Plan::new(req)?);
        if plan.lower >= plan.upper {
            return Ok(ListResponse::default());
        }
        let (broker, p) = (self.clone(), plan.clone());
        let (live, queues, written) = blocking(move || Ok(broker.live_part(&p))).await?;
        // Every final record of a message absent from `live` was submitted
        // before the barrier, so the scans below see it.
        written.wait().await?;
        let broker = self.clone();
        let with_payload = plan.with_payload;
        let (mut read, next) = blocking(move || broker.final_part(&plan, live, &queues)).await?;
        // A live hit that turned final after the live half is read once its
        // final record is written.
        let unread: Vec<u64> = read
            .iter()
            .filter(|(_, m)| m.is_none())
            .map(|(id, _)| *id)
            .collect();
        if !unread.is_empty() {
            self.inner.store.barrier().wait().await?;
            let broker = self.clone();
            let mut again = blocking(move || {
                unread
                    .into_iter()
                    .map(|id| broker.read_listed(id, with_payload))
                    .collect::<Result<Vec<_>>>()
            })
            .await?
            .into_iter();
            for (_, m) in read.iter_mut().filter(|(_, m)| m.is_none()) {
                *m = again.next().flatten();
            }
        }
        Ok(ListResponse {
            // Still absent: removed by the retention sweep meanwhile.
            messages: read.into_iter().filter_map(|(_, m)| m).collect(),
            next,
        })
    }

    /// A listed message, `None` when it is not to be found now.
    fn read_listed(&self, id: u64, with_payload: bool) -> Result<Option<Message>> {
        match self.get(id, with_payload) {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The live half under the state lock: the newest live matches, the
    /// queues to scan for final ones, and a barrier behind every commit
    /// already applied in memory.
    fn live_part(&self, p: &Plan) -> (Vec<(u64, u64)>, Vec<String>, Durable) {
        let names: HashSet<&str> = p.queues.iter().map(String::as_str).collect();
        let live: Vec<S> = p.states.iter().copied().filter(|s| !is_final(*s)).collect();
        let range = (p.lower, p.upper);
        let mut hits = Vec::new();
        let st = self.inner.state.lock();
        if p.owner.is_empty() {
            live_hits(&st, &live, &names, range, p.want, &mut hits);
        } else {
            owner_live_hits(&st, &p.owner, &live, &names, range, p.want, &mut hits);
        }
        let queues = if names.is_empty() {
            st.queues.keys().cloned().collect()
        } else {
            p.queues.clone()
        };
        // Taken under the lock: commits are submitted under it too.
        let written = self.inner.store.barrier();
        drop(st);
        keep_newest(&mut hits, p.want);
        (hits, queues, written)
    }

    /// The final half: scans the final indexes, merges with the live hits
    /// and reads the page's records (`None` for one not found now), with
    /// the cursor of the next page.
    fn final_part(
        &self,
        p: &Plan,
        mut hits: Vec<(u64, u64)>,
        queues: &[String],
    ) -> Result<(Listed, Option<ListCursor>)> {
        let (lower, upper) = (p.lower, p.upper);
        for q in queues {
            for s in p.states.iter().filter(|s| is_final(**s)) {
                let state = *s as u8;
                let (cf, from, to, decode): (_, _, _, DecodeKey) = if p.owner.is_empty() {
                    (
                        Cf::Finals,
                        keys::final_key(q, state, lower.0, lower.1),
                        keys::final_key(q, state, upper.0, upper.1),
                        keys::decode_final_key,
                    )
                } else {
                    let o = p.owner.as_str();
                    (
                        Cf::Owners,
                        keys::owner_final_key(o, q, state, lower.0, lower.1),
                        keys::owner_final_key(o, q, state, upper.0, upper.1),
                        keys::decode_owner_final_key,
                    )
                };
                let mut n = 0;
                self.inner.store.scan_rev(cf, &from, &to, |k, _| {
                    hits.push(decode(k)?);
                    n += 1;
                    Ok(n < p.want)
                })?;
                keep_newest(&mut hits, p.want);
            }
        }
        hits.sort_unstable_by(|a, b| b.cmp(a));
        // A message that turned final during the listing can be seen twice.
        hits.dedup();
        let more = hits.len() > p.limit;
        hits.truncate(p.limit);
        let read = hits
            .iter()
            .map(|&(_, id)| Ok((id, self.read_listed(id, p.with_payload)?)))
            .collect::<Result<Listed>>()?;
        let next = hits
            .last()
            .filter(|_| more)
            .map(|&(created_at_ms, id)| ListCursor { created_at_ms, id });
        Ok((read, next))
    }
}

/// A page's messages in order, `None` where one was not found.
type Listed = Vec<(u64, Option<Message>)>;

/// A validated list request.
struct Plan {
    limit: usize,
    /// `limit + 1`: one more tells whether there is a next page.
    want: usize,
    /// Each named queue once: a repeated name scanned again would crowd
    /// the page with copies of the same messages.
    queues: Vec<String>,
    states: Vec<S>,
    owner: String,
    with_payload: bool,
    /// Matches are `(created_at, id)` in `[lower, upper)`.
    lower: (u64, u64),
    upper: (u64, u64),
}

impl Plan {
    fn new(req: ListRequest) -> Result<Self> {
        let limit = match req.limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        for q in &req.queues {
            keys::validate_queue(q)?;
        }
        keys::validate_owner(&req.owner)?;
        // A client names the queues: repeats count once, and a list scans
        // at most MAX_LIST_QUEUES of them.
        let mut queues = req.queues;
        queues.sort_unstable();
        queues.dedup();
        if queues.len() > MAX_LIST_QUEUES {
            return Err(Error::InvalidArgument(format!(
                "a list names at most {MAX_LIST_QUEUES} queues, not {}",
                queues.len()
            )));
        }
        let states = if req.states.is_empty() {
            ALL_STATES.to_vec()
        } else {
            req.states
                .iter()
                .map(|&s| match S::try_from(s) {
                    Ok(S::Unspecified) | Err(_) => {
                        Err(Error::InvalidArgument(format!("unknown state {s}")))
                    }
                    Ok(s) => Ok(s),
                })
                .collect::<Result<Vec<_>>>()?
        };
        let mut upper = (u64::MAX, u64::MAX);
        if req.created_to_ms > 0 {
            upper = upper.min((req.created_to_ms, 0));
        }
        if let Some(c) = &req.after {
            upper = upper.min((c.created_at_ms, c.id));
        }
        Ok(Plan {
            limit,
            want: limit + 1,
            queues,
            states,
            owner: req.owner,
            with_payload: req.with_payload,
            lower: (req.created_from_ms, 0),
            upper,
        })
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("list task: {e}")))?
}

/// The newest `(created_at, id)` of live messages in `states`, of the
/// `names`d queues (every queue when empty), in `[range.0, range.1)`: at
/// most `want` per queue. A list that asks for queued messages walks each
/// queue's own index newest first and stops at `want` matches, so it costs
/// what it returns, not the whole backlog; one that asks only for leased,
/// delayed or retrying ones reads their indexes (leases and timers), which
/// never hold the queued backlog.
fn live_hits(
    st: &super::state::State,
    states: &[S],
    names: &HashSet<&str>,
    range: ((u64, u64), (u64, u64)),
    want: usize,
    hits: &mut Vec<(u64, u64)>,
) {
    if states.is_empty() {
        return;
    }
    let (lower, upper) = range;
    let named = |q: &str| names.is_empty() || names.contains(q);
    let matches = |id: u64| {
        st.jobs
            .get(&id)
            .filter(|s| states.contains(&s.state()) && named(&s.queue))
            .map(|s| (s.created_at_ms, id))
            .filter(|k| *k >= lower && *k < upper)
    };
    if !states.contains(&S::Queued) {
        // A message is in one of the two at a time; the page is cut later.
        if states.contains(&S::Leased) {
            hits.extend(st.leases.iter().filter_map(|&(_, id)| matches(id)));
        }
        if states.iter().any(|s| matches!(s, S::Delayed | S::Retrying)) {
            hits.extend(st.timers.iter().filter_map(|&(_, id)| matches(id)));
        }
        return;
    }
    let queues: Vec<&super::state::QueueState> = if names.is_empty() {
        st.queues.values().collect()
    } else {
        names.iter().filter_map(|q| st.queues.get(*q)).collect()
    };
    for q in queues {
        let mut n = 0;
        for &(created, id) in q.live.range(lower..upper).rev() {
            if n >= want {
                break;
            }
            if st
                .jobs
                .get(&id)
                .is_some_and(|s| states.contains(&s.state()))
            {
                hits.push((created, id));
                n += 1;
            }
        }
    }
}

/// [`live_hits`] of one owner: walks the owner's own index newest first
/// and stops at `want` matches, so a tenant's page costs what it returns
/// whatever the other tenants hold.
fn owner_live_hits(
    st: &super::state::State,
    owner: &str,
    states: &[S],
    names: &HashSet<&str>,
    range: ((u64, u64), (u64, u64)),
    want: usize,
    hits: &mut Vec<(u64, u64)>,
) {
    let (Some(index), false) = (st.owners.get(owner), states.is_empty()) else {
        return;
    };
    let (lower, upper) = range;
    let mut n = 0;
    for &(created, id) in index.range(lower..upper).rev() {
        if n >= want {
            break;
        }
        let matches = st.jobs.get(&id).is_some_and(|s| {
            states.contains(&s.state()) && (names.is_empty() || names.contains(s.queue.as_str()))
        });
        if matches {
            hits.push((created, id));
            n += 1;
        }
    }
}

/// Keeps the `n` largest keys (in no particular order).
fn keep_newest(hits: &mut Vec<(u64, u64)>, n: usize) {
    if hits.len() > n {
        hits.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
        hits.truncate(n);
    }
}
