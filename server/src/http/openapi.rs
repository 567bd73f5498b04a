//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the HTTP API,
//! generated from the handlers' `#[utoipa::path]` declarations and the
//! types they answer with; `GET /api/docs`: a reference page rendered from
//! it by a script served here (nothing is fetched from elsewhere).

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "docproc",
        description = "Upload documents, follow their jobs, fetch results. Every route but the \
                       probes needs `Authorization: Bearer KEY` when the server has API keys \
                       (scopes: read for GET, write for changes, admin to delete dead jobs). \
                       Errors are `{\"code\",\"message\"}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::upload::upload,
        super::jobs::status,
        super::jobs::result,
        super::jobs::html,
        super::jobs::markdown,
        super::jobs::cancel,
        super::jobs::list,
        super::ws::handler,
        super::dead::list,
        super::dead::retry,
        super::dead::remove,
        super::stats::stats,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&BearerKeys),
    security(("api_key" = [])),
    tags(
        (name = "jobs", description = "Uploads, status, results, cancel, live events"),
        (name = "dead jobs", description = "Jobs that failed for good"),
        (name = "operations", description = "Probes, statistics, metrics"),
    )
)]
pub(crate) struct ApiDoc;

/// Declares the bearer API key scheme.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key made by `docproc key new`"))
                    .build(),
            ),
        );
    }
}

const PAGE: &str = include_str!("ui/docs.html");
const SCRIPT: &str = include_str!("ui/docs.js");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(spec))
        .route("/api/docs", get(page))
        .route("/api/docs/docs.js", get(script))
}

async fn spec() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    Json(doc)
}

async fn page() -> Response {
    super::ui::asset(
        StatusCode::OK,
        "text/html; charset=utf-8",
        CSP,
        PAGE.to_string(),
    )
}

async fn script() -> Response {
    super::ui::asset(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        CSP,
        SCRIPT.to_string(),
    )
}
