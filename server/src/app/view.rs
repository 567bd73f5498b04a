//! What the application answers, as the transports serialize it: these
//! are the types the HTTP API writes and its OpenAPI description names.

use docproc_extract::Format;
use docproc_queue::{JobId, JobRecord, JobStatus, Priority};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::time::rfc3339;

/// A job as its status, the job list and the dead list show it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobView {
    /// The job's id.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// excel_processing, pdf_processing, ai_analysis, webhook_delivery, email_delivery.
    pub job_type: String,
    /// pending, queued, processing, retrying, completed, failed or cancelled.
    #[schema(value_type = String, example = "completed")]
    pub status: JobStatus,
    /// low, normal, high or urgent.
    #[schema(value_type = String, example = "normal")]
    pub priority: Priority,
    /// Once completed: the summary and the result links.
    pub result: Option<Value>,
    /// The last failure.
    pub error: Option<String>,
    /// Seconds from start to finish.
    pub processing_time: Option<f64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339, when it finished.
    pub completed_at: Option<String>,
    /// Deliveries so far.
    pub attempts: u32,
    /// The last progress a worker reported.
    pub progress: Option<Value>,
    /// The client's correlation id (or a random one).
    pub correlation_id: Option<String>,
    /// A cancel reached the job while it ran.
    pub cancel_requested: bool,
    /// Webhook delivery state, when a `callback_url` was given (status only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Value>,
    /// Mail delivery state, when an `email` was given (status only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Value>,
}

impl From<&JobRecord> for JobView {
    fn from(r: &JobRecord) -> Self {
        Self {
            job_id: r.job.job_id.clone(),
            job_type: r.job.job_type.clone(),
            status: r.status,
            priority: r.job.priority,
            result: r.result.clone(),
            error: r.error.clone(),
            processing_time: r.processing_time().map(|d| d.as_secs_f64()),
            created_at: rfc3339(r.job.created_at_ms),
            started_at: r.started_at_ms.map(rfc3339),
            completed_at: r.completed_at_ms.map(rfc3339),
            attempts: r.attempts,
            progress: r.progress.clone(),
            correlation_id: r.job.correlation_id.clone(),
            cancel_requested: r.cancel_requested,
            webhook: None,
            email: None,
        }
    }
}

/// A page of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobsPage {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A dead job: failed for good, with the job that retried it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeadJob {
    /// The job as its status shows it.
    #[serde(flatten)]
    pub job: JobView,
    /// The job that ran it again, if it was retried.
    #[schema(value_type = Option<String>)]
    pub retried_as: Option<JobId>,
}

/// A page of dead jobs.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeadPage {
    /// Newest first.
    pub jobs: Vec<DeadJob>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CancelAnswer {
    /// The job.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// `cancelled` (it had not started) or `cancelling` (its worker stops at its next check).
    pub status: &'static str,
    /// For people.
    pub message: &'static str,
}

/// A dead job run again.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Retried {
    /// The new job.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// The dead job it copies.
    #[schema(value_type = String)]
    pub retry_of: JobId,
    /// Always `queued`.
    pub status: &'static str,
    /// Where to poll the new job.
    pub polling_url: String,
}

/// A dead job deleted.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Deleted {
    /// The job.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// Always `deleted`.
    pub status: &'static str,
}

/// An accepted upload.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Submitted {
    /// The job.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// Always `queued`.
    pub status: &'static str,
    /// excel_processing or pdf_processing.
    pub job_type: &'static str,
    /// The detected format (xlsx, xls, csv, pdf, …).
    #[schema(value_type = String)]
    pub format: Format,
    /// For people.
    pub message: String,
    /// The client's correlation id, or one made for it.
    pub correlation_id: String,
    /// Where to poll.
    pub polling_url: String,
    /// Where to follow it live.
    pub ws_url: String,
}
