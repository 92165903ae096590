//! `k8shell`: the command line of k8shell.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{CommandFactory as _, Parser, Subcommand};

mod account;
mod admin;
mod api;
mod blueprint;
mod config_ssh;
mod login;
mod output;
mod sessions;
mod settings;
mod workspaces;

use output::Format;

/// k8shell: developer workspaces reached over SSH, the browser and this CLI.
#[derive(Debug, Parser)]
#[command(name = "k8shell", version, about)]
struct Cli {
    /// The k8shell API (saved by `login`).
    #[arg(long, global = true, env = "K8SHELL_URL", value_name = "URL")]
    url: Option<String>,
    /// An access or API token instead of the saved login.
    #[arg(
        long,
        global = true,
        env = "K8SHELL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Tables for people, JSON for scripts.
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign in: a code confirmed in a browser (default), the browser opened here, or an SSH key.
    Login {
        /// Open the browser here and come back to a local port.
        #[arg(long, conflicts_with = "ssh")]
        browser: bool,
        /// Sign the server's challenge with an SSH key: a key file, or ssh-agent's keys.
        #[arg(long, value_name = "KEY", num_args = 0..=1)]
        ssh: Option<Option<PathBuf>>,
        /// The user to sign in as with --ssh (default: $USER).
        #[arg(long)]
        user: Option<String>,
    },
    /// Forget the saved login.
    Logout,
    /// Who you are signed in as.
    Whoami,
    /// Your workspaces.
    #[command(subcommand)]
    Ws(workspaces::Command),
    /// Your SSH keys.
    #[command(subcommand)]
    Keys(account::KeysCommand),
    /// Your API tokens.
    #[command(subcommand)]
    Tokens(account::TokensCommand),
    /// Sessions, their timelines and recordings.
    #[command(subcommand)]
    Sessions(sessions::Command),
    /// Check, show and build workspace blueprints (Nickel files).
    #[command(subcommand)]
    Blueprint(BlueprintCommand),
    /// Write `Host <workspace>.k8shell` entries for your workspaces into ~/.ssh/config.
    ConfigSsh {
        /// Another SSH config file.
        #[arg(long, value_name = "FILE")]
        ssh_config: Option<PathBuf>,
        /// Remove the k8shell block.
        #[arg(long)]
        remove: bool,
        /// Print the result instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Users and the decision log (administrators).
    #[command(subcommand)]
    Admin(admin::Command),
    /// Shell completions: `k8shell completions bash > /etc/bash_completion.d/k8shell`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum BlueprintCommand {
    /// The example blueprints the server offers to `ws create --blueprint NAME`.
    Examples,
    /// Check blueprint files against the contract; exit status 1 if any is wrong.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show what a blueprint compiles to.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The WorkspaceSpec as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Build a blueprint's image and push it; nothing happens if the registry has it already.
    Build(blueprint::BuildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Blueprint(BlueprintCommand::Check { files }) => return blueprint::check(&files),
        Command::Blueprint(BlueprintCommand::Show { file, json }) => {
            return blueprint::show(&file, json);
        }
        Command::Blueprint(BlueprintCommand::Build(args)) => return blueprint::build(&args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "k8shell",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("k8shell: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("k8shell: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let saved = settings::load()?;
    let url = cli.url.clone().or(saved.url.clone()).ok_or_else(|| {
        anyhow!("which k8shell? set K8SHELL_URL or pass --url https://k8shell.example.com")
    })?;
    let format = cli.output;
    match cli.command {
        Command::Login { browser, ssh, user } => {
            let anonymous = api::Api::new(&url, None);
            let token = match ssh {
                Some(key) => {
                    let user = user
                        .or_else(|| std::env::var("USER").ok())
                        .context("give the user name with --user")?;
                    login::ssh(&anonymous, &user, key.as_deref()).await?
                }
                None => login::device(&anonymous, format, browser).await?,
            };
            let secret = token["token"]
                .as_str()
                .context("the server sent no token")?;
            settings::save_token(secret)?;
            let username = token["user"]["username"].as_str().map(str::to_owned);
            settings::save(&settings::Settings {
                url: Some(url.clone()),
                username: username.clone(),
            })?;
            account::done(
                format,
                serde_json::json!({"user": token["user"], "expires_at": token["expires_at"]}),
                &format!("signed in to {url} as {}", username.unwrap_or_default()),
            );
        }
        Command::Logout => {
            let forgot = settings::forget_token()?;
            account::done(
                format,
                serde_json::json!({"signed_out": forgot}),
                if forgot {
                    "signed out"
                } else {
                    "you were not signed in"
                },
            );
        }
        command => {
            let token = match cli.token {
                Some(token) => Some(token),
                None => {
                    // The saved login belongs to the server it was made with.
                    if let Some(saved_url) = &saved.url
                        && saved_url.trim_end_matches('/') != url.trim_end_matches('/')
                    {
                        return Err(anyhow!(
                            "your saved login is for {saved_url}, not {url}: run `k8shell login --url {url}` (or set K8SHELL_TOKEN)"
                        ));
                    }
                    settings::token()?
                }
            };
            let token = token.ok_or_else(|| {
                anyhow!("you are not signed in: run `k8shell login` (or set K8SHELL_TOKEN)")
            })?;
            let api = api::Api::new(&url, Some(token));
            match command {
                Command::Blueprint(BlueprintCommand::Examples) => {
                    let examples = api.get("/api/v1/blueprints").await?;
                    let rows = examples
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| vec![output::field(e, "name"), output::field(e, "description")])
                        .collect();
                    output::print(format, &examples, &["NAME", "DESCRIPTION"], rows);
                }
                Command::Whoami => {
                    let me = api.get("/api/v1/me").await?;
                    let user = &me["user"];
                    account::done(
                        format,
                        me.clone(),
                        &format!(
                            "{} ({}) on {url}, groups: {}",
                            output::field(user, "username"),
                            output::field(user, "email"),
                            user["groups"]
                                .as_array()
                                .map(|g| g
                                    .iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", "))
                                .unwrap_or_default()
                        ),
                    );
                }
                Command::Ws(command) => workspaces::run(&api, format, command).await?,
                Command::Keys(command) => account::keys(&api, format, command).await?,
                Command::Tokens(command) => account::tokens(&api, format, command).await?,
                Command::Sessions(command) => sessions::run(&api, format, command).await?,
                Command::Admin(command) => admin::run(&api, format, command).await?,
                Command::ConfigSsh {
                    ssh_config,
                    remove,
                    dry_run,
                } => config_ssh::run(&api, format, ssh_config, remove, dry_run).await?,
                Command::Login { .. }
                | Command::Logout
                | Command::Blueprint(_)
                | Command::Completions { .. } => {}
            }
        }
    }
    Ok(())
}

/// Calls `check` every second until it answers, for at most `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(answer) = check().await {
            return Some(answer);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
