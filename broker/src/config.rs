//! Broker settings with their documented defaults.
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// When a produce is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answer after the write-ahead log is fsynced. Concurrent writes share one
    /// fsync (group commit). Nothing acknowledged is lost on a crash or power cut.
    Sync,
    /// Answer after the write reaches the OS; the log is fsynced every
    /// `interval`. A process crash loses nothing; a power cut or kernel crash
    /// can lose what was acknowledged in the last `interval`.
    Batch {
        /// Time between background fsyncs.
        interval: Duration,
    },
    /// Never fsync. A process crash loses nothing the OS already has; a power
    /// cut can lose anything not yet written back by the OS.
    None,
}

impl FromStr for Durability {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Durability::Sync),
            "batch" => Ok(Durability::Batch {
                interval: Duration::from_millis(10),
            }),
            "none" => Ok(Durability::None),
            other => {
                if let Some(ms) = other.strip_prefix("batch:") {
                    let ms: u64 = ms.parse().map_err(|_| {
                        Error::InvalidArgument(format!("durability {other:?}: bad interval"))
                    })?;
                    return Ok(Durability::Batch {
                        interval: Duration::from_millis(ms.max(1)),
                    });
                }
                Err(Error::InvalidArgument(format!(
                    "durability must be sync, batch, batch:<ms> or none, not {other:?}"
                )))
            }
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Sync => f.write_str("sync"),
            Durability::Batch { interval } => write!(f, "batch:{}", interval.as_millis()),
            Durability::None => f.write_str("none"),
        }
    }
}

/// Broker settings. See [`BrokerConfig::default`] for every default.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory of the RocksDB database.
    pub data_dir: PathBuf,
    /// Keep the database in RocksDB's memory environment instead of on
    /// disk: same semantics, nothing survives the process. For tests and trials.
    pub in_memory: bool,
    /// When produces (and acks) are acknowledged relative to the disk.
    pub durability: Durability,
    /// Largest payload accepted, in bytes.
    pub max_message_bytes: usize,
    /// Largest total size of one message's headers, in bytes.
    pub max_header_bytes: usize,
    /// Most messages in one produce request.
    pub max_batch: usize,
    /// Lease timeout for messages that do not set one.
    pub default_lease_timeout_ms: u64,
    /// Delivery attempts for messages that do not set `max_attempts`.
    pub default_max_attempts: u32,
    /// How long completed, dead and cancelled messages stay queryable.
    pub retention_ms: u64,
    /// How long a dedup key is remembered (queues may override).
    pub dedup_window_ms: u64,
    /// First retry delay after a nack (queues may override); doubles per attempt.
    pub retry_base_ms: u64,
    /// Cap on the retry delay (queues may override).
    pub retry_max_ms: u64,
    /// Longest error text stored with a message; longer ones are cut.
    pub max_error_bytes: usize,
    /// Capacity of the lifecycle event buffer per watcher before it lags.
    pub event_buffer: usize,
    /// Largest gRPC request the transport decodes; larger ones are refused
    /// with `OUT_OF_RANGE` before any of it is buffered.
    pub max_request_bytes: usize,
}

impl Default for BrokerConfig {
    /// `./data` on disk, `sync`, 1 MiB messages, 64 KiB headers, 1000 per batch,
    /// 30 s leases, 5 attempts, 24 h retention, 10 min dedup window,
    /// retries from 1 s doubling up to 5 min, 4 KiB error texts, 64 Ki
    /// buffered events per watcher, 64 MiB gRPC requests.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            in_memory: false,
            durability: Durability::Sync,
            max_message_bytes: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_batch: 1000,
            default_lease_timeout_ms: 30_000,
            default_max_attempts: 5,
            retention_ms: 24 * 3600 * 1000,
            dedup_window_ms: 10 * 60 * 1000,
            retry_base_ms: 1000,
            retry_max_ms: 300_000,
            max_error_bytes: 4096,
            event_buffer: 65_536,
            max_request_bytes: 64 * 1024 * 1024,
        }
    }
}

impl BrokerConfig {
    /// Defaults with the given data directory.
    pub fn with_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: dir.into(),
            ..Self::default()
        }
    }

    /// Defaults on RocksDB's memory environment with durability `none`:
    /// the same engine and semantics, nothing on disk.
    pub fn in_memory() -> Self {
        Self {
            // The memory environment resolves only absolute paths; nothing is created there.
            data_dir: PathBuf::from("/docproc-memory"),
            in_memory: true,
            durability: Durability::None,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_by_name() {
        assert_eq!("sync".parse::<Durability>().ok(), Some(Durability::Sync));
        assert_eq!("none".parse::<Durability>().ok(), Some(Durability::None));
        assert_eq!(
            "batch".parse::<Durability>().ok(),
            Some(Durability::Batch {
                interval: Duration::from_millis(10)
            })
        );
        assert_eq!(
            "batch:250".parse::<Durability>().ok(),
            Some(Durability::Batch {
                interval: Duration::from_millis(250)
            })
        );
        for bad in ["", "fsync", "batch:x", "SYNC"] {
            assert!(bad.parse::<Durability>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Durability::Batch {
                interval: Duration::from_millis(5)
            }
            .to_string(),
            "batch:5"
        );
    }
}
