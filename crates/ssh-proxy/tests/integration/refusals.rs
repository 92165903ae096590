//! Who is kept out, what they are told, and the `k8shell.auth.failure` event each refusal
//! publishes for the SSH shield.

use std::time::Duration;

use k8shell_proto::identity::v1 as idpb;

use crate::platform::Platform;
use crate::support::{run, text};

async fn next_failure(events: &mut async_nats::Subscriber) -> serde_json::Value {
    use futures_util::StreamExt as _;
    let message = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("no auth failure event")
        .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_wrong_keys_suspended_users_and_other_peoples_workspaces_are_refused() {
    let platform = Platform::start_with(|config| {
        config.auth.login_grace = Duration::from_secs(5);
    })
    .await;
    for user in ["alice", "bob", "carol"] {
        platform.add_user(user).await;
    }
    platform.create_workspace("alice", "default", "").await;
    platform.create_workspace("bob", "private", "").await;
    let mut failures = platform.auth_failures().await;

    // bob's key for alice, and a user who does not exist: the same refusal.
    for (key, user) in [("bob", "alice"), ("alice", "nobody")] {
        let mut ssh = platform.client.ssh(key, user).unwrap();
        ssh.arg("true");
        let output = run(ssh).await;
        assert_eq!(output.status.code(), Some(255));
        assert!(
            text(&output.stderr).contains("Permission denied"),
            "{}",
            text(&output.stderr)
        );
        let event = next_failure(&mut failures).await;
        assert_eq!(event["ip"], "127.0.0.1");
        assert_eq!(event["user"], user);
        assert_eq!(event["method"], "publickey");
        assert!(event["port"].as_u64().unwrap() > 0, "{event}");
        assert!(
            event["reason"]
                .as_str()
                .unwrap()
                .contains("no such user and key"),
            "{event}"
        );
    }

    // A suspended user's key no longer opens anything.
    platform
        .set_state("carol", idpb::UserState::Suspended)
        .await;
    let mut ssh = platform.client.ssh("carol", "carol").unwrap();
    ssh.arg("true");
    assert_eq!(run(ssh).await.status.code(), Some(255));
    assert_eq!(next_failure(&mut failures).await["user"], "carol");

    // alice asks for bob's workspace: told on stderr, exit status 1, the denial logged.
    let mut ssh = platform.client.ssh("alice", "alice+bob/private").unwrap();
    ssh.arg("id");
    let output = run(ssh).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).is_empty());
    assert_eq!(
        text(&output.stderr),
        "k8shell: you cannot enter bob/private: it does not exist or is not yours\r\n"
    );
    let logged = platform
        .pg
        .psql(
            "k8shell",
            "SELECT allow, reasons[1] FROM authz.decisions WHERE domain = 'ssh' AND input->'workspace'->>'owner' = 'bob'",
        )
        .unwrap();
    assert!(logged.contains("alice may not enter workspace"), "{logged}");
    assert!(logged.starts_with('f'), "{logged}");

    // A workspace that does not exist: her own names are listed.
    let mut ssh = platform.client.ssh("alice", "alice+nope").unwrap();
    ssh.arg("id");
    let output = run(ssh).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "k8shell: you have no workspace named \"nope\" (yours: default)\r\n"
    );

    // Too many attempts: the connection is dropped, and the last event says so.
    let keys: Vec<String> = (0..8).map(|n| format!("stranger{n}")).collect();
    let mut ssh = platform.client.ssh("stranger-first", "alice").unwrap();
    for key in &keys {
        ssh.arg("-i").arg(platform.client.keygen(key).unwrap());
    }
    ssh.arg("true");
    let output = run(ssh).await;
    assert_eq!(output.status.code(), Some(255));
    assert!(
        text(&output.stderr).contains("Too many authentication attempts"),
        "{}",
        text(&output.stderr)
    );
    let mut last = serde_json::Value::Null;
    for _ in 0..5 {
        last = next_failure(&mut failures).await;
    }
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("too many attempts"),
        "{last}"
    );

    // A connection that never logs in is cut at the end of the login grace time.
    let mut idle = tokio::net::TcpStream::connect(platform.proxy_config.listen)
        .await
        .unwrap();
    let mut banner = Vec::new();
    use tokio::io::AsyncReadExt as _;
    let closed = tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut banner)).await;
    assert!(closed.is_ok(), "the idle connection was not cut");
    assert!(
        text(&banner).starts_with("SSH-2.0-k8shell"),
        "{}",
        text(&banner)
    );
    let event = next_failure(&mut failures).await;
    assert!(
        event["reason"].as_str().unwrap().contains("login grace"),
        "{event}"
    );
}
