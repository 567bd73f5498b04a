//! Jobs: status, result (JSON, HTML and Markdown), cancel, and the
//! filtered list; each handler reads its request and asks the
//! application ([`crate::app`]).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::guard::{viewer, Caller};
use super::state::AppState;
use crate::app::{CancelAnswer, JobView, JobsPage};
use crate::results::{Artifact, Opened};
use axum::Extension;
use docproc_queue::{JobId, JobStatus, ListQuery};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/job/{id}/status", get(status))
        .route("/api/job/{id}/result", get(result))
        .route("/api/job/{id}/html", get(html))
        .route("/api/job/{id}/markdown", get(markdown))
        .route("/api/job/{id}", axum::routing::delete(cancel))
        .route("/api/jobs", get(list))
}

/// A job's status, with its webhook and mail delivery state.
#[utoipa::path(get, path = "/api/job/{id}/status", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn status(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let Path(id) = id?;
    Ok(Json(st.app.status(&viewer(&caller), &JobId(id)).await?))
}

/// A completed job's result as `what`, streamed from its file.
async fn completed(
    st: &AppState,
    caller: &Option<Extension<Caller>>,
    id: String,
    what: Artifact,
) -> Result<axum::response::Response, ApiError> {
    let opened = st.app.result(&viewer(caller), &JobId(id), what).await?;
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
        (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "Not completed yet", body = super::error::ErrorBody),
        (status = 410, description = "Past the retention", body = super::error::ErrorBody)))]
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
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody), (status = 410, body = super::error::ErrorBody)))]
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
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody), (status = 410, body = super::error::ErrorBody)))]
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
    responses((status = 200, body = CancelAnswer), (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "Already finished", body = super::error::ErrorBody)))]
pub(super) async fn cancel(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<CancelAnswer>, ApiError> {
    let Path(id) = id?;
    Ok(Json(st.app.cancel(&viewer(&caller), &JobId(id)).await?))
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
    responses((status = 200, body = JobsPage), (status = 400, body = super::error::ErrorBody)))]
pub(super) async fn list(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<JobsPage>, ApiError> {
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
        owner: None,
    };
    Ok(Json(st.app.list(&viewer(&caller), q).await?))
}
