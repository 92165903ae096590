//! The gRPC service `k8shell.identity.v1.Identity`: a thin adapter from messages to [`Store`],
//! [`KeyRing`] and token rules.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8shell_common::jwt::SessionClaims;
use k8shell_proto::identity::v1 as pb;
use k8shell_proto::identity::v1::identity_server::Identity;
use k8shell_proto::types::v1::{Id, timestamp};
use ring::rand::SecureRandom as _;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::device::{self, DeviceError, DeviceState};
use crate::oidc::{LoginError, Oidc};
use crate::signing::KeyRing;
use crate::sshkey::SshPublicKey;
use crate::store::{Store, StoreError, StoredKey, StoredToken, User, UserRef, UserState};

/// Prefix of personal API tokens, so that secret scanners and people recognise them.
pub const TOKEN_PREFIX: &str = "k8s_";
/// Characters of a token kept for display.
const SHOWN_PREFIX_LEN: usize = 12;

/// Token lifetimes, the issuer name and device-login settings.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub issuer: String,
    pub session_token_max_ttl: Duration,
    pub access_token_max_ttl: Duration,
    pub api_token_max_ttl: Duration,
    pub device_verification_uri: String,
    pub device_login_lifetime: Duration,
    pub device_poll_interval: Duration,
}

/// The service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    pub(crate) store: Store,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) rules: TokenRules,
    pub(crate) oidc: Option<Arc<Oidc>>,
}

impl From<DeviceError> for Status {
    fn from(error: DeviceError) -> Self {
        match error {
            DeviceError::UnknownCode(_) => Status::not_found(error.to_string()),
            DeviceError::Random => Status::internal(error.to_string()),
            DeviceError::SlowDown(_) => Status::resource_exhausted(error.to_string()),
            DeviceError::Suspended => Status::permission_denied(error.to_string()),
            DeviceError::Store(e) => e.into(),
        }
    }
}

impl IdentityService {
    /// An access token for the REST API and console.
    fn issue_access(&self, user: &User, ttl: Duration) -> Result<pb::IssuedToken, Status> {
        must_be_active(user)?;
        let now = k8shell_common::clock::now();
        let expires_at = now + ttl;
        let claims = k8shell_common::jwt::AccessClaims {
            iss: self.rules.issuer.clone(),
            sub: user.username.clone(),
            aud: k8shell_common::jwt::API_AUDIENCE.to_owned(),
            uid: user.id,
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            jti: k8shell_common::ids::new_id(),
        };
        self.sign(&claims, expires_at)
    }

    /// Signs `claims` with the active key.
    fn sign(
        &self,
        claims: &impl serde::Serialize,
        expires_at: OffsetDateTime,
    ) -> Result<pb::IssuedToken, Status> {
        let signer = self
            .keys
            .active()
            .ok_or_else(|| Status::unavailable("no signing key"))?;
        let token = signer
            .sign(claims)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(pb::IssuedToken {
            token,
            expires_at: Some(timestamp(expires_at)),
        })
    }
}

/// Tokens are issued to active users only.
fn must_be_active(user: &User) -> Result<(), Status> {
    if user.state == UserState::Active {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "user {} is suspended",
            user.username
        )))
    }
}

impl From<LoginError> for Status {
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::NotConfigured => Status::failed_precondition(error.to_string()),
            LoginError::Provider(_) => Status::unavailable(error.to_string()),
            LoginError::UnknownState | LoginError::Token(_) => {
                tracing::info!(%error, "login refused");
                Status::unauthenticated(error.to_string())
            }
            LoginError::NotOnboarded(_) | LoginError::Suspended => {
                Status::permission_denied(error.to_string())
            }
            LoginError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NoSuchUser | StoreError::NoSuchKey(_) | StoreError::NoSuchToken => {
                Status::not_found(error.to_string())
            }
            StoreError::InvalidUsername(_) => Status::invalid_argument(error.to_string()),
            StoreError::UsernameTaken(_) | StoreError::KeyTaken(_) | StoreError::AlreadyLinked => {
                Status::already_exists(error.to_string())
            }
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                Status::unavailable("the identity database is unavailable")
            }
        }
    }
}

fn user_message(user: User) -> pb::User {
    pb::User {
        id: Some(Id::from(user.id)),
        username: user.username,
        display_name: user.display_name,
        email: user.email,
        groups: user.groups,
        state: match user.state {
            UserState::Active => pb::UserState::Active,
            UserState::Suspended => pb::UserState::Suspended,
        } as i32,
        created_at: Some(timestamp(user.created_at)),
        last_login_at: user.last_login_at.map(timestamp),
    }
}

fn key_message(key: StoredKey) -> pb::PublicKey {
    pb::PublicKey {
        openssh: key.key.to_openssh(),
        fingerprint: key.fingerprint,
        key_type: key.key.key_type,
        comment: key.key.comment,
        added_at: Some(timestamp(key.added_at)),
        last_used_at: key.last_used_at.map(timestamp),
    }
}

fn token_message(token: StoredToken) -> pb::ApiToken {
    pb::ApiToken {
        id: Some(Id::from(token.id)),
        name: token.name,
        prefix: token.prefix,
        created_at: Some(timestamp(token.created_at)),
        expires_at: Some(timestamp(token.expires_at)),
        revoked_at: token.revoked_at.map(timestamp),
    }
}

fn user_ref(selector: Option<pb::UserSelector>) -> Result<UserRef, Status> {
    match selector.and_then(|s| s.user) {
        Some(pb::user_selector::User::Id(id)) => Uuid::try_from(&id)
            .map(UserRef::Id)
            .map_err(|e| Status::invalid_argument(e.to_string())),
        Some(pb::user_selector::User::Username(name)) => Ok(UserRef::Name(name)),
        None => Err(Status::invalid_argument("name the user by id or username")),
    }
}

fn required_id(id: Option<Id>, what: &str) -> Result<Uuid, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument(format!("{what} is required")))?;
    Uuid::try_from(&id).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

fn hash_secret(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// A new API token secret: the prefix and 256 random bits.
fn new_secret() -> Result<String, Status> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Status::internal("no randomness available"))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

fn bounded_ttl(requested: u64, max: Duration, what: &str) -> Result<Duration, Status> {
    let ttl = if requested == 0 {
        max
    } else {
        Duration::from_secs(requested)
    };
    if ttl > max {
        return Err(Status::invalid_argument(format!(
            "{what} lifetime {}s is longer than the allowed {}s",
            ttl.as_secs(),
            max.as_secs()
        )));
    }
    Ok(ttl)
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn verify_public_key(
        &self,
        request: Request<pb::VerifyPublicKeyRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let request = request.into_inner();
        let key = SshPublicKey::parse(&request.public_key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self
            .store
            .user_by_key(&request.username, &key.fingerprint())
            .await?
        {
            Some(user) => Ok(Response::new(user_message(user))),
            // One answer for unknown user, unknown key and suspended user.
            None => Err(Status::not_found("no such user and key")),
        }
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user = self
            .store
            .user(&user_ref(request.into_inner().user)?)
            .await?;
        Ok(Response::new(user_message(user)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let page = request.into_inner().page.unwrap_or_default();
        let limit = if page.limit == 0 {
            100
        } else {
            page.limit.min(1000)
        };
        let mut users = self
            .store
            .list_users(&page.cursor, i64::from(limit) + 1)
            .await?;
        let next_cursor = if users.len() > limit as usize {
            users.truncate(limit as usize);
            users.last().map(|u| u.username.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_message).collect(),
            page: Some(k8shell_proto::types::v1::PageInfo { next_cursor }),
        }))
    }

    async fn set_user_state(
        &self,
        request: Request<pb::SetUserStateRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let request = request.into_inner();
        let state = match pb::UserState::try_from(request.state) {
            Ok(pb::UserState::Active) => UserState::Active,
            Ok(pb::UserState::Suspended) => UserState::Suspended,
            _ => {
                return Err(Status::invalid_argument(
                    "state must be ACTIVE or SUSPENDED",
                ));
            }
        };
        let user = self
            .store
            .set_state(&user_ref(request.user)?, state)
            .await?;
        tracing::info!(user = %user.username, ?state, "user state changed");
        Ok(Response::new(user_message(user)))
    }

    async fn add_key(
        &self,
        request: Request<pb::AddKeyRequest>,
    ) -> Result<Response<pb::PublicKey>, Status> {
        let request = request.into_inner();
        let key = SshPublicKey::parse(&request.public_key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stored = self.store.add_key(&user_ref(request.user)?, &key).await?;
        Ok(Response::new(key_message(stored)))
    }

    async fn remove_key(
        &self,
        request: Request<pb::RemoveKeyRequest>,
    ) -> Result<Response<pb::RemoveKeyResponse>, Status> {
        let request = request.into_inner();
        self.store
            .remove_key(&user_ref(request.user)?, &request.fingerprint)
            .await?;
        Ok(Response::new(pb::RemoveKeyResponse {}))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let keys = self
            .store
            .keys(&user_ref(request.into_inner().user)?)
            .await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.into_iter().map(key_message).collect(),
        }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let request = request.into_inner();
        if request.name.trim().is_empty() {
            return Err(Status::invalid_argument(
                "give the token a name, to recognise it later",
            ));
        }
        let ttl = bounded_ttl(request.ttl_seconds, self.rules.api_token_max_ttl, "token")?;
        let secret = new_secret()?;
        let prefix: String = secret.chars().take(SHOWN_PREFIX_LEN).collect();
        let expires_at = k8shell_common::clock::now() + ttl;
        let token = self
            .store
            .create_token(
                &user_ref(request.user)?,
                request.name.trim(),
                &prefix,
                &hash_secret(&secret),
                expires_at,
            )
            .await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_message(token)),
            secret,
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let request = request.into_inner();
        let id = required_id(request.token_id, "token_id")?;
        let token = self
            .store
            .revoke_token(&user_ref(request.user)?, id)
            .await?;
        Ok(Response::new(token_message(token)))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let tokens = self
            .store
            .tokens(&user_ref(request.into_inner().user)?)
            .await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(token_message).collect(),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let request = request.into_inner();
        // Keys are checked before the account exists, so that a bad key makes nothing.
        let keys = request
            .public_keys
            .iter()
            .map(|line| {
                SshPublicKey::parse(line)
                    .map_err(|e| Status::invalid_argument(format!("public key {line:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let user = self
            .store
            .create_user_with_keys(
                &request.username,
                &request.display_name,
                &request.email,
                &request.groups,
                &keys,
            )
            .await?;
        tracing::info!(user = %user.username, groups = ?user.groups, keys = keys.len(), "user created");
        Ok(Response::new(user_message(user)))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let secret = request.into_inner().secret;
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(Status::unauthenticated("not a k8shell API token"));
        }
        match self.store.user_by_token_hash(&hash_secret(&secret)).await? {
            Some(user) => Ok(Response::new(user_message(user))),
            None => Err(Status::unauthenticated(
                "token unknown, revoked or expired, or its user is suspended",
            )),
        }
    }

    async fn issue_session_token(
        &self,
        request: Request<pb::IssueSessionTokenRequest>,
    ) -> Result<Response<pb::IssuedToken>, Status> {
        let request = request.into_inner();
        let workspace = required_id(request.workspace_id, "workspace_id")?;
        let session = required_id(request.session_id, "session_id")?;
        let ttl = bounded_ttl(
            request.ttl_seconds,
            self.rules.session_token_max_ttl,
            "session token",
        )?;
        let user = self.store.user(&user_ref(request.user)?).await?;
        must_be_active(&user)?;
        let now = k8shell_common::clock::now();
        let expires_at = now + ttl;
        let claims = SessionClaims {
            iss: self.rules.issuer.clone(),
            sub: user.username,
            aud: "k8shelld".to_owned(),
            ws: workspace,
            sid: session,
            iat: now.unix_timestamp(),
            nbf: Some(now.unix_timestamp()),
            exp: expires_at.unix_timestamp(),
            jti: Some(k8shell_common::ids::new_id()),
        };
        Ok(Response::new(self.sign(&claims, expires_at)?))
    }

    async fn begin_login(
        &self,
        _request: Request<pb::BeginLoginRequest>,
    ) -> Result<Response<pb::BeginLoginResponse>, Status> {
        let oidc = self.oidc.as_ref().ok_or(LoginError::NotConfigured)?;
        let (authorization_url, state) = oidc.begin(&self.store).await?;
        Ok(Response::new(pb::BeginLoginResponse {
            authorization_url,
            state,
        }))
    }

    async fn complete_login(
        &self,
        request: Request<pb::CompleteLoginRequest>,
    ) -> Result<Response<pb::CompleteLoginResponse>, Status> {
        let request = request.into_inner();
        let oidc = self.oidc.as_ref().ok_or(LoginError::NotConfigured)?;
        let logged_in = oidc
            .complete(&self.store, &request.state, &request.code)
            .await?;
        Ok(Response::new(pb::CompleteLoginResponse {
            user: Some(user_message(logged_in.user)),
            created: logged_in.created,
        }))
    }

    async fn begin_device_login(
        &self,
        request: Request<pb::BeginDeviceLoginRequest>,
    ) -> Result<Response<pb::BeginDeviceLoginResponse>, Status> {
        let client_name = request.into_inner().client_name;
        let client_name = if client_name.trim().is_empty() {
            "a device".to_owned()
        } else {
            client_name.trim().chars().take(100).collect()
        };
        let login =
            device::begin(&self.store, &client_name, self.rules.device_login_lifetime).await?;
        let uri = self.rules.device_verification_uri.clone();
        Ok(Response::new(pb::BeginDeviceLoginResponse {
            verification_uri_complete: format!("{uri}?code={}", login.user_code),
            verification_uri: uri,
            device_code: login.device_code,
            user_code: login.user_code,
            expires_in_seconds: self.rules.device_login_lifetime.as_secs(),
            interval_seconds: self.rules.device_poll_interval.as_secs(),
        }))
    }

    async fn approve_device_login(
        &self,
        request: Request<pb::ApproveDeviceLoginRequest>,
    ) -> Result<Response<pb::ApproveDeviceLoginResponse>, Status> {
        let request = request.into_inner();
        let client_name = device::approve(
            &self.store,
            &request.user_code,
            &user_ref(request.user)?,
            request.approve,
        )
        .await?;
        Ok(Response::new(pb::ApproveDeviceLoginResponse {
            client_name,
        }))
    }

    async fn poll_device_login(
        &self,
        request: Request<pb::PollDeviceLoginRequest>,
    ) -> Result<Response<pb::PollDeviceLoginResponse>, Status> {
        let state = device::poll(
            &self.store,
            &request.into_inner().device_code,
            self.rules.device_poll_interval,
        )
        .await?;
        let (state, user, access_token) = match state {
            DeviceState::Pending => (pb::DeviceLoginState::Pending, None, None),
            DeviceState::Denied => (pb::DeviceLoginState::Denied, None, None),
            DeviceState::Expired => (pb::DeviceLoginState::Expired, None, None),
            DeviceState::Approved(user) => {
                let token = self.issue_access(&user, self.rules.access_token_max_ttl)?;
                (
                    pb::DeviceLoginState::Approved,
                    Some(user_message(user)),
                    Some(token),
                )
            }
        };
        Ok(Response::new(pb::PollDeviceLoginResponse {
            state: state as i32,
            user,
            access_token,
        }))
    }

    async fn issue_access_token(
        &self,
        request: Request<pb::IssueAccessTokenRequest>,
    ) -> Result<Response<pb::IssuedToken>, Status> {
        let request = request.into_inner();
        let ttl = bounded_ttl(
            request.ttl_seconds,
            self.rules.access_token_max_ttl,
            "access token",
        )?;
        let user = self.store.user(&user_ref(request.user)?).await?;
        Ok(Response::new(self.issue_access(&user, ttl)?))
    }

    async fn refresh_access_token(
        &self,
        request: Request<pb::RefreshAccessTokenRequest>,
    ) -> Result<Response<pb::IssuedToken>, Status> {
        let verifier = k8shell_common::jwt::JwtVerifier::from_jwks(&self.keys.jwks())
            .map_err(|e| Status::internal(e.to_string()))?;
        let now = k8shell_common::clock::now().unix_timestamp();
        let claims = verifier
            .verify_access(&request.into_inner().token, now)
            .map_err(|e| Status::unauthenticated(format!("cannot refresh: {e}")))?;
        if claims.iss != self.rules.issuer {
            return Err(Status::unauthenticated("cannot refresh: another issuer"));
        }
        // The user's current state decides, not the one when the token was issued.
        let user = self.store.user(&UserRef::Id(claims.uid)).await?;
        let ttl = Duration::from_secs(u64::try_from(claims.exp - claims.iat).unwrap_or(0))
            .min(self.rules.access_token_max_ttl);
        Ok(Response::new(self.issue_access(&user, ttl)?))
    }
}
