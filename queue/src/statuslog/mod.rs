//! The job state the log-backed adapters (Kafka, RabbitMQ) share: the
//! records they write ([`wire`]) and the in-process view every process
//! builds by reading the status log from its start ([`view`]), which
//! serves get, list, stats and watch, and what a worker's answer does to a
//! held job ([`settle`]).

pub(crate) mod settle;
pub(crate) mod view;
pub(crate) mod wire;
