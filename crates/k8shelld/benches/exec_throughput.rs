//! Throughput of `Exec` of `cat` (1 GiB in, 1 GiB out, through k8shelld's gRPC stream on a Unix
//! socket) against a local pipe into `cat`, in the same run; and k8shelld's memory per idle
//! exec stream. Run: `cargo bench -p k8shell-k8shelld --bench exec_throughput`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8shell_common::jwt::{Jwks, JwtSigner, SessionClaims};
use k8shell_proto::k8shelld::v1::workspace_client::WorkspaceClient;
use k8shell_proto::k8shelld::v1::{ExecInput, ExecStart, exec_input, exec_output};
use tonic::transport::{Channel, Endpoint};

const TOTAL: usize = 1 << 30;
const CHUNK: usize = 64 * 1024;
const RUNS: usize = 3;
const IDLE_STREAMS: usize = 200;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// 1 GiB written into `cat` and read back, locally.
fn local_pipe() -> Duration {
    let start = Instant::now();
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cat.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let block = vec![7u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            stdin.write_all(&block).unwrap();
        }
    });
    let mut stdout = cat.stdout.take().unwrap();
    let mut buf = vec![0; CHUNK];
    let mut received = 0;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    writer.join().unwrap();
    cat.wait().unwrap();
    assert_eq!(received, TOTAL);
    start.elapsed()
}

type Client = WorkspaceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

async fn connect(socket: &Path, token: &str) -> Client {
    let socket = socket.to_owned();
    let channel = Endpoint::try_from("http://k8shelld.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    WorkspaceClient::with_interceptor(channel, Bearer(format!("Bearer {token}").parse().unwrap()))
}

fn start_message(command: &str) -> ExecInput {
    ExecInput {
        input: Some(exec_input::Input::Start(ExecStart {
            command: command.into(),
            ..Default::default()
        })),
    }
}

/// 1 GiB through `Exec` of `cat`.
async fn through_k8shelld(client: &mut Client) -> Duration {
    let start = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(start_message("cat")).await.unwrap();
    let requests = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut output = client.exec(requests).await.unwrap().into_inner();
    let writer = tokio::spawn(async move {
        let block = vec![7u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            tx.send(ExecInput {
                input: Some(exec_input::Input::Stdin(block.clone())),
            })
            .await
            .unwrap();
        }
        tx.send(ExecInput {
            input: Some(exec_input::Input::StdinEof(Default::default())),
        })
        .await
        .unwrap();
    });
    let mut received = 0;
    while let Some(message) = output.message().await.unwrap() {
        match message.output {
            Some(exec_output::Output::Stdout(bytes)) => received += bytes.len(),
            Some(exec_output::Output::Exit(_)) => break,
            _ => {}
        }
    }
    writer.await.unwrap();
    assert_eq!(received, TOTAL);
    start.elapsed()
}

#[tokio::main]
async fn main() {
    k8shell_common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (signer, _) = JwtSigner::generate("bench").unwrap();
    let jwks = Jwks {
        keys: vec![signer.jwk()],
    };
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_vec(&jwks).unwrap(),
    )
    .unwrap();
    let workspace = uuid::Uuid::now_v7();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let socket = dir.path().join("k8shelld.sock");
    std::fs::write(
        dir.path().join("k8shelld.toml"),
        format!(
            "workspace_id = \"{workspace}\"\nuser = \"{user}\"\nunix_socket = {:?}\n[jwks]\nfile = {:?}\n[telemetry]\nfilter = \"warn\"\n",
            socket.display().to_string(),
            dir.path().join("jwks.json").display().to_string()
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_k8shelld"))
        .arg("--config")
        .arg(dir.path().join("k8shelld.toml"))
        .spawn()
        .unwrap();
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let now = k8shell_common::clock::now().unix_timestamp();
    let token = signer
        .sign(&SessionClaims {
            iss: "bench".into(),
            sub: user.clone(),
            aud: "k8shelld".into(),
            ws: workspace,
            sid: uuid::Uuid::now_v7(),
            iat: now,
            exp: now + 3600,
            nbf: None,
            jti: None,
        })
        .unwrap();
    let mut client = connect(&socket, &token).await;

    let mut local = Vec::new();
    let mut remote = Vec::new();
    for _ in 0..RUNS {
        local.push(local_pipe());
        remote.push(through_k8shelld(&mut client).await);
    }
    let (local, remote) = (median(local), median(remote));
    let mib_s = |d: Duration| (TOTAL as f64 / (1 << 20) as f64) / d.as_secs_f64();

    // Idle exec streams: `cat` waiting for input, nothing flowing.
    let before = rss_kib(daemon.id());
    let mut idle = Vec::new();
    for _ in 0..IDLE_STREAMS {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(start_message("cat")).await.unwrap();
        let requests = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut output = client.exec(requests).await.unwrap().into_inner();
        let started = output.message().await.unwrap();
        assert!(started.is_some());
        idle.push((tx, output));
    }
    let after = rss_kib(daemon.id());
    let per_stream = (after.saturating_sub(before) as f64) / IDLE_STREAMS as f64;
    drop(idle);

    println!("| figure | k8shelld `Exec` of `cat` | local pipe into `cat` | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| 1 GiB in and out, median of {RUNS} | {:.2} s ({:.0} MiB/s) | {:.2} s ({:.0} MiB/s) | {:.2}× the local throughput |",
        remote.as_secs_f64(),
        mib_s(remote),
        local.as_secs_f64(),
        mib_s(local),
        mib_s(remote) / mib_s(local)
    );
    println!(
        "| k8shelld RSS per idle exec stream ({IDLE_STREAMS} streams) | {per_stream:.1} KiB (from {before} to {after} KiB) | — | — |"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}
