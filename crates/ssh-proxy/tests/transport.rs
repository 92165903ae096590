//! The proxy's SSH transport against OpenSSH's own client and `ssh-keyscan`: its host keys, the
//! algorithms it agrees to, and that nobody gets in while identity cannot be asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use k8shell_common::events::{NatsConfig, OutboxConfig};
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::LocalCa;
use k8shell_ssh_proxy::host_keys::{self, HostKeyError};

struct Proxy {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Shutdown,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

/// A closed loopback port: every service the proxy would ask is away.
fn nowhere() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The proxy with no service reachable (deny by default).
async fn start() -> Proxy {
    k8shell_common::tls::install_crypto_provider();
    let _already = k8shell_common::telemetry::init("ssh-proxy-test", &Default::default());
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("test CA").unwrap();
    let tls = ca
        .issue_files(&dir.path().join("tls"), "ssh-proxy", &["localhost"])
        .unwrap();
    let service = || format!("https://localhost:{}", nowhere());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = k8shell_ssh_proxy::Config {
        listen: addr,
        host_key_dir: dir.path().join("keys"),
        tls,
        identity_uri: service(),
        authz_uri: service(),
        session_uri: service(),
        provisioner_uri: service(),
        nats: NatsConfig {
            url: format!("nats://127.0.0.1:{}", nowhere()),
            token_file: None,
        },
        outbox: OutboxConfig::new(dir.path().join("outbox")),
        spool_dir: dir.path().join("spool"),
        auth: Default::default(),
        channels: Default::default(),
        start_timeout: std::time::Duration::from_secs(10),
        drain: std::time::Duration::from_secs(1),
        record_input: false,
        telemetry: Default::default(),
    };
    let stop = Shutdown::new();
    let shutdown = stop.clone();
    tokio::spawn(async move { k8shell_ssh_proxy::serve(config, listener, shutdown).await });
    k8shell_testkit::poll_until("the proxy to make its host keys and listen", || {
        let done = dir.path().join("keys/ssh_host_ecdsa_key.pub").exists();
        async move { done.then_some(()) }
    })
    .await;
    Proxy { addr, dir, stop }
}

fn tool(name: &str) -> PathBuf {
    k8shell_testkit::require(name, "openssh-client", &[]).unwrap()
}

/// `ssh` to the proxy with `options`, without touching the user's known_hosts or keys.
async fn ssh(proxy: &Proxy, options: &[&str]) -> Output {
    let key = proxy.dir.path().join("client_key");
    if !key.exists() {
        let made = std::process::Command::new(tool("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
    }
    tokio::process::Command::new(tool("ssh"))
        .args([
            "-vv",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
        ])
        .arg(&key)
        .args(["-p", &proxy.addr.port().to_string()])
        .args(options)
        .args(["alice@127.0.0.1", "true"])
        .output()
        .await
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_keys_are_made_once_kept_private_and_offered() {
    let proxy = start().await;
    let keys_dir = proxy.dir.path().join("keys");
    let ed25519 = keys_dir.join("ssh_host_ed25519_key");
    let ecdsa = keys_dir.join("ssh_host_ecdsa_key");
    assert_eq!((mode(&ed25519), mode(&ecdsa)), (0o600, 0o600));

    // What the proxy offers is what it stored, for both kinds.
    let scan = tokio::process::Command::new(tool("ssh-keyscan"))
        .args(["-t", "ed25519,ecdsa", "-p", &proxy.addr.port().to_string()])
        .arg("127.0.0.1")
        .output()
        .await
        .unwrap();
    let offered = String::from_utf8(scan.stdout).unwrap();
    for public in [ed25519.with_extension("pub"), ecdsa.with_extension("pub")] {
        let stored = std::fs::read_to_string(&public).unwrap();
        let mut fields = stored.split_whitespace();
        let (kind, data) = (fields.next().unwrap(), fields.next().unwrap());
        assert!(
            offered.contains(&format!("{kind} {data}")),
            "{kind} not offered as stored: {offered}"
        );
    }

    // A second start keeps the keys (clients' known_hosts stay valid).
    let before: Vec<String> = host_keys::load_or_generate(&keys_dir)
        .unwrap()
        .iter()
        .map(host_keys::fingerprint)
        .collect();
    let again: Vec<String> = host_keys::load_or_generate(&keys_dir)
        .unwrap()
        .iter()
        .map(host_keys::fingerprint)
        .collect();
    assert_eq!(before, again);
    assert!(before[0].starts_with("SHA256:"), "{before:?}");

    // A key others can read is refused with the fix.
    std::fs::set_permissions(&ed25519, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = host_keys::load_or_generate(&keys_dir).unwrap_err();
    assert!(matches!(refused, HostKeyError::Exposed { .. }), "{refused}");
    assert!(refused.to_string().contains("chmod 600"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modern_algorithms_are_spoken_and_nobody_gets_in_without_identity() {
    let proxy = start().await;

    let default = ssh(&proxy, &[]).await;
    let log = String::from_utf8_lossy(&default.stderr);
    assert!(!default.status.success());
    assert!(log.contains("kex: algorithm: curve25519-sha256"), "{log}");
    assert!(
        log.contains("kex: server->client cipher: chacha20-poly1305@openssh.com"),
        "{log}"
    );
    assert!(
        log.contains("Permission denied (publickey,keyboard-interactive)"),
        "{log}"
    );

    for (options, refusal) in [
        (
            ["-o", "KexAlgorithms=diffie-hellman-group14-sha1"],
            "no matching key exchange method found",
        ),
        (
            ["-o", "KexAlgorithms=diffie-hellman-group-exchange-sha256"],
            "no matching key exchange method found",
        ),
        (["-c", "aes128-ctr"], "no matching cipher found"),
        (["-c", "aes256-cbc"], "no matching cipher found"),
        (
            ["-o", "HostKeyAlgorithms=ssh-rsa"],
            "no matching host key type found",
        ),
    ] {
        let refused = ssh(&proxy, &options).await;
        let log = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{options:?} was accepted");
        assert!(log.contains(refusal), "{options:?}: {log}");
    }
}
