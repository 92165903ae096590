//! Files in and out: `scp` both ways (OpenSSH 9 speaks SFTP underneath), an `sftp` batch, and the
//! operations in the session's timeline.

use crate::platform::Platform;
use crate::support::{noise_file, ok, run, sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_and_sftp_move_files_intact() {
    let platform = Platform::with_alice().await;
    let local = platform.dir.path().join("upload.bin");
    noise_file(&local, 100 * 1024 * 1024);
    let expected = sha256(&local);

    let mut up = platform.client.scp("alice").unwrap();
    up.arg(&local)
        .arg(platform.client.remote("alice", "upload.bin"));
    ok(&run(up).await);
    let mut check = platform.client.ssh("alice", "alice").unwrap();
    check.arg("sha256sum upload.bin");
    assert!(ok(&run(check).await).starts_with(&expected));

    let back = platform.dir.path().join("download.bin");
    let mut down = platform.client.scp("alice").unwrap();
    down.arg(platform.client.remote("alice", "upload.bin"))
        .arg(&back);
    ok(&run(down).await);
    assert_eq!(sha256(&back), expected);

    // A batch that uses every common operation; any failing line fails the batch.
    let small = platform.dir.path().join("note.txt");
    std::fs::write(&small, "a note\n").unwrap();
    let fetched = platform.dir.path().join("fetched.txt");
    let batch = platform.dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir docs\nput {} docs/note.txt\nls docs\nrename docs/note.txt docs/renamed.txt\n\
             get docs/renamed.txt {}\nrm docs/renamed.txt\nrmdir docs\n",
            small.display(),
            fetched.display()
        ),
    )
    .unwrap();
    let output = run(platform
        .client
        .sftp_batch("alice", "alice", &batch)
        .unwrap())
    .await;
    let listing = ok(&output);
    assert!(listing.contains("docs/note.txt"), "{listing}");
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), "a note\n");
    let mut gone = platform.client.ssh("alice", "alice").unwrap();
    gone.arg("ls -a ~");
    let home = ok(&run(gone).await);
    assert!(!home.contains("docs"), "{home}");

    // The batch's session has its operations in the timeline.
    let listed = platform.sessions_of("alice", None).await;
    let timeline = platform
        .session_when("the sftp timeline", &listed[1].id, |got| {
            got.session.as_ref()?.ended_at?;
            Some(got.timeline)
        })
        .await;
    let operations: Vec<String> = timeline
        .iter()
        .filter(|e| e.kind == "sftp")
        .map(|e| e.data_json.clone())
        .collect();
    let all = operations.join("\n");
    for expected in [
        r#""op":"mkdir""#,
        r#""op":"rename""#,
        r#""to":"/home/dev/docs/renamed.txt""#,
        r#""op":"remove""#,
        r#""op":"rmdir""#,
    ] {
        assert!(all.contains(expected), "{expected} missing from:\n{all}");
    }
}
