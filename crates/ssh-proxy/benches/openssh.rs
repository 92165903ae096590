//! The ssh-proxy against OpenSSH's sshd on this machine, with the same client, cipher and
//! payload, in one run; figures as ratios.
//!
//! `sudo cargo bench -p k8shell-ssh-proxy --bench openssh` (root: runc, sshd on a free port, and
//! a user `k8shell-bench` made for sshd's logins).
//! Needs the release static k8shelld (the command is printed when it is missing).
//! K8SHELL_BENCH_SESSIONS sets the number of idle sessions (default 500); K8SHELL_BENCH_ONLY
//! a comma-separated subset of `connect,stdin,forward,sftp,memory` to run (default: all), for
//! working on one figure.
//!
//! 1. `ssh host true`: connection time (median of 15, runs alternated).
//! 2. 1 GiB of stdin into `cat > /dev/null`: throughput.
//! 3. 1 GiB through `ssh -L` into a sink (`nc -ll -e sink`) inside the target.
//! 4. `sftp` get of a 1 GiB file.
//! 5. N concurrent idle PTY sessions: memory per session of the server side (k8shell: the proxy
//!    process plus k8shelld; sshd: every sshd process), PSS and RSS growth divided by N.
//!
//! Both targets run the same busybox (the workspace image, and the host's busybox for sshd); the
//! client forces curve25519-sha256, chacha20-poly1305 and an Ed25519 host key on both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../tests/integration/platform.rs"]
#[allow(dead_code)]
mod platform;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8shell_testkit::SshClient;
use platform::{Pace, Platform};
use support::free_port;

const GIB: usize = 1 << 30;
/// Runs of each throughput figure per target.
const RUNS: usize = 5;
const SAME_CRYPTO: &[&str] = &[
    "-o",
    "KexAlgorithms=curve25519-sha256",
    "-o",
    "HostKeyAlgorithms=ssh-ed25519",
    "-c",
    "chacha20-poly1305@openssh.com",
];

/// A measurement of one target.
type Measure<'a> = dyn Fn(&Target<'_>) -> Duration + 'a;

/// One side of the comparison: how to reach it.
struct Target<'a> {
    name: &'static str,
    client: &'a SshClient,
    user: String,
    /// A directory of the target where the test files go.
    home: String,
}

impl Target<'_> {
    fn ssh(&self, options: &[&str]) -> Command {
        let mut all = SAME_CRYPTO.to_vec();
        all.extend_from_slice(options);
        self.client.ssh_with("bench", &self.user, &all).unwrap()
    }

    fn run(&self, command: &str) -> String {
        let mut ssh = self.ssh(&[]);
        ssh.arg(command);
        let output = ssh.stdin(Stdio::null()).output().unwrap();
        assert!(
            output.status.success(),
            "{}: {command}: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// OpenSSH's sshd on a free port, with its own host key and authorized keys.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    fn start() -> Self {
        let sshd =
            k8shell_testkit::require("sshd", "openssh-server", &[Path::new("/usr/sbin")]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("host_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nAuthorizedKeysFile {keys}\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PidFile {pid}\nMaxStartups 1000:30:2000\nMaxSessions 10\nPrintMotd no\n\
                 Subsystem sftp internal-sftp\n",
                key = key.display(),
                keys = dir.path().join("authorized_keys").display(),
                pid = dir.path().join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, dir }
    }

    /// The user the benchmark logs in as: `/bin/sh` as its shell and no shell start-up files,
    /// like the workspace's user (root's shell may read a slow `.bashrc`, which is not sshd's
    /// cost). Made once on this machine.
    fn user() -> (&'static str, &'static str) {
        const USER: &str = "k8shell-bench";
        let exists = Command::new("id")
            .arg(USER)
            .output()
            .unwrap()
            .status
            .success();
        if !exists {
            let made = Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", USER])
                .status()
                .unwrap();
            assert!(made.success(), "useradd {USER} failed");
        }
        // No password, but not locked: without PAM, sshd refuses keys of locked accounts.
        let unlocked = Command::new("usermod")
            .args(["-p", "*", USER])
            .status()
            .unwrap();
        assert!(unlocked.success(), "usermod {USER} failed");
        (USER, "/home/k8shell-bench")
    }

    /// Lets `key` log in (sshd reads the file at each login).
    fn authorize(&self, key: &str) {
        std::fs::write(self.dir.path().join("authorized_keys"), format!("{key}\n")).unwrap();
    }

    fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

/// Pushes `bytes` zeros into `writer` in 64 KiB writes.
fn push(writer: &mut impl std::io::Write, bytes: usize) {
    let chunk = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        writer.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
}

fn connect_time(target: &Target<'_>) -> Duration {
    let start = Instant::now();
    target.run("true");
    start.elapsed()
}

fn stdin_throughput(target: &Target<'_>) -> Duration {
    let mut ssh = target.ssh(&[]);
    ssh.arg("cat > /dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let start = Instant::now();
    let mut child = ssh.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    push(&mut stdin, GIB);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    start.elapsed()
}

/// 1 GiB through `ssh -L` into `sink` on the target (started by `start_sink` on `port`).
fn forward_throughput(target: &Target<'_>, port: u16) -> Duration {
    let local = free_port();
    let mut ssh = target.ssh(&[
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("{local}:127.0.0.1:{port}"),
    ]);
    ssh.arg("echo ready; exec sleep 3600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = ssh.spawn().unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(
        ready, "ready\n",
        "{}: the forward did not come up",
        target.name
    );
    let start = Instant::now();
    let mut tcp = TcpStream::connect(("127.0.0.1", local)).unwrap();
    push(&mut tcp, GIB);
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    // The sink closes once it has read everything.
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).unwrap();
    let took = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn sftp_get(target: &Target<'_>, dir: &Path) -> Duration {
    let batch = dir.join(format!("get-{}", target.name));
    std::fs::write(&batch, format!("get {}/big.bin /dev/null\n", target.home)).unwrap();
    let sftp = target
        .client
        .sftp_batch("bench", &target.user, &batch)
        .unwrap();
    // sftp takes -c and -o like ssh.
    let mut command = Command::new(sftp.get_program());
    command.args(SAME_CRYPTO).args(sftp.get_args());
    for (key, value) in sftp.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let start = Instant::now();
    let output = command.stdin(Stdio::null()).output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        target.name,
        String::from_utf8_lossy(&output.stderr)
    );
    start.elapsed()
}

/// PSS and RSS in kB of `pids`.
fn memory(pids: &[u32]) -> (u64, u64) {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    pids.iter().fold((0, 0), |(pss, rss), pid| {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        (pss + field(&rollup, "Pss:"), rss + field(&rollup, "Rss:"))
    })
}

/// Processes named `comm` that descend from `root` (and `root` itself).
fn descendants_named(root: u32, comm: &str) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(") ") else {
            continue;
        };
        let name = name.split_once('(').map(|(_, n)| n).unwrap_or_default();
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parents.push((pid, ppid, name.to_owned()));
    }
    let mut found = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, ppid, _) in &parents {
            if found.contains(ppid) && !found.contains(pid) {
                found.push(*pid);
                grew = true;
            }
        }
    }
    found
        .into_iter()
        .filter(|pid| *pid == root || parents.iter().any(|(p, _, n)| p == pid && n == comm))
        .collect()
}

/// Opens `n` idle PTY sessions (a process waiting in each); returns the clients.
fn idle_sessions(target: &Target<'_>, n: usize) -> Vec<Child> {
    let mut clients = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(25) {
        let mut started = Vec::new();
        for _ in 0..25.min(n - batch * 25) {
            let mut ssh = target.ssh(&["-tt"]);
            ssh.arg("echo up; exec sleep 86400")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            started.push(ssh.spawn().unwrap());
        }
        for mut child in started {
            let mut reader = BufReader::new(child.stdout.as_mut().unwrap());
            let mut line = String::new();
            while !line.starts_with("up") {
                line.clear();
                let n = reader.read_line(&mut line).unwrap();
                assert!(n > 0, "{}: a session did not open", target.name);
            }
            clients.push(child);
        }
    }
    // Let allocators settle.
    std::thread::sleep(Duration::from_secs(2));
    clients
}

fn close(clients: Vec<Child>) {
    for mut child in clients {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `target/release/k8shell-ssh-proxy`, beside this benchmark's binary.
fn proxy_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("k8shell-ssh-proxy");
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p k8shell-ssh-proxy",
        binary.display()
    );
    binary
}

fn main() {
    // 500 clients hold a thousand pipes.
    k8shell_ssh_proxy::raise_open_files_limit();
    let sessions: usize = std::env::var("K8SHELL_BENCH_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let only = std::env::var("K8SHELL_BENCH_ONLY").unwrap_or_default();
    let wanted = move |figure: &str| only.is_empty() || only.split(',').any(|f| f.trim() == figure);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // The provisioner's background passes as often as in a deployment (tests run them
        // every 200 ms; each one spawns runc, which would otherwise share the cores).
        let mut platform = Platform::start_paced(Pace::production(), |_| {}).await;
        platform.add_user("bench").await;
        platform
            .create_workspace(
                "bench",
                "default",
                "resources | force = { cpu = 2, memory = \"2Gi\", disk = \"4Gi\" }",
            )
            .await;
        // The proxy as its own process, so that its memory is its own.
        let proxy = platform.run_proxy_binary(&proxy_binary()).await;
        let k8shell = Target {
            name: "k8shell",
            client: &platform.client,
            user: "bench".to_owned(),
            home: "/home/dev".to_owned(),
        };
        let scratch_dir = tempfile::tempdir().unwrap();
        let scratch = scratch_dir.path().to_owned();
        let sshd = Sshd::start();
        let sshd_client = SshClient::new("127.0.0.1", sshd.port, &sshd.host_key()).unwrap();
        sshd.authorize(&sshd_client.public_key("bench").unwrap());
        let (sshd_user, sshd_home) = Sshd::user();
        let openssh = Target {
            name: "sshd",
            client: &sshd_client,
            user: sshd_user.to_owned(),
            home: sshd_home.to_owned(),
        };
        // Measurements block on clients; the services keep running on the runtime's workers.
        let mut out = tokio::task::block_in_place(|| {
            let mut out = String::new();
            // Warm up: the workspace starts, both sides have run once.
            k8shell.run("true");
            openssh.run("true");
            for target in [&k8shell, &openssh] {
                target.run(&format!(
                    "cd {home} && head -c {GIB} /dev/zero > big.bin && \
                     printf '#!/bin/sh\\ncat > /dev/null\\n' > sink && chmod +x sink",
                    home = target.home
                ));
            }
            let sink_port = |target: &Target<'_>| -> u16 {
                let port = free_port();
                target.run(&format!(
                    "cd {} && (busybox nc -ll -p {port} -e ./sink </dev/null >/dev/null 2>&1 &)",
                    target.home
                ));
                std::thread::sleep(Duration::from_millis(300));
                port
            };
            let sinks = [sink_port(&k8shell), sink_port(&openssh)];

            out.push_str("| figure | k8shell (ssh-proxy + k8shelld) | OpenSSH sshd | ratio |\n|---|---|---|---|\n");
            if wanted("connect") {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..15 {
                    a.push(connect_time(&k8shell));
                    b.push(connect_time(&openssh));
                }
                let (ca, cb) = (median(a), median(b));
                out.push_str(&format!(
                    "| `ssh host true`, median of 15 | {:.0} ms | {:.0} ms | {:.2}× the time |\n",
                    ca.as_secs_f64() * 1e3,
                    cb.as_secs_f64() * 1e3,
                    ca.as_secs_f64() / cb.as_secs_f64()
                ));
            }
            // Runs alternate between the targets, so that whatever else this shared machine does
            // falls on both; the best of each is the figure.
            let best_of_both = |f: &dyn Fn(&Target<'_>) -> Duration| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..RUNS {
                    a.push(f(&k8shell));
                    b.push(f(&openssh));
                }
                (a.into_iter().min().unwrap(), b.into_iter().min().unwrap())
            };
            let rows: [(&str, &str, Box<Measure<'_>>); 3] = [
                ("stdin", "1 GiB stdin → `cat > /dev/null`, best of 5", Box::new(stdin_throughput)),
                (
                    "forward",
                    "1 GiB through `ssh -L`, best of 5",
                    Box::new(move |t: &Target<'_>| {
                        forward_throughput(t, if t.name == "k8shell" { sinks[0] } else { sinks[1] })
                    }),
                ),
                (
                    "sftp",
                    "`sftp` get of 1 GiB, best of 5",
                    Box::new(|t: &Target<'_>| sftp_get(t, &scratch)),
                ),
            ];
            for (figure, label, f) in rows {
                if !wanted(figure) {
                    continue;
                }
                let (ta, tb) = best_of_both(&*f);
                let (ma, mb) = (mib_per_s(GIB, ta), mib_per_s(GIB, tb));
                out.push_str(&format!(
                    "| {label} | {ma:.0} MiB/s | {mb:.0} MiB/s | {:.2}× the throughput |\n",
                    ma / mb
                ));
                eprintln!("{label}: {ma:.0} vs {mb:.0} MiB/s");
            }
            out
        });

        // Memory per idle session.
        if wanted("memory") {
            let k8shelld = k8shelld_pid(&platform);
            let k8shell_pids = [proxy, k8shelld];
            let sshd_root = sshd.child.id();
            let before_k = memory(&k8shell_pids);
            let before_s = memory(&descendants_named(sshd_root, "sshd"));
            let (k_after, s_after) = tokio::task::block_in_place(|| {
                let clients = idle_sessions(&k8shell, sessions);
                let k_after = memory(&k8shell_pids);
                close(clients);
                let clients = idle_sessions(&openssh, sessions);
                let s_after = memory(&descendants_named(sshd_root, "sshd"));
                close(clients);
                (k_after, s_after)
            });
            let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / sessions as f64;
            let (kp, kr) = (per(k_after.0, before_k.0), per(k_after.1, before_k.1));
            let (sp, sr) = (per(s_after.0, before_s.0), per(s_after.1, before_s.1));
            out.push_str(&format!(
                "| memory per idle PTY session ({sessions} at once), PSS | {kp:.0} kB | {sp:.0} kB | {:.2}× the memory (1/{:.0}) |\n",
                kp / sp,
                sp / kp
            ));
            out.push_str(&format!(
                "| same, RSS | {kr:.0} kB | {sr:.0} kB | {:.2}× |\n",
                kr / sr
            ));
        }
        println!("\n{out}");
    });
}

/// k8shelld of the bench workspace (PID 1 of its container, as the host sees it).
fn k8shelld_pid(platform: &Platform) -> u32 {
    let output = Command::new("runc")
        .arg("--root")
        .arg(platform.dir.path().join("state/runc"))
        .args(["list", "-f", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let pid = listed[0]["pid"].as_u64().unwrap();
    u32::try_from(pid).unwrap()
}
