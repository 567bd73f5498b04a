//! Dead jobs (failed for good): `GET /api/dead` lists them, `POST
//! /api/dead/{id}/retry` runs one again as a new job, `DELETE
//! /api/dead/{id}` removes its files and takes it off the list. What each
//! does is the application's ([`crate::app`]).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::guard::{viewer, Caller};
use super::state::AppState;
use crate::app::{DeadPage, Deleted, Retried};
use axum::Extension;
use docproc_queue::{JobId, ListQuery};

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
    responses((status = 200, body = DeadPage), (status = 400, body = super::error::ErrorBody)))]
pub(super) async fn list(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    params: Result<Query<DeadParams>, QueryRejection>,
) -> Result<Json<DeadPage>, ApiError> {
    let Query(p) = params?;
    super::jobs::check_limit(p.limit)?;
    let query = ListQuery {
        job_types: super::split(p.job_type.as_deref(), "job_type")?,
        cursor: p.cursor,
        limit: p.limit,
        ..ListQuery::default()
    };
    Ok(Json(st.app.dead(&viewer(&caller), query).await?))
}

/// Runs a dead job again as a new job (same type, payload, priority,
/// correlation id); the dead one links to it.
#[utoipa::path(post, path = "/api/dead/{id}/retry", tag = "dead jobs",
    params(("id" = String, Path, description = "Dead job id")),
    responses((status = 202, body = Retried),
        (status = 404, body = super::error::ErrorBody), (status = 409, description = "Not a dead job", body = super::error::ErrorBody),
        (status = 410, description = "Its upload is no longer kept", body = super::error::ErrorBody)))]
pub(super) async fn retry(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
    let Path(id) = id?;
    let retried = st.app.retry_dead(&viewer(&caller), &JobId(id)).await?;
    Ok((StatusCode::ACCEPTED, Json(retried)))
}

/// Deletes a dead job's upload and results and takes it off the list
/// (scope admin). The backend forgets the record at its own retention.
#[utoipa::path(delete, path = "/api/dead/{id}", tag = "dead jobs",
    params(("id" = String, Path, description = "Dead job id")),
    responses((status = 200, body = Deleted),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub(super) async fn remove(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        st.app.delete_dead(&viewer(&caller), &JobId(id)).await?,
    ))
}
