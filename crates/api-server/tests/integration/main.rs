//! The api-server over real HTTP against the real services (in this process) and PostgreSQL.
//! Needs root: workspaces run with runc.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod console;
mod contract;
mod platform;
mod rest;
mod terminal;
