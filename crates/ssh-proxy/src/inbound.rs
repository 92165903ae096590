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

use k8shell_proto::k8shelld::v1 as kpb;
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

/// The most client bytes one message to the workspace carries (ARCHITECTURE §3: 64 KiB).
pub const MESSAGE_MAX: usize = 64 * 1024;

/// A message to the workspace that can take the client data queued after it, so that a busy
/// upload travels in fewer, larger messages (fewer frames, wake-ups and writes on both sides).
/// Only messages already waiting are joined: typing is never held back.
pub trait Join: Sized {
    /// Appends `next` if both are plain data and the sum stays within [`MESSAGE_MAX`]; gives
    /// `next` back otherwise.
    fn join(&mut self, next: Self) -> Result<(), Self>;
}

fn fits(data: &[u8], next: &[u8]) -> bool {
    data.len() + next.len() <= MESSAGE_MAX
}

impl Join for kpb::ExecInput {
    fn join(&mut self, next: Self) -> Result<(), Self> {
        use kpb::exec_input::Input::Stdin;
        match (&mut self.input, &next.input) {
            (Some(Stdin(data)), Some(Stdin(more))) if fits(data, more) => {
                data.extend_from_slice(more);
                Ok(())
            }
            _ => Err(next),
        }
    }
}

impl Join for kpb::ForwardInput {
    fn join(&mut self, next: Self) -> Result<(), Self> {
        use kpb::forward_input::Input::Data;
        match (&mut self.input, &next.input) {
            (Some(Data(data)), Some(Data(more))) if fits(data, more) => {
                data.extend_from_slice(more);
                Ok(())
            }
            _ => Err(next),
        }
    }
}

/// SFTP travels as the raw byte stream: any two pieces join.
impl Join for kpb::SftpData {
    fn join(&mut self, next: Self) -> Result<(), Self> {
        if fits(&self.data, &next.data) {
            self.data.extend_from_slice(&next.data);
            Ok(())
        } else {
            Err(next)
        }
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
pub async fn pump<T: Join>(
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
                        let rest = match queue.back_mut() {
                            Some((last, bytes)) => match last.join(item) {
                                Ok(()) => {
                                    *bytes += n;
                                    None
                                }
                                Err(item) => Some(item),
                            },
                            None => Some(item),
                        };
                        if let Some(item) = rest {
                            queue.push_back((item, n));
                        }
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
    fn queued_data_joins_up_to_one_message_and_nothing_else_does() {
        let data = |n: usize| kpb::ForwardInput {
            input: Some(kpb::forward_input::Input::Data(vec![7; n])),
        };
        let mut first = data(40 * 1024);
        assert!(first.join(data(24 * 1024)).is_ok());
        assert!(
            matches!(&first.input, Some(kpb::forward_input::Input::Data(d)) if d.len() == MESSAGE_MAX)
        );
        assert!(first.join(data(1)).is_err(), "a full message takes no more");
        let eof = kpb::ForwardInput {
            input: Some(kpb::forward_input::Input::Eof(kpb::Eof {})),
        };
        assert!(
            data(1).join(eof.clone()).is_err(),
            "EOF stays its own message, in order"
        );
        let stdin = |b: &[u8]| kpb::ExecInput {
            input: Some(kpb::exec_input::Input::Stdin(b.to_vec())),
        };
        let mut typed = stdin(b"ec");
        assert!(typed.join(stdin(b"ho")).is_ok());
        assert_eq!(typed, stdin(b"echo"));
        let resize = kpb::ExecInput {
            input: Some(kpb::exec_input::Input::Resize(kpb::WindowSize::default())),
        };
        assert!(typed.join(resize).is_err());
    }

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
