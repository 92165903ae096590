//! The services (`k8shell_testplatform`) and the api-server in front of them, and signing in
//! as a user the way `k8shell login --ssh` does: `ssh-keygen -Y sign` on the server's
//! challenge.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::jwks::JwksConfig;
use k8shell_common::shutdown::Shutdown;
pub use k8shell_testplatform::{ADMIN, Services};
use serde_json::json;

use crate::client::{Answer, Api, send};

pub struct Platform {
    pub services: Services,
    pub addr: SocketAddr,
    /// The ssh-proxy, when started: its address and Ed25519 host key (the CLI's tests use it).
    #[allow(dead_code)]
    pub ssh: Option<(SocketAddr, String)>,
    api: Shutdown,
    proxy: Option<Shutdown>,
}

impl std::ops::Deref for Platform {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.api.trigger();
        if let Some(proxy) = &self.proxy {
            proxy.trigger();
        }
    }
}

impl Platform {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, None, None).await
    }

    /// The api-server on `listener`; with `oidc`, identity signs people in through that
    /// provider, which must accept `http://<listener>/api/v1/auth/callback`.
    /// With `ssh`, the ssh-proxy serves there and the API's SSH commands point at it.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        oidc: Option<&k8shell_testkit::OidcProvider>,
        ssh: Option<tokio::net::TcpListener>,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let services = Services::start_with("api-server", |identity| {
            // The device page is the api-server's own.
            identity.device_verification_uri = Some(format!("http://{addr}/device"));
            if let Some(provider) = oidc {
                let secret_file =
                    std::env::temp_dir().join(format!("k8shell-oidc-secret-{}", addr.port()));
                std::fs::write(&secret_file, &provider.client_secret).unwrap();
                identity.oidc = Some(k8shell_identity::oidc::OidcConfig {
                    issuer: provider.issuer.clone(),
                    client_id: provider.client_id.clone(),
                    client_secret_file: Some(k8shell_common::config::SecretFile(secret_file)),
                    client_secret: None,
                    redirect_uri: format!("http://{addr}/api/v1/auth/callback"),
                    ca_file: None,
                    scopes: ["openid", "email", "profile", "groups"]
                        .map(str::to_owned)
                        .to_vec(),
                    groups_claim: "groups".to_owned(),
                    allowed_email_domains: vec!["example.com".to_owned()],
                    allowed_groups: Vec::new(),
                });
            }
        })
        .await;
        let dir = services.dir.path();
        let (proxy, ssh_at) = match ssh {
            Some(listener) => {
                let (shutdown, at) = start_proxy(&services, listener);
                (Some(shutdown), Some(at))
            }
            None => (None, None),
        };
        let config = k8shell_api_server::Config {
            listen: addr,
            public_url: format!("http://{addr}"),
            tls: services.tls("api"),
            identity_uri: services.identity_uri.clone(),
            authz_uri: services.authz_uri.clone(),
            session_uri: services.session_uri.clone(),
            provisioner_uri: services.provisioner_uri.clone(),
            jwks: JwksConfig::file(&services.jwks_file),
            nats: NatsConfig {
                url: services.nats.url(),
                token_file: None,
            },
            outbox: OutboxConfig::new(dir.join("api-outbox")),
            spool_dir: dir.join("api-spool"),
            ssh_address: Some(
                ssh_at
                    .as_ref()
                    .map_or_else(|| "127.0.0.1:2222".to_owned(), |(addr, _)| addr.to_string()),
            ),
            // The real evaluator where this package's binary exists (the CLI's tests have none).
            evaluator: option_env!("CARGO_BIN_EXE_k8shell-api").map(std::path::PathBuf::from),
            blueprint_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints")),
            cookies: Default::default(),
            rate_limit: Default::default(),
            login_ttl: Duration::from_secs(3600),
            start_timeout: Duration::from_secs(120),
            drain: Duration::from_secs(2),
            terminal_keep: Duration::from_secs(120),
            telemetry: Default::default(),
            one_time_login: None,
        };
        let api = Shutdown::new();
        let stop = api.clone();
        tokio::spawn(async move {
            k8shell_api_server::serve(config, listener, stop)
                .await
                .unwrap()
        });
        k8shell_testkit::poll_until("the api-server to answer", || async move {
            (send(addr, "GET", "/healthz", &[], None).await.status == 200).then_some(())
        })
        .await;
        Self {
            services,
            addr,
            ssh: ssh_at,
            api,
            proxy,
        }
    }

    /// Asks for a challenge and signs it with `key` (a private key file), as
    /// `k8shell login --ssh` does.
    pub async fn ssh_login_with(&self, username: &str, key: &Path) -> Answer {
        let challenge = send(
            self.addr,
            "POST",
            "/api/v1/auth/ssh/challenge",
            &[],
            Some(json!({"username": username})),
        )
        .await;
        assert_eq!(challenge.status, 200, "{}", challenge.text());
        let challenge = challenge.json();
        let message = self.dir.path().join(format!("challenge-{username}"));
        std::fs::write(&message, challenge["message"].as_str().unwrap()).unwrap();
        let signed = std::process::Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", "k8shell-login", "-f"])
            .arg(key)
            .arg(&message)
            .output()
            .unwrap();
        assert!(
            signed.status.success(),
            "{}",
            String::from_utf8_lossy(&signed.stderr)
        );
        let signature = std::fs::read_to_string(message.with_extension("sig")).unwrap();
        std::fs::remove_file(message.with_extension("sig")).unwrap();
        send(
            self.addr,
            "POST",
            "/api/v1/auth/ssh",
            &[],
            Some(
                json!({"username": username, "challenge_id": challenge["challenge_id"],
                        "signature": signature}),
            ),
        )
        .await
    }

    /// Signs in as `username` with their key in `keys`.
    pub async fn sign_in(&self, username: &str) -> Api {
        // The bootstrap administrator's key is named `admin`.
        let key_name = if username == ADMIN { "admin" } else { username };
        let key = self.keys.keygen(key_name).unwrap();
        let answer = self.ssh_login_with(username, &key).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        Api {
            addr: self.addr,
            token: answer.json()["token"].as_str().unwrap().to_owned(),
        }
    }

    /// A user with a key, signed in.
    pub async fn user(&self, name: &str) -> Api {
        self.add_user(name).await;
        self.sign_in(name).await
    }
}

/// The ssh-proxy in this process on `listener`; returns its stop switch, address and host key.
fn start_proxy(
    services: &Services,
    listener: tokio::net::TcpListener,
) -> (Shutdown, (SocketAddr, String)) {
    let addr = listener.local_addr().unwrap();
    let dir = services.dir.path();
    let config = k8shell_ssh_proxy::Config {
        listen: addr,
        host_key_dir: dir.join("host-keys"),
        tls: services.tls("ssh-proxy"),
        identity_uri: services.identity_uri.clone(),
        authz_uri: services.authz_uri.clone(),
        session_uri: services.session_uri.clone(),
        provisioner_uri: services.provisioner_uri.clone(),
        nats: NatsConfig {
            url: services.nats.url(),
            token_file: None,
        },
        outbox: OutboxConfig::new(dir.join("proxy-outbox")),
        spool_dir: dir.join("proxy-spool"),
        auth: Default::default(),
        channels: Default::default(),
        start_timeout: Duration::from_secs(120),
        drain: Duration::from_secs(2),
        record_input: false,
        telemetry: Default::default(),
    };
    k8shell_ssh_proxy::host_keys::load_or_generate(&config.host_key_dir).unwrap();
    let host_key =
        std::fs::read_to_string(config.host_key_dir.join("ssh_host_ed25519_key.pub")).unwrap();
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        k8shell_ssh_proxy::serve(config, listener, stop)
            .await
            .unwrap()
    });
    (shutdown, (addr, host_key.trim().to_owned()))
}
