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
use tokio_util::sync::CancellationToken;

use crate::connection::Shared;
use crate::inbound::{self, Step};
use crate::sftp_log::SftpLog;
use crate::signals;
use k8shell_gateway::Attachment;

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
            Some(ChannelMsg::Exec { command, .. }) => match String::from_utf8(command) {
                Ok(command) => break Start::Exec(command),
                // Running a lossy copy would run another command than the one asked for.
                Err(_) => {
                    return Ends { tx: &tx, id }
                        .fail("the command is not valid UTF-8")
                        .await;
                }
            },
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => break Start::Sftp,
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let ends = Ends { tx: &tx, id };
    // The client's input is taken from russh at once, while the workspace may still be starting
    // (ADR 0011); it waits in the pump until k8shelld takes it.
    let gone = shared.closed.child_token();
    let (resized, resizes) = mpsc::unbounded_channel::<(u32, u32)>();
    let command = match &start {
        Start::Exec(command) => command.clone(),
        _ => String::new(),
    };
    let (pump, requests) = if start == Start::Sftp {
        let (to_workspace, requests) = mpsc::channel(TO_WORKSPACE);
        let pump = tokio::spawn(inbound::pump(
            rx,
            to_workspace,
            Arc::clone(&shared.backlog),
            gone.clone(),
            sftp_input(Arc::clone(&shared), number),
        ));
        (pump, Requests::Sftp(requests))
    } else {
        let (to_workspace, requests) = mpsc::channel(TO_WORKSPACE);
        let first = exec_input(kpb::exec_input::Input::Start(kpb::ExecStart {
            command: command.clone(),
            env,
            working_dir: String::new(),
            pty: terminal.clone().map(|t| kpb::Pty {
                term: t.term,
                size: Some(t.size),
                modes: t.modes,
            }),
            // An SSH client that drops does not come back for its shell (that is mosh's or
            // tmux's job): hang up at once, as sshd does.
            keep_seconds: 0,
        }));
        // The queue is empty: the start goes first.
        let _ = to_workspace.try_send(first);
        let pump = tokio::spawn(inbound::pump(
            rx,
            to_workspace,
            Arc::clone(&shared.backlog),
            gone.clone(),
            exec_input_of(Arc::clone(&shared), resized),
        ));
        (pump, Requests::Exec(requests))
    };
    let _pump = AbortOnDrop(pump);
    let Some(attachment) = shared.wait_ready(&ends, terminal.is_some()).await else {
        return;
    };
    let verdict = match &start {
        // Entering was decided at login.
        Start::Shell => None,
        other => Some(
            shared
                .proxy
                .gateway
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
            let why = if verdict.reasons.is_empty() {
                "the policy says no".to_owned()
            } else {
                verdict.reasons.join("; ")
            };
            return ends.fail(&format!("denied: {why}")).await;
        }
    }
    let bearer = match attachment.bearer(&shared.proxy.gateway).await {
        Ok(bearer) => bearer,
        Err(message) => return ends.fail(&message).await,
    };
    let stream = Stream {
        ends: &ends,
        shared: &shared,
        attachment: &attachment,
        gone: &gone,
    };
    match requests {
        Requests::Sftp(requests) => {
            attachment.event("sftp", number, json!({"op": "start"}));
            stream.sftp(requests, &bearer).await;
        }
        Requests::Exec(requests) => {
            match &terminal {
                Some(t) => attachment.event(
                    "pty",
                    number,
                    json!({"term": t.term, "cols": t.size.cols, "rows": t.size.rows,
                           "command": command}),
                ),
                None => attachment.event("exec", number, json!({"command": command})),
            }
            stream
                .exec(requests, resizes, terminal.as_ref(), &command, &bearer)
                .await;
        }
    }
    attachment.event("channel_close", number, json!({}));
}

/// What the pump feeds, for the stream that takes it.
enum Requests {
    Exec(mpsc::Receiver<kpb::ExecInput>),
    Sftp(mpsc::Receiver<kpb::SftpData>),
}

/// Aborts the pump when the channel's task ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Client messages of an exec or shell channel, as k8shelld's `Exec` input.
fn exec_input_of(
    shared: Arc<Shared>,
    resized: mpsc::UnboundedSender<(u32, u32)>,
) -> impl FnMut(ChannelMsg) -> Step<kpb::ExecInput> {
    move |message| {
        let input = match message {
            ChannelMsg::Data { data } => {
                shared.input(data.len());
                let n = data.len();
                return Step::Send(exec_input(kpb::exec_input::Input::Stdin(data.into())), n);
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
            ChannelMsg::Signal { signal } => kpb::exec_input::Input::Signal(signals::name(&signal)),
            _ => return Step::Skip,
        };
        Step::Send(exec_input(input), 0)
    }
}

/// Client messages of an SFTP channel: the protocol's bytes, with file operations noted.
fn sftp_input(shared: Arc<Shared>, number: u32) -> impl FnMut(ChannelMsg) -> Step<kpb::SftpData> {
    let mut log = SftpLog::default();
    move |message| match message {
        ChannelMsg::Data { data } => {
            shared.input(data.len());
            let noted = log.feed(&data);
            if !noted.is_empty()
                && let Some(attachment) = shared.attachment()
            {
                for operation in noted {
                    attachment.event("sftp", number, operation);
                }
            }
            let n = data.len();
            Step::Send(kpb::SftpData { data: data.into() }, n)
        }
        // The client's EOF ends the SFTP stream.
        ChannelMsg::Eof => Step::Stop,
        _ => Step::Skip,
    }
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

fn workspace_error(attachment: &Attachment, status: &tonic::Status) -> String {
    tracing::warn!(workspace = %attachment.workspace.display(), code = ?status.code(),
                   error = %status.message(), "k8shelld call failed");
    let workspace = attachment.workspace.display();
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            format!(
                "workspace {workspace} refused the session: {}",
                status.message()
            )
        }
        _ => format!("workspace {workspace} did not answer: {}", status.message()),
    }
}

/// A started channel and what it streams through.
struct Stream<'a> {
    ends: &'a Ends<'a>,
    shared: &'a Arc<Shared>,
    attachment: &'a Arc<Attachment>,
    /// Cancelled when the client closed the channel or the connection ended.
    gone: &'a CancellationToken,
}

/// How the output side ended.
enum Outcome {
    Exit(Option<kpb::exit_status::Status>),
    /// k8shelld ended the stream without a status (or failed).
    Ended,
    /// The client closed the channel or went away.
    Gone,
}

impl Stream<'_> {
    /// Sends `data` within the client's window, unless the client is gone.
    async fn send(&self, data: Vec<u8>, stderr: bool) -> bool {
        self.attachment.output(data.len());
        let data = Bytes::from(data);
        let sent = async {
            if stderr {
                self.ends.tx.extended_data_bytes(1, data).await
            } else {
                self.ends.tx.data_bytes(data).await
            }
        };
        tokio::select! {
            () = self.gone.cancelled() => false,
            sent = sent => sent.is_ok(),
        }
    }

    /// Tells the user on stderr why the workspace's stream failed.
    async fn tell(&self, status: &tonic::Status) {
        let line = format!("k8shell: {}\r\n", workspace_error(self.attachment, status));
        let _ = self.send(line.into_bytes(), true).await;
    }

    async fn exec(
        &self,
        requests: mpsc::Receiver<kpb::ExecInput>,
        mut resizes: mpsc::UnboundedReceiver<(u32, u32)>,
        terminal: Option<&Terminal>,
        command: &str,
        bearer: &str,
    ) {
        let number = u32::from(self.ends.id);
        let mut recording = terminal.and_then(|t| {
            let mut header = Header::new(
                u16::try_from(t.size.cols).unwrap_or(80),
                u16::try_from(t.size.rows).unwrap_or(24),
            );
            header.timestamp = Some(k8shell_common::clock::now().unix_timestamp());
            header.env.insert("TERM".to_owned(), t.term.clone());
            if !command.is_empty() {
                header.command = Some(command.to_owned());
            }
            self.attachment
                .with_session(|s| s.record(number, RecordingKind::Pty, &header))
                .and_then(|r| {
                    r.map_err(|e| tracing::error!(error = %e, "cannot record a terminal"))
                        .ok()
                })
        });
        let request = match k8shell_gateway::with_bearer(ReceiverStream::new(requests), bearer) {
            Ok(request) => request,
            Err(message) => return self.ends.fail(&message).await,
        };
        let mut client = WorkspaceClient::new(self.attachment.k8shelld.clone());
        let mut output = match client.exec(request).await {
            Ok(output) => output.into_inner(),
            Err(status) => {
                return self
                    .ends
                    .fail(&workspace_error(self.attachment, &status))
                    .await;
            }
        };
        let outcome = loop {
            let message = tokio::select! {
                () = self.gone.cancelled() => break Outcome::Gone,
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
                        if let Some(recording) = &mut recording {
                            record(recording, &data);
                        }
                        if !self.send(data, false).await {
                            break Outcome::Gone;
                        }
                    }
                    kpb::exec_output::Output::Stderr(data) => {
                        if !self.send(data, true).await {
                            break Outcome::Gone;
                        }
                    }
                    kpb::exec_output::Output::Exit(status) => break Outcome::Exit(status.status),
                    kpb::exec_output::Output::Started(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => break Outcome::Ended,
                Err(status) => {
                    self.tell(&status).await;
                    break Outcome::Ended;
                }
            }
        };
        // Dropping the stream cancels the call: k8shelld hangs up a process whose client left.
        drop(output);
        if let Some(recording) = recording
            && let Err(error) = recording.finish()
        {
            tracing::error!(%error, "a terminal recording could not be finished");
        }
        let exit = match outcome {
            Outcome::Gone => json!({"note": "the client closed the channel"}),
            Outcome::Exit(Some(kpb::exit_status::Status::Code(code))) => {
                let _ = self.ends.tx.eof().await;
                let _ = self.ends.tx.exit_status(code as u32).await;
                json!({"exit_code": code})
            }
            Outcome::Exit(Some(kpb::exit_status::Status::Signal(signal))) => {
                let _ = self.ends.tx.eof().await;
                let _ = self
                    .shared
                    .handle
                    .exit_signal_request(
                        self.ends.id,
                        signals::from_name(&signal.name),
                        signal.core_dumped,
                        String::new(),
                        "en".to_owned(),
                    )
                    .await;
                json!({"signal": signal.name})
            }
            Outcome::Exit(None) | Outcome::Ended => {
                // Without a status, the client learns that the command did not finish well.
                let _ = self.ends.tx.eof().await;
                let _ = self.ends.tx.exit_status(255).await;
                json!({"exit_code": 255, "note": "the workspace ended the stream"})
            }
        };
        self.attachment.event("exit", number, exit);
        let _ = self.ends.tx.close().await;
    }

    async fn sftp(&self, requests: mpsc::Receiver<kpb::SftpData>, bearer: &str) {
        let request = match k8shell_gateway::with_bearer(ReceiverStream::new(requests), bearer) {
            Ok(request) => request,
            Err(message) => return self.ends.fail(&message).await,
        };
        let mut client = WorkspaceClient::new(self.attachment.k8shelld.clone());
        let mut output = match client.sftp(request).await {
            Ok(output) => output.into_inner(),
            Err(status) => {
                return self
                    .ends
                    .fail(&workspace_error(self.attachment, &status))
                    .await;
            }
        };
        let mut failed = false;
        loop {
            let message = tokio::select! {
                () = self.gone.cancelled() => return,
                message = output.message() => message,
            };
            match message {
                Ok(Some(kpb::SftpData { data })) => {
                    if !self.send(data, false).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    self.tell(&status).await;
                    failed = true;
                    break;
                }
            }
        }
        let _ = self.ends.tx.eof().await;
        let _ = self.ends.tx.exit_status(u32::from(failed)).await;
        let _ = self.ends.tx.close().await;
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
