//! The end-to-end suite's world: a "platform host" and a "client host" as two network
//! namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2), `k8shell-allinone` started on
//! the platform host exactly as a user starts it, and the built binaries. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The platform host's address.
pub const PLATFORM_IP: &str = "10.77.0.1";
/// The client host's address.
pub const CLIENT_IP: &str = "10.77.0.2";

/// Two network namespaces and the link between them; removed on drop (with every interface
/// made inside them: the bridge and the workspaces' veths go too).
#[derive(Debug)]
pub struct Hosts {
    pub platform: String,
    pub client: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    pub fn create() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")),
            "the end-to-end suite makes network namespaces and runs workspaces: run it as root (scripts/test does)"
        );
        let suffix = std::process::id();
        let hosts = Self {
            platform: format!("k8p-{suffix}"),
            client: format!("k8c-{suffix}"),
        };
        ip(&["netns", "add", &hosts.platform]);
        ip(&["netns", "add", &hosts.client]);
        ip(&[
            "link",
            "add",
            "k8p0",
            "netns",
            &hosts.platform,
            "type",
            "veth",
            "peer",
            "name",
            "k8c0",
            "netns",
            &hosts.client,
        ]);
        ip(&[
            "-n",
            &hosts.platform,
            "addr",
            "add",
            "10.77.0.1/24",
            "dev",
            "k8p0",
        ]);
        ip(&[
            "-n",
            &hosts.client,
            "addr",
            "add",
            "10.77.0.2/24",
            "dev",
            "k8c0",
        ]);
        for (netns, link) in [(&hosts.platform, "k8p0"), (&hosts.client, "k8c0")] {
            ip(&["-n", netns, "link", "set", "lo", "up"]);
            ip(&["-n", netns, "link", "set", link, "up"]);
        }
        hosts
    }

    pub fn path(name: &str) -> PathBuf {
        Path::new("/var/run/netns").join(name)
    }

    /// Moves the calling thread (and every thread and process it starts later) to the client
    /// host.
    pub fn enter_client(&self) {
        let file = std::fs::File::open(Self::path(&self.client)).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }

    /// `program` run on the platform host.
    pub fn on_platform(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", Self::path(&self.platform).display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Interfaces on the platform host, as `ip -o link` lists them.
    pub fn platform_links(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.platform, "-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in [&self.platform, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// A binary of this build (`target/<profile>/<name>`), found from the test binary.
pub fn built(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {package}` (scripts/test does)",
        path.display()
    );
    path
}

/// `k8shell-allinone` running on the platform host, stopped with Ctrl-C's signal on drop.
#[derive(Debug)]
pub struct Platform {
    child: Option<Child>,
    pub state: tempfile::TempDir,
    pub output: PathBuf,
    started: Instant,
}

impl Platform {
    /// Starts it with `args` and waits until it says it is ready.
    pub fn start(hosts: &Hosts, args: &[&str]) -> Self {
        let state = tempfile::Builder::new()
            .prefix("k8shell-e2e-")
            .tempdir()
            .unwrap();
        let output = state.path().join("allinone.out");
        let log = std::fs::File::create(&output).unwrap();
        let child = hosts
            .on_platform(built("k8shell-allinone", "k8shell-allinone"))
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut platform = Self {
            child: Some(child),
            state,
            output,
            started: Instant::now(),
        };
        // The last line of the welcome: everything it says is written by then.
        platform.wait_for("stop: Ctrl-C");
        platform
    }

    /// What it printed so far.
    pub fn said(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.output) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn wait_for(&mut self, text: &str) {
        // Not a test limit: a first start builds images, which takes minutes on a slow machine.
        while !self.said().contains(text) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("k8shell-allinone exited with {status}:\n{}", self.said());
            }
            assert!(
                self.started.elapsed() < Duration::from_secs(900),
                "k8shell-allinone did not get ready:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ctrl-C, and waits for the exit; returns its status and what it printed.
    pub fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = child.wait().unwrap();
        (status, self.said())
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("----- k8shell-allinone said -----\n{}", self.said());
            }
        }
        // Workspaces a failed run left behind, and the network namespaces of stopped ones
        // (kept between stop and start; they are files of the host's mount namespace).
        let runc_root = self.state_dir().join("runtime/runc");
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "-f", id])
                    .output();
            }
        }
        let workspaces = std::fs::read_dir(self.state_dir().join("runtime/workspaces"));
        for entry in workspaces.into_iter().flatten().flatten() {
            let simple = entry.file_name().to_string_lossy().replace('-', "");
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("k8shell-{simple}")])
                .output();
        }
    }
}

/// The platform's URL as clients on the client host reach it.
pub const URL: &str = "http://10.77.0.1:8080";

/// The lab's OpenID provider on the platform host, with `accounts`, allowing the all-in-one's
/// callback; its client secret in a file, as an operator keeps it.
#[derive(Debug)]
pub struct OpenId {
    pub provider: k8shell_testkit::OidcProvider,
    pub secret: tempfile::NamedTempFile,
}

impl OpenId {
    pub fn start(hosts: &Hosts, accounts: &serde_json::Value) -> Self {
        let callback = format!("{URL}/api/v1/auth/callback");
        let provider = k8shell_testkit::OidcProvider::start_on(
            &[&callback],
            accounts,
            PLATFORM_IP,
            Some(&Hosts::path(&hosts.platform)),
        )
        .unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), &provider.client_secret).unwrap();
        Self { provider, secret }
    }
}

/// The all-in-one's options for the lab: listening on the platform host, `root-admin` with
/// `admin_key` as the bootstrap administrator, the tests' static k8shelld, the busybox base,
/// and sign-in through `openid` for `example.com` addresses.
pub fn lab_args(admin_key: &Path, openid: &OpenId) -> Vec<String> {
    let k8shelld = k8shell_testkit::static_k8shelld(None).unwrap();
    [
        "--listen-ssh",
        "10.77.0.1:2222",
        "--listen-api",
        "10.77.0.1:8080",
        "--public-url",
        URL,
        "--admin",
        "root-admin",
        "--admin-key",
        &admin_key.display().to_string(),
        "--k8shelld",
        &k8shelld.display().to_string(),
        "--base",
        "busybox",
        "--oidc-issuer",
        &openid.provider.issuer,
        "--oidc-client-id",
        &openid.provider.client_id,
        "--oidc-client-secret-file",
        &openid.secret.path().display().to_string(),
        "--oidc-allowed-domain",
        "example.com",
    ]
    .map(str::to_owned)
    .to_vec()
}
