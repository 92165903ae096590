//! A recording read from a point in time, opened by the screen as it was then: the lines
//! before `from` go through an in-memory terminal (vt100) here, and the browser gets the
//! header, one resize and one output event at `from` that redraw that screen, then the
//! recording's own events. A player seeks without downloading what lies before.

use k8shell_session::asciicast::Header;
use serde_json::Value;

/// Turns whole asciicast lines, read from the start, into the recording from `from` on.
pub struct ScreenAt {
    from: f64,
    header: Option<String>,
    size: (u16, u16),
    parser: Option<vt100::Parser>,
    passed: bool,
    partial: Vec<u8>,
}

impl std::fmt::Debug for ScreenAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenAt")
            .field("from", &self.from)
            .field("size", &self.size)
            .field("passed", &self.passed)
            .finish_non_exhaustive()
    }
}

/// The terminal of a recording whose header names no size.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

impl ScreenAt {
    pub fn new(from: f64) -> Self {
        Self {
            from,
            header: None,
            size: DEFAULT_SIZE,
            parser: None,
            passed: false,
            partial: Vec::new(),
        }
    }

    /// The bytes to send for `chunk`: nothing until the first event at or after `from`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.passed && self.partial.is_empty() {
            return chunk.to_vec();
        }
        self.partial.extend_from_slice(chunk);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        let mut out = Vec::new();
        for line in whole.split(|b| *b == b'\n') {
            self.line(line, &mut out);
        }
        out
    }

    /// At the end of the recording: if it ended before `from`, the screen as it ended.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest, &mut out);
        if !self.passed {
            self.open(&mut out);
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if self.passed {
            out.extend_from_slice(line);
            out.push(b'\n');
            return;
        }
        if self.header.is_none() {
            self.header = Some(String::from_utf8_lossy(line).into_owned());
            if let Ok(header) = serde_json::from_slice::<Header>(line)
                && header.width > 0
                && header.height > 0
            {
                self.size = (header.width, header.height);
            }
            return;
        }
        let Ok(Value::Array(event)) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let time = event.first().and_then(Value::as_f64).unwrap_or(0.0);
        if time >= self.from {
            self.open(out);
            out.extend_from_slice(line);
            out.push(b'\n');
            return;
        }
        let data = event.get(2).and_then(Value::as_str).unwrap_or_default();
        match event.get(1).and_then(Value::as_str) {
            Some("o") => self.parser().process(data.as_bytes()),
            Some("r") => {
                if let Some((cols, rows)) = parse_size(data) {
                    self.size = (cols, rows);
                    self.parser().screen_mut().set_size(rows, cols);
                }
            }
            _ => {}
        }
    }

    fn parser(&mut self) -> &mut vt100::Parser {
        let (cols, rows) = self.size;
        self.parser
            .get_or_insert_with(|| vt100::Parser::new(rows, cols, 0))
    }

    /// The header, then the screen at `from` as a resize and an output event.
    fn open(&mut self, out: &mut Vec<u8>) {
        self.passed = true;
        out.extend_from_slice(
            self.header
                .as_deref()
                .unwrap_or("{\"version\":2}")
                .as_bytes(),
        );
        out.push(b'\n');
        let (cols, rows) = self.size;
        let screen = self.parser().screen().state_formatted();
        let from = self.from;
        for event in [
            serde_json::json!([from, "r", format!("{cols}x{rows}")]),
            serde_json::json!([from, "o", String::from_utf8_lossy(&screen)]),
        ] {
            out.extend_from_slice(event.to_string().as_bytes());
            out.push(b'\n');
        }
    }
}

fn parse_size(data: &str) -> Option<(u16, u16)> {
    let (cols, rows) = data.trim().split_once('x')?;
    Some((cols.parse().ok()?, rows.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAST: &str = "{\"version\":2,\"width\":20,\"height\":4}\n\
        [0.5,\"o\",\"first line\\r\\n\"]\n\
        [1.0,\"o\",\"\\u001b[2J\\u001b[Hcleared\\r\\n\"]\n\
        [2.0,\"o\",\"after\\r\\n\"]\n";

    fn lines(bytes: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_seek_opens_with_the_screen_as_it_was_then() {
        let mut at = ScreenAt::new(1.5);
        let mut out = Vec::new();
        // Chunks need not end at line ends.
        for chunk in CAST.as_bytes().chunks(7) {
            out.extend(at.push(chunk));
        }
        out.extend(at.finish());
        let events = lines(&out);
        assert_eq!(events[0]["width"], 20, "the header comes first");
        assert_eq!(events[1], serde_json::json!([1.5, "r", "20x4"]));
        let screen = events[2][2].as_str().unwrap();
        assert_eq!(events[2][0], 1.5);
        assert!(screen.contains("cleared"), "{screen:?}");
        assert!(
            !screen.contains("first line"),
            "cleared text is not redrawn: {screen:?}"
        );
        assert_eq!(events[3], serde_json::json!([2.0, "o", "after\r\n"]));
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn a_resize_before_the_point_is_kept() {
        let cast =
            "{\"version\":2,\"width\":20,\"height\":4}\n[0.1,\"r\",\"30x6\"]\n[0.2,\"o\",\"x\"]\n";
        let mut at = ScreenAt::new(5.0);
        let mut out = at.push(cast.as_bytes());
        assert!(out.is_empty(), "nothing is sent before the point");
        out.extend(at.finish());
        let events = lines(&out);
        assert_eq!(events[1], serde_json::json!([5.0, "r", "30x6"]));
        assert!(events[2][2].as_str().unwrap().contains('x'));
    }
}
