//! api-server: the REST API of k8shell (`/api/v1`), its OpenAPI document, the browser terminal,
//! and the sign-in flows of the console and the CLI.
//!
//! Requests are authenticated by [`caller`] (access tokens, API tokens, the session cookie with
//! CSRF protection) and authorized by ownership or authz's `api` policy; the routes
//! ([`routes`]) turn them into calls to identity, authz, provisioner and session. The terminal
//! ([`terminal`]) enters workspaces through `k8shell_gateway` like the ssh-proxy.

pub mod caller;
mod config;
mod console;
pub mod cookies;
pub mod evaluate;
mod extract;
mod metrics;
pub mod one_time_login;
pub mod problem;
mod ratelimit;
pub mod routes;
mod screen_at;
mod ssh_login;
mod state;
mod terminal;
mod users;

pub use config::{Config, CookieConfig, RateLimitConfig};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use k8shell_common::grpc::mtls_channel;
use k8shell_common::jwks::JwksCache;
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::ReloadingTls;
use k8shell_gateway::{Backends, Gateway};
use tokio::net::TcpListener;

use crate::state::AppState;

/// Errors that stop the api-server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] k8shell_common::tls::TlsError),
    #[error(transparent)]
    Grpc(#[from] k8shell_common::grpc::GrpcError),
    #[error(transparent)]
    Events(#[from] k8shell_common::events::EventError),
    #[error(transparent)]
    Jwks(#[from] k8shell_common::jwks::JwksError),
    #[error("session spool: {0}")]
    Sessions(#[from] k8shell_session::ClientError),
    #[error("example blueprints in {dir}: {source}")]
    Blueprints { dir: String, source: std::io::Error },
    #[error("listener {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
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

/// Serves on `listener` (tests bind port 0) until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: Shutdown) -> Result<(), Error> {
    let stop = shutdown.token();
    let tls = ReloadingTls::load(config.tls.clone())?;
    tls.watch(Duration::from_secs(10), stop.clone());
    let jwks = JwksCache::load(config.jwks.clone()).await?;
    jwks.spawn_refresher(stop.clone());
    let (events, nats) = k8shell_common::events::start_publishing(
        &config.nats,
        &config.outbox,
        "k8shell-api",
        &[k8shell_common::events::AUDIT],
        stop.clone(),
    )
    .await?;
    let sessions = k8shell_session::Client::new(
        mtls_channel(&config.session_uri, &tls)?,
        Some(nats),
        k8shell_session::ClientConfig::new(&config.spool_dir),
    )?;
    let resume = sessions.clone();
    tokio::spawn(async move {
        if let Err(error) = resume.resume_spooled().await {
            tracing::error!(%error, "could not read the session spool");
        }
    });
    let backends = Backends::new(
        mtls_channel(&config.identity_uri, &tls)?,
        mtls_channel(&config.authz_uri, &tls)?,
        mtls_channel(&config.provisioner_uri, &tls)?,
        sessions,
        events,
        tls,
    );
    let blueprints = match &config.blueprint_dir {
        Some(dir) => {
            routes::blueprints::load_examples(dir).map_err(|source| Error::Blueprints {
                dir: dir.display().to_string(),
                source,
            })?
        }
        None => Vec::new(),
    };
    let state = Arc::new(AppState {
        gateway: Gateway {
            backends,
            start_timeout: config.start_timeout,
        },
        jwks,
        users: users::UserCache::default(),
        challenges: ssh_login::Challenges::default(),
        login_limit: ratelimit::RateLimiter::new(
            config.rate_limit.burst,
            config.rate_limit.per_minute,
        ),
        metrics: metrics::Metrics::new(),
        blueprints,
        stop: stop.clone(),
        terminals: tokio_util::task::TaskTracker::new(),
        one_time_login: one_time_login::OneTimeLogins::new(config.one_time_login.clone()),
        config,
    });
    let app = router(Arc::clone(&state));
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%listen, public_url = %state.config.public_url, "api-server ready");
    let drain = state.config.drain;
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned());
    // Terminals and event streams end with the token; give them `drain` to say so.
    let served = async {
        served.await.map_err(|source| Error::Listen {
            what: listen.clone(),
            source,
        })
    };
    let result = tokio::select! {
        result = served => result,
        () = async {
            state.stop.cancelled().await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!("connections still open after the drain time; closing them");
            Ok(())
        }
    };
    // Upgraded connections are not the HTTP server's: wait for the terminals to close their
    // sessions (they heard the stop), within the drain time.
    state.terminals.close();
    if tokio::time::timeout(drain, state.terminals.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = state.terminals.len(),
            "terminals still open after the drain time"
        );
    }
    result
}

/// Every route: `/api/v1`, the device confirmation page, health, metrics and the console.
pub fn router(state: Arc<AppState>) -> Router {
    let openapi: Arc<str> = Arc::from(routes::openapi_json());
    let metrics = state.metrics.registry.router();
    Router::new()
        .nest("/api/v1", routes::api(openapi))
        .route("/device", get(routes::auth::device_page))
        .route("/login/once", get(routes::auth::one_time_login))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Everything else is the console's (index.html for its page paths).
        .fallback(console::serve)
        // A panic becomes a problem inside `observe`, so that it is logged and counted.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                use axum::response::IntoResponse as _;
                problem::ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "the request failed inside k8shell; the server log has the details",
                )
                .into_response()
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::observe,
        ))
        .with_state(state)
        .merge(metrics)
}

/// Ready when the services behind answer: identity and the provisioner are asked.
async fn readyz(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let backends = &state.gateway.backends;
    let (mut identity, mut provisioner) = (backends.identity.clone(), backends.provisioner.clone());
    let identity = identity.list_users(k8shell_proto::identity::v1::ListUsersRequest {
        page: Some(k8shell_proto::types::v1::PageRequest {
            limit: 1,
            cursor: String::new(),
        }),
    });
    let provisioner = provisioner.list(k8shell_proto::provisioner::v1::ListRequest {
        owner: "-".to_owned(),
    });
    let (identity, provisioner) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(3), identity),
        tokio::time::timeout(Duration::from_secs(3), provisioner)
    );
    let mut down = Vec::new();
    if !matches!(identity, Ok(Ok(_))) {
        down.push("identity");
    }
    if !matches!(provisioner, Ok(Ok(_))) {
        down.push("provisioner");
    }
    if down.is_empty() {
        "ready".into_response()
    } else {
        problem::ApiError::unavailable(format!("not ready: {} not answering", down.join(", ")))
            .into_response()
    }
}
