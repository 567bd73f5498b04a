//! Jobs: status, result (JSON and HTML), cancel, and the filtered list.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{rfc3339, ApiError, AppState};
use crate::notify::{email, webhook, Targets};
use crate::queue::{CancelOutcome, JobId, JobRecord, JobStatus, ListQuery};
use crate::results::Artifact;
use crate::worker::ExtractPayload;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/job/{id}/status", get(status))
        .route("/api/job/{id}/result", get(result))
        .route("/api/job/{id}/html", get(html))
        .route("/api/job/{id}", axum::routing::delete(cancel))
        .route("/api/jobs", get(list))
}

/// The status body of a job, as `GET /api/job/{id}/status` and the list show it.
pub(super) fn status_body(r: &JobRecord) -> Value {
    json!({
        "job_id": r.job.job_id,
        "job_type": r.job.job_type,
        "status": r.status,
        "priority": r.job.priority,
        "result": r.result,
        "error": r.error,
        "processing_time": r.processing_time().map(|d| d.as_secs_f64()),
        "created_at": rfc3339(r.job.created_at_ms),
        "started_at": r.started_at_ms.map(rfc3339),
        "completed_at": r.completed_at_ms.map(rfc3339),
        "attempts": r.attempts,
        "progress": r.progress,
        "correlation_id": r.job.correlation_id,
        "cancel_requested": r.cancel_requested,
    })
}

async fn status(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let r = st.queue.get(&JobId(id)).await?;
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

async fn completed(st: &AppState, id: String, what: Artifact) -> Result<Vec<u8>, ApiError> {
    let id = JobId(id);
    let r = st.queue.get(&id).await?;
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
    st.results.read(&id, what).await.map_err(|_| {
        ApiError::new(
            StatusCode::GONE,
            "result_expired",
            format!("the result of job {id} is no longer kept"),
        )
    })
}

async fn result(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let body = completed(&st, id, Artifact::Json).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

async fn html(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let body = completed(&st, id, Artifact::Html).await?;
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

async fn cancel(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let id = JobId(id);
    let record = st.queue.get(&id).await?;
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
                if p.file.starts_with(st.config.uploads_dir()) {
                    let _ = tokio::fs::remove_file(&p.file).await;
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

#[derive(Debug, Deserialize)]
struct ListParams {
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

/// The items of a comma-separated parameter, trimmed, empty ones dropped.
pub(crate) fn split(s: Option<&str>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

async fn list(
    State(st): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    if p.limit.is_some_and(|l| l == 0 || l > 1000) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let statuses = split(p.status.as_deref())
        .iter()
        .map(|s| s.parse::<JobStatus>())
        .collect::<Result<Vec<_>, _>>()?;
    let q = ListQuery {
        job_types: split(p.job_type.as_deref()),
        statuses,
        created_from_ms: p.created_after,
        created_to_ms: p.created_before,
        cursor: p.cursor,
        limit: p.limit,
    };
    let page = st.queue.list(&q).await?;
    Ok(Json(json!({
        "jobs": page.jobs.iter().map(status_body).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}
