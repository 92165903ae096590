//! Nothing is lost and nothing duplicated when the proxy is killed or the service restarts.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use k8shell_session::RecordingKind;
use k8shell_session::asciicast::Header;
use uuid::Uuid;

use crate::harness::{Harness, export, new_session};

const CHILD_ENV: &str = "K8SHELL_TEST_SPOOL_WRITER";

/// The proxy that `a_killed_proxy_loses_nothing` starts (this test binary again, running that
/// test with `CHILD_ENV` set) and kills: it records a terminal that prints numbered lines
/// forever.
async fn spool_writer_process(settings: &str) -> ! {
    let [uri, cert, key, ca, spool]: [&str; 5] =
        settings.split('|').collect::<Vec<_>>().try_into().unwrap();
    k8shell_common::tls::install_crypto_provider();
    let tls = k8shell_common::tls::ReloadingTls::load(k8shell_common::tls::TlsFiles {
        cert_file: cert.into(),
        key_file: key.into(),
        ca_file: ca.into(),
    })
    .unwrap();
    let channel = k8shell_common::grpc::mtls_channel(uri, &tls).unwrap();
    let client =
        k8shell_session::Client::new(channel, None, k8shell_session::ClientConfig::new(spool))
            .unwrap();
    let session = client.open(new_session("killed", "dev")).await.unwrap();
    session
        .event("exec", 1, serde_json::json!({"command": "yes"}))
        .unwrap();
    let mut recording = session
        .record(1, RecordingKind::Pty, &Header::new(80, 24))
        .unwrap();
    println!("{} {}", session.id(), recording.id());
    let mut n = 0u64;
    loop {
        recording
            .output(format!("line {n} of a never-ending build log\r\n").as_bytes())
            .unwrap();
        n += 1;
        // Leave the uploader its turn.
        tokio::task::yield_now().await;
    }
}

// Two threads: this test reads the writer's output with blocking calls while the service runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_loses_nothing() {
    if let Ok(settings) = std::env::var(CHILD_ENV) {
        spool_writer_process(&settings).await;
    }
    let mut harness = Harness::start().await;
    let spool = harness.spool("spool");
    let tls = harness.tls_as("ssh-proxy");
    let files = tls.files();
    let settings = format!(
        "{}|{}|{}|{}|{}",
        crate::harness::uri(harness.addr),
        files.cert_file.display(),
        files.key_file.display(),
        files.ca_file.display(),
        spool.display()
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability::a_killed_proxy_loses_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, settings)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (session_id, recording_id) = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the writer process ended early"
        );
        let ids: Vec<Uuid> = line
            .split_whitespace()
            .filter_map(|w| Uuid::parse_str(w).ok())
            .collect();
        if let [session, recording] = ids[..] {
            break (session, recording);
        }
    };
    // Kill it in the middle of the upload: part stored, more only in its spool (the service is
    // down meanwhile, so that the spool surely holds what the service lacks).
    let stored = k8shell_testkit::poll_until("part of the recording to be stored", || async {
        let recording = harness
            .get(session_id)
            .await
            .recordings
            .into_iter()
            .next()?;
        (recording.stored_bytes > 4096).then_some(recording.stored_bytes)
    })
    .await;
    harness.stop_service().await;
    let spooled = spool
        .join(session_id.to_string())
        .join(format!("{recording_id}.cast"));
    k8shell_testkit::poll_until("the writer to spool more than the service has", || async {
        let len = std::fs::metadata(&spooled).ok()?.len();
        (len > stored + 16 * 1024).then_some(())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    harness.start_service().await;
    let mut written = std::fs::read(&spooled).unwrap();
    let whole = written.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    written.truncate(whole);
    let stored_before = harness.get(session_id).await.recordings[0].stored_bytes;
    assert!(
        stored_before < written.len() as u64,
        "the kill came before everything was uploaded"
    );

    // The proxy starts again and finishes the job.
    let client = harness.proxy_client(&spool).await;
    let report = client.resume_spooled().await.unwrap();
    assert_eq!((report.sessions, report.recordings), (1, 1));
    let exported = export(&client, recording_id).await;
    assert_eq!(exported.len(), written.len());
    assert!(
        exported == written,
        "the recording is whole: nothing lost, nothing twice"
    );
    let got = harness.get(session_id).await;
    let session = got.session.unwrap();
    assert!(session.ended_at.is_some());
    assert_eq!(
        session.end_reason,
        "the connection ended when its proxy stopped"
    );
    assert!(got.recordings[0].complete);
    assert_eq!(got.timeline.len(), 1);
    assert_eq!(got.timeline[0].kind, "exec");
    assert!(!spool.join(session_id.to_string()).exists());
}

/// What goes away in the middle of an upload.
enum Outage {
    SessionService,
    Postgres,
}

/// Records 2000 lines and a timeline event with `outage` in the middle; the recording and the
/// timeline must come out whole.
async fn upload_survives(outage: Outage) {
    let mut harness = Harness::start().await;
    let spool = harness.spool("spool");
    let client = harness.proxy_client(&spool).await;
    let session = client.open(new_session("outage", "dev")).await.unwrap();
    let id = session.id();
    let mut recording = session
        .record(1, RecordingKind::Pty, &Header::new(80, 24))
        .unwrap();
    let write = |recording: &mut k8shell_session::Recording, phase: &str, lines: u32| {
        for n in 0..lines {
            recording
                .output(format!("{phase} line {n}\r\n").as_bytes())
                .unwrap();
        }
    };
    write(&mut recording, "before", 500);
    k8shell_testkit::poll_until("part of the recording to be stored", || async {
        let recording = harness.get(id).await.recordings.into_iter().next()?;
        (recording.stored_bytes > 0).then_some(())
    })
    .await;
    match outage {
        Outage::SessionService => harness.stop_service().await,
        Outage::Postgres => harness.pg.stop(),
    }
    write(&mut recording, "during", 1000);
    session
        .event(
            "note",
            0,
            serde_json::json!({"text": "written during the outage"}),
        )
        .unwrap();
    // The outage is real for every client (the uploader fails and keeps retrying meanwhile).
    k8shell_testkit::poll_until("the outage to show", || async {
        let request = k8shell_proto::session::v1::GetRequest {
            id: Some(id.into()),
        };
        harness.grpc_as("api").get(request).await.err()
    })
    .await;
    match outage {
        Outage::SessionService => harness.start_service().await,
        Outage::Postgres => harness.pg.start_again().unwrap(),
    }
    write(&mut recording, "after", 500);
    let spooled = spool
        .join(id.to_string())
        .join(format!("{}.cast", recording.id()));
    let written = std::fs::read(&spooled).unwrap();
    let recording_id = recording.id();
    recording.finish().unwrap();
    session.close("done").unwrap().flushed().await;
    let exported = export(&client, recording_id).await;
    assert!(
        exported == written,
        "{} bytes exported, {} written",
        exported.len(),
        written.len()
    );
    let text = String::from_utf8(exported).unwrap();
    assert_eq!(text.matches(" line ").count(), 2000);
    assert_eq!(harness.get(id).await.timeline.len(), 1);
}

#[tokio::test]
async fn a_restart_of_the_session_service_mid_upload_loses_nothing() {
    upload_survives(Outage::SessionService).await;
}

#[tokio::test]
async fn a_restart_of_postgres_mid_upload_loses_nothing() {
    upload_survives(Outage::Postgres).await;
}
