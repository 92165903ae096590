//! `k8shell ws …`: a user's workspaces.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::api::{Api, encode};
use crate::output::{Format, Spinner, field, print, when};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List your workspaces (`--all` for everyone's, administrators).
    Ls {
        #[arg(long)]
        all: bool,
    },
    /// Create a workspace from an example blueprint or a Nickel file, and wait until it runs.
    Create {
        /// A DNS label, unique among your workspaces; `default` is what `ssh you@host` enters.
        name: String,
        /// An example blueprint (`k8shell blueprint examples` lists them).
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        blueprint: Option<String>,
        /// A blueprint file.
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// Create it stopped.
        #[arg(long)]
        stopped: bool,
        /// Return at once instead of waiting until it runs.
        #[arg(long)]
        no_wait: bool,
    },
    /// Start a workspace and wait until it runs.
    Start { name: String },
    /// Stop a workspace (its home is kept).
    Stop { name: String },
    /// Delete a workspace and its home.
    Rm {
        name: String,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// Everything about a workspace.
    Info { name: String },
    /// SSH into a workspace with OpenSSH (extra arguments go to ssh).
    Ssh {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub async fn run(api: &Api, format: Format, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ls { all } => {
            let path = if all {
                "/api/v1/workspaces?owner=*&limit=1000"
            } else {
                "/api/v1/workspaces?limit=1000"
            };
            let items = api.get_all(path).await?;
            let rows = items
                .iter()
                .map(|w| {
                    vec![
                        field(w, "name"),
                        field(w, "owner"),
                        field(w, "state"),
                        field(w, "blueprint"),
                        when(w, "last_activity_at"),
                        field(w, "ssh_command"),
                    ]
                })
                .collect();
            if format == Format::Table && items.is_empty() {
                eprintln!(
                    "no workspaces yet: create one with `k8shell ws create default --blueprint debian`"
                );
            }
            print(
                format,
                &Value::from(items.clone()),
                &["NAME", "OWNER", "STATE", "BLUEPRINT", "ACTIVE", "SSH"],
                rows,
            );
        }
        Command::Create {
            name,
            blueprint,
            file,
            stopped,
            no_wait,
        } => {
            let mut body = json!({"name": name, "stopped": stopped});
            match (blueprint, file) {
                (Some(example), _) => body["blueprint"] = json!(example),
                (None, Some(file)) => {
                    let source = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    body["blueprint_source"] = json!(source);
                    body["blueprint_file"] =
                        json!(file.file_name().map(|n| n.to_string_lossy().into_owned()));
                }
                (None, None) => bail!("give --blueprint NAME or --file FILE"),
            }
            let created = api.post("/api/v1/workspaces", body).await?;
            let created = if stopped || no_wait {
                created
            } else {
                wait_for(api, format, &created, "running").await?
            };
            show(format, &created);
        }
        Command::Start { name } => {
            let workspace = find(api, &name).await?;
            let id = field(&workspace, "id");
            let started = api
                .post(&format!("/api/v1/workspaces/{id}:start"), json!({}))
                .await?;
            show(format, &wait_for(api, format, &started, "running").await?);
        }
        Command::Stop { name } => {
            let workspace = find(api, &name).await?;
            let id = field(&workspace, "id");
            let stopping = api
                .post(&format!("/api/v1/workspaces/{id}:stop"), json!({}))
                .await?;
            show(format, &wait_for(api, format, &stopping, "stopped").await?);
        }
        Command::Rm { name, yes } => {
            let workspace = find(api, &name).await?;
            if !yes
                && !confirm(&format!(
                    "Delete workspace {name} and everything in its home?"
                ))?
            {
                bail!("nothing deleted");
            }
            let id = field(&workspace, "id");
            api.delete(&format!("/api/v1/workspaces/{id}")).await?;
            let spinner = Spinner::start(format, &format!("deleting {name}…"));
            let gone = crate::poll(Duration::from_secs(300), || async {
                match api.get(&format!("/api/v1/workspaces/{id}")).await {
                    Err(e)
                        if e.downcast_ref::<crate::api::ApiError>()
                            .is_some_and(|e| e.status == 404) =>
                    {
                        Some(Ok(()))
                    }
                    Err(e) => Some(Err(e)),
                    Ok(_) => None,
                }
            })
            .await;
            spinner.finish().await;
            gone.ok_or_else(|| {
                anyhow!("{name} is still being deleted; `k8shell ws ls` shows when it is gone")
            })??;
            if format == Format::Json {
                println!("{}", json!({"deleted": name}));
            } else {
                println!("deleted {name}");
            }
        }
        Command::Info { name } => show(format, &find(api, &name).await?),
        Command::Ssh { name, args } => {
            let workspace = find(api, &name).await?;
            let command = field(&workspace, "ssh_command");
            // Only a port and a destination are taken from the server's answer, never options.
            let (login, host, port) = crate::config_ssh::parse_ssh_command(&command)
                .ok_or_else(|| anyhow!("the API gave {name} no usable SSH command: {command:?}"))?;
            if login.starts_with('-') || host.starts_with('-') {
                bail!("the API gave {name} a suspicious SSH destination: {command:?}");
            }
            let mut words = vec!["-p".to_owned(), port.to_string(), format!("{login}@{host}")];
            words.extend(args);
            let error = exec_ssh(&words);
            bail!("cannot run ssh: {error}; install OpenSSH's client");
        }
    }
    Ok(())
}

fn exec_ssh(args: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    std::process::Command::new("ssh").args(args).exec()
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        bail!("{question} Pass --yes to confirm without a terminal");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// One of your workspaces by name (or by id).
pub async fn find(api: &Api, name: &str) -> anyhow::Result<Value> {
    if uuid_like(name) {
        return api
            .get(&format!("/api/v1/workspaces/{}", encode(name)))
            .await;
    }
    let items = api.get_all("/api/v1/workspaces?limit=1000").await?;
    items
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = items.iter().map(|w| field(w, "name")).collect();
            anyhow!(
                "you have no workspace {name:?}{}",
                if names.is_empty() {
                    "; create one with `k8shell ws create`".to_owned()
                } else {
                    format!(" (yours: {})", names.join(", "))
                }
            )
        })
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

/// Waits until the workspace is in `state`, with a spinner; fails on `failed`.
async fn wait_for(
    api: &Api,
    format: Format,
    workspace: &Value,
    state: &str,
) -> anyhow::Result<Value> {
    let id = field(workspace, "id");
    let name = field(workspace, "name");
    let spinner = Spinner::start(format, &format!("waiting for {name} to be {state}…"));
    let result = crate::poll(Duration::from_secs(600), || async {
        match api.get(&format!("/api/v1/workspaces/{id}")).await {
            Ok(w) if w["state"] == state => Some(Ok(w)),
            Ok(w) if w["state"] == "failed" => {
                Some(Err(anyhow!("{name} failed: {}", field(&w, "reason"))))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    })
    .await;
    spinner.finish().await;
    result.ok_or_else(|| {
        anyhow!("{name} is not {state} after 10 minutes; `k8shell ws info {name}` says why")
    })?
}

fn show(format: Format, w: &Value) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(w).unwrap_or_default());
        return;
    }
    let resources = &w["spec"]["resources"];
    let lines = [
        ("name", field(w, "name")),
        ("owner", field(w, "owner")),
        ("id", field(w, "id")),
        ("state", field(w, "state")),
        ("reason", field(w, "reason")),
        ("blueprint", field(w, "blueprint")),
        ("image", field(w, "image")),
        ("cpu (millicores)", field(resources, "cpu_millis")),
        ("memory (bytes)", field(resources, "memory_bytes")),
        ("idle timeout (s)", field(w, "idle_timeout_seconds")),
        ("created", when(w, "created_at")),
        ("last activity", when(w, "last_activity_at")),
        ("ssh", field(w, "ssh_command")),
    ];
    for (label, value) in lines {
        println!("{label:<17} {value}");
    }
    for warning in w["warnings"].as_array().into_iter().flatten() {
        println!("warning           {}", warning.as_str().unwrap_or_default());
    }
}
