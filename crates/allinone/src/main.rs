//! `k8shell-allinone`: the whole platform on this machine (see `--help`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use k8shell_allinone::{Base, Config, ExistingRegistry, OidcSettings};
use k8shell_common::shutdown::Shutdown;

/// Every k8shell service on this machine, with PostgreSQL, NATS and a registry of its own.
/// Needs root (workspaces are runc containers).
#[derive(Debug, Parser)]
#[command(name = "k8shell-allinone", version)]
struct Args {
    /// Where everything is kept (database, images, recordings, keys).
    #[arg(long, default_value = "./.k8shell")]
    state_dir: PathBuf,
    /// SSH listener.
    #[arg(long, default_value = "127.0.0.1:2222")]
    listen_ssh: SocketAddr,
    /// API and console listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen_api: SocketAddr,
    /// Where users reach the API (default: http://localhost:<API port>).
    #[arg(long)]
    public_url: Option<String>,
    /// Open the console sign-in link in a browser too.
    #[arg(long)]
    open: bool,
    /// The static k8shelld (default: next to this binary, or in
    /// target/x86_64-unknown-linux-gnu/<profile>/ beside it).
    #[arg(long)]
    k8shelld: Option<PathBuf>,
    /// The administrator's username (default: the user who ran sudo).
    #[arg(long)]
    admin: Option<String>,
    /// The administrator's public key files (default: their ~/.ssh/*.pub).
    #[arg(long = "admin-key")]
    admin_keys: Vec<PathBuf>,
    /// The default workspace's base image, made on this machine.
    #[arg(long, value_enum, default_value = "debian")]
    base: Base,
    /// Where the Debian root file system is cached (default: <state-dir>/base).
    #[arg(long)]
    base_cache: Option<PathBuf>,
    /// An OpenID Connect provider for users' logins (issuer URL).
    #[arg(long, requires_all = ["oidc_client_id", "oidc_client_secret_file"])]
    oidc_issuer: Option<String>,
    #[arg(long)]
    oidc_client_id: Option<String>,
    #[arg(long)]
    oidc_client_secret_file: Option<PathBuf>,
    /// The provider's CA certificate, if not a public one.
    #[arg(long)]
    oidc_ca_file: Option<PathBuf>,
    /// Email domains whose users may sign up (repeat).
    #[arg(long = "oidc-allowed-domain")]
    oidc_allowed_domains: Vec<String>,
    /// Groups whose users may sign up (repeat).
    #[arg(long = "oidc-allowed-group")]
    oidc_allowed_groups: Vec<String>,
    /// The workspaces' bridge address.
    #[arg(long, default_value = "10.213.0.1")]
    workspace_gateway: Ipv4Addr,
    /// Leave workspaces running when stopping.
    #[arg(long)]
    keep_workspaces: bool,
    /// Do not make a default workspace on the first start.
    #[arg(long)]
    no_default_workspace: bool,
    /// The Debian mirror the base image is made from.
    #[arg(long, default_value = k8shell_allinone::images::DEFAULT_MIRROR)]
    mirror: String,
    /// An existing registry (`host[:port][/path]`) instead of the one kept in the state
    /// directory.
    #[arg(long)]
    registry: Option<String>,
    /// Its credentials, as a docker-style auth.json.
    #[arg(long, requires = "registry")]
    registry_auth_file: Option<PathBuf>,
    /// It speaks plain HTTP (a lab registry on a trusted network).
    #[arg(long, requires = "registry")]
    registry_insecure: bool,
    /// How long SSH sessions and terminals may go on after Ctrl-C.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    drain: Duration,
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    let seconds = text.trim_end_matches('s');
    seconds
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a number of seconds (e.g. 5s)"))
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    // The api-server evaluates posted blueprints in a child of this binary (see
    // k8shell_api_server::evaluate), as `k8shell-api` does.
    let mut raw = std::env::args();
    if raw.nth(1).as_deref() == Some(k8shell_api_server::evaluate::ARGUMENT) {
        let file = raw.next().unwrap_or_else(|| "blueprint.ncl".to_owned());
        return Ok(k8shell_api_server::evaluate::child_main(&file));
    }
    let args = Args::parse();
    let config = config(args)?;
    serve(config)
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<std::process::ExitCode> {
    k8shell_common::tls::install_crypto_provider();
    let telemetry = k8shell_common::telemetry::TelemetryConfig {
        filter: "warn".to_owned(),
        ..Default::default()
    };
    let _telemetry = k8shell_common::telemetry::init("allinone", &telemetry)?;
    let shutdown = Shutdown::new();
    // A second Ctrl-C stops at once; otherwise the orderly stop (workspaces, services, then
    // the children, each waited for) has its time.
    shutdown.listen_for_signals(config.drain + Duration::from_secs(600))?;
    match k8shell_allinone::run(config, shutdown).await {
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
        Err(error) => {
            eprintln!("k8shell-allinone: {error}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

fn config(args: Args) -> anyhow::Result<Config> {
    let k8shelld = match args.k8shelld {
        Some(path) => path,
        None => default_k8shelld()?,
    };
    let oidc = match (
        args.oidc_issuer,
        args.oidc_client_id,
        args.oidc_client_secret_file,
    ) {
        (Some(issuer), Some(client_id), Some(client_secret_file)) => Some(OidcSettings {
            issuer,
            client_id,
            client_secret_file,
            ca_file: args.oidc_ca_file,
            allowed_email_domains: args.oidc_allowed_domains,
            allowed_groups: args.oidc_allowed_groups,
        }),
        _ => None,
    };
    Ok(Config {
        state_dir: args.state_dir,
        listen_ssh: args.listen_ssh,
        listen_api: args.listen_api,
        public_url: args.public_url,
        open: args.open,
        k8shelld,
        admin: args.admin,
        admin_keys: args.admin_keys,
        base: args.base,
        base_cache: args.base_cache,
        oidc,
        workspace_gateway: args.workspace_gateway,
        keep_workspaces: args.keep_workspaces,
        default_workspace: !args.no_default_workspace,
        drain: args.drain,
        mirror: args.mirror,
        registry: args.registry.map(|host| ExistingRegistry {
            host,
            auth_file: args.registry_auth_file,
            tls_verify: !args.registry_insecure,
        }),
    })
}

/// `k8shelld` beside this binary, or the static build of the same profile
/// (`target/<profile>/k8shell-allinone` → `target/x86_64-unknown-linux-gnu/<profile>/k8shelld`).
fn default_k8shelld() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(&exe);
    let mut candidates = vec![dir.join("k8shelld")];
    if let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) {
        candidates.insert(
            0,
            target
                .join("x86_64-unknown-linux-gnu")
                .join(profile)
                .join("k8shelld"),
        );
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "no static k8shelld next to {}: build it with\n    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu -p k8shell-k8shelld --bin k8shelld\nor pass --k8shelld PATH",
            exe.display()
        )
    })
}
