//! `k8shell-allinone`: the whole platform on one machine. Every service runs in this process
//! (as `crates/*`'s `serve` functions, wired over mTLS on loopback); PostgreSQL, nats-server
//! and the registry are children with their data in the state directory; workspaces are runc
//! containers of the local runtime. The first start bootstraps an administrator, base images
//! and a default workspace; later starts reuse all of it. Ctrl-C stops everything, in order.

mod bootstrap;
mod child;
pub mod images;
mod nats;
mod postgres;
mod registry;
mod services;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8shell_common::shutdown::Shutdown;
use k8shell_proto::provisioner::v1::provisioner_client::ProvisionerClient;
use tokio::net::TcpListener;

pub use images::Base;

/// How the platform starts.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub listen_ssh: SocketAddr,
    pub listen_api: SocketAddr,
    /// Where users reach the API and console; default `http://localhost:<api port>`.
    pub public_url: Option<String>,
    /// Open the console sign-in link in a browser (`xdg-open`) besides printing it.
    pub open: bool,
    /// The static k8shelld every workspace runs as PID 1.
    pub k8shelld: PathBuf,
    /// The administrator's username (default: the invoking user).
    pub admin: Option<String>,
    /// The administrator's public keys (default: `~/.ssh/*.pub`).
    pub admin_keys: Vec<PathBuf>,
    pub base: Base,
    /// Where the Debian root file system is cached (default `<state>/base`).
    pub base_cache: Option<PathBuf>,
    /// An OpenID provider for everyone else's logins.
    pub oidc: Option<OidcSettings>,
    /// The workspaces' bridge address (they are numbered after it in its /16).
    pub workspace_gateway: Ipv4Addr,
    /// Leave workspaces running on stop (they outlive the all-in-one).
    pub keep_workspaces: bool,
    /// Make the administrator's `default` workspace on the first start.
    pub default_workspace: bool,
    /// How long open SSH sessions and terminals may go on after Ctrl-C.
    pub drain: Duration,
    /// Where mmdebstrap fetches Debian from.
    pub mirror: String,
    /// An existing registry for images instead of the registry child.
    pub registry: Option<ExistingRegistry>,
}

/// A registry that already runs (Harbor, a company registry).
#[derive(Debug, Clone)]
pub struct ExistingRegistry {
    /// `host[:port][/path]`: images go under `<this>/k8shell/…`.
    pub host: String,
    /// A docker-style `auth.json` with its credentials.
    pub auth_file: Option<PathBuf>,
    /// Verify its TLS certificate (off only for a plain-HTTP registry on a trusted network).
    pub tls_verify: bool,
}

/// An OpenID Connect provider.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub allowed_email_domains: Vec<String>,
    pub allowed_groups: Vec<String>,
}

impl OidcSettings {
    fn identity_config(&self, public_url: &str) -> k8shell_identity::oidc::OidcConfig {
        k8shell_identity::oidc::OidcConfig {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret_file: Some(k8shell_common::config::SecretFile(
                self.client_secret_file.clone(),
            )),
            client_secret: None,
            redirect_uri: format!("{public_url}/api/v1/auth/callback"),
            ca_file: self.ca_file.clone(),
            scopes: ["openid", "email", "profile", "groups"]
                .map(str::to_owned)
                .to_vec(),
            groups_claim: "groups".to_owned(),
            allowed_email_domains: self.allowed_email_domains.clone(),
            allowed_groups: self.allowed_groups.clone(),
        }
    }
}

impl Config {
    /// The API's public URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let ip = self.listen_api.ip();
                let host = if ip.is_loopback() || ip.is_unspecified() {
                    "localhost".to_owned()
                } else {
                    ip.to_string()
                };
                format!("http://{host}:{}", self.listen_api.port())
            }
        }
    }

    /// `host:port` users type for SSH.
    pub fn ssh_address(&self) -> String {
        let ip = self.listen_ssh.ip();
        let host = if ip.is_loopback() || ip.is_unspecified() {
            let url = self.public_url();
            let authority = url.split_once("://").map_or(url.as_str(), |(_, a)| a);
            let authority = authority.split('/').next().unwrap_or(authority);
            match authority.rsplit_once(':') {
                Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
                _ => authority.to_owned(),
            }
        } else {
            ip.to_string()
        };
        format!("{host}:{}", self.listen_ssh.port())
    }

    /// `Secure` cookies, except for plain HTTP off localhost (browsers drop them there).
    fn secure_cookies(&self) -> bool {
        let url = self.public_url();
        if url.starts_with("https://") {
            return true;
        }
        let authority = url.split_once("://").map_or(url.as_str(), |(_, a)| a);
        let authority = authority.split('/').next().unwrap_or(authority);
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// Browsers reach a listener off loopback by a name the server cannot guess.
    fn check_public_url(&self) -> Result<(), Error> {
        let ip = self.listen_api.ip();
        if self.public_url.is_none() && !ip.is_loopback() {
            return Err(Error::Setup {
                what: format!("listening on {} for the API and console", self.listen_api),
                detail: format!(
                    "say how browsers reach it: --public-url http://<this machine's name>:{} (or https:// behind a proxy)",
                    self.listen_api.port()
                ),
            });
        }
        Ok(())
    }
}

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "k8shell-allinone runs workspaces with runc, network namespaces and nftables, so it needs root: run it with sudo (scripts/up does)"
    )]
    NotRoot,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },
    #[error(
        "`{program}` is missing: install it with `sudo apt-get install -y {package}` (scripts/setup does)"
    )]
    Missing { program: String, package: String },
    #[error(
        "another k8shell-allinone (PID {pid}) is using {}: stop it first (Ctrl-C in its terminal), or pass another --state-dir",
        dir.display()
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("cannot listen on {addr} for {what}: {source}; choose another address with {flag}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    fn setup(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::Setup {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// Lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Two different free TCP ports on loopback (both held while choosing).
fn free_ports() -> Result<[u16; 2], Error> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e))
    };
    let (a, b) = (bind()?, bind()?);
    let port = |l: &std::net::TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| Error::io("finding a free port", e))
    };
    Ok([port(&a)?, port(&b)?])
}

/// 32 random bytes, URL-safe base64: passwords and codes.
fn random_token() -> Result<String, Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::setup("drawing a secret", "no randomness available"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The children, stopped in reverse order of start.
#[derive(Debug, Default)]
struct Children {
    postgres: Option<postgres::Postgres>,
    nats: Option<nats::Nats>,
    registry: Option<registry::Registry>,
}

impl Children {
    async fn stop(&mut self) {
        if let Some(registry) = self.registry.take() {
            registry.stop().await;
        }
        if let Some(nats) = self.nats.take() {
            nats.stop().await;
        }
        if let Some(postgres) = self.postgres.take() {
            postgres.stop().await;
        }
    }
}

/// Starts everything, serves until `shutdown`, and stops everything.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let started = Instant::now();
    let bind = |what: &'static str, addr: SocketAddr, flag: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                what,
                addr,
                flag,
                source,
            })
    };
    config.check_public_url()?;
    // The lock first: a second start on the same state is told so, not that a port is taken.
    let (mut state, unclean) = state::StateDir::open(&config.state_dir)?;
    let api_listener = bind("the API and console", config.listen_api, "--listen-api").await?;
    let ssh_listener = bind("SSH", config.listen_ssh, "--listen-ssh").await?;
    println!("k8shell: state in {}", state.root().display());
    if let Some(pid) = unclean {
        println!("  the previous run (PID {pid}) did not stop cleanly; recovering");
    }
    let mut children = Children::default();
    let outcome = serve(
        &config,
        &state,
        &mut children,
        (api_listener, ssh_listener),
        &shutdown,
        started,
    )
    .await;
    children.stop().await;
    state.mark_clean();
    outcome
}

async fn serve(
    config: &Config,
    state: &state::StateDir,
    children: &mut Children,
    (api_listener, ssh_listener): (TcpListener, TcpListener),
    shutdown: &Shutdown,
    started: Instant,
) -> Result<(), Error> {
    let mut settings = state.settings(|| {
        // Below the ephemeral range, so that a client's port never takes it later.
        let registry_port = (5000..5100)
            .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .ok_or_else(|| {
                Error::setup(
                    "choosing the registry's port",
                    "5000 to 5099 are all taken on 127.0.0.1",
                )
            })?;
        Ok(state::Settings {
            registry_port,
            registry_password: random_token()?,
            default_workspace_made: false,
        })
    })?;
    let postgres = children
        .postgres
        .insert(postgres::Postgres::start(state).await?);
    let database_url = postgres.url.clone();
    let nats = children
        .nats
        .insert(nats::Nats::start(state).await?)
        .config
        .clone();
    let registry = match &config.registry {
        Some(existing) => registry::RegistryAccess {
            host: existing.host.trim_end_matches('/').to_owned(),
            tls_verify: existing.tls_verify,
            auth_file: existing.auth_file.clone(),
        },
        None => children
            .registry
            .insert(registry::Registry::start(state, &settings).await?)
            .access
            .clone(),
    };
    println!(
        "  PostgreSQL, NATS and the registry are up ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    let storage = state.dir("buildah")?;
    let busybox = images::ensure_busybox(&registry, &storage)?;
    let default_base = match config.base {
        Base::Debian => {
            let cache = config
                .base_cache
                .clone()
                .unwrap_or_else(|| state.path("base"));
            images::ensure_debian(&registry, &storage, &cache, &config.mirror)?
        }
        Base::Busybox => busybox.clone(),
    };
    let blueprint_dir = state.dir("blueprints")?;
    images::write_blueprints(
        &blueprint_dir,
        &default_base,
        &busybox,
        config.base == Base::Debian,
    )?;

    let admin = bootstrap::admin(config)?;
    for note in &admin.notes {
        println!("  note: {note}");
    }
    let (offer, code) = bootstrap::one_time_login(&admin.username)?;
    let mut services = services::Services::start(services::Inputs {
        config,
        state,
        database_url,
        nats,
        registry,
        blueprint_dir: blueprint_dir.clone(),
        admin: admin.bootstrap(),
        one_time_login: offer,
        api_listener,
        ssh_listener,
    })
    .await?;
    let refresher = Shutdown::new();
    services.keep_jwks_fresh(refresher.clone());
    let mut provisioner = ProvisionerClient::new(services.channel(&services.provisioner_uri)?);
    let ready = async {
        wait_for_provisioner(&mut provisioner).await?;
        if config.default_workspace && !settings.default_workspace_made {
            let source = std::fs::read_to_string(blueprint_dir.join("default.ncl"))
                .map_err(|e| Error::io("reading the default blueprint", e))?;
            bootstrap::default_workspace(&mut provisioner, &admin.username, &source)
                .await
                .map_err(|e| match e {
                    Error::Setup { what, detail } => Error::Setup {
                        what,
                        detail: format!(
                            "{detail}\n(start without it with --no-default-workspace, or with the busybox base: --base busybox)"
                        ),
                    },
                    other => other,
                })?;
            settings.default_workspace_made = true;
            state.save(&settings)?;
        }
        Ok::<(), Error>(())
    };
    let outcome = tokio::select! {
        outcome = ready => outcome,
        () = shutdown.triggered() => Ok(()),
    };
    if outcome.is_ok() && !shutdown.is_triggered() {
        print_welcome(config, state, &admin, &code, started);
        tokio::select! {
            () = shutdown.triggered() => {}
            name = services.stopped_on_its_own() => {
                eprintln!("k8shell: {name} stopped unexpectedly; stopping everything (the log above says why)");
            }
        }
    }
    println!("k8shell: stopping");
    refresher.trigger();
    let keep = config.keep_workspaces;
    services
        .stop(async move {
            if !keep {
                bootstrap::stop_workspaces(&mut provisioner, Duration::from_secs(60)).await;
            }
        })
        .await;
    if outcome.is_ok() {
        println!(
            "k8shell: stopped; workspaces, homes and settings stay in {} for the next start",
            state.root().display()
        );
    }
    outcome
}

async fn wait_for_provisioner(
    provisioner: &mut ProvisionerClient<tonic::transport::Channel>,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        match provisioner
            .list(k8shell_proto::provisioner::v1::ListRequest::default())
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) if start.elapsed() > Duration::from_secs(120) => {
                return Err(Error::setup(
                    "waiting for the provisioner",
                    status.message(),
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn print_welcome(
    config: &Config,
    state: &state::StateDir,
    admin: &bootstrap::Admin,
    code: &str,
    started: Instant,
) {
    let url = config.public_url();
    let ssh = config.ssh_address();
    let (host, port) = ssh.rsplit_once(':').unwrap_or((ssh.as_str(), "2222"));
    let ssh_command = if port == "22" {
        format!("ssh {}@{host}", admin.username)
    } else {
        format!("ssh -p {port} {}@{host}", admin.username)
    };
    let once = format!("{url}/login/once?code={code}");
    println!();
    println!(
        "k8shell is ready ({:.1} s).",
        started.elapsed().as_secs_f64()
    );
    println!();
    if admin.keys.is_empty() {
        println!(
            "  SSH:      add a key first (ssh-keygen -t ed25519), start again, then: {ssh_command}"
        );
    } else {
        println!("  SSH:      {ssh_command}");
        let files: Vec<String> = admin
            .key_files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        println!(
            "            (as {}, with {})",
            admin.username,
            files.join(", ")
        );
    }
    for line in host_key_lines(state) {
        println!("            host key {line}");
    }
    println!("  Console:  {url}");
    println!("            sign in once, without a password: {once}");
    println!("  CLI:      K8SHELL_URL={url} k8shell login --ssh");
    println!();
    println!("  Logs: {}  ·  stop: Ctrl-C", state.path("logs").display());
    // Under sudo there is rarely a display to open a browser on; then the link above is all.
    let display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if config.open {
        let opened = display
            && child::find_program("xdg-open", &[]).is_some_and(|xdg| {
                std::process::Command::new(xdg)
                    .arg(&once)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .is_ok()
            });
        if !opened {
            println!("  (--open: no browser here to open; use the sign-in link above)");
        }
    }
}

/// `SHA256:… (ED25519)` for each host key, for the first `ssh` prompt.
fn host_key_lines(state: &state::StateDir) -> Vec<String> {
    let dir = state.path("ssh-proxy/host-keys");
    let mut lines = Vec::new();
    for name in ["ssh_host_ed25519_key.pub", "ssh_host_ecdsa_key.pub"] {
        let Ok(out) = std::process::Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(dir.join(name))
            .output()
        else {
            continue;
        };
        if out.status.success() {
            // "256 SHA256:… comment (ED25519)"
            let text = String::from_utf8_lossy(&out.stdout);
            let mut words = text.split_whitespace();
            if let (Some(_), Some(fingerprint)) = (words.next(), words.next()) {
                let kind = text.split_whitespace().last().unwrap_or_default();
                lines.push(format!("{fingerprint} {kind}"));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api: &str, ssh: &str, public: Option<&str>) -> Config {
        Config {
            state_dir: PathBuf::from(".k8shell"),
            listen_ssh: ssh
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 2222))),
            listen_api: api
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: public.map(str::to_owned),
            open: false,
            k8shelld: PathBuf::from("k8shelld"),
            admin: None,
            admin_keys: Vec::new(),
            base: Base::Busybox,
            base_cache: None,
            oidc: None,
            workspace_gateway: Ipv4Addr::new(10, 213, 0, 1),
            keep_workspaces: false,
            default_workspace: true,
            drain: Duration::from_secs(5),
            mirror: images::DEFAULT_MIRROR.to_owned(),
            registry: None,
        }
    }

    #[test]
    fn addresses_users_type_follow_the_listeners_and_the_public_url() {
        let local = config("127.0.0.1:8080", "127.0.0.1:2222", None);
        assert_eq!(local.public_url(), "http://localhost:8080");
        assert_eq!(local.ssh_address(), "localhost:2222");
        assert!(local.secure_cookies());
        let exposed = config(
            "10.77.0.1:8080",
            "10.77.0.1:2222",
            Some("http://10.77.0.1:8080/"),
        );
        assert_eq!(exposed.public_url(), "http://10.77.0.1:8080");
        assert_eq!(exposed.ssh_address(), "10.77.0.1:2222");
        assert!(
            !exposed.secure_cookies(),
            "browsers drop Secure cookies on plain HTTP"
        );
        let behind = config(
            "0.0.0.0:8080",
            "0.0.0.0:22",
            Some("https://dev.example.com"),
        );
        assert_eq!(behind.ssh_address(), "dev.example.com:22");
        assert!(behind.secure_cookies());
        let lookalike = config(
            "127.0.0.1:8080",
            "127.0.0.1:2222",
            Some("http://localhost.example.com"),
        );
        assert!(!lookalike.secure_cookies());
        assert!(behind.check_public_url().is_ok());
        let unnamed = config("0.0.0.0:8080", "0.0.0.0:2222", None);
        assert!(
            unnamed.check_public_url().is_err(),
            "browsers cannot reach 0.0.0.0"
        );
    }
}
