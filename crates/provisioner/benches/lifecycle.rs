//! Workspace lifecycle latency with the image cached, against bare runc in the same run.
//!
//! `sudo cargo bench -p k8shell-provisioner --bench lifecycle` (root: runc). K8SHELL_BENCH_N sets
//! the number of workspaces (default 20).
//!
//! 1. create→ready: `Create` then `EnsureRunning` until k8shelld answers, one workspace after the
//!    other (the image is built and pulled once before).
//! 2. stop→start: each stopped, then `EnsureRunning` (what an SSH connection does).
//! 3. N concurrent `EnsureRunning` of stopped workspaces.
//!
//! Peer: `runc run -d` of the same bundle (same config.json, same k8shelld) until k8shelld answers
//! its health check, then `runc delete -f`: the floor the local runtime builds on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../tests/integration/platform.rs"]
#[allow(dead_code)]
mod platform;

use std::time::{Duration, Instant};

use k8shell_proto::provisioner::v1 as pb;

use platform::{Platform, by_id, id_of};

fn admin() -> Option<pb::Requester> {
    Some(pb::Requester {
        username: "alice".to_owned(),
        groups: vec!["admins".to_owned()],
    })
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, ours: &[Duration], peer: &[Duration]) {
    let (p50, p95) = (percentile(ours, 50.0), percentile(ours, 95.0));
    let (peer50, peer95) = (percentile(peer, 50.0), percentile(peer, 95.0));
    println!(
        "| {what} | {} / {} | {} / {} | {:.2}× / {:.2}× |",
        ms(p50),
        ms(p95),
        ms(peer50),
        ms(peer95),
        p50.as_secs_f64() / peer50.as_secs_f64(),
        p95.as_secs_f64() / peer95.as_secs_f64()
    );
}

async fn ensure(client: &mut platform::Client, id: &str) -> pb::EnsureRunningResponse {
    platform::ensure_running_as(client, id, admin()).await
}

async fn stop_and_wait(
    client: &mut platform::Client,
    watch: &mut tonic::Streaming<pb::WorkspaceEvent>,
    id: &str,
) {
    client
        .stop(pb::WorkspaceRequest {
            workspace: by_id(id),
        })
        .await
        .unwrap();
    platform::wait_state(watch, id, pb::State::Stopped).await;
}

fn runc(root: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "runc {args:?}");
}

/// The peer: the workspace's own bundle under bare runc, until k8shelld answers.
async fn bare_runc(platform: &Platform, id: &str, samples: usize) -> Vec<Duration> {
    let bundle = platform
        .state_dir()
        .join("workspaces")
        .join(id)
        .join("bundle");
    let socket = platform
        .state_dir()
        .join("workspaces")
        .join(id)
        .join("run/k8shelld.sock");
    let root = platform.base.dir.path().join("bare-runc");
    let mut times = Vec::new();
    for n in 0..samples {
        let name = format!("bare-{n}");
        let _ = std::fs::remove_file(&socket);
        let started = Instant::now();
        runc(
            &root,
            &["run", "-d", "--bundle", bundle.to_str().unwrap(), &name],
        );
        let channel = k8shell_common::grpc::unix_channel(&socket);
        let health = k8shell_proto::health::pb::health_client::HealthClient::new(channel);
        loop {
            let mut health = health.clone();
            if health
                .check(k8shell_proto::health::pb::HealthCheckRequest::default())
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(started.elapsed());
        runc(&root, &["delete", "-f", &name]);
    }
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("K8SHELL_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut platform = Platform::start().await;
    platform.start_provisioner().await;
    let mut client = platform.client();
    let mut watch = client
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let blueprint = platform.base.blueprint("");
    let create = |name: String| pb::CreateRequest {
        requester: admin(),
        name,
        blueprint_source: blueprint.clone(),
        blueprint_file: "bench.ncl".to_owned(),
        stopped: false,
    };

    // Warm-up: the image is built, pushed and pulled into the cache once.
    let warm = client
        .create(create("warm".to_owned()))
        .await
        .unwrap()
        .into_inner();
    let warm_id = id_of(&warm);
    ensure(&mut client, &warm_id).await;
    stop_and_wait(&mut client, &mut watch, &warm_id).await;
    let peer = bare_runc(&platform, &warm_id, n).await;
    client
        .delete(pb::WorkspaceRequest {
            workspace: by_id(&warm_id),
        })
        .await
        .unwrap();
    platform::wait_state(&mut watch, &warm_id, pb::State::Deleted).await;

    let mut ids = Vec::new();
    let mut create_ready = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let created = client
            .create(create(format!("ws-{i}")))
            .await
            .unwrap()
            .into_inner();
        let id = id_of(&created);
        let ready = ensure(&mut client, &id).await;
        create_ready.push(started.elapsed());
        assert!(ready.endpoint.starts_with("unix:"));
        ids.push(id);
    }

    let mut stop_start = Vec::new();
    for id in &ids {
        stop_and_wait(&mut client, &mut watch, id).await;
        let started = Instant::now();
        let ready = ensure(&mut client, id).await;
        stop_start.push(started.elapsed());
        assert!(ready.started);
    }

    for id in &ids {
        stop_and_wait(&mut client, &mut watch, id).await;
    }
    let all = Instant::now();
    let concurrent: Vec<Duration> = futures_util::future::join_all(ids.iter().map(|id| {
        let mut client = client.clone();
        async move {
            let started = Instant::now();
            let ready = ensure(&mut client, id).await;
            assert!(ready.started && ready.endpoint.starts_with("unix:"));
            started.elapsed()
        }
    }))
    .await;
    let all = all.elapsed();

    println!("| figure (p50 / p95) | provisioner | bare runc, same bundle | ratio |");
    println!("|---|---|---|---|");
    row(
        &format!("create→ready, {n} one after another"),
        &create_ready,
        &peer,
    );
    row(
        &format!("stop→start, {n} one after another"),
        &stop_start,
        &peer,
    );
    row(&format!("{n} concurrent starts, each"), &concurrent, &peer);
    println!(
        "| {n} concurrent starts, all running | {} | {} ({n} × p50) | {:.2}× |",
        ms(all),
        ms(percentile(&peer, 50.0) * n as u32),
        all.as_secs_f64() / (percentile(&peer, 50.0) * n as u32).as_secs_f64()
    );
    for id in &ids {
        client
            .delete(pb::WorkspaceRequest {
                workspace: by_id(id),
            })
            .await
            .unwrap();
    }
    for id in &ids {
        platform::wait_state(&mut watch, id, pb::State::Deleted).await;
    }
    platform.stop_provisioner().await;
}
