//! The listener: one task per connection, each a russh session with the proxy's keys and
//! algorithms. Until authentication through identity lands, every login is refused: deny by
//! default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::{Auth, Handler, PublicKeyOffer};
use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The russh configuration of the proxy.
pub fn ssh_config(keys: Vec<PrivateKey>) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-k8shell".into()),
        keys,
        preferred: crate::algorithms::preferred(),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Every OpenSSH client starts with a `none` request: answer it at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        auth_rejection_time: Duration::from_millis(300),
        max_auth_attempts: 6,
        // Idle shells stay; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..Default::default()
    }
}

/// One connection's handler: refuses every authentication.
#[derive(Debug)]
struct Refusing {
    peer: SocketAddr,
}

impl Handler for Refusing {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        _offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        tracing::info!(peer = %self.peer, %user, "refused a login: authentication is not configured");
        Ok(Auth::reject())
    }
}

/// Accepts connections on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        tcp.set_nodelay(true)?;
        let config = config.clone();
        tokio::spawn(async move {
            let session = russh::server::run_stream(config, tcp, Refusing { peer }).await;
            let ended = match session {
                Ok(session) => session.await,
                Err(error) => Err(error),
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended");
            }
        });
    }
}
