//! Jobs: status, result (JSON and HTML), cancel, and the filtered list.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::guard::{sees, Caller};
use super::{ApiError, AppState};
use crate::notify::{email, webhook, Targets};
use crate::queue::{CancelOutcome, JobId, JobRecord, JobStatus, ListQuery, QueueError};
use crate::results::{Artifact, Opened};
use crate::time::rfc3339;
use crate::worker::ExtractPayload;
use axum::Extension;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/job/{id}/status", get(status))
        .route("/api/job/{id}/result", get(result))
        .route("/api/job/{id}/html", get(html))
        .route("/api/job/{id}/markdown", get(markdown))
        .route("/api/job/{id}", axum::routing::delete(cancel))
        .route("/api/jobs", get(list))
}

/// A job as `GET /api/job/{id}/status`, the job list and the dead list
/// show it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct JobView {
    /// The job's id.
    job_id: String,
    /// excel_processing, pdf_processing, ai_analysis, webhook_delivery, email_delivery.
    job_type: String,
    /// pending, queued, processing, retrying, completed, failed or cancelled.
    #[schema(value_type = String, example = "completed")]
    status: JobStatus,
    /// low, normal, high or urgent.
    #[schema(value_type = String, example = "normal")]
    priority: crate::queue::Priority,
    /// Once completed: the summary and the result links.
    result: Option<Value>,
    /// The last failure.
    error: Option<String>,
    /// Seconds from start to finish.
    processing_time: Option<f64>,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    started_at: Option<String>,
    /// RFC 3339, when it finished.
    completed_at: Option<String>,
    /// Deliveries so far.
    attempts: u32,
    /// The last progress a worker reported.
    progress: Option<Value>,
    /// The client's correlation id (or a random one).
    correlation_id: Option<String>,
    /// A cancel reached the job while it ran.
    cancel_requested: bool,
    /// Webhook delivery state, when a `callback_url` was given (status only).
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<Value>,
    /// Mail delivery state, when an `email` was given (status only).
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<Value>,
}

/// The status body of a job, as `GET /api/job/{id}/status` and the list show it.
pub(super) fn status_body(r: &JobRecord) -> Value {
    serde_json::to_value(JobView {
        job_id: r.job.job_id.0.clone(),
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
    })
    .unwrap_or(Value::Null)
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct JobPage {
    /// Newest first.
    jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

/// What a cancel did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CancelAnswer {
    job_id: String,
    /// `cancelled` (it had not started) or `cancelling` (its worker stops at its next check).
    status: String,
    message: String,
}

/// A job's status, with its webhook and mail delivery state.
#[utoipa::path(get, path = "/api/job/{id}/status", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = super::ErrorBody)))]
pub(super) async fn status(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let r = visible(&st, &caller, JobId(id)).await?;
    let mut body = status_body(&r);
    let targets = Targets::of(&r.job.payload);
    if let Some(url) = &targets.callback_url {
        body["webhook"] = match st
            .results
            .read_meta(&r.job.job_id, webhook::STATE_FILE)
            .await
        {
            Some(v) => v,
            None => json!({ "url": url, "state": "not_sent", "attempts": 0 }),
        };
    }
    if let Some(to) = &targets.email {
        body["email"] = match st.results.read_meta(&r.job.job_id, email::STATE_FILE).await {
            Some(v) => v,
            None => json!({ "to": to, "state": "not_sent", "attempts": 0 }),
        };
    }
    Ok(Json(body))
}

/// The job, or 404 when it does not exist or the caller may not see it.
pub(super) async fn visible(
    st: &AppState,
    caller: &Option<Extension<Caller>>,
    id: JobId,
) -> Result<JobRecord, ApiError> {
    let r = st.queue.get(&id).await?;
    if !sees(caller, &r.job) {
        return Err(QueueError::NotFound(id).into());
    }
    Ok(r)
}

async fn completed(
    st: &AppState,
    caller: &Option<Extension<Caller>>,
    id: String,
    what: Artifact,
) -> Result<axum::response::Response, ApiError> {
    let id = JobId(id);
    let r = visible(st, caller, id.clone()).await?;
    if r.status != JobStatus::Completed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_completed",
            format!(
                "job {id} is {}; its result exists once it is completed",
                r.status
            ),
        ));
    }
    let opened = st.results.open_artifact(&id, what).await.map_err(|_| {
        ApiError::new(
            StatusCode::GONE,
            "result_expired",
            format!("the result of job {id} is no longer kept"),
        )
    })?;
    // Streamed from the file, never read whole into memory.
    Ok(match opened {
        Opened::File(f, len) => (
            [(header::CONTENT_LENGTH, len.to_string())],
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        )
            .into_response(),
        Opened::Bytes(b) => b.into_response(),
    })
}

/// The extraction as JSON (`docproc.spreadsheet`, `docproc.pdf` or `docproc.analysis`).
#[utoipa::path(get, path = "/api/job/{id}/result", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The stored result", content_type = "application/json", body = Object),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "Not completed yet", body = super::ErrorBody),
        (status = 410, description = "Past the retention", body = super::ErrorBody)))]
pub(super) async fn result(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let body = completed(&st, &caller, id, Artifact::Json).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

/// A standalone HTML page of the result.
#[utoipa::path(get, path = "/api/job/{id}/html", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The stored page", content_type = "text/html", body = String),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody), (status = 410, body = super::ErrorBody)))]
pub(super) async fn html(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let body = completed(&st, &caller, id, Artifact::Html).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    ))
}

/// The result as Markdown: a PDF's headings, paragraphs and list items page
/// by page, a spreadsheet's tables under their sheet names.
#[utoipa::path(get, path = "/api/job/{id}/markdown", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The stored Markdown (CommonMark with GitHub tables)", content_type = "text/markdown", body = String),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody), (status = 410, body = super::ErrorBody)))]
pub(super) async fn markdown(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let body = completed(&st, &caller, id, Artifact::Markdown).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/markdown; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    ))
}

/// Cancels a job: a waiting one at once, a running one at its worker's next check.
#[utoipa::path(delete, path = "/api/job/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = CancelAnswer), (status = 404, body = super::ErrorBody),
        (status = 409, description = "Already finished", body = super::ErrorBody)))]
pub(super) async fn cancel(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let id = JobId(id);
    let record = visible(&st, &caller, id.clone()).await?;
    let (status, message) = match st.queue.cancel(&id).await? {
        CancelOutcome::Cancelled => {
            // No worker will see it: its notifications go from here, and
            // its upload goes now.
            let targets = Targets::of(&record.job.payload);
            if !targets.is_empty() {
                st.notifier
                    .announce(st.queue.as_ref(), &record.job, &targets)
                    .await;
            }
            if let Ok(p) = serde_json::from_value::<ExtractPayload>(record.job.payload) {
                if let Some(file) = p.upload(&st.config.uploads_dir()) {
                    let _ = tokio::fs::remove_file(file).await;
                }
            }
            ("cancelled", "the job was cancelled before it started")
        }
        CancelOutcome::Requested => (
            "cancelling",
            "the job is running; its worker stops at its next check",
        ),
    };
    Ok(Json(
        json!({ "job_id": id, "status": status, "message": message }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Comma-separated statuses.
    status: Option<String>,
    /// Comma-separated job types.
    job_type: Option<String>,
    /// Unix ms, inclusive.
    created_after: Option<u64>,
    /// Unix ms, exclusive.
    created_before: Option<u64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// A page size must be 1 to 1000.
pub(crate) fn check_limit(limit: Option<u32>) -> Result<(), ApiError> {
    match limit {
        Some(l) if l == 0 || l > 1000 => Err(ApiError::bad_request("limit must be 1 to 1000")),
        _ => Ok(()),
    }
}

/// The items of a comma-separated parameter, trimmed, empty ones dropped.
/// Most distinct values a comma-separated filter may have.
pub(crate) const MAX_FILTER_VALUES: usize = 32;

/// A comma-separated filter: trimmed, empty parts dropped, repeats
/// counted once; more than [`MAX_FILTER_VALUES`] distinct values is a
/// 400 (a list must cost what it returns, not what a client asks).
pub(crate) fn split(s: Option<&str>, what: &str) -> Result<Vec<String>, ApiError> {
    let out = split_names(s);
    if out.len() > MAX_FILTER_VALUES {
        return Err(ApiError::bad_request(format!(
            "{what} takes at most {MAX_FILTER_VALUES} distinct values, not {}",
            out.len()
        )));
    }
    Ok(out)
}

/// Comma-separated names: trimmed, empty parts dropped, repeats once.
pub(crate) fn split_names(s: Option<&str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    s.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && seen.insert(*p))
        .map(str::to_string)
        .collect()
}

/// Jobs, newest first, filtered.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListParams),
    responses((status = 200, body = JobPage), (status = 400, body = super::ErrorBody)))]
pub(super) async fn list(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    check_limit(p.limit)?;
    let statuses = split(p.status.as_deref(), "status")?
        .iter()
        .map(|s| s.parse::<JobStatus>())
        .collect::<Result<Vec<_>, _>>()?;
    let q = ListQuery {
        job_types: split(p.job_type.as_deref(), "job_type")?,
        statuses,
        created_from_ms: p.created_after,
        created_to_ms: p.created_before,
        cursor: p.cursor,
        limit: p.limit,
    };
    let page = st.queue.list(&q).await?;
    Ok(Json(json!({
        "jobs": page
            .jobs
            .iter()
            .filter(|r| sees(&caller, &r.job))
            .map(status_body)
            .collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}
