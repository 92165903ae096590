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
