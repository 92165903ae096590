//! A bounded, durable, ordered outbox of events waiting for JetStream.
//!
//! Layout of the directory:
//! - `outbox-<generation>.log`: records appended in publish order, each
//!   `[len u32][crc32 u32][id 16 bytes][subject len u16][subject][payload]` (little endian,
//!   `len` and the checksum cover everything after the checksum);
//! - `cursor`: `[generation u64][offset u64]`, the first record not yet acknowledged.
//!
//! The cursor is replaced atomically (write + rename). Compaction copies the undelivered tail
//! into the next generation's log before the cursor points at it, so a crash at any step leaves
//! either the old or the new state, never a mix. A torn record at the end (a crash mid-append)
//! is cut off when the outbox is opened.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Deserialize;
use tokio::sync::Notify;
use uuid::Uuid;

const HEADER_LEN: u64 = 8;
const FIXED_BODY_LEN: usize = 16 + 2;
/// Upper bound of one record, so that a corrupt length cannot make us allocate gigabytes.
const MAX_RECORD_LEN: u32 = 16 * 1024 * 1024;

/// Where and how much the outbox may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the outbox files (one outbox per service instance).
    pub dir: PathBuf,
    /// Upper bound of undelivered bytes; beyond it, publishing fails instead of growing.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// fsync every append: an event accepted survives a power loss, not only a crash.
    #[serde(default = "default_fsync")]
    pub fsync: bool,
    /// Delivered bytes that trigger compaction of the log.
    #[serde(default = "default_compact_after")]
    pub compact_after_bytes: u64,
    /// Largest event accepted: NATS refuses payloads above its `max_payload` (1 MiB by
    /// default), and one event it always refuses would block every event behind it.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
}

fn default_max_event_bytes() -> usize {
    1024 * 1024
}

fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_fsync() -> bool {
    true
}

fn default_compact_after() -> u64 {
    1024 * 1024
}

impl OutboxConfig {
    /// An outbox in `dir` with default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: default_max_bytes(),
            fsync: default_fsync(),
            compact_after_bytes: default_compact_after(),
            max_event_bytes: default_max_event_bytes(),
        }
    }
}

/// Outbox errors.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "event outbox is full ({pending} of {max} bytes undelivered): NATS has been unreachable \
         for too long; the event was not accepted"
    )]
    Full { pending: u64, max: u64 },
    #[error(
        "event too large: {0} bytes (NATS takes 1 MiB by default; raise max_event_bytes only with the server's max_payload)"
    )]
    TooLarge(usize),
    #[error("subject too long: {0} bytes")]
    SubjectTooLong(usize),
}

/// One event waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub id: Uuid,
    pub subject: String,
    pub payload: Vec<u8>,
    /// Where this record ends: commit it once the event is acknowledged.
    pub next_offset: Position,
}

/// A place in the outbox: offsets are only comparable within one log generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub generation: u64,
    pub offset: u64,
}

struct State {
    generation: u64,
    log: File,
    /// First undelivered byte.
    cursor: u64,
    /// End of the last complete record.
    end: u64,
}

/// The outbox. Appends and reads are serialized by one mutex; records are small.
pub struct Outbox {
    config: OutboxConfig,
    state: Mutex<State>,
    appended: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Outbox")
            .field("dir", &self.config.dir)
            .field("generation", &state.generation)
            .field("pending_bytes", &(state.end - state.cursor))
            .finish()
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `config.dir`, recovering from any crash.
    pub fn open(config: OutboxConfig) -> Result<Self, OutboxError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let (generation, mut cursor) = read_cursor(&dir)?;
        remove_other_generations(&dir, generation)?;
        let path = log_path(&dir, generation);
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let len = log.metadata().map_err(|e| io(&path, e))?.len();
        if cursor > len {
            tracing::warn!(
                cursor,
                len,
                "outbox cursor past the end of its log; starting over"
            );
            cursor = len;
        }
        let end = scan_valid_end(&log, cursor, len).map_err(|e| io(&path, e))?;
        if end < len {
            tracing::warn!(
                dropped_bytes = len - end,
                "outbox log ends in an incomplete record (a crash mid-append); cutting it off"
            );
            log.set_len(end).map_err(|e| io(&path, e))?;
        }
        Ok(Self {
            config,
            state: Mutex::new(State {
                generation,
                log,
                cursor,
                end,
            }),
            appended: Notify::new(),
        })
    }

    /// Appends an event. Once this returns `Ok` the event is on disk and will be delivered.
    pub fn append(&self, id: Uuid, subject: &str, payload: &[u8]) -> Result<(), OutboxError> {
        if payload.len() > self.config.max_event_bytes {
            return Err(OutboxError::TooLarge(payload.len()));
        }
        let subject_len =
            u16::try_from(subject.len()).map_err(|_| OutboxError::SubjectTooLong(subject.len()))?;
        let body_len = FIXED_BODY_LEN + subject.len() + payload.len();
        let len = u32::try_from(body_len)
            .ok()
            .filter(|&l| l <= MAX_RECORD_LEN)
            .ok_or(OutboxError::TooLarge(body_len))?;
        let mut record = Vec::with_capacity(HEADER_LEN as usize + body_len);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(id.as_bytes());
        record.extend_from_slice(&subject_len.to_le_bytes());
        record.extend_from_slice(subject.as_bytes());
        record.extend_from_slice(payload);
        let crc = crc32fast::hash(&record[HEADER_LEN as usize..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());

        let mut state = self.lock();
        let pending = state.end - state.cursor;
        if pending + record.len() as u64 > self.config.max_bytes {
            return Err(OutboxError::Full {
                pending,
                max: self.config.max_bytes,
            });
        }
        let path = log_path(&self.config.dir, state.generation);
        let written = state.log.write_all(&record).and_then(|()| {
            if self.config.fsync {
                state.log.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Leave no partial record behind for the next append to follow.
            let end = state.end;
            let _ = state.log.set_len(end);
            return Err(io(&path, e));
        }
        state.end += record.len() as u64;
        drop(state);
        self.appended.notify_one();
        Ok(())
    }

    /// Up to `max` undelivered events, oldest first.
    pub fn peek(&self, max: usize) -> Result<Vec<PendingEvent>, OutboxError> {
        let mut state = self.lock();
        // Compaction happens here, between batches, never under positions handed out earlier
        // (a commit from the old generation is ignored, see `commit`).
        if state.cursor >= self.config.compact_after_bytes {
            self.compact(&mut state)?;
        }
        let path = log_path(&self.config.dir, state.generation);
        let mut out = Vec::new();
        let mut offset = state.cursor;
        while offset < state.end && out.len() < max {
            let (event, next) = read_record(&state.log, state.generation, offset)
                .map_err(|e| io(&path, e))?
                .ok_or_else(|| {
                    io(
                        &path,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("corrupt record at offset {offset}"),
                        ),
                    )
                })?;
            out.push(event);
            offset = next;
        }
        Ok(out)
    }

    /// Marks everything before `position` as delivered. Positions of an older generation are
    /// ignored: compaction has already dropped what they could mark.
    pub fn commit(&self, position: Position) -> Result<(), OutboxError> {
        let mut state = self.lock();
        let offset = position.offset;
        if position.generation != state.generation || offset <= state.cursor || offset > state.end {
            return Ok(());
        }
        write_cursor(
            &self.config.dir,
            state.generation,
            offset,
            self.config.fsync,
        )?;
        state.cursor = offset;
        Ok(())
    }

    /// Bytes accepted but not yet delivered.
    pub fn pending_bytes(&self) -> u64 {
        let state = self.lock();
        state.end - state.cursor
    }

    /// Resolves after the next append (or at once if one happened since the last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    fn compact(&self, state: &mut State) -> Result<(), OutboxError> {
        let dir = &self.config.dir;
        let next = state.generation + 1;
        let new_path = log_path(dir, next);
        let old_path = log_path(dir, state.generation);
        let tail_len = (state.end - state.cursor) as usize;
        let mut tail = vec![0; tail_len];
        state
            .log
            .read_exact_at(&mut tail, state.cursor)
            .map_err(|e| io(&old_path, e))?;
        let mut new_log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&new_path)
            .map_err(|e| io(&new_path, e))?;
        new_log.set_len(0).map_err(|e| io(&new_path, e))?;
        new_log
            .write_all(&tail)
            .and_then(|()| new_log.sync_all())
            .map_err(|e| io(&new_path, e))?;
        write_cursor(dir, next, 0, true)?;
        state.generation = next;
        state.log = new_log;
        state.cursor = 0;
        state.end = tail_len as u64;
        if let Err(e) = std::fs::remove_file(&old_path) {
            tracing::warn!(path = %old_path.display(), error = %e, "could not remove old outbox log");
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn io(path: &Path, source: std::io::Error) -> OutboxError {
    OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("outbox-{generation}.log"))
}

fn read_cursor(dir: &Path) -> Result<(u64, u64), OutboxError> {
    let path = dir.join("cursor");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 16 => {
            let mut generation = [0; 8];
            let mut offset = [0; 8];
            generation.copy_from_slice(&bytes[..8]);
            offset.copy_from_slice(&bytes[8..]);
            Ok((u64::from_le_bytes(generation), u64::from_le_bytes(offset)))
        }
        Ok(bytes) => Err(io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "cursor file has {} bytes, expected 16; remove it only if no events are pending",
                    bytes.len()
                ),
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(io(&path, e)),
    }
}

fn write_cursor(dir: &Path, generation: u64, offset: u64, fsync: bool) -> Result<(), OutboxError> {
    let path = dir.join("cursor");
    let tmp = dir.join("cursor.tmp");
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&generation.to_le_bytes());
    bytes[8..].copy_from_slice(&offset.to_le_bytes());
    let mut file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(&bytes)
        .and_then(|()| if fsync { file.sync_data() } else { Ok(()) })
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
}

fn remove_other_generations(dir: &Path, keep: u64) -> Result<(), OutboxError> {
    let keep_name = format!("outbox-{keep}.log");
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("outbox-") && name.ends_with(".log") && name != keep_name {
            std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// The end of the last valid record at or after `from`.
fn scan_valid_end(log: &File, from: u64, len: u64) -> std::io::Result<u64> {
    let mut offset = from;
    while offset < len {
        match read_record(log, 0, offset)? {
            Some((_, next)) if next <= len => offset = next,
            _ => break,
        }
    }
    Ok(offset)
}

/// Reads the record at `offset`; `None` if it is incomplete or fails its checksum.
fn read_record(
    log: &File,
    generation: u64,
    offset: u64,
) -> std::io::Result<Option<(PendingEvent, u64)>> {
    let mut header = [0; HEADER_LEN as usize];
    if let Err(e) = log.read_exact_at(&mut header, offset) {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_LEN || (len as usize) < FIXED_BODY_LEN {
        return Ok(None);
    }
    let mut body = vec![0; len as usize];
    if let Err(e) = log.read_exact_at(&mut body, offset + HEADER_LEN) {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    let mut id = [0; 16];
    id.copy_from_slice(&body[..16]);
    let subject_len = u16::from_le_bytes([body[16], body[17]]) as usize;
    let Some(subject) = body.get(FIXED_BODY_LEN..FIXED_BODY_LEN + subject_len) else {
        return Ok(None);
    };
    let Ok(subject) = String::from_utf8(subject.to_vec()) else {
        return Ok(None);
    };
    let payload = body[FIXED_BODY_LEN + subject_len..].to_vec();
    let next_offset = offset + HEADER_LEN + u64::from(len);
    Ok(Some((
        PendingEvent {
            id: Uuid::from_bytes(id),
            subject,
            payload,
            next_offset: Position {
                generation,
                offset: next_offset,
            },
        },
        next_offset,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_of_a_batch_that_spans_the_compaction_threshold_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ob = outbox(dir.path());
        let ids: Vec<Uuid> = (0..40).map(|_| crate::ids::new_id()).collect();
        for id in &ids {
            ob.append(*id, "k8shell.test.compact", &[b'p'; 30]).unwrap();
        }
        // Deliver in batches of 7, as the delivery task does, committing after each event.
        let mut delivered = Vec::new();
        loop {
            let batch = ob.peek(7).unwrap();
            if batch.is_empty() {
                break;
            }
            for event in batch {
                delivered.push(event.id);
                ob.commit(event.next_offset).unwrap();
            }
        }
        assert_eq!(delivered, ids, "every event exactly once, in order");
        drop(ob);
        assert!(outbox(dir.path()).peek(100).unwrap().is_empty());
    }

    fn outbox(dir: &Path) -> Outbox {
        let mut config = OutboxConfig::new(dir);
        config.fsync = false;
        config.compact_after_bytes = 200;
        Outbox::open(config).unwrap()
    }

    #[test]
    fn pending_events_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<Uuid> = (0..5).map(|_| crate::ids::new_id()).collect();
        {
            let ob = outbox(dir.path());
            for (i, id) in ids.iter().enumerate() {
                ob.append(*id, "k8shell.test.x", format!("{{\"n\":{i}}}").as_bytes())
                    .unwrap();
            }
            let first_two = ob.peek(2).unwrap();
            ob.commit(first_two[1].next_offset).unwrap();
        }
        let ob = outbox(dir.path());
        let rest = ob.peek(100).unwrap();
        assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);
        assert_eq!(rest[0].payload, b"{\"n\":2}");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let id = crate::ids::new_id();
        {
            let ob = outbox(dir.path());
            ob.append(id, "k8shell.test.x", b"{}").unwrap();
        }
        // Simulate a crash in the middle of the next append.
        let log = dir.path().join("outbox-0.log");
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(file);

        let ob = outbox(dir.path());
        let second = crate::ids::new_id();
        ob.append(second, "k8shell.test.y", b"{}").unwrap();
        let ids: Vec<Uuid> = ob.peek(10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![id, second]);
    }

    #[test]
    fn a_full_outbox_refuses_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = OutboxConfig::new(dir.path());
        config.max_bytes = 100;
        config.fsync = false;
        let ob = Outbox::open(config).unwrap();
        ob.append(crate::ids::new_id(), "s", &[b'x'; 40]).unwrap();
        let err = ob
            .append(crate::ids::new_id(), "s", &[b'x'; 40])
            .unwrap_err();
        assert!(matches!(err, OutboxError::Full { max: 100, .. }), "{err}");
        assert!(err.to_string().contains("NATS has been unreachable"));
        // Delivering makes room again.
        let first = ob.peek(1).unwrap();
        ob.commit(first[0].next_offset).unwrap();
        ob.append(crate::ids::new_id(), "s", &[b'x'; 40]).unwrap();
    }

    #[test]
    fn an_event_nats_would_refuse_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ob = outbox(dir.path());
        let err = ob
            .append(crate::ids::new_id(), "s", &vec![b'x'; 2 << 20])
            .unwrap_err();
        assert!(matches!(err, OutboxError::TooLarge(_)), "{err}");
        assert_eq!(ob.pending_bytes(), 0, "nothing was queued behind it");
    }

    #[test]
    fn compaction_keeps_the_undelivered_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ob = outbox(dir.path());
        let ids: Vec<Uuid> = (0..20).map(|_| crate::ids::new_id()).collect();
        for id in &ids {
            ob.append(*id, "k8shell.test.compact", &[b'p'; 30]).unwrap();
        }
        let batch = ob.peek(15).unwrap();
        ob.commit(batch[14].next_offset).unwrap();
        // The next batch is read after compacting the delivered head away.
        assert_eq!(ob.peek(1).unwrap()[0].id, ids[15]);
        assert!(
            !dir.path().join("outbox-0.log").exists(),
            "old generation removed"
        );
        drop(ob);
        let ob = outbox(dir.path());
        let rest: Vec<Uuid> = ob.peek(100).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(rest, ids[15..]);
    }
}
