//! Live output of sessions for `Watch`: uploads publish the lines they receive, watchers get the
//! recent tail of each terminal (so that they do not start on an empty screen) and then follow.
//!
//! In-process: a watcher must reach the replica that receives the session's upload. With more
//! than one replica this becomes a NATS subject per session.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Lines of one terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub channel: u32,
    pub data: Bytes,
}

/// How much recent output a new watcher gets per terminal.
const TAIL_BYTES: usize = 256 * 1024;

#[derive(Debug)]
struct Tail {
    channel: u32,
    header: Bytes,
    recent: VecDeque<Bytes>,
    recent_bytes: usize,
}

#[derive(Debug)]
struct Feed {
    sender: broadcast::Sender<Frame>,
    tails: HashMap<Uuid, Tail>,
}

/// The live sessions of this replica.
#[derive(Debug, Default)]
pub struct LiveView {
    feeds: Mutex<HashMap<Uuid, Feed>>,
}

impl LiveView {
    /// Starts a feed for a live session (idempotent).
    pub fn open(&self, session: Uuid) {
        if let Ok(mut feeds) = self.feeds.lock() {
            feeds.entry(session).or_insert_with(|| Feed {
                sender: broadcast::channel(1024).0,
                tails: HashMap::new(),
            });
        }
    }

    /// Ends a session's feed: its watchers see the end.
    pub fn close(&self, session: Uuid) {
        if let Ok(mut feeds) = self.feeds.lock() {
            feeds.remove(&session);
        }
    }

    /// Publishes whole lines of a recording (the header line comes with the first).
    pub fn publish(
        &self,
        session: Uuid,
        recording: Uuid,
        channel: u32,
        header: &str,
        lines: Bytes,
    ) {
        let Ok(mut feeds) = self.feeds.lock() else {
            return;
        };
        let Some(feed) = feeds.get_mut(&session) else {
            return;
        };
        let tail = feed.tails.entry(recording).or_insert_with(|| {
            let header = Bytes::from(format!("{header}\n"));
            // Watchers already following learn of the new terminal.
            let _ = feed.sender.send(Frame {
                channel,
                data: header.clone(),
            });
            Tail {
                channel,
                header,
                recent: VecDeque::new(),
                recent_bytes: 0,
            }
        });
        // The file's first bytes are the header line, which the tail keeps apart.
        let body = if lines.starts_with(&tail.header) && tail.recent.is_empty() {
            lines.slice(tail.header.len()..)
        } else {
            lines
        };
        if body.is_empty() {
            return;
        }
        tail.recent_bytes += body.len();
        tail.recent.push_back(body.clone());
        while tail.recent_bytes > TAIL_BYTES && tail.recent.len() > 1 {
            if let Some(old) = tail.recent.pop_front() {
                tail.recent_bytes -= old.len();
            }
        }
        // No watchers is fine.
        let _ = feed.sender.send(Frame {
            channel,
            data: body,
        });
    }

    /// Subscribes to a session: what to show first (each terminal's header and recent output),
    /// then the live frames. None if the session has no feed here.
    pub fn watch(&self, session: Uuid) -> Option<(Vec<Frame>, broadcast::Receiver<Frame>)> {
        let feeds = self.feeds.lock().ok()?;
        let feed = feeds.get(&session)?;
        let mut first = Vec::new();
        let mut tails: Vec<_> = feed.tails.values().collect();
        tails.sort_by_key(|t| t.channel);
        for tail in tails {
            first.push(Frame {
                channel: tail.channel,
                data: tail.header.clone(),
            });
            first.extend(tail.recent.iter().map(|data| Frame {
                channel: tail.channel,
                data: data.clone(),
            }));
        }
        Some((first, feed.sender.subscribe()))
    }
}
