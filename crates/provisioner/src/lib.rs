//! provisioner: workspaces from blueprints, on the local runtime (runc) and on Kubernetes.
//!
//! This first part is the runtime layer: the [`Runtime`] trait and the local runtime. The
//! service (gRPC, schema `provisioner`, reconciler, idle stop) and the Kubernetes runtime build
//! on it.

pub mod local;
pub mod runtime;

pub use runtime::{Endpoint, Observed, Runtime, RuntimeError, WorkspaceRun};
