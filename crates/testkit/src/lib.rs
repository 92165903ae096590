//! Real dependencies for k8shell's tests.
//!
//! Each component runs as a child process in its own temp dir on a free loopback port, is waited
//! for until it answers, and is stopped and removed on drop, even when the test panics; when a
//! test fails, the component's log is printed. A missing binary is an error that names the Debian
//! package to install: a test never passes by skipping.

mod binaries;
mod k8shelld;
mod nats;
mod oidc;
mod openssh;
mod postgres;
mod process;
mod python;
mod registry;
mod terminal;

pub use binaries::{Missing, require};
pub use k8shelld::static_k8shelld;
pub use nats::Nats;
pub use oidc::{Browser, NPM_PACKAGE, OidcProvider, npm_cache, query_param};
pub use openssh::SshClient;
pub use postgres::Postgres;
pub use python::{python_env, python_tool, python_with};
pub use registry::{Registry, buildah, buildah_storage_args};
pub use terminal::Terminal;

/// What can go wrong while starting a component.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(transparent)]
    Missing(#[from] Missing),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not become ready: {detail}\n--- log ---\n{log}")]
    NotReady {
        what: String,
        detail: String,
        log: String,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Polls `check` until it yields a value, and returns it; panics naming `what` when nothing comes
/// within the harness's patience. For states that change outside the test (a reloaded file, a
/// server coming up or going away), where there is no event to wait on.
pub async fn poll_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + process::PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {:?}",
            process::PATIENCE
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the component to take).
pub fn free_port() -> Result<u16, TestkitError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| TestkitError::io("binding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| TestkitError::io("reading the free port", e))
}
