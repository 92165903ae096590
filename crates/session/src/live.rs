//! A session while its holder has it: counters and heartbeats, the spooled timeline, recordings,
//! termination requests; and the flusher that uploads it all and closes it at the end.

use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8shell_proto::session::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_stream::StreamExt as _;
use uuid::Uuid;

use crate::asciicast::Header;
use crate::client::{Client, ClientError};
use crate::recording::{Progress, Recording, RecordingKind};
use crate::spool::{Closed, RecordingMeta, SessionDir, SpooledEvent, io_error, whole_lines_length};
use crate::upload::upload_recording;

/// A request to end a session, as it travels on `k8shell.session.terminate.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateNotice {
    pub reason: String,
    /// Who asked (a username, or `session` when the service ended it).
    pub requested_by: String,
}

/// The reply a holder sends to acknowledge a terminate request.
pub const TERMINATE_ACK: &[u8] = b"ok";

enum Command {
    Recording(RecordingMeta, watch::Receiver<Progress>),
    EventsAdded,
    Close,
}

struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Unix seconds of the last user activity.
    last_activity: AtomicI64,
}

/// An open session. Close it with [`LiveSession::close`]; dropping it closes it too.
pub struct LiveSession {
    id: Uuid,
    dir: SessionDir,
    record_input: bool,
    counters: Arc<Counters>,
    events: Mutex<(File, u64)>,
    commands: mpsc::UnboundedSender<Command>,
    terminated: watch::Receiver<Option<TerminateNotice>>,
    flusher: Option<JoinHandle<()>>,
    background: Vec<AbortHandle>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    pub(crate) fn start(
        client: Client,
        dir: SessionDir,
        terminate: Option<async_nats::Subscriber>,
    ) -> Result<Self, ClientError> {
        let events_path = dir.events_path();
        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&events_path)
            .map_err(io_error(&events_path))?;
        let counters = Arc::new(Counters {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_activity: AtomicI64::new(k8shell_common::clock::now().unix_timestamp()),
        });
        let (notice, terminated) = watch::channel(None);
        let notice = Arc::new(notice);
        let mut background = Vec::new();
        if let (Some(subscriber), Some(nats)) = (terminate, client.nats.clone()) {
            background.push(
                tokio::spawn(listen_for_terminate(subscriber, nats, Arc::clone(&notice)))
                    .abort_handle(),
            );
        }
        background.push(
            tokio::spawn(heartbeat(
                client.clone(),
                dir.id,
                Arc::clone(&counters),
                Arc::clone(&notice),
            ))
            .abort_handle(),
        );
        let (commands, receiver) = mpsc::unbounded_channel();
        let flusher = SessionFlusher {
            client: client.clone(),
            dir: dir.clone(),
            recordings: Vec::new(),
            events_sent: 0,
        };
        Ok(Self {
            id: dir.id,
            dir,
            record_input: client.config.record_input,
            counters,
            events: Mutex::new((events, 0)),
            commands,
            terminated,
            flusher: Some(tokio::spawn(flusher.run_live(receiver))),
            background,
        })
    }

    /// The session's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Resolves when someone asked to end the session (Terminate, or the service ended it).
    /// The future does not borrow the session, so a holder can wait for it in another task.
    pub fn terminated(&self) -> impl Future<Output = TerminateNotice> + Send + use<> {
        let mut terminated = self.terminated.clone();
        async move {
            // The guard is dropped before any further await (it is not Send).
            let notice = terminated
                .wait_for(Option::is_some)
                .await
                .map(|notice| notice.clone().unwrap_or_else(unreachable_notice));
            match notice {
                Ok(notice) => notice,
                // The watchers are gone only when the session is being dropped.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Bytes from the client into the workspace.
    pub fn add_bytes_in(&self, n: u64) {
        self.counters.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Bytes from the workspace to the client.
    pub fn add_bytes_out(&self, n: u64) {
        self.counters.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The user did something (what idle stop looks at).
    pub fn touch(&self) {
        self.counters.last_activity.store(
            k8shell_common::clock::now().unix_timestamp(),
            Ordering::Relaxed,
        );
    }

    /// Adds an event to the timeline: `kind` (`exec`, `forward`, `sftp`, …), the channel it is
    /// about (0 for none) and its details as a JSON object.
    pub fn event(
        &self,
        kind: &str,
        channel: u32,
        data: serde_json::Value,
    ) -> Result<(), ClientError> {
        if kind.is_empty()
            || kind.len() > 64
            || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(ClientError::Invalid(format!(
                "timeline event kind {kind:?}: use lowercase letters and `_`, at most 64"
            )));
        }
        if !data.is_object() {
            return Err(ClientError::Invalid(format!(
                "timeline event {kind}: the details must be a JSON object, not {data}"
            )));
        }
        let path = self.dir.events_path();
        {
            let mut guard = self
                .events
                .lock()
                .map_err(|_| ClientError::Invalid("timeline lock poisoned".to_owned()))?;
            let (file, seq) = &mut *guard;
            *seq += 1;
            let event = SpooledEvent {
                seq: *seq,
                at: k8shell_common::clock::now(),
                kind: kind.to_owned(),
                channel,
                data,
            };
            let mut line = serde_json::to_vec(&event).map_err(|e| io_error(&path)(e.into()))?;
            line.push(b'\n');
            file.write_all(&line).map_err(io_error(&path))?;
        }
        // The flusher is gone only after close.
        let _ = self.commands.send(Command::EventsAdded);
        Ok(())
    }

    /// Starts recording a terminal (`Pty`) or an exec channel's command and output (`Exec`).
    pub fn record(
        &self,
        channel: u32,
        kind: RecordingKind,
        header: &Header,
    ) -> Result<Recording, ClientError> {
        let (recording, meta, progress) =
            Recording::create(&self.dir, channel, kind, header, self.record_input)?;
        let _ = self.commands.send(Command::Recording(meta, progress));
        Ok(recording)
    }

    /// Ends the session with `reason`. What is still in the spool is uploaded in the background;
    /// await [`Closing::flushed`] to wait for it.
    pub fn close(mut self, reason: &str) -> Result<Closing, ClientError> {
        self.dir.write_closed(&Closed {
            reason: reason.to_owned(),
            bytes_in: self.counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.counters.bytes_out.load(Ordering::Relaxed),
        })?;
        let _ = self.commands.send(Command::Close);
        Ok(Closing {
            flusher: self.flusher.take(),
        })
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        if self.flusher.is_some() {
            // Dropped without close: the flusher closes it with a reason that says so.
            let _ = self.commands.send(Command::Close);
        }
    }
}

fn unreachable_notice() -> TerminateNotice {
    TerminateNotice {
        reason: "terminated".to_owned(),
        requested_by: String::new(),
    }
}

/// The end of a session in progress.
#[derive(Debug)]
pub struct Closing {
    flusher: Option<JoinHandle<()>>,
}

impl Closing {
    /// Waits until the timeline, every recording and the close itself reached the service.
    pub async fn flushed(self) {
        if let Some(flusher) = self.flusher
            && let Err(error) = flusher.await
        {
            tracing::error!(%error, "session flusher failed");
        }
    }
}

async fn listen_for_terminate(
    mut subscriber: async_nats::Subscriber,
    nats: async_nats::Client,
    notice: Arc<watch::Sender<Option<TerminateNotice>>>,
) {
    while let Some(message) = subscriber.next().await {
        let request =
            serde_json::from_slice::<TerminateNotice>(&message.payload).unwrap_or_else(|_| {
                TerminateNotice {
                    reason: String::from_utf8_lossy(&message.payload).into_owned(),
                    requested_by: String::new(),
                }
            });
        if let Some(reply) = message.reply
            && let Err(error) = nats.publish(reply, TERMINATE_ACK.into()).await
        {
            tracing::warn!(%error, "could not acknowledge a terminate request");
        }
        tracing::info!(reason = %request.reason, by = %request.requested_by, "session terminated on request");
        notice.send_replace(Some(request));
    }
}

async fn heartbeat(
    client: Client,
    id: Uuid,
    counters: Arc<Counters>,
    notice: Arc<watch::Sender<Option<TerminateNotice>>>,
) {
    let mut every = tokio::time::interval(client.config.heartbeat_every);
    every.tick().await;
    loop {
        every.tick().await;
        let last_activity = time::OffsetDateTime::from_unix_timestamp(
            counters.last_activity.load(Ordering::Relaxed),
        )
        .unwrap_or_else(|_| k8shell_common::clock::now());
        let request = pb::HeartbeatRequest {
            id: Some(id.into()),
            bytes_in: counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: counters.bytes_out.load(Ordering::Relaxed),
            last_activity_at: Some(k8shell_proto::types::v1::timestamp(last_activity)),
        };
        match client.grpc.clone().heartbeat(request).await {
            Ok(answer) if !answer.get_ref().live => {
                notice.send_replace(Some(TerminateNotice {
                    reason: "the session service has ended this session".to_owned(),
                    requested_by: "session".to_owned(),
                }));
            }
            Ok(_) => {}
            Err(status) => {
                tracing::warn!(session = %id, error = %status.message(), "heartbeat failed")
            }
        }
    }
}

/// Uploads one session's spool: timeline, recordings, and the close.
pub(crate) struct SessionFlusher {
    client: Client,
    dir: SessionDir,
    recordings: Vec<(RecordingMeta, watch::Receiver<Progress>)>,
    /// Bytes of `events.jsonl` the service has.
    events_sent: u64,
}

impl SessionFlusher {
    /// A flusher for a session a previous run left behind: every recording is as long as its
    /// whole lines, and finished.
    pub fn resume(client: Client, dir: SessionDir) -> Result<Self, ClientError> {
        let mut recordings = Vec::new();
        for (meta, _done) in dir.recordings()? {
            let cast = dir.recording_path(meta.recording_id, "cast");
            if !cast.exists() {
                // Uploaded; the process died while removing its files.
                let _ = std::fs::remove_file(dir.recording_path(meta.recording_id, "json"));
                continue;
            }
            let written = whole_lines_length(&cast)?;
            let (_, progress) = watch::channel(Progress {
                written,
                finished: true,
            });
            recordings.push((meta, progress));
        }
        Ok(Self {
            client,
            dir,
            recordings,
            events_sent: 0,
        })
    }

    pub fn recordings(&self) -> usize {
        self.recordings.len()
    }

    async fn run_live(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut uploads = JoinSet::new();
        loop {
            match commands.recv().await {
                Some(Command::Recording(meta, progress)) => {
                    uploads.spawn(self.upload(meta, progress));
                }
                Some(Command::EventsAdded) => {
                    if let Err(error) = self.send_events().await {
                        // They stay in the spool; the next event or the close sends them.
                        tracing::warn!(session = %self.dir.id, %error, "timeline upload failed");
                    }
                }
                Some(Command::Close) | None => break,
            }
        }
        if let Ok(None) = self.dir.read_closed() {
            let closed = Closed {
                reason: "the proxy dropped the session without closing it".to_owned(),
                bytes_in: 0,
                bytes_out: 0,
            };
            if let Err(error) = self.dir.write_closed(&closed) {
                tracing::error!(%error, "could not spool the end of a session");
            }
        }
        self.finish(uploads).await;
    }

    /// Uploads everything and closes the session.
    pub async fn run(mut self) {
        let mut uploads = JoinSet::new();
        for (meta, progress) in std::mem::take(&mut self.recordings) {
            uploads.spawn(self.upload(meta, progress));
        }
        self.finish(uploads).await;
    }

    fn upload(
        &self,
        meta: RecordingMeta,
        progress: watch::Receiver<Progress>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let grpc = self.client.grpc.clone();
        let max_backoff = self.client.config.max_backoff;
        let dir = self.dir.clone();
        async move {
            let path = dir.recording_path(meta.recording_id, "cast");
            if upload_recording(grpc, &meta, &path, progress, max_backoff).await {
                // The meta file first: a crash after it leaves files no resumer looks at.
                for extension in ["json", "done", "cast"] {
                    let _ = std::fs::remove_file(dir.recording_path(meta.recording_id, extension));
                }
            }
        }
    }

    async fn finish(mut self, mut uploads: JoinSet<()>) {
        let mut backoff = std::time::Duration::from_millis(50);
        let max_backoff = self.client.config.max_backoff;
        while let Err(error) = self.send_events().await {
            tracing::warn!(session = %self.dir.id, %error, "timeline upload failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
        }
        let closed = match self.dir.read_closed() {
            Ok(Some(closed)) => closed,
            other => {
                tracing::error!(session = %self.dir.id, ?other, "the end of the session is missing from the spool");
                Closed {
                    reason: "unknown".to_owned(),
                    bytes_in: 0,
                    bytes_out: 0,
                }
            }
        };
        loop {
            let request = pb::CloseRequest {
                id: Some(self.dir.id.into()),
                reason: closed.reason.clone(),
                bytes_in: closed.bytes_in,
                bytes_out: closed.bytes_out,
            };
            match self.client.grpc.clone().close(request).await {
                Ok(_) => break,
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::NotFound | tonic::Code::PermissionDenied
                    ) =>
                {
                    tracing::error!(session = %self.dir.id, error = %status.message(), "the session service refused to close this session");
                    break;
                }
                Err(status) => {
                    tracing::warn!(session = %self.dir.id, error = %status.message(), "close failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
        // The session is over for everyone now; its recordings may take longer to arrive.
        while uploads.join_next().await.is_some() {}
        let leftovers = self.dir.recordings().map(|r| r.len()).unwrap_or(1);
        if leftovers == 0 {
            if let Err(error) = self.dir.remove() {
                tracing::warn!(%error, "could not remove an uploaded session from the spool");
            }
        } else {
            tracing::error!(session = %self.dir.id, leftovers, "recordings the service refused stay in the spool");
        }
    }

    /// Sends the timeline events the service does not have yet.
    async fn send_events(&mut self) -> Result<(), ClientError> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let path = self.dir.events_path();
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => {
                file.seek(SeekFrom::Start(self.events_sent))
                    .map_err(io_error(&path))?;
                file.read_to_end(&mut bytes).map_err(io_error(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&path)(e).into()),
        }
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let mut events = Vec::new();
        for line in bytes[..end].split(|&b| b == b'\n') {
            match serde_json::from_slice::<SpooledEvent>(line) {
                Ok(event) => events.push(pb::TimelineEvent {
                    seq: event.seq,
                    at: Some(k8shell_proto::types::v1::timestamp(event.at)),
                    kind: event.kind,
                    channel: event.channel,
                    data_json: event.data.to_string(),
                }),
                Err(error) => {
                    tracing::error!(%error, "skipping an unreadable timeline event in the spool")
                }
            }
        }
        let session_id = Some(self.dir.id.into());
        let batches: Vec<pb::AddEventsRequest> = events
            .chunks(500)
            .map(|batch| pb::AddEventsRequest {
                session_id: session_id.clone(),
                events: batch.to_vec(),
            })
            .collect();
        match self
            .client
            .grpc
            .clone()
            .add_events(tokio_stream::iter(batches))
            .await
        {
            Ok(_) => {}
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::NotFound
                        | tonic::Code::PermissionDenied
                ) =>
            {
                // Retrying cannot help; the events stay in the log, not in the spool forever.
                tracing::error!(session = %self.dir.id, error = %status.message(), "the session service refused timeline events");
            }
            Err(status) => return Err(status.into()),
        }
        self.events_sent += end as u64 + 1;
        Ok(())
    }
}
