//! ssh-proxy: SSH into workspaces with any client.
//!
//! So far: host keys ([`host_keys`]), the algorithms offered ([`algorithms`]) and a listener
//! that completes key exchange and refuses every login ([`server`]); authentication through
//! identity, workspaces and channels come next (docs/design/ssh-proxy-research.md).

pub mod algorithms;
mod config;
pub mod host_keys;
pub mod server;

pub use config::Config;

use std::sync::Arc;

use k8shell_common::shutdown::Shutdown;

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    HostKeys(#[from] host_keys::HostKeyError),
    #[error("listener {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
}

/// Binds the configured listener and serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let keys = host_keys::load_or_generate(&config.host_key_dir)?;
    let listen_error = |source| Error::Listen {
        what: config.listen.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen_error)?;
    tracing::info!(listen = %config.listen, "ssh-proxy ready");
    server::serve(
        listener,
        Arc::new(server::ssh_config(keys)),
        shutdown.token(),
    )
    .await
    .map_err(listen_error)
}
