//! `ssh` decisions per second and latency, in-process (the bundle alone) and over gRPC + mTLS
//! (with the decision log in PostgreSQL), in one run; the peer of the gRPC figure is the bare
//! in-process evaluation. Run: `cargo bench -p k8shell-authz --bench check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use k8shell_authz::{Bundle, Config, GrpcConfig};
use k8shell_common::db::DatabaseConfig;
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, install_crypto_provider};
use k8shell_proto::authz::v1::CheckRequest;
use k8shell_proto::authz::v1::authz_client::AuthzClient;

const IN_PROCESS: usize = 20_000;
const OVER_GRPC: usize = 4_000;
const CONCURRENCY: usize = 8;

fn summary(mut latencies: Vec<Duration>, elapsed: Duration) -> (f64, Duration, Duration) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99),
    )
}

fn input() -> String {
    serde_json::json!({"v": 1, "user": {"username": "root", "groups": ["admins"]},
        "workspace": {"id": "w1", "owner": "alice", "allow": {"sftp": true}}, "request": "sftp"})
    .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    install_crypto_provider();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let bundle = ArcSwap::from_pointee(Bundle::load(&policies).unwrap());
    let input = input();
    let mut latencies = Vec::with_capacity(IN_PROCESS);
    let start = Instant::now();
    for _ in 0..IN_PROCESS {
        let t = Instant::now();
        let decision = k8shell_authz::decide::decide(&bundle, "ssh", &input).unwrap();
        assert!(decision.allow);
        latencies.push(t.elapsed());
    }
    let local = summary(latencies, start.elapsed());

    let pg = k8shell_testkit::Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("bench CA").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Config {
        database: DatabaseConfig::new(pg.create_database("k8shell").unwrap()),
        grpc: GrpcConfig {
            listen: listener.local_addr().unwrap(),
            tls: ca
                .issue_files(&dir.path().join("tls"), "authz", &["localhost"])
                .unwrap(),
        },
        bundle_dir: policies,
        reload_every: Duration::from_secs(60),
        nats: None,
        outbox: None,
        metrics_listen: None,
        telemetry: Default::default(),
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let listeners = k8shell_authz::Listeners {
        grpc: listener,
        metrics: None,
    };
    tokio::spawn(async move { k8shell_authz::serve(config, listeners, stop).await.unwrap() });
    let tls = ReloadingTls::load(
        ca.issue_files(&dir.path().join("c"), "ssh-proxy", &[])
            .unwrap(),
    )
    .unwrap();
    let client = AuthzClient::new(
        k8shell_common::grpc::mtls_channel(&format!("https://localhost:{port}"), &tls).unwrap(),
    );
    let request = || CheckRequest {
        domain: "ssh".into(),
        input_json: input.clone(),
    };
    // Wait until ready, then warm up.
    loop {
        if client.clone().check(request()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..200 {
        client.clone().check(request()).await.unwrap();
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut client = client.clone();
        let request = request();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for _ in 0..OVER_GRPC / CONCURRENCY {
                let t = Instant::now();
                assert!(
                    client
                        .check(request.clone())
                        .await
                        .unwrap()
                        .into_inner()
                        .allow
                );
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let remote = summary(latencies, start.elapsed());
    shutdown.trigger();

    println!("| figure | checks/s | p50 | p99 | ratio |");
    println!("|---|---|---|---|---|");
    println!(
        "| `ssh` decision in-process (regorus, one core) | {:.0} | {:.0} µs | {:.0} µs | — |",
        local.0,
        local.1.as_secs_f64() * 1e6,
        local.2.as_secs_f64() * 1e6
    );
    println!(
        "| `Check` over gRPC + mTLS, decision logged in PostgreSQL, {CONCURRENCY} callers | {:.0} | {:.0} µs | {:.0} µs | {:.2}× the in-process rate |",
        remote.0,
        remote.1.as_secs_f64() * 1e6,
        remote.2.as_secs_f64() * 1e6,
        remote.0 / local.0
    );
}
