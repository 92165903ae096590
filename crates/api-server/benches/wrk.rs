//! `GET /api/v1/workspaces` under load from wrk (Debian's), against `/healthz` of the same
//! server in the same run: the floor of the HTTP stack, so the ratio is what listing costs
//! (authentication, the provisioner call, JSON).
//!
//! `sudo cargo bench -p k8shell-api-server --bench wrk` (root: the test platform runs runc).
//! K8SHELL_BENCH_SECONDS sets each run's length (default 10), K8SHELL_BENCH_CONNECTIONS the
//! connections (default 32).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/client.rs"]
#[allow(dead_code)]
mod client;

#[path = "../tests/integration/platform.rs"]
#[allow(dead_code)]
mod platform;

use std::process::Command;

use platform::Platform;

/// What wrk measured.
#[derive(Debug)]
struct Load {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Prints the figures as one line wrk's Lua `done` writes.
const REPORT: &str = r#"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("K8SHELL %f %f %f %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors))
end
"#;

fn wrk(url: &str, token: &str, seconds: u64, connections: u64) -> Load {
    let script = std::env::temp_dir().join("k8shell-wrk-report.lua");
    std::fs::write(&script, REPORT).unwrap();
    let output = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk is not installed: run scripts/setup (Debian package wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("K8SHELL "))
        .unwrap_or_else(|| {
            panic!(
                "wrk said:\n{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let fields: Vec<&str> = line.split_whitespace().collect();
    Load {
        requests_per_second: fields[0].parse().unwrap(),
        p50_ms: fields[1].parse().unwrap(),
        p99_ms: fields[2].parse().unwrap(),
        errors: fields[3].parse().unwrap(),
    }
}

fn main() {
    let seconds = std::env::var("K8SHELL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let connections = std::env::var("K8SHELL_BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let platform = runtime.block_on(Platform::start());
    let alice = runtime.block_on(platform.user("alice"));
    // A user with as many workspaces as the default policy allows (stopped: listing is what is
    // measured).
    for name in ["default", "web", "data"] {
        runtime.block_on(platform.create_workspace("alice", name, ""));
    }
    let base = format!("http://{}", platform.addr);
    let listed = runtime.block_on(alice.get("/api/v1/workspaces"));
    assert_eq!(
        listed.json()["items"].as_array().unwrap().len(),
        3,
        "{}",
        listed.text()
    );
    // Warm up both paths, then measure them in turn.
    wrk(
        &format!("{base}/api/v1/workspaces"),
        &alice.token,
        2,
        connections,
    );
    let floor = wrk(
        &format!("{base}/healthz"),
        &alice.token,
        seconds,
        connections,
    );
    let list = wrk(
        &format!("{base}/api/v1/workspaces"),
        &alice.token,
        seconds,
        connections,
    );
    println!(
        "\n| request ({connections} connections, {seconds} s, 2 wrk threads) | requests/s | p50 | p99 | errors |"
    );
    println!("|---|---|---|---|---|");
    for (name, load) in [
        ("`GET /healthz` (the HTTP floor)", &floor),
        ("`GET /api/v1/workspaces` (3 workspaces)", &list),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            load.requests_per_second, load.p50_ms, load.p99_ms, load.errors
        );
    }
    println!(
        "\nlisting: {:.2}x the floor's throughput, p99 {:.1}x the floor's",
        list.requests_per_second / floor.requests_per_second,
        list.p99_ms / floor.p99_ms
    );
    drop(platform);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
}
