//! The broker's integration tests, one binary: the engine through its public
//! API, on RocksDB on disk.

mod common;

mod concurrency;
mod engine;
mod list;
mod restart;
mod settle;
