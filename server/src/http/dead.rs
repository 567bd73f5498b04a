//! Dead jobs (failed for good): `GET /api/dead` lists them, `POST
//! /api/dead/{id}/retry` runs one again as a new job, `DELETE
//! /api/dead/{id}` removes its files and takes it off the list.
//!
//! These work the same on every queue backend: a retry publishes a copy of
//! the job (same type, payload, priority, correlation id), and the original
//! stays failed with a link to its retry. A deleted job's record stays in
//! the backend until the backend's own retention.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

use super::guard::{sees, Caller};
use super::jobs::status_body;
use super::{ApiError, AppState};
use crate::queue::{JobId, JobStatus, ListQuery, NewJob};
use crate::worker::ExtractPayload;
use axum::Extension;

/// Marks a dead job deleted from the list.
const DELETED: &str = "deleted.json";
/// Links a dead job to the job that retried it.
const RETRIED: &str = "retried.json";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dead", get(list))
        .route("/api/dead/{id}/retry", post(retry))
        .route("/api/dead/{id}", delete(remove))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeadParams {
    /// Comma-separated job types.
    job_type: Option<String>,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1 to 1000.
    limit: Option<u32>,
}

/// Dead jobs: failed for good, not deleted, with the job that retried each.
#[utoipa::path(get, path = "/api/dead", tag = "dead jobs", params(DeadParams),
    responses((status = 200, description = "`jobs[]` (as the job list, plus `retried_as`), `next_cursor`", body = super::jobs::JobPage),
        (status = 400, body = super::ErrorBody)))]
pub(super) async fn list(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    params: Result<Query<DeadParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    super::jobs::check_limit(p.limit)?;
    let page = st
        .queue
        .list(&ListQuery {
            job_types: super::split(p.job_type.as_deref(), "job_type")?,
            statuses: vec![JobStatus::Failed],
            cursor: p.cursor,
            limit: p.limit,
            ..ListQuery::default()
        })
        .await?;
    let mut jobs = Vec::with_capacity(page.jobs.len());
    for r in page.jobs.iter().filter(|r| sees(&caller, &r.job)) {
        if st.results.read_meta(&r.job.job_id, DELETED).await.is_some() {
            continue;
        }
        let mut body = status_body(r);
        body["retried_as"] = st
            .results
            .read_meta(&r.job.job_id, RETRIED)
            .await
            .map(|v| v["job_id"].clone())
            .unwrap_or(Value::Null);
        jobs.push(body);
    }
    Ok(Json(
        json!({ "jobs": jobs, "next_cursor": page.next_cursor }),
    ))
}

/// The dead job `id`, or 404 / 409.
async fn dead(
    st: &AppState,
    caller: &Option<Extension<Caller>>,
    id: &str,
) -> Result<crate::queue::JobRecord, ApiError> {
    let id = JobId(id.to_string());
    let r = super::jobs::visible(st, caller, id.clone()).await?;
    let deleted = st.results.read_meta(&id, DELETED).await.is_some();
    if r.status != JobStatus::Failed || deleted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead",
            format!(
                "job {id} is {}; only failed jobs are dead",
                if deleted {
                    "deleted"
                } else {
                    r.status.as_str()
                }
            ),
        ));
    }
    Ok(r)
}

/// Runs a dead job again as a new job (same type, payload, priority,
/// correlation id); the dead one links to it.
#[utoipa::path(post, path = "/api/dead/{id}/retry", tag = "dead jobs",
    params(("id" = String, Path, description = "Dead job id")),
    responses((status = 202, description = "`job_id` (the new job), `retry_of`, `status`, `polling_url`", body = Object),
        (status = 404, body = super::ErrorBody), (status = 409, description = "Not a dead job", body = super::ErrorBody),
        (status = 410, description = "Its upload is no longer kept", body = super::ErrorBody)))]
pub(super) async fn retry(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(id) = id?;
    let r = dead(&st, &caller, &id).await?;
    if let Ok(p) = serde_json::from_value::<ExtractPayload>(r.job.payload.clone()) {
        let kept = match p.upload(&st.config.uploads_dir()) {
            Some(file) => tokio::fs::try_exists(file).await.unwrap_or(false),
            None => false,
        };
        if !kept {
            return Err(ApiError::new(
                StatusCode::GONE,
                "upload_gone",
                format!(
                    "the file of job {id} is no longer kept (a job that failed permanently, \
                     or past the retention); upload it again"
                ),
            ));
        }
    }
    let job = NewJob {
        job_type: r.job.job_type.clone(),
        payload: r.job.payload.clone(),
        priority: r.job.priority,
        max_retries: r.job.max_retries,
        timeout: r.job.timeout,
        correlation_id: r.job.correlation_id.clone(),
        callback_context: r.job.callback_context.clone(),
        run_at_ms: None,
    };
    let new_id = st.queue.publish_one(job).await?;
    st.results
        .write_meta(&r.job.job_id, RETRIED, &json!({ "job_id": new_id }))
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(job_id = %id, retried_as = %new_id, "dead job retried");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": new_id,
            "retry_of": id,
            "status": "queued",
            "polling_url": format!("/api/job/{new_id}/status"),
        })),
    ))
}

/// Deletes a dead job's upload and results and takes it off the list
/// (scope admin). The backend forgets the record at its own retention.
#[utoipa::path(delete, path = "/api/dead/{id}", tag = "dead jobs",
    params(("id" = String, Path, description = "Dead job id")),
    responses((status = 200, description = "`{job_id, status: deleted}`", body = Object),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub(super) async fn remove(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let r = dead(&st, &caller, &id).await?;
    if let Ok(p) = serde_json::from_value::<ExtractPayload>(r.job.payload.clone()) {
        if let Some(file) = p.upload(&st.config.uploads_dir()) {
            let _ = tokio::fs::remove_file(file).await;
        }
    }
    st.results.remove(&r.job.job_id).await;
    st.results
        .write_meta(
            &r.job.job_id,
            DELETED,
            &json!({ "deleted_at_ms": crate::time::now_ms() }),
        )
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(job_id = %id, "dead job deleted");
    Ok(Json(json!({ "job_id": id, "status": "deleted" })))
}
