//! The broker's error type and its mapping to gRPC status codes.

/// Everything that can go wrong in the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed (bad queue name, priority out of range, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request is larger than a configured limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No message with that id exists (or it has passed its retention).
    #[error("message {0} not found")]
    NotFound(u64),
    /// The lease token does not match the message's current lease.
    #[error("stale lease for message {0}: the lease expired or belongs to another delivery")]
    StaleLease(u64),
    /// The operation does not apply to the message's current state.
    #[error("message {id} is {state}: {action} is not possible")]
    WrongState {
        /// Message id.
        id: u64,
        /// Its current state, as a lowercase word.
        state: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// The broker is shutting down or has stopped after a fatal storage error.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// RocksDB failed. Storage errors are fatal: the broker stops accepting writes.
    #[error("storage error: {0}")]
    Storage(#[from] rocksdb::Error),
    /// A stored record could not be decoded: the database is damaged.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Shorthand for broker results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::TooLarge(_) => tonic::Status::resource_exhausted(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::StaleLease(_) | Error::WrongState { .. } => {
                tonic::Status::failed_precondition(msg)
            }
            Error::Unavailable(_) => tonic::Status::unavailable(msg),
            // Internal detail stays in the server log.
            Error::Storage(_) | Error::Corrupt(_) => {
                tracing::error!(error = %msg, "storage failure");
                tonic::Status::internal("broker storage failure")
            }
        }
    }
}
