//! The session service against real PostgreSQL and NATS, through its client library.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod durability;
mod harness;
mod recordings;
mod sessions;
