//! # docproc-server
//!
//! The processing server's library; the `docproc` binary is built on it.
//!
//! # Layout
//! - [`queue`]: the [`Queue`](queue::Queue) trait the server runs on, the job
//!   model, and the adapters chosen by URL (`rocksdb://`, `memory://`, `grpc://`).

pub mod queue;
