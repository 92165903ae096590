//! A child server process: log to a file, stop by PID with a chosen signal, print the log when a
//! test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestkitError;

/// How long a component may take to start or stop before the harness gives up. Not a test
/// limit: it only keeps a broken machine from hanging CI.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A running server process.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    stop_signal: libc::c_int,
}

impl ServerProcess {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        stop_signal: libc::c_int,
    ) -> Result<Self, TestkitError> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| TestkitError::io(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the log handle", e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| TestkitError::io(format!("starting {name}"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
            stop_signal,
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An error if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<(), TestkitError> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(TestkitError::NotReady {
                what: self.name.clone(),
                detail: format!("exited with {status}"),
                log: self.log(),
            });
        }
        Ok(())
    }

    /// Waits until `ready` says yes, polling; fails if the process dies or takes too long.
    pub(crate) fn wait_until(
        &mut self,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), TestkitError> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if ready() {
                return Ok(());
            }
            if start.elapsed() > PATIENCE {
                return Err(TestkitError::NotReady {
                    what: self.name.clone(),
                    detail: format!("{what} not reached within {PATIENCE:?}"),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the stop signal and waits for the exit; kills it if it does not go.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            signal(pid, self.stop_signal);
        }
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}\n----- end of log of {} -----",
                self.name,
                self.log.display(),
                self.log(),
                self.name
            );
        }
    }
}

#[allow(unsafe_code)]
fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) with a PID of our own child and a valid signal number has no memory
    // effects; failure (already exited) is fine.
    unsafe {
        libc::kill(pid, sig);
    }
}
