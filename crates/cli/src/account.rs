//! `k8shell keys …` and `k8shell tokens …`: your SSH keys and API tokens.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;

use crate::api::{Api, encode};
use crate::output::{Format, field, print, when};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a public key (default: every ~/.ssh/*.pub).
    Add {
        #[arg(value_name = "FILE.pub")]
        files: Vec<PathBuf>,
    },
    /// List your keys.
    Ls,
    /// Remove a key by fingerprint (`SHA256:…`, as `keys ls` shows it).
    Rm { fingerprint: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a personal API token for automation (shown once).
    Create {
        /// What it is for.
        name: String,
        /// Lifetime, e.g. `30d`, `12h` (default: the server's maximum).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// List your tokens.
    Ls,
    /// Revoke a token by id.
    Revoke { id: String },
}

pub async fn keys(api: &Api, format: Format, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Add { files } => {
            let files = if files.is_empty() {
                default_keys()?
            } else {
                files
            };
            let mut added = Vec::new();
            for file in files {
                let line = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let key = api
                    .post("/api/v1/keys", json!({"public_key": line.trim()}))
                    .await
                    .with_context(|| format!("adding {}", file.display()))?;
                added.push(key);
            }
            let rows = added
                .iter()
                .map(|k| vec![field(k, "fingerprint"), field(k, "comment")])
                .collect();
            print(format, &json!(added), &["ADDED", "COMMENT"], rows);
        }
        KeysCommand::Ls => {
            let keys = api.get("/api/v1/keys").await?;
            let rows = keys
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    vec![
                        field(k, "fingerprint"),
                        field(k, "key_type"),
                        field(k, "comment"),
                        when(k, "last_used_at"),
                    ]
                })
                .collect();
            print(
                format,
                &keys,
                &["FINGERPRINT", "TYPE", "COMMENT", "LAST USED"],
                rows,
            );
        }
        KeysCommand::Rm { fingerprint } => {
            api.delete(&format!("/api/v1/keys/{}", encode(&fingerprint)))
                .await?;
            done(
                format,
                json!({"removed": fingerprint}),
                &format!("removed {fingerprint}"),
            );
        }
    }
    Ok(())
}

fn default_keys() -> anyhow::Result<Vec<PathBuf>> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join(".ssh"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("no ~/.ssh/*.pub: make a key with `ssh-keygen -t ed25519` or name the file");
    }
    Ok(found)
}

pub async fn tokens(api: &Api, format: Format, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { name, ttl } => {
            let made = api
                .post(
                    "/api/v1/tokens",
                    json!({"name": name, "ttl_seconds": ttl.map(|t| t.as_secs())}),
                )
                .await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&made)?);
            } else {
                println!("{}", field(&made, "secret"));
                eprintln!(
                    "This is the only time the token is shown. Use it as `Authorization: Bearer <token>` or K8SHELL_TOKEN; it expires {}.",
                    when(&made["token"], "expires_at")
                );
            }
        }
        TokensCommand::Ls => {
            let tokens = api.get("/api/v1/tokens").await?;
            let rows = tokens
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let state = if !t["revoked_at"].is_null() {
                        "revoked"
                    } else {
                        "active"
                    };
                    vec![
                        field(t, "id"),
                        field(t, "name"),
                        field(t, "prefix"),
                        state.to_owned(),
                        when(t, "expires_at"),
                    ]
                })
                .collect();
            print(
                format,
                &tokens,
                &["ID", "NAME", "PREFIX", "STATE", "EXPIRES"],
                rows,
            );
        }
        TokensCommand::Revoke { id } => {
            api.delete(&format!("/api/v1/tokens/{}", encode(&id)))
                .await?;
            done(format, json!({"revoked": id}), &format!("revoked {id}"));
        }
    }
    Ok(())
}

pub fn done(format: Format, value: serde_json::Value, text: &str) {
    if format == Format::Json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}
