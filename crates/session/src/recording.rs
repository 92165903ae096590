//! The writer of one recording: asciicast lines appended to the spool, one `write` per event so
//! that a killed holder leaves whole lines behind; an uploader follows the file.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::asciicast::{Code, EventEncoder, Header};
use crate::spool::{RecordingMeta, SessionDir, SpoolError, io_error, write_atomically};

/// How far the writer got; the uploader follows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes of whole lines in the file.
    pub written: u64,
    /// No more bytes will come.
    pub finished: bool,
}

/// What a recording records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingKind {
    /// A terminal (shell or exec with a PTY).
    Pty,
    /// An exec channel without a PTY: its command line (in the header) and its output.
    Exec,
}

impl RecordingKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pty => "pty",
            Self::Exec => "exec",
        }
    }
}

/// One channel's recording. Dropping it finishes it.
#[derive(Debug)]
pub struct Recording {
    id: uuid::Uuid,
    path: PathBuf,
    done_path: PathBuf,
    file: File,
    started: Instant,
    encoder: EventEncoder,
    line: Vec<u8>,
    record_input: bool,
    progress: watch::Sender<Progress>,
    finished: bool,
}

impl Recording {
    pub(crate) fn create(
        session: &SessionDir,
        channel: u32,
        kind: RecordingKind,
        header: &Header,
        record_input: bool,
    ) -> Result<(Self, RecordingMeta, watch::Receiver<Progress>), SpoolError> {
        let id = k8shell_common::ids::new_id();
        let header_line = header.to_line();
        let meta = RecordingMeta {
            session_id: session.id,
            recording_id: id,
            channel,
            kind: kind.as_str().to_owned(),
            header_json: header_line.trim_end().to_owned(),
        };
        let path = session.recording_path(id, "cast");
        let mut file = File::create(&path).map_err(io_error(&path))?;
        file.write_all(header_line.as_bytes())
            .map_err(io_error(&path))?;
        // The meta file names the recording; written last so that a resumer never finds a meta
        // without its cast file.
        let meta_path = session.recording_path(id, "json");
        let meta_bytes = serde_json::to_vec(&meta).map_err(|e| io_error(&meta_path)(e.into()))?;
        write_atomically(&meta_path, &meta_bytes)?;
        let (progress, follower) = watch::channel(Progress {
            written: header_line.len() as u64,
            finished: false,
        });
        let recording = Self {
            id,
            done_path: session.recording_path(id, "done"),
            path,
            file,
            started: Instant::now(),
            encoder: EventEncoder::default(),
            line: Vec::with_capacity(64 * 1024),
            record_input,
            progress,
            finished: false,
        };
        Ok((recording, meta, follower))
    }

    /// The recording's id (what `Read` and the `.cast` export take).
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// Bytes of the asciicast file written to the spool so far.
    pub fn written_bytes(&self) -> u64 {
        self.progress.borrow().written
    }

    /// Output the terminal showed.
    pub fn output(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        self.event_at(self.started.elapsed(), Code::Output, data)
    }

    /// Input the user typed; recorded only when input recording is enabled, since it catches
    /// what is typed with echo off (passwords).
    pub fn input(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        if !self.record_input {
            return Ok(());
        }
        self.event_at(self.started.elapsed(), Code::Input, data)
    }

    /// The terminal was resized.
    pub fn resize(&mut self, cols: u32, rows: u32) -> Result<(), SpoolError> {
        let size = format!("{cols}x{rows}");
        self.event_at(self.started.elapsed(), Code::Resize, size.as_bytes())
    }

    /// An event at an explicit time since the recording began (imports, tests, benchmarks).
    pub fn event_at(
        &mut self,
        elapsed: Duration,
        code: Code,
        data: &[u8],
    ) -> Result<(), SpoolError> {
        if code == Code::Input && !self.record_input {
            return Ok(());
        }
        self.line.clear();
        if self.encoder.encode(&mut self.line, elapsed, code, data) {
            self.append()?;
        }
        Ok(())
    }

    fn append(&mut self) -> Result<(), SpoolError> {
        if let Err(error) = self.file.write_all(&self.line) {
            // Keep the file whole lines only: cut off what part of the line went out.
            use std::io::Seek as _;
            let written = self.progress.borrow().written;
            let _ = self.file.set_len(written);
            let _ = self.file.seek(std::io::SeekFrom::Start(written));
            return Err(io_error(&self.path)(error));
        }
        let added = self.line.len() as u64;
        self.progress.send_modify(|p| p.written += added);
        Ok(())
    }

    /// Ends the recording; the uploader sends the rest and completes it.
    pub fn finish(mut self) -> Result<(), SpoolError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<(), SpoolError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.line.clear();
        self.encoder.flush(&mut self.line, self.started.elapsed());
        let result = if self.line.is_empty() {
            Ok(())
        } else {
            self.append()
        };
        // The marker tells a resumer that nothing is missing at the end.
        let marked = File::create(&self.done_path)
            .map(drop)
            .map_err(io_error(&self.done_path));
        self.progress.send_modify(|p| p.finished = true);
        result.and(marked)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Err(error) = self.finish_inner() {
            tracing::error!(%error, "could not finish a recording");
        }
    }
}
