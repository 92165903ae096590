//! A throwaway PostgreSQL server.
//!
//! PostgreSQL refuses to run as root; as root we start it in a user namespace that maps us to an
//! unprivileged uid, which needs no chown and works in a 0700 temp dir (RECIPES.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::binaries::{require, running_as_root};
use crate::process::ServerProcess;
use crate::{TestkitError, free_port};

const PACKAGE: &str = "postgresql";

/// A running PostgreSQL server, removed on drop.
#[derive(Debug)]
pub struct Postgres {
    process: Option<ServerProcess>,
    port: u16,
    bin: PathBuf,
    // Dropped last: the server must stop before its files go.
    dir: TempDir,
}

impl Postgres {
    /// Initialises a cluster in a temp dir and starts it on a free port.
    pub fn start() -> Result<Self, TestkitError> {
        let bin = server_bin_dir()?;
        // Fails early, with the install command, when the client is missing.
        require("psql", "postgresql-client", &[&bin])?;
        let dir = tempfile::Builder::new()
            .prefix("k8shell-pg-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the PostgreSQL temp dir", e))?;
        let data = dir.path().join("data");
        let init = as_unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C.UTF-8")
            .output()
            .map_err(|e| TestkitError::io("running initdb", e))?;
        if !init.status.success() {
            return Err(TestkitError::Failed {
                what: "initdb".to_owned(),
                detail: format!(
                    "{}\n{}{}",
                    init.status,
                    String::from_utf8_lossy(&init.stdout),
                    String::from_utf8_lossy(&init.stderr)
                ),
            });
        }
        let mut postgres = Self {
            process: None,
            port: free_port()?,
            bin,
            dir,
        };
        postgres.start_again()?;
        Ok(postgres)
    }

    /// Stops the server ("fast" shutdown: clients are disconnected). Its data stays.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the server again on the same port and data (after [`Postgres::stop`]).
    pub fn start_again(&mut self) -> Result<(), TestkitError> {
        self.stop();
        let psql = require("psql", "postgresql-client", &[&self.bin])?;
        let port = self.port;
        let mut command = as_unprivileged(&self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=200"]);
        // SIGINT: "fast" shutdown, which disconnects clients instead of waiting for them.
        let mut process = ServerProcess::spawn(
            "postgres",
            command,
            &self.dir.path().join("postgres.log"),
            libc::SIGINT,
        )?;
        process.wait_until("a successful query", || {
            Command::new(&psql)
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-p", &port.to_string(), "-tAc", "select 1"])
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        self.process = Some(process);
        Ok(())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` as the superuser `postgres` (no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(TestkitError::Failed {
                what: "create_database".to_owned(),
                detail: format!("database name {name:?} must be lowercase letters, digits and _"),
            });
        }
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// Runs one SQL command with psql and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        let psql = require("psql", "postgresql-client", &[&self.bin])?;
        let out = Command::new(psql)
            .args(["-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1"])
            .args(["-p", &self.port.to_string(), "-d", db, "-tAc", sql])
            .output()
            .map_err(|e| TestkitError::io("running psql", e))?;
        if !out.status.success() {
            return Err(TestkitError::Failed {
                what: format!("psql {sql:?}"),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The temp dir holding data, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has a server (Debian), else the directory
/// of `postgres` on `PATH` (Nix).
fn server_bin_dir() -> Result<PathBuf, TestkitError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let on_path = require("postgres", PACKAGE, &[]).map_err(|_| crate::Missing {
        binary: "postgres (in /usr/lib/postgresql/<version>/bin or on PATH)".to_owned(),
        package: PACKAGE.to_owned(),
    })?;
    Ok(on_path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf))
}

/// `program`, run as an unprivileged user when we are root.
fn as_unprivileged(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("unshare");
        command
            .args(["--map-user=1000", "--map-group=1000"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}
