//! Who is calling: a bearer access token (JWT from identity), a personal API token, or the
//! browser's session cookie, whose state-changing requests must also carry the CSRF token and
//! come from our own origin. Every administrative action goes through authz's `api` decision.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use k8shell_proto::identity::v1 as idpb;
use serde_json::json;
use uuid::Uuid;

use crate::cookies::{self, CSRF_HEADER};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    ApiToken,
    Cookie,
}

/// An authenticated, active user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: idpb::User,
    pub id: Uuid,
    pub credential: Credential,
}

const SIGN_IN_HINT: &str = "sign in with `k8shell login`, send `Authorization: Bearer <token>`, \
                            or log in through the console";

impl Caller {
    pub fn username(&self) -> &str {
        &self.user.username
    }

    /// authz's `api` decision on an administrative endpoint (`users.suspend`, …).
    pub async fn may(&self, state: &AppState, endpoint: &str) -> bool {
        let input = json!({
            "v": 1,
            "user": {"username": self.user.username, "groups": self.user.groups},
            "endpoint": endpoint,
        });
        let verdict = state.gateway.backends.authz.check("api", &input).await;
        if !verdict.allow {
            tracing::info!(user = %self.user.username, %endpoint, decision = %verdict.decision_id,
                           reasons = ?verdict.reasons, "api endpoint denied");
        }
        verdict.allow
    }

    /// Fails with 403 unless authz allows `endpoint`.
    pub async fn require(&self, state: &AppState, endpoint: &str) -> ApiResult<()> {
        if self.may(state, endpoint).await {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} may not use {endpoint}; an administrator can grant it in the `api` policy",
                self.user.username
            )))
        }
    }

    /// Resolves a credential to an active user; `from_cookie` says where it came from (the
    /// kind of token is in its shape: a JWT has three parts).
    pub async fn authenticate(state: &AppState, token: &str, from_cookie: bool) -> ApiResult<Self> {
        let identity = &state.gateway.backends.identity;
        let is_jwt = token.matches('.').count() == 2;
        let credential = match (from_cookie, is_jwt) {
            (true, _) => Credential::Cookie,
            (false, true) => Credential::AccessToken,
            (false, false) => Credential::ApiToken,
        };
        let user = if is_jwt {
            let now = k8shell_common::clock::now().unix_timestamp();
            let claims = state.jwks.verify_access(token, now).map_err(|error| {
                ApiError::unauthorized(format!(
                    "the access token is not valid ({error}); {SIGN_IN_HINT}"
                ))
            })?;
            state
                .users
                .by_id(identity, claims.uid)
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::NotFound => {
                        ApiError::unauthorized("the access token's user no longer exists")
                    }
                    _ => ApiError::from_status("your account", &status),
                })?
        } else {
            state
                .users
                .by_token(identity, token)
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::Unauthenticated => {
                        ApiError::unauthorized(format!("{}; {SIGN_IN_HINT}", status.message()))
                    }
                    _ => ApiError::from_status("your token", &status),
                })?
        };
        if user.state() == idpb::UserState::Suspended {
            return Err(ApiError::forbidden(format!(
                "the account {} is suspended; ask an administrator",
                user.username
            )));
        }
        let id = user
            .id
            .as_ref()
            .and_then(|id| Uuid::try_from(id).ok())
            .ok_or_else(|| ApiError::unavailable("identity sent a user without an id"))?;
        Ok(Self {
            user,
            id,
            credential,
        })
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> ApiResult<Self> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
                })?;
            return Self::authenticate(state, token, false).await;
        }
        let cookies = state.cookies();
        let Some(token) = cookies::get(&parts.headers, cookies.session_name()) else {
            return Err(ApiError::unauthorized(format!(
                "you are not signed in: {SIGN_IN_HINT}"
            )));
        };
        check_browser_request(state, parts)?;
        Self::authenticate(state, token, true).await
    }
}

/// A cookie travels with every request to us, whoever made the page: a state change must
/// carry the CSRF token (which other sites cannot read) and must not come from another origin.
fn check_browser_request(state: &AppState, parts: &Parts) -> ApiResult<()> {
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe {
        return Ok(());
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && origin
            .to_str()
            .map_or(true, |o| crate::state::origin_of(o) != state.origin())
    {
        return Err(ApiError::forbidden(
            "this request comes from another site; it is refused to protect your session",
        ));
    }
    let cookies = state.cookies();
    let expected = cookies::get(&parts.headers, cookies.csrf_name());
    let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (expected, sent) {
        (Some(expected), Some(sent)) if cookies::same_secret(expected, sent) => Ok(()),
        _ => Err(ApiError::forbidden(
            "missing or wrong X-CSRF-Token header: send the value of the CSRF cookie \
             (also in GET /api/v1/me) with every change",
        )),
    }
}
