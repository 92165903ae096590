//! Shared plumbing of the k8shell services.
//!
//! - [`config`]: TOML file + `K8SHELL_<SERVICE>__<KEY>` overrides, errors with file and line;
//! - [`telemetry`]: logs, Prometheus metrics, optional OTLP traces;
//! - [`shutdown`]: one cancellation token, drain deadline, second signal forces exit;
//! - [`tls`]: mTLS with reloading certificates and a local CA; [`grpc`]: tonic over it;
//! - [`db`]: Postgres pool and per-service-schema migrations;
//! - [`events`]: typed NATS events, durable outbox, durable consumers;
//! - [`jwt`], [`jwks`]: Ed25519 session tokens and the keys that verify them;
//! - [`ids`], [`clock`]: UUIDv7 and UTC time.

pub mod clock;
pub mod config;
pub mod db;
pub mod events;
pub mod grpc;
pub mod http;
pub mod ids;
pub mod jwks;
pub mod jwt;
pub mod oidc_token;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
