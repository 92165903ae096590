//! A `session` channel: its requests (pty-req, env, then shell, exec or the sftp subsystem), then
//! one k8shelld stream carrying it both ways, and the end in sshd's order: output, EOF,
//! exit-status or exit-signal, CLOSE.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use k8shell_proto::k8shelld::v1 as kpb;
use k8shell_proto::k8shelld::v1::workspace_client::WorkspaceClient;
use k8shell_session::asciicast::Header;
use k8shell_session::{Recording, RecordingKind};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connection::Shared;
use crate::inbound::{self, Step};
use crate::sftp_log::SftpLog;
use crate::signals;
use crate::workspace::Attachment;

/// Messages to k8shelld queued per channel (each at most one SSH packet).
const TO_WORKSPACE: usize = 8;

/// Environment variables every client may set.
const ENV_ALWAYS: &[&str] = &["LANG", "TERM", "COLORTERM"];

/// Whether the client may set `name` (LANG, LC_*, TERM, COLORTERM and the configured names).
pub fn env_allowed(name: &str, configured: &[String]) -> bool {
    ENV_ALWAYS.contains(&name)
        || (name.starts_with("LC_") && name.len() > 3)
        || configured.iter().any(|c| c == name)
}

/// The terminal a client asked for.
#[derive(Debug, Clone)]
struct Terminal {
    term: String,
    size: kpb::WindowSize,
    modes: Vec<u8>,
}

/// What the channel runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    Shell,
    Exec(String),
    Sftp,
}

impl Start {
    /// The request as the ssh policy names it.
    fn request(&self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Exec(_) => "exec",
            Self::Sftp => "sftp",
        }
    }
}

/// Runs one session channel to its end.
pub async fn run(channel: Channel<Msg>, shared: Arc<Shared>) {
    let id = channel.id();
    let number = u32::from(id);
    let (mut rx, tx) = channel.split();
    // The requests before the channel starts; the handler has already answered them.
    let mut terminal: Option<Terminal> = None;
    let mut env = HashMap::new();
    let start = loop {
        match rx.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
                ..
            }) if terminal.is_none() => {
                let mut modes = Vec::with_capacity(terminal_modes.len() * 5);
                for (code, value) in terminal_modes {
                    modes.push(code as u8);
                    modes.extend_from_slice(&value.to_be_bytes());
                }
                terminal = Some(Terminal {
                    term,
                    size: kpb::WindowSize {
                        cols: col_width,
                        rows: row_height,
                        width_px: pix_width,
                        height_px: pix_height,
                    },
                    modes,
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) if env_allowed(&variable_name, &shared.proxy.config.channels.env_allow) => {
                env.insert(variable_name, variable_value);
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(terminal) = &mut terminal {
                    terminal.size.cols = col_width;
                    terminal.size.rows = row_height;
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => break Start::Sftp,
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let ends = Ends { tx: &tx, id };
    let Some(attachment) = shared.wait_ready(&ends, terminal.is_some()).await else {
        return;
    };
    let verdict = match &start {
        // Entering was decided at login.
        Start::Shell => None,
        other => Some(
            shared
                .proxy
                .decide_ssh(&attachment.user, &attachment.workspace, other.request())
                .await,
        ),
    };
    if let Some(verdict) = &verdict {
        attachment.event(
            "decision",
            number,
            json!({"domain": "ssh", "request": start.request(), "allow": verdict.allow,
                   "decision_id": verdict.decision_id}),
        );
        if !verdict.allow {
            ends.fail(&format!("denied: {}", verdict.reasons.join("; ")))
                .await;
            return;
        }
    }
    let bearer = match attachment.bearer(&shared.proxy).await {
        Ok(bearer) => bearer,
        Err(message) => return ends.fail(&message).await,
    };
    match start {
        Start::Sftp => {
            attachment.event("sftp", number, json!({"op": "start"}));
            sftp(rx, &ends, &shared, &attachment, &bearer).await;
        }
        start => {
            let command = match &start {
                Start::Exec(command) => command.clone(),
                _ => String::new(),
            };
            match &terminal {
                Some(t) => attachment.event(
                    "pty",
                    number,
                    json!({"term": t.term, "cols": t.size.cols, "rows": t.size.rows,
                           "command": command}),
                ),
                None => attachment.event("exec", number, json!({"command": command})),
            }
            let exec = Exec {
                command,
                terminal,
                env,
            };
            exec.run(rx, &ends, &shared, &attachment, &bearer).await;
        }
    }
    attachment.event("channel_close", number, json!({}));
}

/// The sending side of the channel, with the ways it can end.
pub struct Ends<'a> {
    pub tx: &'a ChannelWriteHalf<Msg>,
    pub id: russh::ChannelId,
}

impl Ends<'_> {
    /// Tells the user why the channel cannot run (stderr), exit status 1, close.
    pub async fn fail(&self, message: &str) {
        let line = format!("k8shell: {message}\r\n");
        let _ = self.tx.extended_data_bytes(1, Bytes::from(line)).await;
        let _ = self.tx.eof().await;
        let _ = self.tx.exit_status(1).await;
        let _ = self.tx.close().await;
    }

    /// Writes to the terminal (progress while the workspace starts).
    pub async fn say(&self, text: &str) {
        let _ = self.tx.data_bytes(Bytes::from(text.to_owned())).await;
    }
}

fn bearer_request<T>(message: T, bearer: &str) -> Result<tonic::Request<T>, String> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {bearer}")
        .parse()
        .map_err(|_| "identity issued a session token that is not a header value".to_owned())?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn workspace_gone(attachment: &Attachment, status: &tonic::Status) -> String {
    tracing::warn!(workspace = %attachment.workspace.display(), code = ?status.code(),
                   error = %status.message(), "k8shelld call failed");
    format!(
        "workspace {} did not answer: {}",
        attachment.workspace.display(),
        status.message()
    )
}

struct Exec {
    command: String,
    terminal: Option<Terminal>,
    env: HashMap<String, String>,
}

impl Exec {
    async fn run(
        self,
        rx: russh::ChannelReadHalf,
        ends: &Ends<'_>,
        shared: &Arc<Shared>,
        attachment: &Arc<Attachment>,
        bearer: &str,
    ) {
        let number = u32::from(ends.id);
        let mut recording = self.terminal.as_ref().and_then(|t| {
            let mut header = Header::new(
                u16::try_from(t.size.cols).unwrap_or(80),
                u16::try_from(t.size.rows).unwrap_or(24),
            );
            header.timestamp = Some(k8shell_common::clock::now().unix_timestamp());
            header.env.insert("TERM".to_owned(), t.term.clone());
            if !self.command.is_empty() {
                header.command = Some(self.command.clone());
            }
            attachment
                .with_session(|s| s.record(number, RecordingKind::Pty, &header))
                .and_then(|r| {
                    r.map_err(|e| tracing::error!(error = %e, "cannot record a terminal"))
                        .ok()
                })
        });
        let pty = self.terminal.is_some();
        let start = kpb::ExecInput {
            input: Some(kpb::exec_input::Input::Start(kpb::ExecStart {
                command: self.command,
                env: self.env,
                working_dir: String::new(),
                pty: self.terminal.map(|t| kpb::Pty {
                    term: t.term,
                    size: Some(t.size),
                    modes: t.modes,
                }),
            })),
        };
        let (to_workspace, requests) = mpsc::channel(TO_WORKSPACE);
        if to_workspace.send(start).await.is_err() {
            return;
        }
        let request = match bearer_request(ReceiverStream::new(requests), bearer) {
            Ok(request) => request,
            Err(message) => return ends.fail(&message).await,
        };
        let mut client = WorkspaceClient::new(attachment.k8shelld.clone());
        let mut output = match client.exec(request).await {
            Ok(output) => output.into_inner(),
            Err(status) => return ends.fail(&workspace_gone(attachment, &status)).await,
        };
        // Resizes go to the recording too; the pump tells the output side through this queue.
        let (resized, mut resizes) = mpsc::unbounded_channel::<(u32, u32)>();
        let pump_attachment = Arc::clone(attachment);
        let pump = tokio::spawn(inbound::pump(
            rx,
            to_workspace,
            Arc::clone(&shared.backlog),
            move |message| {
                let input = match message {
                    ChannelMsg::Data { data } => {
                        pump_attachment.input(data.len());
                        let n = data.len();
                        return Step::Send(
                            exec_input(kpb::exec_input::Input::Stdin(data.into())),
                            n,
                        );
                    }
                    ChannelMsg::Eof => kpb::exec_input::Input::StdinEof(kpb::Eof {}),
                    ChannelMsg::WindowChange {
                        col_width,
                        row_height,
                        pix_width,
                        pix_height,
                    } => {
                        let _ = resized.send((col_width, row_height));
                        kpb::exec_input::Input::Resize(kpb::WindowSize {
                            cols: col_width,
                            rows: row_height,
                            width_px: pix_width,
                            height_px: pix_height,
                        })
                    }
                    ChannelMsg::Signal { signal } => {
                        kpb::exec_input::Input::Signal(signals::name(&signal))
                    }
                    ChannelMsg::Close => return Step::Stop,
                    _ => return Step::Skip,
                };
                Step::Send(exec_input(input), 0)
            },
        ));
        let ended = loop {
            let message = tokio::select! {
                message = output.message() => message,
                Some((cols, rows)) = resizes.recv() => {
                    if let Some(recording) = &mut recording {
                        let _ = recording.resize(cols, rows);
                    }
                    continue;
                }
            };
            match message {
                Ok(Some(kpb::ExecOutput { output: Some(out) })) => match out {
                    kpb::exec_output::Output::Stdout(data) => {
                        attachment.output(data.len());
                        if let Some(recording) = &mut recording {
                            record(recording, &data);
                        }
                        if ends.tx.data_bytes(Bytes::from(data)).await.is_err() {
                            break None;
                        }
                    }
                    kpb::exec_output::Output::Stderr(data) => {
                        attachment.output(data.len());
                        if ends
                            .tx
                            .extended_data_bytes(1, Bytes::from(data))
                            .await
                            .is_err()
                        {
                            break None;
                        }
                    }
                    kpb::exec_output::Output::Exit(status) => break Some(status),
                    kpb::exec_output::Output::Started(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(status) => {
                    let _ = ends
                        .tx
                        .extended_data_bytes(
                            1,
                            Bytes::from(format!(
                                "k8shell: {}\r\n",
                                workspace_gone(attachment, &status)
                            )),
                        )
                        .await;
                    break None;
                }
            }
        };
        pump.abort();
        if let Some(recording) = recording
            && let Err(error) = recording.finish()
        {
            tracing::error!(%error, "a terminal recording could not be finished");
        }
        let _ = ends.tx.eof().await;
        let exit = match ended.and_then(|e| e.status) {
            Some(kpb::exit_status::Status::Code(code)) => {
                let _ = ends.tx.exit_status(code as u32).await;
                json!({"exit_code": code})
            }
            Some(kpb::exit_status::Status::Signal(signal)) => {
                let _ = shared
                    .handle
                    .exit_signal_request(
                        ends.id,
                        signals::from_name(&signal.name),
                        signal.core_dumped,
                        String::new(),
                        "en".to_owned(),
                    )
                    .await;
                json!({"signal": signal.name})
            }
            None => {
                // Without a status, the client learns that the command did not finish well.
                let _ = ends.tx.exit_status(255).await;
                json!({"exit_code": 255, "note": "the workspace ended the stream"})
            }
        };
        attachment.event("exit", number, exit);
        let _ = ends.tx.close().await;
        let _ = pty;
    }
}

fn exec_input(input: kpb::exec_input::Input) -> kpb::ExecInput {
    kpb::ExecInput { input: Some(input) }
}

fn record(recording: &mut Recording, data: &[u8]) {
    if let Err(error) = recording.output(data) {
        tracing::error!(%error, "a terminal recording failed; the session goes on unrecorded");
    }
}

async fn sftp(
    rx: russh::ChannelReadHalf,
    ends: &Ends<'_>,
    shared: &Arc<Shared>,
    attachment: &Arc<Attachment>,
    bearer: &str,
) {
    let number = u32::from(ends.id);
    let (to_workspace, requests) = mpsc::channel(TO_WORKSPACE);
    let request = match bearer_request(ReceiverStream::new(requests), bearer) {
        Ok(request) => request,
        Err(message) => return ends.fail(&message).await,
    };
    let mut client = WorkspaceClient::new(attachment.k8shelld.clone());
    let mut output = match client.sftp(request).await {
        Ok(output) => output.into_inner(),
        Err(status) => return ends.fail(&workspace_gone(attachment, &status)).await,
    };
    let pump_attachment = Arc::clone(attachment);
    let mut log = SftpLog::default();
    let pump = tokio::spawn(inbound::pump(
        rx,
        to_workspace,
        Arc::clone(&shared.backlog),
        move |message| match message {
            ChannelMsg::Data { data } => {
                pump_attachment.input(data.len());
                for operation in log.feed(&data) {
                    pump_attachment.event("sftp", number, operation);
                }
                let n = data.len();
                Step::Send(kpb::SftpData { data: data.into() }, n)
            }
            // The client's EOF ends the SFTP stream.
            ChannelMsg::Eof | ChannelMsg::Close => Step::Stop,
            _ => Step::Skip,
        },
    ));
    loop {
        match output.message().await {
            Ok(Some(kpb::SftpData { data })) => {
                attachment.output(data.len());
                if ends.tx.data_bytes(Bytes::from(data)).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(status) => {
                workspace_gone(attachment, &status);
                break;
            }
        }
    }
    pump.abort();
    let _ = ends.tx.eof().await;
    let _ = ends.tx.exit_status(0).await;
    let _ = ends.tx.close().await;
}
