//! The gRPC service `k8shell.session.v1.Sessions`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use k8shell_common::events::types::{SessionClosed, SessionKind, SessionOpened, SessionTerminated};
use k8shell_common::events::{Event, EventBody, EventPublisher};
use k8shell_common::grpc::caller_service;
use k8shell_proto::MAX_FRAME_BYTES;
use k8shell_proto::session::v1 as pb;
use k8shell_proto::session::v1::sessions_server::Sessions;
use k8shell_proto::types::v1::{Id, PageInfo, UserRef, WorkspaceRef, from_timestamp, timestamp};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::blob::RecordingStore;
use crate::chunker::{ChunkPolicy, Chunker, PendingChunk};
use crate::live::{TERMINATE_ACK, TerminateNotice};
use crate::live_view::LiveView;
use crate::store::{
    ChunkRow, ListFilter, NewSessionRow, SessionRow, Store, StoreError, TimelineRow,
};

/// How uploads become chunks.
#[derive(Debug, Clone, Copy)]
pub struct IngestPolicy {
    pub chunks: ChunkPolicy,
    pub flush_after: Duration,
    pub zstd_level: i32,
}

/// The service.
#[derive(Debug, Clone)]
pub struct SessionService {
    pub(crate) store: Store,
    pub(crate) blobs: Arc<dyn RecordingStore>,
    pub(crate) live: Arc<LiveView>,
    pub(crate) events: EventPublisher,
    pub(crate) nats: async_nats::Client,
    pub(crate) ingest: IngestPolicy,
    /// How long Terminate waits for the holder to answer.
    pub(crate) terminate_wait: Duration,
    /// Shutdown: long streams (uploads, live views) end so that the server can stop.
    pub(crate) stop: tokio_util::sync::CancellationToken,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

const MAX_PAGE: u32 = 500;
const DEFAULT_PAGE: u32 = 50;

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NoSession(_) | StoreError::NoRecording(_) => {
                Status::not_found(error.to_string())
            }
            StoreError::NotHolder(..) => Status::permission_denied(error.to_string()),
            StoreError::WrongSession(_) => Status::invalid_argument(error.to_string()),
            StoreError::Concurrent { .. } => Status::aborted(error.to_string()),
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                Status::unavailable("the session database is unavailable; retry")
            }
        }
    }
}

fn id_of(id: Option<&Id>, what: &str) -> Result<Uuid, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument(format!("`{what}` is required")))?;
    Uuid::try_from(id).map_err(|e| Status::invalid_argument(format!("`{what}`: {e}")))
}

fn required<'a>(value: &'a str, what: &str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        Err(Status::invalid_argument(format!("`{what}` is required")))
    } else {
        Ok(value)
    }
}

fn kind_name(kind: i32) -> Result<&'static str, Status> {
    match pb::SessionKind::try_from(kind) {
        Ok(pb::SessionKind::Ssh) => Ok("ssh"),
        Ok(pb::SessionKind::Console) => Ok("console"),
        _ => Err(Status::invalid_argument("`kind` must be SSH or CONSOLE")),
    }
}

pub(crate) fn session_message(row: SessionRow) -> pb::Session {
    let kind = match row.kind.as_str() {
        "ssh" => pb::SessionKind::Ssh,
        "console" => pb::SessionKind::Console,
        _ => pb::SessionKind::Unspecified,
    };
    pb::Session {
        id: Some(row.id.into()),
        user: Some(UserRef {
            id: Some(row.user_id.into()),
            username: row.username,
        }),
        workspace: Some(WorkspaceRef {
            id: Some(row.workspace_id.into()),
            owner: row.workspace_owner,
            name: row.workspace_name,
        }),
        kind: kind as i32,
        client_addr: row.client.to_string(),
        client_version: row.client_version,
        admin_access: row.admin_access,
        holder: row.holder,
        started_at: Some(timestamp(row.started_at)),
        last_activity_at: Some(timestamp(row.last_activity_at)),
        ended_at: row.ended_at.map(timestamp),
        end_reason: row.end_reason.unwrap_or_default(),
        bytes_in: u64::try_from(row.bytes_in).unwrap_or(0),
        bytes_out: u64::try_from(row.bytes_out).unwrap_or(0),
    }
}

fn timeline_message(row: TimelineRow) -> pb::TimelineEvent {
    pb::TimelineEvent {
        seq: row.seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        at: Some(timestamp(row.at)),
        kind: row.kind,
        channel: u32::try_from(row.channel).unwrap_or(0),
        data_json: row.data.to_string(),
    }
}

fn timeline_row(event: pb::TimelineEvent) -> Result<TimelineRow, Status> {
    let kind = required(&event.kind, "events.kind")?;
    if kind.len() > 64 || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(Status::invalid_argument(format!(
            "event kind {kind:?}: use lowercase letters and `_`, at most 64"
        )));
    }
    let data: serde_json::Value = if event.data_json.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&event.data_json).map_err(|e| {
            Status::invalid_argument(format!("event {}: `data_json` is not JSON: {e}", event.seq))
        })?
    };
    if !data.is_object() {
        return Err(Status::invalid_argument(format!(
            "event {}: `data_json` must be a JSON object",
            event.seq
        )));
    }
    let at = event
        .at
        .as_ref()
        .map(from_timestamp)
        .transpose()
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .unwrap_or_else(k8shell_common::clock::now);
    Ok(TimelineRow {
        seq: Some(
            i64::try_from(event.seq).map_err(|_| Status::invalid_argument("`seq` is too large"))?,
        ),
        at,
        kind: kind.to_owned(),
        channel: i32::try_from(event.channel).unwrap_or(i32::MAX),
        data,
    })
}

/// Cursor of a List page: the last session's start time and id.
fn encode_cursor(row: &SessionRow) -> String {
    format!("{}_{}", row.started_at.unix_timestamp_nanos(), row.id)
}

fn decode_cursor(cursor: &str) -> Result<(OffsetDateTime, Uuid), Status> {
    let invalid = || {
        Status::invalid_argument(
            "invalid page cursor: pass `next_cursor` of the previous page unchanged",
        )
    };
    let (nanos, id) = cursor.split_once('_').ok_or_else(invalid)?;
    let nanos: i128 = nanos.parse().map_err(|_| invalid())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| invalid())?;
    Ok((at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

impl SessionService {
    async fn publish<T: EventBody>(&self, body: T) {
        if let Err(error) = self.events.publish(&Event::new(body)).await {
            tracing::error!(%error, "could not queue an audit event");
        }
    }

    async fn publish_closed(&self, row: &SessionRow) {
        self.live.close(row.id);
        self.publish(SessionClosed {
            session_id: row.id,
            reason: row.end_reason.clone().unwrap_or_default(),
            bytes_in: u64::try_from(row.bytes_in).unwrap_or(0),
            bytes_out: u64::try_from(row.bytes_out).unwrap_or(0),
        })
        .await;
    }

    /// Closes sessions whose holder is gone; used by the maintenance job.
    pub(crate) async fn closed_elsewhere(&self, rows: &[SessionRow]) {
        for row in rows {
            tracing::info!(session = %row.id, reason = ?row.end_reason, "closed a lost session");
            self.publish_closed(row).await;
        }
    }
}

#[tonic::async_trait]
impl Sessions for SessionService {
    async fn open(
        &self,
        request: Request<pb::OpenRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let holder = caller_service(&request)?;
        let open = request.into_inner();
        let user = open
            .user
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("`user` is required"))?;
        let workspace = open
            .workspace
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("`workspace` is required"))?;
        let client: SocketAddr = open.client_addr.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "`client_addr` {:?} is not ip:port (IPv6 in brackets)",
                open.client_addr
            ))
        })?;
        let new = NewSessionRow {
            id: id_of(open.id.as_ref(), "id")?,
            user_id: id_of(user.id.as_ref(), "user.id")?,
            username: required(&user.username, "user.username")?.to_owned(),
            workspace_id: id_of(workspace.id.as_ref(), "workspace.id")?,
            workspace_owner: required(&workspace.owner, "workspace.owner")?.to_owned(),
            workspace_name: required(&workspace.name, "workspace.name")?.to_owned(),
            kind: kind_name(open.kind)?,
            client: SocketAddr::new(client.ip().to_canonical(), client.port()),
            client_version: open.client_version.chars().take(256).collect(),
            admin_access: open.admin_access,
            holder,
        };
        let (row, inserted) = self.store.open(&new).await?;
        if inserted {
            self.live.open(row.id);
            tracing::info!(session = %row.id, user = %row.username, workspace = %row.workspace_name, client = %row.client, "session opened");
            self.publish(SessionOpened {
                session_id: row.id,
                user: row.username.clone(),
                workspace: row.workspace_id,
                kind: if row.kind == "ssh" {
                    SessionKind::Ssh
                } else {
                    SessionKind::Console
                },
                client_ip: row.client.ip(),
            })
            .await;
        }
        Ok(Response::new(session_message(row)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = caller_service(&request)?;
        let beat = request.into_inner();
        let id = id_of(beat.id.as_ref(), "id")?;
        self.store.require_holder(id, &caller).await?;
        let last_activity = beat
            .last_activity_at
            .as_ref()
            .map(from_timestamp)
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let live = self
            .store
            .heartbeat(id, beat.bytes_in, beat.bytes_out, last_activity)
            .await?;
        Ok(Response::new(pb::HeartbeatResponse { live }))
    }

    async fn close(
        &self,
        request: Request<pb::CloseRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let caller = caller_service(&request)?;
        let close = request.into_inner();
        let id = id_of(close.id.as_ref(), "id")?;
        self.store.require_holder(id, &caller).await?;
        let reason = if close.reason.trim().is_empty() {
            "closed"
        } else {
            close.reason.as_str()
        };
        let (row, closed) = self
            .store
            .close(id, reason, close.bytes_in, close.bytes_out)
            .await?;
        if closed {
            tracing::info!(session = %id, reason, "session closed");
            self.publish_closed(&row).await;
        }
        Ok(Response::new(session_message(row)))
    }

    async fn add_events(
        &self,
        request: Request<Streaming<pb::AddEventsRequest>>,
    ) -> Result<Response<pb::AddEventsResponse>, Status> {
        let caller = caller_service(&request)?;
        let mut incoming = request.into_inner();
        let mut checked: Option<Uuid> = None;
        let mut stored = 0;
        while let Some(batch) = incoming.message().await? {
            let id = id_of(batch.session_id.as_ref(), "session_id")?;
            if checked != Some(id) {
                self.store.require_holder(id, &caller).await?;
                checked = Some(id);
            }
            let rows = batch
                .events
                .into_iter()
                .map(timeline_row)
                .collect::<Result<Vec<_>, _>>()?;
            stored += self.store.add_events(id, &rows).await?;
        }
        Ok(Response::new(pb::AddEventsResponse { stored }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let list = request.into_inner();
        let page = list.page.unwrap_or_default();
        let limit = match page.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let to_time = |t: Option<&prost_types::Timestamp>| {
            t.map(from_timestamp)
                .transpose()
                .map_err(|e| Status::invalid_argument(e.to_string()))
        };
        let filter = ListFilter {
            username: Some(list.username).filter(|u| !u.is_empty()),
            workspace_id: list
                .workspace_id
                .as_ref()
                .map(|id| id_of(Some(id), "workspace_id"))
                .transpose()?,
            live: list.live,
            started_after: to_time(list.started_after.as_ref())?,
            started_before: to_time(list.started_before.as_ref())?,
            after: Some(page.cursor)
                .filter(|c| !c.is_empty())
                .map(|c| decode_cursor(&c))
                .transpose()?,
            limit: limit + 1,
        };
        let mut rows = self.store.list(&filter).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = match rows.last() {
            Some(last) if more => encode_cursor(last),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListResponse {
            sessions: rows.into_iter().map(session_message).collect(),
            page: Some(PageInfo { next_cursor }),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let id = id_of(request.get_ref().id.as_ref(), "id")?;
        let session = self.store.session(id).await?;
        let timeline = self.store.timeline(id).await?;
        let recordings = self.store.recordings_of(id).await?;
        Ok(Response::new(pb::GetResponse {
            session: Some(session_message(session)),
            timeline: timeline.into_iter().map(timeline_message).collect(),
            recordings: recordings.into_iter().map(recording_message).collect(),
        }))
    }

    async fn get_recording(
        &self,
        request: Request<pb::GetRecordingRequest>,
    ) -> Result<Response<pb::Recording>, Status> {
        let id = id_of(request.get_ref().id.as_ref(), "id")?;
        Ok(Response::new(recording_message(
            self.store.recording(id).await?,
        )))
    }

    async fn terminate(
        &self,
        request: Request<pb::TerminateRequest>,
    ) -> Result<Response<pb::TerminateResponse>, Status> {
        let terminate = request.into_inner();
        let id = id_of(terminate.id.as_ref(), "id")?;
        let reason = required(&terminate.reason, "reason")?.to_owned();
        let requested_by = required(&terminate.requested_by, "requested_by")?.to_owned();
        let session = self.store.session(id).await?;
        if session.ended_at.is_some() {
            return Err(Status::failed_precondition(format!(
                "session {id} has already ended ({})",
                session.end_reason.unwrap_or_default()
            )));
        }
        let notice = TerminateNotice {
            reason: reason.clone(),
            requested_by: requested_by.clone(),
        };
        let payload = serde_json::to_vec(&notice).map_err(|e| Status::internal(e.to_string()))?;
        let subject = k8shell_common::events::types::subjects::session_terminate(id);
        let answer = tokio::time::timeout(
            self.terminate_wait,
            self.nats.request(subject, payload.into()),
        )
        .await;
        let delivered = matches!(&answer, Ok(Ok(reply)) if reply.payload.as_ref() == TERMINATE_ACK);
        if !delivered {
            tracing::warn!(session = %id, ?answer, "no proxy acknowledged a terminate request; closing the session here");
        }
        let event = TimelineRow {
            seq: None,
            at: k8shell_common::clock::now(),
            kind: "terminate".to_owned(),
            channel: 0,
            data: serde_json::json!({"reason": reason, "requested_by": requested_by, "delivered": delivered}),
        };
        self.store.add_events(id, &[event]).await?;
        self.publish(SessionTerminated {
            session_id: id,
            reason: reason.clone(),
            requested_by: requested_by.clone(),
            delivered,
        })
        .await;
        if !delivered {
            let why = format!("terminated by {requested_by}: {reason}");
            let (row, closed) = self.store.close(id, &why, 0, 0).await?;
            if closed {
                self.publish_closed(&row).await;
            }
        }
        Ok(Response::new(pb::TerminateResponse { delivered }))
    }

    type UploadStream = BoxStream<pb::UploadResponse>;

    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<Self::UploadStream>, Status> {
        let caller = caller_service(&request)?;
        let mut incoming = request.into_inner();
        let Some(pb::UploadRequest {
            msg: Some(pb::upload_request::Msg::Start(start)),
        }) = incoming.message().await?
        else {
            return Err(Status::invalid_argument("an upload begins with `start`"));
        };
        let session_id = id_of(start.session_id.as_ref(), "start.session_id")?;
        let recording_id = id_of(start.recording_id.as_ref(), "start.recording_id")?;
        if !matches!(start.kind.as_str(), "pty" | "exec") {
            return Err(Status::invalid_argument(
                "`start.kind` must be `pty` or `exec`",
            ));
        }
        let header: serde_json::Value = serde_json::from_str(&start.header_json).map_err(|e| {
            Status::invalid_argument(format!("`start.header_json` is not JSON: {e}"))
        })?;
        if header.get("version") != Some(&serde_json::json!(2)) {
            return Err(Status::invalid_argument(
                "`start.header_json` must be an asciicast v2 header",
            ));
        }
        let session = self.store.require_holder(session_id, &caller).await?;
        let recording = self
            .store
            .start_recording(
                recording_id,
                session_id,
                start.channel,
                &start.kind,
                &start.header_json,
            )
            .await?;
        let (answers, outgoing) = mpsc::channel(16);
        let first = pb::UploadResponse {
            acked: u64::try_from(recording.stored_bytes).unwrap_or(0),
            complete: recording.complete,
            recording_id: Some(recording_id.into()),
        };
        // The channel is new and has room.
        let _ = answers.send(Ok(first)).await;
        if !recording.complete {
            if session.ended_at.is_none() {
                // After a restart of this service, the feed starts again with the upload.
                self.live.open(session_id);
            }
            let next_seq = self.store.next_chunk_seq(recording_id).await?;
            let ingest = Ingest {
                service: self.clone(),
                session_id,
                recording_id,
                channel: start.channel,
                header: start.header_json,
                chunker: Chunker::new(
                    u64::try_from(recording.stored_bytes).unwrap_or(0),
                    self.ingest.chunks,
                ),
                next_seq,
                answers,
            };
            tokio::spawn(ingest.run(incoming));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }

    type ReadStream = BoxStream<pb::RecordingData>;

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let read = request.into_inner();
        let id = id_of(read.recording_id.as_ref(), "recording_id")?;
        if !read.from_time.is_finite() {
            return Err(Status::invalid_argument(
                "`from_time` must be a number of seconds",
            ));
        }
        let recording = self.store.recording(id).await?;
        let chunks = self.store.chunks(id, read.from_time).await?;
        let channel = u32::try_from(recording.channel).unwrap_or(0);
        let (sender, receiver) = mpsc::channel(4);
        let blobs = Arc::clone(&self.blobs);
        let from_time = read.from_time;
        tokio::spawn(async move {
            let send = |data: Vec<u8>| {
                let sender = sender.clone();
                async move { send_frames(&sender, channel, &data).await }
            };
            if from_time > 0.0 && !send(format!("{}\n", recording.header).into_bytes()).await {
                return;
            }
            for chunk in chunks {
                let bytes = match read_chunk(blobs.as_ref(), &chunk).await {
                    Ok(bytes) => bytes,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let bytes = if from_time > 0.0 {
                    lines_from(&bytes, chunk.start_offset == 0, from_time)
                } else {
                    bytes
                };
                if !send(bytes).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type WatchStream = BoxStream<pb::RecordingData>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = id_of(request.get_ref().session_id.as_ref(), "session_id")?;
        let session = self.store.session(id).await?;
        if session.ended_at.is_some() {
            return Err(Status::failed_precondition(format!(
                "session {id} has ended; replay its recordings with Read"
            )));
        }
        self.live.open(id);
        let Some((first, mut frames)) = self.live.watch(id) else {
            return Err(Status::failed_precondition(format!(
                "session {id} has ended"
            )));
        };
        let (sender, receiver) = mpsc::channel(64);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            for frame in first {
                if sender
                    .send(Ok(pb::RecordingData {
                        data: frame.data.to_vec(),
                        channel: frame.channel,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    next = frames.recv() => next,
                    () = stop.cancelled() => {
                        let _ = sender.send(Err(Status::unavailable("the session service is restarting; watch again"))).await;
                        return;
                    }
                };
                match next {
                    Ok(frame) => {
                        let data = pb::RecordingData {
                            data: frame.data.to_vec(),
                            channel: frame.channel,
                        };
                        if sender.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a live viewer fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Sends `data` in frames of at most 64 KiB; false when the reader went away.
async fn send_frames(
    sender: &mpsc::Sender<Result<pb::RecordingData, Status>>,
    channel: u32,
    data: &[u8],
) -> bool {
    for piece in data.chunks(MAX_FRAME_BYTES) {
        let frame = pb::RecordingData {
            data: piece.to_vec(),
            channel,
        };
        if sender.send(Ok(frame)).await.is_err() {
            return false;
        }
    }
    true
}

async fn read_chunk(blobs: &dyn RecordingStore, chunk: &ChunkRow) -> Result<Vec<u8>, Status> {
    let compressed = blobs.get(&chunk.object_key).await.map_err(|e| {
        tracing::error!(error = %e, "recording chunk unreadable");
        Status::data_loss(format!("recording chunk {} is unreadable", chunk.seq))
    })?;
    let capacity = usize::try_from(chunk.end_offset - chunk.start_offset).unwrap_or(0);
    tokio::task::spawn_blocking(move || zstd::bulk::decompress(&compressed, capacity))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::data_loss(format!("recording chunk {} is corrupt: {e}", chunk.seq)))
}

/// The event lines of a chunk at or after `from_time` (the header line dropped).
fn lines_from(bytes: &[u8], has_header: bool, from_time: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    if has_header {
        lines.next();
    }
    for line in lines {
        if crate::asciicast::event_time(line).is_none_or(|t| t >= from_time) {
            out.extend_from_slice(line);
        }
    }
    out
}

/// One running upload: bytes in, chunks stored, acknowledgements out.
struct Ingest {
    service: SessionService,
    session_id: Uuid,
    recording_id: Uuid,
    channel: u32,
    header: String,
    chunker: Chunker,
    next_seq: i32,
    answers: mpsc::Sender<Result<pb::UploadResponse, Status>>,
}

impl Ingest {
    async fn run(mut self, mut incoming: Streaming<pb::UploadRequest>) {
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let message = tokio::select! {
                message = incoming.message() => message,
                () = self.service.stop.cancelled() => {
                    // Keep what is whole; the holder resends the rest to the next instance.
                    if let Some(chunk) = self.chunker.take_lines() {
                        let _ = self.store(chunk).await;
                    }
                    let _ = self.answers.send(Err(Status::unavailable("the session service is restarting; resume the upload"))).await;
                    return;
                }
                () = sleep_until(flush_at) => {
                    flush_at = None;
                    if let Some(chunk) = self.chunker.take_lines()
                        && let Err(status) = self.store(chunk).await
                    {
                        let _ = self.answers.send(Err(status)).await;
                        return;
                    }
                    continue;
                }
            };
            let result = match message {
                Ok(Some(pb::UploadRequest {
                    msg: Some(pb::upload_request::Msg::Data(data)),
                })) => {
                    let result = self.data(data).await;
                    if self.chunker.has_lines() && flush_at.is_none() {
                        flush_at =
                            Some(tokio::time::Instant::now() + self.service.ingest.flush_after);
                    }
                    result
                }
                Ok(Some(pb::UploadRequest {
                    msg: Some(pb::upload_request::Msg::Finish(finish)),
                })) => {
                    let result = self.finish(finish.length).await;
                    if let Err(status) = result {
                        let _ = self.answers.send(Err(status)).await;
                    }
                    return;
                }
                Ok(Some(_)) => Err(Status::invalid_argument(
                    "after `start`, send `data` and then `finish`",
                )),
                Ok(None) | Err(_) => {
                    // The holder went away; keep what is whole (it resends the rest).
                    if let Some(chunk) = self.chunker.take_lines()
                        && let Err(status) = self.store(chunk).await
                    {
                        tracing::warn!(recording = %self.recording_id, error = %status.message(), "could not keep the last lines of an interrupted upload");
                    }
                    return;
                }
            };
            if let Err(status) = result {
                let _ = self.answers.send(Err(status)).await;
                return;
            }
        }
    }

    async fn data(&mut self, data: pb::UploadData) -> Result<(), Status> {
        let received = self.chunker.received();
        if data.offset > received {
            return Err(Status::out_of_range(format!(
                "data at offset {} leaves a gap: the recording continues at {received}",
                data.offset
            )));
        }
        // A resend of bytes already here (after a reconnect) is skipped.
        let skip = usize::try_from(received - data.offset).unwrap_or(usize::MAX);
        if skip >= data.data.len() {
            return Ok(());
        }
        let (ready, lines) = self.chunker.push(&data.data[skip..]);
        if !lines.is_empty() {
            self.service.live.publish(
                self.session_id,
                self.recording_id,
                self.channel,
                &self.header,
                Bytes::from(lines),
            );
        }
        for chunk in ready {
            self.store(chunk).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, length: u64) -> Result<(), Status> {
        if length != self.chunker.received() {
            return Err(Status::failed_precondition(format!(
                "finish says the recording has {length} bytes, but {} arrived",
                self.chunker.received()
            )));
        }
        if let Some(chunk) = self.chunker.take_all() {
            self.store(chunk).await?;
        }
        let stored =
            i64::try_from(length).map_err(|_| Status::invalid_argument("length too large"))?;
        if !self
            .service
            .store
            .complete_recording(self.recording_id, stored)
            .await?
        {
            return Err(Status::aborted(
                "the recording moved on meanwhile; upload again",
            ));
        }
        let _ = self
            .answers
            .send(Ok(pb::UploadResponse {
                acked: length,
                complete: true,
                recording_id: Some(self.recording_id.into()),
            }))
            .await;
        Ok(())
    }

    /// Compresses and stores a chunk, indexes it, acknowledges it.
    async fn store(&mut self, chunk: PendingChunk) -> Result<(), Status> {
        let end = chunk.start + chunk.bytes.len() as u64;
        let level = self.service.ingest.zstd_level;
        let raw = chunk.bytes;
        let compressed = tokio::task::spawn_blocking(move || zstd::bulk::compress(&raw, level))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("compressing a chunk: {e}")))?;
        // A new key for every attempt: an upload that lost a race (see `add_chunk`) must never
        // overwrite a chunk another upload has indexed.
        let key = format!(
            "{}/{}/{:016}-{}.zst",
            self.session_id,
            self.recording_id,
            chunk.start,
            k8shell_common::ids::new_id().simple()
        );
        let compressed_bytes = i32::try_from(compressed.len()).unwrap_or(i32::MAX);
        self.service
            .blobs
            .put(&key, Bytes::from(compressed))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "recording store failed");
                Status::unavailable("the recording store is unavailable; retry")
            })?;
        let row = ChunkRow {
            seq: self.next_seq,
            start_offset: i64::try_from(chunk.start).unwrap_or(i64::MAX),
            end_offset: i64::try_from(end).unwrap_or(i64::MAX),
            first_time: chunk.first_time,
            last_time: chunk.last_time,
            compressed_bytes,
            object_key: key,
        };
        self.service
            .store
            .add_chunk(self.recording_id, &row)
            .await?;
        self.next_seq += 1;
        let _ = self
            .answers
            .send(Ok(pb::UploadResponse {
                acked: end,
                complete: false,
                recording_id: Some(self.recording_id.into()),
            }))
            .await;
        Ok(())
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn recording_message(r: crate::store::RecordingRow) -> pb::Recording {
    pb::Recording {
        id: Some(r.id.into()),
        channel: u32::try_from(r.channel).unwrap_or(0),
        kind: r.kind,
        header_json: r.header,
        stored_bytes: u64::try_from(r.stored_bytes).unwrap_or(0),
        duration: r.duration,
        complete: r.complete,
        chunks: u32::try_from(r.chunks).unwrap_or(u32::MAX),
        compressed_bytes: u64::try_from(r.compressed_bytes).unwrap_or(0),
        session_id: Some(r.session_id.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_from_a_time_skips_earlier_lines_and_the_header() {
        let chunk =
            b"{\"version\":2}\n[1.0, \"o\", \"a\"]\n[2.0, \"o\", \"b\"]\n[3.0, \"r\", \"80x24\"]\n";
        assert_eq!(
            lines_from(chunk, true, 2.0),
            b"[2.0, \"o\", \"b\"]\n[3.0, \"r\", \"80x24\"]\n"
        );
        assert_eq!(lines_from(&chunk[14..], false, 0.5).len(), chunk.len() - 14);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_say_what_to_do() {
        let row_at = time::macros::datetime!(2026-12-01 10:00:00.5 UTC);
        let id = Uuid::now_v7();
        let cursor = format!("{}_{id}", row_at.unix_timestamp_nanos());
        assert_eq!(decode_cursor(&cursor).unwrap(), (row_at, id));
        let err = decode_cursor("garbage").unwrap_err();
        assert!(err.message().contains("next_cursor"));
    }
}
