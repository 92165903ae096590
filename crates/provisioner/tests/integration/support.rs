//! What the runtime and service tests share: a registry with the busybox base, blueprints on it,
//! session tokens k8shelld accepts, and exec through k8shelld.

use std::path::{Path, PathBuf};

use k8shell_common::jwt::{Jwks, JwtSigner, SessionClaims};
use k8shell_proto::k8shelld::v1::workspace_client::WorkspaceClient;
use k8shell_proto::k8shelld::v1::{
    Eof, ExecInput, ExecStart, exec_input, exec_output, exit_status,
};
use k8shell_provisioner::Endpoint;
use tonic::transport::Channel;
use uuid::Uuid;

/// The local runtime runs containers with runc, which needs root.
pub fn require_root() {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    assert!(
        root,
        "the local runtime runs containers with runc: run this test as root (CI does)"
    );
}

/// A registry holding the busybox base image, and a directory for the test's files.
pub struct Base {
    pub registry: k8shell_testkit::Registry,
    /// `registry/k8shell/busybox:latest`.
    pub image: String,
    pub dir: tempfile::TempDir,
    pub signer: JwtSigner,
    /// The JWKS file of `signer`, as k8shelld reads it.
    pub jwks: PathBuf,
}

impl Base {
    pub fn start() -> Self {
        require_root();
        let registry = k8shell_testkit::Registry::start().unwrap();
        let image = registry.push_busybox("k8shell/busybox").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = JwtSigner::generate("provisioner-test").unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_vec(&Jwks {
                keys: vec![signer.jwk()],
            })
            .unwrap(),
        )
        .unwrap();
        Self {
            registry,
            image,
            dir,
            signer,
            jwks,
        }
    }

    /// The busybox example blueprint on this registry's base, with `overrides` (Nickel record
    /// fields, e.g. `idle_timeout | force = "5m"`).
    pub fn blueprint(&self, overrides: &str) -> String {
        self.blueprint_on(&self.image, overrides)
    }

    /// The same on another base image. The example is inlined: a blueprint sent to the
    /// provisioner may not import files.
    pub fn blueprint_on(&self, base: &str, overrides: &str) -> String {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints/busybox.ncl");
        let example = std::fs::read_to_string(example).unwrap();
        format!(
            "({example}) & {{ base | force = \"{base}\", user.uid | force = 1000, {overrides} }}"
        )
    }

    /// A session token for `workspace`.
    pub fn token(&self, workspace: Uuid) -> String {
        let now = k8shell_common::clock::now().unix_timestamp();
        self.signer
            .sign(&SessionClaims {
                iss: "k8shell-identity".into(),
                sub: "alice".into(),
                aud: "k8shelld".into(),
                ws: workspace,
                sid: Uuid::now_v7(),
                iat: now,
                exp: now + 300,
                nbf: None,
                jti: None,
            })
            .unwrap()
    }

    /// Waits until k8shelld answers at `endpoint` and runs a command there.
    pub async fn ready(&self, endpoint: &Endpoint, workspace: Uuid) -> Channel {
        let Endpoint::Unix(socket) = endpoint else {
            panic!("the local runtime serves on Unix sockets")
        };
        let channel = k8shell_common::grpc::unix_channel(socket);
        let health = k8shell_proto::health::pb::health_client::HealthClient::new(channel.clone());
        k8shell_testkit::poll_until("k8shelld to answer its health check", || {
            let mut health = health.clone();
            async move {
                health
                    .check(k8shell_proto::health::pb::HealthCheckRequest::default())
                    .await
                    .ok()
            }
        })
        .await;
        let (out, code) = exec(&channel, &self.token(workspace), "true").await;
        assert_eq!((out.as_str(), code), ("", 0));
        channel
    }
}

/// Runs `command` in the workspace through k8shelld; returns stdout and the exit code.
pub async fn exec(channel: &Channel, token: &str, command: &str) -> (String, i32) {
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut client = WorkspaceClient::with_interceptor(
        channel.clone(),
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
            Ok(request)
        },
    );
    let input = [
        ExecInput {
            input: Some(exec_input::Input::Start(ExecStart {
                command: command.to_owned(),
                ..Default::default()
            })),
        },
        ExecInput {
            input: Some(exec_input::Input::StdinEof(Eof {})),
        },
    ];
    let mut output = client
        .exec(tokio_stream::iter(input))
        .await
        .unwrap()
        .into_inner();
    let mut stdout = Vec::new();
    while let Some(message) = output.message().await.unwrap() {
        match message.output {
            Some(exec_output::Output::Stdout(data)) => stdout.extend(data),
            Some(exec_output::Output::Exit(status)) => {
                let code = match status.status {
                    Some(exit_status::Status::Code(code)) => code,
                    other => panic!("{command}: {other:?}"),
                };
                return (String::from_utf8(stdout).unwrap(), code);
            }
            _ => {}
        }
    }
    panic!("{command}: the stream ended without an exit status");
}
