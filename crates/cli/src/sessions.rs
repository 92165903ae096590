//! `k8shell sessions …`: who was in which workspace, the timeline, ending a session, and
//! replaying a terminal recording with its original timing.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use crate::api::{Api, encode};
use crate::output::{Format, field, print, when};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List sessions (yours; `--user` someone's or `*`, with the right to see them).
    Ls {
        #[arg(long)]
        user: Option<String>,
        /// Only live sessions.
        #[arg(long)]
        live: bool,
        /// Only sessions of this workspace (name or id).
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A session with its timeline.
    Show { id: String },
    /// End a live session (the user is told why).
    Kill {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replay a session's terminal recording here, with its original timing.
    Replay {
        id: String,
        /// Faster (2) or slower (0.5).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Start this many seconds in.
        #[arg(long, default_value_t = 0.0)]
        from: f64,
        /// Longest pause kept, in seconds (idle time is cut).
        #[arg(long, default_value_t = 2.0)]
        max_pause: f64,
    },
}

pub async fn run(api: &Api, format: Format, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ls {
            user,
            live,
            workspace,
            limit,
        } => {
            let mut path = format!("/api/v1/sessions?limit={limit}");
            if let Some(user) = user {
                path.push_str(&format!("&user={}", encode(&user)));
            }
            if live {
                path.push_str("&live=true");
            }
            if let Some(workspace) = workspace {
                let id = crate::workspaces::find(api, &workspace).await?["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                path.push_str(&format!("&workspace_id={id}"));
            }
            let listed = api.get(&path).await?;
            let rows = listed["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    vec![
                        field(s, "id"),
                        field(s, "username"),
                        field(s, "workspace"),
                        field(s, "kind"),
                        field(s, "client_addr"),
                        when(s, "started_at"),
                        if s["live"] == true {
                            "live".to_owned()
                        } else {
                            field(s, "end_reason")
                        },
                    ]
                })
                .collect();
            print(
                format,
                &listed["items"],
                &[
                    "ID",
                    "USER",
                    "WORKSPACE",
                    "KIND",
                    "FROM",
                    "STARTED",
                    "STATE",
                ],
                rows,
            );
        }
        Command::Show { id } => {
            let details = api
                .get(&format!("/api/v1/sessions/{}", encode(&id)))
                .await?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&details)?);
                return Ok(());
            }
            let s = &details["session"];
            for (label, value) in [
                ("id", field(s, "id")),
                ("user", field(s, "username")),
                ("workspace", field(s, "workspace")),
                ("kind", field(s, "kind")),
                (
                    "from",
                    format!(
                        "{} ({})",
                        field(s, "client_addr"),
                        field(s, "client_version")
                    ),
                ),
                ("started", when(s, "started_at")),
                ("ended", when(s, "ended_at")),
                ("reason", field(s, "end_reason")),
                (
                    "bytes in/out",
                    format!("{}/{}", field(s, "bytes_in"), field(s, "bytes_out")),
                ),
            ] {
                println!("{label:<13} {value}");
            }
            println!();
            let rows = details["timeline"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        when(e, "at"),
                        field(e, "kind"),
                        field(e, "channel"),
                        e["data"].to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            print!(
                "{}",
                crate::output::table(&["AT", "EVENT", "CHANNEL", "DETAILS"], &rows)
            );
            for r in details["recordings"].as_array().into_iter().flatten() {
                println!(
                    "recording {} ({} s): k8shell sessions replay {}",
                    field(r, "id"),
                    field(r, "duration"),
                    field(s, "id")
                );
            }
        }
        Command::Kill { id, reason } => {
            let answer = api
                .post(
                    &format!("/api/v1/sessions/{}:terminate", encode(&id)),
                    json!({"reason": reason}),
                )
                .await?;
            let text = if answer["delivered"] == true {
                format!("ended {id}")
            } else {
                format!("{id} had already ended")
            };
            crate::account::done(format, answer, &text);
        }
        Command::Replay {
            id,
            speed,
            from,
            max_pause,
        } => {
            if !(speed > 0.0 && speed.is_finite()) {
                bail!("--speed must be more than 0 (2 is twice as fast)");
            }
            let details = api
                .get(&format!("/api/v1/sessions/{}", encode(&id)))
                .await?;
            let recording = details["recordings"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["kind"] == "pty")
                .ok_or_else(|| {
                    anyhow!("session {id} has no terminal recording (only terminals are recorded)")
                })?;
            let path = format!("/api/v1/recordings/{}?from={from}", field(recording, "id"));
            replay(api, &path, speed, from, max_pause).await?;
        }
    }
    Ok(())
}

/// Plays an asciicast v2 stream: output events written with their timing.
async fn replay(
    api: &Api,
    path: &str,
    speed: f64,
    from: f64,
    max_pause: f64,
) -> anyhow::Result<()> {
    let mut body = api.stream(path).await?;
    let mut pending = Vec::new();
    let mut last = from;
    let mut header_seen = false;
    let mut stdout = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the recording")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if !header_seen {
                header_seen = true;
                continue;
            }
            let Ok(Value::Array(event)) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let (Some(at), Some(code), Some(text)) = (
                event.first().and_then(Value::as_f64),
                event.get(1).and_then(Value::as_str),
                event.get(2).and_then(Value::as_str),
            ) else {
                continue;
            };
            if code != "o" || at < from {
                continue;
            }
            let pause = ((at - last).min(max_pause) / speed).max(0.0);
            last = at;
            if pause > 0.0005 {
                stdout.flush()?;
                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
            }
            stdout.write_all(text.as_bytes())?;
        }
    }
    stdout.flush()?;
    Ok(())
}
