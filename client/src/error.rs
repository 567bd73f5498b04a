//! The client's error type: one variant per outcome a caller may act on.

use tonic::Code;

/// What a broker call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be used.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker rejected the request as malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request exceeds a size or count limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No such message (or it is past its retention).
    #[error("not found: {0}")]
    NotFound(String),
    /// The lease expired or the message is in a state that forbids the call;
    /// do not retry the same call.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The broker cannot be reached or is shutting down; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No API key, or one the broker does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The API key's scope does not allow the call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Any other gRPC failure.
    #[error("broker error ({code:?}): {message}")]
    Other {
        /// gRPC status code.
        code: Code,
        /// Status message.
        message: String,
    },
}

impl Error {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => Error::InvalidArgument(m),
            Code::ResourceExhausted | Code::OutOfRange => Error::TooLarge(m),
            Code::NotFound => Error::NotFound(m),
            Code::FailedPrecondition => Error::FailedPrecondition(m),
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => Error::Unavailable(m),
            Code::Unauthenticated => Error::Unauthenticated(m),
            Code::PermissionDenied => Error::PermissionDenied(m),
            code => Error::Other { code, message: m },
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}

/// Shorthand for client results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
