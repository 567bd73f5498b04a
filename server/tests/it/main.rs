//! The server's integration tests, one binary (RocksDB is linked once): each
//! module drives `docproc` processes or the HTTP API as users do.

mod common;

mod api;
mod auth;
mod crash;
mod dashboard;
mod deploy;
mod distributed;
mod drain;
mod durability;
mod email;
mod llm;
mod ops;
mod sandbox;
mod slow_clients;
mod storage_full;
mod tls;
mod webhooks;
mod websocket;
mod worker_crash;
