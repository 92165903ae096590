//! The provisioner: store, reconciler, event publishing, session activity, gRPC.

use std::sync::Arc;
use std::time::Duration;

use k8shell_authz::client::AuthzClient;
use k8shell_common::grpc::{allow_services, mtls_channel, mtls_incoming};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::ReloadingTls;
use k8shell_proto::provisioner::v1::provisioner_server::ProvisionerServer;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, RuntimeConfig};
use crate::images::Images;
use crate::local::{LocalConfig, LocalRuntime, NetworkConfig, RegistryAccess};
use crate::reconciler::Reconciler;
use crate::runtime::{Runtime, RuntimeError};
use crate::service::ProvisionerService;
use crate::store::{MIGRATOR, Store};

/// Services that manage workspaces.
pub const ALLOWED_CALLERS: &[&str] = &["api", "ssh-proxy"];

/// Errors that stop the provisioner.
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
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("Kubernetes client: {0}")]
    Kubernetes(String),
    #[error("listener {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Binds the configured listener, makes the configured runtime and serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let listener = TcpListener::bind(config.grpc.listen)
        .await
        .map_err(|source| Error::Listen {
            what: config.grpc.listen.to_string(),
            source,
        })?;
    let runtime = runtime_from(&config).await?;
    serve(config, listener, runtime, Arc::new(SystemClock), shutdown).await
}

/// The runtime the configuration names.
pub async fn runtime_from(config: &Config) -> Result<Arc<dyn Runtime>, Error> {
    Ok(match &config.runtime {
        RuntimeConfig::Local(local) => Arc::new(LocalRuntime::new(LocalConfig {
            state_dir: local.state_dir.clone(),
            k8shelld: local.k8shelld.clone(),
            jwks_file: local.jwks_file.clone(),
            registry: RegistryAccess {
                tls_verify: config.images.tls_verify,
                auth_file: config.images.auth_file.clone(),
            },
            stop_grace: local.stop_grace,
            network: local.network.as_ref().map(|n| NetworkConfig {
                bridge: n.bridge.clone(),
                gateway: n.gateway,
            }),
        })?),
        RuntimeConfig::Kubernetes(kubernetes) => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| Error::Kubernetes(e.to_string()))?;
            Arc::new(crate::kubernetes::KubernetesRuntime::new(
                client,
                kubernetes.clone(),
            ))
        }
    })
}

/// Serves on `listener` with `runtime`, idle time measured by `clock`, until `shutdown`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    runtime: Arc<dyn Runtime>,
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let pool = k8shell_common::db::connect(&config.database, "provisioner", &MIGRATOR).await?;
    let store = Store::new(pool);
    let stop = shutdown.token();
    let (events, nats) = k8shell_common::events::start_publishing(
        &config.nats,
        &config.outbox,
        "k8shell-provisioner",
        &[k8shell_common::events::AUDIT],
        stop.clone(),
    )
    .await?;
    let tls = ReloadingTls::load(config.grpc.tls.clone())?;
    tls.watch(Duration::from_secs(10), stop.clone());
    let authz = AuthzClient::new(mtls_channel(&config.authz_uri, &tls)?, Duration::ZERO);
    let runtime_name = match config.runtime {
        RuntimeConfig::Local(_) => "local",
        RuntimeConfig::Kubernetes(_) => "kubernetes",
    };
    let reconciler = Arc::new(Reconciler::new(
        store.clone(),
        runtime,
        Images::new(config.images.clone()),
        clock,
        tls.clone(),
        config.reconcile.clone(),
    ));
    let publishing = {
        let reconciler = reconciler.clone();
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move { reconciler.changes.publish(store, events, stop).await })
    };
    tokio::spawn(crate::activity::follow_sessions(
        nats,
        store.clone(),
        stop.clone(),
    ));
    let reconciling = tokio::spawn(reconciler.clone().run(stop.clone()));
    let service = ProvisionerService {
        reconciler,
        authz: Arc::new(authz),
        runtime_name,
        stop: stop.clone(),
    };
    let (health_reporter, health) = k8shell_proto::health::server::health_reporter();
    health_reporter
        .set_serving::<ProvisionerServer<ProvisionerService>>()
        .await;
    tracing::info!(runtime = runtime_name, "provisioner ready");
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(ProvisionerServer::with_interceptor(
            service,
            allow_services(ALLOWED_CALLERS),
        ))
        .serve_with_incoming_shutdown(
            mtls_incoming(listener, &tls, stop.clone())?,
            stop.cancelled_owned(),
        )
        .await;
    // The reconciler abandons its steps like a crash would; the next start picks them up.
    let _ = reconciling.await;
    let _ = publishing.await;
    served?;
    Ok(())
}
