//! The web console at `/`: its embedded files (crate `k8shell-console`), and `index.html` for
//! every other page path, since the console routes in the browser. Paths under `/api/` and
//! missing files under `/assets/` stay 404s.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse as _, Response};

use crate::problem::ApiError;

/// Scripts and styles only from here; the console talks to its own origin (fetch, SSE and
/// the terminal's WebSocket). xterm.js sets styles from script, hence `'unsafe-inline'` for
/// styles only.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if method != Method::GET && method != Method::HEAD {
        return not_found(path);
    }
    if path == "api" || path.starts_with("api/") {
        return not_found(path);
    }
    let asset = match k8shell_console::file(path) {
        Some(asset) if !path.is_empty() => asset,
        _ if path.starts_with("assets/") => return not_found(path),
        _ => k8shell_console::index(),
    };
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable() {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn not_found(path: &str) -> Response {
    let detail = if path.starts_with("assets/") {
        "no such console file: reload the page to get the current console".to_owned()
    } else {
        "no such path: the API is under /api/v1 (see /api/v1/openapi.json)".to_owned()
    };
    ApiError::not_found(detail).into_response()
}
