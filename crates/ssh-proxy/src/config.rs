//! The ssh-proxy's configuration (`K8SHELL_SSH_PROXY__*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::telemetry::TelemetryConfig;
use k8shell_common::tls::TlsFiles;
use serde::Deserialize;

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where SSH clients connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The host keys (`ssh_host_ed25519_key`, `ssh_host_ecdsa_key`), made on first start.
    pub host_key_dir: PathBuf,
    /// The proxy's certificate (service name `ssh-proxy`), presented to identity, authz,
    /// session, provisioner and to k8shelld over TCP.
    pub tls: TlsFiles,
    /// e.g. `https://identity:7001`.
    pub identity_uri: String,
    /// e.g. `https://authz:7002`.
    pub authz_uri: String,
    /// e.g. `https://session:7003`.
    pub session_uri: String,
    /// e.g. `https://provisioner:7004`.
    pub provisioner_uri: String,
    /// Where authentication failures are published (`k8shell.auth.failure`) and termination
    /// requests come from.
    pub nats: NatsConfig,
    /// Events wait here while NATS is away.
    pub outbox: OutboxConfig,
    /// Recordings and timelines wait here until the session service has them (private to this
    /// proxy).
    pub spool_dir: PathBuf,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub channels: ChannelsConfig,
    /// How long a workspace may take to start before the user is told it did not.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// On shutdown: how long running sessions may go on before they are ended.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain: Duration,
    /// Record what users type in terminals (`i` events). Off by default: it catches passwords
    /// typed with echo off.
    #[serde(default)]
    pub record_input: bool,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Logins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Refused attempts (keys and logins) before the connection is dropped, like sshd's
    /// MaxAuthTries.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
    /// Time from connecting to being logged in, like sshd's LoginGraceTime.
    #[serde(default = "default_login_grace", with = "humantime_serde")]
    pub login_grace: Duration,
    /// Every refusal takes this long, whatever was refused, so that timing reveals nothing.
    #[serde(default = "default_rejection_delay", with = "humantime_serde")]
    pub rejection_delay: Duration,
    /// `keyboard-interactive`: print identity's device-login URL and code and wait for the
    /// browser login.
    #[serde(default = "default_true")]
    pub device_login: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            login_grace: default_login_grace(),
            rejection_delay: default_rejection_delay(),
            device_login: true,
        }
    }
}

/// Channels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Environment variables clients may set besides LANG, LC_*, TERM and COLORTERM.
    #[serde(default)]
    pub env_allow: Vec<String>,
    /// Channels open at once on one connection.
    #[serde(default = "default_max_channels")]
    pub max_per_connection: usize,
    /// How long a port forward may take to connect inside the workspace.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub forward_connect_timeout: Duration,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            env_allow: Vec::new(),
            max_per_connection: default_max_channels(),
            forward_connect_timeout: default_connect_timeout(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2222))
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(180)
}

fn default_drain() -> Duration {
    Duration::from_secs(30)
}

fn default_max_attempts() -> usize {
    6
}

fn default_login_grace() -> Duration {
    Duration::from_secs(120)
}

fn default_rejection_delay() -> Duration {
    Duration::from_millis(300)
}

fn default_true() -> bool {
    true
}

fn default_max_channels() -> usize {
    64
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
