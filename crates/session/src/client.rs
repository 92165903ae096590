//! The client library of the session service, linked by the holders of sessions (ssh-proxy, api):
//! open a session, add to its timeline, record its terminals through the spool, learn that it
//! was terminated, close it; and, at start-up, finish what a previous run left in the spool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8shell_proto::session::v1 as pb;
use k8shell_proto::session::v1::sessions_client::SessionsClient;
use k8shell_proto::types::v1::{UserRef, WorkspaceRef};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::live::{LiveSession, SessionFlusher};
use crate::spool::{Closed, SessionDir, SpoolError, leftover_sessions};

/// How the holder records.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The spool directory (private to this holder; mode 0700).
    pub spool_dir: PathBuf,
    /// Heartbeats carry activity and byte counters to the service.
    pub heartbeat_every: Duration,
    /// Record what users type (`i` events). Off by default: it catches passwords typed with
    /// echo off.
    pub record_input: bool,
    /// Longest wait between two upload attempts while the service is away.
    pub max_backoff: Duration,
}

impl ClientConfig {
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool_dir: spool_dir.into(),
            heartbeat_every: Duration::from_secs(30),
            record_input: false,
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("session service: {}", .0.message())]
    Status(#[from] tonic::Status),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("writing the recording out: {0}")]
    Io(#[from] std::io::Error),
    #[error("the session service sent an invalid answer: {0}")]
    Invalid(String),
}

/// A session about to be opened.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: Uuid,
    pub username: String,
    pub workspace_id: Uuid,
    pub workspace_owner: String,
    pub workspace_name: String,
    pub kind: pb::SessionKind,
    /// The client's address as the holder accepted it (IPv4-mapped IPv6 is normalised).
    pub client_addr: SocketAddr,
    /// `SSH-2.0-…` or a browser's user agent.
    pub client_version: String,
    pub admin_access: bool,
}

/// The holder's handle on the session service.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) grpc: SessionsClient<Channel>,
    pub(crate) nats: Option<async_nats::Client>,
    pub(crate) config: ClientConfig,
    /// Held while any clone lives: one holder per spool, or a resume would take over the
    /// sessions of a process that is still running.
    _spool_lock: std::sync::Arc<nix::fcntl::Flock<std::fs::File>>,
}

/// What a resume found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResumeReport {
    pub sessions: usize,
    pub recordings: usize,
    /// Session directories that could not be read; they stay in the spool.
    pub failed: usize,
}

impl Client {
    /// `grpc`: an mTLS channel to the session service; `nats`: where termination requests come
    /// from (without it, sessions learn of termination only at the next heartbeat).
    pub fn new(
        grpc: Channel,
        nats: Option<async_nats::Client>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        if config.heartbeat_every.is_zero() || config.max_backoff.is_zero() {
            return Err(ClientError::Invalid(
                "heartbeat_every and max_backoff must be longer than zero".to_owned(),
            ));
        }
        create_private_dir(&config.spool_dir)?;
        let lock_path = config.spool_dir.join(".lock");
        let lock_file =
            std::fs::File::create(&lock_path).map_err(crate::spool::io_error(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                ClientError::Spool(crate::spool::SpoolError {
                    path: lock_path.clone(),
                    source: std::io::Error::other(format!(
                        "{errno}: another process uses this recording spool; give each proxy its own"
                    )),
                })
            })?;
        Ok(Self {
            _spool_lock: std::sync::Arc::new(lock),
            grpc: SessionsClient::new(grpc).max_decoding_message_size(4 * 1024 * 1024),
            nats,
            config,
        })
    }

    /// The generated gRPC client, for the calls that need no spool (List, Get, Read, Watch,
    /// Terminate).
    pub fn grpc(&self) -> SessionsClient<Channel> {
        self.grpc.clone()
    }

    /// Opens a session. Fails (and the holder should refuse the connection) when the service
    /// cannot record it: no session goes unrecorded.
    pub async fn open(&self, new: NewSession) -> Result<LiveSession, ClientError> {
        let id = k8shell_common::ids::new_id();
        let addr = SocketAddr::new(new.client_addr.ip().to_canonical(), new.client_addr.port());
        // Subscribed before Open answers, so that no terminate request can be missed.
        let terminate = match &self.nats {
            Some(nats) => Some(
                nats.subscribe(k8shell_common::events::types::subjects::session_terminate(
                    id,
                ))
                .await
                .map_err(|e| ClientError::Nats(e.to_string()))?,
            ),
            None => None,
        };
        let request = pb::OpenRequest {
            id: Some(id.into()),
            user: Some(UserRef {
                id: Some(new.user_id.into()),
                username: new.username,
            }),
            workspace: Some(WorkspaceRef {
                id: Some(new.workspace_id.into()),
                owner: new.workspace_owner,
                name: new.workspace_name,
            }),
            kind: new.kind as i32,
            client_addr: addr.to_string(),
            client_version: new.client_version,
            admin_access: new.admin_access,
        };
        self.grpc.clone().open(request).await?;
        let dir = SessionDir::create(&self.config.spool_dir, id)?;
        LiveSession::start(self.clone(), dir, terminate)
    }

    /// Finishes what a previous run of this holder left in the spool: uploads every recording
    /// and timeline event and closes the sessions (their holder is gone, so they are over).
    /// Call once at start-up, before opening sessions. Returns when all is uploaded.
    pub async fn resume_spooled(&self) -> Result<ResumeReport, ClientError> {
        let mut report = ResumeReport::default();
        for dir in leftover_sessions(&self.config.spool_dir)? {
            // One damaged directory must not keep the others from being uploaded.
            let flusher = match self.prepare_resume(dir.clone()) {
                Ok(flusher) => flusher,
                Err(error) => {
                    tracing::error!(session = %dir.id, %error, "cannot resume a spooled session; it stays in the spool");
                    report.failed += 1;
                    continue;
                }
            };
            report.sessions += 1;
            report.recordings += flusher.recordings();
            flusher.run().await;
        }
        Ok(report)
    }

    fn prepare_resume(&self, dir: SessionDir) -> Result<SessionFlusher, ClientError> {
        if dir.read_closed()?.is_none() {
            dir.write_closed(&Closed {
                reason: "the connection ended when its proxy stopped".to_owned(),
                bytes_in: 0,
                bytes_out: 0,
            })?;
        }
        SessionFlusher::resume(self.clone(), dir)
    }

    /// Streams the whole recording as a plain asciicast v2 file (the `.cast` export).
    pub async fn export_cast(
        &self,
        recording: Uuid,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        self.read(recording, 0.0, out).await
    }

    /// Writes the recording from `from_time` seconds on: the header line, then the events.
    pub async fn read(
        &self,
        recording: Uuid,
        from_time: f64,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let mut stream = self
            .grpc
            .clone()
            .read(pb::ReadRequest {
                recording_id: Some(recording.into()),
                from_time,
            })
            .await?
            .into_inner();
        let mut total = 0;
        while let Some(part) = stream.message().await? {
            out.write_all(&part.data).await?;
            total += part.data.len() as u64;
        }
        out.flush().await?;
        Ok(total)
    }
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let error = crate::spool::io_error(dir);
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(error(e)),
    }
    // Recordings are as secret as the sessions they record.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(crate::spool::io_error(dir))
}
