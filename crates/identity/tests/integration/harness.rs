//! Starts identity in-process on a real PostgreSQL with certificates from a local CA.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8shell_common::db::DatabaseConfig;
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, install_crypto_provider};
use k8shell_identity::{BootstrapAdmin, Config, GrpcConfig, HttpConfig, Listeners, SigningConfig};
use k8shell_proto::identity::v1::identity_client::IdentityClient;
use k8shell_proto::identity::v1::{UserSelector, user_selector};
use k8shell_testkit::Postgres;
use tonic::transport::Channel;

pub struct Identity {
    pub pg: Postgres,
    pub dir: tempfile::TempDir,
    pub ca: LocalCa,
    pub grpc_uri: String,
    pub jwks_url: String,
    pub admin_key: PathBuf,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<()>,
}

/// A fresh OpenSSH key pair made by ssh-keygen; returns the path of the private key.
pub fn ssh_keygen(dir: &std::path::Path, name: &str) -> PathBuf {
    let ssh_keygen = k8shell_testkit::require("ssh-keygen", "openssh-client", &[]).unwrap();
    let path = dir.join(name);
    let status = Command::new(ssh_keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("{name}@test"))
        .arg("-f")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

pub fn public_key(private: &std::path::Path) -> String {
    std::fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn by_name(name: &str) -> Option<UserSelector> {
    Some(UserSelector {
        user: Some(user_selector::User::Username(name.to_owned())),
    })
}

impl Identity {
    pub async fn start() -> Self {
        Self::start_with(|_| None).await
    }

    /// identity with an OpenID provider: `oidc` gets the temp dir and returns the config.
    pub async fn start_with(
        oidc: impl FnOnce(&std::path::Path) -> Option<k8shell_identity::oidc::OidcConfig>,
    ) -> Self {
        Self::start_full(oidc, None).await
    }

    /// identity whose certificates come from `authz`'s CA, asking that authz at `uri`.
    pub async fn start_full(
        oidc: impl FnOnce(&std::path::Path) -> Option<k8shell_identity::oidc::OidcConfig>,
        authz: Option<(LocalCa, String)>,
    ) -> Self {
        install_crypto_provider();
        // Logs of the service under test, shown when a test fails.
        let _already = k8shell_common::telemetry::init("identity-test", &Default::default());
        let pg = Postgres::start().unwrap();
        let url = pg.create_database("k8shell").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (ca, authz_uri) = match authz {
            Some((ca, uri)) => (ca, Some(uri)),
            None => (LocalCa::generate("test CA").unwrap(), None),
        };
        let tls = ca
            .issue_files(&dir.path().join("identity-tls"), "identity", &["localhost"])
            .unwrap();
        let admin_key = ssh_keygen(dir.path(), "admin");
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_uri = format!("https://localhost:{}", grpc.local_addr().unwrap().port());
        let jwks_url = format!(
            "http://127.0.0.1:{}/.well-known/jwks.json",
            http.local_addr().unwrap().port()
        );
        let oidc = oidc(dir.path());
        let config = Config {
            authz_uri,
            oidc,
            database: DatabaseConfig::new(url),
            grpc: GrpcConfig {
                listen: grpc.local_addr().unwrap(),
                tls,
            },
            http: HttpConfig {
                listen: http.local_addr().unwrap(),
            },
            issuer: "https://k8shell.test".to_owned(),
            signing: SigningConfig {
                key_dir: dir.path().join("signing"),
                rotate_after: Duration::from_secs(30 * 24 * 3600),
                publish_ahead: Duration::from_secs(600),
            },
            session_token_max_ttl: Duration::from_secs(900),
            access_token_max_ttl: Duration::from_secs(8 * 3600),
            device_verification_uri: Some("https://console.k8shell.test/device".to_owned()),
            device_login_lifetime: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(5),
            api_token_max_ttl: Duration::from_secs(90 * 24 * 3600),
            bootstrap_admin: Some(BootstrapAdmin {
                username: "root-admin".to_owned(),
                ssh_keys: vec![public_key(&admin_key)],
                groups: vec!["admins".to_owned()],
            }),
            telemetry: Default::default(),
        };
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            k8shell_identity::serve(config, Listeners { grpc, http }, stop)
                .await
                .unwrap();
        });
        let identity = Self {
            pg,
            dir,
            ca,
            grpc_uri,
            jwks_url,
            admin_key,
            shutdown,
            task,
        };
        identity.wait_ready().await;
        identity
    }

    /// A client presenting the certificate of `service`.
    pub fn client_as(&self, service: &str) -> IdentityClient<Channel> {
        let files = self
            .ca
            .issue_files(
                &self.dir.path().join(format!("client-{service}")),
                service,
                &[],
            )
            .unwrap();
        let tls = ReloadingTls::load(files).unwrap();
        IdentityClient::new(k8shell_common::grpc::mtls_channel(&self.grpc_uri, &tls).unwrap())
    }

    /// The api-server's client.
    pub fn client(&self) -> IdentityClient<Channel> {
        self.client_as("api")
    }

    /// Waits until the bootstrap admin can be read (migrations done, listener up).
    async fn wait_ready(&self) {
        let client = self.client();
        k8shell_testkit::poll_until("identity to become ready", || {
            let mut client = client.clone();
            assert!(!self.task.is_finished(), "identity stopped during start-up");
            async move {
                client
                    .get_user(k8shell_proto::identity::v1::GetUserRequest {
                        user: by_name("root-admin"),
                    })
                    .await
                    .ok()
            }
        })
        .await;
    }

    /// Suspends or reactivates a user, as an administrator would.
    pub async fn set_state(&self, name: &str, state: k8shell_proto::identity::v1::UserState) {
        self.client()
            .set_user_state(k8shell_proto::identity::v1::SetUserStateRequest {
                user: by_name(name),
                state: state as i32,
            })
            .await
            .unwrap();
    }

    /// Creates a user directly in the store, as a login would.
    pub async fn create_user(&self, name: &str) {
        self.pg
            .psql(
                "k8shell",
                &format!(
                    "INSERT INTO identity.users (id, username, email) VALUES (gen_random_uuid(), '{name}', '{name}@example.com')"
                ),
            )
            .unwrap();
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        // Stop serving before PostgreSQL goes away.
        self.shutdown.trigger();
    }
}
