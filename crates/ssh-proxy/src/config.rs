//! The ssh-proxy's configuration (`K8SHELL_SSH_PROXY__*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use k8shell_common::telemetry::TelemetryConfig;
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
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 2222))
}
