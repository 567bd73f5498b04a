//! The queue layer's error type, shared by every adapter.

use super::model::{JobId, JobStatus};

/// What a queue operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue URL cannot be used (unknown scheme, feature not built, bad parameter).
    #[error("invalid queue URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request exceeds a size or count limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No such job (or it is past its retention).
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job's status forbids the operation (e.g. cancelling a completed job).
    #[error("job {id} is {status}: {action} is not possible")]
    Conflict {
        /// The job.
        id: JobId,
        /// Its status now.
        status: JobStatus,
        /// What was attempted.
        action: &'static str,
    },
    /// The lease is no longer valid: it expired and the job went back to the
    /// queue (or to another worker). Stop working on the job.
    #[error("lease on job {0} was lost")]
    LeaseLost(JobId),
    /// A watcher fell behind and this many events were dropped (0 when the
    /// number is unknown, e.g. a backend subscription was re-made); the
    /// stream goes on with the events after them.
    #[error("watch lagged: {0} events dropped")]
    Lagged(u64),
    /// The backend cannot be reached or is shutting down; retrying may work.
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
    /// The backend failed in a way the caller cannot fix.
    #[error("queue backend error: {0}")]
    Backend(String),
}

impl QueueError {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Unavailable(_))
    }
}

/// Shorthand for queue results.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
