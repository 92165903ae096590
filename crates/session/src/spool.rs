//! The holder's local spool: everything about a session is written here first and uploaded from
//! here, so that a crash of the holder, of the session service or of Postgres loses nothing.
//!
//! ```text
//! <spool>/<session-id>/session.json       the session id (and who holds it)
//! <spool>/<session-id>/closed.json        the end: reason and byte counters
//! <spool>/<session-id>/events.jsonl       timeline events, one per line, numbered
//! <spool>/<session-id>/<recording>.json   what a recording is (channel, kind, header)
//! <spool>/<session-id>/<recording>.cast   the asciicast file, whole lines only
//! <spool>/<session-id>/<recording>.done   the writer finished it
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
#[error("recording spool {path}: {source}")]
pub struct SpoolError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

/// The end of a session as the holder decided it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Closed {
    pub reason: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One timeline event as spooled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SpooledEvent {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: String,
    pub channel: u32,
    pub data: serde_json::Value,
}

/// What a recording is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RecordingMeta {
    pub session_id: Uuid,
    pub recording_id: Uuid,
    pub channel: u32,
    /// `pty` or `exec`.
    pub kind: String,
    /// The header line (the file's first line), without the newline.
    pub header_json: String,
}

/// One session's directory in the spool.
#[derive(Debug, Clone)]
pub(crate) struct SessionDir {
    pub id: Uuid,
    pub dir: PathBuf,
}

impl SessionDir {
    pub fn create(spool: &Path, id: Uuid) -> Result<Self, SpoolError> {
        let dir = spool.join(id.to_string());
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let this = Self { id, dir };
        write_atomically(&this.dir.join("session.json"), id.to_string().as_bytes())?;
        Ok(this)
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    pub fn closed_path(&self) -> PathBuf {
        self.dir.join("closed.json")
    }

    pub fn recording_path(&self, recording: Uuid, extension: &str) -> PathBuf {
        self.dir.join(format!("{recording}.{extension}"))
    }

    pub fn read_closed(&self) -> Result<Option<Closed>, SpoolError> {
        let path = self.closed_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io_error(&path)(std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    pub fn write_closed(&self, closed: &Closed) -> Result<(), SpoolError> {
        let bytes = serde_json::to_vec(closed).map_err(|e| io_error(&self.dir)(e.into()))?;
        write_atomically(&self.closed_path(), &bytes)
    }

    /// The recordings in this directory, each with whether its writer finished it.
    pub fn recordings(&self) -> Result<Vec<(RecordingMeta, bool)>, SpoolError> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let path = entry.map_err(io_error(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "json")
                || path
                    .file_name()
                    .is_some_and(|n| n == "session.json" || n == "closed.json")
            {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            let meta: RecordingMeta = serde_json::from_slice(&bytes)
                .map_err(|e| io_error(&path)(std::io::Error::other(e)))?;
            let done = path.with_extension("done").exists();
            found.push((meta, done));
        }
        found.sort_by_key(|(meta, _)| meta.recording_id);
        Ok(found)
    }

    /// Removes the directory once everything in it is uploaded.
    pub fn remove(&self) -> Result<(), SpoolError> {
        std::fs::remove_dir_all(&self.dir).map_err(io_error(&self.dir))
    }
}

/// The session directories a previous run left behind.
pub(crate) fn leftover_sessions(spool: &Path) -> Result<Vec<SessionDir>, SpoolError> {
    let entries = match std::fs::read_dir(spool) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(spool)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(spool))?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| Uuid::parse_str(n).ok());
        match id {
            Some(id) if path.join("session.json").exists() => {
                found.push(SessionDir { id, dir: path })
            }
            Some(_) => {
                // Created but never opened (the holder died before Open answered): nothing to send.
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
            }
            None if path.file_name().is_some_and(|n| n == ".lock") => {}
            None => {
                tracing::warn!(path = %path.display(), "ignoring a stranger in the recording spool")
            }
        }
    }
    found.sort_by_key(|s| s.id);
    Ok(found)
}

/// Length of `path` up to and including its last newline; a line the writer did not finish
/// (it was killed mid-write) is cut off so that the recording stays valid asciicast.
pub(crate) fn whole_lines_length(path: &Path) -> Result<u64, SpoolError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    let length = file.metadata().map_err(io_error(path))?.len();
    let mut end = length;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let len = usize::try_from(end - start).unwrap_or(buf.len());
        file.seek(SeekFrom::Start(start)).map_err(io_error(path))?;
        file.read_exact(&mut buf[..len]).map_err(io_error(path))?;
        if let Some(newline) = buf[..len].iter().rposition(|&b| b == b'\n') {
            end = start + newline as u64 + 1;
            break;
        }
        end = start;
    }
    if end != length {
        tracing::warn!(path = %path.display(), cut = length - end, "cutting an unfinished last line off a recording");
        file.set_len(end).map_err(io_error(path))?;
    }
    Ok(end)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that readers see the old
/// content or the new, never a part.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(bytes).map_err(io_error(&temp))?;
    file.sync_data().map_err(io_error(&temp))?;
    std::fs::rename(&temp, path).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cast");
        std::fs::write(
            &path,
            b"{\"version\":2}\n[0.1, \"o\", \"a\"]\n[0.2, \"o\", \"b",
        )
        .unwrap();
        assert_eq!(whole_lines_length(&path).unwrap(), 30);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{\"version\":2}\n[0.1, \"o\", \"a\"]\n"
        );
        assert_eq!(whole_lines_length(&path).unwrap(), 30);
    }

    #[test]
    fn leftovers_are_found_and_empty_directories_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let kept = SessionDir::create(dir.path(), Uuid::now_v7()).unwrap();
        let never_opened = dir.path().join(Uuid::now_v7().to_string());
        std::fs::create_dir(&never_opened).unwrap();
        let found = leftover_sessions(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, kept.id);
        assert!(!never_opened.exists());
    }
}
