//! `k8shell admin …`: users and the decision log (what authz's `api` policy allows you).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use crate::api::{Api, encode};
use crate::output::{Format, field, print, when};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// The decision log, newest first.
    Decisions {
        /// Only denials.
        #[arg(long)]
        denied: bool,
        /// One domain: authentication, ssh, provision, api, onboarding.
        #[arg(long)]
        domain: Option<String>,
        /// Decisions about this user.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    Ls,
    /// Make an account (people from the OpenID provider get theirs at first login).
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Public key files to add with the account.
        #[arg(long = "key", value_name = "FILE.pub")]
        keys: Vec<PathBuf>,
    },
    /// Add a public key to a user.
    AddKey {
        username: String,
        #[arg(value_name = "FILE.pub")]
        file: PathBuf,
    },
    /// No more logins; their tokens stop working.
    Suspend {
        username: String,
    },
    Activate {
        username: String,
    },
}

pub async fn run(api: &Api, format: Format, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Users(UsersCommand::Ls) => {
            let listed = serde_json::Value::from(api.get_all("/api/v1/users?limit=1000").await?);
            let rows = listed
                .as_array()
                .into_iter()
                .flatten()
                .map(|u| {
                    let groups = u["groups"]
                        .as_array()
                        .map(|g| {
                            g.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![
                        field(u, "username"),
                        field(u, "state"),
                        groups,
                        field(u, "email"),
                        when(u, "last_login_at"),
                    ]
                })
                .collect();
            print(
                format,
                &listed,
                &["USER", "STATE", "GROUPS", "EMAIL", "LAST LOGIN"],
                rows,
            );
        }
        Command::Users(UsersCommand::Add {
            username,
            email,
            groups,
            keys,
        }) => {
            let keys = keys
                .iter()
                .map(|f| {
                    std::fs::read_to_string(f)
                        .map(|k| k.trim().to_owned())
                        .with_context(|| format!("reading {}", f.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let user = api
                .post(
                    "/api/v1/users",
                    json!({"username": username, "email": email.unwrap_or_default(),
                                               "groups": groups, "public_keys": keys}),
                )
                .await?;
            crate::account::done(format, user, &format!("created {username}"));
        }
        Command::Users(UsersCommand::AddKey { username, file }) => {
            let line = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let key = api
                .post(
                    &format!("/api/v1/users/{}/keys", encode(&username)),
                    json!({"public_key": line.trim()}),
                )
                .await?;
            let text = format!("added {} to {username}", field(&key, "fingerprint"));
            crate::account::done(format, key, &text);
        }
        Command::Users(UsersCommand::Suspend { username }) => {
            let user = api
                .post(
                    &format!("/api/v1/users/{}:suspend", encode(&username)),
                    json!({}),
                )
                .await?;
            crate::account::done(format, user, &format!("suspended {username}"));
        }
        Command::Users(UsersCommand::Activate { username }) => {
            let user = api
                .post(
                    &format!("/api/v1/users/{}:activate", encode(&username)),
                    json!({}),
                )
                .await?;
            crate::account::done(format, user, &format!("activated {username}"));
        }
        Command::Decisions {
            denied,
            domain,
            user,
            limit,
        } => {
            let mut path = format!("/api/v1/decisions?limit={limit}");
            if denied {
                path.push_str("&denied=true");
            }
            if let Some(domain) = domain {
                path.push_str(&format!("&domain={}", encode(&domain)));
            }
            if let Some(user) = user {
                path.push_str(&format!("&user={}", encode(&user)));
            }
            let listed = api.get(&path).await?;
            let rows = listed["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let who = d["input"]["user"]["username"]
                        .as_str()
                        .unwrap_or("-")
                        .to_owned();
                    let reasons = d["reasons"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    vec![
                        when(d, "at"),
                        field(d, "domain"),
                        who,
                        if d["allow"] == true { "allow" } else { "deny" }.to_owned(),
                        reasons,
                    ]
                })
                .collect();
            print(
                format,
                &listed["items"],
                &["AT", "DOMAIN", "USER", "DECISION", "REASONS"],
                rows,
            );
        }
    }
    Ok(())
}
