//! One story, played as users would, with k8shell-allinone on a platform host (10.77.0.1) and
//! every client on a client host (10.77.0.2): an administrator signs in through the OpenID
//! provider with the CLI's device flow and adds alice and bob; alice makes a workspace from an
//! example, reaches it with ssh, scp, sftp, `ssh -L` and the console terminal; her sessions
//! are listed from the client host's address and her typing replays; bob is refused; stop and
//! start keep her files; delete leaves nothing behind; Ctrl-C stops it all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use k8shell_e2e::{CLIENT_IP, Hosts, OpenId, PLATFORM_IP, Platform, URL, built, lab_args};
use k8shell_testkit::{Browser, SshClient};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// `k8shell` on the client host with its own home, talking to the platform.
fn k8shell(home: &Path) -> Command {
    let mut command = Command::new(built("k8shell", "k8shell-cli"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("K8SHELL_URL", URL)
        // The platform host serves plain HTTP off loopback, as a lab would.
        .env("K8SHELL_ALLOW_HTTP", "1");
    command
}

fn ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}\nstatus {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn json_of(command: &mut Command) -> Value {
    serde_json::from_str(&ok(command.args(["-o", "json"]))).unwrap()
}

/// A plain HTTP/1.1 request from the client host; returns status and body.
fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_platform_host_serves_users_on_a_client_host() {
    let hosts = Hosts::create();
    // This thread, the runtime's threads and every client started from here are the client host.
    hosts.enter_client();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(story(&hosts));
}

async fn story(hosts: &Hosts) {
    let openid = OpenId::start(
        hosts,
        &json!({"ops": {"email": "ops@example.com", "email_verified": true,
                        "preferred_username": "ops", "groups": ["admins", "k8shell-users"]}}),
    );
    // Keys first: the bootstrap administrator's is given at start.
    let keys = SshClient::new(PLATFORM_IP, 2222, "unknown yet").unwrap();
    let root_key = keys.keygen("root").unwrap();
    let root_pub = PathBuf::from(format!("{}.pub", root_key.display()));
    let args = lab_args(&root_pub, &openid);
    let mut platform = Platform::start(hosts, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let said = platform.said();
    assert!(said.contains("ssh -p 2222 root-admin@10.77.0.1"), "{said}");
    assert!(
        said.contains(&format!("K8SHELL_URL={URL} k8shell login --ssh")),
        "{said}"
    );
    let host_key = std::fs::read_to_string(
        platform
            .state_dir()
            .join("ssh-proxy/host-keys/ssh_host_ed25519_key.pub"),
    )
    .unwrap();
    std::fs::write(
        keys.dir().join("known_hosts"),
        format!("[{PLATFORM_IP}]:2222 {}\n", host_key.trim()),
    )
    .unwrap();

    // The bootstrap administrator's default workspace was made at the first start.
    let hello = ok(keys
        .ssh("root", "root-admin")
        .unwrap()
        .arg("echo root-in-$((40+2))"));
    assert_eq!(hello.trim(), "root-in-42");
    // The one-time console link signs in once.
    let once = said
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{URL}/login/once?code=")))
        .unwrap()
        .to_owned();
    let (browser, again) = tokio::task::spawn_blocking({
        let once = once.clone();
        move || {
            let mut browser = Browser::new();
            let (status, to) = browser.open(&once).unwrap();
            assert_eq!((status, to), (303, Some(format!("{URL}/"))));
            let again = Browser::new().open(&once).unwrap().0;
            (browser, again)
        }
    })
    .await
    .unwrap();
    assert!(
        browser.cookie("k8shell-session").is_some(),
        "{}",
        browser.cookie_header()
    );
    assert_eq!(again, 401, "a second use is refused");

    // The administrator of the organisation signs in through the OpenID provider: the CLI's
    // device flow, confirmed in a browser on the client host.
    let ops = tempfile::tempdir().unwrap();
    let mut login = k8shell(ops.path())
        .arg("login")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap());
    let (mut link, mut code) = (None, None);
    while link.is_none() || code.is_none() {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "login ended early"
        );
        if let Some(rest) = line.trim().strip_prefix("To sign in, open ") {
            link = Some(rest.to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("and confirm the code ") {
            code = Some(rest.to_owned());
        }
    }
    let (link, code) = (link.unwrap(), code.unwrap());
    let approved = tokio::task::spawn_blocking({
        let callback = format!("{URL}/api/v1/auth/callback");
        move || {
            let mut browser = Browser::new();
            let (status, to_login) = browser.open(&link).unwrap();
            assert_eq!(status, 303, "an anonymous visit is sent to sign in");
            let back = browser
                .log_in(&to_login.unwrap(), "ops", &callback)
                .unwrap();
            let (status, _) = browser.open(&back).unwrap();
            assert_eq!(status, 303, "the callback signs in and returns");
            // What the device page's button does.
            let csrf = browser.cookie("k8shell-csrf").unwrap();
            http(
                "POST",
                "10.77.0.1:8080",
                "/api/v1/auth/device/approve",
                &[
                    ("cookie", &browser.cookie_header()),
                    ("x-csrf-token", &csrf),
                    ("origin", URL),
                    ("content-type", "application/json"),
                ],
                &json!({"user_code": code}).to_string(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(approved.0, 200, "{}", approved.1);
    let finished = login.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&finished.stdout);
    assert!(
        said.contains(&format!("signed in to {URL} as ops")),
        "{said}"
    );

    // ops adds alice and bob with their keys.
    for name in ["alice", "bob"] {
        keys.keygen(name).unwrap();
        ok(k8shell(ops.path())
            .args([
                "admin",
                "users",
                "add",
                name,
                "--email",
                &format!("{name}@example.com"),
                "--key",
            ])
            .arg(keys.dir().join(format!("{name}.pub"))));
    }
    let users = ok(k8shell(ops.path()).args(["admin", "users", "ls"]));
    assert!(
        users.contains("alice") && users.contains("bob") && users.contains("ops"),
        "{users}"
    );

    // alice signs in with her key and makes a workspace from an example blueprint.
    let alice = tempfile::tempdir().unwrap();
    ok(k8shell(alice.path())
        .args(["login", "--user", "alice", "--ssh"])
        .arg(keys.dir().join("alice")));
    let links_before = platform_links(hosts);
    let created = ok(k8shell(alice.path()).args(["ws", "create", "web", "--blueprint", "busybox"]));
    assert!(created.contains("running"), "{created}");
    let info = json_of(k8shell(alice.path()).args(["ws", "info", "web"]));
    let id = info["id"].as_str().unwrap().to_owned();

    // ssh: commands, exit status, stderr apart.
    let run = keys
        .ssh("alice", "alice+web")
        .unwrap()
        .arg("echo out-$((6*7)); echo err >&2; exit 3")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "out-42");
    assert_eq!(String::from_utf8_lossy(&run.stderr).trim(), "err");

    // The workspace knows its own name (sudo and others look it up).
    let named = ok(keys
        .ssh("alice", "alice+web")
        .unwrap()
        .arg("hostname; grep -w \"$(hostname)\" /etc/hosts"));
    assert!(named.starts_with("web\n127.0.1.1"), "{named}");

    // scp up, sftp down: the same bytes.
    let files = tempfile::tempdir().unwrap();
    let notes = files.path().join("notes.txt");
    let content: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&notes, &content).unwrap();
    ok(keys
        .scp("alice")
        .unwrap()
        .arg(&notes)
        .arg(keys.remote("alice+web", "notes.txt")));
    let batch = files.path().join("batch");
    let back = files.path().join("back.txt");
    std::fs::write(&batch, format!("get notes.txt {}\nls\n", back.display())).unwrap();
    let listed = ok(&mut keys.sftp_batch("alice", "alice+web", &batch).unwrap());
    assert!(listed.contains("notes.txt"), "{listed}");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), content);

    // ssh -L to a web server in her workspace.
    ok(keys.ssh("alice", "alice+web").unwrap().arg(
        "mkdir -p www && echo served-from-web > www/index.html && busybox httpd -p 127.0.0.1:8000 -h www",
    ));
    let mut forward = keys
        .ssh_with(
            "alice",
            "alice+web",
            &["-N", "-L", "127.0.0.1:18080:127.0.0.1:8000"],
        )
        .unwrap()
        .spawn()
        .unwrap();
    let page = k8shell_testkit::poll_until("the forwarded web page", || async {
        let page = tokio::task::spawn_blocking(|| {
            std::net::TcpStream::connect("127.0.0.1:18080").ok()?;
            Some(http("GET", "127.0.0.1:18080", "/", &[], ""))
        })
        .await
        .ok()??;
        (page.0 == 200).then_some(page.1)
    })
    .await;
    assert_eq!(page.trim(), "served-from-web");
    let _ = forward.kill();
    let _ = forward.wait();

    // A terminal session over ssh: what she types is recorded.
    let typed = tokio::task::spawn_blocking({
        let mut ssh = keys.ssh_with("alice", "alice+web", &["-tt"]).unwrap();
        move || {
            let mut ssh = ssh
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = ssh.stdin.take().unwrap();
            stdin.write_all(b"echo typed-$((6*7))\nexit\n").unwrap();
            drop(stdin);
            ssh.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&typed.stdout).contains("typed-42"));

    // The console terminal in the same workspace.
    let token = json_of(k8shell(alice.path()).args(["tokens", "create", "e2e"]))["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut request =
        format!("ws://10.77.0.1:8080/api/v1/workspaces/{id}/terminal?cols=80&rows=24")
            .into_client_request()
            .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::Binary(
            b"echo console-$((6*7)); cat notes.txt | wc -l\r"
                .to_vec()
                .into(),
        ))
        .await
        .unwrap();
    let mut screen = String::new();
    while !(screen.contains("console-42") && screen.contains("20000")) {
        match tokio::time::timeout(Duration::from_secs(60), socket.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => screen.push_str(&String::from_utf8_lossy(&data)),
            Ok(Some(Ok(_))) => {}
            other => panic!("the console terminal ended: {other:?}\n{screen}"),
        }
    }
    socket
        .send(Message::Binary(b"exit\r".to_vec().into()))
        .await
        .unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
    }

    // Her sessions: ssh and console, from the client host, the terminal one replayable.
    let (sessions, recorded) =
        k8shell_testkit::poll_until("both sessions ended, one with a stored recording", || {
            let home = alice.path().to_owned();
            async move {
                let sessions = json_of(k8shell(&home).args(["sessions", "ls"]));
                let list = sessions.as_array()?;
                list.iter()
                    .find(|s| s["kind"] == "console" && s["live"] == false)?;
                let recorded = list
                    .iter()
                    .filter(|s| s["kind"] == "ssh" && s["live"] == false)
                    .find_map(|s| {
                        let id = s["id"].as_str()?.to_owned();
                        let shown = json_of(k8shell(&home).args(["sessions", "show", &id]));
                        shown["recordings"]
                            .as_array()?
                            .iter()
                            .any(|r| r["complete"] == true)
                            .then_some(id)
                    })?;
                Some((list.clone(), recorded))
            }
        })
        .await;
    for session in &sessions {
        let from = session["client_addr"].as_str().unwrap();
        assert!(
            from == CLIENT_IP || from.starts_with(&format!("{CLIENT_IP}:")),
            "every session came from the client host: {session}"
        );
    }
    assert!(sessions.iter().any(|s| s["kind"] == "console"));
    assert!(sessions.iter().filter(|s| s["kind"] == "ssh").count() >= 5);
    let replayed =
        ok(k8shell(alice.path()).args(["sessions", "replay", &recorded, "--speed", "100"]));
    assert!(replayed.contains("typed-42"), "{replayed}");

    // bob may not enter her workspace, and the refusal is recorded.
    let refused = keys
        .ssh("bob", "bob+alice/web")
        .unwrap()
        .arg("true")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let told = String::from_utf8_lossy(&refused.stderr);
    assert!(told.contains("does not exist or is not yours"), "{told}");
    let denied = json_of(k8shell(ops.path()).args([
        "admin",
        "decisions",
        "--user",
        "bob",
        "--domain",
        "ssh",
        "--denied",
    ]));
    assert!(!denied.as_array().unwrap().is_empty(), "{denied}");

    // ops ends her live session: the word goes from the session service over NATS to the
    // proxy, which tells her and closes the connection.
    let mut live = keys
        .ssh_with("alice", "alice+web", &["-tt"])
        .unwrap()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut live_in = live.stdin.take().unwrap();
    live_in.write_all(b"echo ready-to-be-ended\n").unwrap();
    let session = k8shell_testkit::poll_until("her live session", || {
        let home = alice.path().to_owned();
        async move {
            let sessions = json_of(k8shell(&home).args(["sessions", "ls", "--live"]));
            sessions
                .as_array()?
                .iter()
                .find(|s| s["kind"] == "ssh" && s["live"] == true)
                .and_then(|s| s["id"].as_str().map(str::to_owned))
        }
    })
    .await;
    ok(k8shell(ops.path()).args(["sessions", "kill", &session, "--reason", "maintenance"]));
    // Not a speed limit: a session that is never ended would otherwise hang the suite.
    let ended = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || live.wait_with_output().unwrap()),
    )
    .await
    .expect("the killed session did not end")
    .unwrap();
    drop(live_in);
    let told = format!(
        "{}{}",
        String::from_utf8_lossy(&ended.stdout),
        String::from_utf8_lossy(&ended.stderr)
    );
    assert!(told.contains("maintenance"), "she is told why: {told}");

    // Stop and start keep her files.
    ok(k8shell(alice.path()).args(["ws", "stop", "web"]));
    ok(k8shell(alice.path()).args(["ws", "start", "web"]));
    let kept = ok(keys
        .ssh("alice", "alice+web")
        .unwrap()
        .arg("md5sum < notes.txt"));
    let expected = ok(Command::new("md5sum").stdin(std::fs::File::open(&notes).unwrap()));
    assert_eq!(kept, expected);

    // Delete leaves nothing behind on the platform host.
    ok(k8shell(alice.path()).args(["ws", "rm", "web", "--yes"]));
    let state = platform.state_dir();
    assert!(!state.join("runtime/workspaces").join(&id).exists());
    let containers = ok(Command::new("runc")
        .arg("--root")
        .arg(state.join("runtime/runc"))
        .args(["list", "-q"]));
    assert!(!containers.contains(&id.replace('-', "")), "{containers}");
    assert!(!Path::new(&format!("/var/run/netns/k8shell-{}", id.replace('-', ""))).exists());
    assert_eq!(
        platform_links(hosts),
        links_before,
        "the workspace's network is gone"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "no mount of the workspace is left");

    // Ctrl-C stops everything, children included.
    let (status, said) = platform.stop();
    assert!(status.success(), "{said}");
    assert!(said.contains("stopping"), "{said}");
    // No process of the platform is left: PostgreSQL, NATS and the registry name the state
    // directory on their command lines.
    let marker = state.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&marker))
        .collect();
    assert!(left.is_empty(), "still running after Ctrl-C: {left:?}");
    assert!(
        said.find("stopping 1 workspace").is_some(),
        "the running default workspace is stopped first: {said}"
    );
    drop(openid);
}

/// The platform host's interface names.
fn platform_links(hosts: &Hosts) -> Vec<String> {
    let mut names: Vec<String> = hosts
        .platform_links()
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        })
        .collect();
    names.sort();
    names
}
