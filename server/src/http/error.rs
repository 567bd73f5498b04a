//! The error every HTTP failure answers with: each variant's status and
//! stable code, written once in [`ApiError::parts`], and the body
//! `{"code","message"}`. Application refusals ([`AppError`]) and queue
//! errors map onto it here and nowhere else.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use docproc_queue::QueueError;

use crate::app::AppError;

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// A rule of the application refused.
    App(AppError),
    /// A malformed path, query, body or form field.
    BadRequest(String),
    /// The upload is over the limit of this many bytes.
    TooLarge(u64),
    /// No route matches.
    NoRoute,
    /// The queue is still being opened.
    Starting,
    /// The server is shutting down and takes no new work.
    Draining(&'static str),
    /// The embedded queue's storage failed.
    StorageFailed(String),
    /// The queue backend does not answer.
    Unavailable(String),
    /// No key, or one that is not known.
    Unauthenticated(String),
    /// A key whose scope does not cover the request.
    PermissionDenied(String),
    /// A cookie-authenticated change without the dashboard's header.
    Csrf(&'static str),
    /// A change or WebSocket from another site.
    CrossOrigin(&'static str),
    /// Without keys, a request addressed to a name other than loopback.
    HostNotAllowed,
    /// Over the caller's upload rate; retry after this long.
    RateLimited(Duration),
    /// The headers exceed this many bytes.
    HeadersTooLarge(usize),
    /// The request took longer than this.
    Timeout(Duration),
    /// Something on this side failed; the log says what.
    Internal,
}

impl ApiError {
    /// A 400 with this message.
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// A 500, logged here with what happened.
    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::Internal
    }

    /// Status, stable code and message.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        use StatusCode as S;
        let m = |s: &dyn std::fmt::Display| s.to_string();
        match self {
            ApiError::App(e) => app_parts(e),
            ApiError::BadRequest(msg) => (S::BAD_REQUEST, "invalid_argument", msg.clone()),
            ApiError::TooLarge(max) => (
                S::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload exceeds the limit of {max} bytes"),
            ),
            ApiError::NoRoute => (S::NOT_FOUND, "not_found", "no such route".into()),
            ApiError::Starting => (
                S::SERVICE_UNAVAILABLE,
                "starting",
                "the server is starting: opening the queue".into(),
            ),
            ApiError::Draining(msg) => (S::SERVICE_UNAVAILABLE, "draining", m(msg)),
            ApiError::StorageFailed(reason) => (
                S::SERVICE_UNAVAILABLE,
                "storage_failed",
                format!("the queue's storage failed and takes no writes: {reason}"),
            ),
            ApiError::Unavailable(msg) => (S::SERVICE_UNAVAILABLE, "unavailable", msg.clone()),
            ApiError::Unauthenticated(msg) => (S::UNAUTHORIZED, "unauthenticated", msg.clone()),
            ApiError::PermissionDenied(msg) => (S::FORBIDDEN, "permission_denied", msg.clone()),
            ApiError::Csrf(msg) => (S::FORBIDDEN, "csrf", m(msg)),
            ApiError::CrossOrigin(msg) => (S::FORBIDDEN, "cross_origin", m(msg)),
            ApiError::HostNotAllowed => (
                S::FORBIDDEN,
                "host_not_allowed",
                "without API keys this server answers only requests addressed to localhost, \
                 127.0.0.1 or [::1]; configure keys to serve other names"
                    .into(),
            ),
            ApiError::RateLimited(wait) => (
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many uploads; retry in {} s", retry_secs(*wait)),
            ),
            ApiError::HeadersTooLarge(max) => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("the request's headers exceed {max} bytes"),
            ),
            ApiError::Timeout(limit) => (
                S::REQUEST_TIMEOUT,
                "timeout",
                format!("the request took longer than {} s", limit.as_secs()),
            ),
            ApiError::Internal => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log".into(),
            ),
        }
    }
}

/// Whole seconds to wait, rounded up so that a retry then succeeds.
fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + 1
}

fn app_parts(e: &AppError) -> (StatusCode, &'static str, String) {
    use StatusCode as S;
    let msg = e.to_string();
    match e {
        AppError::InvalidArgument(_) => (S::BAD_REQUEST, "invalid_argument", msg),
        AppError::NotFound(_) => (S::NOT_FOUND, "not_found", msg),
        AppError::NotCompleted { .. } => (S::CONFLICT, "not_completed", msg),
        AppError::ResultExpired(_) => (S::GONE, "result_expired", msg),
        AppError::NotDead { .. } => (S::CONFLICT, "not_dead", msg),
        AppError::UploadGone(_) => (S::GONE, "upload_gone", msg),
        AppError::InvalidCallbackUrl(_) => (S::BAD_REQUEST, "invalid_callback_url", msg),
        AppError::EmailNotConfigured => (S::BAD_REQUEST, "email_not_configured", msg),
        AppError::UnsupportedType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_type", msg),
        AppError::TooManyEntries(_) => (S::PAYLOAD_TOO_LARGE, "too_many_entries", msg),
        AppError::Queue(q) => queue_parts(q),
        AppError::Internal(_) => (
            S::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log".into(),
        ),
    }
}

fn queue_parts(e: &QueueError) -> (StatusCode, &'static str, String) {
    use StatusCode as S;
    let msg = e.to_string();
    match e {
        QueueError::NotFound(_) => (S::NOT_FOUND, "not_found", msg),
        QueueError::InvalidArgument(_) | QueueError::InvalidUrl { .. } => {
            (S::BAD_REQUEST, "invalid_argument", msg)
        }
        QueueError::Conflict { .. } | QueueError::LeaseLost(_) => (S::CONFLICT, "conflict", msg),
        QueueError::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "too_large", msg),
        QueueError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", msg),
        _ => (
            S::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log".into(),
        ),
    }
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable and machine-readable: `invalid_argument`, `not_found`,
    /// `unauthenticated`, `permission_denied`, `rate_limited`, …
    code: &'static str,
    /// For people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if let (StatusCode::INTERNAL_SERVER_ERROR, ApiError::App(AppError::Queue(e))) =
            (status, &self)
        {
            tracing::error!(error = %e, "queue error");
        }
        let mut r = (status, Json(ErrorBody { code, message })).into_response();
        if let ApiError::RateLimited(wait) = self {
            if let Ok(v) = HeaderValue::from_str(&retry_secs(wait).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self::App(e)
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        Self::App(AppError::Queue(e))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}
