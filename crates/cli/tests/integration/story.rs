//! A user's first hour with the CLI: the device login confirmed in a browser through the
//! OpenID provider, a key, a workspace, `config-ssh` and plain `ssh`, then the replay of what
//! she typed.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt as _;
use k8shell_testkit::{Browser, OidcProvider};
use serde_json::json;

use crate::client::send;
use crate::platform::Platform;

/// `k8shell` with its own config and home, talking to `url`.
fn k8shell(home: &Path, url: &str) -> Command {
    let mut command = Command::cargo_bin("k8shell").unwrap();
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("K8SHELL_URL", url);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_with_the_device_flow_and_reaches_her_workspace_with_plain_ssh() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let callback = format!("{url}/api/v1/auth/callback");
    let provider = OidcProvider::start(
        &[&callback],
        &json!({"alice": {"email": "alice@example.com", "email_verified": true,
                          "preferred_username": "alice", "groups": ["k8shell-users"]}}),
    )
    .unwrap();
    let ssh_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let platform = Platform::start_on(listener, Some(&provider), Some(ssh_listener)).await;
    let home = tempfile::tempdir().unwrap();

    // `k8shell login`: a URL and a code on stderr, then it waits.
    let mut login = k8shell(home.path(), &url)
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
    assert!(link.starts_with(&format!("{url}/device?code=")), "{link}");

    // The browser: the device page sends her through the OpenID provider and back.
    let (browser, device_page) = tokio::task::spawn_blocking({
        let (link, callback) = (link.clone(), callback.clone());
        move || {
            let mut browser = Browser::new();
            let (status, to_login) = browser.open(&link).unwrap();
            assert_eq!(status, 303, "an anonymous visit is sent to sign in");
            let back = browser
                .log_in(&to_login.unwrap(), "alice", &callback)
                .unwrap();
            let (status, page) = browser.open(&back).unwrap();
            assert_eq!(status, 303, "the callback signs in and returns");
            (browser, page.unwrap())
        }
    })
    .await
    .unwrap();
    assert!(
        device_page.starts_with(&format!("{url}/device?code={code}")),
        "{device_page}"
    );
    // What the page's button does.
    let csrf = browser.cookie("__Host-k8shell-csrf").unwrap();
    let approved = send(
        addr,
        "POST",
        "/api/v1/auth/device/approve",
        &[
            ("cookie", &browser.cookie_header()),
            ("x-csrf-token", &csrf),
            ("origin", &url),
        ],
        Some(json!({"user_code": code})),
    )
    .await;
    assert_eq!(approved.status, 200, "{}", approved.text());
    let finished = tokio::task::spawn_blocking(move || login.wait_with_output().unwrap())
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&finished.stdout);
    assert!(finished.status.success(), "{said}");
    assert!(
        said.contains(&format!("signed in to {url} as alice")),
        "{said}"
    );
    let credentials = home.path().join(".config/k8shell/credentials");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&credentials)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let whoami: serde_json::Value = serde_json::from_str(&ok(
        k8shell(home.path(), &url).args(["whoami", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(whoami["user"]["username"], "alice");

    // Her key, and a workspace from a blueprint file (the command waits until it runs).
    let key = platform.keys.keygen("alice").unwrap();
    let public = PathBuf::from(format!("{}.pub", key.display()));
    ok(k8shell(home.path(), &url)
        .args(["keys", "add"])
        .arg(&public));
    let listed = ok(k8shell(home.path(), &url).args(["keys", "ls"]));
    assert!(
        listed.contains("ssh-ed25519") && listed.contains("alice"),
        "{listed}"
    );
    let blueprint = home.path().join("web.ncl");
    std::fs::write(&blueprint, platform.blueprint("")).unwrap();
    let created = ok(k8shell(home.path(), &url)
        .args(["ws", "create", "web", "--file"])
        .arg(&blueprint));
    assert!(created.contains("running"), "{created}");
    let table = ok(k8shell(home.path(), &url).args(["ws", "ls"]));
    assert!(
        table.starts_with("NAME") && table.contains("web") && table.contains("running"),
        "{table}"
    );

    // config-ssh writes a marked block and leaves her own lines alone.
    let config = home.path().join("ssh_config");
    std::fs::write(&config, "Host mine\n  HostName example.org\n").unwrap();
    ok(k8shell(home.path(), &url)
        .args(["config-ssh", "--ssh-config"])
        .arg(&config));
    ok(k8shell(home.path(), &url)
        .args(["config-ssh", "--ssh-config"])
        .arg(&config));
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.starts_with("Host mine\n  HostName example.org\n"),
        "{written}"
    );
    assert_eq!(written.matches("Host web.k8shell").count(), 1, "{written}");

    // Plain ssh with that config (and her key and the proxy's host key).
    let (ssh_addr, host_key) = platform.ssh.clone().unwrap();
    let known = home.path().join("known_hosts");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {host_key}\n", ssh_addr.port()),
    )
    .unwrap();
    let typed = tokio::task::spawn_blocking({
        let (config, known, key) = (config.clone(), known.clone(), key.clone());
        move || {
            let mut ssh = Command::new("ssh")
                .arg("-F")
                .arg(&config)
                .arg("-i")
                .arg(&key)
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known.display()))
                .args([
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-tt",
                    "web.k8shell",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            let mut stdin = ssh.stdin.take().unwrap();
            stdin.write_all(b"echo typed-$((6*7))\nexit\n").unwrap();
            drop(stdin);
            ssh.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    let screen = String::from_utf8_lossy(&typed.stdout);
    assert!(
        screen.contains("typed-42"),
        "{screen}\n{}",
        String::from_utf8_lossy(&typed.stderr)
    );

    // The session is listed, and its replay shows what she typed.
    let session = k8shell_testkit::poll_until("the ssh session's recording to be stored", || {
        let (home, url) = (home.path().to_owned(), url.clone());
        async move {
            let listed: serde_json::Value = serde_json::from_str(&ok(
                k8shell(&home, &url).args(["sessions", "ls", "-o", "json"])
            ))
            .ok()?;
            let session = listed
                .as_array()?
                .iter()
                .find(|s| s["kind"] == "ssh" && s["live"] == false)?
                .clone();
            let id = session["id"].as_str()?.to_owned();
            let shown: serde_json::Value = serde_json::from_str(&ok(
                k8shell(&home, &url).args(["sessions", "show", &id, "-o", "json"])
            ))
            .ok()?;
            shown["recordings"]
                .as_array()?
                .iter()
                .any(|r| r["complete"] == true)
                .then_some(id)
        }
    })
    .await;
    let replayed =
        ok(k8shell(home.path(), &url).args(["sessions", "replay", &session, "--speed", "100"]));
    assert!(replayed.contains("typed-42"), "{replayed}");

    // `login --ssh`: the administrator with a key file, alice through ssh-agent.
    let admin_home = tempfile::tempdir().unwrap();
    ok(k8shell(admin_home.path(), &url)
        .args(["login", "--user", crate::platform::ADMIN, "--ssh"])
        .arg(platform.keys.dir().join("admin")));
    let admin: serde_json::Value = serde_json::from_str(&ok(
        k8shell(admin_home.path(), &url).args(["whoami", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(admin["user"]["username"], crate::platform::ADMIN);
    let users = ok(k8shell(admin_home.path(), &url).args(["admin", "users", "ls"]));
    assert!(users.contains("alice"), "{users}");
    let socket = home.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    k8shell_testkit::poll_until("ssh-agent to listen", || {
        let socket = socket.clone();
        async move { socket.exists().then_some(()) }
    })
    .await;
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let agent_home = tempfile::tempdir().unwrap();
    let signed = ok(k8shell(agent_home.path(), &url)
        .env("SSH_AUTH_SOCK", &socket)
        .args(["login", "--ssh", "--user", "alice"]));
    assert!(signed.contains("as alice"), "{signed}");
    let _ = agent.kill();
    let _ = agent.wait();

    // Errors say what to do next.
    let missing = k8shell(home.path(), &url)
        .args(["ws", "info", "nope"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(
        message.contains("no workspace \"nope\"") && message.contains("web"),
        "{message}"
    );
    // Stop and start, each waited for.
    let stopped = ok(k8shell(home.path(), &url).args(["ws", "stop", "web"]));
    assert!(stopped.contains("stopped"), "{stopped}");
    let started = ok(k8shell(home.path(), &url).args(["ws", "start", "web", "-o", "json"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&started).unwrap()["state"],
        "running"
    );

    // A token for automation works as K8SHELL_TOKEN until it is revoked.
    let made: serde_json::Value = serde_json::from_str(&ok(
        k8shell(home.path(), &url).args(["tokens", "create", "ci", "-o", "json"])
    ))
    .unwrap();
    let secret = made["secret"].as_str().unwrap();
    let robot = tempfile::tempdir().unwrap();
    let as_robot = ok(k8shell(robot.path(), &url)
        .env("K8SHELL_TOKEN", secret)
        .arg("whoami"));
    assert!(as_robot.contains("alice"), "{as_robot}");
    let listed = ok(k8shell(home.path(), &url).args(["tokens", "ls"]));
    assert!(
        listed.contains("ci") && listed.contains("active") && !listed.contains(secret),
        "{listed}"
    );
    ok(k8shell(home.path(), &url).args([
        "tokens",
        "revoke",
        made["token"]["id"].as_str().unwrap(),
    ]));
    let refused = k8shell(robot.path(), &url)
        .env("K8SHELL_TOKEN", secret)
        .arg("whoami")
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // Deleting asks first, then leaves nothing.
    let unconfirmed = k8shell(home.path(), &url)
        .args(["ws", "rm", "web"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    let deleted = ok(k8shell(home.path(), &url).args(["ws", "rm", "web", "--yes"]));
    assert!(deleted.contains("deleted web"), "{deleted}");
    let none: serde_json::Value = serde_json::from_str(&ok(
        k8shell(home.path(), &url).args(["ws", "ls", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(none, serde_json::json!([]));

    ok(k8shell(home.path(), &url).arg("logout"));
    let signed_out = k8shell(home.path(), &url).arg("whoami").output().unwrap();
    assert!(String::from_utf8_lossy(&signed_out.stderr).contains("k8shell login"));
}
