//! Where workspaces run: one trait, implemented by the local runtime (runc) and, later, by
//! Kubernetes. The reconciler drives it; every operation is idempotent, so that a provisioner
//! that crashed half-way can simply do it again.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use uuid::Uuid;

/// A boxed future, so that runtimes can be trait objects.
pub type RuntimeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RuntimeError>> + Send + 'a>>;

/// What a runtime needs to know about a workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRun {
    pub id: Uuid,
    /// The owner's username (labels, ownership of the home volume).
    pub owner: String,
    /// The hostname inside.
    pub name: String,
    /// Image reference (`registry/repository:tag` or `@sha256:…`).
    pub image: String,
    /// The workspace user, as the image defines it.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// CPU cores.
    pub cpu: f64,
    pub memory_bytes: u64,
    /// Size of the home volume.
    pub home_bytes: u64,
    /// Outbound network access (the blueprint's `allow.egress`); loopback only when false.
    pub egress: bool,
}

/// How to reach a workspace's k8shelld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket on the provisioner's host (local runtime).
    Unix(PathBuf),
    /// `host:port`, mTLS (Kubernetes).
    Tcp(String),
}

/// What the runtime sees of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Nothing exists.
    Absent,
    /// Prepared (image and home there) but not running.
    Stopped,
    Running {
        endpoint: Endpoint,
        /// Limits that could not be applied (e.g. no cgroup controller), for the status.
        warnings: Vec<String>,
    },
}

/// A runtime failure, in words for the workspace's status.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image} cannot be pulled: {detail}")]
    Image { image: String, detail: String },
    #[error(
        "{tool} is not installed; install it with `sudo apt-get install -y {package}` (or run scripts/setup)"
    )]
    Missing { tool: String, package: String },
    #[error("{step}: {detail}")]
    Step { step: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// A place where workspaces run.
pub trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// Starts the workspace (preparing image and home first if needed). Idempotent: a running
    /// workspace stays as it is.
    fn start<'a>(&'a self, workspace: &'a WorkspaceRun) -> RuntimeFuture<'a, Endpoint>;
    /// Stops it and keeps its home. Idempotent.
    fn stop<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, ()>;
    /// Removes everything of it. Idempotent.
    fn delete<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, ()>;
    /// What exists now.
    fn observe<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, Observed>;
}
