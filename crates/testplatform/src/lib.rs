//! The services of k8shell, for real and in this process, for the tests of the crates that
//! sit in front of them (ssh-proxy, api-server): PostgreSQL, NATS, a registry, authz (the
//! default bundle), identity, session, and the provisioner with the local runtime (buildah,
//! runc, a static k8shelld). Needs root (runc).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8shell_common::db::DatabaseConfig;
use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::grpc::GrpcConfig;
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, TlsFiles, install_crypto_provider};
use k8shell_proto::identity::v1 as idpb;
use k8shell_proto::identity::v1::identity_client::IdentityClient;
use k8shell_proto::provisioner::v1 as pb;
use k8shell_proto::provisioner::v1::provisioner_client::ProvisionerClient;
use k8shell_proto::session::v1 as spb;
use k8shell_proto::session::v1::sessions_client::SessionsClient;
use k8shell_testkit::{Nats, Postgres, Registry, SshClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;

/// The bootstrap administrator, whose key is `admin` in [`Services::keys`].
pub const ADMIN: &str = "root-admin";

/// The running services.
#[derive(Debug)]
pub struct Services {
    pub dir: tempfile::TempDir,
    pub pg: Postgres,
    pub nats: Nats,
    ca: LocalCa,
    _registry: Registry,
    busybox: String,
    /// Key pairs of the test users (and the admin's, `admin`).
    pub keys: SshClient,
    pub identity_uri: String,
    pub authz_uri: String,
    pub provisioner_uri: String,
    pub session_uri: String,
    /// identity's signing keys, as a file k8shelld and others read.
    pub jwks_file: PathBuf,
    services: Vec<Shutdown>,
    runc_root: PathBuf,
}

/// Workspaces a failed test left running go with it (a running workspace outlives its
/// provisioner by design), and the services stop before PostgreSQL does.
impl Drop for Services {
    fn drop(&mut self) {
        for service in &self.services {
            service.trigger();
        }
        let runc = |args: &[&str]| {
            std::process::Command::new("runc")
                .arg("--root")
                .arg(&self.runc_root)
                .args(args)
                .output()
                .ok()
        };
        if let Some(listed) = runc(&["list", "-q"]) {
            for container in String::from_utf8_lossy(&listed.stdout).lines() {
                runc(&["delete", "-f", container]);
            }
        }
    }
}

fn require_root(who: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        uid, "0",
        "the {who} tests run workspaces with runc and need root: run them with sudo"
    );
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP on loopback (identity's JWKS).
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_owned()
}

/// How often the platform's background work runs.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The provisioner's full pass (each one runs `runc state` per running workspace).
    pub reconcile_every: Duration,
}

impl Pace {
    /// Tests see crashes and idle stops within a fraction of a second.
    pub const TESTS: Self = Self {
        reconcile_every: Duration::from_millis(200),
    };
    /// What a deployment does (benchmarks measure the platform as it runs there).
    pub fn production() -> Self {
        Self {
            reconcile_every: k8shell_provisioner::ReconcileConfig::default().every,
        }
    }
}

impl Services {
    /// Starts everything; `who` names the tests (in the root check and the log).
    pub async fn start(who: &str) -> Self {
        Self::start_with(who, |_| {}).await
    }

    /// Starts everything; `adjust` may change identity's configuration first (an OpenID
    /// provider, the device page).
    pub async fn start_with(who: &str, adjust: impl FnOnce(&mut k8shell_identity::Config)) -> Self {
        Self::start_paced(who, Pace::TESTS, adjust).await
    }

    /// Starts everything at `pace`; `adjust` as in [`Services::start_with`].
    pub async fn start_paced(
        who: &str,
        pace: Pace,
        adjust: impl FnOnce(&mut k8shell_identity::Config),
    ) -> Self {
        require_root(who);
        install_crypto_provider();
        let _already = k8shell_common::telemetry::init(who, &Default::default());
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start().unwrap();
        let busybox = registry.push_busybox("k8shell/busybox").unwrap();
        let pg = Postgres::start().unwrap();
        let url = pg.create_database("k8shell").unwrap();
        let nats = Nats::start().unwrap();
        let ca = LocalCa::generate("test CA").unwrap();
        let tls = |service: &str| {
            ca.issue_files(
                &dir.path().join(format!("{service}-tls")),
                service,
                &["localhost"],
            )
            .unwrap()
        };
        let mut services = Vec::new();

        let authz_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let authz = Shutdown::new();
        let authz_config = k8shell_authz::Config {
            database: DatabaseConfig::new(url.clone()),
            grpc: GrpcConfig {
                listen: authz_addr,
                tls: tls("authz"),
            },
            bundle_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../authz/policies"),
            reload_every: Duration::from_secs(60),
            nats: None,
            outbox: None,
            metrics_listen: None,
            telemetry: Default::default(),
        };
        let stop = authz.clone();
        tokio::spawn(async move { k8shell_authz::run(authz_config, stop).await.unwrap() });
        services.push(authz);
        let authz_uri = format!("https://localhost:{}", authz_addr.port());

        let keys = SshClient::new("127.0.0.1", 0, "unused").unwrap();
        let identity_grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let identity_http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let identity_uri = format!(
            "https://localhost:{}",
            identity_grpc.local_addr().unwrap().port()
        );
        let jwks_addr = identity_http.local_addr().unwrap();
        let mut identity_config = k8shell_identity::Config {
            authz_uri: None,
            oidc: None,
            database: DatabaseConfig::new(url.clone()),
            grpc: GrpcConfig {
                listen: identity_grpc.local_addr().unwrap(),
                tls: tls("identity"),
            },
            http: k8shell_identity::HttpConfig { listen: jwks_addr },
            issuer: "https://k8shell.test".to_owned(),
            signing: k8shell_identity::SigningConfig {
                key_dir: dir.path().join("signing"),
                rotate_after: Duration::from_secs(30 * 24 * 3600),
                publish_ahead: Duration::from_secs(600),
            },
            session_token_max_ttl: Duration::from_secs(900),
            access_token_max_ttl: Duration::from_secs(8 * 3600),
            device_verification_uri: Some("https://console.k8shell.test/device".to_owned()),
            device_login_lifetime: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(1),
            api_token_max_ttl: Duration::from_secs(90 * 24 * 3600),
            bootstrap_admin: Some(k8shell_identity::BootstrapAdmin {
                username: ADMIN.to_owned(),
                ssh_keys: vec![keys.public_key("admin").unwrap()],
                groups: vec!["admins".to_owned()],
            }),
            telemetry: Default::default(),
        };
        adjust(&mut identity_config);
        let identity = Shutdown::new();
        let stop = identity.clone();
        tokio::spawn(async move {
            k8shell_identity::serve(
                identity_config,
                k8shell_identity::Listeners {
                    grpc: identity_grpc,
                    http: identity_http,
                },
                stop,
            )
            .await
            .unwrap()
        });
        services.push(identity);

        let session_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let session_uri = format!(
            "https://localhost:{}",
            session_listener.local_addr().unwrap().port()
        );
        let session_config = k8shell_session::Config {
            database: DatabaseConfig::new(url.clone()),
            grpc: GrpcConfig {
                listen: session_listener.local_addr().unwrap(),
                tls: tls("session"),
            },
            nats: NatsConfig {
                url: nats.url(),
                token_file: None,
            },
            outbox: OutboxConfig::new(dir.path().join("session-outbox")),
            recordings: k8shell_session::RecordingsConfig::new(dir.path().join("recordings")),
            retention: Default::default(),
            lost_after: Duration::from_secs(120),
            telemetry: Default::default(),
        };
        let blobs = std::sync::Arc::new(
            k8shell_session::DirStore::open(&session_config.recordings.dir).unwrap(),
        );
        let session = Shutdown::new();
        let stop = session.clone();
        tokio::spawn(async move {
            k8shell_session::serve(session_config, session_listener, blobs, stop)
                .await
                .unwrap()
        });
        services.push(session);

        // k8shelld verifies session tokens with identity's keys, read from a file.
        let jwks = poll_jwks(jwks_addr).await;
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks).unwrap();

        let provisioner_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provisioner_uri = format!(
            "https://localhost:{}",
            provisioner_listener.local_addr().unwrap().port()
        );
        let runc_root = dir.path().join("state/runc");
        let provisioner_config = k8shell_provisioner::Config {
            database: DatabaseConfig::new(url),
            grpc: GrpcConfig {
                listen: provisioner_listener.local_addr().unwrap(),
                tls: tls("provisioner"),
            },
            authz_uri: authz_uri.clone(),
            nats: NatsConfig {
                url: nats.url(),
                token_file: None,
            },
            outbox: OutboxConfig::new(dir.path().join("provisioner-outbox")),
            images: k8shell_provisioner::ImagesConfig {
                repository: format!("{}/workspaces", registry.host()),
                tls_verify: false,
                auth_file: None,
                build_dir: dir.path().join("buildah"),
            },
            runtime: k8shell_provisioner::RuntimeConfig::Local(
                k8shell_provisioner::LocalRuntimeConfig {
                    state_dir: dir.path().join("state"),
                    k8shelld: k8shell_testkit::static_k8shelld(None).unwrap(),
                    jwks_file: jwks_file.clone(),
                    stop_grace: Duration::from_secs(5),
                    network: None,
                },
            ),
            reconcile: k8shell_provisioner::ReconcileConfig {
                every: pace.reconcile_every,
                ..Default::default()
            },
            telemetry: Default::default(),
        };
        let provisioner = Shutdown::new();
        let stop = provisioner.clone();
        tokio::spawn(async move {
            let runtime = k8shell_provisioner::runtime_from(&provisioner_config)
                .await
                .unwrap();
            k8shell_provisioner::serve(
                provisioner_config,
                provisioner_listener,
                runtime,
                std::sync::Arc::new(k8shell_provisioner::clock::SystemClock),
                stop,
            )
            .await
            .unwrap()
        });
        services.push(provisioner);

        let services = Self {
            dir,
            pg,
            nats,
            ca,
            _registry: registry,
            busybox,
            keys,
            identity_uri,
            authz_uri,
            provisioner_uri,
            session_uri,
            jwks_file,
            services,
            runc_root,
        };
        services.wait_ready().await;
        services
    }

    /// A certificate of the local CA for `service` (`api`, `ssh-proxy`, …).
    pub fn tls(&self, service: &str) -> TlsFiles {
        self.ca
            .issue_files(
                &self.dir.path().join(format!("{service}-tls")),
                service,
                &["localhost"],
            )
            .unwrap()
    }

    /// Stops one more service with the others.
    pub fn adopt(&mut self, service: Shutdown) {
        self.services.push(service);
    }

    async fn wait_ready(&self) {
        let identity = self.identity();
        k8shell_testkit::poll_until("identity to know the bootstrap admin", || {
            let mut identity = identity.clone();
            async move {
                identity
                    .get_user(idpb::GetUserRequest {
                        user: by_name(ADMIN),
                    })
                    .await
                    .ok()
            }
        })
        .await;
        let provisioner = self.provisioner();
        k8shell_testkit::poll_until("the provisioner to answer", || {
            let mut provisioner = provisioner.clone();
            async move { provisioner.list(pb::ListRequest::default()).await.ok() }
        })
        .await;
    }

    fn channel(&self, uri: &str, service: &str) -> Channel {
        let files = self
            .ca
            .issue_files(
                &self.dir.path().join(format!("client-{service}")),
                service,
                &[],
            )
            .unwrap();
        let tls = ReloadingTls::load(files).unwrap();
        k8shell_common::grpc::mtls_channel(uri, &tls).unwrap()
    }

    /// identity, as the api-server calls it.
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel(&self.identity_uri, "api"))
    }

    pub fn provisioner(&self) -> ProvisionerClient<Channel> {
        ProvisionerClient::new(self.channel(&self.provisioner_uri, "api"))
    }

    pub fn sessions(&self) -> SessionsClient<Channel> {
        SessionsClient::new(self.channel(&self.session_uri, "api"))
    }

    /// A user (as a login would make one) with the key of `keys` named after them.
    pub async fn add_user(&self, name: &str) {
        self.add_user_with_key(name, &self.keys.public_key(name).unwrap())
            .await;
    }

    /// A user (as a login would make one) with `public_key`.
    pub async fn add_user_with_key(&self, name: &str, public_key: &str) {
        self.pg
            .psql(
                "k8shell",
                &format!(
                    "INSERT INTO identity.users (id, username, email) \
                     VALUES (gen_random_uuid(), '{name}', '{name}@example.com')"
                ),
            )
            .unwrap();
        self.identity()
            .add_key(idpb::AddKeyRequest {
                user: by_name(name),
                public_key: public_key.to_owned(),
            })
            .await
            .unwrap();
    }

    pub async fn set_state(&self, name: &str, state: idpb::UserState) {
        self.identity()
            .set_user_state(idpb::SetUserStateRequest {
                user: by_name(name),
                state: state as i32,
            })
            .await
            .unwrap();
    }

    /// The busybox example blueprint on this registry, with `overrides` (Nickel fields).
    pub fn blueprint(&self, overrides: &str) -> String {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints/busybox.ncl");
        let example = std::fs::read_to_string(example).unwrap();
        format!(
            "({example}) & {{ base | force = \"{}\", user.uid | force = 1000, {overrides} }}",
            self.busybox
        )
    }

    /// Creates `owner`'s workspace `name` (stopped: the first login starts it).
    pub async fn create_workspace(&self, owner: &str, name: &str, overrides: &str) -> String {
        let created = self
            .provisioner()
            .create(pb::CreateRequest {
                requester: Some(pb::Requester {
                    username: owner.to_owned(),
                    groups: vec!["k8shell-users".to_owned()],
                }),
                name: name.to_owned(),
                blueprint_source: self.blueprint(overrides),
                blueprint_file: format!("{name}.ncl"),
                stopped: true,
            })
            .await
            .unwrap()
            .into_inner();
        created.r#ref.unwrap().id.unwrap().value
    }

    /// `user`'s sessions, newest first.
    pub async fn sessions_of(&self, user: &str, live: Option<bool>) -> Vec<spb::Session> {
        self.sessions()
            .list(spb::ListRequest {
                username: user.to_owned(),
                live,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .sessions
    }

    /// Polls session `id` until `check` finds what the test waits for (uploads are
    /// asynchronous).
    pub async fn session_when<T>(
        &self,
        what: &str,
        id: &Option<k8shell_proto::types::v1::Id>,
        check: impl Fn(spb::GetResponse) -> Option<T>,
    ) -> T {
        let sessions = self.sessions();
        let check = &check;
        k8shell_testkit::poll_until(what, || {
            let mut sessions = sessions.clone();
            let id = id.clone();
            async move {
                check(
                    sessions
                        .get(spb::GetRequest { id })
                        .await
                        .ok()?
                        .into_inner(),
                )
            }
        })
        .await
    }

    /// Subscribes to authentication failures.
    pub async fn auth_failures(&self) -> async_nats::Subscriber {
        let nats = async_nats::connect(self.nats.url()).await.unwrap();
        nats.subscribe("k8shell.auth.failure").await.unwrap()
    }
}

async fn poll_jwks(addr: SocketAddr) -> String {
    k8shell_testkit::poll_until("identity to publish its keys", || async move {
        let body = tokio::time::timeout(
            Duration::from_secs(2),
            http_get(addr, "/.well-known/jwks.json"),
        )
        .await
        .ok()?;
        body.contains("\"kid\"").then_some(body)
    })
    .await
}

pub fn by_name(name: &str) -> Option<idpb::UserSelector> {
    Some(idpb::UserSelector {
        user: Some(idpb::user_selector::User::Username(name.to_owned())),
    })
}
