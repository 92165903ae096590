//! identity against a real PostgreSQL, over gRPC with mTLS, as its callers use it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod device;
mod keys;
mod oidc;
mod tokens;
