//! The session service's configuration (`K8SHELL_SESSION__*`).

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
    /// Postgres (schema `session`).
    pub database: DatabaseConfig,
    /// gRPC listener (mTLS; ssh-proxy and api call it).
    pub grpc: GrpcConfig,
    /// NATS: terminate requests to the proxies, and the audit events.
    pub nats: NatsConfig,
    /// Where audit events wait while NATS is away.
    pub outbox: OutboxConfig,
    pub recordings: RecordingsConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// A live session whose holder sent no heartbeat for this long is closed as lost.
    #[serde(default = "default_lost_after", with = "humantime_serde")]
    pub lost_after: Duration,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Recording storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsConfig {
    /// Directory of the chunks (the embedded default's store).
    pub dir: PathBuf,
    /// Seconds of session time per chunk: the granularity of seeking.
    #[serde(default = "default_chunk_span", with = "humantime_serde")]
    pub chunk_span: Duration,
    /// Uncompressed bytes per chunk at most.
    #[serde(default = "default_chunk_max_bytes")]
    pub chunk_max_bytes: usize,
    /// Whole lines received but not yet in a chunk are stored after this long, so that a
    /// quiet session's recording is readable (and acknowledged) soon.
    #[serde(default = "default_flush_after", with = "humantime_serde")]
    pub flush_after: Duration,
    /// zstd level (1 fastest … 19 smallest).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
}

impl RecordingsConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            chunk_span: default_chunk_span(),
            chunk_max_bytes: default_chunk_max_bytes(),
            flush_after: default_flush_after(),
            zstd_level: default_zstd_level(),
        }
    }
}

/// How long ended sessions and their recordings are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// How often the retention and lost-session job runs.
    #[serde(default = "default_check_every", with = "humantime_serde")]
    pub check_every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: default_max_age(),
            check_every: default_check_every(),
        }
    }
}

fn default_lost_after() -> Duration {
    Duration::from_secs(120)
}

fn default_chunk_span() -> Duration {
    Duration::from_secs(5)
}

fn default_chunk_max_bytes() -> usize {
    1024 * 1024
}

fn default_flush_after() -> Duration {
    Duration::from_secs(5)
}

fn default_zstd_level() -> i32 {
    3
}

fn default_max_age() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

fn default_check_every() -> Duration {
    Duration::from_secs(600)
}
