//! Rebuilds the in-memory indexes from RocksDB at startup.

use docproc_proto::broker::v1::{Counters, QueueConfig, State as S};
use prost::Message as _;

use super::state::{resolve_config, State};
use crate::config::BrokerConfig;
use crate::error::Result;
use crate::keys;
use crate::record::Status;
use crate::store::{Cf, Commit, Store};

/// Reads meta, live messages, dead-letter counts and dedup keys. Returns the
/// state and a commit removing dedup keys that expired while down.
pub(crate) fn recover(store: &Store, cfg: &BrokerConfig, now: u64) -> Result<(State, Commit)> {
    let mut st = State::default();
    let mut cleanup = Commit::default();
    let mut finals_indexed = false;
    store.scan(Cf::Meta, b"", None, |k, v| {
        if k == keys::META_FINALS_INDEXED {
            finals_indexed = true;
        } else if k == keys::META_LAST_ID {
            st.last_id = keys::decode_id(v)?;
        } else if let Some(q) = k.strip_prefix(b"counters/") {
            let name = String::from_utf8_lossy(q).into_owned();
            st.queue(&name, cfg).counters = Counters::decode(v)?;
        } else if let Some(q) = k.strip_prefix(b"queue/") {
            let name = String::from_utf8_lossy(q).into_owned();
            st.queue(&name, cfg).config = resolve_config(QueueConfig::decode(v)?, cfg);
        }
        Ok(true)
    })?;
    store.scan(Cf::Live, b"", None, |k, v| {
        let id = keys::decode_id(k)?;
        let s = Status::decode(v)?;
        st.last_id = st.last_id.max(id);
        let p = s.priority();
        match s.state() {
            S::Queued => st.queue(&s.queue, cfg).push_ready(p, id),
            S::Delayed => {
                st.timers.insert((s.due_ms, id));
                st.queue(&s.queue, cfg).level(p).delayed += 1;
            }
            S::Retrying => {
                st.timers.insert((s.due_ms, id));
                st.queue(&s.queue, cfg).level(p).retrying += 1;
            }
            // Deadlines that passed while down expire at the first tick.
            S::Leased => {
                st.leases.insert((s.lease_deadline_ms, id));
                st.queue(&s.queue, cfg).level(p).leased += 1;
            }
            other => {
                tracing::warn!(id, state = ?other, "live record in a final state; ignored");
                return Ok(true);
            }
        }
        st.index_live(id, &s, cfg);
        st.jobs.insert(id, s);
        Ok(true)
    })?;
    store.scan(Cf::Dead, b"", None, |k, v| {
        let (queue, _) = keys::decode_queue_key(k)?;
        let p = v.first().copied().unwrap_or(0);
        st.queue(queue, cfg).level(p).dead += 1;
        Ok(true)
    })?;
    store.scan(Cf::Dedup, b"", None, |k, v| {
        let (queue, key) = keys::decode_queue_key(k)?;
        let (id, expires) = keys::decode_dedup_value(v)?;
        if expires <= now {
            cleanup.delete(Cf::Dedup, k.to_vec());
        } else {
            let key = String::from_utf8_lossy(key).into_owned();
            st.dedup
                .insert((queue.to_string(), key.clone()), (id, expires));
            st.dedup_expiry.insert((expires, queue.to_string(), key));
        }
        Ok(true)
    })?;
    if !finals_indexed {
        index_finals(store)?;
    }
    Ok((st, cleanup))
}

/// Builds the `finals` index for a database written before it existed,
/// before the broker answers anything.
fn index_finals(store: &Store) -> Result<()> {
    let mut commit = Commit::default();
    let mut n = 0u64;
    store.scan(Cf::Done, b"", None, |k, v| {
        let id = keys::decode_id(k)?;
        commit.put(
            Cf::Finals,
            super::ops::final_key(id, &Status::decode(v)?),
            Vec::new(),
        );
        n += 1;
        Ok(true)
    })?;
    commit.put(Cf::Meta, keys::META_FINALS_INDEXED, Vec::new());
    store.write_now(&commit)?;
    if n > 0 {
        tracing::info!(messages = n, "indexed final messages for listing");
    }
    Ok(())
}
