//! identity: users, groups, SSH public keys, personal API tokens, and the issuer of the JWTs
//! every other service verifies locally (JWKS at `/.well-known/jwks.json`).

mod config;
mod device;
pub mod oidc;
mod service;
mod signing;
pub mod sshkey;
mod store;

use std::sync::Arc;

use axum::Json;
use axum::routing::get;
use k8shell_common::grpc::{allow_services, mtls_incoming};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::ReloadingTls;
use k8shell_proto::identity::v1::identity_server::IdentityServer;
use tokio::net::TcpListener;

pub use config::{BootstrapAdmin, Config, GrpcConfig, HttpConfig, SigningConfig};
pub use service::{IdentityService, TOKEN_PREFIX, TokenRules};
pub use signing::KeyRing;
pub use store::{Store, StoreError, UserRef, UserState, valid_username};

/// The migrations of schema `identity`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Services that may call identity.
pub const ALLOWED_CALLERS: &[&str] = &["ssh-proxy", "api", "session", "provisioner", "authz"];

/// Errors that stop identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Database(#[from] k8shell_common::db::DbError),
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
    #[error(transparent)]
    Tls(#[from] k8shell_common::tls::TlsError),
    #[error(transparent)]
    Grpc(#[from] k8shell_common::grpc::GrpcError),
    #[error("bootstrap admin: {0}")]
    Bootstrap(String),
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
    pub http: TcpListener,
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
    let listeners = Listeners {
        grpc: bind(config.grpc.listen).await?,
        http: bind(config.http.listen).await?,
    };
    serve(config, listeners, shutdown).await
}

/// Serves on `listeners` until `shutdown`.
pub async fn serve(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), Error> {
    let pool = k8shell_common::db::connect(&config.database, "identity", &MIGRATOR).await?;
    let store = Store::new(pool);
    // A retired key stays published as long as any token it signed may live, plus the clock
    // leeway of verifiers.
    let publish_for = config
        .session_token_max_ttl
        .max(config.access_token_max_ttl)
        + std::time::Duration::from_secs(k8shell_common::jwt::LEEWAY_SECONDS.unsigned_abs());
    let keys = Arc::new(KeyRing::open(
        &config.signing.key_dir,
        config.signing.rotate_after,
        publish_for,
        config.signing.publish_ahead,
    )?);
    if let Some(admin) = &config.bootstrap_admin {
        bootstrap(&store, admin).await?;
    }
    let tls = ReloadingTls::load(config.grpc.tls.clone())?;
    let stop = shutdown.token();
    tls.watch(std::time::Duration::from_secs(10), stop.clone());
    spawn_rotation(Arc::clone(&keys), stop.clone());

    let authz = match &config.authz_uri {
        Some(uri) => Some(Arc::new(k8shell_authz::client::AuthzClient::new(
            k8shell_common::grpc::mtls_channel(uri, &tls)?,
            std::time::Duration::from_secs(60),
        ))),
        None => None,
    };
    let oidc = match config.oidc.clone() {
        Some(oidc) => Some(Arc::new(
            oidc::Oidc::new(oidc, authz).map_err(Error::Bootstrap)?,
        )),
        None => None,
    };
    let service = IdentityService {
        store,
        oidc,
        keys: Arc::clone(&keys),
        rules: TokenRules {
            issuer: config.issuer.clone(),
            session_token_max_ttl: config.session_token_max_ttl,
            access_token_max_ttl: config.access_token_max_ttl,
            api_token_max_ttl: config.api_token_max_ttl,
            device_verification_uri: config
                .device_verification_uri
                .clone()
                .unwrap_or_else(|| format!("{}/device", config.issuer.trim_end_matches('/'))),
            device_login_lifetime: config.device_login_lifetime,
            device_poll_interval: config.device_poll_interval,
        },
    };
    let (health_reporter, health) = k8shell_proto::health::server::health_reporter();
    health_reporter
        .set_serving::<IdentityServer<IdentityService>>()
        .await;
    let grpc = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(IdentityServer::with_interceptor(
            service,
            allow_services(ALLOWED_CALLERS),
        ))
        .serve_with_incoming_shutdown(
            mtls_incoming(listeners.grpc, &tls, stop.clone())?,
            stop.clone().cancelled_owned(),
        );
    let http_keys = Arc::clone(&keys);
    let router = axum::Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || {
                let keys = Arc::clone(&http_keys);
                async move { Json(keys.jwks()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let http =
        axum::serve(listeners.http, router).with_graceful_shutdown(stop.clone().cancelled_owned());
    tracing::info!(issuer = %config.issuer, "identity ready");
    let (grpc, http) = tokio::join!(grpc, http);
    grpc?;
    http.map_err(|source| Error::Listen {
        what: "http".to_owned(),
        source,
    })?;
    Ok(())
}

/// Ensures the bootstrap admin exists with its groups and keys.
async fn bootstrap(store: &Store, admin: &BootstrapAdmin) -> Result<(), Error> {
    let user = match store
        .create_user(&admin.username, &admin.username, "", &admin.groups)
        .await
    {
        Ok(user) => {
            tracing::info!(user = %user.username, "created the bootstrap admin");
            user
        }
        Err(StoreError::UsernameTaken(_)) => store
            .user(&UserRef::Name(admin.username.clone()))
            .await
            .map_err(|e| Error::Bootstrap(e.to_string()))?,
        Err(e) => return Err(Error::Bootstrap(e.to_string())),
    };
    let mut groups = user.groups.clone();
    for group in &admin.groups {
        if !groups.contains(group) {
            groups.push(group.clone());
        }
    }
    store
        .set_groups(user.id, &groups)
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?;
    for line in &admin.ssh_keys {
        let key = sshkey::SshPublicKey::parse(line)
            .map_err(|e| Error::Bootstrap(format!("key {line:?}: {e}")))?;
        match store.add_key(&UserRef::Id(user.id), &key).await {
            Ok(_) | Err(StoreError::KeyTaken(_)) => {}
            Err(e) => return Err(Error::Bootstrap(e.to_string())),
        }
    }
    Ok(())
}

/// Checks hourly whether the signing key is due for rotation.
fn spawn_rotation(keys: Arc<KeyRing>, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            }
            if let Err(error) = keys.rotate_if_due() {
                tracing::error!(%error, "signing key rotation failed");
            }
        }
    });
}
