//! authz over gRPC with mTLS, a real PostgreSQL decision log and NATS events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8shell_authz::{Config, GrpcConfig, PolicySource};
use k8shell_common::db::DatabaseConfig;
use k8shell_common::events::types::PolicyDecision;
use k8shell_common::events::{AUDIT, DurableConsumer, NatsConfig, OutboxConfig};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, install_crypto_provider};
use k8shell_proto::authz::v1::CheckRequest;
use k8shell_proto::authz::v1::authz_client::AuthzClient;
use k8shell_testkit::{Nats, Postgres};
use serde_json::json;
use tonic::transport::Channel;

fn default_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn copy_bundle(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(default_bundle()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

struct Authz {
    pg: Postgres,
    nats: Nats,
    ca: LocalCa,
    port: u16,
    metrics_port: u16,
    dir: tempfile::TempDir,
    client: AuthzClient<Channel>,
    shutdown: Shutdown,
}

impl Drop for Authz {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start() -> Authz {
    install_crypto_provider();
    let pg = Postgres::start().unwrap();
    let nats = Nats::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_bundle(&dir.path().join("bundle"));
    let ca = LocalCa::generate("test CA").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut outbox = OutboxConfig::new(dir.path().join("outbox"));
    outbox.fsync = false;
    let config = Config {
        database: DatabaseConfig::new(pg.create_database("k8shell").unwrap()),
        grpc: GrpcConfig {
            listen: listener.local_addr().unwrap(),
            tls: ca
                .issue_files(&dir.path().join("tls"), "authz", &["localhost"])
                .unwrap(),
        },
        bundle_dir: dir.path().join("bundle"),
        reload_every: Duration::from_millis(50),
        nats: Some(NatsConfig {
            url: nats.url(),
            token_file: None,
        }),
        outbox: Some(outbox),
        metrics_listen: None,
        telemetry: Default::default(),
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_port = metrics.local_addr().unwrap().port();
    let listeners = k8shell_authz::Listeners {
        grpc: listener,
        metrics: Some(metrics),
    };
    tokio::spawn(async move { k8shell_authz::serve(config, listeners, stop).await.unwrap() });
    let tls = ReloadingTls::load(
        ca.issue_files(&dir.path().join("proxy"), "ssh-proxy", &[])
            .unwrap(),
    )
    .unwrap();
    let channel =
        k8shell_common::grpc::mtls_channel(&format!("https://localhost:{port}"), &tls).unwrap();
    let client = AuthzClient::new(channel);
    // Ready when it answers (migrations ran, listener up).
    k8shell_testkit::poll_until("authz to answer", || {
        let mut client = client.clone();
        async move {
            client
                .check(check(
                    "api",
                    json!({"v": 1, "user": {"username": "x", "groups": []}, "endpoint": "users.list"}),
                ))
                .await
                .ok()
        }
    })
    .await;
    Authz {
        pg,
        nats,
        ca,
        port,
        metrics_port,
        dir,
        client,
        shutdown,
    }
}

fn check(domain: &str, input: serde_json::Value) -> CheckRequest {
    CheckRequest {
        domain: domain.into(),
        input_json: input.to_string(),
    }
}

#[tokio::test]
async fn every_domain_allows_and_denies_through_grpc() {
    let mut authz = start().await;
    let user = |groups: &[&str]| json!({"username": "alice", "groups": groups, "state": "active"});
    let ws = json!({"id": "w1", "owner": "alice"});
    let small = json!({"cpu_millis": 1000, "memory_bytes": 1, "disk_bytes": 1});
    let cases = [
        (
            "onboarding",
            json!({"v": 1, "email": "a@example.com", "email_verified": true, "groups": []}),
            json!({"v": 1, "email": "a@evil.org", "groups": []}),
        ),
        (
            "authentication",
            json!({"v": 1, "user": user(&[]), "method": "publickey", "source_ip": "192.0.2.1"}),
            json!({"v": 1, "user": {"username": "alice", "groups": [], "state": "suspended"}, "method": "publickey", "source_ip": "192.0.2.1"}),
        ),
        (
            "ssh",
            json!({"v": 1, "user": user(&[]), "workspace": ws, "request": "shell"}),
            json!({"v": 1, "user": {"username": "bob", "groups": []}, "workspace": ws, "request": "shell"}),
        ),
        (
            "provision",
            json!({"v": 1, "user": user(&[]), "current_workspaces": 0, "blueprint": "rust", "resources": small}),
            json!({"v": 1, "user": user(&[]), "current_workspaces": 9, "blueprint": "rust", "resources": small}),
        ),
        (
            "api",
            json!({"v": 1, "user": user(&["admins"]), "endpoint": "users.suspend"}),
            json!({"v": 1, "user": user(&["dev"]), "endpoint": "users.suspend"}),
        ),
    ];
    for (domain, allowed, denied) in cases {
        let yes = authz
            .client
            .check(check(domain, allowed))
            .await
            .unwrap()
            .into_inner();
        assert!(yes.allow, "{domain}: {:?}", yes.reasons);
        let no = authz
            .client
            .check(check(domain, denied))
            .await
            .unwrap()
            .into_inner();
        assert!(!no.allow, "{domain}");
        assert!(!no.reasons.is_empty(), "{domain}: a denial says why");
        assert_eq!(yes.revision.len(), 24);
    }
    // Domain-specific fields come through.
    let admin = authz
        .client
        .check(check("ssh", json!({"v": 1, "user": {"username": "root", "groups": ["admins"]}, "workspace": ws, "request": "shell"})))
        .await
        .unwrap()
        .into_inner();
    let document: serde_json::Value = serde_json::from_str(&admin.decision_json).unwrap();
    assert_eq!(document["admin_access"], true);
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments_that_say_why() {
    let mut authz = start().await;
    let status = authz
        .client
        .check(check("deploy", json!({"v": 1})))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("unknown domain \"deploy\""),
        "{status:?}"
    );
    let status = authz
        .client
        .check(CheckRequest {
            domain: "ssh".into(),
            input_json: "{not json".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("not a JSON object"), "{status:?}");
}

#[tokio::test]
async fn every_decision_is_logged_without_secrets_in_postgres_and_on_nats() {
    let mut authz = start().await;
    let input = json!({"v": 1, "email": "a@example.com", "email_verified": true, "groups": [], "id_token": "eyJ-secret"});
    let decision = authz
        .client
        .check(check("onboarding", input))
        .await
        .unwrap()
        .into_inner();
    let row = authz
        .pg
        .psql(
            "k8shell",
            &format!("SELECT domain || '|' || allow || '|' || revision || '|' || input::text FROM authz.decisions WHERE id = '{}'", decision.decision_id),
        )
        .unwrap();
    assert!(
        row.starts_with(&format!("onboarding|true|{}|", decision.revision)),
        "{row}"
    );
    assert!(
        !row.contains("eyJ-secret"),
        "secrets never reach the log: {row}"
    );
    assert!(row.contains("[redacted]"), "{row}");

    let client = k8shell_common::events::connect(
        &NatsConfig {
            url: authz.nats.url(),
            token_file: None,
        },
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut consumer = DurableConsumer::<PolicyDecision>::open(
        &js,
        &AUDIT,
        "audit-test",
        "k8shell.audit.decision",
    )
    .await
    .unwrap();
    loop {
        let delivery = consumer.next().await.unwrap();
        let event = delivery.event.body.clone();
        delivery.ack().await.unwrap();
        if event.decision_id.to_string() == decision.decision_id {
            assert!(event.allow);
            assert!(!event.input.to_string().contains("eyJ-secret"));
            break;
        }
    }
}

#[tokio::test]
async fn a_changed_bundle_is_picked_up_without_restart() {
    let mut authz = start().await;
    let input = json!({"v": 1, "email": "a@newco.io", "email_verified": true, "groups": []});
    let before = authz
        .client
        .check(check("onboarding", input.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!before.allow);
    let data = authz.dir.path().join("bundle/data.json");
    let text = std::fs::read_to_string(&data)
        .unwrap()
        .replace("\"example.com\"", "\"example.com\", \"newco.io\"");
    std::fs::write(&data, text).unwrap();
    let client = authz.client.clone();
    let now = k8shell_testkit::poll_until("the new bundle to decide", || {
        let (mut client, input, before) = (client.clone(), input.clone(), before.revision.clone());
        async move {
            let now = client
                .check(check("onboarding", input))
                .await
                .unwrap()
                .into_inner();
            (now.revision != before).then_some(now)
        }
    })
    .await;
    assert!(now.allow, "the new data decides");
}

#[test]
fn broken_and_failing_bundles_are_refused_and_the_old_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    copy_bundle(dir.path());
    let source = PolicySource::load(dir.path().to_owned()).unwrap();
    let good = source.current.load().revision().to_owned();

    // A syntax error: refused with file and line, the previous bundle stays.
    std::fs::write(
        dir.path().join("extra.rego"),
        "package k8shell.extra\n\nallow if {\n",
    )
    .unwrap();
    let err = source.reload().unwrap_err().to_string();
    assert!(err.contains("extra.rego:"), "{err}");
    assert_eq!(source.current.load().revision(), good);
    assert_eq!(source.refused.get(), 1);

    // Parses, but its own tests fail: refused too.
    std::fs::write(
        dir.path().join("extra.rego"),
        "package k8shell.extra\nimport rego.v1\nallow := false\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("extra_test.rego"),
        "package k8shell.extra_test\nimport rego.v1\ntest_allows if data.k8shell.extra.allow\n",
    )
    .unwrap();
    let err = source.reload().unwrap_err().to_string();
    assert!(err.contains("k8shell.extra_test.test_allows"), "{err}");
    assert_eq!(source.current.load().revision(), good);
    assert_eq!(source.refused.get(), 2);

    // Fixed: accepted.
    std::fs::write(
        dir.path().join("extra.rego"),
        "package k8shell.extra\nimport rego.v1\nallow := true\n",
    )
    .unwrap();
    assert!(source.reload().unwrap().is_some());
    assert_ne!(source.current.load().revision(), good);
}

#[test]
fn the_test_command_reports_failing_rules_and_exits_1() {
    let binary = env!("CARGO_BIN_EXE_k8shell-authz");
    let ok = std::process::Command::new(binary)
        .arg("test")
        .arg(default_bundle())
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("passed, 0 failed"));

    let dir = tempfile::tempdir().unwrap();
    copy_bundle(dir.path());
    std::fs::write(
        dir.path().join("mine_test.rego"),
        "package k8shell.mine_test\nimport rego.v1\ntest_nobody_is_admin if data.k8shell.api.decision.allow with input as {\"v\": 1, \"user\": {\"username\": \"x\", \"groups\": []}, \"endpoint\": \"users.list\"}\n",
    )
    .unwrap();
    let failed = std::process::Command::new(binary)
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("k8shell.mine_test.test_nobody_is_admin"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

#[tokio::test]
async fn the_client_caches_only_what_the_policy_marks_cacheable_and_denies_when_unreachable() {
    let authz = start().await;
    let port = authz.port;
    let tls = ReloadingTls::load(
        authz
            .ca
            .issue_files(&authz.dir.path().join("api"), "api", &[])
            .unwrap(),
    )
    .unwrap();
    let channel =
        k8shell_common::grpc::mtls_channel(&format!("https://localhost:{port}"), &tls).unwrap();
    let client = k8shell_authz::client::AuthzClient::new(channel, Duration::from_secs(60));
    let input = json!({"v": 1, "user": {"username": "root", "groups": ["admins"]}, "endpoint": "users.list"});
    let count = |pg: &Postgres| {
        pg.psql(
            "k8shell",
            "SELECT count(*) FROM authz.decisions WHERE domain = 'api'",
        )
        .unwrap()
    };

    // Not cacheable (the default): every check is decided and logged.
    let before = count(&authz.pg);
    assert!(client.check("api", &input).await.allow);
    let second = client.check("api", &input).await;
    assert!(second.allow && !second.cached);
    assert_eq!(
        count(&authz.pg).parse::<i64>().unwrap(),
        before.parse::<i64>().unwrap() + 2
    );

    // A policy that marks api decisions cacheable: the second answer is local.
    let policy = authz.dir.path().join("bundle/api.rego");
    let text = std::fs::read_to_string(&policy)
        .unwrap()
        .replace("\"cacheable\": false", "\"cacheable\": true");
    std::fs::write(&policy, text).unwrap();
    let first = k8shell_testkit::poll_until("the cacheable bundle", || async {
        let verdict = client.check("api", &input).await;
        (verdict.document["cacheable"] == true).then_some(verdict)
    })
    .await;
    assert_eq!(
        first.document["cacheable"], true,
        "the new bundle was picked up"
    );
    let logged = count(&authz.pg);
    let again = client.check("api", &input).await;
    assert!(again.allow && again.cached);
    assert_eq!(
        count(&authz.pg),
        logged,
        "a cached answer is not decided again"
    );

    // Unknown domain: a deny carrying authz's reason.
    let bad = client.check("deploy", &input).await;
    assert!(!bad.allow && bad.reasons[0].contains("unknown domain"));

    // authz gone: deny, with a reason, not an error.
    authz.shutdown.trigger();
    let verdict = k8shell_testkit::poll_until("authz to be gone", || async {
        let verdict = client.check("ssh", &input).await;
        verdict.decision_id.is_empty().then_some(verdict)
    })
    .await;
    assert!(!verdict.allow);
    assert!(verdict.reasons[0].contains("unavailable"), "{verdict:?}");
}

#[tokio::test]
async fn a_refused_bundle_is_counted_on_the_metrics_endpoint() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authz = start().await;
    std::fs::write(
        authz.dir.path().join("bundle/broken.rego"),
        "package k8shell.broken\nallow if {\n",
    )
    .unwrap();
    let scrape = || async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", authz.metrics_port))
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    };
    k8shell_testkit::poll_until("the refused bundle to be counted", || async {
        scrape()
            .await
            .contains("k8shell_authz_policy_bundles_refused_total 1")
            .then_some(())
    })
    .await;
}
