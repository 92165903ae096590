//! asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>): a header line, then one JSON
//! array per event, `[time, code, data]`, with `time` in seconds since the recording began.
//!
//! Terminal output is bytes, asciicast data is text: a UTF-8 sequence split between two reads is
//! carried over to the next event, and bytes that are not UTF-8 become U+FFFD, as a terminal
//! would show them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always 2.
    pub version: u8,
    pub width: u16,
    pub height: u16,
    /// Unix time when the recording began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// The command line of an exec channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `TERM` and `SHELL`, as asciinema records them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Header {
    /// A v2 header for a terminal of `width`×`height`.
    pub fn new(width: u16, height: u16) -> Self {
        Self {
            version: 2,
            width,
            height,
            timestamp: None,
            command: None,
            title: None,
            env: BTreeMap::new(),
        }
    }

    /// The header line, newline included.
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serializes.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Event codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Output to the terminal.
    Output,
    /// Input typed by the user.
    Input,
    /// The terminal was resized (`"COLSxROWS"`).
    Resize,
    /// A marker (`m`), e.g. where a chunk of the timeline happened.
    Marker,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Self::Output => "o",
            Self::Input => "i",
            Self::Resize => "r",
            Self::Marker => "m",
        }
    }
}

/// Turns byte streams into event lines; keeps the unfinished UTF-8 tail of each stream.
#[derive(Debug, Default)]
pub struct EventEncoder {
    output_tail: Vec<u8>,
    input_tail: Vec<u8>,
}

impl EventEncoder {
    /// Appends the event line for `data` at `elapsed` to `line`. Returns false (and appends
    /// nothing) when `data` held only the start of a UTF-8 sequence.
    pub fn encode(
        &mut self,
        line: &mut Vec<u8>,
        elapsed: Duration,
        code: Code,
        data: &[u8],
    ) -> bool {
        let tail = match code {
            Code::Output => &mut self.output_tail,
            Code::Input => &mut self.input_tail,
            Code::Resize | Code::Marker => {
                return encode_event(line, elapsed, code, data, &mut Vec::new());
            }
        };
        if tail.is_empty() {
            return encode_event(line, elapsed, code, data, tail);
        }
        let mut joined = std::mem::take(tail);
        joined.extend_from_slice(data);
        encode_event(line, elapsed, code, &joined, tail)
    }

    /// Appends what is still held back (an unfinished UTF-8 sequence, shown as U+FFFD).
    pub fn flush(&mut self, line: &mut Vec<u8>, elapsed: Duration) {
        for (code, tail) in [
            (Code::Output, std::mem::take(&mut self.output_tail)),
            (Code::Input, std::mem::take(&mut self.input_tail)),
        ] {
            if !tail.is_empty() {
                write_prefix(line, elapsed, code);
                line.extend_from_slice("\u{fffd}\"]\n".as_bytes());
            }
        }
    }
}

fn write_prefix(line: &mut Vec<u8>, elapsed: Duration, code: Code) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(
        line,
        "[{}.{:06}, \"{}\", \"",
        elapsed.as_secs(),
        elapsed.subsec_micros(),
        code.as_str()
    );
}

/// Encodes one event; an incomplete UTF-8 sequence at the end of `data` goes to `tail`.
fn encode_event(
    line: &mut Vec<u8>,
    elapsed: Duration,
    code: Code,
    data: &[u8],
    tail: &mut Vec<u8>,
) -> bool {
    let start = line.len();
    write_prefix(line, elapsed, code);
    let body_start = line.len();
    let mut rest = data;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                escape_into(line, text.as_bytes());
                break;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                escape_into(line, valid);
                match error.error_len() {
                    None => {
                        tail.extend_from_slice(after);
                        break;
                    }
                    Some(bad) => {
                        line.extend_from_slice("\u{fffd}".as_bytes());
                        rest = &after[bad..];
                    }
                }
            }
        }
    }
    if line.len() == body_start && !data.is_empty() {
        // Only the start of a character so far: wait for the rest.
        line.truncate(start);
        return false;
    }
    line.extend_from_slice(b"\"]\n");
    true
}

/// JSON string escaping of valid UTF-8, copying runs of plain bytes at once. Terminal output is
/// mostly printable text with escape sequences now and then: eight bytes are checked at a time,
/// and each byte that needs escaping is found directly.
fn escape_into(out: &mut Vec<u8>, text: &[u8]) {
    let mut run = 0;
    let mut i = 0;
    while let Some(word) = text.get(i..i + 8) {
        let word = u64::from_le_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        let mask = escape_mask(word);
        if mask == 0 {
            i += 8;
            continue;
        }
        // The lowest flagged byte is exact (borrows only run upwards).
        let at = i + (mask.trailing_zeros() / 8) as usize;
        if let Some(escaped) = escape_byte(text[at]) {
            out.extend_from_slice(&text[run..at]);
            out.extend_from_slice(&escaped.bytes[..escaped.len]);
            run = at + 1;
        }
        i = at + 1;
    }
    for (at, &byte) in text.iter().enumerate().skip(i) {
        if let Some(escaped) = escape_byte(byte) {
            out.extend_from_slice(&text[run..at]);
            out.extend_from_slice(&escaped.bytes[..escaped.len]);
            run = at + 1;
        }
    }
    out.extend_from_slice(&text[run..]);
}

/// High bit set in the bytes that may be a control character, `"`, `\\` or DEL (SWAR: the
/// "has a zero byte" and "has a byte less than n" tricks; exact for the lowest flagged byte).
fn escape_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    let delete = zero_bytes(word ^ (ONES * 0x7f));
    below_space | quote | backslash | delete
}

struct Escaped {
    bytes: [u8; 6],
    len: usize,
}

fn escape_byte(byte: u8) -> Option<Escaped> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = |c: u8| Escaped {
        bytes: [b'\\', c, 0, 0, 0, 0],
        len: 2,
    };
    match byte {
        b'"' => Some(short(b'"')),
        b'\\' => Some(short(b'\\')),
        b'\n' => Some(short(b'n')),
        b'\r' => Some(short(b'r')),
        b'\t' => Some(short(b't')),
        0x08 => Some(short(b'b')),
        0x0c => Some(short(b'f')),
        0x00..=0x1f | 0x7f => Some(Escaped {
            bytes: [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            len: 6,
        }),
        _ => None,
    }
}

/// The time of an event line (`[12.5, "o", …]`), or None for the header and non-event lines.
pub fn event_time(line: &[u8]) -> Option<f64> {
    let rest = line.strip_prefix(b"[")?;
    let end = rest.iter().position(|&b| b == b',')?;
    let time: f64 = std::str::from_utf8(&rest[..end])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    time.is_finite().then_some(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(encoder: &mut EventEncoder, data: &[u8]) -> String {
        let mut line = Vec::new();
        encoder.encode(
            &mut line,
            Duration::from_micros(1_500_000),
            Code::Output,
            data,
        );
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn events_are_json_arrays_that_serde_reads_back() {
        let mut encoder = EventEncoder::default();
        let text = "héllo \"w\"\\ \x1b[1mbold\x1b[0m\r\n\t\x7f";
        let line = encode(&mut encoder, text.as_bytes());
        let (time, code, data): (f64, String, String) = serde_json::from_str(&line).unwrap();
        assert_eq!((time, code.as_str(), data.as_str()), (1.5, "o", text));
        assert!(line.ends_with("\"]\n"));
        assert_eq!(event_time(line.as_bytes()), Some(1.5));
    }

    #[test]
    fn escaping_agrees_with_serde_json_on_every_byte_at_every_position() {
        let mut text = String::new();
        for c in (0u8..=0x7f).map(char::from).chain("é€😀".chars()) {
            text.push(c);
            text.push_str("abc");
        }
        for start in 0..9 {
            let slice = &text[start..];
            let mut out = Vec::new();
            escape_into(&mut out, slice.as_bytes());
            let quoted = format!("\"{}\"", String::from_utf8(out).unwrap());
            let back: String = serde_json::from_str(&quoted).unwrap();
            assert_eq!(back, slice);
        }
    }

    #[test]
    fn a_character_split_between_reads_is_joined() {
        let mut encoder = EventEncoder::default();
        let euro = "€".as_bytes();
        assert_eq!(
            encode(&mut encoder, &[b'a', euro[0]]),
            "[1.500000, \"o\", \"a\"]\n"
        );
        assert_eq!(encode(&mut encoder, &euro[1..2]), "");
        assert_eq!(
            encode(&mut encoder, &[euro[2], b'b']),
            "[1.500000, \"o\", \"€b\"]\n"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        let mut encoder = EventEncoder::default();
        let line = encode(&mut encoder, &[b'x', 0xff, b'y']);
        assert_eq!(line, "[1.500000, \"o\", \"x\u{fffd}y\"]\n");
        let mut encoder = EventEncoder::default();
        assert_eq!(encode(&mut encoder, &[0xe2, 0x82]), "");
        let mut rest = Vec::new();
        encoder.flush(&mut rest, Duration::from_secs(2));
        assert_eq!(
            String::from_utf8(rest).unwrap(),
            "[2.000000, \"o\", \"\u{fffd}\"]\n"
        );
    }

    #[test]
    fn headers_are_asciicast_v2() {
        let mut header = Header::new(80, 24);
        header.command = Some("ls -l".to_owned());
        assert_eq!(
            header.to_line(),
            "{\"version\":2,\"width\":80,\"height\":24,\"command\":\"ls -l\"}\n"
        );
        assert_eq!(event_time(header.to_line().as_bytes()), None);
    }
}
