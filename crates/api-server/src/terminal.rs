//! `GET /api/v1/workspaces/{id}/terminal`: a shell in a workspace over a WebSocket, for the
//! console. It goes in the way SSH does (authz `ssh`, a session, the workspace started, a
//! session token) and its terminal is recorded like an SSH terminal.
//!
//! Frames: binary both ways carry the terminal's bytes; text frames carry JSON control
//! messages. From the browser: `{"type":"resize","cols":120,"rows":40}`. To the browser:
//! `{"type":"status","message":"starting workspace alice/web"}`, `{"type":"ready","session":"…"}`,
//! `{"type":"attached","resume":"…","resumed":true}` (the id to come back to this shell with, and
//! whether this is the shell `resume` asked for), `{"type":"exit","code":0}` (or `"signal"`),
//! `{"type":"error","message":"…"}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use k8shell_gateway::{Attachment, ClientFacts, Stage, Target};
use k8shell_proto::k8shelld::v1 as kpb;
use k8shell_proto::k8shelld::v1::workspace_client::WorkspaceClient;
use k8shell_session::asciicast::Header;
use k8shell_session::{Recording, RecordingKind, SessionKind};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use crate::caller::{Caller, Credential};
use crate::extract::{Path, Query};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::routes::common::parse_id;
use crate::state::{AppState, State};

/// The terminal's first size.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TerminalQuery {
    /// Columns (default 80).
    pub cols: Option<u16>,
    /// Rows (default 24).
    pub rows: Option<u16>,
    /// Take over the shell of an earlier terminal of yours whose browser went away (the id its
    /// `attached` message gave); if it is gone, a new shell starts and `attached` says
    /// `"resumed": false`.
    pub resume: Option<String>,
}

/// A control message from the browser.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u16, rows: u16 },
}

/// The WebSocket subprotocol, for clients that ask for one.
const PROTOCOL: &str = "k8shell.terminal.v1";
/// How long a browser may stay silent (pings unanswered) before the terminal is closed.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long one frame may take to go out before the browser counts as gone.
const SEND_WITHIN: Duration = Duration::from_secs(30);

#[utoipa::path(get, path = "/workspaces/{id}/terminal", tag = "workspaces",
    params(("id" = uuid::Uuid, Path, description = "Workspace id"), TerminalQuery),
    responses((status = 101, description = "A WebSocket carrying the terminal (see the module's protocol)"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn terminal(
    state: State,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(query): Query<TerminalQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let id = parse_id(&id, "workspace")?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!(
                "the terminal is a WebSocket: connect with a WebSocket client ({})",
                rejection.body_text()
            ),
        )
    })?;
    // Browsers send cookies on cross-site WebSockets too: the page must be ours.
    if caller.credential == Credential::Cookie {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if origin.map(crate::state::origin_of) != Some(state.origin()) {
            return Err(ApiError::forbidden(
                "a terminal opened with the session cookie must come from the console's own pages",
            ));
        }
    }
    let size = (
        query.cols.unwrap_or(80).clamp(10, 1000),
        query.rows.unwrap_or(24).clamp(5, 1000),
    );
    let resume = match query.resume {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Some(id)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "`resume` must be the id of an earlier terminal, as its `attached` message gave it",
            ));
        }
        None => None,
    };
    let client = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown browser")
        .chars()
        .take(200)
        .collect::<String>();
    let facts = ClientFacts {
        kind: SessionKind::Console,
        peer,
        version: client,
    };
    let state = Arc::clone(&state);
    // Tracked, so that a shutdown lets open terminals end their sessions properly.
    let tracker = state.terminals.clone();
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                Terminal {
                    state,
                    socket,
                    size,
                    resume,
                }
                .run(caller, id, facts)
                .await;
            })
        }))
}

struct Terminal {
    state: Arc<AppState>,
    socket: WebSocket,
    size: (u16, u16),
    /// The kept shell to take over, if any.
    resume: Option<String>,
}

impl Terminal {
    async fn run(mut self, caller: Caller, id: uuid::Uuid, facts: ClientFacts) {
        let Some(attachment) = self.attach(caller, id, facts).await else {
            return;
        };
        let reason = self.serve(&attachment).await;
        attachment.close(&reason);
    }

    /// Sends within [`SEND_WITHIN`]: a browser that stopped reading must not stop the loop
    /// (the terminate notice, pings and shutdown are heard in it).
    async fn send(&mut self, message: Message) -> bool {
        matches!(
            tokio::time::timeout(SEND_WITHIN, self.socket.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn control(&mut self, value: serde_json::Value) -> bool {
        self.send(Message::Text(value.to_string().into())).await
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let reason: String = reason.chars().take(100).collect();
        self.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    }

    /// Into the workspace, telling the browser about a start while it lasts.
    async fn attach(
        &mut self,
        caller: Caller,
        id: uuid::Uuid,
        facts: ClientFacts,
    ) -> Option<Arc<Attachment>> {
        let (stage, mut stages) = watch::channel(Stage::Preparing(String::new()));
        let state = Arc::clone(&self.state);
        let target = Target::Id(id);
        let attach = state.gateway.attach(caller.user, &target, facts, &stage);
        tokio::pin!(attach);
        let result = loop {
            tokio::select! {
                result = &mut attach => break result,
                () = state.stop.cancelled() => {
                    self.control(json!({"type": "error", "message": "the server is restarting; reconnect in a moment"})).await;
                    self.close(1001, "server restarting").await;
                    return None;
                }
                Ok(()) = stages.changed() => {
                    let message = match &*stages.borrow_and_update() {
                        Stage::Preparing(what) if !what.is_empty() => Some(format!("{what}…")),
                        _ => None,
                    };
                    if let Some(message) = message
                        && !self.control(json!({"type": "status", "message": message})).await
                    {
                        return None;
                    }
                }
            }
        };
        match result {
            Ok(attachment) => {
                let session = attachment.session_id().to_string();
                self.control(json!({"type": "ready", "session": session}))
                    .await;
                Some(attachment)
            }
            Err(message) => {
                self.control(json!({"type": "error", "message": message}))
                    .await;
                self.close(1008, "refused").await;
                None
            }
        }
    }

    /// The shell until it exits, the browser leaves, the session is terminated or the server
    /// stops; returns why it ended.
    async fn serve(&mut self, attachment: &Arc<Attachment>) -> String {
        let (cols, rows) = self.size;
        let state = Arc::clone(&self.state);
        let gateway = &state.gateway;
        let mut recording = record(attachment, cols, rows);
        let bearer = match attachment.bearer(gateway).await {
            Ok(bearer) => bearer,
            Err(message) => return self.fail(&message).await,
        };
        // The shell asked for, if it is still kept; else (it ended or waited too long) a new
        // one, and `attached` says it is not the one asked for.
        let opened = match self.resume.take() {
            Some(attach_id) => match self.open(attachment, &bearer, Some(attach_id)).await {
                Err(status) if status.code() == tonic::Code::NotFound => self
                    .open(attachment, &bearer, None)
                    .await
                    .map(|o| (o, false)),
                other => other.map(|o| (o, true)),
            },
            None => self
                .open(attachment, &bearer, None)
                .await
                .map(|o| (o, false)),
        };
        let ((input, mut output), resumed) = match opened {
            Ok(opened) => opened,
            Err(status) => {
                let message = format!("the workspace did not answer: {}", status.message());
                return self.fail(&message).await;
            }
        };
        attachment.event(
            "pty",
            0,
            json!({"term": "xterm-256color", "cols": cols, "rows": rows}),
        );
        let terminated = attachment.terminated();
        let terminated = async move {
            match terminated {
                Some(notice) => notice.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(terminated);
        let stop = self.state.stop.clone();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut touch = tokio::time::interval(Duration::from_secs(60));
        let mut heard_since_ping = true;
        let reason = loop {
            tokio::select! {
                message = self.socket.recv() => {
                    let Some(Ok(message)) = message else {
                        break "the browser closed the terminal".to_owned();
                    };
                    heard_since_ping = true;
                    match message {
                        Message::Binary(data) => {
                            attachment.input(data.len());
                            if let Some(r) = recording.as_mut() {
                                let _ = r.input(&data);
                            }
                            let stdin = kpb::ExecInput { input: Some(kpb::exec_input::Input::Stdin(data.to_vec())) };
                            if input.send(stdin).await.is_err() {
                                break "the workspace ended the terminal".to_owned();
                            }
                        }
                        Message::Text(text) => match serde_json::from_str::<Control>(&text) {
                            Ok(Control::Resize { cols, rows }) => {
                                let (cols, rows) = (cols.clamp(10, 1000), rows.clamp(5, 1000));
                                if let Some(r) = recording.as_mut() {
                                    let _ = r.resize(u32::from(cols), u32::from(rows));
                                }
                                let resize = kpb::ExecInput { input: Some(kpb::exec_input::Input::Resize(window(cols, rows))) };
                                let _ = input.send(resize).await;
                            }
                            Err(error) => {
                                let message = format!("unknown control message ({error}); send {{\"type\":\"resize\",\"cols\":N,\"rows\":N}}");
                                self.control(json!({"type": "error", "message": message})).await;
                            }
                        },
                        Message::Close(_) => break "the browser closed the terminal".to_owned(),
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                part = output.message() => {
                    match part {
                        Ok(Some(kpb::ExecOutput { output: Some(out) })) => match out {
                            kpb::exec_output::Output::Stdout(data) | kpb::exec_output::Output::Stderr(data) => {
                                attachment.output(data.len());
                                if let Some(r) = recording.as_mut() {
                                    let _ = r.output(&data);
                                }
                                // Awaiting the send is the backpressure towards k8shelld.
                                if !self.send(Message::Binary(data.into())).await {
                                    break "the browser went away".to_owned();
                                }
                            }
                            kpb::exec_output::Output::Exit(exit) => {
                                let (event, reason) = match exit.status {
                                    Some(kpb::exit_status::Status::Signal(s)) => (json!({"type": "exit", "signal": s.name}), format!("the shell was killed by {}", s.name)),
                                    Some(kpb::exit_status::Status::Code(code)) => (json!({"type": "exit", "code": code}), format!("the shell exited with status {code}")),
                                    None => (json!({"type": "exit"}), "the shell ended".to_owned()),
                                };
                                attachment.event("exit", 0, event.clone());
                                self.control(event).await;
                                self.close(1000, "exited").await;
                                break reason;
                            }
                            kpb::exec_output::Output::Started(started) => {
                                // The id to come back with after a network blip.
                                if !started.attach_id.is_empty() {
                                    attachment.event("attached", 0, json!({"resumed": resumed}));
                                    self.control(json!({"type": "attached", "resume": started.attach_id, "resumed": resumed})).await;
                                }
                            }
                        },
                        Ok(Some(_)) => {}
                        Ok(None) => break self.fail("the workspace ended the terminal without an exit status").await,
                        Err(status) => break self.fail(&format!("the workspace stopped answering: {}", status.message())).await,
                    }
                }
                notice = &mut terminated => {
                    let message = format!("terminated by {}: {}", notice.requested_by, notice.reason);
                    attachment.event("terminate", 0, json!({"by": notice.requested_by, "reason": notice.reason}));
                    self.control(json!({"type": "error", "message": message})).await;
                    self.close(1000, "terminated").await;
                    break message;
                }
                () = stop.cancelled() => {
                    self.control(json!({"type": "error", "message": "the server is restarting; reconnect in a moment"})).await;
                    self.close(1001, "server restarting").await;
                    break "the api-server shut down".to_owned();
                }
                _ = ping.tick() => {
                    if !heard_since_ping {
                        self.close(1001, "no answer to pings").await;
                        break "the browser stopped answering".to_owned();
                    }
                    heard_since_ping = false;
                    self.send(Message::Ping(bytes::Bytes::new())).await;
                }
                _ = touch.tick() => attachment.touch_if_active(gateway).await,
            }
        };
        if let Some(recording) = recording
            && let Err(error) = recording.finish()
        {
            tracing::error!(%error, "a terminal recording could not be finished");
        }
        reason
    }

    /// Opens the shell: a new one (kept for `terminal_keep` if the browser goes away), or the
    /// kept shell `attach_id`.
    async fn open(
        &mut self,
        attachment: &Arc<Attachment>,
        bearer: &str,
        attach_id: Option<String>,
    ) -> Result<
        (
            mpsc::Sender<kpb::ExecInput>,
            tonic::Streaming<kpb::ExecOutput>,
        ),
        tonic::Status,
    > {
        let (cols, rows) = self.size;
        let (input, requests) = mpsc::channel::<kpb::ExecInput>(16);
        let first = match &attach_id {
            Some(id) => kpb::exec_input::Input::Attach(kpb::AttachTo {
                attach_id: id.clone(),
                size: Some(window(cols, rows)),
            }),
            None => kpb::exec_input::Input::Start(kpb::ExecStart {
                command: String::new(),
                env: [("TERM".to_owned(), "xterm-256color".to_owned())].into(),
                working_dir: String::new(),
                pty: Some(kpb::Pty {
                    term: "xterm-256color".to_owned(),
                    size: Some(window(cols, rows)),
                    modes: Vec::new(),
                }),
                keep_seconds: u32::try_from(self.state.config.terminal_keep.as_secs())
                    .unwrap_or(u32::MAX),
            }),
        };
        let _ = input.send(kpb::ExecInput { input: Some(first) }).await;
        let request = k8shell_gateway::with_bearer(ReceiverStream::new(requests), bearer)
            .map_err(tonic::Status::internal)?;
        let mut client = WorkspaceClient::new(attachment.k8shelld.clone());
        let output = match attach_id {
            Some(_) => client.attach(request).await?,
            None => client.exec(request).await?,
        }
        .into_inner();
        Ok((input, output))
    }

    async fn fail(&mut self, message: &str) -> String {
        self.control(json!({"type": "error", "message": message}))
            .await;
        self.close(1011, "failed").await;
        message.to_owned()
    }
}

fn window(cols: u16, rows: u16) -> kpb::WindowSize {
    kpb::WindowSize {
        cols: u32::from(cols),
        rows: u32::from(rows),
        width_px: 0,
        height_px: 0,
    }
}

fn record(attachment: &Attachment, cols: u16, rows: u16) -> Option<Recording> {
    let mut header = Header::new(cols, rows);
    header.timestamp = Some(k8shell_common::clock::now().unix_timestamp());
    header
        .env
        .insert("TERM".to_owned(), "xterm-256color".to_owned());
    attachment
        .with_session(|s| s.record(0, RecordingKind::Pty, &header))
        .and_then(|r| {
            r.map_err(|e| tracing::error!(error = %e, "cannot record a terminal"))
                .ok()
        })
}
