//! The policy service: bundle, gRPC, decision log, metrics.

use k8shell_common::grpc::{allow_services, mtls_incoming};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::ReloadingTls;
use k8shell_proto::authz::v1::authz_server::AuthzServer;
use tokio::net::TcpListener;

pub use crate::bundle::{Bundle, BundleError};
pub use crate::config::{Config, GrpcConfig};
pub use crate::reload::PolicySource;
pub use crate::service::AuthzService;

/// The migrations of schema `authz`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Services that may ask for decisions.
pub const ALLOWED_CALLERS: &[&str] = &["ssh-proxy", "api", "identity", "provisioner", "session"];

/// Errors that stop authz.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Database(#[from] k8shell_common::db::DbError),
    #[error(transparent)]
    Tls(#[from] k8shell_common::tls::TlsError),
    #[error(transparent)]
    Grpc(#[from] k8shell_common::grpc::GrpcError),
    #[error(transparent)]
    Events(#[from] k8shell_common::events::EventError),
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

/// The listeners, bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    /// `/metrics`, if served.
    pub metrics: Option<TcpListener>,
}

/// Binds the configured listeners and serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let bind = |addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                what: addr.to_string(),
                source,
            })
    };
    let grpc = bind(config.grpc.listen).await?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    serve(config, Listeners { grpc, metrics }, shutdown).await
}

/// Serves on `listeners` until `shutdown`.
pub async fn serve(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), Error> {
    let listener = listeners.grpc;
    let policies = PolicySource::load(config.bundle_dir.clone())?;
    if let Some(metrics_listener) = listeners.metrics {
        let metrics = k8shell_common::telemetry::Metrics::new("authz");
        metrics.register(
            "policy_bundles_refused",
            "Policy bundles refused at reload (they failed to parse or their tests failed)",
            policies.refused.clone(),
        );
        let router = metrics.router();
        let stop = shutdown.token();
        tokio::spawn(async move {
            let served = axum::serve(metrics_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "metrics listener failed");
            }
        });
    }
    let pool = k8shell_common::db::connect(&config.database, "authz", &MIGRATOR).await?;
    let stop = shutdown.token();
    policies.watch(config.reload_every, stop.clone());
    let events = match (&config.nats, &config.outbox) {
        (Some(nats), Some(outbox)) => {
            let (publisher, _) = k8shell_common::events::start_publishing(
                nats,
                outbox,
                "k8shell-authz",
                &[k8shell_common::events::AUDIT],
                stop.clone(),
            )
            .await?;
            Some(publisher)
        }
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "set both `nats` and `outbox`, or neither".to_owned(),
            ));
        }
    };
    let tls = ReloadingTls::load(config.grpc.tls.clone())?;
    tls.watch(std::time::Duration::from_secs(10), stop.clone());
    let service = AuthzService {
        policies,
        pool,
        events,
    };
    let (health_reporter, health) = k8shell_proto::health::server::health_reporter();
    health_reporter
        .set_serving::<AuthzServer<AuthzService>>()
        .await;
    tracing::info!("authz ready");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthzServer::with_interceptor(
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
