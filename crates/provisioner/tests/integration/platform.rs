//! The provisioner and everything it talks to, for the service tests and the lifecycle
//! benchmark: real PostgreSQL, NATS, authz (the shipped policies), registry, buildah, runc and
//! k8shelld. Needs root (runc).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8shell_common::db::DatabaseConfig;
use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, TlsFiles, install_crypto_provider};
use k8shell_proto::provisioner::v1 as pb;
use k8shell_proto::provisioner::v1::provisioner_client::ProvisionerClient;
use k8shell_proto::types::v1::Id;
use k8shell_provisioner::clock::ManualClock;
use k8shell_provisioner::{
    Config, Endpoint, GrpcConfig, ImagesConfig, LocalRuntimeConfig, ReconcileConfig, RuntimeConfig,
};
use k8shell_testkit::{Nats, Postgres};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::support::Base;

/// Everything the provisioner talks to, and the provisioner itself (in-process or as a child).
/// A provisioner client.
pub type Client = ProvisionerClient<Channel>;

pub struct Platform {
    pub base: Base,
    _pg: Postgres,
    pub nats: Nats,
    ca: LocalCa,
    pub config: Config,
    pub clock: Arc<ManualClock>,
    _authz: Shutdown,
    running: Option<(Shutdown, tokio::task::JoinHandle<()>)>,
}

/// Containers a failed test left running go with it (a running workspace outlives its
/// provisioner by design).
impl Drop for Platform {
    fn drop(&mut self) {
        let runc = |args: &[&str]| {
            std::process::Command::new("runc")
                .arg("--root")
                .arg(self.state_dir().join("runc"))
                .args(args)
                .output()
                .ok()
        };
        let Some(listed) = runc(&["list", "-q"]) else {
            return;
        };
        for container in String::from_utf8_lossy(&listed.stdout).lines() {
            runc(&["delete", "-f", container]);
        }
    }
}

pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl Platform {
    pub async fn start() -> Self {
        install_crypto_provider();
        let _already = k8shell_common::telemetry::init("provisioner-test", &Default::default());
        let base = Base::start();
        let pg = Postgres::start().unwrap();
        let url = pg.create_database("k8shell").unwrap();
        let nats = Nats::start().unwrap();
        let ca = LocalCa::generate("test CA").unwrap();
        let dir = base.dir.path();

        let authz_addr = free_addr();
        let authz_tls = ca
            .issue_files(&dir.join("authz-tls"), "authz", &["localhost"])
            .unwrap();
        let authz = Shutdown::new();
        let authz_config = k8shell_authz::Config {
            database: DatabaseConfig::new(url.clone()),
            grpc: GrpcConfig {
                listen: authz_addr,
                tls: authz_tls,
            },
            bundle_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../authz/policies"),
            reload_every: Duration::from_secs(60),
            nats: None,
            outbox: None,
            metrics_listen: None,
            telemetry: Default::default(),
        };
        let stop = authz.clone();
        tokio::spawn(async move {
            k8shell_authz::run(authz_config, stop).await.unwrap();
        });

        let config = Config {
            database: DatabaseConfig::new(url),
            grpc: GrpcConfig {
                listen: free_addr(),
                tls: ca
                    .issue_files(&dir.join("provisioner-tls"), "provisioner", &["localhost"])
                    .unwrap(),
            },
            authz_uri: format!("https://localhost:{}", authz_addr.port()),
            nats: NatsConfig {
                url: nats.url(),
                token_file: None,
            },
            outbox: OutboxConfig::new(dir.join("outbox")),
            images: ImagesConfig {
                repository: format!("{}/workspaces", base.registry.host()),
                tls_verify: false,
                auth_file: None,
                build_dir: dir.join("buildah"),
            },
            runtime: RuntimeConfig::Local(LocalRuntimeConfig {
                state_dir: dir.join("state"),
                k8shelld: k8shell_testkit::static_k8shelld(None).unwrap(),
                jwks_file: base.jwks.clone(),
                stop_grace: Duration::from_secs(5),
                network: None,
            }),
            reconcile: ReconcileConfig {
                every: Duration::from_millis(200),
                ..ReconcileConfig::default()
            },
            telemetry: Default::default(),
        };
        Self {
            base,
            _pg: pg,
            nats,
            ca,
            config,
            clock: Arc::new(ManualClock::new()),
            _authz: authz,
            running: None,
        }
    }

    /// Starts the provisioner in this process, on the paused clock.
    pub async fn start_provisioner(&mut self) {
        let shutdown = Shutdown::new();
        let (config, stop, clock) = (self.config.clone(), shutdown.clone(), self.clock.clone());
        let task = tokio::spawn(async move {
            let listener = tokio::net::TcpListener::bind(config.grpc.listen)
                .await
                .unwrap();
            let runtime = k8shell_provisioner::runtime_from(&config).await.unwrap();
            k8shell_provisioner::serve(config, listener, runtime, clock, stop)
                .await
                .unwrap();
        });
        self.running = Some((shutdown, task));
        self.wait_answering().await;
    }

    pub async fn stop_provisioner(&mut self) {
        if let Some((shutdown, task)) = self.running.take() {
            shutdown.trigger();
            task.await.unwrap();
        }
    }

    pub async fn wait_answering(&self) {
        let client = self.client();
        k8shell_testkit::poll_until("the provisioner to answer", || {
            let mut client = client.clone();
            async move { client.list(pb::ListRequest::default()).await.ok() }
        })
        .await;
    }

    /// A client with the certificate of `api`.
    pub fn client(&self) -> Client {
        let files = self
            .ca
            .issue_files(&self.base.dir.path().join("api-tls"), "api", &["localhost"])
            .unwrap();
        let tls = ReloadingTls::load(files).unwrap();
        let uri = format!("https://localhost:{}", self.config.grpc.listen.port());
        ProvisionerClient::new(k8shell_common::grpc::mtls_channel(&uri, &tls).unwrap())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.base.dir.path().join("state")
    }

    /// The host PID of a workspace's init (k8shelld), from runc.
    pub fn init_pid(&self, workspace: Uuid) -> u64 {
        let output = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.state_dir().join("runc"))
            .args(["state", &format!("k8shell-{}", workspace.simple())])
            .output()
            .unwrap();
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(state["status"], "running", "{state}");
        state["pid"].as_u64().unwrap()
    }

    /// Containers runc knows in the runtime's state.
    pub fn containers(&self) -> Vec<String> {
        let output = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.state_dir().join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

pub fn alice() -> Option<pb::Requester> {
    Some(pb::Requester {
        username: "alice".to_owned(),
        groups: vec!["k8shell-users".to_owned()],
    })
}

pub fn by_id(id: &str) -> Option<pb::Selector> {
    Some(pb::Selector {
        by: Some(pb::selector::By::Id(Id {
            value: id.to_owned(),
        })),
    })
}

pub fn id_of(workspace: &pb::Workspace) -> String {
    workspace
        .r#ref
        .as_ref()
        .and_then(|r| r.id.as_ref())
        .map(|id| id.value.clone())
        .unwrap()
}

pub fn create(name: &str, blueprint: String, stopped: bool) -> pb::CreateRequest {
    pb::CreateRequest {
        requester: alice(),
        name: name.to_owned(),
        blueprint_source: blueprint,
        blueprint_file: format!("{name}.ncl"),
        stopped,
    }
}

/// Reads the watch until workspace `id` is in `state`; returns it.
pub async fn wait_state(
    watch: &mut tonic::Streaming<pb::WorkspaceEvent>,
    id: &str,
    state: pb::State,
) -> pb::Workspace {
    loop {
        let event = watch.message().await.unwrap().expect("the watch ended");
        let workspace = event.workspace.unwrap();
        if id_of(&workspace) == id && workspace.state() == state {
            return workspace;
        }
        assert_ne!(
            (id_of(&workspace) == id, workspace.state()),
            (true, pb::State::Failed),
            "workspace failed: {}",
            workspace.reason
        );
    }
}

pub async fn get(client: &mut Client, id: &str) -> pb::Workspace {
    client
        .get(pb::WorkspaceRequest {
            workspace: by_id(id),
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn ensure_running(client: &mut Client, id: &str) -> pb::EnsureRunningResponse {
    ensure_running_as(client, id, alice()).await
}

pub async fn ensure_running_as(
    client: &mut Client,
    id: &str,
    requester: Option<pb::Requester>,
) -> pb::EnsureRunningResponse {
    client
        .ensure_running(pb::EnsureRunningRequest {
            workspace: by_id(id),
            requester,
            deadline: None,
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn endpoint(response: &pb::EnsureRunningResponse) -> (Endpoint, Uuid) {
    let path = response.endpoint.strip_prefix("unix:").unwrap();
    let id = Uuid::parse_str(&id_of(response.workspace.as_ref().unwrap())).unwrap();
    (Endpoint::Unix(path.into()), id)
}

/// The provisioner as a process, configured by a file, killed with SIGKILL.
pub struct Process(std::process::Child);

impl Process {
    pub fn start(config_file: &Path) -> Self {
        Self(
            std::process::Command::new(env!("CARGO_BIN_EXE_k8shell-provisioner"))
                .arg("--config")
                .arg(config_file)
                .spawn()
                .unwrap(),
        )
    }

    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn toml_tls(files: &TlsFiles) -> String {
    format!(
        "cert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n",
        files.cert_file, files.key_file, files.ca_file
    )
}

pub fn config_file(platform: &Platform) -> PathBuf {
    let config = &platform.config;
    let RuntimeConfig::Local(local) = &config.runtime else {
        unreachable!()
    };
    let text = format!(
        r#"authz_uri = "{authz}"

[database]
url = "{db}"

[grpc]
listen = "{listen}"

[grpc.tls]
{tls}
[nats]
url = "{nats}"

[outbox]
dir = {outbox:?}

[images]
repository = "{repository}"
tls_verify = false
build_dir = {build:?}

[runtime]
kind = "local"
state_dir = {state:?}
k8shelld = {k8shelld:?}
jwks_file = {jwks:?}
stop_grace = "5s"

[reconcile]
every = "200ms"
"#,
        authz = config.authz_uri,
        db = config.database.url,
        listen = config.grpc.listen,
        tls = toml_tls(&config.grpc.tls),
        nats = config.nats.url,
        outbox = config.outbox.dir,
        repository = config.images.repository,
        build = config.images.build_dir,
        state = local.state_dir,
        k8shelld = local.k8shelld,
        jwks = local.jwks_file,
    );
    let path = platform.base.dir.path().join("provisioner.toml");
    std::fs::write(&path, text).unwrap();
    path
}
