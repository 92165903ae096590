//! The api-server's configuration (`K8SHELL_API__*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::jwks::JwksConfig;
use k8shell_common::telemetry::TelemetryConfig;
use k8shell_common::tls::TlsFiles;
use serde::Deserialize;

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where browsers, the CLI and automation connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The address users reach the API at (`https://k8shell.example.com`): the origin state
    /// changes and terminals must come from, and where logins come back to.
    pub public_url: String,
    /// The api-server's certificate (service name `api`), presented to the services.
    pub tls: TlsFiles,
    /// e.g. `https://identity:7001`.
    pub identity_uri: String,
    /// e.g. `https://authz:7002`.
    pub authz_uri: String,
    /// e.g. `https://session:7003`.
    pub session_uri: String,
    /// e.g. `https://provisioner:7004`.
    pub provisioner_uri: String,
    /// identity's signing keys, to verify access tokens locally.
    pub jwks: JwksConfig,
    /// Termination requests for browser terminals come from here.
    pub nats: NatsConfig,
    /// Events wait here while NATS is away.
    pub outbox: OutboxConfig,
    /// Recordings and timelines of browser terminals wait here until the session service has
    /// them (private to this server).
    pub spool_dir: PathBuf,
    /// Where users reach the ssh-proxy (`host:port`), for the SSH commands the API shows;
    /// default: the public URL's host, port 2222.
    #[serde(default)]
    pub ssh_address: Option<String>,
    /// The program that evaluates posted blueprints in a child process with limits (default:
    /// this `k8shell-api`); without one they are evaluated in-process, without limits.
    #[serde(default = "crate::evaluate::default_evaluator")]
    pub evaluator: Option<PathBuf>,
    /// Example blueprints offered to `POST /workspaces` by name (`*.ncl`); none when unset.
    #[serde(default)]
    pub blueprint_dir: Option<PathBuf>,
    #[serde(default)]
    pub cookies: CookieConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// How long a browser login lasts (the access token in the session cookie).
    #[serde(default = "default_login_ttl", with = "humantime_serde")]
    pub login_ttl: Duration,
    /// How long a workspace may take to start before the terminal says it did not.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// On shutdown: how long open terminals and event streams may go on.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain: Duration,
    /// How long k8shelld keeps a browser terminal's shell when the browser goes away, so that
    /// a reconnect (`?resume=`) finds it running ("0s": never).
    #[serde(default = "default_terminal_keep", with = "humantime_serde")]
    pub terminal_keep: Duration,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// A single-use browser sign-in (`/login/once?code=…`) handed over by whoever starts this
    /// server in-process (the all-in-one); never read from files or the environment.
    #[serde(skip)]
    pub one_time_login: Option<crate::one_time_login::OneTimeLogin>,
}

/// The browser session cookie.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// Mark cookies `Secure` (sent over HTTPS only; browsers also accept them on
    /// `http://localhost`). Turn off only for a plain-HTTP deployment on a trusted network.
    #[serde(default = "default_true")]
    pub secure: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self { secure: true }
    }
}

/// Requests per client address to the login endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed at once.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Requests allowed per minute after the burst.
    #[serde(default = "default_per_minute")]
    pub per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            burst: default_burst(),
            per_minute: default_per_minute(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_login_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_terminal_keep() -> Duration {
    Duration::from_secs(120)
}

fn default_drain() -> Duration {
    Duration::from_secs(30)
}

fn default_true() -> bool {
    true
}

fn default_burst() -> u32 {
    20
}

fn default_per_minute() -> u32 {
    30
}
