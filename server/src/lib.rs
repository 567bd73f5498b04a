//! # docproc-server
//!
//! The processing server's library; the `docproc` binary is built on it.
//!
//! # Layout
//! - [`queue`]: the [`Queue`](queue::Queue) trait the server runs on, the job
//!   model, and the adapters chosen by URL (`rocksdb://`, `memory://`, `grpc://`).
//! - [`http`]: the HTTP API (axum), one file per resource.
//! - [`worker`]: worker pools per job type; [`analysis`]: the built-in analysis.
//! - [`extract`]: type detection, the spreadsheet and PDF readers, HTML pages,
//!   and the sandbox that runs readers in a child process.
//! - [`notify`]: WebSocket subscriptions, signed webhooks, completion mail.
//! - [`results`]: the result store; [`config`]: settings; [`serve`]: wiring.
//! - [`settings`]: layered settings (defaults, TOML file, environment, flags).

pub mod analysis;
pub mod config;
pub mod durable;
pub mod extract;
pub mod http;
pub mod llm;
pub mod metrics;
pub mod notify;
pub mod ops_http;
pub mod queue;
pub mod results;
pub mod serve;
pub mod settings;
pub mod time;
pub mod worker;
