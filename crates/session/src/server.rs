//! The session service: store, gRPC, live view, maintenance.

use std::sync::Arc;

use k8shell_common::grpc::{allow_services, mtls_incoming};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::ReloadingTls;
use k8shell_proto::session::v1::sessions_server::SessionsServer;
use tokio::net::TcpListener;

pub use crate::blob::{DirStore, RecordingStore, StoreError as BlobError, StoreFuture};
pub use crate::config::{Config, GrpcConfig, RecordingsConfig, RetentionConfig};
pub use crate::service::SessionService;

use crate::chunker::ChunkPolicy;
use crate::live_view::LiveView;
use crate::service::IngestPolicy;
use crate::store::Store;

/// The migrations of schema `session`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Services that hold sessions or read them.
pub const ALLOWED_CALLERS: &[&str] = &["ssh-proxy", "api"];

/// Errors that stop the session service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Database(#[from] k8shell_common::db::DbError),
    #[error(transparent)]
    Tls(#[from] k8shell_common::tls::TlsError),
    #[error(transparent)]
    Grpc(#[from] k8shell_common::grpc::GrpcError),
    #[error(transparent)]
    Events(#[from] k8shell_common::events::EventError),
    #[error(transparent)]
    Recordings(#[from] BlobError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("listener {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Binds the configured listener and serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let listener = TcpListener::bind(config.grpc.listen)
        .await
        .map_err(|source| Error::Listen {
            what: config.grpc.listen.to_string(),
            source,
        })?;
    let blobs = Arc::new(DirStore::open(&config.recordings.dir)?);
    serve(config, listener, blobs, shutdown).await
}

/// Serves on `listener` with recordings in `blobs` until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    blobs: Arc<dyn RecordingStore>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let recordings = &config.recordings;
    if recordings.chunk_span.is_zero() || recordings.chunk_max_bytes < 1024 {
        return Err(Error::Config(
            "recordings.chunk_span must be positive and recordings.chunk_max_bytes at least 1024"
                .to_owned(),
        ));
    }
    if !(1..=19).contains(&recordings.zstd_level) {
        return Err(Error::Config(format!(
            "recordings.zstd_level {} is out of range: use 1 (fastest) to 19 (smallest)",
            recordings.zstd_level
        )));
    }
    let pool = k8shell_common::db::connect(&config.database, "session", &MIGRATOR).await?;
    let stop = shutdown.token();
    let (events, nats) = k8shell_common::events::start_publishing(
        &config.nats,
        &config.outbox,
        "k8shell-session",
        &[k8shell_common::events::AUDIT],
        stop.clone(),
    )
    .await?;
    let service = SessionService {
        store: Store::new(pool),
        blobs,
        live: Arc::new(LiveView::default()),
        events,
        nats,
        ingest: IngestPolicy {
            chunks: ChunkPolicy {
                span: recordings.chunk_span.as_secs_f64(),
                max_bytes: recordings.chunk_max_bytes,
            },
            flush_after: recordings.flush_after,
            zstd_level: recordings.zstd_level,
        },
        terminate_wait: std::time::Duration::from_secs(3),
        stop: stop.clone(),
    };
    tokio::spawn(crate::maintenance::run(
        service.clone(),
        config.retention.clone(),
        config.lost_after,
        stop.clone(),
    ));
    let tls = ReloadingTls::load(config.grpc.tls.clone())?;
    tls.watch(std::time::Duration::from_secs(10), stop.clone());
    let (health_reporter, health) = k8shell_proto::health::server::health_reporter();
    health_reporter
        .set_serving::<SessionsServer<SessionService>>()
        .await;
    tracing::info!(recordings = %config.recordings.dir.display(), "session service ready");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(SessionsServer::with_interceptor(
            service,
            allow_services(ALLOWED_CALLERS),
        ))
        .serve_with_incoming_shutdown(
            mtls_incoming(listener, &tls, stop.clone())?,
            stop.cancelled_owned(),
        )
        .await?;
    Ok(())
}
