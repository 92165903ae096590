//! k8shelld's configuration (`/etc/k8shell/k8shelld.toml`, `K8SHELL_K8SHELLD__*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8shell_common::jwks::JwksConfig;
use k8shell_common::telemetry::TelemetryConfig;
use k8shell_common::tls::TlsFiles;
use serde::Deserialize;
use uuid::Uuid;

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This workspace's id: session tokens must name it in their `ws` claim.
    pub workspace_id: Uuid,
    /// The workspace user every command runs as (a name in `passwd_file`).
    pub user: String,
    /// Unix socket to listen on (local runtime). Exactly one of `unix_socket` and `tcp`.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// TCP with mTLS (Kubernetes). Exactly one of `unix_socket` and `tcp`.
    #[serde(default)]
    pub tcp: Option<TcpConfig>,
    /// The keys that sign session tokens: identity's JWKS, as a file or a URL.
    pub jwks: JwksConfig,
    /// The `aud` claim session tokens must carry.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Where accounts are read (never through NSS: the binary is static).
    #[serde(default = "default_passwd")]
    pub passwd_file: PathBuf,
    #[serde(default = "default_group")]
    pub group_file: PathBuf,
    /// How long a forward may take to connect before it fails.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Between SIGHUP/SIGTERM and SIGKILL when a session ends or k8shelld stops.
    #[serde(default = "default_kill_grace", with = "humantime_serde")]
    pub kill_grace: Duration,
    /// The k8shelld binary started (as the user) for each SFTP stream; default: this binary.
    /// The workspace user must be able to execute it.
    #[serde(default)]
    pub sftp_server: Option<PathBuf>,
    /// Logging.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// TCP listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Address to listen on, e.g. `0.0.0.0:7000`.
    pub listen: SocketAddr,
    /// This daemon's certificate, key and the CA of its callers.
    pub tls: TlsFiles,
}

fn default_audience() -> String {
    "k8shelld".to_owned()
}

fn default_passwd() -> PathBuf {
    PathBuf::from("/etc/passwd")
}

fn default_group() -> PathBuf {
    PathBuf::from("/etc/group")
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_kill_grace() -> Duration {
    Duration::from_secs(5)
}

impl Config {
    /// Checks what serde cannot: one listener, exactly.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.unix_socket, &self.tcp) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            (None, None) => {
                Err("set `unix_socket` (local runtime) or `tcp` (Kubernetes)".to_owned())
            }
            (Some(_), Some(_)) => Err("set only one of `unix_socket` and `tcp`".to_owned()),
        }
    }
}
