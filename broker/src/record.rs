//! Stored records (protobuf-encoded, so fields can be added without a migration).
use std::collections::HashMap;

use docproc_proto::broker::v1::State;

/// The mutable part of a message: its place in the lifecycle.
///
/// Live messages (not yet final) keep this in memory and in the `live`
/// family; final ones only in the `done` family.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Status {
    #[prost(string, tag = "1")]
    pub(crate) queue: String,
    #[prost(uint32, tag = "2")]
    pub(crate) priority: u32,
    /// A [`State`] value.
    #[prost(int32, tag = "3")]
    pub(crate) state: i32,
    #[prost(uint32, tag = "4")]
    pub(crate) attempts: u32,
    #[prost(uint32, tag = "5")]
    pub(crate) max_attempts: u32,
    #[prost(uint64, tag = "6")]
    pub(crate) lease_timeout_ms: u64,
    #[prost(string, tag = "7")]
    pub(crate) worker_id: String,
    #[prost(string, tag = "8")]
    pub(crate) last_error: String,
    #[prost(uint64, tag = "9")]
    pub(crate) lease_token: u64,
    #[prost(uint64, tag = "10")]
    pub(crate) lease_deadline_ms: u64,
    #[prost(bool, tag = "11")]
    pub(crate) cancel_requested: bool,
    /// When a delayed or retrying message becomes ready.
    #[prost(uint64, tag = "12")]
    pub(crate) due_ms: u64,
    #[prost(uint64, tag = "13")]
    pub(crate) created_at_ms: u64,
    #[prost(uint64, tag = "14")]
    pub(crate) updated_at_ms: u64,
    #[prost(uint64, tag = "15")]
    pub(crate) started_at_ms: u64,
    #[prost(uint64, tag = "16")]
    pub(crate) finished_at_ms: u64,
    /// When a final message is removed; its key in the `expiry` family.
    #[prost(uint64, tag = "17")]
    pub(crate) expires_at_ms: u64,
    /// Who the message belongs to; empty: nobody. Kept here (not in the
    /// immutable record) because listing by owner reads it for live
    /// messages from memory.
    #[prost(string, tag = "18")]
    pub(crate) owner: String,
}

impl Status {
    pub(crate) fn state(&self) -> State {
        State::try_from(self.state).unwrap_or(State::Unspecified)
    }

    pub(crate) fn set_state(&mut self, s: State) {
        self.state = s as i32;
    }

    pub(crate) fn priority(&self) -> u8 {
        self.priority.min(255) as u8
    }
}

/// The immutable part of a message, written once at produce.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MsgRecord {
    #[prost(map = "string, string", tag = "1")]
    pub(crate) headers: HashMap<String, String>,
    #[prost(string, tag = "2")]
    pub(crate) dedup_key: String,
    #[prost(uint64, tag = "3")]
    pub(crate) not_before_ms: u64,
}

/// Lowercase name of a state, for error messages.
pub(crate) fn state_word(s: State) -> &'static str {
    match s {
        State::Unspecified => "unknown",
        State::Queued => "queued",
        State::Delayed => "delayed",
        State::Leased => "leased",
        State::Retrying => "retrying",
        State::Completed => "completed",
        State::Dead => "dead",
        State::Cancelled => "cancelled",
    }
}

/// Whether a state is final (completed, dead, cancelled).
pub(crate) fn is_final(s: State) -> bool {
    matches!(s, State::Completed | State::Dead | State::Cancelled)
}
