//! The REST API's routes under `/api/v1` and the OpenAPI document made from them.

pub mod account;
pub mod admin;
pub mod auth;
pub mod blueprints;
pub mod common;
pub mod sessions;
pub mod workspaces;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{delete, get, post};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::ApiError;
use crate::state::AppState;
use crate::terminal;

/// The OpenAPI document of `/api/v1`.
#[derive(OpenApi)]
#[openapi(
    info(title = "k8shell API", version = "1",
         description = "Workspaces, sessions, recordings, keys and tokens of k8shell. Errors are \
                        application/problem+json (RFC 9457); lists take ?limit=&cursor=."),
    servers((url = "/api/v1")),
    modifiers(&Security),
    paths(
        auth::login, auth::callback, auth::logout, auth::device_start, auth::device_poll,
        auth::device_approve, auth::ssh_challenge, auth::ssh,
        account::me, account::list_keys, account::add_key, account::remove_key,
        account::list_tokens, account::create_token, account::revoke_token,
        workspaces::list, workspaces::create, workspaces::get, workspaces::delete,
        workspaces::start, workspaces::stop, workspaces::events, terminal::terminal,
        blueprints::list, blueprints::get, blueprints::validate,
        sessions::list, sessions::get, sessions::terminate, sessions::recording, sessions::live,
        admin::list_users, admin::create_user, admin::get_user, admin::suspend, admin::activate,
        admin::user_keys, admin::add_user_key, admin::decisions,
    ),
    tags(
        (name = "auth", description = "Signing in: OpenID Connect, device flow, SSH signature"),
        (name = "account", description = "Your account, SSH keys and API tokens"),
        (name = "workspaces"), (name = "blueprints"), (name = "sessions"),
        (name = "admin", description = "Users and the decision log (administrators)"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token (JWT) or a personal API token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-k8shell-session",
                "The browser session; changes also need the X-CSRF-Token header",
            ))),
        );
    }
}

/// `/x/{id}` and `/x/{id}:verb` share one axum route (it cannot match a suffix after a
/// parameter): each answers only its own methods, and a 405 names them in `Allow`.
async fn split_actions(
    axum::extract::State(plain): axum::extract::State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let action = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .is_some_and(|segment| segment.contains(':'));
    let allowed = if action { "POST" } else { plain };
    let method = request.method().as_str();
    if allowed.split(',').any(|m| m == method) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here; use {allowed}"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// The OpenAPI document as served (and committed as `openapi.json`).
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `/api/v1`.
pub fn api(openapi: Arc<str>) -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let openapi = Arc::clone(&openapi);
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        openapi.to_string(),
                    )
                }
            }),
        )
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/device", post(auth::device_start))
        .route("/auth/device/poll", post(auth::device_poll))
        .route("/auth/device/approve", post(auth::device_approve))
        .route("/auth/ssh/challenge", post(auth::ssh_challenge))
        .route("/auth/ssh", post(auth::ssh))
        .route("/me", get(account::me))
        .route("/keys", get(account::list_keys).post(account::add_key))
        .route("/keys/{fingerprint}", delete(account::remove_key))
        .route(
            "/tokens",
            get(account::list_tokens).post(account::create_token),
        )
        .route("/tokens/{id}", delete(account::revoke_token))
        .route(
            "/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route("/workspaces/events", get(workspaces::events))
        .route(
            "/workspaces/{id}",
            get(workspaces::get)
                .delete(workspaces::delete)
                .post(workspaces::act_route)
                .layer(from_fn_with_state("GET,HEAD,DELETE", split_actions)),
        )
        .route("/workspaces/{id}/terminal", get(terminal::terminal))
        .route("/blueprints", get(blueprints::list))
        .route("/blueprints/validate", post(blueprints::validate))
        .route("/blueprints/{name}", get(blueprints::get))
        .route("/sessions", get(sessions::list))
        .route(
            "/sessions/{id}",
            get(sessions::get)
                .post(sessions::terminate)
                .layer(from_fn_with_state("GET,HEAD", split_actions)),
        )
        .route("/sessions/{id}/live", get(sessions::live))
        .route("/recordings/{id}", get(sessions::recording))
        .route("/users", get(admin::list_users).post(admin::create_user))
        .route(
            "/users/{username}",
            get(admin::get_user)
                .post(admin::user_action)
                .layer(from_fn_with_state("GET,HEAD", split_actions)),
        )
        .route(
            "/users/{username}/keys",
            get(admin::user_keys).post(admin::add_user_key),
        )
        .route("/decisions", get(admin::decisions))
}

#[cfg(test)]
mod tests {
    /// The committed `openapi.json` is what the handlers say; the console and the CLI are
    /// written against it.
    #[test]
    fn the_committed_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let current = super::openapi_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &current).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == current,
            "crates/api-server/openapi.json is not what the handlers say: \
             run `UPDATE_OPENAPI=1 cargo test -p k8shell-api-server openapi` and commit it"
        );
    }
}
