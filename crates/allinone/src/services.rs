//! The services, in this process, wired to each other over mTLS with certificates of the
//! state directory's CA, on loopback ports chosen by the kernel (only the SSH and HTTP
//! listeners are the user's).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8shell_common::db::DatabaseConfig;
use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::grpc::GrpcConfig;
use k8shell_common::jwks::JwksConfig;
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::registry::RegistryAccess;
use crate::state::StateDir;
use crate::{Config, Error};

/// The authz bundle of this build (tests excluded), written to `<state>/policies` at each start.
const POLICIES: [(&str, &str); 6] = [
    ("api.rego", include_str!("../../authz/policies/api.rego")),
    (
        "authentication.rego",
        include_str!("../../authz/policies/authentication.rego"),
    ),
    (
        "onboarding.rego",
        include_str!("../../authz/policies/onboarding.rego"),
    ),
    (
        "provision.rego",
        include_str!("../../authz/policies/provision.rego"),
    ),
    ("ssh.rego", include_str!("../../authz/policies/ssh.rego")),
    ("data.json", include_str!("../../authz/policies/data.json")),
];

/// What the wiring needs from the start so far.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub state: &'a StateDir,
    pub database_url: String,
    pub nats: NatsConfig,
    pub registry: RegistryAccess,
    pub blueprint_dir: PathBuf,
    pub admin: k8shell_identity::BootstrapAdmin,
    pub one_time_login: k8shell_api_server::one_time_login::OneTimeLogin,
    pub api_listener: TcpListener,
    pub ssh_listener: TcpListener,
}

/// One running service.
#[derive(Debug)]
struct Service {
    name: &'static str,
    stop: Shutdown,
    task: JoinHandle<Result<(), String>>,
}

/// The running services, in the order they stop.
#[derive(Debug)]
pub struct Services {
    /// ssh-proxy and api-server: they stop first, draining.
    front: Vec<Service>,
    /// provisioner, session, identity, authz.
    back: Vec<Service>,
    ca: LocalCa,
    state_tls: PathBuf,
    pub provisioner_uri: String,
    pub jwks_file: PathBuf,
    identity_http: SocketAddr,
    /// Names of services whose task returned.
    ended: mpsc::UnboundedReceiver<&'static str>,
}

/// Services started so far, stopped if the start fails half-way.
#[derive(Debug)]
struct StopOnDrop(Vec<Service>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for service in &self.0 {
            service.stop.trigger();
        }
    }
}

/// Runs `serve`; its name goes to `ended` when it returns.
fn spawn<F>(
    name: &'static str,
    stop: Shutdown,
    ended: &mpsc::UnboundedSender<&'static str>,
    serve: F,
) -> Service
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let ended = ended.clone();
    Service {
        name,
        stop,
        task: tokio::spawn(async move {
            let outcome = serve.await;
            let _ = ended.send(name);
            outcome
        }),
    }
}

async fn loopback() -> Result<TcpListener, Error> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("binding a loopback port", e))
}

fn uri(listener: &TcpListener) -> Result<(SocketAddr, String), Error> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading a listener's address", e))?;
    Ok((addr, format!("https://localhost:{}", addr.port())))
}

impl Services {
    pub async fn start(inputs: Inputs<'_>) -> Result<Self, Error> {
        let Inputs {
            config,
            state,
            database_url,
            nats: nats_config,
            registry,
            blueprint_dir,
            admin,
            one_time_login,
            api_listener,
            ssh_listener,
        } = inputs;
        let ca = LocalCa::load_or_create(&state.dir("ca")?)
            .map_err(|e| Error::setup("the local CA", e))?;
        let state_tls = state.dir("tls")?;
        let tls = |service: &str| -> Result<TlsFiles, Error> {
            ca.issue_files(&state_tls.join(service), service, &["localhost"])
                .map_err(|e| Error::setup(format!("a certificate for {service}"), e))
        };
        let database = || DatabaseConfig::new(database_url.clone());
        let nats = || nats_config.clone();
        let outbox = |service: &str| OutboxConfig::new(state.path("outbox").join(service));
        // Started services are told to stop if a later step fails.
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let mut back = StopOnDrop(Vec::new());

        let policies = state.dir("policies")?;
        for (name, text) in POLICIES {
            std::fs::write(policies.join(name), text)
                .map_err(|e| Error::io(format!("writing the policy {name}"), e))?;
        }
        let authz_listener = loopback().await?;
        let (authz_addr, authz_uri) = uri(&authz_listener)?;
        let authz_config = k8shell_authz::Config {
            database: database(),
            grpc: GrpcConfig {
                listen: authz_addr,
                tls: tls("authz")?,
            },
            bundle_dir: policies,
            reload_every: Duration::from_secs(30),
            nats: Some(nats()),
            outbox: Some(outbox("authz")),
            metrics_listen: None,
            telemetry: Default::default(),
        };
        let stop = Shutdown::new();
        back.0
            .push(spawn("authz", stop.clone(), &ended_tx, async move {
                k8shell_authz::serve(
                    authz_config,
                    k8shell_authz::Listeners {
                        grpc: authz_listener,
                        metrics: None,
                    },
                    stop,
                )
                .await
                .map_err(|e| e.to_string())
            }));

        let identity_grpc = loopback().await?;
        let identity_http = loopback().await?;
        let (identity_addr, identity_uri) = uri(&identity_grpc)?;
        let (identity_http_addr, _) = uri(&identity_http)?;
        let public_url = config.public_url();
        let identity_config = k8shell_identity::Config {
            database: database(),
            grpc: GrpcConfig {
                listen: identity_addr,
                tls: tls("identity")?,
            },
            http: k8shell_identity::HttpConfig {
                listen: identity_http_addr,
            },
            issuer: public_url.clone(),
            signing: k8shell_identity::SigningConfig {
                key_dir: state.dir("identity/signing")?,
                rotate_after: Duration::from_secs(30 * 24 * 3600),
                publish_ahead: Duration::from_secs(600),
            },
            session_token_max_ttl: Duration::from_secs(900),
            access_token_max_ttl: Duration::from_secs(8 * 3600),
            device_verification_uri: Some(format!("{public_url}/device")),
            device_login_lifetime: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(2),
            api_token_max_ttl: Duration::from_secs(90 * 24 * 3600),
            authz_uri: Some(authz_uri.clone()),
            oidc: config
                .oidc
                .as_ref()
                .map(|oidc| oidc.identity_config(&public_url)),
            bootstrap_admin: Some(admin),
            telemetry: Default::default(),
        };
        let stop = Shutdown::new();
        back.0
            .push(spawn("identity", stop.clone(), &ended_tx, async move {
                k8shell_identity::serve(
                    identity_config,
                    k8shell_identity::Listeners {
                        grpc: identity_grpc,
                        http: identity_http,
                    },
                    stop,
                )
                .await
                .map_err(|e| e.to_string())
            }));

        let session_listener = loopback().await?;
        let (session_addr, session_uri) = uri(&session_listener)?;
        let session_config = k8shell_session::Config {
            database: database(),
            grpc: GrpcConfig {
                listen: session_addr,
                tls: tls("session")?,
            },
            nats: nats(),
            outbox: outbox("session"),
            recordings: k8shell_session::RecordingsConfig::new(state.dir("recordings")?),
            retention: Default::default(),
            lost_after: Duration::from_secs(120),
            telemetry: Default::default(),
        };
        let blobs = Arc::new(
            k8shell_session::DirStore::open(&session_config.recordings.dir)
                .map_err(|e| Error::setup("the recordings directory", e))?,
        );
        let stop = Shutdown::new();
        back.0
            .push(spawn("session", stop.clone(), &ended_tx, async move {
                k8shell_session::serve(session_config, session_listener, blobs, stop)
                    .await
                    .map_err(|e| e.to_string())
            }));

        // k8shelld in every workspace reads identity's keys from this file (bind-mounted).
        let jwks_file = state.path("jwks.json");
        let jwks = wait_for_jwks(identity_http_addr, &mut back.0).await?;
        write_in_place(&jwks_file, &jwks)?;

        let provisioner_listener = loopback().await?;
        let (provisioner_addr, provisioner_uri) = uri(&provisioner_listener)?;
        let provisioner_config = k8shell_provisioner::Config {
            database: database(),
            grpc: GrpcConfig {
                listen: provisioner_addr,
                tls: tls("provisioner")?,
            },
            authz_uri: authz_uri.clone(),
            nats: nats(),
            outbox: outbox("provisioner"),
            images: k8shell_provisioner::ImagesConfig {
                repository: format!("{}/k8shell/workspaces", registry.host),
                tls_verify: registry.tls_verify,
                auth_file: registry.auth_file.clone(),
                build_dir: state.dir("buildah")?,
            },
            runtime: k8shell_provisioner::RuntimeConfig::Local(
                k8shell_provisioner::LocalRuntimeConfig {
                    state_dir: state.dir("runtime")?,
                    k8shelld: config.k8shelld.clone(),
                    jwks_file: jwks_file.clone(),
                    stop_grace: Duration::from_secs(5),
                    network: Some(k8shell_provisioner::LocalNetworkConfig {
                        bridge: "k8shell0".to_owned(),
                        gateway: config.workspace_gateway,
                    }),
                },
            ),
            reconcile: Default::default(),
            telemetry: Default::default(),
        };
        let runtime = k8shell_provisioner::runtime_from(&provisioner_config)
            .await
            .map_err(|e| Error::setup("the local runtime", e))?;
        let stop = Shutdown::new();
        back.0
            .push(spawn("provisioner", stop.clone(), &ended_tx, async move {
                k8shell_provisioner::serve(
                    provisioner_config,
                    provisioner_listener,
                    runtime,
                    Arc::new(k8shell_provisioner::clock::SystemClock),
                    stop,
                )
                .await
                .map_err(|e| e.to_string())
            }));

        let mut front = StopOnDrop(Vec::new());
        let ssh_at = ssh_listener
            .local_addr()
            .map_err(|e| Error::io("reading the SSH listener's address", e))?;
        let proxy_config = k8shell_ssh_proxy::Config {
            listen: ssh_at,
            host_key_dir: state.dir("ssh-proxy/host-keys")?,
            tls: tls("ssh-proxy")?,
            identity_uri: identity_uri.clone(),
            authz_uri: authz_uri.clone(),
            session_uri: session_uri.clone(),
            provisioner_uri: provisioner_uri.clone(),
            nats: nats(),
            outbox: outbox("ssh-proxy"),
            spool_dir: state.dir("spool/ssh-proxy")?,
            auth: Default::default(),
            channels: Default::default(),
            start_timeout: Duration::from_secs(600),
            drain: config.drain,
            record_input: false,
            telemetry: Default::default(),
        };
        k8shell_ssh_proxy::raise_open_files_limit();
        let stop = Shutdown::new();
        front
            .0
            .push(spawn("ssh-proxy", stop.clone(), &ended_tx, async move {
                k8shell_ssh_proxy::serve(proxy_config, ssh_listener, stop)
                    .await
                    .map_err(|e| e.to_string())
            }));

        let api_config = k8shell_api_server::Config {
            listen: config.listen_api,
            public_url: public_url.clone(),
            tls: tls("api")?,
            identity_uri: identity_uri.clone(),
            authz_uri,
            session_uri,
            provisioner_uri: provisioner_uri.clone(),
            jwks: JwksConfig::file(&jwks_file),
            nats: nats(),
            outbox: outbox("api"),
            spool_dir: state.dir("spool/api")?,
            ssh_address: Some(config.ssh_address()),
            // This binary answers `__evaluate-blueprint` as `k8shell-api` does (main.rs).
            evaluator: std::env::current_exe().ok(),
            blueprint_dir: Some(blueprint_dir),
            cookies: k8shell_api_server::CookieConfig {
                secure: config.secure_cookies(),
            },
            rate_limit: Default::default(),
            login_ttl: Duration::from_secs(8 * 3600),
            start_timeout: Duration::from_secs(600),
            drain: config.drain,
            terminal_keep: Duration::from_secs(120),
            telemetry: Default::default(),
            one_time_login: Some(one_time_login),
        };
        let stop = Shutdown::new();
        front
            .0
            .push(spawn("api-server", stop.clone(), &ended_tx, async move {
                k8shell_api_server::serve(api_config, api_listener, stop)
                    .await
                    .map_err(|e| e.to_string())
            }));

        Ok(Self {
            front: std::mem::take(&mut front.0),
            back: std::mem::take(&mut back.0),
            ca,
            state_tls,
            provisioner_uri,
            jwks_file,
            identity_http: identity_http_addr,
            ended,
        })
    }

    /// A gRPC channel to `uri` as the all-in-one itself (an `api` certificate of its own).
    pub fn channel(&self, uri: &str) -> Result<Channel, Error> {
        let files = self
            .ca
            .issue_files(&self.state_tls.join("allinone"), "api", &[])
            .map_err(|e| Error::setup("the all-in-one's certificate", e))?;
        let tls = ReloadingTls::load(files)
            .map_err(|e| Error::setup("the all-in-one's certificate", e))?;
        k8shell_common::grpc::mtls_channel(uri, &tls).map_err(|e| Error::setup("a channel", e))
    }

    /// Resolves when a service stops on its own (its error is logged when everything stops).
    pub async fn stopped_on_its_own(&mut self) -> &'static str {
        // Every task holds a sender, so the channel stays open while any runs.
        self.ended.recv().await.unwrap_or("every service")
    }

    /// Re-reads identity's keys every minute, so workspaces verify tokens signed after a
    /// key rotation.
    pub fn keep_jwks_fresh(&self, stop: Shutdown) {
        let (addr, file) = (self.identity_http, self.jwks_file.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.triggered() => return,
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                if let Ok(fresh) = fetch_jwks(addr).await
                    && std::fs::read_to_string(&file).ok().as_deref() != Some(fresh.as_str())
                    && let Err(e) = write_in_place(&file, &fresh)
                {
                    tracing::warn!(error = %e, "could not refresh the JWKS file");
                }
            }
        });
    }

    /// Stops the front services (draining), then `between`, then the rest.
    pub async fn stop<F: std::future::Future<Output = ()>>(self, between: F) {
        stop_all(self.front).await;
        between.await;
        stop_all(self.back.into_iter().rev().collect()).await;
    }
}

async fn stop_all(services: Vec<Service>) {
    for service in &services {
        service.stop.trigger();
    }
    for service in services {
        match tokio::time::timeout(Duration::from_secs(60), service.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(service = service.name, error = %e, "stopped with an error");
            }
            Ok(Err(e)) => tracing::warn!(service = service.name, error = %e, "task failed"),
            Err(_) => tracing::warn!(service = service.name, "did not stop within 60 s"),
        }
    }
}

async fn fetch_jwks(addr: SocketAddr) -> Result<String, String> {
    k8shell_common::http::get(&format!("http://{addr}/.well-known/jwks.json"), None).await
}

/// identity's JWKS once it has a key; an error if identity stopped instead.
async fn wait_for_jwks(addr: SocketAddr, services: &mut [Service]) -> Result<String, Error> {
    let start = std::time::Instant::now();
    loop {
        if let Ok(body) = fetch_jwks(addr).await
            && body.contains("\"kid\"")
        {
            return Ok(body);
        }
        for service in services.iter_mut() {
            if service.task.is_finished() {
                let detail = match (&mut service.task).await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => "stopped".to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(Error::Setup {
                    what: format!("starting {}", service.name),
                    detail,
                });
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(Error::Setup {
                what: "starting identity".to_owned(),
                detail: "its keys were not published within 120 s".to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rewrites `path` keeping its inode: workspaces bind-mount this very file.
fn write_in_place(path: &std::path::Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
