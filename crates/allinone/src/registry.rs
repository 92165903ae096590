//! The image registry: a docker-registry child serving `<state>/registry/data` on a port
//! chosen at the first start (image references in the database name it), with a password
//! (unauthenticated, any local user could push the tags builds are looked up by); or a
//! registry that already exists.

use std::path::PathBuf;

use base64::Engine as _;
use nix::sys::signal::Signal;

use crate::Error;
use crate::child::{Child, command_dying_with_us, pid_in, require_program, stop_orphan};
use crate::state::{Settings, StateDir, write_private};

/// User name of the registry child.
const USER: &str = "k8shell";

/// Where images go, and how to log in.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    /// `host:port[/path]`, without a scheme.
    pub host: String,
    pub tls_verify: bool,
    /// A docker-style `auth.json`, if the registry wants credentials.
    pub auth_file: Option<PathBuf>,
}

/// The registry child.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    pub access: RegistryAccess,
}

impl Registry {
    pub async fn start(state: &StateDir, settings: &Settings) -> Result<Self, Error> {
        let binary = require_program("docker-registry", "docker-registry")
            .or_else(|_| require_program("registry", "docker-registry"))?;
        let dir = state.dir("registry")?;
        let config = dir.join("config.yml");
        let pid_file = dir.join("registry.pid");
        if let Some(pid) = pid_in(&pid_file) {
            stop_orphan("registry", pid, &config, Signal::SIGTERM).await;
        }
        let port = settings.registry_port;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(Error::Setup {
                what: "starting the registry".to_owned(),
                detail: format!(
                    "port {port} on 127.0.0.1 is taken, and the images of this state directory name it; \
                     free it (`ss -ltnp 'sport = :{port}'` shows who holds it)"
                ),
            });
        }
        let htpasswd = dir.join("htpasswd");
        let hashed = htpasswd_line(&settings.registry_password)?;
        write_private(&htpasswd, hashed.trim().as_bytes())?;
        let text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: k8shell\n    path: {}\n",
            dir.join("data").display(),
            htpasswd.display()
        );
        write_private(&config, text.as_bytes())?;
        let mut command = command_dying_with_us(&binary, Signal::SIGTERM);
        command.arg("serve").arg(&config);
        let log = state.dir("logs")?.join("registry.log");
        let mut child = Child::spawn("the registry", command, &log, Signal::SIGTERM)?;
        write_private(&pid_file, child.pid().to_string().as_bytes())?;
        child
            .wait_ready(|| async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await?;
        let host = format!("127.0.0.1:{port}");
        let creds = format!("{USER}:{}", settings.registry_password);
        let auth = base64::engine::general_purpose::STANDARD.encode(creds);
        let auth_file = dir.join("auth.json");
        let auth_json = serde_json::json!({"auths": {host.clone(): {"auth": auth}}});
        write_private(&auth_file, auth_json.to_string().as_bytes())?;
        Ok(Self {
            child,
            access: RegistryAccess {
                host,
                tls_verify: false,
                auth_file: Some(auth_file),
            },
        })
    }

    pub async fn stop(self) {
        self.child.stop().await;
    }
}

/// A bcrypt htpasswd line; the password goes through a pipe, never a command line (other
/// users can read those in /proc).
fn htpasswd_line(password: &str) -> Result<String, Error> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(require_program("htpasswd", "apache2-utils")?)
        .args(["-niB", USER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("running htpasswd", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(password.as_bytes())
            .map_err(|e| Error::io("writing to htpasswd", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("running htpasswd", e))?;
    if !out.status.success() {
        return Err(Error::setup(
            "htpasswd",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
