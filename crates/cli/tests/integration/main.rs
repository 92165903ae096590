//! The `k8shell` binary against a running API, ssh-proxy and services (in this process), with
//! the real OpenID provider of testkit. Needs root (workspaces run with runc).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The api-server's test harness, shared rather than copied.
#[path = "../../../api-server/tests/integration/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../../../api-server/tests/integration/platform.rs"]
#[allow(dead_code)]
mod platform;

mod story;
