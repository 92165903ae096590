//! Starts the session service in-process on a real PostgreSQL and nats-server, with certificates
//! from a local CA, and can restart it on the same port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use k8shell_common::db::DatabaseConfig;
use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, install_crypto_provider};
use k8shell_proto::session::v1 as pb;
use k8shell_proto::session::v1::sessions_client::SessionsClient;
use k8shell_session::{
    Client, ClientConfig, Config, DirStore, GrpcConfig, NewSession, RecordingStore,
    RecordingsConfig, RetentionConfig, StoreFuture,
};
use k8shell_testkit::{Nats, Postgres};
use tonic::transport::Channel;
use uuid::Uuid;

/// The directory store, counting reads (to show what a seek touches).
#[derive(Debug)]
pub struct CountingStore {
    pub inner: DirStore,
    pub gets: AtomicUsize,
}

impl RecordingStore for CountingStore {
    fn put<'a>(&'a self, key: &'a str, data: Bytes) -> StoreFuture<'a, ()> {
        self.inner.put(key, data)
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Bytes> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ()> {
        self.inner.delete_prefix(prefix)
    }
}

pub struct Harness {
    pub pg: Postgres,
    pub nats: Nats,
    pub dir: tempfile::TempDir,
    pub ca: LocalCa,
    pub addr: SocketAddr,
    pub config: Config,
    pub store: Arc<CountingStore>,
    running: Option<(Shutdown, tokio::task::JoinHandle<()>)>,
}

pub fn uri(addr: SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// The service with `tune` applied to its configuration.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        install_crypto_provider();
        let _already = k8shell_common::telemetry::init("session-test", &Default::default());
        let pg = Postgres::start().unwrap();
        let url = pg.create_database("k8shell").unwrap();
        let nats = Nats::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::generate("test CA").unwrap();
        let tls = ca
            .issue_files(&dir.path().join("session-tls"), "session", &["localhost"])
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut recordings = RecordingsConfig::new(dir.path().join("recordings"));
        recordings.flush_after = Duration::from_millis(100);
        let mut config = Config {
            database: DatabaseConfig::new(url),
            grpc: GrpcConfig { listen: addr, tls },
            nats: NatsConfig {
                url: nats.url(),
                token_file: None,
            },
            outbox: OutboxConfig::new(dir.path().join("outbox")),
            recordings,
            retention: RetentionConfig::default(),
            lost_after: Duration::from_secs(120),
            telemetry: Default::default(),
        };
        tune(&mut config);
        let store = Arc::new(CountingStore {
            inner: DirStore::open(&config.recordings.dir).unwrap(),
            gets: AtomicUsize::new(0),
        });
        let mut harness = Self {
            pg,
            nats,
            dir,
            ca,
            addr,
            config,
            store,
            running: None,
        };
        harness.start_service().await;
        harness
    }

    /// (Re)starts the service on its port and waits until it answers.
    pub async fn start_service(&mut self) {
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let config = self.config.clone();
        let store: Arc<dyn RecordingStore> = self.store.clone();
        let addr = self.addr;
        let task = tokio::spawn(async move {
            // The previous run's socket may linger a moment.
            let listener = k8shell_testkit::poll_until("the session port to be free", || async {
                tokio::net::TcpListener::bind(addr).await.ok()
            })
            .await;
            k8shell_session::serve(config, listener, store, stop)
                .await
                .unwrap();
        });
        self.running = Some((shutdown, task));
        let grpc = self.grpc_as("api");
        k8shell_testkit::poll_until("the session service to answer", || {
            let mut grpc = grpc.clone();
            async move { grpc.list(pb::ListRequest::default()).await.ok() }
        })
        .await;
    }

    /// Stops the service (as a restart would) and waits until it is gone.
    pub async fn stop_service(&mut self) {
        if let Some((shutdown, task)) = self.running.take() {
            shutdown.trigger();
            task.await.unwrap();
        }
    }

    pub fn tls_as(&self, service: &str) -> Arc<ReloadingTls> {
        let files = self
            .ca
            .issue_files(
                &self.dir.path().join(format!("client-{service}")),
                service,
                &[],
            )
            .unwrap();
        ReloadingTls::load(files).unwrap()
    }

    pub fn channel_as(&self, service: &str) -> Channel {
        k8shell_common::grpc::mtls_channel(&uri(self.addr), &self.tls_as(service)).unwrap()
    }

    /// The generated client with the certificate of `service`.
    pub fn grpc_as(&self, service: &str) -> SessionsClient<Channel> {
        SessionsClient::new(self.channel_as(service))
    }

    pub async fn nats_client(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url()).await.unwrap()
    }

    /// ssh-proxy's client library with its spool in `spool`.
    pub async fn proxy_client(&self, spool: &Path) -> Client {
        let mut config = ClientConfig::new(spool);
        config.max_backoff = Duration::from_millis(200);
        Client::new(
            self.channel_as("ssh-proxy"),
            Some(self.nats_client().await),
            config,
        )
        .unwrap()
    }

    pub fn spool(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn get(&self, id: Uuid) -> pb::GetResponse {
        self.grpc_as("api")
            .get(pb::GetRequest {
                id: Some(id.into()),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((shutdown, _)) = &self.running {
            shutdown.trigger();
        }
    }
}

/// A session of `user` on workspace `ws` from 192.0.2.10.
pub fn new_session(user: &str, ws: &str) -> NewSession {
    NewSession {
        user_id: Uuid::now_v7(),
        username: user.to_owned(),
        workspace_id: Uuid::now_v7(),
        workspace_owner: user.to_owned(),
        workspace_name: ws.to_owned(),
        kind: pb::SessionKind::Ssh,
        client_addr: "[::ffff:192.0.2.10]:50022".parse().unwrap(),
        client_version: "SSH-2.0-OpenSSH_9.2p1".to_owned(),
        admin_access: false,
    }
}

/// The whole recording as the `.cast` export streams it.
pub async fn export(client: &Client, recording: Uuid) -> Vec<u8> {
    let mut out = Vec::new();
    client.export_cast(recording, &mut out).await.unwrap();
    out
}
