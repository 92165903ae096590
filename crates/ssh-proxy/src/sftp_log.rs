//! Reads the client's SFTP requests as they pass (never changing them) to note the operations
//! that change files in the session's timeline: open, remove, rename, mkdir, rmdir, setstat.
//! Reads and writes are left to the byte counters. The input is untrusted: lengths are checked,
//! and only the small packets worth noting are held, at most [`MAX_NOTED`] bytes.

use serde_json::{Value, json};

/// Packets of interest are small (a path or two); longer ones are skipped unread.
const MAX_NOTED: usize = 64 * 1024;

const OPEN: u8 = 3;
const SETSTAT: u8 = 9;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const RENAME: u8 = 18;

/// Follows one direction of an SFTP stream.
#[derive(Debug, Default)]
pub struct SftpLog {
    /// Bytes of the current packet header or noted packet.
    held: Vec<u8>,
    /// Bytes of the current packet still to skip.
    skipping: usize,
}

impl SftpLog {
    /// Feeds bytes as they pass; returns the operations they completed.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<Value> {
        let mut noted = Vec::new();
        while !data.is_empty() {
            if self.skipping > 0 {
                let n = self.skipping.min(data.len());
                self.skipping -= n;
                data = &data[n..];
                continue;
            }
            // The length and type come first.
            if self.held.len() < 5 {
                let n = (5 - self.held.len()).min(data.len());
                self.held.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.held.len() < 5 {
                    break;
                }
            }
            let length =
                u32::from_be_bytes([self.held[0], self.held[1], self.held[2], self.held[3]])
                    as usize;
            let kind = self.held[4];
            let interesting = matches!(kind, OPEN | SETSTAT | REMOVE | MKDIR | RMDIR | RENAME);
            if length == 0 || !interesting || length > MAX_NOTED {
                // The type byte is already consumed.
                self.skipping = length.saturating_sub(1);
                self.held.clear();
                continue;
            }
            let total = 4 + length;
            let n = (total - self.held.len()).min(data.len());
            self.held.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.held.len() == total {
                if let Some(operation) = describe(kind, &self.held[5..]) {
                    noted.push(operation);
                }
                self.held.clear();
            }
        }
        noted
    }
}

/// The operation in a packet's body (after the type byte): request id, then the arguments.
fn describe(kind: u8, body: &[u8]) -> Option<Value> {
    let mut reader = Reader(body);
    let _id = reader.u32()?;
    let path = reader.string()?;
    Some(match kind {
        OPEN => {
            let flags = reader.u32()?;
            let mut mode = Vec::new();
            if flags & 0x01 != 0 {
                mode.push("read");
            }
            if flags & 0x02 != 0 {
                mode.push("write");
            }
            if flags & 0x04 != 0 {
                mode.push("append");
            }
            if flags & 0x08 != 0 {
                mode.push("create");
            }
            if flags & 0x10 != 0 {
                mode.push("truncate");
            }
            json!({"op": "open", "path": path, "mode": mode})
        }
        RENAME => json!({"op": "rename", "path": path, "to": reader.string()?}),
        REMOVE => json!({"op": "remove", "path": path}),
        MKDIR => json!({"op": "mkdir", "path": path}),
        RMDIR => json!({"op": "rmdir", "path": path}),
        SETSTAT => json!({"op": "setstat", "path": path}),
        _ => return None,
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Option<String> {
        let length = self.u32()? as usize;
        if length > self.0.len() {
            return None;
        }
        let (text, rest) = self.0.split_at(length);
        self.0 = rest;
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(&7u32.to_be_bytes());
        for field in fields {
            body.extend_from_slice(field);
        }
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    fn string(text: &str) -> Vec<u8> {
        let mut out = (text.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn notes_file_changes_and_skips_data_whatever_the_split() {
        let mut stream = Vec::new();
        stream.extend(packet(
            OPEN,
            &[&string("/home/dev/a"), &0x1au32.to_be_bytes(), &[0; 4]],
        ));
        // A WRITE with a large payload: skipped.
        let mut write = string("handle");
        write.extend_from_slice(&0u64.to_be_bytes());
        write.extend(string(&"x".repeat(100_000)));
        stream.extend(packet(6, &[&write]));
        stream.extend(packet(
            RENAME,
            &[&string("/home/dev/a"), &string("/home/dev/b")],
        ));
        stream.extend(packet(REMOVE, &[&string("/home/dev/b")]));
        let expected = vec![
            json!({"op": "open", "path": "/home/dev/a", "mode": ["write", "create", "truncate"]}),
            json!({"op": "rename", "path": "/home/dev/a", "to": "/home/dev/b"}),
            json!({"op": "remove", "path": "/home/dev/b"}),
        ];
        for split in [1, 3, 5, 4096, stream.len()] {
            let mut log = SftpLog::default();
            let noted: Vec<Value> = stream.chunks(split).flat_map(|c| log.feed(c)).collect();
            assert_eq!(noted, expected, "split {split}");
        }
    }

    #[test]
    fn garbage_is_skipped_without_holding_it() {
        let mut log = SftpLog::default();
        // A huge length: skipped, nothing held.
        let mut data = u32::MAX.to_be_bytes().to_vec();
        data.push(OPEN);
        data.extend(vec![0; 1000]);
        assert!(log.feed(&data).is_empty());
        assert!(log.held.is_empty());
        // A truncated string inside a noted packet yields nothing.
        let mut log = SftpLog::default();
        assert!(
            log.feed(&packet(REMOVE, &[&[0, 0, 0, 50], b"short"]))
                .is_empty()
        );
    }
}
