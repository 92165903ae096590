//! Starting a process as the workspace user, as sshd does: a new session, the user's groups,
//! gid and uid, the home directory, a clean environment, and the login shell.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::reaper::{Exit, Reaper};
use crate::users::Account;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Program {
    /// Run by the login shell with `-c`; `None` starts the login shell itself.
    pub command: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory; `None` means home.
    pub working_dir: Option<PathBuf>,
    /// `TERM`, for a PTY.
    pub term: Option<String>,
    /// Run this executable with these arguments instead of the shell (k8shelld's own helpers).
    pub executable: Option<(PathBuf, Vec<String>)>,
}

/// The standard streams of the new process.
#[derive(Debug)]
pub enum Streams {
    /// Three pipes: the returned handles are stdin (write), stdout and stderr (read).
    Pipes,
    /// The slave side of a PTY, which becomes the controlling terminal.
    Pty(OwnedFd),
}

/// A started process.
#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    pub exit: tokio::sync::oneshot::Receiver<Exit>,
    /// With [`Streams::Pipes`]: stdin, stdout, stderr.
    pub pipes: Option<(OwnedFd, OwnedFd, OwnedFd)>,
}

/// Why a process could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("environment variable name {0:?} is invalid")]
    EnvName(String),
    #[error("k8shelld runs as uid {current} and cannot switch to user {user} (uid {uid})")]
    CannotSwitchUser {
        current: u32,
        user: String,
        uid: u32,
    },
    #[error("cannot start {program}: {source}")]
    Start { program: String, source: io::Error },
    #[error("invalid path {0:?}")]
    Path(PathBuf),
    #[error("working directory {0} does not exist")]
    NoWorkingDir(PathBuf),
}

/// Default `PATH`s, as sshd sets them.
const PATH_USER: &str = "/usr/local/bin:/usr/bin:/bin:/usr/games";
const PATH_ROOT: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts `program` as `account`.
pub fn spawn(
    reaper: &Reaper,
    account: &Account,
    program: &Program,
    streams: Streams,
) -> Result<Process, SpawnError> {
    let current = nix::unistd::geteuid().as_raw();
    let switch_user = current != account.uid;
    if switch_user && current != 0 {
        return Err(SpawnError::CannotSwitchUser {
            current,
            user: account.name.clone(),
            uid: account.uid,
        });
    }

    let shell_name = account
        .shell
        .file_name()
        .map(OsStr::to_owned)
        .unwrap_or_else(|| "sh".into());
    let mut command = match &program.executable {
        Some((path, args)) => {
            let mut c = Command::new(path);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(&account.shell);
            match &program.command {
                Some(line) => {
                    c.arg0(&shell_name).arg("-c").arg(line);
                }
                None => {
                    let mut login = std::ffi::OsString::from("-");
                    login.push(&shell_name);
                    c.arg0(login);
                }
            }
            c
        }
    };

    command.env_clear();
    let path = if account.uid == 0 {
        PATH_ROOT
    } else {
        PATH_USER
    };
    command
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", &account.shell)
        .env("PATH", path);
    if let Some(term) = &program.term {
        command.env("TERM", term);
    }
    for (name, value) in &program.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(SpawnError::EnvName(name.clone()));
        }
        command.env(name, value);
    }

    // Everything the child needs after fork is prepared here: only async-signal-safe calls
    // (raw syscalls on these values) happen in between fork and exec.
    // A requested directory must exist (running `rm -rf ./*` in `/` because of a typo is not
    // a fallback); only an unreachable home falls back to `/`, as sshd does.
    let requested_dir = program.working_dir.is_some();
    if let Some(dir) = &program.working_dir
        && !dir.is_dir()
    {
        return Err(SpawnError::NoWorkingDir(dir.clone()));
    }
    let workdir = program.working_dir.as_deref().unwrap_or(&account.home);
    let workdir = c_path(workdir)?;
    let groups: Vec<libc::gid_t> = account.groups.clone();
    let (uid, gid) = (account.uid, account.gid);
    let with_pty = matches!(streams, Streams::Pty(_));

    let mut parent_ends = None;
    match streams {
        Streams::Pipes => {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        Streams::Pty(slave) => {
            let start_error = |source| SpawnError::Start {
                program: "pty".to_owned(),
                source,
            };
            command
                .stdin(Stdio::from(slave.try_clone().map_err(start_error)?))
                .stdout(Stdio::from(slave.try_clone().map_err(start_error)?))
                .stderr(Stdio::from(slave));
        }
    }

    // SAFETY: the closure only makes raw system calls on data prepared before the fork
    // (no allocation, no locks), which is what `pre_exec` requires.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if with_pty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if switch_user {
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                // Dropping root must be final.
                if libc::setuid(0) == 0 {
                    return Err(io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            if libc::chdir(workdir.as_ptr()) < 0 {
                if requested_dir {
                    return Err(io::Error::last_os_error());
                }
                // Like sshd: a home that cannot be entered leaves the process in `/`.
                libc::chdir(c"/".as_ptr());
            }
            Ok(())
        });
    }

    let program_name = command.get_program().to_string_lossy().into_owned();
    let (pid, exit) = reaper
        .spawn(|| {
            let mut child = command.spawn()?;
            let pid =
                i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
            if !with_pty {
                let take = |fd: Option<OwnedFd>| fd.ok_or_else(|| io::Error::other("missing pipe"));
                parent_ends = Some((
                    take(child.stdin.take().map(OwnedFd::from))?,
                    take(child.stdout.take().map(OwnedFd::from))?,
                    take(child.stderr.take().map(OwnedFd::from))?,
                ));
            }
            // The reaper owns the exit status; std's handle is only dropped.
            drop(child);
            Ok(pid)
        })
        .map_err(|source| SpawnError::Start {
            program: program_name,
            source,
        })?;
    Ok(Process {
        pid,
        exit,
        pipes: parent_ends,
    })
}

fn c_path(path: &Path) -> Result<CString, SpawnError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SpawnError::Path(path.to_owned()))
}
