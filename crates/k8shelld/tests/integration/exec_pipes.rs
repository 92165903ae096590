//! Exec without a PTY: separate streams, stdin EOF, exit codes, the workspace user.

use k8shell_proto::k8shelld::v1::exec_input;

use crate::harness::{Daemon, Ended, Exec, run, start};

#[tokio::test]
async fn stdout_and_stderr_stay_separate_and_the_code_comes_back() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let (out, err, ended) = run(&mut client, "echo out; echo err >&2; exit 7").await;
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(ended, Ended::Code(7));
}

#[tokio::test]
async fn commands_run_as_the_workspace_user_in_a_login_environment() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let (out, _, ended) = run(
        &mut client,
        "id -u; id -g; id -G; echo \"$HOME|$USER|$LOGNAME|$SHELL\"; pwd; echo \"$PATH\"",
    )
    .await;
    assert_eq!(ended, Ended::Code(0));
    let lines: Vec<&str> = out.lines().collect();
    let user = &daemon.user;
    assert_eq!(lines[0], user.uid.to_string(), "uid");
    assert_eq!(lines[1], user.gid.to_string(), "gid");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            lines[2],
            format!("{} {}", user.gid, user.extra_gid),
            "groups"
        );
    }
    let home = user.home.display().to_string();
    assert_eq!(lines[3], format!("{home}|{0}|{0}|/bin/sh", user.name));
    assert_eq!(lines[4], home, "starts in the home directory");
    assert!(
        !lines[5].contains("sbin"),
        "a user's PATH has no sbin: {}",
        lines[5]
    );
}

#[tokio::test]
async fn stdin_reaches_the_process_and_eof_ends_it() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(&mut client, start("wc -c")).await.unwrap();
    let chunk = vec![b'x'; 10_000];
    for _ in 0..10 {
        exec.send(exec_input::Input::Stdin(chunk.clone())).await;
    }
    exec.send(exec_input::Input::StdinEof(Default::default()))
        .await;
    assert_eq!(exec.wait().await, Ended::Code(0));
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "100000");
}

#[tokio::test]
async fn env_and_working_directory_are_honoured() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut request = start("echo \"$GREETING\"; pwd");
    request.env.insert("GREETING".into(), "hello there".into());
    request.working_dir = "/tmp".into();
    let mut exec = Exec::open(&mut client, request).await.unwrap();
    exec.send(exec_input::Input::StdinEof(Default::default()))
        .await;
    assert_eq!(exec.wait().await, Ended::Code(0));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "hello there\n/tmp\n");
}

#[tokio::test]
async fn a_signal_reaches_the_command() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(&mut client, start("echo ready; sleep 100"))
        .await
        .unwrap();
    exec.read_until("ready\n").await;
    exec.send(exec_input::Input::Signal("TERM".into())).await;
    assert_eq!(exec.wait().await, Ended::Signal("TERM".into()));
}

#[tokio::test]
async fn the_login_shell_reads_commands_from_stdin() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut exec = Exec::open(&mut client, start("")).await.unwrap();
    exec.type_text("echo from-login-shell; exit 4\n").await;
    assert_eq!(exec.wait().await, Ended::Code(4));
    assert!(String::from_utf8_lossy(&exec.stdout).contains("from-login-shell"));
}

#[tokio::test]
async fn a_missing_working_directory_is_an_error_not_a_fallback() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let mut request = start("pwd");
    request.working_dir = "/nonexistent/dir".into();
    let status = Exec::open(&mut client, request)
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("/nonexistent/dir"), "{status:?}");
}

#[tokio::test]
async fn a_terminal_is_not_inherited_by_other_sessions() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let count = "ls /proc/self/fd | wc -l";
    let (before, _, _) = run(&mut client, count).await;
    let mut shell = Exec::open(
        &mut client,
        crate::harness::with_pty(start("echo ready; exec sleep 100"), 80, 24),
    )
    .await
    .unwrap();
    shell.read_until("ready").await;
    // A session started while another's terminal is open gets no descriptor of it.
    let (during, _, _) = run(&mut client, count).await;
    assert_eq!(
        during, before,
        "descriptors of a session started while a PTY is open"
    );
}

#[tokio::test]
async fn a_bad_first_message_is_refused() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let stream = futures_util::stream::iter(vec![crate::harness::input(exec_input::Input::Stdin(
        b"x".to_vec(),
    ))]);
    let status = client.exec(stream).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("`start`"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_writer_back() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    const TOTAL: usize = 256 << 20;
    let mut exec = Exec::open(
        &mut client,
        start(&format!("exec head -c {TOTAL} /dev/zero")),
    )
    .await
    .unwrap();
    // We read nothing: the producer must end up blocked writing into its pipe, not buffered
    // away into memory.
    let wchan = format!("/proc/{}/wchan", exec.pid);
    let mut polls = 0;
    loop {
        let state = std::fs::read_to_string(&wchan).unwrap_or_default();
        if state.contains("pipe_write") {
            break;
        }
        polls += 1;
        assert!(polls < 3000, "the producer never blocked (wchan {state:?})");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut received = 0;
    loop {
        match exec.output.message().await.unwrap().unwrap().output {
            Some(k8shell_proto::k8shelld::v1::exec_output::Output::Stdout(bytes)) => {
                received += bytes.len()
            }
            Some(k8shell_proto::k8shelld::v1::exec_output::Output::Exit(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, TOTAL, "everything arrives once the reader reads");
}

#[tokio::test]
async fn a_background_process_holding_the_output_does_not_hold_the_exec() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    // sshd would wait for the background job; k8shelld waits `kill_grace` (2 s here) at most.
    let (out, _, ended) = run(&mut client, "sleep 60 & echo started").await;
    assert_eq!((out.as_str(), ended), ("started\n", Ended::Code(0)));
}
