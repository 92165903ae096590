//! session: live sessions, their timelines, and durable terminal recordings in asciicast v2.
//!
//! Without the `server` feature this crate is the client library the holders of sessions link
//! (ssh-proxy, api): [`Client`], [`LiveSession`], [`Recording`].

pub mod asciicast;
mod client;
mod live;
mod recording;
mod spool;
mod upload;

pub use client::{Client, ClientConfig, ClientError, NewSession, ResumeReport};
pub use k8shell_proto::session::v1::SessionKind;
pub use live::{Closing, LiveSession, TERMINATE_ACK, TerminateNotice};
pub use recording::{Recording, RecordingKind};
pub use spool::SpoolError;

#[cfg(feature = "server")]
mod blob;
#[cfg(feature = "server")]
pub mod chunker;
#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod live_view;
#[cfg(feature = "server")]
mod maintenance;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod service;
#[cfg(feature = "server")]
mod store;

#[cfg(feature = "server")]
pub use server::*;
