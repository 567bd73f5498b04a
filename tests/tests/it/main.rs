//! Cross-crate integration tests, one binary: the queue conformance suite
//! on every adapter, the Redis adapter's own promises, the broker over gRPC.

mod grpc;
mod queue_conformance;
mod redis_queue;
mod settle;
