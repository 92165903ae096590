//! Schema `session` in Postgres: sessions, timelines, recordings and their chunk index.

use std::net::{IpAddr, SocketAddr};

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no session {0}")]
    NoSession(Uuid),
    #[error("no recording {0}")]
    NoRecording(Uuid),
    #[error("session {0} is held by `{1}`, not by the caller")]
    NotHolder(Uuid, String),
    #[error("recording {0} belongs to another session")]
    WrongSession(Uuid),
    #[error("recording {id} moved on meanwhile (another upload of it is running)")]
    Concurrent { id: Uuid },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A session row.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub workspace_id: Uuid,
    pub workspace_owner: String,
    pub workspace_name: String,
    /// `ssh` or `console`.
    pub kind: String,
    pub client: SocketAddr,
    pub client_version: String,
    pub admin_access: bool,
    pub holder: String,
    pub started_at: OffsetDateTime,
    pub last_activity_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    pub end_reason: Option<String>,
    pub bytes_in: i64,
    pub bytes_out: i64,
}

/// A recording with its chunk count and size; callers add WHERE and GROUP BY r.id.
const RECORDING_SELECT: &str = "SELECT r.id, r.session_id, r.channel, r.kind, r.header, r.stored_bytes, r.duration, r.complete,
        count(c.seq) AS chunks, COALESCE(sum(c.compressed_bytes), 0)::bigint AS compressed_bytes
     FROM recordings r LEFT JOIN chunks c ON c.recording_id = r.id";

const SESSION_COLUMNS: &str = "id, user_id, username, workspace_id, workspace_owner, workspace_name, kind, host(client_ip) AS client_ip, client_port, client_version, admin_access, holder, started_at, last_activity_at, ended_at, end_reason, bytes_in, bytes_out";

fn session_row(row: &PgRow) -> Result<SessionRow, sqlx::Error> {
    let ip: String = row.try_get("client_ip")?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|e: std::net::AddrParseError| sqlx::Error::Decode(e.into()))?;
    let port: i32 = row.try_get("client_port")?;
    Ok(SessionRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        workspace_id: row.try_get("workspace_id")?,
        workspace_owner: row.try_get("workspace_owner")?,
        workspace_name: row.try_get("workspace_name")?,
        kind: row.try_get("kind")?,
        client: SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)),
        client_version: row.try_get("client_version")?,
        admin_access: row.try_get("admin_access")?,
        holder: row.try_get("holder")?,
        started_at: row.try_get("started_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: row.try_get("end_reason")?,
        bytes_in: row.try_get("bytes_in")?,
        bytes_out: row.try_get("bytes_out")?,
    })
}

/// A timeline event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TimelineRow {
    pub seq: Option<i64>,
    pub at: OffsetDateTime,
    pub kind: String,
    pub channel: i32,
    pub data: serde_json::Value,
}

/// A recording and how much of it is stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecordingRow {
    pub id: Uuid,
    pub session_id: Uuid,
    pub channel: i32,
    pub kind: String,
    pub header: String,
    pub stored_bytes: i64,
    pub duration: f64,
    pub complete: bool,
    pub chunks: i64,
    pub compressed_bytes: i64,
}

/// One chunk of the index.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ChunkRow {
    pub seq: i32,
    pub start_offset: i64,
    pub end_offset: i64,
    pub first_time: Option<f64>,
    pub last_time: Option<f64>,
    pub compressed_bytes: i32,
    pub object_key: String,
}

/// Filters of `List`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub username: Option<String>,
    pub workspace_id: Option<Uuid>,
    pub live: Option<bool>,
    pub started_after: Option<OffsetDateTime>,
    pub started_before: Option<OffsetDateTime>,
    /// Keyset position: sessions older than this (started_at, id).
    pub after: Option<(OffsetDateTime, Uuid)>,
    pub limit: u32,
}

/// A session to insert.
#[derive(Debug, Clone)]
pub struct NewSessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub workspace_id: Uuid,
    pub workspace_owner: String,
    pub workspace_name: String,
    pub kind: &'static str,
    pub client: SocketAddr,
    pub client_version: String,
    pub admin_access: bool,
    pub holder: String,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Inserts the session; a retried Open of the same id returns the stored row.
    pub async fn open(&self, new: &NewSessionRow) -> Result<(SessionRow, bool), StoreError> {
        let now = k8shell_common::clock::now();
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, username, workspace_id, workspace_owner, workspace_name, kind, client_ip, client_port, client_version, admin_access, holder, started_at, last_activity_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9, $10, $11, $12, $13, $13, $13)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(new.id)
        .bind(new.user_id)
        .bind(&new.username)
        .bind(new.workspace_id)
        .bind(&new.workspace_owner)
        .bind(&new.workspace_name)
        .bind(new.kind)
        .bind(new.client.ip().to_string())
        .bind(i32::from(new.client.port()))
        .bind(&new.client_version)
        .bind(new.admin_access)
        .bind(&new.holder)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        Ok((self.session(new.id).await?, inserted))
    }

    pub async fn session(&self, id: Uuid) -> Result<SessionRow, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NoSession(id))?;
        Ok(session_row(&row)?)
    }

    /// Checks that `caller` holds session `id`.
    pub async fn require_holder(&self, id: Uuid, caller: &str) -> Result<SessionRow, StoreError> {
        let session = self.session(id).await?;
        if session.holder == caller {
            Ok(session)
        } else {
            Err(StoreError::NotHolder(id, session.holder))
        }
    }

    /// Records a heartbeat; returns whether the session is still live.
    pub async fn heartbeat(
        &self,
        id: Uuid,
        bytes_in: u64,
        bytes_out: u64,
        last_activity: Option<OffsetDateTime>,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "UPDATE sessions SET heartbeat_at = now(),
                 bytes_in = GREATEST(bytes_in, $2), bytes_out = GREATEST(bytes_out, $3),
                 last_activity_at = GREATEST(last_activity_at, COALESCE($4, last_activity_at))
             WHERE id = $1 RETURNING ended_at IS NULL AS live",
        )
        .bind(id)
        .bind(clamp(bytes_in))
        .bind(clamp(bytes_out))
        .bind(last_activity)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NoSession(id))?;
        Ok(row.try_get("live")?)
    }

    /// Ends the session; returns it and whether this call ended it (a second close keeps the
    /// first reason).
    pub async fn close(
        &self,
        id: Uuid,
        reason: &str,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<(SessionRow, bool), StoreError> {
        let closed = sqlx::query(
            "UPDATE sessions SET ended_at = now(), end_reason = $2,
                 bytes_in = GREATEST(bytes_in, $3), bytes_out = GREATEST(bytes_out, $4)
             WHERE id = $1 AND ended_at IS NULL",
        )
        .bind(id)
        .bind(reason)
        .bind(clamp(bytes_in))
        .bind(clamp(bytes_out))
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if !closed {
            // A late close still brings the final counters.
            sqlx::query(
                "UPDATE sessions SET bytes_in = GREATEST(bytes_in, $2), bytes_out = GREATEST(bytes_out, $3) WHERE id = $1",
            )
            .bind(id)
            .bind(clamp(bytes_in))
            .bind(clamp(bytes_out))
            .execute(&self.pool)
            .await?;
        }
        Ok((self.session(id).await?, closed))
    }

    /// Appends timeline events; returns how many were new.
    pub async fn add_events(&self, id: Uuid, events: &[TimelineRow]) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut query: QueryBuilder<Postgres> =
            QueryBuilder::new("INSERT INTO timeline (session_id, seq, at, kind, channel, data) ");
        query.push_values(events, |mut row, event| {
            row.push_bind(id)
                .push_bind(event.seq)
                .push_bind(event.at)
                .push_bind(&event.kind)
                .push_bind(event.channel)
                .push_bind(&event.data);
        });
        query.push(" ON CONFLICT (session_id, seq) DO NOTHING");
        Ok(query.build().execute(&self.pool).await?.rows_affected())
    }

    pub async fn timeline(&self, id: Uuid) -> Result<Vec<TimelineRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, at, kind, channel, data FROM timeline WHERE session_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<SessionRow>, StoreError> {
        let mut query: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE true"));
        if let Some(username) = &filter.username {
            query.push(" AND username = ").push_bind(username);
        }
        if let Some(workspace) = filter.workspace_id {
            query.push(" AND workspace_id = ").push_bind(workspace);
        }
        match filter.live {
            Some(true) => query.push(" AND ended_at IS NULL"),
            Some(false) => query.push(" AND ended_at IS NOT NULL"),
            None => &mut query,
        };
        if let Some(after) = filter.started_after {
            query.push(" AND started_at >= ").push_bind(after);
        }
        if let Some(before) = filter.started_before {
            query.push(" AND started_at < ").push_bind(before);
        }
        if let Some((at, id)) = filter.after {
            query
                .push(" AND (started_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        query
            .push(" ORDER BY started_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
    }

    /// Finds or creates a recording of `session`; returns how far it is stored.
    pub async fn start_recording(
        &self,
        id: Uuid,
        session: Uuid,
        channel: u32,
        kind: &str,
        header: &str,
    ) -> Result<RecordingRow, StoreError> {
        sqlx::query(
            "INSERT INTO recordings (id, session_id, channel, kind, header) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(session)
        .bind(i32::try_from(channel).unwrap_or(i32::MAX))
        .bind(kind)
        .bind(header)
        .execute(&self.pool)
        .await?;
        let recording = self.recording(id).await?;
        if recording.session_id == session {
            Ok(recording)
        } else {
            Err(StoreError::WrongSession(id))
        }
    }

    pub async fn recording(&self, id: Uuid) -> Result<RecordingRow, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{RECORDING_SELECT} WHERE r.id = $1 GROUP BY r.id"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NoRecording(id))
    }

    pub async fn recordings_of(&self, session: Uuid) -> Result<Vec<RecordingRow>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{RECORDING_SELECT} WHERE r.session_id = $1 GROUP BY r.id ORDER BY r.created_at, r.id"
        )))
        .bind(session)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Adds a stored chunk to the index and moves the recording's stored offset past it, only
    /// if nothing else moved it meanwhile.
    pub async fn add_chunk(&self, recording: Uuid, chunk: &ChunkRow) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE recordings SET stored_bytes = $3, duration = GREATEST(duration, COALESCE($4, duration))
             WHERE id = $1 AND stored_bytes = $2 AND NOT complete",
        )
        .bind(recording)
        .bind(chunk.start_offset)
        .bind(chunk.end_offset)
        .bind(chunk.last_time)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Err(StoreError::Concurrent { id: recording });
        }
        sqlx::query(
            "INSERT INTO chunks (recording_id, seq, start_offset, end_offset, first_time, last_time, compressed_bytes, object_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(recording)
        .bind(chunk.seq)
        .bind(chunk.start_offset)
        .bind(chunk.end_offset)
        .bind(chunk.first_time)
        .bind(chunk.last_time)
        .bind(chunk.compressed_bytes)
        .bind(&chunk.object_key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a recording complete once all `length` bytes are stored.
    pub async fn complete_recording(
        &self,
        recording: Uuid,
        length: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recordings SET complete = true WHERE id = $1 AND stored_bytes = $2",
        )
        .bind(recording)
        .bind(length)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// The chunks with events at or after `from_time` (all of them for 0), in order.
    pub async fn chunks(
        &self,
        recording: Uuid,
        from_time: f64,
    ) -> Result<Vec<ChunkRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, start_offset, end_offset, first_time, last_time, compressed_bytes, object_key
             FROM chunks WHERE recording_id = $1 AND ($2 <= 0 OR last_time >= $2) ORDER BY seq",
        )
        .bind(recording)
        .bind(from_time)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The next chunk number of a recording.
    pub async fn next_chunk_seq(&self, recording: Uuid) -> Result<i32, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(max(seq) + 1, 0) AS next FROM chunks WHERE recording_id = $1",
        )
        .bind(recording)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("next")?)
    }

    /// Ends live sessions whose holder has not sent a heartbeat for `lost_after`.
    pub async fn close_lost(
        &self,
        lost_after: std::time::Duration,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE sessions SET ended_at = now(), end_reason = 'lost: its proxy stopped sending heartbeats'
             WHERE ended_at IS NULL AND heartbeat_at < now() - make_interval(secs => $1)
             RETURNING {SESSION_COLUMNS}"
        )))
        .bind(lost_after.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
    }

    /// Sessions that ended before `cutoff`, oldest first.
    pub async fn expired(
        &self,
        cutoff: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE ended_at < $1 ORDER BY ended_at LIMIT $2"
        )))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(session_row).collect::<Result<_, _>>()?)
    }

    /// Deletes a session with its timeline, recordings and index.
    pub async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
