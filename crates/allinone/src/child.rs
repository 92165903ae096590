//! Child processes (PostgreSQL, nats-server, the registry): each in its own process group, so
//! that the terminal's Ctrl-C reaches only the all-in-one, which stops them last and in order;
//! each told by the kernel to stop if the all-in-one dies (`setpriv --pdeathsig`); each logging
//! to `<state>/logs/<name>.log`. Orphans of a killed run are found by their command line.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;

/// How long a child may take to start or to stop before we give up on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running child.
#[derive(Debug)]
pub struct Child {
    name: &'static str,
    child: std::process::Child,
    stop_signal: Signal,
    log: PathBuf,
}

/// `program args…` prefixed so that the kernel sends `signal` to it when we die. Spawn from a
/// thread that lives as long as the process (the death signal follows the forking thread).
pub fn command_dying_with_us(program: &Path, signal: Signal) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg("--pdeathsig")
        .arg(signal.as_str().trim_start_matches("SIG"))
        .arg("--")
        .arg(program);
    command
}

impl Child {
    /// Starts `command`, output appended to `log`.
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        log: &Path,
        stop_signal: Signal,
    ) -> Result<Self, Error> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating a log handle", e))?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io(format!("starting {name}"), e))?;
        Ok(Self {
            name,
            child,
            stop_signal,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `ready` answers yes; an error naming the log if the child exits first or
    /// takes too long.
    pub async fn wait_ready<F, Fut>(&mut self, mut ready: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(format!("exited with {status}")));
            }
            if ready().await {
                return Ok(());
            }
            if start.elapsed() > PATIENCE {
                return Err(self.failed(format!("not ready within {PATIENCE:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn failed(&self, detail: String) -> Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::Setup {
            what: format!("starting {}", self.name),
            detail: format!(
                "{detail}; the end of {}:\n{}",
                self.log.display(),
                tail.join("\n")
            ),
        }
    }

    /// Sends the stop signal and waits; kills it if it does not go.
    pub async fn stop(mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, self.stop_signal);
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(child = self.name, "did not stop in time; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child whose start failed half-way is not left running.
impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops the process `pid` if it is an orphan of ours: alive, and its command line mentions
/// `marker` (our data directory or config file). Says what it did.
pub async fn stop_orphan(name: &str, pid: u32, marker: &Path, signal: Signal) {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let marker = marker.to_string_lossy();
    if !String::from_utf8_lossy(&cmdline).contains(marker.as_ref()) {
        return;
    }
    println!("  a {name} of the previous run (PID {pid}) is still running; stopping it");
    let Ok(raw) = i32::try_from(pid) else { return };
    let pid_ = Pid::from_raw(raw);
    let _ = kill(pid_, signal);
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = kill(pid_, Signal::SIGKILL);
        }
        if start.elapsed() > PATIENCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The PID in the first line of `file`, if any.
pub fn pid_in(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `name` on `PATH` or in the extra directories (sbin is often off a user's PATH).
pub fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `name`, or an error with the Debian package to install.
pub fn require_program(name: &str, package: &str) -> Result<PathBuf, Error> {
    find_program(name, &["/usr/sbin", "/sbin", "/usr/local/sbin"]).ok_or_else(|| Error::Missing {
        program: name.to_owned(),
        package: package.to_owned(),
    })
}

/// Runs `command` to completion, in its own process group (a Ctrl-C during the start is the
/// all-in-one's to handle, not a half-written image's); its stderr in the error.
pub fn run(what: &str, command: &mut Command) -> Result<String, Error> {
    let out = command
        .process_group(0)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Setup {
            what: what.to_owned(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        })
    }
}
