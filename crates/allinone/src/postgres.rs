//! PostgreSQL from the machine's binaries, data in `<state>/postgres/data`, reachable only by
//! its Unix socket in a root-only directory (no TCP port: `trust` is safe there, and nothing
//! clashes with a PostgreSQL of the host). As root it runs in a user namespace as uid 1000
//! (PostgreSQL refuses uid 0), so no file changes owner.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::Error;
use crate::child::{Child, command_dying_with_us, find_program, pid_in, run, stop_orphan};
use crate::state::StateDir;

const PACKAGE: &str = "postgresql";
/// The socket's name in its directory; the whole path must fit in 107 bytes.
const SOCKET: &str = ".s.PGSQL.5432";

/// The running server.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    /// The database every service uses (each in its own schema).
    pub url: String,
}

impl Postgres {
    /// initdb on the first start, then the server; the database `k8shell` exists when it returns.
    pub async fn start(state: &StateDir) -> Result<Self, Error> {
        let bin = server_bin_dir()?;
        let data = state.path("postgres/data");
        let socket_dir = socket_dir(state)?;
        if data.join("PG_VERSION").exists() {
            check_version(&bin, &data)?;
        } else {
            println!("  creating the PostgreSQL cluster in {}", data.display());
            state.dir("postgres")?;
            run(
                "initdb",
                as_unprivileged(&bin.join("initdb"))
                    .arg("-D")
                    .arg(&data)
                    .args([
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]),
            )?;
        }
        // A server of a killed run still holds the data directory.
        if let Some(pid) = pid_in(&data.join("postmaster.pid")) {
            stop_orphan("PostgreSQL", pid, &data, Signal::SIGINT).await;
        }
        let mut command = as_unprivileged_dying_with_us(&bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=", "-p", "5432"])
            .args(["-c", "max_connections=100"]);
        // SIGINT: "fast" shutdown; clients are disconnected instead of waited for.
        let log = state.dir("logs")?.join("postgres.log");
        let mut child = Child::spawn("PostgreSQL", command, &log, Signal::SIGINT)?;
        let psql = bin.join("psql");
        let query = |sql: &str| {
            let mut command = Command::new(&psql);
            command.arg("-h").arg(&socket_dir).args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ]);
            command
        };
        child
            .wait_ready(|| {
                let ok = query("select 1").output().is_ok_and(|o| o.status.success());
                async move { ok }
            })
            .await?;
        let exists = run(
            "psql",
            &mut query("SELECT 1 FROM pg_database WHERE datname = 'k8shell'"),
        )?;
        if exists.trim().is_empty() {
            run("psql", &mut query("CREATE DATABASE k8shell"))?;
        }
        Ok(Self {
            child,
            url: format!(
                "postgres://postgres@localhost/k8shell?host={}",
                socket_dir.display()
            ),
        })
    }

    pub async fn stop(self) {
        self.child.stop().await;
    }
}

/// `<state>/postgres/run`, or a short root-only directory under /run when that path is too
/// long for a Unix socket.
fn socket_dir(state: &StateDir) -> Result<PathBuf, Error> {
    let preferred = state.path("postgres/run");
    let dir = if preferred.join(SOCKET).as_os_str().len() <= 100 {
        preferred
    } else {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            state.root().as_os_str().as_encoded_bytes(),
        );
        let short = crate::hex(&digest.as_ref()[..4]);
        let dir = PathBuf::from(format!("/run/k8shell-{short}"));
        println!(
            "  the state directory's path is too long for PostgreSQL's socket; it lives in {}",
            dir.display()
        );
        dir
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::io(format!("making {} private", dir.display()), e))?;
    Ok(dir)
}

/// The data directory must be of the binaries' major version.
fn check_version(bin: &Path, data: &Path) -> Result<(), Error> {
    let cluster = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    let server = run(
        "postgres --version",
        Command::new(bin.join("postgres")).arg("--version"),
    )?;
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let major = server
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .unwrap_or_default();
    if cluster.trim() != major {
        return Err(Error::Setup {
            what: "starting PostgreSQL".to_owned(),
            detail: format!(
                "the data in {} is of PostgreSQL {} but the server here is {major}; upgrade it with pg_upgrade, or install PostgreSQL {}",
                data.display(),
                cluster.trim(),
                cluster.trim()
            ),
        });
    }
    Ok(())
}

/// The newest `/usr/lib/postgresql/<version>/bin` with a server (Debian), else the directory
/// of `postgres` on `PATH` (Nix).
fn server_bin_dir() -> Result<PathBuf, Error> {
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
    find_program("postgres", &[])
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| Error::Missing {
            program: "postgres (in /usr/lib/postgresql/<version>/bin or on PATH)".to_owned(),
            package: PACKAGE.to_owned(),
        })
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `--map-user=… --map-group=…`: the `postgres` account of the package (initdb looks its
/// uid up), else uid 1000.
fn mapping() -> [String; 2] {
    let (uid, gid) = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .map_or((1000, 1000), |u| (u.uid.as_raw(), u.gid.as_raw()));
    [format!("--map-user={uid}"), format!("--map-group={gid}")]
}

/// `program` as an unprivileged user in a user namespace when we are root (files stay
/// root's on the host, so nothing changes owner).
fn as_unprivileged(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("unshare");
        command.args(mapping()).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The same, and stopped by the kernel when we die (set after the namespace, which would
/// clear it).
fn as_unprivileged_dying_with_us(program: &Path) -> Command {
    let mut command = command_dying_with_us(program, Signal::SIGINT);
    if running_as_root() {
        let setpriv = Path::new(command.get_program()).to_path_buf();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        command = Command::new("unshare");
        command.args(mapping()).arg(setpriv).args(args);
    }
    command
}
