//! identity's configuration (`K8SHELL_IDENTITY__*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8shell_common::db::DatabaseConfig;
pub use k8shell_common::grpc::GrpcConfig;
use k8shell_common::telemetry::TelemetryConfig;
use serde::Deserialize;

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Postgres (schema `identity`).
    pub database: DatabaseConfig,
    /// The gRPC listener (mTLS).
    pub grpc: GrpcConfig,
    /// The HTTP listener for `/.well-known/jwks.json`, `/healthz` and `/metrics`.
    pub http: HttpConfig,
    /// `iss` of every JWT, e.g. `https://k8shell.example.com`.
    pub issuer: String,
    /// Signing keys.
    pub signing: SigningConfig,
    /// Longest lifetime of a k8shelld session token.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_token_max_ttl: Duration,
    /// Longest lifetime of an access token for the REST API and console.
    #[serde(default = "default_access_ttl", with = "humantime_serde")]
    pub access_token_max_ttl: Duration,
    /// The console page where users confirm device logins (default: `<issuer>/device`).
    #[serde(default)]
    pub device_verification_uri: Option<String>,
    /// How long a device login may wait for the user.
    #[serde(default = "default_device_lifetime", with = "humantime_serde")]
    pub device_login_lifetime: Duration,
    /// How often a device may poll.
    #[serde(default = "default_device_interval", with = "humantime_serde")]
    pub device_poll_interval: Duration,
    /// Longest lifetime of a personal API token.
    #[serde(default = "default_api_token_ttl", with = "humantime_serde")]
    pub api_token_max_ttl: Duration,
    /// authz (`https://authz:7002`): when set, its `onboarding` decision admits first-time users
    /// instead of the allow-lists in `oidc`. identity's own certificate is presented.
    #[serde(default)]
    pub authz_uri: Option<String>,
    /// Login through the organisation's OpenID provider.
    #[serde(default)]
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// A first administrator, so that a fresh installation can be entered.
    #[serde(default)]
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Logging.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// e.g. `0.0.0.0:7011`.
    pub listen: SocketAddr,
}

/// Signing keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Directory of the Ed25519 keys (one `<kid>.key` file each, mode 0600).
    pub key_dir: PathBuf,
    /// A new key signs after this long; the old one stays published while tokens need it.
    #[serde(default = "default_rotate_after", with = "humantime_serde")]
    pub rotate_after: Duration,
    /// A new key is published this long before it signs (longer than verifiers' JWKS refresh).
    #[serde(default = "default_publish_ahead", with = "humantime_serde")]
    pub publish_ahead: Duration,
}

/// The first administrator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAdmin {
    pub username: String,
    /// authorized_keys lines.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default = "default_admin_groups")]
    pub groups: Vec<String>,
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_access_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}

fn default_device_lifetime() -> Duration {
    Duration::from_secs(600)
}

fn default_device_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_api_token_ttl() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}

fn default_rotate_after() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_publish_ahead() -> Duration {
    Duration::from_secs(600)
}

fn default_admin_groups() -> Vec<String> {
    vec!["admins".to_owned()]
}
