//! Administration: users (list, create, suspend, their keys) and the decision log. Each
//! endpoint is one of the `api` policy's administrative endpoints.

use axum::http::StatusCode;
use k8shell_proto::authz::v1 as apb;
use k8shell_proto::identity::v1 as idpb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::caller::Caller;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::routes::account::{Key, NewKey, User};
use crate::routes::common::{Page, time_text};
use crate::state::State;

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
    pub next_cursor: Option<String>,
}

pub(crate) fn named(username: &str) -> Option<idpb::UserSelector> {
    Some(idpb::UserSelector {
        user: Some(idpb::user_selector::User::Username(username.to_owned())),
    })
}

#[utoipa::path(get, path = "/users", tag = "admin", params(Page),
    responses((status = 200, body = UserList),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_users(
    state: State,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<UserList>> {
    caller.require(&state, "users.list").await?;
    let listed = state
        .gateway
        .backends
        .identity
        .clone()
        .list_users(idpb::ListUsersRequest {
            page: Some(k8shell_proto::types::v1::PageRequest {
                limit: page.limit()?,
                cursor: page.cursor.unwrap_or_default(),
            }),
        })
        .await
        .map_err(|s| ApiError::from_status("the users", &s))?
        .into_inner();
    let next = listed.page.map(|p| p.next_cursor).unwrap_or_default();
    Ok(Json(UserList {
        items: listed.users.iter().map(User::from).collect(),
        next_cursor: (!next.is_empty()).then_some(next),
    }))
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Lower-case letters, digits, `-` and `_`; their SSH login name.
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// authorized_keys lines, added with the account (a bad one creates nothing).
    #[serde(default)]
    pub public_keys: Vec<String>,
}

#[utoipa::path(post, path = "/users", tag = "admin", request_body = NewUser,
    responses((status = 201, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_user(
    state: State,
    caller: Caller,
    Json(body): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    caller.require(&state, "users.create").await?;
    let user = state
        .gateway
        .backends
        .identity
        .clone()
        .create_user(idpb::CreateUserRequest {
            username: body.username.clone(),
            display_name: body.display_name,
            email: body.email,
            groups: body.groups,
            public_keys: body.public_keys,
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("user {}", body.username), &s))?
        .into_inner();
    tracing::info!(admin = %caller.username(), user = %user.username, "user created");
    Ok((StatusCode::CREATED, Json(User::from(&user))))
}

#[utoipa::path(get, path = "/users/{username}", tag = "admin",
    params(("username" = String, Path)),
    responses((status = 200, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_user(
    state: State,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<User>> {
    caller.require(&state, "users.list").await?;
    let user = state
        .gateway
        .backends
        .identity
        .clone()
        .get_user(idpb::GetUserRequest {
            user: named(&username),
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("user {username}"), &s))?
        .into_inner();
    Ok(Json(User::from(&user)))
}

#[utoipa::path(post, path = "/users/{username}:suspend", tag = "admin",
    params(("username" = String, Path)),
    responses((status = 200, body = User, description = "Suspended: no new logins, tokens stop working"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn suspend(
    state: State,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<User>> {
    set_state(state, caller, username, idpb::UserState::Suspended).await
}

#[utoipa::path(post, path = "/users/{username}:activate", tag = "admin",
    params(("username" = String, Path)),
    responses((status = 200, body = User),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn activate(
    state: State,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<User>> {
    set_state(state, caller, username, idpb::UserState::Active).await
}

/// `POST /users/{name}:{action}`.
pub async fn user_action(
    state: State,
    caller: Caller,
    Path(target): Path<String>,
) -> ApiResult<Json<User>> {
    match target.split_once(':') {
        Some((name, "suspend")) => suspend(state, caller, Path(name.to_owned())).await,
        Some((name, "activate")) => activate(state, caller, Path(name.to_owned())).await,
        _ => Err(ApiError::not_found(
            "users have the actions :suspend and :activate",
        )),
    }
}

async fn set_state(
    axum::extract::State(state): State,
    caller: Caller,
    username: String,
    wanted: idpb::UserState,
) -> ApiResult<Json<User>> {
    caller.require(&state, "users.suspend").await?;
    if username == caller.username() && wanted == idpb::UserState::Suspended {
        return Err(ApiError::conflict(
            "you cannot suspend yourself; ask another administrator",
        ));
    }
    let user = state
        .gateway
        .backends
        .identity
        .clone()
        .set_user_state(idpb::SetUserStateRequest {
            user: named(&username),
            state: wanted.into(),
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("user {username}"), &s))?
        .into_inner();
    // The suspension holds at once for every credential.
    state.users.forget();
    tracing::info!(admin = %caller.username(), user = %username, state = ?wanted, "user state set");
    Ok(Json(User::from(&user)))
}

#[utoipa::path(get, path = "/users/{username}/keys", tag = "admin",
    params(("username" = String, Path)),
    responses((status = 200, body = Vec<Key>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn user_keys(
    state: State,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<Vec<Key>>> {
    caller.require(&state, "users.list").await?;
    let keys = state
        .gateway
        .backends
        .identity
        .clone()
        .list_keys(idpb::ListKeysRequest {
            user: named(&username),
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("user {username}"), &s))?
        .into_inner()
        .keys;
    Ok(Json(keys.into_iter().map(Key::from).collect()))
}

#[utoipa::path(post, path = "/users/{username}/keys", tag = "admin",
    params(("username" = String, Path)), request_body = NewKey,
    responses((status = 201, body = Key),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn add_user_key(
    state: State,
    caller: Caller,
    Path(username): Path<String>,
    Json(body): Json<NewKey>,
) -> ApiResult<(StatusCode, Json<Key>)> {
    // A key is a way in as that user: its own right, not part of making accounts.
    caller.require(&state, "users.add_key").await?;
    let key = state
        .gateway
        .backends
        .identity
        .clone()
        .add_key(idpb::AddKeyRequest {
            user: named(&username),
            public_key: body.public_key,
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("user {username}"), &s))?
        .into_inner();
    tracing::info!(admin = %caller.username(), user = %username, fingerprint = %key.fingerprint, "key added");
    Ok((StatusCode::CREATED, Json(Key::from(key))))
}

/// A decision of authz.
#[derive(Debug, Serialize, ToSchema)]
pub struct Decision {
    pub id: String,
    pub at: Option<String>,
    /// `authentication`, `ssh`, `provision`, `api`, `onboarding`.
    pub domain: String,
    pub allow: bool,
    pub reasons: Vec<String>,
    /// The input document (without secrets).
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// The policy bundle that decided.
    pub revision: String,
}

/// A page of decisions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionList {
    pub items: Vec<Decision>,
    pub next_cursor: Option<String>,
}

/// Filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionFilter {
    pub domain: Option<String>,
    /// Only denials.
    #[serde(default)]
    pub denied: bool,
    /// Only decisions about this user.
    pub user: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/decisions", tag = "admin", params(DecisionFilter),
    responses((status = 200, body = DecisionList),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn decisions(
    state: State,
    caller: Caller,
    Query(filter): Query<DecisionFilter>,
) -> ApiResult<Json<DecisionList>> {
    caller.require(&state, "decisions.list").await?;
    let limit = Page {
        limit: filter.limit,
        cursor: None,
    }
    .limit()?;
    let listed = state
        .gateway
        .backends
        .authz
        .grpc()
        .list_decisions(apb::ListDecisionsRequest {
            domain: filter.domain.unwrap_or_default(),
            denied_only: filter.denied,
            username: filter.user.unwrap_or_default(),
            limit,
            cursor: filter.cursor.unwrap_or_default(),
        })
        .await
        .map_err(|s| ApiError::from_status("the decision log", &s))?
        .into_inner();
    Ok(Json(DecisionList {
        items: listed
            .decisions
            .into_iter()
            .map(|d| Decision {
                at: time_text(d.at.as_ref()),
                input: serde_json::from_str(&d.input_json).unwrap_or(serde_json::Value::Null),
                id: d.id,
                domain: d.domain,
                allow: d.allow,
                reasons: d.reasons,
                revision: d.revision,
            })
            .collect(),
        next_cursor: (!listed.next_cursor.is_empty()).then_some(listed.next_cursor),
    }))
}
