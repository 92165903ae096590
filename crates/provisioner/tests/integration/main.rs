//! The provisioner against real components: PostgreSQL (store), and, as root, a registry, runc
//! and the static k8shelld (runtime and service), with authz and NATS for the service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod local_runtime;
mod platform;
mod service;
mod store;
mod support;
