//! The proxy against OpenSSH's `ssh`, `scp` and `sftp`, with identity, authz, session,
//! provisioner (local runtime) and k8shelld running for real. Needs root (runc).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod commands;
mod files;
mod forwards;
mod paramiko;
mod platform;
mod refusals;
mod support;
mod terminal;
