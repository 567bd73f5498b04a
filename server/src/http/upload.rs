//! `POST /api/upload-async`: streams the file to disk under a server-made
//! name with a size cap, decides its type from content, queues the job and
//! answers at once with its id.

use std::path::PathBuf;

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::Extension;

use super::guard::Caller;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::config::job_types;
use crate::extract::{detect, Format};
use crate::queue::{NewJob, Priority};
use crate::worker::ExtractPayload;

/// Longest accepted text field (priority, callback_url, email, analyze, correlation_id).
const MAX_FIELD: usize = 4096;

pub(super) fn router(max_upload: u64) -> Router<AppState> {
    // Room for the multipart framing and the small fields around the file.
    let limit = usize::try_from(max_upload.saturating_add(64 * 1024)).unwrap_or(usize::MAX);
    Router::new().route(
        "/api/upload-async",
        post(upload).layer(DefaultBodyLimit::max(limit)),
    )
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the upload exceeds the limit of {max} bytes"),
    )
}

fn multipart_error(e: axum::extract::multipart::MultipartError, max: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(max)
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// A file on disk that is removed unless kept.
struct Spool {
    path: PathBuf,
    keep: bool,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Only letters, digits and `.-_ ` of the client's name are kept, for display.
fn display_name(name: Option<&str>) -> String {
    let cleaned: String = name
        .unwrap_or("upload")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("upload")
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        .take(120)
        .collect();
    if cleaned.trim().is_empty() {
        "upload".into()
    } else {
        cleaned
    }
}

/// The form of an upload (documentation of the multipart fields).
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

/// The answer to an accepted upload.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UploadAccepted {
    job_id: String,
    /// Always `queued`.
    status: &'static str,
    /// excel_processing or pdf_processing.
    job_type: &'static str,
    /// The detected format (xlsx, xls, csv, pdf, …).
    #[schema(value_type = String)]
    format: Format,
    message: String,
    correlation_id: String,
    /// Where to poll.
    polling_url: String,
    /// Where to follow it live.
    ws_url: String,
}

/// Uploads a document and queues its extraction; answers at once.
#[utoipa::path(post, path = "/api/upload-async", tag = "jobs",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, body = UploadAccepted),
        (status = 400, description = "A bad field, an empty file, a refused callback URL", body = super::ErrorBody),
        (status = 413, description = "Over the upload limit", body = super::ErrorBody),
        (status = 415, description = "Not a supported type", body = super::ErrorBody),
        (status = 429, description = "Over this key's upload rate", body = super::ErrorBody),
        (status = 503, description = "Draining for shutdown", body = super::ErrorBody)))]
pub(super) async fn upload(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = caller.and_then(|Extension(c)| c.key.map(|k| k.name));
    let max = st.config.max_upload_bytes;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!("expected multipart/form-data: {}", e.body_text()))
    })?;
    let dir = st.config.uploads_dir();
    crate::durable::create_private_dir_all_async(dir.clone())
        .await
        .map_err(ApiError::internal)?;
    let mut spool: Option<(Spool, String)> = None;
    let (mut priority, mut callback_url, mut analyze) = (Priority::Normal, None, false);
    let (mut email, mut correlation_id) = (None::<String>, None::<String>);
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max))?
    {
        match field.name().unwrap_or("") {
            "file" => {
                if spool.is_some() {
                    return Err(ApiError::bad_request("only one file per upload"));
                }
                let name = display_name(field.file_name());
                let path = dir.join(format!("{:032x}.upload", rand::random::<u128>()));
                let guard = Spool {
                    path: path.clone(),
                    keep: false,
                };
                // The owner's only: someone else's document.
                let mut file = tokio::fs::OpenOptions::new()
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
                        return Err(too_large(max));
                    }
                    file.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                if written == 0 {
                    return Err(ApiError::bad_request("the file is empty"));
                }
                // On disk, name included, before the job is published and
                // 202 answered.
                file.sync_all().await.map_err(ApiError::internal)?;
                drop(file);
                crate::durable::sync_dir_async(dir.clone())
                    .await
                    .map_err(ApiError::internal)?;
                spool = Some((guard, name));
            }
            other => {
                let other = other.to_string();
                let mut value = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, max))? {
                    value.extend_from_slice(&chunk);
                    if value.len() > MAX_FIELD {
                        return Err(ApiError::bad_request(format!(
                            "field {other:?} is too long"
                        )));
                    }
                }
                let value = String::from_utf8(value)
                    .map_err(|_| ApiError::bad_request(format!("field {other:?} is not UTF-8")))?;
                let value = value.trim().to_string();
                match other.as_str() {
                    "priority" => {
                        priority = value.parse().map_err(|e: crate::queue::QueueError| {
                            ApiError::bad_request(e.to_string())
                        })?
                    }
                    "callback_url" if !value.is_empty() => callback_url = Some(value),
                    "callback_url" => {}
                    "email" if !value.is_empty() => email = Some(value),
                    "email" => {}
                    "correlation_id" if !value.is_empty() => {
                        if value.len() > 128 || value.chars().any(char::is_control) {
                            return Err(ApiError::bad_request(
                                "correlation_id is 1 to 128 printable characters",
                            ));
                        }
                        correlation_id = Some(value)
                    }
                    "correlation_id" => {}
                    "analyze" => {
                        analyze = match value.to_ascii_lowercase().as_str() {
                            "true" | "1" | "yes" | "on" => true,
                            "false" | "0" | "no" | "off" | "" => false,
                            _ => {
                                return Err(ApiError::bad_request("analyze must be true or false"))
                            }
                        }
                    }
                    _ => return Err(ApiError::bad_request(format!("unknown field {other:?}"))),
                }
            }
        }
    }
    let Some((mut spool, title)) = spool else {
        return Err(ApiError::bad_request(
            "the multipart field \"file\" is missing",
        ));
    };
    if let Some(url) = &callback_url {
        st.notifier.webhooks.guard().check(url).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_callback_url",
                e.to_string(),
            )
        })?;
    }
    if let Some(to) = &email {
        if st.notifier.mailer.is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "email_not_configured",
                "this server has no SMTP server configured; leave out the email field",
            ));
        }
        crate::notify::email::validate_address(to).map_err(ApiError::bad_request)?;
    }
    let path = spool.path.clone();
    let format = tokio::task::spawn_blocking(move || detect(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e.kind() {
            // A container over the limits detection reads.
            std::io::ErrorKind::InvalidData => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_entries", e.to_string())
            }
            _ => ApiError::internal(e),
        })?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_type",
                "the file is not a supported type (xlsx, xlsm, xlsb, xls, ods, csv, pdf); the type is decided from the content",
            )
        })?;
    let job_type = if format == Format::Pdf {
        job_types::PDF
    } else {
        job_types::EXCEL
    };
    let payload = ExtractPayload {
        // Only the name: workers resolve it under their own uploads
        // directory (and take nothing else).
        file: spool
            .path
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default(),
        format,
        title,
        analyze,
        callback_url,
        email,
        owner: owner.clone(),
    };
    let correlation_id =
        correlation_id.unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let job = NewJob::new(
        job_type,
        serde_json::to_value(&payload).map_err(ApiError::internal)?,
    )
    .priority(priority)
    .max_retries(st.config.max_retries)
    .timeout(st.config.job_timeout)
    .correlation_id(correlation_id.clone());
    // From here the job may exist even if this request is dropped while
    // the publish is in flight: the file stays unless the publish fails.
    spool.keep = true;
    let id = match st.queue.publish_one(job).await {
        Ok(id) => id,
        Err(e) => {
            let _ = tokio::fs::remove_file(&spool.path).await;
            return Err(e.into());
        }
    };
    st.hub
        .remember(&id, Some(&correlation_id), owner.as_deref());
    Ok((
        StatusCode::ACCEPTED,
        Json(UploadAccepted {
            job_id: id.0.clone(),
            status: "queued",
            job_type,
            format,
            message: format!("{} file queued for processing", format.as_str()),
            correlation_id,
            polling_url: format!("/api/job/{id}/status"),
            ws_url: format!("/api/ws?job_id={id}"),
        }),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_names_are_only_for_display() {
        assert_eq!(super::display_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(
            super::display_name(Some("C:\\x\\report <1>.xlsx")),
            "report 1.xlsx"
        );
        assert_eq!(super::display_name(Some("<>")), "upload");
        assert_eq!(super::display_name(None), "upload");
    }
}
