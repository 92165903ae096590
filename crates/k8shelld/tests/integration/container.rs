//! The static k8shelld as a workspace runs it: PID 1 of its own PID namespace, in a root file
//! system that holds nothing but busybox. Needs root (namespaces, chroot), as the local runtime.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8shell_proto::health::pb::HealthCheckRequest;
use k8shell_proto::health::pb::health_check_response::ServingStatus;
use k8shell_proto::health::pb::health_client::HealthClient;
use k8shell_proto::k8shelld::v1::exec_input;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{self, Ended, Exec, run, start, unix_channel, with_token};

/// Whether an ELF file asks for a dynamic loader (a PT_INTERP program header).
fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(
        &elf[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

fn busybox() -> PathBuf {
    let path = k8shell_testkit::require("busybox", "busybox-static", &[Path::new("/bin")]).unwrap();
    assert!(
        !has_interpreter(&path),
        "{} is dynamically linked; install the static one: apt-get install -y busybox-static",
        path.display()
    );
    path
}

struct Container {
    rootfs: PathBuf,
    unshare: Child,
    daemon: harness::Daemon,
}

impl Container {
    /// Lays out a busybox root file system with k8shelld and starts it as PID 1.
    fn start() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test starts a PID namespace and a chroot: run it as root (CI does)"
        );
        let binary =
            k8shell_testkit::static_k8shelld(Some(Path::new(env!("CARGO_BIN_EXE_k8shelld"))))
                .unwrap();
        assert!(
            !has_interpreter(&binary),
            "k8shelld must be statically linked"
        );
        let (dir, workspace, signer, _) = harness::prepare();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "etc", "run", "proc", "tmp", "dev/pts", "home/dev"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        std::os::unix::fs::chown(rootfs.join("home/dev"), Some(4242), Some(4242)).unwrap();
        std::fs::copy(busybox(), rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "echo", "id", "sleep", "ls", "wc", "stty", "true", "pwd",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::copy(&binary, rootfs.join("k8shelld")).unwrap();
        std::os::unix::fs::symlink("pts/ptmx", rootfs.join("dev/ptmx")).unwrap();
        std::fs::write(rootfs.join("dev/null"), "").unwrap();
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ndev:x:4242:4242:Dev:/home/dev:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\ndev:x:4242:\n").unwrap();
        std::fs::copy(dir.path().join("jwks.json"), rootfs.join("etc/jwks.json")).unwrap();
        std::fs::write(
            rootfs.join("etc/k8shelld.toml"),
            format!(
                "workspace_id = \"{workspace}\"\nuser = \"dev\"\nunix_socket = \"/run/k8shelld.sock\"\n\
                 kill_grace = \"3s\"\n[jwks]\nfile = \"/etc/jwks.json\"\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("k8shelld.log")).unwrap();
        // What a container runtime does: new PID and mount namespaces, /proc, a private devpts,
        // /dev/null, then the root changes and k8shelld replaces the shell as PID 1.
        let setup = "set -e; R=\"$1\"; mount -t proc proc \"$R/proc\"; \
             mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts \"$R/dev/pts\"; \
             mount --bind /dev/null \"$R/dev/null\"; \
             exec chroot \"$R\" /k8shelld --config /etc/k8shelld.toml";
        let mut unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", setup, "container-setup"])
            .arg(&rootfs)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = rootfs.join("run/k8shelld.sock");
        let started = Instant::now();
        // Ready when it accepts connections (the socket file appears just before `listen`).
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let exited = unshare.try_wait().unwrap();
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(30),
                "k8shelld did not start; log:\n{}",
                std::fs::read_to_string(dir.path().join("k8shelld.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let user = harness::TestUser {
            name: "dev".into(),
            uid: 4242,
            gid: 4242,
            extra_gid: 0,
            home: PathBuf::from("/home/dev"),
        };
        let shutdown = k8shell_common::shutdown::Shutdown::new();
        let daemon = harness::Daemon {
            dir,
            socket,
            workspace,
            signer,
            user,
            shutdown,
            task: tokio::spawn(async {}),
        };
        Self {
            rootfs,
            unshare,
            daemon,
        }
    }

    /// The host PID of k8shelld (PID 1 inside): the child of `unshare`.
    fn daemon_pid(&self) -> Pid {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.unshare.id()))
                .unwrap();
        Pid::from_raw(children.split_whitespace().next().unwrap().parse().unwrap())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- k8shelld log -----\n{}",
                std::fs::read_to_string(self.daemon.dir.path().join("k8shelld.log"))
                    .unwrap_or_default()
            );
        }
        let _ = &self.rootfs;
    }
}

#[tokio::test]
async fn static_k8shelld_runs_as_pid1_in_a_busybox_root() {
    let container = Container::start();
    let channel = unix_channel(&container.daemon.socket).await;
    let mut client = with_token(channel, Some(container.daemon.token()));

    let (out, _, ended) = run(&mut client, "id -u; echo \"parent=$PPID\"; ls /").await;
    assert_eq!(ended, Ended::Code(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "4242", "runs as the workspace user");
    assert_eq!(lines[1], "parent=1", "k8shelld is PID 1");
    assert!(
        !out.contains("usr"),
        "nothing but busybox in the root: {out}"
    );

    // A PTY works without any terminal database in the image.
    let mut shell = Exec::open(&mut client, harness::with_pty(start(""), 90, 30))
        .await
        .unwrap();
    shell.read_until("$ ").await;
    shell.type_text("stty size\n").await;
    shell.read_until("30 90").await;
    shell.type_text("exit\n").await;
    assert_eq!(shell.wait().await, Ended::Code(0));
}

#[tokio::test]
async fn as_pid1_it_reaps_orphans() {
    let container = Container::start();
    let channel = unix_channel(&container.daemon.socket).await;
    let mut client = with_token(channel, Some(container.daemon.token()));
    // The shell exits at once; its background children become PID 1's.
    let (out, _, ended) = run(
        &mut client,
        "for i in 1 2 3 4 5; do sleep 0.2 & done; echo spawned",
    )
    .await;
    assert_eq!((out.as_str(), ended), ("spawned\n", Ended::Code(0)));
    let census = "for f in /proc/[0-9]*/stat; do read -r l < \"$f\" && echo \"$l\"; done";
    let started = Instant::now();
    loop {
        let (table, _, _) = run(&mut client, census).await;
        let sleeps = table.lines().filter(|l| l.contains("(sleep)")).count();
        let zombies: Vec<&str> = table.lines().filter(|l| l.contains(") Z ")).collect();
        if sleeps == 0 {
            assert!(zombies.is_empty(), "orphans left zombies: {zombies:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "orphans never went away:\n{table}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_to_pid1_ends_sessions_with_a_grace_period() {
    let mut container = Container::start();
    let channel = unix_channel(&container.daemon.socket).await;
    let mut health = HealthClient::new(channel.clone());
    let mut client = with_token(channel, Some(container.daemon.token()));
    let script = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    let mut exec = Exec::open(&mut client, start(script)).await.unwrap();
    exec.read_until("ready").await;
    kill(container.daemon_pid(), Signal::SIGTERM).unwrap();
    exec.read_until("got-term").await;
    // A stopping k8shelld starts no new session: it refuses ("the workspace is stopping"), or on
    // a very slow machine its connection is already gone.
    if let Ok(mut late) = Exec::open(&mut client, start("echo late")).await {
        panic!("a session started after SIGTERM: {:?}", late.wait().await);
    }
    // Health checks hear it too, so that the provisioner hands out no stopping workspace (the
    // connection is still up: the session above has not ended).
    let answer = health.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(answer.into_inner().status, ServingStatus::NotServing as i32);
    // Writing while the session ends must not cost the client its exit status.
    exec.send(exec_input::Input::StdinEof(Default::default()))
        .await;
    assert_eq!(
        exec.wait().await,
        Ended::Code(0),
        "the session could finish on its own"
    );
    let status = container.unshare.wait().unwrap();
    assert!(
        status.success(),
        "k8shelld exits cleanly after its sessions: {status}"
    );
}
