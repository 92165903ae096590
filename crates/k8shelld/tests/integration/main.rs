//! k8shelld end to end: a real gRPC connection, real processes and PTYs, real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod access;
mod container;
mod exec_pipes;
mod exec_pty;
mod forward;
mod resources;
mod sftp;
