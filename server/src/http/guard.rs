//! What every request passes through before its handler: a request id and
//! its log span, the header size limit, API key authentication and scope,
//! the per-key upload rate, the request timeout, and the request counters
//! of `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use docproc_broker::auth::{ApiKey, Denied, Keys, Scope};
use tracing::Instrument;

use super::error::ApiError;
use super::state::AppState;
use super::tls::ClientAddr;
use super::ui::{login_response, KEY_COOKIE};
use crate::app::Viewer;

/// Header the dashboard sends with cookie-authenticated changes; another
/// site cannot send it without a CORS preflight, which is never approved.
pub const CSRF_HEADER: &str = "x-docproc-ui";
/// Why a cookie-authenticated change without [`CSRF_HEADER`] is refused.
const CSRF_NEEDED: &str = "cookie-authenticated changes need the x-docproc-ui header";

/// Routes answered without a key: probes of orchestrators and load
/// balancers, and the dashboard's login.
fn public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/ui/login" | "/ui/logout" | "/ui/app.css"
    )
}

/// The key a request is made with, for handlers that care.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key, or `None` when no keys are configured.
    pub key: Option<ApiKey>,
}

impl Caller {
    /// The owner whose jobs alone this caller sees: a `write` key sees only
    /// the jobs it submitted; `read`, `worker` and `admin` keys (and every
    /// caller when no keys are configured) see all.
    pub fn tenant(&self) -> Option<String> {
        self.key
            .as_ref()
            .filter(|k| k.scope == Scope::Write)
            .map(|k| k.name.clone())
    }
}

/// Who the request's caller is to the application (no caller: no keys,
/// so every job is visible).
pub fn viewer(caller: &Option<axum::Extension<Caller>>) -> Viewer {
    match caller.as_ref().and_then(|c| c.0.tenant()) {
        Some(owner) => Viewer::Owner(owner),
        None => Viewer::All,
    }
}

/// Name of the rate-limit bucket: the key, else the client's address.
fn bucket(caller: &Caller, req: &Request) -> String {
    match (
        &caller.key,
        req.extensions().get::<ConnectInfo<ClientAddr>>(),
    ) {
        (Some(k), _) => format!("key:{}", k.name),
        (None, Some(ConnectInfo(ClientAddr(addr)))) => addr_bucket(addr.ip()),
        (None, None) => "anonymous".into(),
    }
}

/// An address's bucket: an IPv4 address, or the /64 of an IPv6 one (one
/// host is usually given a whole /64, so per-address buckets would give
/// it 2^64 of them).
fn addr_bucket(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("addr:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("addr:{v4}"),
            None => {
                let s = v6.segments();
                format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The scope a request needs: reading is `read`, changing is `write`,
/// deleting dead jobs is `admin`.
fn needed(method: &Method, path: &str) -> Scope {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Scope::Read
    } else if *method == Method::DELETE && path.starts_with("/api/dead/") {
        Scope::Admin
    } else {
        Scope::Write
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Authenticates by `Authorization: Bearer`, or the dashboard's cookie
/// (with the CSRF header on changes and a same-origin WebSocket).
fn authenticate(keys: &Keys, req: &Request) -> Result<Option<ApiKey>, ApiError> {
    let need = needed(req.method(), req.uri().path());
    let headers = req.headers();
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let result = match (from_header, cookie(headers, KEY_COOKIE)) {
        (Some(h), _) => keys.authorize(Some(h), need),
        (None, Some(k)) => {
            let changing = need > Scope::Read;
            if changing && !headers.contains_key(CSRF_HEADER) {
                return Err(ApiError::Csrf(CSRF_NEEDED));
            }
            if headers.contains_key(header::UPGRADE) && !same_origin(req) {
                return Err(ApiError::Csrf(
                    "a cookie-authenticated WebSocket must come from this origin",
                ));
            }
            keys.authorize(Some(&format!("Bearer {k}")), need)
        }
        (None, None) => keys.authorize(None, need),
    };
    match result {
        Ok(k) => Ok(k.cloned()),
        Err(d) => Err(denied(d)),
    }
}

/// Requests another web site makes a browser send. Without keys the server
/// trusts loopback, and a page in the user's browser can reach loopback
/// too: only requests addressed to a loopback name are answered (a page
/// of another site that rebinds its name to 127.0.0.1 still sends its own
/// name), and a change or a WebSocket from another origin is refused. The
/// dashboard's sign-in refuses other sites in every mode (login CSRF).
fn cross_site(st: &AppState, req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    let from_elsewhere = || {
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let foreign_site = site.is_some_and(|s| !matches!(s, "same-origin" | "none"));
        let foreign_origin = headers.contains_key(header::ORIGIN) && !same_origin(req);
        foreign_site || foreign_origin
    };
    if req.method() == Method::POST && req.uri().path() == "/ui/login" && from_elsewhere() {
        return Err(ApiError::CrossOrigin("sign in from this server's own page"));
    }
    if !st.config.keys.is_empty() || st.config.insecure {
        return Ok(());
    }
    if !host_of(req).is_some_and(loopback_host) {
        return Err(ApiError::HostNotAllowed);
    }
    let changing = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if (changing || headers.contains_key(header::UPGRADE)) && from_elsewhere() {
        return Err(ApiError::CrossOrigin(
            "without API keys, changes and WebSockets are accepted only from this server's own pages",
        ));
    }
    Ok(())
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(a, _)| a),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The name a request is addressed to: its `Host`, or over HTTP/2 (which
/// has none) its `:authority`.
fn host_of(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

fn same_origin(req: &Request) -> bool {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match (host_of(req), origin) {
        (Some(h), Some(o)) => o
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == h),
        _ => false,
    }
}

fn denied(d: Denied) -> ApiError {
    if d.is_forbidden() {
        ApiError::PermissionDenied(d.to_string())
    } else {
        ApiError::Unauthenticated(d.to_string())
    }
}

/// A short unique id for requests that bring none.
fn request_id(headers: &HeaderMap) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            format!("{:x}-{n}", crate::time::now_ms() / 1000)
        })
}

/// The middleware; see the module doc.
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let id = request_id(req.headers());
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let response = async {
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > st.config.max_header_bytes {
            return ApiError::HeadersTooLarge(st.config.max_header_bytes).into_response();
        }
        if let Err(e) = cross_site(&st, &req) {
            let (_, code, message) = e.parts();
            tracing::info!(code, "refused: {message}");
            return e.into_response();
        }
        let caller = if public(req.uri().path()) {
            Caller { key: None }
        } else {
            match authenticate(&st.config.keys, &req) {
                Ok(key) => Caller { key },
                Err(e) => {
                    let (status, code, message) = e.parts();
                    tracing::info!(code, "refused: {message}");
                    // A browser opening the dashboard gets the sign-in page.
                    let path = req.uri().path();
                    if method == Method::GET && (path == "/ui" || path == "/ui/") {
                        return login_response(status, "");
                    }
                    return e.into_response();
                }
            }
        };
        // A dead-job retry makes a job as an upload does: the same budget.
        let makes_work = route == "/api/upload-async" || route == "/api/dead/{id}/retry";
        if method == Method::POST && makes_work {
            if *st.closing.borrow() {
                return ApiError::Draining(
                    "the server is shutting down; upload to another instance or retry",
                )
                .into_response();
            }
            if let Err(wait) = st.upload_limiter.take(&bucket(&caller, &req)) {
                return ApiError::RateLimited(wait).into_response();
            }
        }
        req.extensions_mut().insert(caller);
        match tokio::time::timeout(st.config.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::Timeout(st.config.request_timeout).into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    let mut response = response;
    st.metrics.http(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("a b"));
        assert_ne!(request_id(&h), "a b");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; docproc_key=dp_k; y=2"),
        );
        assert_eq!(cookie(&h, KEY_COOKIE), Some("dp_k"));
        assert_eq!(cookie(&h, "z"), None);
    }

    #[test]
    fn loopback_names_with_and_without_ports() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:9",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(super::loopback_host(ok), "{ok}");
        }
        for bad in [
            "example.com",
            "evil.localhost.example",
            "10.0.0.1:80",
            "[::2]",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!super::loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn ipv6_callers_share_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(super::addr_bucket(a), super::addr_bucket(b));
        assert_ne!(super::addr_bucket(a), super::addr_bucket(c));
        let mapped: std::net::IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(super::addr_bucket(mapped), "addr:192.0.2.1");
    }
}
