//! provisioner: workspaces from blueprints, on the local runtime (runc) and on Kubernetes.
//!
//! Calls change what is wanted ([`store`]); the [`reconciler`] moves each workspace there through
//! a [`Runtime`], one stored transition at a time, published on NATS by [`changes`].

mod activity;
pub mod changes;
pub mod clock;
mod config;
mod health;
pub mod images;
pub mod kubernetes;
pub mod local;
pub mod reconciler;
pub mod runtime;
mod server;
pub mod service;
pub mod store;
mod wait;

pub use config::{
    Config, GrpcConfig, ImagesConfig, LocalNetworkConfig, LocalRuntimeConfig, ReconcileConfig,
    RuntimeConfig,
};
pub use runtime::{Endpoint, Observed, Runtime, RuntimeError, WorkspaceRun};
pub use server::*;
