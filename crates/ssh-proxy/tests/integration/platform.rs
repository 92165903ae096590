//! Everything the proxy talks to, for real and in this process (`k8shell_testplatform`), and
//! the proxy itself. Needs root (runc).

use std::path::Path;
use std::time::Duration;

use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::shutdown::Shutdown;
use k8shell_testkit::SshClient;
#[allow(unused_imports)]
pub use k8shell_testplatform::{ADMIN, Pace, Services, by_name};

pub struct Platform {
    services: Services,
    pub client: SshClient,
    pub proxy_config: k8shell_ssh_proxy::Config,
    proxy: Option<(Shutdown, tokio::task::JoinHandle<()>)>,
    proxy_process: Option<std::process::Child>,
}

impl std::ops::Deref for Platform {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

/// The proxy stops first; the services then stop with [`Services`].
impl Drop for Platform {
    fn drop(&mut self) {
        if let Some((proxy, _)) = &self.proxy {
            proxy.trigger();
        }
        if let Some(mut process) = self.proxy_process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts everything; `adjust` may change the proxy's configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut k8shell_ssh_proxy::Config)) -> Self {
        Self::start_paced(Pace::TESTS, adjust).await
    }

    /// Starts everything at `pace` (the benchmark runs at a deployment's).
    pub async fn start_paced(
        pace: Pace,
        adjust: impl FnOnce(&mut k8shell_ssh_proxy::Config),
    ) -> Self {
        let services = Services::start_paced("ssh-proxy", pace, |_| {}).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ssh_addr = listener.local_addr().unwrap();
        let mut proxy_config = k8shell_ssh_proxy::Config {
            listen: ssh_addr,
            host_key_dir: services.dir.path().join("host-keys"),
            tls: services.tls("ssh-proxy"),
            identity_uri: services.identity_uri.clone(),
            authz_uri: services.authz_uri.clone(),
            session_uri: services.session_uri.clone(),
            provisioner_uri: services.provisioner_uri.clone(),
            nats: NatsConfig {
                url: services.nats.url(),
                token_file: None,
            },
            outbox: OutboxConfig::new(services.dir.path().join("proxy-outbox")),
            spool_dir: services.dir.path().join("spool"),
            auth: Default::default(),
            channels: Default::default(),
            start_timeout: Duration::from_secs(120),
            drain: Duration::from_secs(5),
            record_input: false,
            telemetry: Default::default(),
        };
        adjust(&mut proxy_config);
        // The host key exists before the client trusts it.
        k8shell_ssh_proxy::host_keys::load_or_generate(&proxy_config.host_key_dir).unwrap();
        let host_key =
            std::fs::read_to_string(proxy_config.host_key_dir.join("ssh_host_ed25519_key.pub"))
                .unwrap();
        let client = SshClient::new("127.0.0.1", ssh_addr.port(), &host_key).unwrap();
        std::fs::copy(
            services.keys.dir().join("admin"),
            client.dir().join("admin"),
        )
        .unwrap();
        let mut platform = Self {
            services,
            client,
            proxy_config,
            proxy: None,
            proxy_process: None,
        };
        platform.start_proxy(listener);
        platform
    }

    /// Starts the proxy on `listener`.
    pub fn start_proxy(&mut self, listener: tokio::net::TcpListener) {
        let shutdown = Shutdown::new();
        let (config, stop) = (self.proxy_config.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            k8shell_ssh_proxy::serve(config, listener, stop)
                .await
                .unwrap();
        });
        self.proxy = Some((shutdown, task));
    }

    /// Replaces the in-process proxy by the `k8shell-ssh-proxy` binary on the same port, with
    /// the same configuration written as a file (for measuring the proxy's own memory); returns
    /// its process id. It is killed with the platform.
    pub async fn run_proxy_binary(&mut self, binary: &Path) -> u32 {
        self.stop_proxy().await;
        let c = &self.proxy_config;
        let tls = format!(
            "cert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n",
            c.tls.cert_file, c.tls.key_file, c.tls.ca_file
        );
        let text = format!(
            "listen = \"{listen}\"\nhost_key_dir = {keys:?}\nidentity_uri = \"{identity}\"\n\
             authz_uri = \"{authz}\"\nsession_uri = \"{session}\"\n\
             provisioner_uri = \"{provisioner}\"\nspool_dir = {spool:?}\n\n\
             [tls]\n{tls}\n[nats]\nurl = \"{nats}\"\n\n[outbox]\ndir = {outbox:?}\n",
            listen = c.listen,
            keys = c.host_key_dir,
            identity = c.identity_uri,
            authz = c.authz_uri,
            session = c.session_uri,
            provisioner = c.provisioner_uri,
            spool = c.spool_dir,
            nats = c.nats.url,
            outbox = c.outbox.dir,
        );
        let file = self.dir.path().join("ssh-proxy.toml");
        std::fs::write(&file, text).unwrap();
        let child = std::process::Command::new(binary)
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let addr = c.listen;
        k8shell_testkit::poll_until("the ssh-proxy binary to listen", || async move {
            tokio::net::TcpStream::connect(addr).await.ok()
        })
        .await;
        let pid = child.id();
        self.proxy_process = Some(child);
        pid
    }

    /// Shuts the proxy down (it drains) and waits until it stopped.
    pub async fn stop_proxy(&mut self) {
        if let Some((shutdown, task)) = self.proxy.take() {
            shutdown.trigger();
            task.await.unwrap();
        }
    }

    /// A user (as a login would make one) with the client key named after them.
    pub async fn add_user(&self, name: &str) {
        let key = self.client.public_key(name).unwrap();
        self.services.add_user_with_key(name, &key).await;
    }

    /// The platform with user alice and her stopped workspace `default`.
    pub async fn with_alice() -> Self {
        let platform = Self::start().await;
        platform.add_user("alice").await;
        platform.create_workspace("alice", "default", "").await;
        platform
    }
}
