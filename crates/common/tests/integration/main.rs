//! Integration tests of k8shell-common against real components (one test binary per crate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod config;
mod db;
mod events;
mod jwks;
mod shutdown;
mod telemetry;
mod tls;
