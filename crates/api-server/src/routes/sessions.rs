//! `/sessions` and `/recordings`: who was in which workspace, when, doing what, and the
//! terminal recordings. Users see their own sessions; the `api` policy's `sessions.list_all`
//! and `recordings.read_all` let auditors see everyone's, `sessions.terminate` end others'.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use k8shell_proto::session::v1 as spb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::caller::Caller;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::routes::common::{Page, action, id_text, parse_id, time_text};
use crate::state::{AppState, State};

/// A session: one SSH connection or browser terminal.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub username: String,
    pub workspace_id: String,
    /// `owner/name`.
    pub workspace: String,
    /// `ssh` or `console`.
    pub kind: String,
    /// The client's address.
    pub client_addr: String,
    /// The SSH client's version or the browser.
    pub client_version: String,
    /// An administrator entered someone else's workspace.
    pub admin_access: bool,
    pub started_at: Option<String>,
    pub last_activity_at: Option<String>,
    /// Absent while live.
    pub ended_at: Option<String>,
    pub end_reason: String,
    pub live: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl From<&spb::Session> for Session {
    fn from(s: &spb::Session) -> Self {
        let workspace = s.workspace.clone().unwrap_or_default();
        Self {
            id: id_text(s.id.as_ref()),
            username: s
                .user
                .as_ref()
                .map(|u| u.username.clone())
                .unwrap_or_default(),
            workspace_id: id_text(workspace.id.as_ref()),
            workspace: format!("{}/{}", workspace.owner, workspace.name),
            kind: match s.kind() {
                spb::SessionKind::Console => "console",
                _ => "ssh",
            }
            .to_owned(),
            client_addr: s.client_addr.clone(),
            client_version: s.client_version.clone(),
            admin_access: s.admin_access,
            started_at: time_text(s.started_at.as_ref()),
            last_activity_at: time_text(s.last_activity_at.as_ref()),
            ended_at: time_text(s.ended_at.as_ref()),
            end_reason: s.end_reason.clone(),
            live: s.ended_at.is_none(),
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
        }
    }
}

/// A page of sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<Session>,
    pub next_cursor: Option<String>,
}

/// Filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilter {
    /// Whose sessions (default: yours; others' need `sessions.list_all`; `*` for everyone's).
    pub user: Option<String>,
    /// One workspace's.
    #[param(value_type = Option<uuid::Uuid>)]
    pub workspace_id: Option<String>,
    /// Only live (`true`) or ended (`false`) ones.
    pub live: Option<bool>,
    /// Started at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Started before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn parse_time(text: Option<&str>, what: &str) -> ApiResult<Option<prost_types::Timestamp>> {
    text.map(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map(k8shell_proto::types::v1::timestamp)
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "`{what}` must be an RFC 3339 time like 2026-12-01T09:30:00Z, not {t:?}"
                ))
            })
    })
    .transpose()
}

#[utoipa::path(get, path = "/sessions", tag = "sessions", params(SessionFilter),
    responses((status = 200, body = SessionList),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    state: State,
    caller: Caller,
    Query(filter): Query<SessionFilter>,
) -> ApiResult<Json<SessionList>> {
    let username = match filter.user.as_deref() {
        None | Some("") => caller.username().to_owned(),
        Some(user) if user == caller.username() => user.to_owned(),
        Some(user) => {
            caller.require(&state, "sessions.list_all").await?;
            if user == "*" {
                String::new()
            } else {
                user.to_owned()
            }
        }
    };
    let workspace_id = filter
        .workspace_id
        .as_deref()
        .map(|id| parse_id(id, "workspace"))
        .transpose()?;
    let page = Page {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    };
    let listed = state
        .gateway
        .backends
        .sessions
        .grpc()
        .list(spb::ListRequest {
            username,
            workspace_id: workspace_id.map(Into::into),
            live: filter.live,
            started_after: parse_time(filter.since.as_deref(), "since")?,
            started_before: parse_time(filter.until.as_deref(), "until")?,
            page: Some(k8shell_proto::types::v1::PageRequest {
                limit: page.limit()?,
                cursor: page.cursor.unwrap_or_default(),
            }),
        })
        .await
        .map_err(|s| ApiError::from_status("the sessions", &s))?
        .into_inner();
    let next = listed.page.map(|p| p.next_cursor).unwrap_or_default();
    Ok(Json(SessionList {
        items: listed.sessions.iter().map(Session::from).collect(),
        next_cursor: (!next.is_empty()).then_some(next),
    }))
}

/// One event of a session's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub seq: u64,
    pub at: Option<String>,
    /// `decision`, `exec`, `pty`, `forward`, `sftp`, `exit`, `terminate`, …
    pub kind: String,
    pub channel: u32,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A recording of a terminal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recording {
    pub id: String,
    pub channel: u32,
    /// `pty`.
    pub kind: String,
    /// Seconds.
    pub duration: f64,
    /// Bytes of the `.cast` file.
    pub size: u64,
    /// All of it is stored.
    pub complete: bool,
}

impl From<&spb::Recording> for Recording {
    fn from(r: &spb::Recording) -> Self {
        Self {
            id: id_text(r.id.as_ref()),
            channel: r.channel,
            kind: r.kind.clone(),
            duration: r.duration,
            size: r.stored_bytes,
            complete: r.complete,
        }
    }
}

/// A session with its timeline and recordings.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDetails {
    pub session: Session,
    pub timeline: Vec<TimelineEvent>,
    pub recordings: Vec<Recording>,
}

/// The session is the caller's own.
fn owned_by(got: &spb::GetResponse, caller: &Caller) -> bool {
    got.session
        .as_ref()
        .and_then(|s| s.user.as_ref())
        .is_some_and(|u| u.username == caller.username())
}

/// A session the caller may see: their own, or anyone's with `sessions.list_all`.
async fn visible(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<spb::GetResponse> {
    let not_found = || ApiError::not_found(format!("you have no session {id}"));
    let got = state
        .gateway
        .backends
        .sessions
        .grpc()
        .get(spb::GetRequest {
            id: Some(id.into()),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => not_found(),
            _ => ApiError::from_status("the session", &s),
        })?
        .into_inner();
    if owned_by(&got, caller) || caller.may(state, "sessions.list_all").await {
        Ok(got)
    } else {
        Err(not_found())
    }
}

#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses((status = 200, body = SessionDetails),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get(
    state: State,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionDetails>> {
    let id = parse_id(&id, "session")?;
    let got = visible(&state, &caller, id).await?;
    let session =
        got.session.as_ref().map(Session::from).ok_or_else(|| {
            ApiError::unavailable("the session service answered without the session")
        })?;
    Ok(Json(SessionDetails {
        session,
        timeline: got
            .timeline
            .iter()
            .map(|e| TimelineEvent {
                seq: e.seq,
                at: time_text(e.at.as_ref()),
                kind: e.kind.clone(),
                channel: e.channel,
                data: serde_json::from_str(&e.data_json).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
        recordings: got.recordings.iter().map(Recording::from).collect(),
    }))
}

/// Why.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Terminate {
    /// Shown to the user on their terminal.
    pub reason: Option<String>,
}

/// Whether the connection heard it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Terminated {
    /// A live connection took the request (false: the session had ended already).
    pub delivered: bool,
}

#[utoipa::path(post, path = "/sessions/{id}:terminate", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    request_body = Terminate,
    responses((status = 200, body = Terminated),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn terminate(
    state: State,
    caller: Caller,
    Path(target): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Terminated>> {
    // The body is optional.
    let body: Terminate = if body.iter().all(u8::is_ascii_whitespace) {
        Terminate::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"reason\": \"…\"}} or empty: {e}"
            ))
        })?
    };
    let (id, _) = action(&target, "session", &["terminate"])?;
    let got = visible(&state, &caller, id).await?;
    if !owned_by(&got, &caller) {
        caller.require(&state, "sessions.terminate").await?;
    }
    let reason = body
        .reason
        .unwrap_or_else(|| "ended from the API".to_owned());
    let answer = state
        .gateway
        .backends
        .sessions
        .grpc()
        .terminate(spb::TerminateRequest {
            id: Some(id.into()),
            reason: reason.clone(),
            requested_by: caller.username().to_owned(),
        })
        .await
        .map_err(|s| ApiError::from_status("the session", &s))?
        .into_inner();
    tracing::info!(user = %caller.username(), session = %id, %reason, delivered = answer.delivered,
                   "session termination asked");
    Ok(Json(Terminated {
        delivered: answer.delivered,
    }))
}

/// Where to start.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordingQuery {
    /// Start at this many seconds into the recording (the header comes first, times stay as
    /// recorded): a player seeks without downloading what lies before.
    pub from: Option<f64>,
    /// With `from`: open with the screen as it was at `from` (one resize and one output event
    /// at that time, after the header), so that a player shows the right screen at once.
    pub screen: Option<bool>,
}

#[utoipa::path(get, path = "/recordings/{id}", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Recording id"), RecordingQuery),
    responses((status = 200, description = "The asciicast v2 file", content_type = "application/x-asciicast", body = String),
              (status = 206, description = "The asked byte range", content_type = "application/x-asciicast", body = String),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn recording(
    state: State,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<RecordingQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = parse_id(&id, "recording")?;
    let not_found = || ApiError::not_found(format!("you have no recording {id}"));
    let mut sessions = state.gateway.backends.sessions.grpc();
    let meta = sessions
        .get_recording(spb::GetRecordingRequest {
            id: Some(id.into()),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => not_found(),
            _ => ApiError::from_status("the recording", &s),
        })?
        .into_inner();
    let session_id = meta
        .session_id
        .as_ref()
        .and_then(|i| Uuid::try_from(i).ok())
        .ok_or_else(not_found)?;
    let got = visible(&state, &caller, session_id).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            not_found()
        } else {
            e
        }
    })?;
    if !owned_by(&got, &caller) && !caller.may(&state, "recordings.read_all").await {
        return Err(not_found());
    }
    let from = query.from.unwrap_or(0.0);
    if !from.is_finite() || from < 0.0 {
        return Err(ApiError::bad_request(
            "`from` must be a number of seconds, 0 or more",
        ));
    }
    let range = parse_range(&headers);
    if range.is_some() && from > 0.0 {
        return Err(ApiError::bad_request(
            "use either `from` or a Range header, not both",
        ));
    }
    let screen = query.screen.unwrap_or(false) && from > 0.0 && range.is_none();
    let stream = sessions
        .read(spb::ReadRequest {
            recording_id: Some(id.into()),
            // The screen at `from` is made of everything before it.
            from_time: if screen { 0.0 } else { from },
        })
        .await
        .map_err(|s| ApiError::from_status("the recording", &s))?
        .into_inner();
    let mut response = match range {
        None if screen => Response::new(Body::from_stream(screen_at(stream, from))),
        None => {
            let body = stream.map(|part| part.map(|p| bytes::Bytes::from(p.data)));
            let mut response = Response::new(Body::from_stream(body));
            if from == 0.0 && meta.complete {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.stored_bytes));
            }
            response
        }
        Some(range) => {
            let size = meta.stored_bytes;
            let Some((start, end)) = range.within(size) else {
                let mut response = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("the recording has {size} bytes; ask for a range within them"),
                )
                .into_response();
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}"))
                        .unwrap_or(HeaderValue::from_static("*")),
                );
                return Ok(response);
            };
            let body = slice(stream, start, end + 1);
            let mut response = Response::new(Body::from_stream(body));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end + 1 - start));
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-asciicast"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.cast\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Output of a live session's terminals.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveOutput {
    /// The SSH channel of the terminal (a session can have several).
    pub channel: u32,
    /// Whole asciicast v2 lines: a terminal's header line first (with its size), then events.
    pub lines: String,
}

#[utoipa::path(get, path = "/sessions/{id}/live", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses((status = 200, content_type = "text/event-stream", body = LiveOutput,
               description = "The recent output of each terminal, then what they show as it happens, as events named `output`; `end` when the session ends"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
/// Watches a live session, read-only (`sessions.watch`, administrators). The decision is logged
/// like every other.
pub async fn live(
    state: State,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let id = parse_id(&id, "session")?;
    let got = visible(&state, &caller, id).await?;
    if !caller.may(&state, "sessions.watch").await {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "watching a live session is for administrators (`sessions.watch`)",
        ));
    }
    if got.session.as_ref().is_none_or(|s| s.ended_at.is_some()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the session has ended: replay its recordings instead",
        ));
    }
    let frames = state
        .gateway
        .backends
        .sessions
        .grpc()
        .watch(spb::WatchRequest {
            session_id: Some(id.into()),
        })
        .await
        .map_err(|s| ApiError::from_status("the live session", &s))?
        .into_inner();
    tracing::info!(session = %id, watcher = caller.username(), "live view opened");
    let output = frames
        .take_until(state.stop.clone().cancelled_owned())
        .take_while(|frame| std::future::ready(frame.is_ok()))
        .filter_map(|frame| {
            std::future::ready(frame.ok().map(|frame| {
                let output = LiveOutput {
                    channel: frame.channel,
                    lines: String::from_utf8_lossy(&frame.data).into_owned(),
                };
                Ok(Event::default()
                    .event("output")
                    .json_data(&output)
                    .unwrap_or_else(|_| Event::default().comment("unencodable output")))
            }))
        })
        // The feed ends with the session (or a restart): the browser hears which.
        .chain(futures_util::stream::once(async {
            Ok(Event::default().event("end").data("{}"))
        }));
    Ok(Sse::new(output).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}

/// The recording from `from` on, opened by the screen at `from` (see `ScreenAt`).
fn screen_at(
    stream: tonic::Streaming<spb::RecordingData>,
    from: f64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, tonic::Status>> {
    futures_util::stream::unfold(
        Some((stream, crate::screen_at::ScreenAt::new(from))),
        |state| async move {
            let (mut stream, mut at) = state?;
            loop {
                match stream.message().await {
                    Ok(Some(part)) => {
                        let out = at.push(&part.data);
                        if !out.is_empty() {
                            return Some((Ok(bytes::Bytes::from(out)), Some((stream, at))));
                        }
                    }
                    Ok(None) => return Some((Ok(bytes::Bytes::from(at.finish())), None)),
                    Err(status) => return Some((Err(status), None)),
                }
            }
        },
    )
}

/// One byte range of a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// `bytes=START-` or `bytes=START-END`.
    Span(u64, Option<u64>),
    /// `bytes=-N`: the last N bytes.
    Last(u64),
}

impl ByteRange {
    /// The first and last byte of it in a file of `size` bytes; `None` when none are in it.
    fn within(self, size: u64) -> Option<(u64, u64)> {
        let last = size.checked_sub(1)?;
        let (start, end) = match self {
            Self::Span(start, end) => (start, end.unwrap_or(last).min(last)),
            Self::Last(0) => return None,
            Self::Last(n) => (size.saturating_sub(n), last),
        };
        (start <= end).then_some((start, end))
    }
}

/// `Range: bytes=…` with one range. Several ranges, other units or a header that cannot be read
/// are answered with the whole file, as RFC 9110 allows.
fn parse_range(headers: &HeaderMap) -> Option<ByteRange> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?
        .trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    match (start.trim(), end.trim()) {
        ("", last) => last.parse().ok().map(ByteRange::Last),
        (start, "") => start.parse().ok().map(|s| ByteRange::Span(s, None)),
        (start, end) => {
            let (start, end) = (start.parse().ok()?, end.parse().ok()?);
            (start <= end).then_some(ByteRange::Span(start, Some(end)))
        }
    }
}

/// The bytes `[start, end)` of a stream of recording parts.
fn slice(
    stream: tonic::Streaming<spb::RecordingData>,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, tonic::Status>> {
    stream
        .scan(0u64, move |offset, part| {
            let item = match part {
                Err(status) => Some(Err(status)),
                // Past the range: the stream ends (and the read with it).
                Ok(_) if *offset >= end => None,
                Ok(part) => {
                    let from = *offset;
                    let len = part.data.len() as u64;
                    *offset += len;
                    let lo = start.saturating_sub(from).min(len) as usize;
                    let hi = end.saturating_sub(from).min(len) as usize;
                    Some(Ok(bytes::Bytes::from(part.data).slice(lo..hi.max(lo))))
                }
            };
            std::future::ready(item)
        })
        .filter(|part| std::future::ready(!matches!(part, Ok(b) if b.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_range(&headers), None);
        let mut with = |value: &'static str| {
            headers.insert(header::RANGE, HeaderValue::from_static(value));
            parse_range(&headers)
        };
        assert_eq!(with("bytes=10-19"), Some(ByteRange::Span(10, Some(19))));
        assert_eq!(with("bytes=10-"), Some(ByteRange::Span(10, None)));
        assert_eq!(with("bytes=-500"), Some(ByteRange::Last(500)));
        // Unreadable or several ranges: the whole file.
        assert_eq!(with("bytes=x-"), None);
        assert_eq!(with("bytes=0-1,5-6"), None);
        assert_eq!(with("items=0-1"), None);
    }

    #[test]
    fn ranges_are_cut_to_the_file() {
        assert_eq!(ByteRange::Span(10, Some(19)).within(100), Some((10, 19)));
        assert_eq!(ByteRange::Span(90, None).within(100), Some((90, 99)));
        assert_eq!(ByteRange::Span(90, Some(500)).within(100), Some((90, 99)));
        assert_eq!(ByteRange::Last(500).within(100), Some((0, 99)));
        assert_eq!(ByteRange::Last(10).within(100), Some((90, 99)));
        assert_eq!(ByteRange::Span(100, None).within(100), None);
        assert_eq!(ByteRange::Last(5).within(0), None);
    }
}
