//! `ssh host command`: output, exit statuses, stderr kept apart, stdin piped through, and the
//! session that records it all.

use std::path::Path;

use crate::platform::Platform;
use crate::support::{noise_file, ok, run, run_with_input, sha256, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_the_users_workspace_with_their_exit_status() {
    let platform = Platform::with_alice().await;
    let ssh = |command: &str| {
        let mut ssh = platform.client.ssh("alice", "alice").unwrap();
        ssh.arg(command);
        ssh
    };

    // The first login starts the stopped workspace.
    let output = run(ssh("echo hi; id -un; hostname")).await;
    assert_eq!(ok(&output), "hi\ndev\ndefault\n");

    let output = run(ssh("echo out; echo err >&2; exit 3")).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "out\n");
    assert_eq!(text(&output.stderr), "err\n");

    // Only allowed environment variables pass (LANG, LC_*, TERM, COLORTERM, configured names).
    let mut env = platform
        .client
        .ssh_with(
            "alice",
            "alice",
            &["-o", "SetEnv=LC_PROBE=passed LD_PRELOAD=/tmp/evil.so"],
        )
        .unwrap();
    env.arg("echo \"$LC_PROBE|$LD_PRELOAD|\"");
    assert_eq!(ok(&run(env).await), "passed||\n");

    // The same workspace by name.
    let mut named = platform.client.ssh("alice", "alice+default").unwrap();
    named.arg("cat /etc/motd");
    assert_eq!(ok(&run(named).await), "busybox workspace\n");

    // 100 MiB through stdin and back out, and into a checksum inside.
    let file = platform.dir.path().join("noise");
    noise_file(&file, 100 * 1024 * 1024);
    let expected = sha256(&file);
    let output = run_with_input(ssh("sha256sum"), &file).await;
    assert_eq!(ok(&output).split_whitespace().next().unwrap(), expected);
    let output = run_with_input(ssh("cat"), &file).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(output.stdout.len(), 100 * 1024 * 1024);
    assert!(
        output.stdout == std::fs::read(&file).unwrap(),
        "cat changed the bytes"
    );

    // Every command was a session with the client's address and its command line.
    let sessions = platform.sessions_of("alice", None).await;
    assert_eq!(sessions.len(), 6, "{sessions:?}");
    assert!(
        sessions
            .iter()
            .all(|s| s.client_addr.starts_with("127.0.0.1:"))
    );
    assert!(
        sessions
            .iter()
            .all(|s| s.client_version.starts_with("SSH-2.0-OpenSSH"))
    );
    let first = sessions.last().unwrap();
    let details = platform
        .session_when(
            "the first session to be closed with its timeline",
            &first.id,
            |got| {
                let closed = got.session.as_ref()?.ended_at.is_some();
                (closed && got.timeline.iter().any(|e| e.kind == "exit")).then_some(got)
            },
        )
        .await;
    let exec = details.timeline.iter().find(|e| e.kind == "exec").unwrap();
    assert!(
        exec.data_json.contains("echo hi; id -un; hostname"),
        "{}",
        exec.data_json
    );
    assert_eq!(
        details.session.unwrap().end_reason,
        "the client disconnected"
    );

    // The binary, configured by a file, serves the same.
    let mut platform = platform;
    let _binary = platform
        .run_proxy_binary(Path::new(env!("CARGO_BIN_EXE_k8shell-ssh-proxy")))
        .await;
    let mut ssh = platform.client.ssh("alice", "alice").unwrap();
    ssh.arg("echo from-the-binary");
    assert_eq!(ok(&run(ssh).await), "from-the-binary\n");
}
