//! A program on a pseudo-terminal, driven like a person at a keyboard: type, wait for text on
//! the screen, resize the window (the program gets SIGWINCH), and see how it exits.
// A terminal needs openpty, a controlling terminal in the child, and TIOCSWINSZ: libc calls.
#![allow(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError};

use crate::TestkitError;

/// A running program with a terminal.
pub struct Terminal {
    master: std::fs::File,
    child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
    /// Bytes of `screen` already matched by `expect`.
    seen: usize,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish_non_exhaustive()
    }
}

fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Terminal {
    /// Starts `command` as the session leader of a new `cols`×`rows` terminal.
    pub fn spawn(mut command: Command, cols: u16, rows: u16) -> Result<Self, TestkitError> {
        let (mut master, mut slave) = (0, 0);
        let size = winsize(cols, rows);
        // SAFETY: openpty writes two descriptors into the provided ints; the name buffer and
        // termios are null, the window size is a valid struct.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        if opened != 0 {
            return Err(TestkitError::io("openpty", std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let io = |e| TestkitError::io("terminal descriptors", e);
        command
            .stdin(slave.try_clone().map_err(io)?)
            .stdout(slave.try_clone().map_err(io)?)
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| TestkitError::io("the terminal's program", e))?;
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone().map_err(io)?;
        let screen = Arc::new(Mutex::new(Vec::new()));
        let filled = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            // Ends with EIO once the program and its children closed the terminal.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                filled
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(Self {
            master,
            child,
            screen,
            seen: 0,
        })
    }

    /// Types `text` (`\r` is Enter, `\x03` is Ctrl-C).
    pub fn send(&mut self, text: &str) -> Result<(), TestkitError> {
        self.master
            .write_all(text.as_bytes())
            .map_err(|e| TestkitError::io("typing", e))
    }

    /// Everything the terminal showed so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// Waits until `text` appears after what earlier calls matched; returns the screen up to
    /// and including it.
    pub async fn expect(&mut self, text: &str) -> Result<String, TestkitError> {
        let deadline = std::time::Instant::now() + crate::process::PATIENCE;
        loop {
            let found = {
                let screen = self.screen.lock().unwrap_or_else(PoisonError::into_inner);
                let unseen =
                    String::from_utf8_lossy(&screen[self.seen.min(screen.len())..]).into_owned();
                unseen.find(text).map(|at| {
                    let upto = &unseen[..at + text.len()];
                    (upto.to_owned(), upto.len())
                })
            };
            if let Some((upto, n)) = found {
                self.seen += n;
                return Ok(upto);
            }
            if std::time::Instant::now() > deadline {
                return Err(TestkitError::Failed {
                    what: format!("waiting for {text:?} on the terminal"),
                    detail: format!("the screen shows:\n{}", self.screen()),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Resizes the window; the program gets SIGWINCH.
    pub fn resize(&mut self, cols: u16, rows: u16) -> Result<(), TestkitError> {
        let size = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer on our own descriptor.
        let done = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if done < 0 {
            return Err(TestkitError::io("resize", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Waits for the program to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus, TestkitError> {
        let deadline = std::time::Instant::now() + crate::process::PATIENCE;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| TestkitError::io("waiting", e))?
            {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                return Err(TestkitError::Failed {
                    what: "the terminal's program to exit".into(),
                    detail: format!("the screen shows:\n{}", self.screen()),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
