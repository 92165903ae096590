//! From the client into the workspace, with bounded memory and without ever stalling the
//! connection.
//!
//! russh hands each channel's messages to a bounded queue from the connection's single loop, and
//! it re-opens the client's window as soon as data arrives, not when it is consumed. If the loop
//! ever waited for a full queue, it would stop reading the client's window adjustments for the
//! other direction, and a workspace process that writes while it reads (`cat`) would deadlock the
//! connection. So each channel moves its messages into its own buffer at once, and the
//! connection's total backlog closes the window instead: while more than [`Backlog::PAUSE_AT`]
//! bytes wait, [`Backlog::window`] makes window adjustments tiny, so a client can add little
//! more than the window it already had. A buffer therefore holds at most that
//! window plus the pause threshold.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use russh::ChannelMsg;
use russh::ChannelReadHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Bytes received from the client and not yet taken by the workspace, for one connection.
#[derive(Debug, Default)]
pub struct Backlog(AtomicUsize);

impl Backlog {
    /// Above this, the client's windows are no longer re-opened.
    pub const PAUSE_AT: usize = 1024 * 1024;

    /// The window target while paused. russh re-opens a window when it falls below half the
    /// target, so 2 re-opens it by 2 bytes once it is empty (and asks again then): the client
    /// trickles instead of sending. 0 would mean "unchanged", and with 1 half of it is 0, so an
    /// empty window would never be re-opened.
    const PAUSED: u32 = 2;
    const _HALF_OF_PAUSED_REOPENS: () = assert!(Self::PAUSED / 2 > 0);

    /// The window the connection grants next (russh's `Handler::adjust_window`): the normal
    /// `target` while the backlog is small, [`Self::PAUSED`] while it is large.
    pub fn window(&self, target: u32) -> u32 {
        if self.0.load(Ordering::Relaxed) > Self::PAUSE_AT {
            Self::PAUSED
        } else {
            target
        }
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
}

/// What one client message becomes on the way to the workspace.
pub enum Step<T> {
    /// Forward this, which carries `n` bytes of client data.
    Send(T, usize),
    /// Nothing to forward.
    Skip,
    /// The client sends nothing more, but still reads (SFTP's EOF).
    Stop,
}

/// Bytes a pump holds, given back to the connection's backlog however the pump ends (an
/// aborted pump included).
struct Held {
    backlog: Arc<Backlog>,
    bytes: usize,
}

impl Held {
    fn add(&mut self, n: usize) {
        self.bytes += n;
        self.backlog.add(n);
    }

    fn sub(&mut self, n: usize) {
        self.bytes -= n;
        self.backlog.sub(n);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.backlog.sub(self.bytes);
    }
}

/// Moves the channel's messages, converted by `convert`, to `out` until the client is done or
/// `out` is gone. It starts as soon as the channel does, before the workspace is ready, so that
/// russh's loop never waits on this channel. When the client closes the channel or the
/// connection ends, `gone` is cancelled: the output side then stops too. Dropping `out` at the
/// end ends the workspace's input.
pub async fn pump<T>(
    mut rx: ChannelReadHalf,
    out: mpsc::Sender<T>,
    backlog: Arc<Backlog>,
    gone: CancellationToken,
    mut convert: impl FnMut(ChannelMsg) -> Step<T>,
) {
    let mut queue: VecDeque<(T, usize)> = VecDeque::new();
    let mut held = Held { backlog, bytes: 0 };
    let mut open = true;
    while open || !queue.is_empty() {
        tokio::select! {
            permit = out.reserve(), if !queue.is_empty() => {
                let Ok(permit) = permit else { break };
                if let Some((item, n)) = queue.pop_front() {
                    held.sub(n);
                    permit.send(item);
                }
            }
            message = rx.wait(), if open => match message {
                Some(ChannelMsg::Close) | None => {
                    gone.cancel();
                    return;
                }
                Some(message) => match convert(message) {
                    Step::Send(item, n) => {
                        held.add(n);
                        queue.push_back((item, n));
                    }
                    Step::Skip => {}
                    Step::Stop => open = false,
                },
            },
        }
    }
    // Input is over: the workspace sees its end. Still watch for the client closing the channel.
    drop(out);
    while let Some(message) = rx.wait().await {
        if matches!(message, ChannelMsg::Close) {
            break;
        }
    }
    gone.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_backlog_pauses_the_window_and_a_drained_one_restores_it() {
        let backlog = Backlog::default();
        assert_eq!(backlog.window(2 << 20), 2 << 20);
        backlog.add(Backlog::PAUSE_AT + 1);
        assert_eq!(backlog.window(2 << 20), Backlog::PAUSED);
        backlog.sub(Backlog::PAUSE_AT + 1);
        assert_eq!(backlog.window(2 << 20), 2 << 20);
    }
}
