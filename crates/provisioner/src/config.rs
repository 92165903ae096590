//! The provisioner's configuration (`K8SHELL_PROVISIONER__*`).

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
    /// Postgres (schema `provisioner`).
    pub database: DatabaseConfig,
    /// gRPC listener (mTLS; api and ssh-proxy call it). Its certificate is also the
    /// provisioner's client identity towards authz and k8shelld.
    pub grpc: GrpcConfig,
    /// authz (`https://authz:7002`): the `provision` decision before every create and start.
    pub authz_uri: String,
    /// NATS: `k8shell.workspace.<state>` events out, session activity in.
    pub nats: NatsConfig,
    /// Where events wait while NATS is away.
    pub outbox: OutboxConfig,
    /// Where workspace images are built to and pulled from.
    pub images: ImagesConfig,
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Workspace images: `<repository>/<blueprint name>:bp-<hash>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// `registry/path`, e.g. `harbor.example.com/workspaces`.
    pub repository: String,
    /// Verify the registry's TLS (off only for a plain-HTTP local registry).
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// A docker-style `config.json` with the registry's credentials.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// buildah's storage for images built from blueprints that are not in the registry yet.
    pub build_dir: PathBuf,
}

/// Where workspaces run.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RuntimeConfig {
    /// runc on this host (the embedded default).
    Local(LocalRuntimeConfig),
    /// A Kubernetes cluster.
    Kubernetes(crate::kubernetes::KubernetesConfig),
}

/// The local runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRuntimeConfig {
    pub state_dir: PathBuf,
    /// The static k8shelld binary.
    pub k8shelld: PathBuf,
    /// identity's JWKS (session tokens), as a file.
    pub jwks_file: PathBuf,
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// The workspace bridge; unset: loopback only for every workspace.
    #[serde(default)]
    pub network: Option<LocalNetworkConfig>,
}

/// The local runtime's bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalNetworkConfig {
    /// Bridge name (at most 15 bytes).
    pub bridge: String,
    /// The bridge's address: the workspaces' gateway; they are numbered after it in its /16.
    pub gateway: std::net::Ipv4Addr,
}

/// The reconciler's pace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// A full pass (changes also wake it at once): running workspaces re-checked, idle ones
    /// stopped.
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: Duration,
    /// How long k8shelld may take to answer after its container started.
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// `EnsureRunning` without a deadline waits this long.
    #[serde(default = "default_ensure_timeout", with = "humantime_serde")]
    pub ensure_timeout: Duration,
    /// Workspaces started at the same time, at most.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            every: default_every(),
            ready_timeout: default_ready_timeout(),
            ensure_timeout: default_ensure_timeout(),
            parallel: default_parallel(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_stop_grace() -> Duration {
    Duration::from_secs(10)
}

fn default_every() -> Duration {
    Duration::from_secs(10)
}

fn default_ready_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_ensure_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_parallel() -> usize {
    8
}
