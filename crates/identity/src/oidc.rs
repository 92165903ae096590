//! Login through the organisation's OpenID provider: authorization code + PKCE (S256), discovery,
//! ID-token validation (signature, issuer, audience, nonce, lifetime), groups from a claim, and
//! onboarding of first-time users (authz's `onboarding` decision, or the allow-lists of the
//! config where no authz is configured).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8shell_common::config::{Secret, SecretFile};
use k8shell_common::oidc_token::{IdTokenClaims, ProviderKeys};
use ring::rand::SecureRandom as _;
use serde::Deserialize;
use sqlx::Row as _;
use tokio::sync::OnceCell;

use crate::store::{Store, StoreError, User, valid_username};

/// How long a begun login may take.
const LOGIN_WINDOW: Duration = Duration::from_secs(600);

/// The provider and the rules for who may come in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// File holding the client secret.
    #[serde(default)]
    pub client_secret_file: Option<SecretFile>,
    /// The client secret, from `K8SHELL_IDENTITY__OIDC__CLIENT_SECRET` only.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Where the provider sends the browser back (the console's callback).
    pub redirect_uri: String,
    /// CA certificates of an https provider.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// First logins are allowed for these email domains…
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// …or for members of these provider groups. Both empty: nobody new gets in.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile", "groups"]
        .map(str::to_owned)
        .to_vec()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

/// What the provider's discovery document says.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// Why a login failed; texts are safe to show the user.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("logins through an OpenID provider are not configured")]
    NotConfigured,
    #[error("the OpenID provider cannot be reached: {0}")]
    Provider(String),
    #[error("unknown or expired login; start again")]
    UnknownState,
    #[error("the provider's answer was refused: {0}")]
    Token(String),
    #[error("{0} may not sign up here; ask an administrator")]
    NotOnboarded(String),
    #[error("this account is suspended")]
    Suspended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The login flow.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    secret: Secret,
    discovery: OnceCell<Discovery>,
    /// Decides onboarding when set; else the allow-lists of the config do.
    authz: Option<std::sync::Arc<k8shell_authz::client::AuthzClient>>,
}

/// The outcome of a completed login.
#[derive(Debug)]
pub struct LoggedIn {
    pub user: User,
    pub created: bool,
}

fn random_token(bytes: usize) -> Result<String, LoginError> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| LoginError::Provider("no randomness".to_owned()))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

impl Oidc {
    /// The flow for `config`; the provider is contacted at the first login. With `authz`,
    /// first-time users are admitted by its `onboarding` decision.
    pub fn new(
        config: OidcConfig,
        authz: Option<std::sync::Arc<k8shell_authz::client::AuthzClient>>,
    ) -> Result<Self, String> {
        let secret = k8shell_common::config::resolve_secret(
            config.client_secret.as_ref(),
            config.client_secret_file.as_ref(),
            "oidc.client_secret",
        )
        .map_err(|e| e.to_string())?
        .ok_or("oidc: set `client_secret_file` (or K8SHELL_IDENTITY__OIDC__CLIENT_SECRET)")?;
        Ok(Self {
            config,
            secret,
            discovery: OnceCell::new(),
            authz,
        })
    }

    async fn discovery(&self) -> Result<&Discovery, LoginError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let text = k8shell_common::http::get(&url, self.config.ca_file.as_deref())
                    .await
                    .map_err(LoginError::Provider)?;
                let discovery: Discovery = serde_json::from_str(&text)
                    .map_err(|e| LoginError::Provider(format!("discovery document: {e}")))?;
                if discovery.issuer != self.config.issuer {
                    return Err(LoginError::Provider(format!(
                        "discovery names issuer {:?}, configured is {:?}",
                        discovery.issuer, self.config.issuer
                    )));
                }
                Ok(discovery)
            })
            .await
    }

    /// Records a new login attempt and returns the provider URL to send the browser to.
    pub async fn begin(&self, store: &Store) -> Result<(String, String), LoginError> {
        let discovery = self.discovery().await?;
        // Abandoned logins are removed as new ones begin: the table cannot grow without bound.
        sqlx::query("DELETE FROM login_attempts WHERE expires_at < now() - interval '1 hour'")
            .execute(store.pool())
            .await
            .map_err(StoreError::from)?;
        let state = random_token(24)?;
        let nonce = random_token(24)?;
        let verifier = random_token(32)?;
        let challenge = URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        sqlx::query(
            "INSERT INTO login_attempts (state, nonce, code_verifier, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&state)
        .bind(&nonce)
        .bind(&verifier)
        .bind(k8shell_common::clock::now() + LOGIN_WINDOW)
        .execute(store.pool())
        .await
        .map_err(StoreError::from)?;
        let encode = k8shell_common::http::form_encode;
        let url = format!(
            "{}?response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
            discovery.authorization_endpoint,
            encode(&self.config.client_id),
            encode(&self.config.redirect_uri),
            encode(&self.config.scopes.join(" ")),
            state,
            nonce,
            challenge
        );
        Ok((url, state))
    }

    /// Exchanges the code, validates the ID token, and finds, links or creates the user.
    pub async fn complete(
        &self,
        store: &Store,
        state: &str,
        code: &str,
    ) -> Result<LoggedIn, LoginError> {
        // Single use: the attempt is gone whether the rest succeeds or not.
        let attempt = sqlx::query(
            "DELETE FROM login_attempts WHERE state = $1 RETURNING nonce, code_verifier, expires_at > now() AS fresh",
        )
        .bind(state)
        .fetch_optional(store.pool())
        .await
        .map_err(StoreError::from)?
        .ok_or(LoginError::UnknownState)?;
        let fresh: bool = attempt.try_get("fresh").map_err(StoreError::from)?;
        if !fresh {
            return Err(LoginError::UnknownState);
        }
        let nonce: String = attempt.try_get("nonce").map_err(StoreError::from)?;
        let verifier: String = attempt.try_get("code_verifier").map_err(StoreError::from)?;
        let discovery = self.discovery().await?;
        let response = k8shell_common::http::post_form(
            &discovery.token_endpoint,
            self.config.ca_file.as_deref(),
            Some((&self.config.client_id, self.secret.expose())),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.config.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await
        .map_err(LoginError::Provider)?;
        if response.status != 200 {
            return Err(LoginError::Token(format!(
                "the token endpoint answered HTTP {}: {}",
                response.status,
                response.body.chars().take(200).collect::<String>()
            )));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: String,
        }
        let tokens: TokenResponse = serde_json::from_str(&response.body)
            .map_err(|e| LoginError::Token(format!("no ID token in the answer: {e}")))?;
        let keys_text =
            k8shell_common::http::get(&discovery.jwks_uri, self.config.ca_file.as_deref())
                .await
                .map_err(LoginError::Provider)?;
        let keys = ProviderKeys::from_jwks_json(&keys_text)
            .map_err(|e| LoginError::Token(e.to_string()))?;
        let now = k8shell_common::clock::now().unix_timestamp();
        let claims = keys
            .verify_id_token(
                &tokens.id_token,
                &discovery.issuer,
                &self.config.client_id,
                &nonce,
                now,
            )
            .map_err(|e| LoginError::Token(e.to_string()))?;
        self.sign_in(store, &claims).await
    }

    /// Finds the linked user or onboards a new one.
    async fn sign_in(&self, store: &Store, claims: &IdTokenClaims) -> Result<LoggedIn, LoginError> {
        let groups = claims.strings(&self.config.groups_claim);
        let email = claims.string("email").unwrap_or_default().to_owned();
        let name = claims.string("name").unwrap_or_default().to_owned();
        if let Some(user) = store.user_by_link(&claims.issuer, &claims.subject).await? {
            if user.state != crate::store::UserState::Active {
                return Err(LoginError::Suspended);
            }
            let user = store.record_login(user.id, &name, &email, &groups).await?;
            return Ok(LoggedIn {
                user,
                created: false,
            });
        }
        let verified = claims.claims.get("email_verified") == Some(&serde_json::Value::Bool(true));
        let who = if email.is_empty() {
            claims.subject.clone()
        } else {
            email.clone()
        };
        match &self.authz {
            Some(authz) => {
                let input = serde_json::json!({
                    "v": 1, "email": email, "email_verified": verified,
                    "groups": groups, "issuer": claims.issuer,
                });
                let verdict = authz.check("onboarding", &input).await;
                if !verdict.allow {
                    tracing::info!(%who, decision = %verdict.decision_id, "first login refused by policy");
                    return Err(LoginError::NotOnboarded(format!(
                        "{who} ({})",
                        verdict.reasons.join("; ")
                    )));
                }
            }
            None => {
                if !self.onboarding_allows(&email, verified, &groups) {
                    tracing::info!(%who, "first login refused by the onboarding rules");
                    return Err(LoginError::NotOnboarded(who));
                }
            }
        }
        let user = match self.create(store, claims, &name, &email, &groups).await {
            Ok(user) => user,
            // The same person's first login finished concurrently: use that account.
            Err(LoginError::Store(StoreError::AlreadyLinked)) => store
                .user_by_link(&claims.issuer, &claims.subject)
                .await?
                .ok_or(StoreError::NoSuchUser)?,
            Err(e) => return Err(e),
        };
        let user = store.record_login(user.id, &name, &email, &groups).await?;
        tracing::info!(user = %user.username, issuer = %claims.issuer, "new user from the OpenID provider");
        Ok(LoggedIn {
            user,
            created: true,
        })
    }

    /// An email domain counts only when the provider says the address is verified: anyone can
    /// type `x@corp.com` into a self-service sign-up.
    fn onboarding_allows(&self, email: &str, email_verified: bool, groups: &[String]) -> bool {
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        let by_domain = email_verified
            && domain.is_some_and(|d| {
                self.config
                    .allowed_email_domains
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(&d))
            });
        let by_group = groups
            .iter()
            .any(|g| self.config.allowed_groups.contains(g));
        by_domain || by_group
    }

    /// A new user named after `preferred_username`, else the email's local part, made unique.
    async fn create(
        &self,
        store: &Store,
        claims: &IdTokenClaims,
        name: &str,
        email: &str,
        groups: &[String],
    ) -> Result<User, LoginError> {
        let base = [
            claims.string("preferred_username").unwrap_or_default(),
            email.split('@').next().unwrap_or_default(),
            "user",
        ]
        .into_iter()
        .map(sanitize)
        .find(|candidate| valid_username(candidate))
        .unwrap_or_else(|| "user".to_owned());
        for n in 1..100 {
            let candidate = if n == 1 {
                base.clone()
            } else {
                let suffix = format!("-{n}");
                let keep = 32 - suffix.len();
                format!("{}{suffix}", &base[..base.len().min(keep)])
            };
            match store
                .create_linked_user(
                    &candidate,
                    name,
                    email,
                    groups,
                    &claims.issuer,
                    &claims.subject,
                )
                .await
            {
                Ok(user) => return Ok(user),
                Err(StoreError::UsernameTaken(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LoginError::Token("no free username".to_owned()))
    }
}

/// Lowercase, `[a-z0-9-]`, starting with a letter, at most 32 characters.
fn sanitize(raw: &str) -> String {
    let mut out: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while out.starts_with(|c: char| !c.is_ascii_lowercase()) && !out.is_empty() {
        out.remove(0);
    }
    out.truncate(32);
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_derived_safely() {
        assert_eq!(sanitize("Alice.Smith"), "alice-smith");
        assert_eq!(sanitize("42bob"), "bob");
        assert_eq!(sanitize("___"), "");
        assert!(valid_username(&sanitize(&"x".repeat(80))));
    }
}
