//! Why an application call was refused: one variant per rule a user can
//! run into. The transports map each onto their own answer (HTTP status
//! and code) in one place.

use docproc_queue::{JobId, JobStatus, QueueError};

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A field or parameter the rules do not accept.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such job, or the caller may not see it.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The result is asked for before the job completed.
    #[error("job {id} is {status}; its result exists once it is completed")]
    NotCompleted {
        /// The job.
        id: JobId,
        /// Where it stands.
        status: JobStatus,
    },
    /// The result is past its retention.
    #[error("the result of job {0} is no longer kept")]
    ResultExpired(JobId),
    /// A dead-job call on a job that is not dead (or was deleted).
    #[error("job {id} is {state}; only failed jobs are dead")]
    NotDead {
        /// The job.
        id: JobId,
        /// `deleted` or its status.
        state: String,
    },
    /// A dead job's retry whose upload is gone.
    #[error(
        "the file of job {0} is no longer kept (a job that failed permanently, or past the \
         retention); upload it again"
    )]
    UploadGone(JobId),
    /// The webhook URL is refused (malformed, or a private address).
    #[error("{0}")]
    InvalidCallbackUrl(String),
    /// A completion mail is asked of a server without SMTP.
    #[error("this server has no SMTP server configured; leave out the email field")]
    EmailNotConfigured,
    /// The file is none of the supported types.
    #[error(
        "the file is not a supported type (xlsx, xlsm, xlsb, xls, ods, csv, pdf); the type is \
         decided from the content"
    )]
    UnsupportedType,
    /// A container with more entries than detection reads.
    #[error("{0}")]
    TooManyEntries(String),
    /// The queue refused or failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Something on this side failed (a write, a task); logged.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// An internal failure, logged here.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::Internal(e.to_string())
    }
}
