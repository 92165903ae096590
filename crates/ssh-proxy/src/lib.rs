//! ssh-proxy: SSH into workspaces with any client.
//!
//! A connection is authenticated by identity (keys, or a device login confirmed in the browser)
//! and authz ([`auth`]); its user name names a workspace ([`login`]), which authz must let the
//! user enter and the provisioner starts (`k8shell_gateway`); a session records it. Each channel is
//! one k8shelld stream: shells, commands and SFTP ([`session_channel`]), port forwards
//! ([`forward`]), moved with bounded memory both ways ([`inbound`]).

mod abortable;
pub mod algorithms;
mod auth;
mod config;
mod connection;
mod forward;
pub mod host_keys;
mod inbound;
pub mod login;
mod proxy;
pub mod server;
mod session_channel;
mod sftp_log;
mod signals;

pub use config::{AuthConfig, ChannelsConfig, Config};
pub use proxy::Proxy;

use std::sync::Arc;
use std::time::Duration;

use k8shell_common::grpc::mtls_channel;
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::ReloadingTls;
use tokio::net::TcpListener;

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    HostKeys(#[from] host_keys::HostKeyError),
    #[error(transparent)]
    Tls(#[from] k8shell_common::tls::TlsError),
    #[error(transparent)]
    Grpc(#[from] k8shell_common::grpc::GrpcError),
    #[error(transparent)]
    Events(#[from] k8shell_common::events::EventError),
    #[error("session spool: {0}")]
    Sessions(#[from] k8shell_session::ClientError),
    #[error("listener {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
}

/// Raises the soft limit of open files to the hard one: every connection holds a socket, and
/// its session a spool file or two, so the usual 1024 would end at a few hundred users.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "could not raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not read the open files limit"),
    }
}

/// Binds the configured listener and serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            what: config.listen.to_string(),
            source,
        })?;
    serve(config, listener, shutdown).await
}

/// Serves on `listener` (tests bind port 0) until `shutdown`, then drains.
pub async fn serve(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let keys = host_keys::load_or_generate(&config.host_key_dir)?;
    let stop = shutdown.token();
    let tls = ReloadingTls::load(config.tls.clone())?;
    tls.watch(Duration::from_secs(10), stop.clone());
    let (events, nats) = k8shell_common::events::start_publishing(
        &config.nats,
        &config.outbox,
        "k8shell-ssh-proxy",
        &[k8shell_common::events::AUDIT],
        stop.clone(),
    )
    .await?;
    let mut session_config = k8shell_session::ClientConfig::new(&config.spool_dir);
    session_config.record_input = config.record_input;
    let sessions = k8shell_session::Client::new(
        mtls_channel(&config.session_uri, &tls)?,
        Some(nats),
        session_config,
    )?;
    // What a previous run left in the spool reaches the session service in the background.
    let resume = sessions.clone();
    tokio::spawn(async move {
        match resume.resume_spooled().await {
            Ok(report) if report.sessions > 0 => {
                tracing::info!(?report, "uploaded the sessions a previous run left")
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "could not read the session spool"),
        }
    });
    let start_timeout = config.start_timeout;
    let backends = k8shell_gateway::Backends::new(
        mtls_channel(&config.identity_uri, &tls)?,
        mtls_channel(&config.authz_uri, &tls)?,
        mtls_channel(&config.provisioner_uri, &tls)?,
        sessions,
        events,
        tls,
    );
    let proxy = Arc::new(Proxy::new(
        config,
        k8shell_gateway::Gateway {
            backends,
            start_timeout,
        },
    ));
    let ssh_config = Arc::new(server::ssh_config(keys, &proxy));
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%listen, "ssh-proxy ready");
    server::serve(listener, ssh_config, proxy, stop)
        .await
        .map_err(|source| Error::Listen {
            what: listen,
            source,
        })
}
