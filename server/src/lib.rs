//! # docproc-server
//!
//! The processing server's library; the `docproc` binary is built on it.
//!
//! # Layout, from the bottom up
//! - [`time`], [`durable`], [`llm`], [`results`], [`metrics`]: leaves.
//! - [`notify`]: the event hub, webhooks, completion mail.
//! - [`config`] and [`settings`]: every setting, its default and its layering.
//! - [`sandbox`]: runs the extractors of `docproc-extract` in a child process.
//! - [`analysis`]: the built-in analysis of a result (pure).
//! - [`jobs`]: job types, typed payloads and the [`Handler`](jobs::Handler)
//!   that runs them; [`worker`]: the pools that feed it leases.
//! - [`app`]: the application layer, the only place the rules of jobs live.
//! - [`http`]: the HTTP API and the WebSocket (axum); [`ops_http`]: the
//!   worker's metrics listener; [`serve`]: the wiring.
//!
//! The queue seam and its adapters are the `docproc-queue` crate; the
//! extractors are `docproc-extract`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod analysis;
pub mod app;
pub mod config;
pub mod durable;
pub mod http;
pub mod jobs;
pub mod llm;
pub mod metrics;
pub mod notify;
pub mod ops_http;
pub mod results;
pub mod sandbox;
pub mod serve;
pub mod settings;
pub mod time;
pub mod worker;
