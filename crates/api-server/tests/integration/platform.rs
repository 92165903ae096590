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
    api: Shutdown,
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
    }
}

impl Platform {
    pub async fn start() -> Self {
        let services = Services::start("api-server").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = services.dir.path();
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
            },
            outbox: OutboxConfig::new(dir.join("api-outbox")),
            spool_dir: dir.join("api-spool"),
            ssh_address: Some("127.0.0.1:2222".to_owned()),
            blueprint_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints")),
            cookies: Default::default(),
            rate_limit: Default::default(),
            login_ttl: Duration::from_secs(3600),
            start_timeout: Duration::from_secs(120),
            drain: Duration::from_secs(2),
            telemetry: Default::default(),
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
            api,
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
