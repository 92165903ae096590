//! Interactive sessions through a real terminal: the start of a stopped workspace shown with
//! progress, the prompt, resize, Ctrl-C, the recording of it all; termination by an
//! administrator; and the device login shown on the terminal.

use k8shell_proto::identity::v1 as idpb;
use k8shell_proto::session::v1 as spb;
use k8shell_testkit::Terminal;

use crate::platform::{ADMIN, Platform, by_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_session_is_interactive_and_recorded() {
    let platform = Platform::with_alice().await;

    let ssh = platform
        .client
        .ssh_with("alice", "alice", &["-tt"])
        .unwrap();
    let mut terminal = Terminal::spawn(ssh, 80, 24).unwrap();
    // The workspace was stopped: the login starts it and says so.
    terminal
        .expect("k8shell: starting workspace alice/default…")
        .await
        .unwrap();
    terminal.expect(" ready (").await.unwrap();
    terminal.expect("$ ").await.unwrap();
    terminal.send("echo typed-$((6*7))\r").unwrap();
    terminal.expect("typed-42").await.unwrap();

    terminal.resize(100, 30).unwrap();
    terminal.send("stty size\r").unwrap();
    terminal.expect("30 100").await.unwrap();

    // Ctrl-C must reach the sleeping command, not the shell between reading the line and
    // giving the terminal to the command: the child prints once it is in the foreground.
    terminal
        .send("sh -c 'echo sleeping-$((2+3)); exec sleep 600'; echo slept\r")
        .unwrap();
    terminal.expect("sleeping-5").await.unwrap();
    terminal.send("\x03").unwrap();
    terminal.send("echo after-interrupt\r").unwrap();
    let shown = terminal.expect("after-interrupt\r\n").await.unwrap();
    assert!(
        !shown.contains("\nslept"),
        "the interrupted line went on: {shown}"
    );
    terminal.send("exit 7\r").unwrap();
    assert_eq!(terminal.wait().await.unwrap().code(), Some(7));

    // The recording holds what the screen showed.
    let listed = platform.sessions_of("alice", None).await;
    let recording = platform
        .session_when(
            "the terminal recording to be uploaded",
            &listed[0].id,
            |got| {
                got.recordings
                    .into_iter()
                    .find(|r| r.complete && r.kind == "pty")
            },
        )
        .await;
    let mut sessions = platform.sessions();
    let mut stream = sessions
        .read(spb::ReadRequest {
            recording_id: recording.id,
            from_time: 0.0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut cast = Vec::new();
    while let Some(part) = stream.message().await.unwrap() {
        cast.extend(part.data);
    }
    let cast = String::from_utf8(cast).unwrap();
    let header: serde_json::Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert!(cast.contains("typed-42"), "{cast}");
    assert!(
        cast.contains(r#""r", "100x30""#),
        "the resize is not recorded: {cast}"
    );
    assert!(cast.contains("after-interrupt"), "{cast}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_ends_a_session_and_the_user_is_told() {
    let platform = Platform::with_alice().await;
    let mut terminal = shell(&platform).await;

    let live = platform.sessions_of("alice", Some(true)).await;
    let id = live[0].id.clone();
    let mut sessions = platform.sessions();
    let answer = sessions
        .terminate(spb::TerminateRequest {
            id: id.clone(),
            reason: "maintenance".to_owned(),
            requested_by: ADMIN.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.delivered,
        "the proxy did not acknowledge the request"
    );
    terminal
        .expect(&format!("terminated by {ADMIN}: maintenance"))
        .await
        .unwrap();
    assert_eq!(terminal.wait().await.unwrap().code(), Some(255));
    let ended = platform
        .session_when("the session to be closed", &id, |got| {
            got.session.filter(|s| s.ended_at.is_some())
        })
        .await;
    assert_eq!(
        ended.end_reason,
        format!("terminated by {ADMIN}: maintenance")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_confirmed_in_the_browser_lets_a_user_without_a_key_in() {
    let platform = Platform::with_alice().await;
    // OpenSSH shows keyboard-interactive instructions at log level INFO, on the terminal.
    let ssh = platform
        .client
        .ssh_with(
            "alice",
            "alice",
            &[
                "-tt",
                "-o",
                "BatchMode=no",
                "-o",
                "PreferredAuthentications=keyboard-interactive",
                "-o",
                "LogLevel=INFO",
            ],
        )
        .unwrap();
    let mut terminal = Terminal::spawn(ssh, 80, 24).unwrap();
    let shown = terminal.expect(" and confirm the code ").await.unwrap();
    assert!(
        shown.contains("https://console.k8shell.test/device"),
        "{shown}"
    );
    let code: String = terminal
        .expect(".")
        .await
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    // Confirmed in the browser (the api-server calls this for the signed-in user).
    platform
        .identity()
        .approve_device_login(idpb::ApproveDeviceLoginRequest {
            user_code: code.clone(),
            user: by_name("alice"),
            approve: true,
        })
        .await
        .unwrap_or_else(|e| panic!("approving {code:?}: {e}"));
    terminal.expect("$ ").await.unwrap();
    terminal.send("id -un\r").unwrap();
    terminal.expect("dev").await.unwrap();
    terminal.send("exit\r").unwrap();
    assert_eq!(terminal.wait().await.unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_lets_sessions_finish_within_the_drain_time_then_ends_them() {
    let mut platform = Platform::with_alice().await;
    let mut finishing = shell(&platform).await;
    let mut lingering = shell(&platform).await;

    let stop = tokio::spawn(async move {
        platform.stop_proxy().await;
        platform
    });
    for terminal in [&mut finishing, &mut lingering] {
        terminal
            .expect("the proxy is shutting down; this connection ends within 5 s")
            .await
            .unwrap();
    }
    // The session goes on while the proxy drains, and ends as its user wishes.
    finishing.send("echo still-here\r").unwrap();
    finishing.expect("still-here\r\n").await.unwrap();
    finishing.send("exit\r").unwrap();
    assert_eq!(finishing.wait().await.unwrap().code(), Some(0));
    // The other one is ended at the deadline, with a reason.
    assert_eq!(lingering.wait().await.unwrap().code(), Some(255));
    lingering.expect("the proxy shut down").await.unwrap();
    let platform = stop.await.unwrap();

    // Both sessions reach the session service closed, each with its reason.
    k8shell_testkit::poll_until("both sessions to be closed with their reasons", || async {
        let listed = platform.sessions_of("alice", None).await;
        let reasons: Vec<&str> = listed.iter().map(|s| s.end_reason.as_str()).collect();
        (reasons.contains(&"the proxy shut down") && reasons.contains(&"the client disconnected"))
            .then_some(())
    })
    .await;
}

/// alice's shell on a terminal, at its prompt.
async fn shell(platform: &Platform) -> Terminal {
    let ssh = platform
        .client
        .ssh_with("alice", "alice", &["-tt"])
        .unwrap();
    let mut terminal = Terminal::spawn(ssh, 80, 24).unwrap();
    terminal.expect("$ ").await.unwrap();
    terminal
}
