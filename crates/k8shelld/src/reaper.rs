//! Child processes: one reaper collects every exit status with `waitpid`, hands those of our
//! sessions to whoever waits for them, and discards orphans' (which matters when k8shelld is
//! PID 1 of the workspace and inherits every orphaned process).
//!
//! Spawning happens while holding the reaper's lock, and the reaper only reaps under that lock,
//! so an exit can never be collected before its waiter is registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

type Waiters = HashMap<i32, oneshot::Sender<Exit>>;

/// The reaper. Clones share it.
#[derive(Debug, Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Self {
            waiters: Arc::default(),
        };
        let mut sigchld = signal(SignalKind::child())?;
        let this = reaper.clone();
        tokio::spawn(async move {
            loop {
                this.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Runs `spawn`, which starts a process and returns its pid, so that the process's exit
    /// is delivered to the returned receiver.
    pub fn spawn(
        &self,
        spawn: impl FnOnce() -> std::io::Result<i32>,
    ) -> std::io::Result<(i32, oneshot::Receiver<Exit>)> {
        let mut waiters = self.lock();
        let pid = spawn()?;
        let (tx, exit) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((pid, exit))
    }

    /// Collects every exited child.
    fn reap_all(&self) {
        loop {
            // Peek first (WNOWAIT): a child whose exec failed is reaped by std's spawn itself,
            // which runs under our lock, so we must not take its status from under it.
            let peek = waitid(
                Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            );
            let pid = match peek {
                Ok(status) => match status.pid() {
                    Some(pid) => pid,
                    None => return,
                },
                Err(_) => return,
            };
            let mut waiters = self.lock();
            let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => status,
                Err(_) => continue,
            };
            let exit = match status {
                WaitStatus::Exited(_, code) => Exit::Code(code),
                WaitStatus::Signaled(_, signal, core_dumped) => Exit::Signal {
                    signal: signal as i32,
                    core_dumped,
                },
                _ => continue,
            };
            match waiters.remove(&pid.as_raw()) {
                Some(waiter) => {
                    let _gone = waiter.send(exit);
                }
                None => tracing::debug!(pid = pid.as_raw(), ?exit, "reaped an orphan"),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether this process is the container's init.
pub fn is_pid1() -> bool {
    nix::unistd::getpid() == Pid::from_raw(1)
}
