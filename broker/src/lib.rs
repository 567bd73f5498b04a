//! # docproc-broker
//!
//! A durable priority job broker on RocksDB, embeddable in-process
//! ([`Broker`]) or served over gRPC ([`serve`]).
//!
//! # Layout
//! - [`keys`]: key encoding of every column family, no I/O.
//! - `record`: stored records (protobuf-encoded).
//! - `store`: RocksDB, column families and the group-commit writer thread.
//! - `engine`: in-memory indexes and message state transitions; the public [`Broker`].
//! - `service`: the tonic gRPC service and [`serve`].
//! - [`auth`]: API keys and scopes, shared with the HTTP server.
//! - [`conn`]: the connection cap and first-request deadline, shared too.
//! - [`config`], [`clock`], [`error`].
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), docproc_broker::Error> {
//! use docproc_broker::{Broker, BrokerConfig, pb};
//! let dir = tempfile::tempdir().map_err(|e| docproc_broker::Error::Unavailable(e.to_string()))?;
//! let broker = Broker::open(BrokerConfig::with_dir(dir.path()))?;
//! let ids = broker
//!     .produce(vec![pb::NewMessage { queue: "pdf".into(), priority: 5, payload: b"hi".to_vec(), ..Default::default() }])
//!     .await?;
//! let got = broker.lease("pdf", 10, "worker-1").await?;
//! assert_eq!(got[0].id, ids[0].0);
//! broker.ack(got[0].id, got[0].lease_token, b"done".to_vec()).await?;
//! assert_eq!(broker.get(ids[0].0, false)?.state(), pb::State::Completed);
//! broker.close();
//! # Ok(()) }
//! ```
#![deny(clippy::unwrap_used)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
mod engine;
pub mod error;
pub mod keys;
mod record;
mod service;
mod store;

/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing {
    use prost::Message as _;

    /// Decodes `bytes` as every record the broker stores and reads what
    /// recovery reads of them.
    pub fn decode_records(bytes: &[u8]) {
        if let Ok(s) = crate::record::Status::decode(bytes) {
            let _ = (s.state(), s.priority());
        }
        let _ = crate::record::MsgRecord::decode(bytes);
        let _ = docproc_proto::broker::v1::Counters::decode(bytes);
        let _ = docproc_proto::broker::v1::QueueConfig::decode(bytes);
    }
}

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BrokerConfig, Durability};
pub use docproc_proto::broker::v1 as pb;
pub use engine::{
    Broker, DEFAULT_LIST_LIMIT, MAX_FETCH_WAIT, MAX_LEASE_BATCH, MAX_LIST_LIMIT, MAX_SETTLE_BATCH,
};
pub use error::{Error, Result};
pub use service::{serve, serve_with, BrokerService, ServeOptions};
pub use store::SYNC_BOUNDS;
