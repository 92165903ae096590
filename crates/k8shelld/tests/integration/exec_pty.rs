//! Exec on a PTY: an interactive shell, window size, signals, Ctrl-C, drained output.

use k8shell_proto::k8shelld::v1::{WindowSize, exec_input};

use crate::harness::{Daemon, Ended, Exec, start, with_pty};

#[tokio::test]
async fn an_interactive_shell_session() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut shell = Exec::open(&mut client, with_pty(start(""), 80, 24))
        .await
        .unwrap();
    shell.read_until("$ ").await;
    shell.type_text("echo hello-$((40 + 2))\n").await;
    shell.read_until("hello-42").await;
    shell.type_text("stty size; tty\n").await;
    let seen = shell.read_until("/dev/pts/").await;
    assert!(seen.contains("24 80"), "initial size: {seen:?}");
    shell
        .send(exec_input::Input::Resize(WindowSize {
            cols: 132,
            rows: 43,
            ..Default::default()
        }))
        .await;
    shell.type_text("stty size\n").await;
    shell.read_until("43 132").await;
    shell.type_text("echo \"term=$TERM\"\n").await;
    shell.read_until("term=xterm").await;
    shell.type_text("exit 3\n").await;
    assert_eq!(shell.wait().await, Ended::Code(3));
    assert!(shell.stderr.is_empty(), "a PTY merges stderr into stdout");
}

#[tokio::test]
async fn resizing_sends_sigwinch_to_the_foreground_job() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let script = "trap 'echo winched; exit 0' WINCH; echo ready; while :; do sleep 0.05; done";
    let mut exec = Exec::open(&mut client, with_pty(start(script), 80, 24))
        .await
        .unwrap();
    exec.read_until("ready").await;
    exec.send(exec_input::Input::Resize(WindowSize {
        cols: 100,
        rows: 30,
        ..Default::default()
    }))
    .await;
    exec.read_until("winched").await;
    assert_eq!(exec.wait().await, Ended::Code(0));
}

#[tokio::test]
async fn a_signal_goes_to_the_foreground_process() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(
        &mut client,
        with_pty(start("echo ready; exec sleep 100"), 80, 24),
    )
    .await
    .unwrap();
    exec.read_until("ready").await;
    exec.send(exec_input::Input::Signal("INT".into())).await;
    assert_eq!(exec.wait().await, Ended::Signal("INT".into()));
}

#[tokio::test]
async fn ctrl_c_typed_as_a_byte_interrupts_like_a_terminal() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(
        &mut client,
        with_pty(start("echo ready; exec sleep 100"), 80, 24),
    )
    .await
    .unwrap();
    exec.read_until("ready").await;
    exec.type_text("\x03").await;
    assert_eq!(exec.wait().await, Ended::Signal("INT".into()));
}

#[tokio::test]
async fn output_is_drained_before_the_exit_status() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    // Much more than a PTY buffers, printed right before exiting.
    let mut exec = Exec::open(
        &mut client,
        with_pty(start("seq 1 20000; echo the-end; exit 5"), 80, 24),
    )
    .await
    .unwrap();
    assert_eq!(exec.wait().await, Ended::Code(5));
    let out = String::from_utf8_lossy(&exec.stdout);
    assert!(
        out.contains("19999\r\n20000\r\nthe-end\r\n"),
        "tail: {:?}",
        &out[out.len().saturating_sub(60)..]
    );
}

#[tokio::test]
async fn eof_on_a_pty_is_the_terminal_eof_character() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(&mut client, with_pty(start("cat; echo cat-done"), 80, 24))
        .await
        .unwrap();
    exec.type_text("line\n").await;
    exec.read_until("line\r\nline\r\n").await;
    exec.send(exec_input::Input::StdinEof(Default::default()))
        .await;
    exec.read_until("cat-done").await;
    assert_eq!(exec.wait().await, Ended::Code(0));
}

/// A network blip: the client goes away, the shell stays, and its owner takes it back with its
/// recent output and its state; nobody else can.
#[tokio::test]
async fn a_kept_terminal_outlives_its_client_and_only_its_owner_attaches() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut kept = with_pty(start(""), 80, 24);
    kept.keep_seconds = 60;
    let mut shell = Exec::open(&mut client, kept).await.unwrap();
    assert!(!shell.attach_id.is_empty(), "a kept terminal has an id");
    shell.read_until("$ ").await;
    shell
        .type_text("state=kept-$((6 * 7)); echo was-set\n")
        .await;
    shell.read_until("was-set").await;
    let id = shell.attach_id.clone();
    let pid = shell.pid;
    drop(shell);

    let bob_token = daemon.token_with(|claims| claims.sub = "bob".into());
    let mut bob = daemon.client_with_token(Some(bob_token)).await;
    let refused = Exec::attach(&mut bob, &id, 80, 24).await.err().unwrap();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let unknown = Exec::attach(&mut client, "no-such-terminal", 80, 24)
        .await
        .err()
        .unwrap();
    assert_eq!(
        unknown.message(),
        refused.message(),
        "someone else's looks like none"
    );

    let mut again = Exec::attach(&mut client, &id, 100, 30).await.unwrap();
    assert_eq!(again.pid, pid, "the same shell");
    again.read_until("was-set").await;
    again.type_text("echo \"$state\"; stty size\n").await;
    again.read_until("kept-42").await;
    again.read_until("30 100").await;
    again.type_text("exit 4\n").await;
    assert_eq!(again.wait().await, Ended::Code(4));
    let after = Exec::attach(&mut client, &id, 80, 24).await.err().unwrap();
    assert_eq!(after.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_kept_terminal_is_hung_up_when_nobody_attaches_in_time() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut kept = with_pty(start(""), 80, 24);
    kept.keep_seconds = 1;
    let mut shell = Exec::open(&mut client, kept).await.unwrap();
    shell.read_until("$ ").await;
    let (id, pid) = (shell.attach_id.clone(), shell.pid);
    drop(shell);
    hung_up(pid, "the kept shell to be hung up").await;
    let gone = Exec::attach(&mut client, &id, 80, 24).await.err().unwrap();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

/// Without `keep_seconds` nothing changes: a client that goes away hangs its shell up.
#[tokio::test]
async fn an_unkept_terminal_has_no_id_and_ends_with_its_client() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut shell = Exec::open(&mut client, with_pty(start(""), 80, 24))
        .await
        .unwrap();
    assert!(shell.attach_id.is_empty());
    shell.read_until("$ ").await;
    let pid = shell.pid;
    drop(shell);
    hung_up(pid, "the shell to be hung up").await;
}

/// Waits until process `pid` no longer exists.
async fn hung_up(pid: u32, what: &str) {
    k8shell_testkit::poll_until(what, || async move {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
}
