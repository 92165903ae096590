//! `/auth`: signing in. The browser goes through the organisation's OpenID provider (via
//! identity) and gets a session cookie; the CLI uses the device flow or signs a challenge with
//! an SSH key. Every way ends in an access token from identity, and every refusal is counted
//! against the client's address.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use k8shell_proto::identity::v1 as idpb;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::caller::Caller;
use crate::cookies;
use crate::extract::{Json, Query};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::routes::account::User;
use crate::routes::common::time_text;
use crate::ssh_login;
use crate::state::{AppState, State};

/// Counts a request against the client's address.
fn limit(state: &AppState, peer: SocketAddr) -> ApiResult<()> {
    state
        .login_limit
        .take(peer.ip())
        .map_err(ApiError::too_many)
}

/// Where to go after the login.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// A path of this site to return to (default `/`).
    pub return_to: Option<String>,
}

/// Only our own paths: an open redirect would let others dress up their pages as ours.
fn local_path(path: Option<&str>) -> String {
    match path {
        // Printable ASCII only: browsers drop tabs and newlines, so `/\t/evil.example` would
        // become `//evil.example`, another site.
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && p.chars().all(|c| c.is_ascii_graphic() && c != '\\') =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[utoipa::path(get, path = "/auth/login", tag = "auth", params(LoginQuery),
    responses((status = 303, description = "To the OpenID provider's login page"),
              (status = "4XX", body = Problem, content_type = "application/problem+json"),
              (status = "5XX", body = Problem, content_type = "application/problem+json")))]
pub async fn login(
    state: State,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<LoginQuery>,
) -> ApiResult<Response> {
    limit(&state, peer)?;
    let begun = state
        .gateway
        .backends
        .identity
        .clone()
        .begin_login(idpb::BeginLoginRequest {})
        .await
        .map_err(|s| match s.code() {
            tonic::Code::FailedPrecondition | tonic::Code::Unimplemented => ApiError::not_found(
                "no OpenID provider is configured: sign in with `k8shell login --ssh` \
                 or ask an administrator to configure one",
            ),
            _ => ApiError::from_status("the login", &s),
        })?
        .into_inner();
    let cookies = state.cookies();
    // The state binds the provider's answer to this browser; the return path rides along.
    let value = format!(
        "{}|{}",
        begun.state,
        k8shell_common::http::form_encode(&local_path(query.return_to.as_deref()))
    );
    let mut response = Redirect::to(&begun.authorization_url).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies.set(cookies.login_state_name(), &value, 600, true),
    );
    Ok(response)
}

/// What the OpenID provider sends back.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[utoipa::path(get, path = "/auth/callback", tag = "auth", params(CallbackQuery),
    responses((status = 303, description = "Signed in: the session cookie is set"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn callback(
    state: State,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> ApiResult<Response> {
    limit(&state, peer)?;
    if let Some(error) = query.error {
        return Err(ApiError::unauthorized(format!(
            "the OpenID provider refused the login: {error} {}",
            query.error_description.unwrap_or_default()
        )));
    }
    // First whether this browser started the login: the provider's answer is worth nothing
    // to anyone else.
    let cookies = state.cookies();
    let remembered = cookies::get(&headers, cookies.login_state_name()).unwrap_or_default();
    let (expected, return_to) = remembered.split_once('|').unwrap_or((remembered, "/"));
    let provider_state = query.state.unwrap_or_default();
    if expected.is_empty() || !cookies::same_secret(expected, &provider_state) {
        return Err(ApiError::forbidden(
            "this login was not started in this browser (or took too long): start again at /api/v1/auth/login",
        ));
    }
    let Some(code) = query.code else {
        return Err(ApiError::bad_request(
            "the OpenID provider sent no `code`: start again at /api/v1/auth/login",
        ));
    };
    let completed = state
        .gateway
        .backends
        .identity
        .clone()
        .complete_login(idpb::CompleteLoginRequest {
            state: provider_state,
            code,
        })
        .await
        .map_err(|s| ApiError::from_status("the login", &s))?
        .into_inner();
    let user = completed
        .user
        .ok_or_else(|| ApiError::unavailable("identity answered the login without a user"))?;
    tracing::info!(user = %user.username, created = completed.created, peer = %peer, "browser login");
    let return_to = local_path(Some(&k8shell_common::http::form_decode(return_to)));
    let mut response = Redirect::to(&return_to).into_response();
    set_session(&state, &user, response.headers_mut()).await?;
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies.set(cookies.login_state_name(), "", 0, true),
    );
    Ok(response)
}

/// Issues an access token for `user` and sets the session and CSRF cookies.
async fn set_session(
    state: &AppState,
    user: &idpb::User,
    headers: &mut HeaderMap,
) -> ApiResult<()> {
    let issued = issue(state, user).await?;
    let cookies = state.cookies();
    let max_age = state.config.login_ttl.as_secs();
    let csrf =
        ssh_login::random_text().map_err(|_| ApiError::unavailable("no randomness available"))?;
    headers.append(
        header::SET_COOKIE,
        cookies.set(cookies.session_name(), &issued.token, max_age, true),
    );
    headers.append(
        header::SET_COOKIE,
        cookies.set(cookies.csrf_name(), &csrf, max_age, false),
    );
    Ok(())
}

async fn issue(state: &AppState, user: &idpb::User) -> ApiResult<idpb::IssuedToken> {
    Ok(state
        .gateway
        .backends
        .identity
        .clone()
        .issue_access_token(idpb::IssueAccessTokenRequest {
            user: Some(idpb::UserSelector {
                user: user.id.clone().map(idpb::user_selector::User::Id),
            }),
            ttl_seconds: state.config.login_ttl.as_secs(),
        })
        .await
        .map_err(|s| ApiError::from_status("the access token", &s))?
        .into_inner())
}

#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204, description = "The browser's session cookies are cleared")))]
pub async fn logout(state: State) -> Response {
    let cookies = state.cookies();
    let mut response = StatusCode::NO_CONTENT.into_response();
    for name in [cookies.session_name(), cookies.csrf_name()] {
        response.headers_mut().append(
            header::SET_COOKIE,
            cookies.set(name, "", 0, name == cookies.session_name()),
        );
    }
    response
}

/// An access token for the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessToken {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: Option<String>,
    pub user: User,
}

/// Starting a device login.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceStart {
    /// Shown to the user when they confirm ("k8shell CLI on laptop").
    pub client_name: Option<String>,
}

/// A device login under way.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceLogin {
    /// The device's secret, for polling.
    pub device_code: String,
    /// What the user checks in the browser.
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in_seconds: u64,
    /// Poll no more often than this.
    pub interval_seconds: u64,
}

#[utoipa::path(post, path = "/auth/device", tag = "auth", request_body = DeviceStart,
    responses((status = 200, body = DeviceLogin),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn device_start(
    state: State,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<DeviceStart>,
) -> ApiResult<Json<DeviceLogin>> {
    limit(&state, peer)?;
    let begun = state
        .gateway
        .backends
        .identity
        .clone()
        .begin_device_login(idpb::BeginDeviceLoginRequest {
            client_name: body.client_name.unwrap_or_default(),
        })
        .await
        .map_err(|s| ApiError::from_status("the device login", &s))?
        .into_inner();
    Ok(Json(DeviceLogin {
        device_code: begun.device_code,
        user_code: begun.user_code,
        verification_uri: begun.verification_uri,
        verification_uri_complete: begun.verification_uri_complete,
        expires_in_seconds: begun.expires_in_seconds,
        interval_seconds: begun.interval_seconds,
    }))
}

/// Polling a device login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePoll {
    pub device_code: String,
}

/// Where a device login is.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePollAnswer {
    /// `pending`, `approved`, `denied` or `expired`.
    pub state: String,
    /// Once approved (given once).
    pub access_token: Option<AccessToken>,
}

#[utoipa::path(post, path = "/auth/device/poll", tag = "auth", request_body = DevicePoll,
    responses((status = 200, body = DevicePollAnswer),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn device_poll(
    state: State,
    Json(body): Json<DevicePoll>,
) -> ApiResult<Json<DevicePollAnswer>> {
    let polled = state
        .gateway
        .backends
        .identity
        .clone()
        .poll_device_login(idpb::PollDeviceLoginRequest {
            device_code: body.device_code,
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::ResourceExhausted => ApiError {
                retry_after: Some(5),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, s.message())
            },
            tonic::Code::NotFound => ApiError::not_found(
                "no such device login (or it was already used): start again with POST /auth/device",
            ),
            _ => ApiError::from_status("the device login", &s),
        })?
        .into_inner();
    let name = match polled.state() {
        idpb::DeviceLoginState::Approved => "approved",
        idpb::DeviceLoginState::Denied => "denied",
        idpb::DeviceLoginState::Expired => "expired",
        _ => "pending",
    };
    let access_token = match (polled.access_token, polled.user) {
        (Some(token), Some(user)) => Some(AccessToken {
            token: token.token,
            expires_at: time_text(token.expires_at.as_ref()),
            user: User::from(&user),
        }),
        _ => None,
    };
    Ok(Json(DevicePollAnswer {
        state: name.to_owned(),
        access_token,
    }))
}

/// Confirming (or refusing) a device's code, signed in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceApproval {
    pub user_code: String,
    /// `false` refuses the login.
    #[serde(default = "yes")]
    pub approve: bool,
}

fn yes() -> bool {
    true
}

/// The device that was confirmed.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceApproved {
    pub client_name: String,
}

#[utoipa::path(post, path = "/auth/device/approve", tag = "auth", request_body = DeviceApproval,
    responses((status = 200, body = DeviceApproved),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn device_approve(
    state: State,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    Json(body): Json<DeviceApproval>,
) -> ApiResult<Json<DeviceApproved>> {
    // Codes are short: guessing them costs time.
    limit(&state, peer)?;
    let approved = state
        .gateway
        .backends
        .identity
        .clone()
        .approve_device_login(idpb::ApproveDeviceLoginRequest {
            user_code: body.user_code.trim().to_uppercase(),
            user: crate::routes::account::selector(&caller),
            approve: body.approve,
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => ApiError::not_found(
                "no device login has this code (or it expired): check the code the device shows",
            ),
            _ => ApiError::from_status("the device login", &s),
        })?
        .into_inner();
    tracing::info!(user = %caller.username(), client = %approved.client_name, approve = body.approve,
                   "device login answered");
    Ok(Json(DeviceApproved {
        client_name: approved.client_name,
    }))
}

/// Asking for a challenge to sign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshChallengeRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub username: String,
}

/// A challenge: sign `message` with `ssh-keygen -Y sign -n k8shell-login` (or ssh-agent) within
/// a minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct SshChallenge {
    pub challenge_id: String,
    pub message: String,
    /// `k8shell-login`.
    pub namespace: String,
}

#[utoipa::path(post, path = "/auth/ssh/challenge", tag = "auth", request_body = SshChallengeRequest,
    responses((status = 200, body = SshChallenge),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn ssh_challenge(
    state: State,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<SshChallengeRequest>,
) -> ApiResult<Json<SshChallenge>> {
    limit(&state, peer)?;
    if body.username.is_empty() || body.username.len() > 64 {
        return Err(ApiError::bad_request("give the user name to sign in as"));
    }
    let challenge = state
        .challenges
        .issue(&state.origin(), &body.username)
        .map_err(|_| ApiError::unavailable("no randomness available"))?
        .ok_or_else(|| ApiError::too_many(60))?;
    Ok(Json(SshChallenge {
        challenge_id: challenge.id,
        message: challenge.message,
        namespace: ssh_login::NAMESPACE.to_owned(),
    }))
}

/// A signed challenge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshLogin {
    pub username: String,
    pub challenge_id: String,
    /// The armored signature (`-----BEGIN SSH SIGNATURE-----` …).
    pub signature: String,
    /// Also set the browser's session cookies.
    #[serde(default)]
    pub set_cookie: bool,
}

#[utoipa::path(post, path = "/auth/ssh", tag = "auth", request_body = SshLogin,
    responses((status = 200, body = AccessToken),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn ssh(
    state: State,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<SshLogin>,
) -> ApiResult<Response> {
    limit(&state, peer)?;
    // One answer for every refusal, so that nobody learns which users or keys exist.
    let refused = |why: &str| {
        tracing::info!(user = %body.username, %peer, reason = why, "ssh-signature login refused");
        ApiError::unauthorized(
            "the signature was not accepted: sign the challenge's message with a key registered \
             for this user, namespace k8shell-login, within a minute of asking for it",
        )
    };
    let Some(message) = state.challenges.take(&body.challenge_id, &body.username) else {
        return Err(refused("unknown, used or expired challenge"));
    };
    let (signature, key_line) =
        ssh_login::parse(&body.signature).map_err(|e| refused(&e.to_string()))?;
    ssh_login::verify(&signature, &message).map_err(|e| refused(&e.to_string()))?;
    let user = state
        .gateway
        .backends
        .identity
        .clone()
        .verify_public_key(idpb::VerifyPublicKeyRequest {
            username: body.username.clone(),
            public_key: key_line,
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                refused("not a key of this user")
            }
            _ => ApiError::from_status("the login", &s),
        })?
        .into_inner();
    if let Err(reasons) = authentication(&state, &user, "publickey", peer).await {
        return Err(refused(&format!("authz: {reasons}")));
    }
    let issued = issue(&state, &user).await?;
    tracing::info!(user = %user.username, %peer, "ssh-signature login");
    let answer = AccessToken {
        token: issued.token,
        expires_at: time_text(issued.expires_at.as_ref()),
        user: User::from(&user),
    };
    let mut response = axum::Json(answer).into_response();
    if body.set_cookie {
        set_session(&state, &user, response.headers_mut()).await?;
    }
    Ok(response)
}

/// authz's `authentication` decision on `user` signing in with `method` from `peer`; the
/// reasons when refused.
async fn authentication(
    state: &AppState,
    user: &idpb::User,
    method: &str,
    peer: SocketAddr,
) -> Result<(), String> {
    let input = json!({
        "v": 1,
        "user": {"username": user.username, "groups": user.groups,
                 "state": if user.state() == idpb::UserState::Suspended { "suspended" } else { "active" }},
        "method": method,
        "source_ip": peer.ip().to_string(),
    });
    let verdict = state
        .gateway
        .backends
        .authz
        .check("authentication", &input)
        .await;
    if verdict.allow {
        Ok(())
    } else {
        Err(verdict.reasons.join("; "))
    }
}

/// `GET /login/once?code=…`: the single-use sign-in handed over at start (the all-in-one
/// prints it). Outside `/api/v1`: it is a browser link, not an API. authz's `authentication`
/// decides (method `one-time-login`), like every sign-in.
pub async fn one_time_login(
    state: State,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    limit(&state, peer)?;
    let refused = || {
        ApiError::unauthorized(
            "this sign-in link is used, expired or wrong: restart k8shell-allinone for a new one, \
             or sign in with `k8shell login --ssh`",
        )
    };
    let code = query.get("code").map(String::as_str).unwrap_or_default();
    let Some(offer) = state
        .one_time_login
        .redeem(code, std::time::SystemTime::now())
    else {
        tracing::info!(%peer, "one-time login refused");
        return Err(refused());
    };
    let signed_in = sign_in_once(&state, &offer.username, peer).await;
    if signed_in.is_err() {
        // Our failure (identity away, a refusal to be lifted) must not burn the only link.
        state.one_time_login.put_back(offer);
    }
    signed_in
}

async fn sign_in_once(state: &AppState, username: &str, peer: SocketAddr) -> ApiResult<Response> {
    let user = state
        .gateway
        .backends
        .identity
        .clone()
        .get_user(idpb::GetUserRequest {
            user: crate::routes::admin::named(username),
        })
        .await
        .map_err(|s| ApiError::from_status("the one-time login's user", &s))?
        .into_inner();
    if let Err(reasons) = authentication(state, &user, "one-time-login", peer).await {
        tracing::info!(user = %username, %peer, %reasons, "one-time login refused by authz");
        return Err(ApiError::forbidden(format!(
            "authz refused the sign-in: {reasons}"
        )));
    }
    tracing::info!(user = %username, %peer, "one-time login");
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    set_session(state, &user, response.headers_mut()).await?;
    Ok(response)
}

/// Where users confirm a device login: a small page of its own until the console serves one.
pub async fn device_page(
    state: State,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let code = query.get("code").cloned().unwrap_or_default();
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect();
    // The CLI's `login --browser` waits on a local port to hear that it is done.
    let callback: String = query
        .get("callback")
        .filter(|p| p.parse::<u16>().is_ok())
        .cloned()
        .unwrap_or_default();
    let cookies = state.cookies();
    if cookies::get(&headers, cookies.session_name()).is_none() {
        let back = if callback.is_empty() {
            format!("/device?code={code}")
        } else {
            format!("/device?code={code}&callback={callback}")
        };
        let to = format!(
            "/api/v1/auth/login?return_to={}",
            k8shell_common::http::form_encode(&back)
        );
        return Redirect::to(&to).into_response();
    }
    let page = DEVICE_PAGE
        .replace("{{code}}", &code)
        .replace("{{callback}}", &callback);
    let mut response = Html(page).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"),
    );
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

const DEVICE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>k8shell: confirm a device</title>
<meta name="viewport" content="width=device-width">
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
code{font-size:1.5rem}button{font-size:1rem;margin-right:1rem}</style></head>
<body><h1>Confirm a device login</h1>
<p>A device asks to sign in as you with the code <code id="code">{{code}}</code>.
Confirm only if it is the code your device shows.</p>
<p><button id="yes">Confirm</button><button id="no">Refuse</button></p>
<p id="result" role="status"></p>
<script>
const callback = '{{callback}}';
const csrf = (document.cookie.split('; ').find(c => c.includes('k8shell-csrf=')) || '').split('=')[1] || '';
async function answer(approve) {
  const r = await fetch('/api/v1/auth/device/approve', {method: 'POST',
    headers: {'content-type': 'application/json', 'x-csrf-token': csrf},
    body: JSON.stringify({user_code: document.getElementById('code').textContent, approve})});
  const body = await r.json();
  document.getElementById('result').textContent = r.ok
    ? (approve ? 'Confirmed: ' + body.client_name + ' is signed in. You can close this page.' : 'Refused.')
    : body.detail;
  if (r.ok && approve && callback) location.href = 'http://127.0.0.1:' + callback + '/';
}
document.getElementById('yes').onclick = () => answer(true);
document.getElementById('no').onclick = () => answer(false);
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(local_path(Some("/device?code=AB")), "/device?code=AB");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(
            local_path(Some(&k8shell_common::http::form_decode(
                "%2F%09%2Fevil.example"
            ))),
            "/"
        );
        assert_eq!(local_path(Some("/a\nb")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn form_encoding_round_trips() {
        let path = "/device?code=AB-CD&x=a b";
        assert_eq!(
            k8shell_common::http::form_decode(&k8shell_common::http::form_encode(path)),
            path
        );
    }
}
