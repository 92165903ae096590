//! The caller's own account: `/me`, SSH keys and personal API tokens.

use axum::http::StatusCode;
use k8shell_proto::identity::v1 as idpb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::caller::{Caller, Credential};
use crate::cookies;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::routes::common::{id_text, parse_id, time_text};
use crate::state::State;

/// A user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub groups: Vec<String>,
    /// `active` or `suspended`.
    pub state: String,
    pub created_at: Option<String>,
    pub last_login_at: Option<String>,
}

impl From<&idpb::User> for User {
    fn from(user: &idpb::User) -> Self {
        Self {
            id: id_text(user.id.as_ref()),
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            groups: user.groups.clone(),
            state: match user.state() {
                idpb::UserState::Suspended => "suspended",
                _ => "active",
            }
            .to_owned(),
            created_at: time_text(user.created_at.as_ref()),
            last_login_at: time_text(user.last_login_at.as_ref()),
        }
    }
}

/// Who is calling.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: User,
    /// `access_token`, `api_token` or `cookie`.
    pub signed_in_with: String,
    /// For browser sessions: the value to send in `X-CSRF-Token` with every change.
    pub csrf_token: Option<String>,
}

pub fn selector(caller: &Caller) -> Option<idpb::UserSelector> {
    Some(idpb::UserSelector {
        user: Some(idpb::user_selector::User::Id(caller.id.into())),
    })
}

#[utoipa::path(get, path = "/me", tag = "account",
    responses((status = 200, body = Me),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn me(
    state: State,
    caller: Caller,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<Me>> {
    let csrf_token = (caller.credential == Credential::Cookie)
        .then(|| cookies::get(&headers, state.cookies().csrf_name()).map(str::to_owned))
        .flatten();
    Ok(Json(Me {
        user: User::from(&caller.user),
        signed_in_with: match caller.credential {
            Credential::AccessToken => "access_token",
            Credential::ApiToken => "api_token",
            Credential::Cookie => "cookie",
        }
        .to_owned(),
        csrf_token,
    }))
}

/// An SSH public key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Key {
    /// `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub key_type: String,
    pub comment: String,
    /// The authorized_keys line.
    pub public_key: String,
    pub added_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<idpb::PublicKey> for Key {
    fn from(key: idpb::PublicKey) -> Self {
        Self {
            added_at: time_text(key.added_at.as_ref()),
            last_used_at: time_text(key.last_used_at.as_ref()),
            fingerprint: key.fingerprint,
            key_type: key.key_type,
            comment: key.comment,
            public_key: key.openssh,
        }
    }
}

/// A key to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The authorized_keys line (`ssh-ed25519 AAAA… comment`), e.g. the content of
    /// `~/.ssh/id_ed25519.pub`.
    #[schema(min_length = 1)]
    pub public_key: String,
}

/// A leaked API token must not be able to make itself a lasting way in.
fn refuse_api_token(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.credential == Credential::ApiToken {
        return Err(ApiError::forbidden(format!(
            "an API token cannot {what}: sign in with `k8shell login` (or the console) to do it"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/keys", tag = "account",
    responses((status = 200, body = Vec<Key>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_keys(state: State, caller: Caller) -> ApiResult<Json<Vec<Key>>> {
    let keys = state
        .gateway
        .backends
        .identity
        .clone()
        .list_keys(idpb::ListKeysRequest {
            user: selector(&caller),
        })
        .await
        .map_err(|s| ApiError::from_status("your keys", &s))?
        .into_inner()
        .keys;
    Ok(Json(keys.into_iter().map(Key::from).collect()))
}

#[utoipa::path(post, path = "/keys", tag = "account", request_body = NewKey,
    responses((status = 201, body = Key),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn add_key(
    state: State,
    caller: Caller,
    Json(body): Json<NewKey>,
) -> ApiResult<(StatusCode, Json<Key>)> {
    refuse_api_token(&caller, "add SSH keys")?;
    let key = state
        .gateway
        .backends
        .identity
        .clone()
        .add_key(idpb::AddKeyRequest {
            user: selector(&caller),
            public_key: body.public_key,
        })
        .await
        .map_err(|s| ApiError::from_status("the key", &s))?
        .into_inner();
    tracing::info!(user = %caller.username(), fingerprint = %key.fingerprint, "key added");
    Ok((StatusCode::CREATED, Json(Key::from(key))))
}

#[utoipa::path(delete, path = "/keys/{fingerprint}", tag = "account",
    params(("fingerprint" = String, Path, description = "`SHA256:…`, percent-encoded")),
    responses((status = 204, description = "Removed"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn remove_key(
    state: State,
    caller: Caller,
    Path(fingerprint): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .gateway
        .backends
        .identity
        .clone()
        .remove_key(idpb::RemoveKeyRequest {
            user: selector(&caller),
            fingerprint: fingerprint.clone(),
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("key {fingerprint}"), &s))?;
    tracing::info!(user = %caller.username(), %fingerprint, "key removed");
    Ok(StatusCode::NO_CONTENT)
}

/// A personal API token (the secret is shown only when it is made).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<idpb::ApiToken> for Token {
    fn from(token: idpb::ApiToken) -> Self {
        Self {
            id: id_text(token.id.as_ref()),
            created_at: time_text(token.created_at.as_ref()),
            expires_at: time_text(token.expires_at.as_ref()),
            revoked_at: time_text(token.revoked_at.as_ref()),
            name: token.name,
            prefix: token.prefix,
        }
    }
}

/// A token to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for ("CI deploys").
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Lifetime in seconds (default and maximum: the server's limit, a year unless configured).
    pub ttl_seconds: Option<u64>,
}

/// A token just made.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token: Token,
    /// The secret: send it as `Authorization: Bearer <secret>`. It is not shown again.
    pub secret: String,
}

#[utoipa::path(get, path = "/tokens", tag = "account",
    responses((status = 200, body = Vec<Token>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_tokens(state: State, caller: Caller) -> ApiResult<Json<Vec<Token>>> {
    let tokens = state
        .gateway
        .backends
        .identity
        .clone()
        .list_tokens(idpb::ListTokensRequest {
            user: selector(&caller),
        })
        .await
        .map_err(|s| ApiError::from_status("your tokens", &s))?
        .into_inner()
        .tokens;
    Ok(Json(tokens.into_iter().map(Token::from).collect()))
}

#[utoipa::path(post, path = "/tokens", tag = "account", request_body = NewToken,
    responses((status = 201, body = CreatedToken),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_token(
    state: State,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    refuse_api_token(&caller, "make API tokens")?;
    if body.name.trim().is_empty() || body.name.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "give the token a name of 1 to 200 characters, to recognise it later",
        ));
    }
    let created = state
        .gateway
        .backends
        .identity
        .clone()
        .create_token(idpb::CreateTokenRequest {
            user: selector(&caller),
            name: body.name,
            ttl_seconds: body.ttl_seconds.unwrap_or(0),
        })
        .await
        .map_err(|s| ApiError::from_status("the token", &s))?
        .into_inner();
    let token = Token::from(created.token.unwrap_or_default());
    tracing::info!(user = %caller.username(), token = %token.id, name = %token.name, "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            secret: created.secret,
        }),
    ))
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "account",
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses((status = 200, body = Token, description = "Revoked (revoking twice is fine)"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_token(
    state: State,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Token>> {
    let id = parse_id(&id, "token")?;
    let token = state
        .gateway
        .backends
        .identity
        .clone()
        .revoke_token(idpb::RevokeTokenRequest {
            user: selector(&caller),
            token_id: Some(id.into()),
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("token {id}"), &s))?
        .into_inner();
    // A revoked token must stop working now, not when the cache forgets it.
    state.users.forget();
    tracing::info!(user = %caller.username(), token = %id, "token revoked");
    Ok(Json(Token::from(token)))
}
