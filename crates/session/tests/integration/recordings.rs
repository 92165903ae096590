//! Recordings: byte-for-byte round trip of a real PTY session, asciinema reading the export,
//! seeking that reads only the chunks it needs, the live view, input off by default.

use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8shell_proto::session::v1 as pb;
use k8shell_session::RecordingKind;
use k8shell_session::asciicast::{Code, Header};
use uuid::Uuid;

use crate::harness::{Harness, export, new_session};

/// The `o` data of an asciicast file, joined, and its resize events.
fn replay(cast: &[u8]) -> (String, Vec<String>) {
    let text = std::str::from_utf8(cast).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    let (mut output, mut resizes) = (String::new(), Vec::new());
    for line in lines {
        let (_, code, data): (f64, String, String) = serde_json::from_str(line).unwrap();
        match code.as_str() {
            "o" => output.push_str(&data),
            "r" => resizes.push(data),
            other => panic!("unexpected event code {other}"),
        }
    }
    (output, resizes)
}

/// Runs `script` in `sh` on a new pseudo-terminal and returns everything the terminal showed,
/// read by `on_output` as it came.
fn run_on_pty(script: &str, mut on_output: impl FnMut(&[u8])) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => on_output(&buf[..n]),
            // EIO: the last process holding the terminal exited.
            Err(e) if e.raw_os_error() == Some(libc_eio()) => break,
            Err(e) => panic!("reading the pty: {e}"),
        }
    }
    assert!(child.wait().unwrap().success());
}

fn libc_eio() -> i32 {
    nix::errno::Errno::EIO as i32
}

#[tokio::test]
async fn a_pty_session_reads_back_byte_for_byte_and_asciinema_plays_it() {
    let asciinema = k8shell_testkit::require("asciinema", "asciinema", &[]).unwrap();
    let harness = Harness::start().await;
    let spool = harness.spool("spool");
    let client = harness.proxy_client(&spool).await;
    let session = client.open(new_session("alice", "dev")).await.unwrap();
    let id = session.id();
    let mut header = Header::new(80, 24);
    header.env.insert("TERM".into(), "xterm-256color".into());
    let mut recording = session.record(1, RecordingKind::Pty, &header).unwrap();
    let mut shown = Vec::new();
    run_on_pty(
        r#"printf 'hello\n'; printf '\033[1mbold\033[0m "quoted" back\\slash\n'; echo k8shell-recorded; printf 'caf\303\251 \342\202\254\n'; ls /"#,
        |bytes| {
            shown.extend_from_slice(bytes);
            recording.output(bytes).unwrap();
        },
    );
    recording.resize(120, 40).unwrap();
    recording.output(b"after resize\r\n").unwrap();

    // The spool file as written; the upload keeps it until the recording is complete.
    let spooled = spool
        .join(id.to_string())
        .join(format!("{}.cast", recording.id()));
    let written = std::fs::read(&spooled).unwrap();
    assert_eq!(written.len() as u64, recording.written_bytes());
    let recording_id = recording.id();
    recording.finish().unwrap();
    session.close("done").unwrap().flushed().await;

    let exported = export(&client, recording_id).await;
    assert_eq!(
        exported, written,
        "the export is the file the proxy wrote, byte for byte"
    );
    let (output, resizes) = replay(&exported);
    shown.extend_from_slice(b"after resize\r\n");
    assert_eq!(output.as_bytes(), shown, "every byte the terminal showed");
    assert_eq!(resizes, ["120x40"]);

    let got = harness.get(id).await;
    let stored = &got.recordings[0];
    assert!(stored.complete);
    assert_eq!((stored.channel, stored.kind.as_str()), (1, "pty"));
    assert_eq!(stored.stored_bytes, written.len() as u64);
    assert!(stored.header_json.contains("xterm-256color"));

    let file = harness.dir.path().join("export.cast");
    std::fs::write(&file, &exported).unwrap();
    // asciinema 2.2 insists on a terminal (/dev/tty): give it one with script(1).
    let script = k8shell_testkit::require("script", "bsdutils", &[]).unwrap();
    let command = format!("{} cat {}", asciinema.display(), file.display());
    let played = Command::new(script)
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        played.status.success(),
        "{}",
        String::from_utf8_lossy(&played.stderr)
    );
    let played = String::from_utf8_lossy(&played.stdout);
    assert!(played.contains("k8shell-recorded"), "{played}");
    assert!(played.contains("café €"), "{played}");
}

#[tokio::test]
async fn seeking_to_minute_50_of_an_hour_reads_only_the_chunks_from_there() {
    // Chunks cut by session time only (not by a pause of the upload).
    let harness =
        Harness::start_with(|config| config.recordings.flush_after = Duration::from_secs(3600))
            .await;
    let client = harness.proxy_client(&harness.spool("spool")).await;
    let session = client.open(new_session("bob", "dev")).await.unwrap();
    let id = session.id();
    let mut recording = session
        .record(1, RecordingKind::Pty, &Header::new(80, 24))
        .unwrap();
    for second in 0..3600u64 {
        let line = format!("second {second}: some output of a long build\r\n");
        recording
            .event_at(Duration::from_secs(second), Code::Output, line.as_bytes())
            .unwrap();
    }
    let recording_id = recording.id();
    recording.finish().unwrap();
    session.close("done").unwrap().flushed().await;
    let stored = harness.get(id).await.recordings.remove(0);
    // Chunks of 5 s of session time: 720 for the hour, 120 from minute 50 on.
    assert_eq!(stored.chunks, 720);
    assert!((stored.duration - 3599.0).abs() < 1e-6);

    harness.store.gets.store(0, Ordering::SeqCst);
    let mut from_50 = Vec::new();
    client
        .read(recording_id, 3000.0, &mut from_50)
        .await
        .unwrap();
    assert_eq!(
        harness.store.gets.load(Ordering::SeqCst),
        120,
        "only the chunks after the seek point"
    );
    let text = String::from_utf8(from_50).unwrap();
    let mut lines = text.lines();
    assert!(
        lines.next().unwrap().starts_with("{\"version\":2"),
        "the header comes first"
    );
    let events: Vec<&str> = lines.collect();
    assert_eq!(events.len(), 600);
    assert!(
        events[0].starts_with("[3000.000000, \"o\", \"second 3000:"),
        "{}",
        events[0]
    );
    assert!(events[599].contains("second 3599:"));

    harness.store.gets.store(0, Ordering::SeqCst);
    let mut near_end = Vec::new();
    client
        .read(recording_id, 3597.5, &mut near_end)
        .await
        .unwrap();
    assert_eq!(harness.store.gets.load(Ordering::SeqCst), 1);
    assert_eq!(String::from_utf8(near_end).unwrap().lines().count(), 1 + 2);
}

#[tokio::test]
async fn the_live_view_shows_recent_output_then_follows() {
    let harness = Harness::start().await;
    let client = harness.proxy_client(&harness.spool("spool")).await;
    let session = client.open(new_session("carol", "dev")).await.unwrap();
    let id = session.id();
    let mut recording = session
        .record(3, RecordingKind::Pty, &Header::new(100, 30))
        .unwrap();
    recording.output(b"before-watch\r\n").unwrap();
    // The upload has delivered the first output.
    k8shell_testkit::poll_until("the first output to arrive", || async {
        (harness.get(id).await.recordings.first()?.stored_bytes > 0).then_some(())
    })
    .await;
    let mut watch = harness
        .grpc_as("api")
        .watch(pb::WatchRequest {
            session_id: Some(id.into()),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = String::new();
    while !seen.contains("before-watch") {
        let frame = watch.message().await.unwrap().unwrap();
        assert_eq!(frame.channel, 3);
        seen.push_str(std::str::from_utf8(&frame.data).unwrap());
    }
    assert!(
        seen.starts_with("{\"version\":2,\"width\":100,\"height\":30"),
        "{seen}"
    );
    recording.output(b"after-watch\r\n").unwrap();
    let mut live = String::new();
    while !live.contains("after-watch") {
        let frame = watch.message().await.unwrap().unwrap();
        live.push_str(std::str::from_utf8(&frame.data).unwrap());
    }
    recording.finish().unwrap();
    session.close("done").unwrap().flushed().await;
    // The viewer sees the end of the session.
    while watch.message().await.unwrap().is_some() {}
    let ended = harness
        .grpc_as("api")
        .watch(pb::WatchRequest {
            session_id: Some(id.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::FailedPrecondition);
    assert!(ended.message().contains("Read"), "{}", ended.message());
}

#[tokio::test]
async fn typed_input_is_recorded_only_when_enabled() {
    let harness = Harness::start().await;
    let off = harness.proxy_client(&harness.spool("off")).await;
    let mut config = k8shell_session::ClientConfig::new(harness.spool("on"));
    config.record_input = true;
    let on = k8shell_session::Client::new(harness.channel_as("ssh-proxy"), None, config).unwrap();
    let mut results = Vec::new();
    for client in [&off, &on] {
        let session = client.open(new_session("dave", "dev")).await.unwrap();
        let mut recording = session
            .record(1, RecordingKind::Pty, &Header::new(80, 24))
            .unwrap();
        recording.output(b"Password: ").unwrap();
        recording.input(b"hunter2\r").unwrap();
        recording.output(b"\r\nwelcome\r\n").unwrap();
        let recording_id: Uuid = recording.id();
        recording.finish().unwrap();
        session.close("done").unwrap().flushed().await;
        results.push(String::from_utf8(export(client, recording_id).await).unwrap());
    }
    assert!(
        !results[0].contains("hunter2") && results[0].contains("welcome"),
        "{}",
        results[0]
    );
    assert!(
        results[1].contains("[") && results[1].contains("\"i\", \"hunter2\\r\""),
        "{}",
        results[1]
    );
}
