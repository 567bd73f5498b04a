//! `POST /api/upload-async`: reads the multipart form, streams the file to
//! disk under a server-made name with a size cap (written and synced before
//! anything is answered), and gives the submission to the application,
//! which checks it, decides its type from content and queues the job.

use std::path::PathBuf;

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::Extension;

use super::guard::Caller;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::error::ApiError;
use super::state::AppState;
use crate::app::{display_name, Fields, Spooled, Submission, Submitted, MAX_FIELD};

pub(super) fn router(max_upload: u64) -> Router<AppState> {
    // Room for the multipart framing and the small fields around the file.
    let limit = usize::try_from(max_upload.saturating_add(64 * 1024)).unwrap_or(usize::MAX);
    Router::new().route(
        "/api/upload-async",
        post(upload).layer(DefaultBodyLimit::max(limit)),
    )
}

fn multipart_error(e: axum::extract::multipart::MultipartError, max: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(max)
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// The form of an upload (documentation of the multipart fields; the
/// text fields are read by [`Fields`]).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub(super) struct UploadForm {
    /// The document; its type is decided from its content (xlsx, xlsm,
    /// xlsb, xls, ods, csv, pdf).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// low, normal (default), high or urgent.
    priority: Option<String>,
    /// A webhook called when the job finishes (Standard Webhooks signed;
    /// private addresses refused).
    callback_url: Option<String>,
    /// Who gets a completion mail (needs SMTP configured).
    email: Option<String>,
    /// Your id for the job, 1-128 characters; echoed in status and events.
    correlation_id: Option<String>,
    /// `true`: an analysis job follows the extraction.
    analyze: Option<bool>,
}

/// Uploads a document and queues its extraction; answers at once.
#[utoipa::path(post, path = "/api/upload-async", tag = "jobs",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = Submitted),
        (status = 400, description = "A bad field, an empty file, a refused callback URL", body = super::error::ErrorBody),
        (status = 413, description = "Over the upload limit", body = super::error::ErrorBody),
        (status = 415, description = "Not a supported type", body = super::error::ErrorBody),
        (status = 429, description = "Over this key's upload rate", body = super::error::ErrorBody),
        (status = 503, description = "Draining for shutdown", body = super::error::ErrorBody)))]
pub(super) async fn upload(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let owner = caller.and_then(|Extension(c)| c.key.map(|k| k.name));
    let sub = read_upload(req, st.config.uploads_dir(), st.config.max_upload_bytes).await?;
    let submitted = st.app.submit(owner, sub).await?;
    Ok((StatusCode::ACCEPTED, Json(submitted)))
}

/// Reads an upload request the way `POST /api/upload-async` does: its
/// multipart form, the one file spooled to `dir` (synced, name included)
/// under at most `max` bytes, and the text fields by their rules. On any
/// refusal nothing stays in `dir`. (The `upload` fuzz target drives it
/// with arbitrary bodies.)
pub async fn read_upload(req: Request, dir: PathBuf, max: u64) -> Result<Submission, ApiError> {
    let multipart = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::bad_request(format!("expected multipart/form-data: {}", e.body_text()))
    })?;
    read_form(multipart, dir, max).await
}

/// Reads the form: the one file, spooled to `dir` (synced, name included)
/// under at most `max` bytes, and the text fields.
async fn read_form(
    mut multipart: Multipart,
    dir: PathBuf,
    max: u64,
) -> Result<Submission, ApiError> {
    crate::durable::create_private_dir_all_async(dir.clone())
        .await
        .map_err(ApiError::internal)?;
    let mut file: Option<(Spooled, String)> = None;
    let mut fields = Fields::default();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max))?
    {
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            if file.is_some() {
                return Err(ApiError::bad_request("only one file per upload"));
            }
            let title = display_name(field.file_name());
            let path = dir.join(format!("{:032x}.upload", rand::random::<u128>()));
            let spooled = Spooled::new(path.clone());
            // The owner's only: someone else's document.
            let mut out = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await
                .map_err(ApiError::internal)?;
            let mut written = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
                written += chunk.len() as u64;
                if written > max {
                    return Err(ApiError::TooLarge(max));
                }
                out.write_all(&chunk).await.map_err(ApiError::internal)?;
            }
            if written == 0 {
                return Err(ApiError::bad_request("the file is empty"));
            }
            // On disk, name included, before the job is published and
            // 202 answered.
            out.sync_all().await.map_err(ApiError::internal)?;
            drop(out);
            crate::durable::sync_dir_async(dir.clone())
                .await
                .map_err(ApiError::internal)?;
            file = Some((spooled, title));
        } else {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
                value.extend_from_slice(&chunk);
                if value.len() > MAX_FIELD {
                    break;
                }
            }
            fields.set(&name, &value)?;
        }
    }
    let Some((file, title)) = file else {
        return Err(ApiError::bad_request(
            "the multipart field \"file\" is missing",
        ));
    };
    Ok(Submission {
        file,
        title,
        fields,
    })
}
