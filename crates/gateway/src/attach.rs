//! From a signed-in user to a workspace they may enter: which workspace is meant, authz's `ssh`
//! decision, the session opened for it, the workspace started, a session token, and the channel
//! to its k8shelld. Failures come back as the words the user reads (on stderr or the terminal).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8shell_authz::client::Verdict;
use k8shell_proto::identity::v1 as idpb;
use k8shell_proto::provisioner::v1 as pb;
use k8shell_session::{LiveSession, NewSession, SessionKind};
use serde_json::json;
use tokio::sync::watch;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::backends::Backends;

/// Lifetime asked for each session token; a channel opened near its end gets a new one.
const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(120);

/// Which workspace a user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The user's default workspace: the one named `default`, or their only one.
    Default,
    /// A workspace by owner and name.
    Named { owner: String, name: String },
    /// A workspace by id (the REST API's terminal).
    Id(Uuid),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("the default workspace"),
            Self::Named { owner, name } => write!(f, "{owner}/{name}"),
            Self::Id(id) => write!(f, "workspace {id}"),
        }
    }
}

/// Enters workspaces for users: the service clients and how long a start may take.
#[derive(Debug)]
pub struct Gateway {
    pub backends: Backends,
    /// How long a login waits for its workspace to start.
    pub start_timeout: Duration,
}

/// The workspace a connection entered.
#[derive(Debug, Clone)]
pub struct WorkspaceInfo {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    /// What the blueprint allows (`allow` in the spec), as the ssh policy reads it.
    pub allow: serde_json::Value,
}

impl WorkspaceInfo {
    fn from_message(workspace: &pb::Workspace) -> Result<Self, String> {
        let reference = workspace.r#ref.clone().unwrap_or_default();
        let id = reference
            .id
            .as_ref()
            .and_then(|id| Uuid::try_from(id).ok())
            .ok_or_else(|| "the provisioner sent a workspace without an id".to_owned())?;
        let spec: serde_json::Value =
            serde_json::from_str(&workspace.spec_json).unwrap_or_default();
        Ok(Self {
            id,
            owner: reference.owner,
            name: reference.name,
            allow: spec.get("allow").cloned().unwrap_or_else(|| json!({})),
        })
    }

    /// `owner/name`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// Where a connection is on its way into the workspace.
#[derive(Debug, Clone)]
pub enum Stage {
    /// Still working; the words say on what (shown on terminals).
    Preparing(String),
    Ready(Arc<Attachment>),
    /// The connection cannot enter; the words are for the user.
    Refused(Arc<str>),
}

/// A connection inside its workspace: the session that records it and the way to k8shelld.
#[derive(Debug)]
pub struct Attachment {
    pub user: idpb::User,
    pub workspace: WorkspaceInfo,
    pub admin_access: bool,
    pub k8shelld: Channel,
    session: Mutex<Option<LiveSession>>,
    session_id: Uuid,
    token: tokio::sync::Mutex<(String, tokio::time::Instant)>,
    /// Unix seconds of the last input, and of the last Touch sent to the provisioner.
    last_input: AtomicI64,
    last_touch: AtomicI64,
}

impl Attachment {
    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// Runs `f` on the live session (it is gone once the connection closed it).
    pub fn with_session<T>(&self, f: impl FnOnce(&LiveSession) -> T) -> Option<T> {
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        session.as_ref().map(f)
    }

    /// Adds a timeline event; a failure to spool it is logged (the channel goes on).
    pub fn event(&self, kind: &str, channel: u32, data: serde_json::Value) {
        if let Some(Err(error)) = self.with_session(|s| s.event(kind, channel, data)) {
            tracing::error!(session = %self.session_id, %error, "could not add a timeline event");
        }
    }

    /// Input from the user: counted, and it keeps the workspace from idling out.
    pub fn input(&self, bytes: usize) {
        self.with_session(|s| s.add_bytes_in(bytes as u64));
        self.last_input.store(
            k8shell_common::clock::now().unix_timestamp(),
            Ordering::Relaxed,
        );
    }

    pub fn output(&self, bytes: usize) {
        self.with_session(|s| s.add_bytes_out(bytes as u64));
    }

    /// Ends the session (once) with `reason` and lets its spool upload in the background.
    pub fn close(&self, reason: &str) {
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(session) = session {
            match session.close(reason) {
                Ok(closing) => {
                    tokio::spawn(closing.flushed());
                }
                Err(error) => {
                    tracing::error!(session = %self.session_id, %error, "could not close the session")
                }
            }
        }
    }

    /// Resolves when the session service asks to end the session.
    pub fn terminated(
        &self,
    ) -> Option<impl Future<Output = k8shell_session::TerminateNotice> + Send + use<>> {
        self.with_session(|s| s.terminated())
    }

    /// A valid session token for k8shelld, renewed shortly before it expires.
    pub async fn bearer(&self, gateway: &Gateway) -> Result<String, String> {
        let mut token = self.token.lock().await;
        if token.1 <= tokio::time::Instant::now() + TOKEN_RENEW_BEFORE {
            *token = issue_token(gateway, &self.user, self.workspace.id, self.session_id).await?;
        }
        Ok(token.0.clone())
    }

    /// Tells the provisioner about input since the last call (at most every `every`).
    pub async fn touch_if_active(&self, gateway: &Gateway) {
        let input = self.last_input.load(Ordering::Relaxed);
        if input <= self.last_touch.load(Ordering::Relaxed) {
            return;
        }
        self.last_touch.store(input, Ordering::Relaxed);
        let at = time::OffsetDateTime::from_unix_timestamp(input)
            .unwrap_or_else(|_| k8shell_common::clock::now());
        let request = pb::TouchRequest {
            workspace: Some(by_id(self.workspace.id)),
            at: Some(k8shell_proto::types::v1::timestamp(at)),
        };
        if let Err(status) = gateway.backends.provisioner.clone().touch(request).await {
            tracing::warn!(workspace = %self.workspace.id, error = %status.message(), "touch failed");
        }
    }
}

/// A request to k8shelld carrying the session token.
pub fn with_bearer<T>(message: T, bearer: &str) -> Result<tonic::Request<T>, String> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {bearer}")
        .parse()
        .map_err(|_| "identity issued a session token that is not a header value".to_owned())?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn by_id(id: Uuid) -> pb::Selector {
    pb::Selector {
        by: Some(pb::selector::By::Id(id.into())),
    }
}

/// The connection's facts the session records.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    /// SSH or the console.
    pub kind: SessionKind,
    pub peer: SocketAddr,
    /// The SSH client's version string, or the browser's User-Agent.
    pub version: String,
}

impl Gateway {
    /// Takes an authenticated user into the workspace `target` names, reporting progress on
    /// `stage`.
    pub async fn attach(
        &self,
        user: idpb::User,
        target: &Target,
        client: ClientFacts,
        stage: &watch::Sender<Stage>,
    ) -> Result<Arc<Attachment>, String> {
        let workspace = self.find_workspace(&user, target).await?;
        let info = WorkspaceInfo::from_message(&workspace)?;
        let verdict = self.decide_ssh(&user, &info, "shell").await;
        if !verdict.allow {
            return Err(refused_entry(&user, &info, target, &verdict));
        }
        let admin_access = verdict.document["admin_access"] == json!(true);
        let user_id = user
            .id
            .as_ref()
            .and_then(|id| Uuid::try_from(id).ok())
            .ok_or_else(|| "identity sent a user without an id".to_owned())?;
        let session = self
            .backends
            .sessions
            .open(NewSession {
                user_id,
                username: user.username.clone(),
                workspace_id: info.id,
                workspace_owner: info.owner.clone(),
                workspace_name: info.name.clone(),
                kind: client.kind,
                client_addr: client.peer,
                client_version: client.version,
                admin_access,
            })
            .await
            .map_err(|error| {
                tracing::error!(%error, "could not open a session");
                "sessions cannot be recorded right now, so none is opened; try again shortly"
                    .to_owned()
            })?;
        let session_id = session.id();
        session
            .event(
                "decision",
                0,
                json!({"domain": "ssh", "request": "shell", "allow": true,
                       "decision_id": verdict.decision_id, "admin_access": admin_access}),
            )
            .unwrap_or_else(|e| tracing::error!(error = %e, "timeline"));
        // Terminals hear about the start only when there is one to wait for.
        let running = workspace.state() == pb::State::Running;
        let entered = async {
            let endpoint = self.ensure_running(&user, &info, !running, stage).await?;
            let k8shelld = self
                .backends
                .k8shelld(&endpoint)
                .map_err(|e| format!("cannot reach workspace {}: {e}", info.display()))?;
            let token = issue_token(self, &user, info.id, session_id).await?;
            Ok::<_, String>((k8shelld, token))
        };
        match entered.await {
            Ok((k8shelld, token)) => Ok(Arc::new(Attachment {
                user,
                workspace: info,
                admin_access,
                k8shelld,
                session: Mutex::new(Some(session)),
                session_id,
                token: tokio::sync::Mutex::new(token),
                last_input: AtomicI64::new(0),
                last_touch: AtomicI64::new(0),
            })),
            Err(message) => {
                if let Ok(closing) = session.close(&message) {
                    tokio::spawn(closing.flushed());
                }
                Err(message)
            }
        }
    }

    /// The workspace the user name asks for.
    async fn find_workspace(
        &self,
        user: &idpb::User,
        target: &Target,
    ) -> Result<pb::Workspace, String> {
        let mut provisioner = self.backends.provisioner.clone();
        match target {
            Target::Id(id) => match provisioner
                .get(pb::WorkspaceRequest {
                    workspace: Some(by_id(*id)),
                })
                .await
            {
                Ok(workspace) => Ok(workspace.into_inner()),
                Err(status) if status.code() == tonic::Code::NotFound => Err(format!(
                    "you cannot enter workspace {id}: it does not exist or is not yours"
                )),
                Err(status) => Err(unavailable("the provisioner", &status)),
            },
            Target::Named { owner, name } => {
                let request = pb::WorkspaceRequest {
                    workspace: Some(pb::Selector {
                        by: Some(pb::selector::By::Name(pb::OwnerAndName {
                            owner: owner.clone(),
                            name: name.clone(),
                        })),
                    }),
                };
                match provisioner.get(request).await {
                    Ok(workspace) => Ok(workspace.into_inner()),
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        Err(if *owner == user.username {
                            let yours = self.workspace_names(&user.username).await;
                            format!("you have no workspace named {name:?}{yours}")
                        } else {
                            // The same words whether it exists or not: no probing of others.
                            format!(
                                "you cannot enter {owner}/{name}: it does not exist or is not yours"
                            )
                        })
                    }
                    Err(status) => Err(unavailable("the provisioner", &status)),
                }
            }
            Target::Default => {
                let listed = provisioner
                    .list(pb::ListRequest {
                        owner: user.username.clone(),
                    })
                    .await
                    .map_err(|status| unavailable("the provisioner", &status))?
                    .into_inner()
                    .workspaces;
                let name = |w: &pb::Workspace| w.r#ref.as_ref().map(|r| r.name.clone());
                if let Some(default) = listed
                    .iter()
                    .find(|w| name(w).as_deref() == Some("default"))
                {
                    return Ok(default.clone());
                }
                match listed.as_slice() {
                    [only] => Ok(only.clone()),
                    [] => Err(format!(
                        "{} has no workspace yet: create one with `k8shell ws create`",
                        user.username
                    )),
                    several => {
                        let names: Vec<String> = several.iter().filter_map(name).collect();
                        Err(format!(
                            "you have {} workspaces ({}) and none is named `default`: log in as {}+<workspace>",
                            names.len(),
                            names.join(", "),
                            user.username
                        ))
                    }
                }
            }
        }
    }

    async fn workspace_names(&self, owner: &str) -> String {
        let listed = self
            .backends
            .provisioner
            .clone()
            .list(pb::ListRequest {
                owner: owner.to_owned(),
            })
            .await;
        let names: Vec<String> = listed
            .map(|l| l.into_inner().workspaces)
            .unwrap_or_default()
            .iter()
            .filter_map(|w| w.r#ref.as_ref().map(|r| r.name.clone()))
            .collect();
        if names.is_empty() {
            String::new()
        } else {
            format!(" (yours: {})", names.join(", "))
        }
    }

    /// authz's `ssh` decision for `request` (`shell`, `exec`, `sftp`, `port_forwarding`).
    pub async fn decide_ssh(
        &self,
        user: &idpb::User,
        workspace: &WorkspaceInfo,
        request: &str,
    ) -> Verdict {
        let input = json!({
            "v": 1,
            "user": {"username": user.username, "groups": user.groups},
            "workspace": {"id": workspace.id.to_string(), "owner": workspace.owner,
                          "allow": workspace.allow},
            "request": request,
        });
        self.backends.authz.check("ssh", &input).await
    }

    /// Starts the workspace if it is not running; returns where its k8shelld answers.
    async fn ensure_running(
        &self,
        user: &idpb::User,
        workspace: &WorkspaceInfo,
        announce: bool,
        stage: &watch::Sender<Stage>,
    ) -> Result<String, String> {
        if announce {
            stage.send_replace(Stage::Preparing(format!(
                "starting workspace {}",
                workspace.display()
            )));
        }
        let deadline = k8shell_common::clock::now() + self.start_timeout;
        let request = pb::EnsureRunningRequest {
            workspace: Some(by_id(workspace.id)),
            requester: Some(pb::Requester {
                username: user.username.clone(),
                groups: user.groups.clone(),
            }),
            deadline: Some(k8shell_proto::types::v1::timestamp(deadline)),
        };
        let wait = self.start_timeout + Duration::from_secs(5);
        match tokio::time::timeout(
            wait,
            self.backends.provisioner.clone().ensure_running(request),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer.into_inner().endpoint),
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::DeadlineExceeded => format!(
                    "workspace {} did not start within {}",
                    workspace.display(),
                    humantime::format_duration(self.start_timeout)
                ),
                tonic::Code::PermissionDenied
                | tonic::Code::FailedPrecondition
                | tonic::Code::ResourceExhausted => format!(
                    "workspace {} cannot start: {}",
                    workspace.display(),
                    status.message()
                ),
                _ => unavailable("the provisioner", &status),
            }),
            Err(_) => Err(format!(
                "workspace {} did not start in time",
                workspace.display()
            )),
        }
    }
}

async fn issue_token(
    gateway: &Gateway,
    user: &idpb::User,
    workspace: Uuid,
    session: Uuid,
) -> Result<(String, tokio::time::Instant), String> {
    let request = idpb::IssueSessionTokenRequest {
        user: Some(idpb::UserSelector {
            user: user.id.clone().map(idpb::user_selector::User::Id),
        }),
        workspace_id: Some(workspace.into()),
        session_id: Some(session.into()),
        ttl_seconds: TOKEN_TTL.as_secs(),
    };
    let issued = gateway
        .backends
        .identity
        .clone()
        .issue_session_token(request)
        .await
        .map_err(|status| unavailable("identity", &status))?
        .into_inner();
    let lifetime = issued
        .expires_at
        .as_ref()
        .and_then(|at| k8shell_proto::types::v1::from_timestamp(at).ok())
        .map(|at| (at - k8shell_common::clock::now()).unsigned_abs())
        .unwrap_or(TOKEN_RENEW_BEFORE);
    Ok((issued.token, tokio::time::Instant::now() + lifetime))
}

fn refused_entry(
    user: &idpb::User,
    workspace: &WorkspaceInfo,
    target: &Target,
    verdict: &Verdict,
) -> String {
    tracing::info!(user = %user.username, workspace = %workspace.display(),
                   decision = %verdict.decision_id, reasons = ?verdict.reasons, "ssh entry denied");
    if workspace.owner == user.username {
        format!("access denied: {}", verdict.reasons.join("; "))
    } else if let Target::Id(id) = target {
        // Named by id: the refusal must not tell whose it is or what it is called.
        format!("you cannot enter workspace {id}: it does not exist or is not yours")
    } else {
        format!(
            "you cannot enter {}: it does not exist or is not yours",
            workspace.display()
        )
    }
}

fn unavailable(service: &str, status: &tonic::Status) -> String {
    tracing::warn!(%service, code = ?status.code(), error = %status.message(), "backend call failed");
    format!(
        "{service} is not available right now ({}); try again shortly",
        status.message()
    )
}
