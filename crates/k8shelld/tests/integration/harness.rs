//! Starts k8shelld in-process on a Unix socket (or TCP with mTLS) with a test user and a JWKS,
//! and drives its streams.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8shell_common::jwt::{Jwks, JwtSigner, SessionClaims};
use k8shell_common::shutdown::Shutdown;
use k8shell_k8shelld::{Config, Listener};
use k8shell_proto::k8shelld::v1::workspace_client::WorkspaceClient;
use k8shell_proto::k8shelld::v1::{
    ExecInput, ExecOutput, ExecStart, Pty, WindowSize, exec_input, exec_output, exit_status,
};
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

pub type Client = WorkspaceClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every call (or nothing, to test refusals).
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A running k8shelld and what a test needs to talk to it.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub workspace: Uuid,
    pub signer: JwtSigner,
    pub user: TestUser,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<()>,
}

/// The workspace user of the tests.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub extra_gid: u32,
    pub home: PathBuf,
}

pub fn config(dir: &Path, workspace: Uuid, user: &TestUser) -> Config {
    Config {
        workspace_id: workspace,
        user: user.name.clone(),
        unix_socket: Some(dir.join("k8shelld.sock")),
        tcp: None,
        jwks: k8shell_common::jwks::JwksConfig::file(dir.join("jwks.json")),
        audience: "k8shelld".to_owned(),
        passwd_file: dir.join("passwd"),
        group_file: dir.join("group"),
        connect_timeout: Duration::from_secs(2),
        kill_grace: Duration::from_secs(2),
        sftp_server: Some(dir.join("k8shelld")),
        telemetry: Default::default(),
    }
}

/// Writes passwd, group, home and JWKS into a fresh temp dir.
pub fn prepare() -> (tempfile::TempDir, Uuid, JwtSigner, TestUser) {
    let dir = tempfile::tempdir().unwrap();
    // The workspace user must be able to reach its home below the temp dir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    let (name, uid, gid) = if root {
        ("dev".to_owned(), 4242, 4242)
    } else {
        // Not root (a Nix build sandbox): the only user we can run as is ourselves.
        let uid = nix::unistd::geteuid().as_raw();
        (format!("u{uid}"), uid, nix::unistd::getegid().as_raw())
    };
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    if root {
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    }
    let user = TestUser {
        name,
        uid,
        gid,
        extra_gid: 4343,
        home,
    };
    std::fs::write(
        dir.path().join("passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/bash\n{}:x:{}:{}:Dev:{}:/bin/sh\n",
            user.name,
            user.uid,
            user.gid,
            user.home.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("group"),
        format!(
            "{}:x:{}:\nextra:x:{}:ops,{}\n",
            user.name, user.gid, user.extra_gid, user.name
        ),
    )
    .unwrap();
    // The SFTP helper runs as the workspace user, who must be able to reach the binary (the
    // build directory may be below a private home, such as /root).
    let helper = dir.path().join("k8shelld");
    let built = Path::new(env!("CARGO_BIN_EXE_k8shelld"));
    if std::fs::hard_link(built, &helper).is_err() {
        std::fs::copy(built, &helper).unwrap();
    }
    let (signer, _) = JwtSigner::generate("test-key").unwrap();
    let jwks = Jwks {
        keys: vec![signer.jwk()],
    };
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_vec(&jwks).unwrap(),
    )
    .unwrap();
    (dir, Uuid::now_v7(), signer, user)
}

impl Daemon {
    /// k8shelld on a Unix socket.
    pub async fn start() -> Self {
        let (dir, workspace, signer, user) = prepare();
        let config = config(dir.path(), workspace, &user);
        let socket = config.unix_socket.clone().unwrap();
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            k8shell_k8shelld::serve(config, Listener::Unix(listener), stop)
                .await
                .unwrap();
        });
        Self {
            dir,
            socket,
            workspace,
            signer,
            user,
            shutdown,
            task,
        }
    }

    /// A valid session token for this workspace.
    pub fn token(&self) -> String {
        self.token_with(|_| {})
    }

    /// A token with claims changed by `edit`.
    pub fn token_with(&self, edit: impl FnOnce(&mut SessionClaims)) -> String {
        let now = k8shell_common::clock::now().unix_timestamp();
        let mut claims = SessionClaims {
            iss: "k8shell-identity".into(),
            sub: "alice".into(),
            aud: "k8shelld".into(),
            ws: self.workspace,
            sid: Uuid::now_v7(),
            iat: now,
            exp: now + 300,
            nbf: None,
            jti: None,
        };
        edit(&mut claims);
        self.signer.sign(&claims).unwrap()
    }

    /// A client that sends a valid token.
    pub async fn client(&self) -> Client {
        self.client_with_token(Some(self.token())).await
    }

    pub async fn client_with_token(&self, token: Option<String>) -> Client {
        let channel = unix_channel(&self.socket).await;
        with_token(channel, token)
    }
}

pub fn with_token(channel: Channel, token: Option<String>) -> Client {
    let header = token.map(|t| format!("Bearer {t}").parse().unwrap());
    WorkspaceClient::with_interceptor(channel, BearerToken(header))
}

pub async fn unix_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::try_from("http://k8shelld.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

/// An Exec stream seen from the client.
pub struct Exec {
    pub input: mpsc::Sender<ExecInput>,
    pub output: Streaming<ExecOutput>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pid: u32,
    /// Set when the terminal is kept for `Attach`.
    pub attach_id: String,
}

/// How an exec ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(String),
}

pub fn start(command: &str) -> ExecStart {
    ExecStart {
        command: command.to_owned(),
        ..Default::default()
    }
}

pub fn with_pty(mut start: ExecStart, cols: u32, rows: u32) -> ExecStart {
    start.pty = Some(Pty {
        term: "xterm".to_owned(),
        size: Some(WindowSize {
            cols,
            rows,
            ..Default::default()
        }),
        modes: Vec::new(),
    });
    start
}

pub fn input(input: exec_input::Input) -> ExecInput {
    ExecInput { input: Some(input) }
}

impl Exec {
    pub async fn open(client: &mut Client, start: ExecStart) -> Result<Self, tonic::Status> {
        Self::call(client, exec_input::Input::Start(start)).await
    }

    /// Takes over the kept terminal `attach_id` at a new size.
    pub async fn attach(
        client: &mut Client,
        attach_id: &str,
        cols: u32,
        rows: u32,
    ) -> Result<Self, tonic::Status> {
        let attach = exec_input::Input::Attach(k8shell_proto::k8shelld::v1::AttachTo {
            attach_id: attach_id.to_owned(),
            size: Some(WindowSize {
                cols,
                rows,
                ..Default::default()
            }),
        });
        Self::call(client, attach).await
    }

    async fn call(client: &mut Client, first: exec_input::Input) -> Result<Self, tonic::Status> {
        let attach = matches!(first, exec_input::Input::Attach(_));
        let (tx, rx) = mpsc::channel(4);
        tx.send(input(first)).await.unwrap();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut output = if attach {
            client.attach(stream).await?.into_inner()
        } else {
            client.exec(stream).await?.into_inner()
        };
        let first = output.message().await?.expect("a first message");
        let Some(exec_output::Output::Started(started)) = first.output else {
            panic!("first output must be `started`, got {first:?}");
        };
        Ok(Self {
            input: tx,
            output,
            stdout: Vec::new(),
            stderr: Vec::new(),
            pid: started.pid,
            attach_id: started.attach_id,
        })
    }

    /// Sends an input; after the process has exited the server stops reading, which is fine.
    pub async fn send(&self, message: exec_input::Input) {
        let _ended = self.input.send(input(message)).await;
    }

    pub async fn type_text(&self, text: &str) {
        self.send(exec_input::Input::Stdin(text.as_bytes().to_vec()))
            .await;
    }

    /// Reads output until stdout contains `needle` (after what was consumed before).
    pub async fn read_until(&mut self, needle: &str) -> String {
        loop {
            if let Some(at) = find(&self.stdout, needle.as_bytes()) {
                let upto = at + needle.len();
                let seen = String::from_utf8_lossy(&self.stdout[..upto]).into_owned();
                self.stdout.drain(..upto);
                return seen;
            }
            match self.next().await {
                Some(None) => {}
                Some(Some(ended)) => panic!(
                    "process ended ({ended:?}) before printing {needle:?}; stdout so far: {:?}",
                    String::from_utf8_lossy(&self.stdout)
                ),
                None => panic!("stream ended before {needle:?}"),
            }
        }
    }

    /// Reads until the exit status.
    pub async fn wait(&mut self) -> Ended {
        loop {
            match self.next().await {
                Some(None) => {}
                Some(Some(ended)) => {
                    assert!(
                        self.output.message().await.unwrap().is_none(),
                        "exit is the last message"
                    );
                    return ended;
                }
                None => panic!("stream ended without an exit status"),
            }
        }
    }

    /// One message: `Some(None)` for output, `Some(Some(exit))` for the status.
    async fn next(&mut self) -> Option<Option<Ended>> {
        let message = self.output.message().await.unwrap()?;
        Some(match message.output {
            Some(exec_output::Output::Stdout(bytes)) => {
                self.stdout.extend_from_slice(&bytes);
                None
            }
            Some(exec_output::Output::Stderr(bytes)) => {
                self.stderr.extend_from_slice(&bytes);
                None
            }
            Some(exec_output::Output::Exit(status)) => Some(match status.status {
                Some(exit_status::Status::Code(code)) => Ended::Code(code),
                Some(exit_status::Status::Signal(signal)) => Ended::Signal(signal.name),
                None => panic!("empty exit status"),
            }),
            other => panic!("unexpected output {other:?}"),
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Runs `command` without a PTY and returns stdout, stderr and how it ended.
pub async fn run(client: &mut Client, command: &str) -> (String, String, Ended) {
    let mut exec = Exec::open(client, start(command)).await.unwrap();
    exec.send(exec_input::Input::StdinEof(Default::default()))
        .await;
    let ended = exec.wait().await;
    (
        String::from_utf8_lossy(&exec.stdout).into_owned(),
        String::from_utf8_lossy(&exec.stderr).into_owned(),
        ended,
    )
}
