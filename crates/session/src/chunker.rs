//! Cuts an uploaded asciicast file into chunks of whole lines, each covering at most a few seconds
//! of session time (the index granularity) and at most so many bytes, so that a reader can start
//! at any time by fetching only the chunks from there on.

use crate::asciicast::event_time;

/// When to cut.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPolicy {
    /// Seconds of session time per chunk at most.
    pub span: f64,
    /// Uncompressed bytes per chunk at most (a single longer line gets a chunk of its own).
    pub max_bytes: usize,
}

/// A chunk ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingChunk {
    /// Offset of its first byte in the file.
    pub start: u64,
    pub bytes: Vec<u8>,
    pub first_time: Option<f64>,
    pub last_time: Option<f64>,
}

/// Buffers the bytes after the last stored chunk.
#[derive(Debug)]
pub struct Chunker {
    policy: ChunkPolicy,
    /// File offset of `buffer[0]`.
    start: u64,
    buffer: Vec<u8>,
    /// `buffer[..scanned]` is whole lines already looked at.
    scanned: usize,
    first_time: Option<f64>,
    last_time: Option<f64>,
}

impl Chunker {
    pub fn new(start: u64, policy: ChunkPolicy) -> Self {
        Self {
            policy,
            start,
            buffer: Vec::new(),
            scanned: 0,
            first_time: None,
            last_time: None,
        }
    }

    /// File offset up to which bytes have been received.
    pub fn received(&self) -> u64 {
        self.start + self.buffer.len() as u64
    }

    /// Whether whole lines are waiting to be stored.
    pub fn has_lines(&self) -> bool {
        self.scanned > 0
    }

    /// Adds received bytes. Returns the chunks that are full, and the lines that became whole
    /// (for live viewers).
    pub fn push(&mut self, data: &[u8]) -> (Vec<PendingChunk>, Vec<u8>) {
        let was_scanned = self.start + self.scanned as u64;
        self.buffer.extend_from_slice(data);
        let mut ready = Vec::new();
        let mut lines_from = was_scanned;
        let mut lines = Vec::new();
        while let Some(newline) = memchr::memchr(b'\n', &self.buffer[self.scanned..]) {
            let line_start = self.scanned;
            let line_end = line_start + newline + 1;
            let time = event_time(&self.buffer[line_start..line_end]);
            let too_long = line_end > self.policy.max_bytes;
            let too_late = matches!((self.first_time, time), (Some(first), Some(t)) if t - first >= self.policy.span);
            if line_start > 0 && (too_long || too_late) {
                // What is about to leave the buffer and has not been handed out as lines yet.
                let cut_at = self.start + line_start as u64;
                if cut_at > lines_from {
                    let from = usize::try_from(lines_from - self.start).unwrap_or(0);
                    lines.extend_from_slice(&self.buffer[from..line_start]);
                    lines_from = cut_at;
                }
                ready.push(self.cut(line_start));
                continue;
            }
            if let Some(t) = time {
                self.first_time.get_or_insert(t);
                self.last_time = Some(t);
            }
            self.scanned = line_end;
        }
        let scanned_to = self.start + self.scanned as u64;
        if scanned_to > lines_from {
            let from = usize::try_from(lines_from - self.start).unwrap_or(0);
            lines.extend_from_slice(&self.buffer[from..self.scanned]);
        }
        (ready, lines)
    }

    /// Takes the whole lines received so far as a chunk (idle flush).
    pub fn take_lines(&mut self) -> Option<PendingChunk> {
        (self.scanned > 0).then(|| self.cut(self.scanned))
    }

    /// Takes everything, an unfinished last line included (the end of the file).
    pub fn take_all(&mut self) -> Option<PendingChunk> {
        if self.buffer.is_empty() {
            return None;
        }
        if self.scanned < self.buffer.len() {
            let tail_time = event_time(&self.buffer[self.scanned..]);
            if let Some(t) = tail_time {
                self.first_time.get_or_insert(t);
                self.last_time = Some(t);
            }
        }
        Some(self.cut(self.buffer.len()))
    }

    fn cut(&mut self, at: usize) -> PendingChunk {
        let rest = self.buffer.split_off(at);
        let bytes = std::mem::replace(&mut self.buffer, rest);
        let chunk = PendingChunk {
            start: self.start,
            bytes,
            first_time: self.first_time.take(),
            last_time: self.last_time.take(),
        };
        self.start += at as u64;
        self.scanned = 0;
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: u32) -> String {
        format!("[{t}.000000, \"o\", \"line {t}\\r\\n\"]\n")
    }

    #[test]
    fn chunks_cover_a_span_of_session_time_and_whole_lines() {
        let policy = ChunkPolicy {
            span: 5.0,
            max_bytes: 1 << 20,
        };
        let mut chunker = Chunker::new(0, policy);
        let mut file = String::from("{\"version\":2,\"width\":80,\"height\":24}\n");
        for t in 0..12 {
            file.push_str(&line(t));
        }
        // Delivered in awkward pieces, as an upload reads its file.
        let mut chunks = Vec::new();
        let mut live = Vec::new();
        for piece in file.as_bytes().chunks(7) {
            let (ready, lines) = chunker.push(piece);
            chunks.extend(ready);
            live.extend(lines);
        }
        chunks.extend(chunker.take_all());
        let times: Vec<_> = chunks.iter().map(|c| (c.first_time, c.last_time)).collect();
        assert_eq!(
            times,
            [
                (Some(0.0), Some(4.0)),
                (Some(5.0), Some(9.0)),
                (Some(10.0), Some(11.0))
            ]
        );
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
        assert_eq!(joined, file.as_bytes());
        assert_eq!(live, file.as_bytes());
        let mut offset = 0;
        for chunk in &chunks {
            assert_eq!(chunk.start, offset);
            assert!(chunk.bytes.ends_with(b"\n"));
            offset += chunk.bytes.len() as u64;
        }
    }

    #[test]
    fn big_output_is_cut_by_size_and_a_partial_line_waits() {
        let policy = ChunkPolicy {
            span: 1000.0,
            max_bytes: 100,
        };
        let mut chunker = Chunker::new(40, policy);
        let mut ready = Vec::new();
        for t in 0..10 {
            ready.extend(chunker.push(line(t).as_bytes()).0);
        }
        assert!(ready.iter().all(|c| c.bytes.len() <= 100));
        assert_eq!(ready[0].start, 40);
        let (more, lines) = chunker.push(b"[10.5, \"o\", \"unfin");
        assert!(more.is_empty() && lines.is_empty());
        let whole = chunker.take_lines().unwrap();
        assert!(whole.bytes.ends_with(b"\n"));
        let tail = chunker.take_all().unwrap();
        assert_eq!(tail.bytes, b"[10.5, \"o\", \"unfin");
        assert_eq!(tail.last_time, Some(10.5));
        assert_eq!(chunker.received(), tail.start + tail.bytes.len() as u64);
    }
}
