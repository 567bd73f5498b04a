//! `memory://`: the broker engine on RocksDB's memory environment. The same
//! engine and semantics as `rocksdb://` — priorities, leases, retries,
//! cancel, watch, stats — with nothing written to disk: everything is gone
//! when the process ends. For tests and trials. Each open is a queue of its own.

use docproc_broker::BrokerConfig;

use super::error::Result;
use super::rocksdb::{open_with, RocksDbQueue};
use super::url::{QueueUrl, COMMON_PARAMS};

/// An in-memory queue (the embedded broker, not on disk).
pub type MemoryQueue = RocksDbQueue;

/// Opens `memory://`.
pub fn open(u: &QueueUrl) -> Result<MemoryQueue> {
    u.only(&COMMON_PARAMS)?;
    if !u.target.is_empty() {
        return Err(u.invalid("memory:// takes no path"));
    }
    open_with(BrokerConfig::in_memory(), u.retry_policy()?, "memory")
}
