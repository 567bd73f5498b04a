//! State transitions of messages: each changes the in-memory indexes and
//! records the matching writes and events in a [`Tx`].

use std::collections::BTreeSet;
use std::sync::Arc;

use docproc_proto::broker::v1::{Event, NewMessage, State as S};
use prost::Message as _;
use tokio::sync::Notify;

use super::state::State;
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::keys::{self, Blob};
use crate::record::{is_final, state_word, MsgRecord, Status};
use crate::store::{Cf, Commit};

/// One transaction: the writes and events of an engine call.
pub(crate) struct Tx<'a> {
    pub(crate) cfg: &'a BrokerConfig,
    pub(crate) now: u64,
    pub(crate) commit: Commit,
    counters: BTreeSet<String>,
    wake: Vec<Arc<Notify>>,
    /// A timer or lease earlier than before may exist.
    pub(crate) timers_changed: bool,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(cfg: &'a BrokerConfig, now: u64) -> Self {
        Self {
            cfg,
            now,
            commit: Commit::default(),
            counters: BTreeSet::new(),
            wake: Vec::new(),
            timers_changed: false,
        }
    }

    /// Adds the counters of touched queues and wakes their consumers.
    pub(crate) fn finish(mut self, st: &State) -> (Commit, bool) {
        for q in &self.counters {
            if let Some(qs) = st.queues.get(q) {
                self.commit.put(
                    Cf::Meta,
                    keys::meta_counters(q),
                    qs.counters.encode_to_vec(),
                );
            }
        }
        for n in self.wake {
            n.notify_waiters();
        }
        (self.commit, self.timers_changed)
    }

    fn put_live(&mut self, id: u64, s: &Status) {
        self.commit
            .put(Cf::Live, keys::id_key(id), s.encode_to_vec());
    }

    fn event(&mut self, id: u64, s: &Status, progress: bool) {
        self.commit.events.push(Event {
            seq: 0,
            id,
            queue: s.queue.clone(),
            state: s.state,
            attempts: s.attempts,
            error: s.last_error.clone(),
            worker_id: s.worker_id.clone(),
            at_ms: self.now,
            priority: s.priority,
            progress,
            lagged: 0,
        });
    }
}

fn count(
    st: &mut State,
    tx: &mut Tx<'_>,
    queue: &str,
    f: impl FnOnce(&mut docproc_proto::broker::v1::Counters),
) {
    let q = st.queue(queue, tx.cfg);
    f(&mut q.counters);
    if !tx.counters.contains(queue) {
        tx.counters.insert(queue.to_string());
    }
}

/// Checks a new message against the limits.
pub(crate) fn validate(m: &NewMessage, cfg: &BrokerConfig) -> Result<()> {
    keys::validate_queue(&m.queue)?;
    keys::validate_owner(&m.owner)?;
    if m.priority > 255 {
        return Err(Error::InvalidArgument(format!(
            "priority must be 0..=255, got {}",
            m.priority
        )));
    }
    if m.payload.len() > cfg.max_message_bytes {
        return Err(Error::TooLarge(format!(
            "payload of {} bytes exceeds the limit of {} bytes",
            m.payload.len(),
            cfg.max_message_bytes
        )));
    }
    let header_bytes: usize = m.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header_bytes > cfg.max_header_bytes {
        return Err(Error::TooLarge(format!(
            "headers of {header_bytes} bytes exceed the limit of {} bytes",
            cfg.max_header_bytes
        )));
    }
    if m.dedup_key.len() > 1024 {
        return Err(Error::InvalidArgument(
            "dedup_key is longer than 1024 bytes".into(),
        ));
    }
    if m.max_attempts > 10_000 {
        return Err(Error::InvalidArgument(
            "max_attempts must be at most 10000".into(),
        ));
    }
    if m.lease_timeout_ms > 24 * 3600 * 1000 {
        return Err(Error::InvalidArgument(
            "lease_timeout_ms must be at most 24 h".into(),
        ));
    }
    Ok(())
}

/// Stores one validated message; returns its id and whether it was a duplicate.
pub(crate) fn produce(st: &mut State, tx: &mut Tx<'_>, m: NewMessage) -> (u64, bool) {
    let now = tx.now;
    let window = st.queue(&m.queue, tx.cfg).config.dedup_window_ms;
    if !m.dedup_key.is_empty() {
        let k = (m.queue.clone(), m.dedup_key.clone());
        if let Some(&(id, expires)) = st.dedup.get(&k) {
            if expires > now {
                count(st, tx, &m.queue, |c| c.deduplicated += 1);
                return (id, true);
            }
        }
    }
    let id = st.next_id(now);
    let q = st.queue(&m.queue, tx.cfg);
    let priority = m.priority as u8;
    let delayed = m.not_before_ms > now;
    let mut s = Status {
        queue: m.queue.clone(),
        priority: m.priority,
        attempts: 0,
        max_attempts: if m.max_attempts == 0 {
            tx.cfg.default_max_attempts
        } else {
            m.max_attempts
        },
        lease_timeout_ms: if m.lease_timeout_ms == 0 {
            q.config.default_lease_timeout_ms
        } else {
            m.lease_timeout_ms
        },
        created_at_ms: now,
        updated_at_ms: now,
        owner: m.owner,
        ..Default::default()
    };
    q.counters.produced += 1;
    if delayed {
        s.set_state(S::Delayed);
        s.due_ms = m.not_before_ms;
        q.level(priority).delayed += 1;
        st.timers.insert((s.due_ms, id));
        tx.timers_changed = true;
    } else {
        s.set_state(S::Queued);
        q.push_ready(priority, id);
        tx.wake.push(q.notify.clone());
    }
    if !tx.counters.contains(&m.queue) {
        tx.counters.insert(m.queue.clone());
    }
    if !m.dedup_key.is_empty() {
        let expires = now.saturating_add(window);
        st.dedup
            .insert((m.queue.clone(), m.dedup_key.clone()), (id, expires));
        st.dedup_expiry
            .insert((expires, m.queue.clone(), m.dedup_key.clone()));
        tx.commit.put(
            Cf::Dedup,
            keys::queue_key(&m.queue, m.dedup_key.as_bytes()),
            keys::dedup_value(id, expires).to_vec(),
        );
        tx.timers_changed = true;
    }
    let rec = MsgRecord {
        headers: m.headers,
        dedup_key: m.dedup_key,
        not_before_ms: m.not_before_ms,
    };
    tx.commit
        .put(Cf::Msgs, keys::id_key(id), rec.encode_to_vec());
    tx.commit
        .put(Cf::Blobs, keys::blob_key(id, Blob::Payload), m.payload);
    tx.put_live(id, &s);
    tx.event(id, &s, false);
    st.index_live(id, &s, tx.cfg);
    st.jobs.insert(id, s);
    (id, false)
}

/// Leases up to `max` ready messages of `queue`.
pub(crate) fn lease(
    st: &mut State,
    tx: &mut Tx<'_>,
    queue: &str,
    max: usize,
    consumer: &str,
) -> Vec<(u64, Status)> {
    let mut out = Vec::new();
    let worker: String = consumer.chars().take(256).collect();
    while out.len() < max {
        let Some(id) = st.queue(queue, tx.cfg).pop_ready() else {
            break;
        };
        let Some(s) = st.jobs.get_mut(&id) else {
            continue;
        };
        s.set_state(S::Leased);
        s.attempts += 1;
        s.worker_id.clone_from(&worker);
        s.lease_token = rand::random::<u64>() | 1;
        s.lease_deadline_ms = tx.now.saturating_add(s.lease_timeout_ms);
        if s.started_at_ms == 0 {
            s.started_at_ms = tx.now;
        }
        s.updated_at_ms = tx.now;
        let s = s.clone();
        st.leases.insert((s.lease_deadline_ms, id));
        let q = st.queue(queue, tx.cfg);
        q.level(s.priority()).leased += 1;
        q.counters.delivered += 1;
        tx.put_live(id, &s);
        tx.event(id, &s, false);
        out.push((id, s));
    }
    if !out.is_empty() {
        if !tx.counters.contains(queue) {
            tx.counters.insert(queue.to_string());
        }
        tx.timers_changed = true;
    }
    out
}

/// The live, leased status of `id` under `token`, or why not.
fn leased<'s>(
    st: &'s mut State,
    id: u64,
    token: u64,
    action: &'static str,
) -> Result<&'s mut Status> {
    let s = st.jobs.get_mut(&id).ok_or(Error::NotFound(id))?;
    if s.state() != S::Leased {
        return Err(if token != 0 && s.lease_token != token {
            Error::StaleLease(id)
        } else {
            Error::WrongState {
                id,
                state: state_word(s.state()),
                action,
            }
        });
    }
    if s.lease_token != token {
        return Err(Error::StaleLease(id));
    }
    Ok(s)
}

/// Error for an operation on a message that is not live.
pub(crate) fn not_live(done: Option<Status>, id: u64, action: &'static str) -> Error {
    match done {
        Some(s) if is_final(s.state()) => Error::WrongState {
            id,
            state: state_word(s.state()),
            action,
        },
        _ => Error::NotFound(id),
    }
}

fn end_lease(st: &mut State, tx: &mut Tx<'_>, id: u64) -> Option<Status> {
    let s = st.jobs.get(&id)?.clone();
    st.leases.remove(&(s.lease_deadline_ms, id));
    let l = st.queue(&s.queue, tx.cfg).level(s.priority());
    l.leased = l.leased.saturating_sub(1);
    Some(s)
}

/// Moves a live message (already out of every index) to a final state.
fn finalize(st: &mut State, tx: &mut Tx<'_>, id: u64, mut s: Status, state: S) {
    st.jobs.remove(&id);
    st.unindex_live(id, &s, tx.cfg);
    s.set_state(state);
    s.lease_token = 0;
    s.lease_deadline_ms = 0;
    s.due_ms = 0;
    s.updated_at_ms = tx.now;
    s.finished_at_ms = tx.now;
    s.expires_at_ms = tx.now.saturating_add(tx.cfg.retention_ms);
    let queue = s.queue.clone();
    match state {
        S::Dead => {
            tx.commit
                .put(Cf::Dead, keys::dead_key(&queue, id), vec![s.priority()]);
            st.queue(&queue, tx.cfg).level(s.priority()).dead += 1;
            count(st, tx, &queue, |c| c.dead_lettered += 1);
        }
        S::Cancelled => count(st, tx, &queue, |c| c.cancelled += 1),
        _ => {}
    }
    tx.commit.delete(Cf::Live, keys::id_key(id).to_vec());
    tx.commit.put(Cf::Done, keys::id_key(id), s.encode_to_vec());
    tx.commit.put(Cf::Finals, final_key(id, &s), Vec::new());
    if let Some(k) = owner_final_key(id, &s) {
        tx.commit.put(Cf::Owners, k, Vec::new());
    }
    tx.commit.put(
        Cf::Expiry,
        keys::expiry_key(s.expires_at_ms, id),
        Vec::new(),
    );
    tx.event(id, &s, false);
}

/// Completes a leased message. Returns whether it ended cancelled instead.
pub(crate) fn ack(
    st: &mut State,
    tx: &mut Tx<'_>,
    id: u64,
    token: u64,
    result: Vec<u8>,
) -> Result<bool> {
    leased(st, id, token, "ack")?;
    let Some(s) = end_lease(st, tx, id) else {
        return Err(Error::NotFound(id));
    };
    let cancelled = s.cancel_requested;
    let queue = s.queue.clone();
    if cancelled {
        finalize(st, tx, id, s, S::Cancelled);
    } else {
        if !result.is_empty() {
            tx.commit
                .put(Cf::Blobs, keys::blob_key(id, Blob::Result), result);
        }
        count(st, tx, &queue, |c| c.acked += 1);
        finalize(st, tx, id, s, S::Completed);
    }
    Ok(cancelled)
}

/// Exponential backoff with deterministic jitter: half the delay is fixed,
/// the other half spread by a hash of `(id, attempt)`, so retries of many
/// messages failing together do not come back together.
pub(crate) fn backoff(base_ms: u64, max_ms: u64, attempt: u32, id: u64) -> u64 {
    let exp = attempt.saturating_sub(1).min(40);
    let full = base_ms.saturating_mul(1u64 << exp).min(max_ms).max(1);
    let half = full / 2;
    let mut h = id ^ (u64::from(attempt)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    half + h % (full - half + 1)
}

/// Hands back a lease whose consumer is known dead (the previous run of the
/// only process that consumes this database): queued again at once, the
/// delivery not counted as an attempt. A cancel that reached it takes
/// effect.
pub(crate) fn hand_back(st: &mut State, tx: &mut Tx<'_>, id: u64) -> Result<S> {
    give_back(st, tx, id)
}

/// Hands a leased message back unworked: ready again at once, the delivery
/// not counted as an attempt (a consumer that is shutting down). A cancel
/// that reached it meanwhile takes effect.
pub(crate) fn release(st: &mut State, tx: &mut Tx<'_>, id: u64, token: u64) -> Result<S> {
    leased(st, id, token, "release")?;
    give_back(st, tx, id)
}

/// Ends a lease without an attempt: the message is queued again (in the
/// ready set, consumers woken), or cancelled if a cancel reached it.
fn give_back(st: &mut State, tx: &mut Tx<'_>, id: u64) -> Result<S> {
    let Some(mut s) = end_lease(st, tx, id) else {
        return Err(Error::NotFound(id));
    };
    if s.cancel_requested {
        finalize(st, tx, id, s, S::Cancelled);
        return Ok(S::Cancelled);
    }
    s.attempts = s.attempts.saturating_sub(1);
    s.set_state(S::Queued);
    s.lease_token = 0;
    s.lease_deadline_ms = 0;
    s.updated_at_ms = tx.now;
    enqueue(st, tx, id, &s);
    st.jobs.insert(id, s);
    Ok(S::Queued)
}

/// Outcome of a nack: the new state and, when retrying, when.
pub(crate) fn nack(
    st: &mut State,
    tx: &mut Tx<'_>,
    id: u64,
    token: u64,
    error: &str,
    retry_delay_ms: u64,
    dead_letter: bool,
) -> Result<(S, u64)> {
    leased(st, id, token, "nack")?;
    let Some(mut s) = end_lease(st, tx, id) else {
        return Err(Error::NotFound(id));
    };
    s.last_error = truncate(error, tx.cfg.max_error_bytes);
    let queue = s.queue.clone();
    count(st, tx, &queue, |c| c.nacked += 1);
    if s.cancel_requested {
        finalize(st, tx, id, s, S::Cancelled);
        return Ok((S::Cancelled, 0));
    }
    if dead_letter || s.attempts >= s.max_attempts {
        finalize(st, tx, id, s, S::Dead);
        return Ok((S::Dead, 0));
    }
    count(st, tx, &queue, |c| c.retried += 1);
    let q = st.queue(&queue, tx.cfg);
    let delay = if retry_delay_ms > 0 {
        retry_delay_ms.min(24 * 3600 * 1000)
    } else {
        backoff(
            q.config.retry_base_ms,
            q.config.retry_max_ms,
            s.attempts,
            id,
        )
    };
    q.level(s.priority()).retrying += 1;
    s.set_state(S::Retrying);
    s.lease_token = 0;
    s.lease_deadline_ms = 0;
    s.due_ms = tx.now.saturating_add(delay);
    s.updated_at_ms = tx.now;
    st.timers.insert((s.due_ms, id));
    tx.timers_changed = true;
    tx.put_live(id, &s);
    tx.event(id, &s, false);
    let due = s.due_ms;
    st.jobs.insert(id, s);
    Ok((S::Retrying, due))
}

/// Renews a lease. Returns the new deadline and whether cancel was requested.
pub(crate) fn extend(
    st: &mut State,
    tx: &mut Tx<'_>,
    id: u64,
    token: u64,
    extend_ms: u64,
    progress: Option<Vec<u8>>,
) -> Result<(u64, bool)> {
    let s = leased(st, id, token, "extend")?;
    let old = s.lease_deadline_ms;
    let by = if extend_ms == 0 {
        s.lease_timeout_ms
    } else {
        extend_ms.min(24 * 3600 * 1000)
    };
    s.lease_deadline_ms = tx.now.saturating_add(by);
    s.updated_at_ms = tx.now;
    let s = s.clone();
    st.leases.remove(&(old, id));
    st.leases.insert((s.lease_deadline_ms, id));
    tx.put_live(id, &s);
    let has_progress = progress.is_some();
    if let Some(p) = progress {
        tx.commit
            .put(Cf::Blobs, keys::blob_key(id, Blob::Progress), p);
    }
    tx.event(id, &s, has_progress);
    Ok((s.lease_deadline_ms, s.cancel_requested))
}

/// Cancels a live message. Returns `Cancelled`, or `Leased` when its
/// consumer will learn of it at its next extend or ack.
pub(crate) fn cancel(st: &mut State, tx: &mut Tx<'_>, id: u64) -> Result<S> {
    let s = st.jobs.get(&id).ok_or(Error::NotFound(id))?.clone();
    match s.state() {
        S::Queued => {
            st.queue(&s.queue, tx.cfg).remove_ready(s.priority(), id);
        }
        S::Delayed | S::Retrying => {
            st.timers.remove(&(s.due_ms, id));
            st.queue(&s.queue, tx.cfg)
                .level(s.priority())
                .leave_timer(s.state());
        }
        S::Leased => {
            if let Some(s) = st.jobs.get_mut(&id) {
                s.cancel_requested = true;
                s.updated_at_ms = tx.now;
                let s = s.clone();
                tx.put_live(id, &s);
            }
            return Ok(S::Leased);
        }
        other => {
            return Err(Error::WrongState {
                id,
                state: state_word(other),
                action: "cancel",
            });
        }
    }
    finalize(st, tx, id, s, S::Cancelled);
    Ok(S::Cancelled)
}

/// Handles every timer, lease and dedup key due at `tx.now`.
pub(crate) fn tick(st: &mut State, tx: &mut Tx<'_>) {
    let now = tx.now;
    while let Some(&(due, id)) = st.timers.first() {
        if due > now {
            break;
        }
        st.timers.pop_first();
        let Some(s) = st.jobs.get_mut(&id) else {
            continue;
        };
        let was = s.state();
        s.set_state(S::Queued);
        s.due_ms = 0;
        s.updated_at_ms = now;
        let s = s.clone();
        st.queue(&s.queue, tx.cfg)
            .level(s.priority())
            .leave_timer(was);
        enqueue(st, tx, id, &s);
    }
    while let Some(&(deadline, id)) = st.leases.first() {
        if deadline > now {
            break;
        }
        let Some(mut s) = end_lease(st, tx, id) else {
            st.leases.pop_first();
            continue;
        };
        s.last_error = format!("lease expired after attempt {}", s.attempts);
        s.lease_token = 0;
        s.lease_deadline_ms = 0;
        if s.cancel_requested {
            finalize(st, tx, id, s, S::Cancelled);
        } else if s.attempts >= s.max_attempts {
            finalize(st, tx, id, s, S::Dead);
        } else {
            s.set_state(S::Queued);
            s.updated_at_ms = now;
            let queue = s.queue.clone();
            count(st, tx, &queue, |c| c.redelivered += 1);
            enqueue(st, tx, id, &s);
            st.jobs.insert(id, s);
        }
    }
    while let Some((expires, _, _)) = st.dedup_expiry.first() {
        if *expires > now {
            break;
        }
        let Some((expires, queue, key)) = st.dedup_expiry.pop_first() else {
            break;
        };
        let k = (queue, key);
        if st.dedup.get(&k).is_some_and(|&(_, e)| e == expires) {
            st.dedup.remove(&k);
            tx.commit
                .delete(Cf::Dedup, keys::queue_key(&k.0, k.1.as_bytes()));
        }
    }
}

/// Puts a dead (final) message back into its queue with fresh attempts.
pub(crate) fn requeue(st: &mut State, tx: &mut Tx<'_>, id: u64, mut s: Status) {
    let queue = s.queue.clone();
    tx.commit.delete(Cf::Dead, keys::dead_key(&queue, id));
    tx.commit.delete(Cf::Done, keys::id_key(id).to_vec());
    tx.commit.delete(Cf::Finals, final_key(id, &s));
    if let Some(k) = owner_final_key(id, &s) {
        tx.commit.delete(Cf::Owners, k);
    }
    tx.commit
        .delete(Cf::Expiry, keys::expiry_key(s.expires_at_ms, id).to_vec());
    s.set_state(S::Queued);
    s.attempts = 0;
    s.cancel_requested = false;
    s.finished_at_ms = 0;
    s.expires_at_ms = 0;
    s.updated_at_ms = tx.now;
    st.index_live(id, &s, tx.cfg);
    let l = st.queue(&queue, tx.cfg).level(s.priority());
    l.dead = l.dead.saturating_sub(1);
    enqueue(st, tx, id, &s);
    st.jobs.insert(id, s);
}

/// Adds a live message to its queue's ready set, wakes consumers and records it.
fn enqueue(st: &mut State, tx: &mut Tx<'_>, id: u64, s: &Status) {
    let q = st.queue(&s.queue, tx.cfg);
    q.push_ready(s.priority(), id);
    tx.wake.push(q.notify.clone());
    tx.put_live(id, s);
    tx.event(id, s, false);
}

/// The `finals` index key of a final message.
pub(crate) fn final_key(id: u64, s: &Status) -> Vec<u8> {
    keys::final_key(&s.queue, s.state as u8, s.created_at_ms, id)
}

/// The `owners` index key of a final message that has an owner.
pub(crate) fn owner_final_key(id: u64, s: &Status) -> Option<Vec<u8>> {
    (!s.owner.is_empty())
        .then(|| keys::owner_final_key(&s.owner, &s.queue, s.state as u8, s.created_at_ms, id))
}

/// Removes every stored trace of a final message.
pub(crate) fn remove_final(st: &mut State, tx: &mut Tx<'_>, id: u64, s: &Status) {
    if s.state() == S::Dead {
        tx.commit.delete(Cf::Dead, keys::dead_key(&s.queue, id));
        let l = st.queue(&s.queue, tx.cfg).level(s.priority());
        l.dead = l.dead.saturating_sub(1);
    }
    tx.commit.delete(Cf::Done, keys::id_key(id).to_vec());
    tx.commit.delete(Cf::Finals, final_key(id, s));
    if let Some(k) = owner_final_key(id, s) {
        tx.commit.delete(Cf::Owners, k);
    }
    tx.commit
        .delete(Cf::Expiry, keys::expiry_key(s.expires_at_ms, id).to_vec());
    tx.commit.delete(Cf::Msgs, keys::id_key(id).to_vec());
    for b in [Blob::Payload, Blob::Result, Blob::Progress] {
        tx.commit.delete(Cf::Blobs, keys::blob_key(id, b).to_vec());
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        for attempt in 1..=6u32 {
            let full = 100u64 << (attempt - 1);
            for id in 0..50 {
                let d = backoff(100, 10_000, attempt, id);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d} outside {full}/2..={full}"
                );
            }
        }
        assert!(backoff(100, 1000, 30, 7) <= 1000);
        let spread: std::collections::HashSet<u64> =
            (0..50).map(|id| backoff(1000, 60_000, 3, id)).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }
}
