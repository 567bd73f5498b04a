//! Listing messages newest first: live ones from the in-memory indexes
//! (per queue, per owner), final ones from the `finals` or `owners` index,
//! merged by `(created_at, id)`.

use std::collections::HashSet;

use docproc_proto::broker::v1::{ListCursor, ListRequest, ListResponse, State as S};

use super::Broker;
use crate::error::{Error, Result};
use crate::keys;
use crate::record::is_final;
use crate::store::Cf;

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
    /// A page of messages, newest first, filtered by queue, state and
    /// creation time. Live messages come from each queue's in-memory index
    /// (see [`live_hits`]); final ones from range scans of the `finals`
    /// index, one per queue and final state asked for. It blocks on
    /// RocksDB reads: async callers use [`Broker::list_async`].
    pub fn list(&self, req: &ListRequest) -> Result<ListResponse> {
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
        let names: HashSet<&str> = req.queues.iter().map(String::as_str).collect();
        if names.len() > MAX_LIST_QUEUES {
            return Err(Error::InvalidArgument(format!(
                "a list names at most {MAX_LIST_QUEUES} queues, not {}",
                names.len()
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
        // Matches are `(created_at, id)` in `[lower, upper)`.
        let mut upper = (u64::MAX, u64::MAX);
        if req.created_to_ms > 0 {
            upper = upper.min((req.created_to_ms, 0));
        }
        if let Some(c) = &req.after {
            upper = upper.min((c.created_at_ms, c.id));
        }
        let lower = (req.created_from_ms, 0);
        if lower >= upper {
            return Ok(ListResponse::default());
        }
        let want = limit + 1;

        let mut hits = Vec::new();
        let queues: Vec<String> = {
            let st = self.inner.state.lock();
            let live: Vec<S> = states.iter().copied().filter(|s| !is_final(*s)).collect();
            if req.owner.is_empty() {
                live_hits(&st, &live, &names, (lower, upper), want, &mut hits);
            } else {
                owner_live_hits(
                    &st,
                    &req.owner,
                    &live,
                    &names,
                    (lower, upper),
                    want,
                    &mut hits,
                );
            }
            if names.is_empty() {
                st.queues.keys().cloned().collect()
            } else {
                // Each named queue once: a repeated name scanned again
                // would crowd the page with copies of the same messages.
                names.iter().map(|q| q.to_string()).collect()
            }
        };
        keep_newest(&mut hits, want);
        for q in &queues {
            for s in states.iter().filter(|s| is_final(**s)) {
                let state = *s as u8;
                let (cf, from, to, decode): (_, _, _, DecodeKey) = if req.owner.is_empty() {
                    (
                        Cf::Finals,
                        keys::final_key(q, state, lower.0, lower.1),
                        keys::final_key(q, state, upper.0, upper.1),
                        keys::decode_final_key,
                    )
                } else {
                    let o = req.owner.as_str();
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
                    Ok(n < want)
                })?;
                keep_newest(&mut hits, want);
            }
        }
        hits.sort_unstable_by(|a, b| b.cmp(a));
        // A message that turned final during the listing can be seen twice.
        hits.dedup();
        let more = hits.len() > limit;
        hits.truncate(limit);
        let mut messages = Vec::with_capacity(hits.len());
        for &(_, id) in &hits {
            match self.get(id, req.with_payload) {
                Ok(m) => messages.push(m),
                // Removed by the retention sweep meanwhile.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let next = hits
            .last()
            .filter(|_| more)
            .map(|&(created_at_ms, id)| ListCursor { created_at_ms, id });
        Ok(ListResponse { messages, next })
    }
}

impl Broker {
    /// [`Broker::list`] on the blocking pool, off the async runtime's
    /// threads (a list reads RocksDB and may take the state lock for a
    /// while).
    pub async fn list_async(&self, req: ListRequest) -> Result<ListResponse> {
        let broker = self.clone();
        tokio::task::spawn_blocking(move || broker.list(&req))
            .await
            .map_err(|e| Error::Unavailable(format!("list task: {e}")))?
    }
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
