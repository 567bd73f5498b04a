//! # docproc-client
//!
//! A client for the docproc broker over gRPC.
//!
//! Delivery semantics are at-least-once: a message is delivered again if its
//! lease expires before it is acked, so handlers should be idempotent or use
//! the message id to detect repeats. A produce returns only after the broker
//! has made the batch durable.
//!
//! # Layout
//! - [`Client`]: connection and every unary call.
//! - [`Producer`]: batches single sends into produce requests.
//! - [`Consumer`]: a `Stream` of [`Delivery`] with credit-based flow control
//!   and reconnection; its deliveries ack, nack and extend in batches on
//!   the consumer's stream (`settle`).
//! - [`Error`]: typed failures.
//!
//! # Example
//! ```no_run
//! use docproc_client::{Client, ConsumerOptions, NewMessage};
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), docproc_client::Error> {
//! let client = Client::connect("grpc://127.0.0.1:7070").await?;
//! client.produce(vec![NewMessage::new("pdf", b"report".to_vec()).priority(9)]).await?;
//! let mut consumer = client.consume("pdf", ConsumerOptions::default());
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     let outcome = delivery
//!         .run_with_lease(async { b"parsed".to_vec() })
//!         .await?;
//!     if let docproc_client::LeaseOutcome::Done(result) = outcome {
//!         delivery.ack(result).await?;
//!     }
//! }
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod client;
mod consumer;
mod error;
mod producer;
mod settle;

pub use client::{redact, BrokerUrl, Client, NewMessage};
pub use consumer::{Consumer, ConsumerOptions, Delivery, LeaseOutcome};
pub use docproc_proto::broker::v1 as pb;
pub use error::{Error, Result};
pub use producer::{Producer, ProducerOptions};
