//! The dashboard (`/ui`): one HTML page, its script and style, served from
//! the binary (no build step, nothing fetched from elsewhere), and the
//! sign-in that puts an API key in an HttpOnly, SameSite=Strict cookie.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

use super::state::AppState;

const INDEX: &str = include_str!("ui/index.html");
const LOGIN: &str = include_str!("ui/login.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// The cookie the dashboard keeps its key in.
pub(super) const KEY_COOKIE: &str = "docproc_key";

/// Same-origin only; the page loads nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", get(logout))
}

fn page(status: StatusCode, content_type: &'static str, body: String) -> Response {
    asset(status, content_type, CSP, body)
}

/// A page or asset of the binary's own, with its security headers.
pub(super) fn asset(
    status: StatusCode,
    content_type: &'static str,
    csp: &'static str,
    body: String,
) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn index() -> Response {
    page(
        StatusCode::OK,
        "text/html; charset=utf-8",
        INDEX.to_string(),
    )
}

async fn script() -> Response {
    page(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        SCRIPT.to_string(),
    )
}

async fn style() -> Response {
    page(StatusCode::OK, "text/css; charset=utf-8", STYLE.to_string())
}

/// The sign-in page with `error` shown (HTML-escaped).
pub(super) fn login_response(status: StatusCode, error: &str) -> Response {
    let escaped = error
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    page(
        status,
        "text/html; charset=utf-8",
        LOGIN.replace("{{error}}", &escaped),
    )
}

async fn login_page() -> Response {
    login_response(StatusCode::OK, "")
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    key: String,
}

fn cookie(value: &str, secure: bool, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{KEY_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("docproc_key=; Path=/; Max-Age=0"))
}

async fn login(
    State(st): State<AppState>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return login_response(StatusCode::BAD_REQUEST, "the form was not understood");
    };
    let key = f.key.trim();
    let valid = st.config.keys.is_empty()
        || (key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
            && st.config.keys.verify(key).is_some());
    if !valid {
        tracing::info!("dashboard sign-in with an unknown key");
        return login_response(StatusCode::UNAUTHORIZED, "unknown API key");
    }
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui")]).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie(key, st.config.tls.is_some(), 12 * 3600),
    );
    r
}

async fn logout(State(st): State<AppState>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/login")]).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie("", st.config.tls.is_some(), 0));
    r
}
