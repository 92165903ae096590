//! k8shelld: the daemon inside every workspace.
//!
//! It serves `k8shell.k8shelld.v1.Workspace` on a Unix socket (local runtime) or on TCP with mTLS
//! (Kubernetes): commands and shells as the workspace user with or without a PTY, TCP
//! forwarding from inside the workspace, SFTP, and workspace information. Every call needs a session
//! token for this workspace.

mod auth;
mod config;
mod exec;
mod forward;
mod info;
mod kept;
mod pty;
mod reaper;
pub mod sftp;
mod signals;
mod spawn;
mod users;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use k8shell_common::grpc::{caller_service, mtls_incoming};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::ReloadingTls;
use k8shell_proto::k8shelld::v1::workspace_server::{Workspace, WorkspaceServer};
use k8shell_proto::k8shelld::v1::{
    ExecInput, ExecOutput, ForwardInput, ForwardOutput, InfoRequest, InfoResponse, SftpData,
    exec_input,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub use auth::{ALLOWED_CALLERS, TokenAuth};
pub use config::{Config, TcpConfig};
pub use users::{Account, lookup as lookup_account};

/// Errors that stop k8shelld.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Account(#[from] users::AccountError),
    #[error(transparent)]
    Jwks(#[from] k8shell_common::jwks::JwksError),
    #[error("listener {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] k8shell_common::tls::TlsError),
    #[error(transparent)]
    Grpc(#[from] k8shell_common::grpc::GrpcError),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// State shared by every call.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub account: Account,
    reaper: reaper::Reaper,
    /// Process groups of running execs, ended when k8shelld stops.
    sessions: Mutex<HashSet<i32>>,
    /// Woken whenever a session ends.
    session_ended: tokio::sync::Notify,
    /// When the last session ended: its client may still be reading its exit status.
    last_session_end: Mutex<Option<std::time::Instant>>,
    /// Terminals kept for `Attach`.
    kept: kept::KeptTerminals,
    /// Cancelled when k8shelld starts to stop: no new sessions from then on.
    stopping: tokio_util::sync::CancellationToken,
}

impl Shared {
    /// New sessions are refused once k8shelld is stopping (the running ones are being ended).
    pub(crate) fn refuse_if_stopping(&self) -> Result<(), Status> {
        if self.stopping.is_cancelled() {
            Err(stopping())
        } else {
            Ok(())
        }
    }

    /// Counts a started process as a session that stopping ends. If k8shelld began to stop
    /// since the call was let in, the list of sessions to end may have been taken already: the
    /// process group is killed and the call refused instead. The check is made under the lock
    /// that list is taken with, so no session slips between the two.
    pub(crate) fn track(self: &Arc<Self>, pid: i32) -> Result<SessionGuard, Status> {
        let mut sessions = self.lock_sessions();
        if self.stopping.is_cancelled() {
            drop(sessions);
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(stopping());
        }
        sessions.insert(pid);
        Ok(SessionGuard {
            shared: Arc::clone(self),
            pid,
        })
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answer to a session asked for while k8shelld stops.
fn stopping() -> Status {
    Status::unavailable("the workspace is stopping; start it again to connect")
}

/// Removes a session's process group from the live set when the exec ends.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    shared: Arc<Shared>,
    pid: i32,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        *self
            .shared
            .last_session_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
        self.shared.lock_sessions().remove(&self.pid);
        self.shared.session_ended.notify_waiters();
    }
}

/// Where k8shelld listens, already bound (tests bind port 0 or a temp socket).
#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener, Arc<ReloadingTls>),
}

/// Binds the listener the config names and serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let listener = match (&config.unix_socket, &config.tcp) {
        (Some(path), _) => {
            // A socket left by a previous run would make bind fail.
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).map_err(|source| Error::Listen {
                what: path.display().to_string(),
                source,
            })?;
            restrict_socket(path)?;
            Listener::Unix(listener)
        }
        (None, Some(tcp)) => {
            let tls = ReloadingTls::load(tcp.tls.clone())?;
            tls.watch(std::time::Duration::from_secs(10), shutdown.token());
            let listener = TcpListener::bind(tcp.listen)
                .await
                .map_err(|source| Error::Listen {
                    what: tcp.listen.to_string(),
                    source,
                })?;
            Listener::Tcp(listener, tls)
        }
        (None, None) => return Err(Error::Config("no listener".to_owned())),
    };
    serve(config, listener, shutdown).await
}

fn restrict_socket(path: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        Error::Listen {
            what: path.display().to_string(),
            source,
        }
    })
}

/// Serves on `listener` until `shutdown`, then ends the remaining sessions.
pub async fn serve(config: Config, listener: Listener, shutdown: Shutdown) -> Result<(), Error> {
    let account = users::lookup(&config.user, &config.passwd_file, &config.group_file)?;
    let keys = k8shell_common::jwks::JwksCache::load(config.jwks.clone()).await?;
    keys.spawn_refresher(shutdown.token());
    let auth = Arc::new(TokenAuth::new(
        keys,
        config.audience.clone(),
        config.workspace_id,
    ));
    let reaper = reaper::Reaper::start().map_err(|source| Error::Listen {
        what: "SIGCHLD".to_owned(),
        source,
    })?;
    if reaper::is_pid1() {
        tracing::info!("running as PID 1: reaping orphans and ending sessions on SIGTERM");
    }
    let shared = Arc::new(Shared {
        config,
        account,
        reaper,
        sessions: Mutex::default(),
        session_ended: tokio::sync::Notify::new(),
        last_session_end: Mutex::default(),
        kept: kept::KeptTerminals::default(),
        stopping: shutdown.token(),
    });
    let (health_reporter, health) = k8shell_proto::health::server::health_reporter();
    health_reporter
        .set_serving::<WorkspaceServer<WorkspaceService>>()
        .await;
    let service = WorkspaceService {
        shared: Arc::clone(&shared),
    };
    let stop = shutdown.token();
    // The server keeps its connections until the sessions have ended and their last messages
    // (exit statuses) had time to reach the clients: a graceful shutdown at once would close a
    // connection as soon as its calls answered, while a client may still be writing (its stdin's
    // EOF), and that write's broken pipe would lose the answer it had not read yet.
    let drained = tokio_util::sync::CancellationToken::new();
    {
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        let drained = drained.clone();
        let health_reporter = health_reporter.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            // Health checks (the provisioner's, before it hands out this endpoint) hear at once
            // that no session can start here any more.
            health_reporter
                .set_service_status("", k8shell_proto::health::ServingStatus::NotServing)
                .await;
            health_reporter
                .set_not_serving::<WorkspaceServer<WorkspaceService>>()
                .await;
            end_sessions(&shared).await;
            // The last exit status had FLUSH_GRACE to reach its client, counted from its end
            // (which may have been just before the stop).
            let last_end = *shared
                .last_session_end
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(ended) = last_end {
                tokio::time::sleep(FLUSH_GRACE.saturating_sub(ended.elapsed())).await;
            }
            drained.cancel();
        });
    }
    tracing::info!(
        workspace = %shared.config.workspace_id,
        user = %shared.account.name,
        uid = shared.account.uid,
        "k8shelld ready"
    );
    match listener {
        Listener::Unix(listener) => {
            let check = Arc::clone(&auth);
            let guarded = WorkspaceServer::with_interceptor(service, move |r| check.check(r));
            let incoming = futures_util::stream::unfold(listener, |listener| async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            return Some((Ok::<_, std::io::Error>(stream), listener));
                        }
                        Err(error) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            let server = k8shell_common::grpc::server_builder()
                .add_service(health)
                .add_service(guarded)
                .serve_with_incoming_shutdown(incoming, drained.clone().cancelled_owned());
            until_sessions_end(server, &drained).await?;
        }
        Listener::Tcp(listener, tls) => {
            let check = Arc::clone(&auth);
            let guarded = WorkspaceServer::with_interceptor(service, move |r: Request<()>| {
                let caller = caller_service(&r)?;
                if !ALLOWED_CALLERS.contains(&caller.as_str()) {
                    return Err(Status::permission_denied(format!(
                        "service `{caller}` may not call k8shelld"
                    )));
                }
                check.check(r)
            });
            let incoming = mtls_incoming(listener, &tls, stop.clone())?;
            let server = k8shell_common::grpc::server_builder()
                .add_service(health)
                .add_service(guarded)
                .serve_with_incoming_shutdown(incoming, drained.clone().cancelled_owned());
            until_sessions_end(server, &drained).await?;
        }
    }
    tracing::info!("k8shelld stopped");
    Ok(())
}

/// Time for the last messages (exit statuses) to reach clients after the sessions ended, and
/// then for calls that are not sessions (forwards) to finish before their connections close.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the server until it stops by itself, or until it was `drained` and the calls left had
/// [`FLUSH_GRACE`] more: clients that keep a forward open do not hold k8shelld (and with it the
/// workspace) up.
async fn until_sessions_end(
    server: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
    drained: &tokio_util::sync::CancellationToken,
) -> Result<(), Error> {
    tokio::select! {
        result = server => result?,
        () = async {
            drained.cancelled().await;
            tokio::time::sleep(FLUSH_GRACE).await;
        } => tracing::info!("sessions ended; closing the remaining connections"),
    }
    Ok(())
}

/// SIGTERM to every session's process group, SIGKILL to those still there after the grace
/// (and a moment for those to end, so that their exit is known when the drain starts).
async fn end_sessions(shared: &Arc<Shared>) {
    let groups: Vec<i32> = shared.lock_sessions().iter().copied().collect();
    if groups.is_empty() {
        return;
    }
    tracing::info!(sessions = groups.len(), "ending sessions");
    for pid in &groups {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(shared.config.kill_grace, all_sessions_ended(shared))
        .await
        .is_ok()
    {
        return;
    }
    for pid in shared.lock_sessions().iter() {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let _ = tokio::time::timeout(FLUSH_GRACE, all_sessions_ended(shared)).await;
}

/// Returns once no session is left.
async fn all_sessions_ended(shared: &Shared) {
    loop {
        // Registered before the check, so an end between the two is not missed.
        let ended = shared.session_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if shared.lock_sessions().is_empty() {
            return;
        }
        ended.await;
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct WorkspaceService {
    shared: Arc<Shared>,
}

/// A bounded channel as a response stream.
#[derive(Debug)]
pub struct ChannelStream<T>(mpsc::Receiver<T>);

impl<T> futures_util::Stream for ChannelStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tonic::async_trait]
impl Workspace for WorkspaceService {
    type ExecStream = ChannelStream<Result<ExecOutput, Status>>;
    type ForwardStream = ChannelStream<Result<ForwardOutput, Status>>;
    type SftpStream = ChannelStream<Result<SftpData, Status>>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.shared.refuse_if_stopping()?;
        let user = caller_user(&request);
        let rx = exec::exec(Arc::clone(&self.shared), &user, request.into_inner()).await?;
        Ok(Response::new(ChannelStream(rx)))
    }

    type AttachStream = ChannelStream<Result<ExecOutput, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.shared.refuse_if_stopping()?;
        let user = caller_user(&request);
        let mut input = request.into_inner();
        let attach = match futures_util::StreamExt::next(&mut input).await {
            Some(Ok(ExecInput {
                input: Some(exec_input::Input::Attach(attach)),
            })) => attach,
            Some(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "the first Attach message must be `attach`",
                ));
            }
        };
        let (output, rx) = mpsc::channel(exec::OUTPUT_QUEUE);
        let size = attach
            .size
            .map(|s| pty::winsize(s.cols, s.rows, s.width_px, s.height_px));
        self.shared
            .kept
            .attach(
                &attach.attach_id,
                &user,
                kept::Client {
                    input,
                    output,
                    size,
                },
            )
            .await?;
        Ok(Response::new(ChannelStream(rx)))
    }

    async fn forward(
        &self,
        request: Request<Streaming<ForwardInput>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        self.shared.refuse_if_stopping()?;
        let rx = forward::forward(Arc::clone(&self.shared), request.into_inner()).await?;
        Ok(Response::new(ChannelStream(rx)))
    }

    async fn sftp(
        &self,
        request: Request<Streaming<SftpData>>,
    ) -> Result<Response<Self::SftpStream>, Status> {
        self.shared.refuse_if_stopping()?;
        let rx = sftp::sftp(Arc::clone(&self.shared), request.into_inner()).await?;
        Ok(Response::new(ChannelStream(rx)))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(info::info(&self.shared)))
    }
}

/// The user named by the call's session token (checked by the interceptor before any call).
fn caller_user<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<k8shell_common::jwt::SessionClaims>()
        .map(|claims| claims.sub.clone())
        .unwrap_or_default()
}
