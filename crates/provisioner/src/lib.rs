//! provisioner: workspaces from blueprints, on the local runtime (runc) and on Kubernetes.
//!
//! So far: the runtime layer (the [`Runtime`] trait and the local runtime) and the store (schema
//! `provisioner`). The service (gRPC, reconciler, idle stop) and the Kubernetes runtime build on
//! them.

pub mod local;
pub mod runtime;
pub mod store;

pub use runtime::{Endpoint, Observed, Runtime, RuntimeError, WorkspaceRun};
