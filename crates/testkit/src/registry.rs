//! A throwaway OCI registry: the CNCF distribution registry (`docker-registry`, the registry inside
//! Harbor) on a free loopback port, over plain HTTP, with or without htpasswd auth; and a tiny
//! base image made from busybox-static with buildah, pushed to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::binaries::require;
use crate::process::ServerProcess;
use crate::{TestkitError, free_port};

/// A running registry; removed on drop.
#[derive(Debug)]
pub struct Registry {
    _process: ServerProcess,
    port: u16,
    credentials: Option<(String, String)>,
    dir: TempDir,
}

impl Registry {
    /// A registry that lets anyone push and pull.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_inner(None)
    }

    /// A registry that requires `user`/`password` (htpasswd, bcrypt) for everything.
    pub fn start_with_auth(user: &str, password: &str) -> Result<Self, TestkitError> {
        Self::start_inner(Some((user.to_owned(), password.to_owned())))
    }

    fn start_inner(credentials: Option<(String, String)>) -> Result<Self, TestkitError> {
        let binary = require("docker-registry", "docker-registry", &[])?;
        let dir = tempfile::Builder::new()
            .prefix("k8shell-registry-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the registry temp dir", e))?;
        let port = free_port()?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            let htpasswd = require("htpasswd", "apache2-utils", &[])?;
            let out = Command::new(htpasswd)
                .args(["-nbB", user, password])
                .output()
                .map_err(|e| TestkitError::io("running htpasswd", e))?;
            if !out.status.success() {
                return Err(TestkitError::Failed {
                    what: "htpasswd".to_owned(),
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout)
                .map_err(|e| TestkitError::io("writing htpasswd", e))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: k8shell-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| TestkitError::io("writing the registry config", e))?;
        let mut command = Command::new(binary);
        command.arg("serve").arg(&config_path);
        let mut process = ServerProcess::spawn(
            "docker-registry",
            command,
            &dir.path().join("registry.log"),
            libc::SIGTERM,
        )?;
        process.wait_until("the registry's /v2/ endpoint", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(Self {
            _process: process,
            port,
            credentials,
            dir,
        })
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The credentials it requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Builds a busybox image (busybox-static and its applet links, nothing else) with buildah and
    /// pushes it as `<host>/<repository>:latest`; returns that reference.
    pub fn push_busybox(&self, repository: &str) -> Result<String, TestkitError> {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return Err(TestkitError::Missing(crate::Missing {
                binary: "/bin/busybox".to_owned(),
                package: "busybox-static".to_owned(),
            }));
        }
        let reference = format!("{}/{repository}:latest", self.host());
        let storage = self.dir.path().join("buildah");
        let container = buildah(&storage, &["from", "scratch"])?;
        let container = container.trim();
        buildah(
            &storage,
            &["copy", container, "/bin/busybox", "/bin/busybox"],
        )?;
        buildah(
            &storage,
            &[
                "run",
                "--isolation",
                "chroot",
                container,
                "/bin/busybox",
                "sh",
                "-c",
                "/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /etc /tmp && /bin/busybox --install -s && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'root:x:0:' > /etc/group",
            ],
        )?;
        buildah(
            &storage,
            &[
                "config",
                "--env",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd",
                "/bin/sh",
                container,
            ],
        )?;
        buildah(
            &storage,
            &[
                "commit",
                "--format",
                "oci",
                "--rm",
                container,
                "k8shell-test-busybox",
            ],
        )?;
        let mut push = vec!["push", "--tls-verify=false"];
        let creds;
        if let Some((user, password)) = self.credentials() {
            creds = format!("{user}:{password}");
            push.extend(["--creds", creds.as_str()]);
        }
        let target = format!("docker://{reference}");
        push.extend(["k8shell-test-busybox", target.as_str()]);
        buildah(&storage, &push)?;
        Ok(reference)
    }
}

/// Runs buildah as root with its own storage under `storage` (vfs: works everywhere).
pub fn buildah(storage: &Path, args: &[&str]) -> Result<String, TestkitError> {
    let binary = require("buildah", "buildah", &[])?;
    let out = Command::new(binary)
        .args(buildah_storage_args(storage))
        .args(args)
        .output()
        .map_err(|e| TestkitError::io("running buildah", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TestkitError::Failed {
            what: format!("buildah {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// `--root`, `--runroot` and the vfs driver, so that tests never touch the machine's storage.
pub fn buildah_storage_args(storage: &Path) -> Vec<String> {
    let root: PathBuf = storage.join("root");
    let runroot: PathBuf = storage.join("run");
    vec![
        "--root".to_owned(),
        root.display().to_string(),
        "--runroot".to_owned(),
        runroot.display().to_string(),
        "--storage-driver".to_owned(),
        "vfs".to_owned(),
    ]
}
