//! authz's configuration (`K8SHELL_AUTHZ__*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8shell_common::db::DatabaseConfig;
use k8shell_common::events::{NatsConfig, OutboxConfig};
pub use k8shell_common::grpc::GrpcConfig;
use k8shell_common::telemetry::TelemetryConfig;
use serde::Deserialize;

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Postgres (schema `authz`, the decision log).
    pub database: DatabaseConfig,
    /// gRPC listener (mTLS).
    pub grpc: GrpcConfig,
    /// The policy bundle directory (`.rego` files and `data.json`).
    pub bundle_dir: PathBuf,
    /// How often the bundle directory is checked for changes.
    #[serde(default = "default_reload_every", with = "humantime_serde")]
    pub reload_every: Duration,
    /// NATS for `k8shell.audit.decision` events (optional).
    #[serde(default)]
    pub nats: Option<NatsConfig>,
    /// Where events wait while NATS is away (required with `nats`).
    #[serde(default)]
    pub outbox: Option<OutboxConfig>,
    /// Where `/metrics` is served (Prometheus), if anywhere.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

fn default_reload_every() -> Duration {
    Duration::from_secs(5)
}
