//! gRPC over mTLS with tonic: a listener that performs TLS handshakes with the service's
//! [`ReloadingTls`], a channel that presents the service's certificate, and the caller's service
//! name for authorization decisions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::tls::{ReloadingTls, TlsError, peer_service};

/// A TLS handshake that takes longer than this is dropped (slowloris protection).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to pick them up.
const ACCEPT_BACKLOG: usize = 64;

/// The largest HTTP/2 frame a k8shell peer accepts. Terminal, SFTP and forwarded bytes travel
/// in messages of up to 64 KiB; at HTTP/2's default of 16 KiB each would be cut into several
/// frames and read in small pieces.
pub const MAX_FRAME: u32 = 128 * 1024;
/// The HTTP/2 connection's receive window: one connection to a k8shelld carries every
/// stream of that workspace, and the default (1 MiB) would make them share a small window.
pub const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// A gRPC server builder with k8shell's HTTP/2 settings for byte streams.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_frame_size(MAX_FRAME)
        .initial_connection_window_size(CONNECTION_WINDOW)
}

fn with_stream_settings(endpoint: Endpoint) -> Endpoint {
    endpoint
        .max_frame_size(MAX_FRAME)
        .initial_connection_window_size(CONNECTION_WINDOW)
}

/// A service's gRPC listener, as every service configures it (`[grpc]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// e.g. `0.0.0.0:7001`.
    pub listen: SocketAddr,
    /// Certificate, key and CA of the service mesh.
    pub tls: crate::tls::TlsFiles,
}

/// Errors of the gRPC helpers.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid endpoint {uri:?}: {message}")]
    Endpoint { uri: String, message: String },
}

/// Accepts TCP connections on `listener` and yields those that complete an mTLS handshake, for
/// `tonic::transport::Server::serve_with_incoming`. Failed handshakes are logged, never yielded.
pub fn mtls_incoming(
    listener: TcpListener,
    tls: &Arc<ReloadingTls>,
    stop: CancellationToken,
) -> Result<impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + use<>, GrpcError> {
    let acceptor = TlsAcceptor::from(tls.server_config(&[b"h2"])?);
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Small request/response messages must not wait for Nagle + delayed ACKs (40 ms).
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _closed = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => log_refused(peer, &error),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Ok(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn log_refused(peer: SocketAddr, error: &std::io::Error) {
    tracing::info!(%peer, %error, "refused a connection: mTLS handshake failed");
}

/// A channel to `uri` (`https://host:port`) that presents this service's certificate and trusts
/// only the configured CA. It connects on first use and reconnects as needed.
pub fn mtls_channel(uri: &str, tls: &Arc<ReloadingTls>) -> Result<Channel, GrpcError> {
    let endpoint_error = |message: String| GrpcError::Endpoint {
        uri: uri.to_owned(),
        message,
    };
    // The connector below does TLS itself; tonic must see a plain scheme or it refuses.
    let authority = uri
        .strip_prefix("https://")
        .ok_or_else(|| endpoint_error("use https://host:port".to_owned()))?;
    let endpoint = with_stream_settings(
        Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| endpoint_error(e.to_string()))?
            .connect_timeout(Duration::from_secs(10)),
    );
    let connector = TlsConnector::from(tls.client_config(&[b"h2"])?);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
            let connector = connector.clone();
            async move {
                let host = uri.host().unwrap_or("localhost").to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        })),
    )
}

/// A channel to a gRPC server on a Unix socket (k8shelld on the local runtime: the socket's
/// directory permissions are the access control, no TLS). Connects lazily.
pub fn unix_channel(path: &std::path::Path) -> Channel {
    let path = path.to_owned();
    // A fixed, valid URI: the connector ignores it.
    with_stream_settings(Endpoint::from_static("http://k8shelld.local"))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
}

/// The k8shell service that made this call, from its verified client certificate.
pub fn caller_service<T>(request: &tonic::Request<T>) -> Result<String, tonic::Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
    peer_service(&certs).map_err(|e| tonic::Status::unauthenticated(e.to_string()))
}

/// A tonic interceptor that admits only the named services (deny by default).
pub fn allow_services(
    allowed: &'static [&'static str],
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request| {
        let caller = caller_service(&request)?;
        if allowed.contains(&caller.as_str()) {
            Ok(request)
        } else {
            tracing::info!(%caller, "refused a call from a service that is not allowed here");
            Err(tonic::Status::permission_denied(format!(
                "service `{caller}` may not call this service"
            )))
        }
    }
}
