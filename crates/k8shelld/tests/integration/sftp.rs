//! SFTP through the gRPC stream, spoken by a real SFTP client library, as the workspace user.

use k8shell_proto::k8shelld::v1::SftpData;
use russh_sftp::client::SftpSession;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{Client, Daemon};

/// An SFTP client session whose bytes travel over k8shelld's `Sftp` stream.
async fn sftp(client: &mut Client) -> SftpSession {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut theirs_read, mut theirs_write) = tokio::io::split(theirs);
    let (tx, rx) = tokio::sync::mpsc::channel::<SftpData>(4);
    tokio::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            match theirs_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send(SftpData {
                            data: buf[..n].to_vec(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let requests = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut responses = client.sftp(requests).await.unwrap().into_inner();
    tokio::spawn(async move {
        while let Ok(Some(message)) = responses.message().await {
            if theirs_write.write_all(&message.data).await.is_err() {
                return;
            }
        }
        let _ = theirs_write.shutdown().await;
    });
    SftpSession::new(ours).await.unwrap()
}

#[tokio::test]
async fn files_can_be_written_read_listed_renamed_and_removed() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let session = sftp(&mut client).await;

    let home = session.canonicalize(".").await.unwrap();
    assert_eq!(
        home,
        daemon.user.home.display().to_string(),
        "relative paths start at home"
    );

    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut file = session.create("notes.bin").await.unwrap();
    file.write_all(&content).await.unwrap();
    file.shutdown().await.unwrap();
    assert_eq!(session.read("notes.bin").await.unwrap(), content);

    let on_disk = std::fs::metadata(daemon.user.home.join("notes.bin")).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(
        on_disk.uid(),
        daemon.user.uid,
        "files belong to the workspace user"
    );

    let metadata = session.metadata("notes.bin").await.unwrap();
    assert_eq!(metadata.size, Some(content.len() as u64));

    session.create_dir("sub").await.unwrap();
    session
        .rename("notes.bin", "sub/renamed.bin")
        .await
        .unwrap();
    let names: Vec<String> = session
        .read_dir("sub")
        .await
        .unwrap()
        .map(|entry| entry.file_name())
        .collect();
    assert_eq!(names, vec!["renamed.bin".to_owned()]);
    assert!(!session.try_exists("notes.bin").await.unwrap());

    session.remove_file("sub/renamed.bin").await.unwrap();
    session.remove_dir("sub").await.unwrap();
    assert!(!daemon.user.home.join("sub").exists());
}

#[tokio::test]
async fn the_users_permissions_apply() {
    use std::os::unix::fs::PermissionsExt as _;
    let daemon = Daemon::start().await;
    // A file nobody but root may read, in a directory nobody but root may write: true for the
    // workspace user whether the test runs as root (files are root's) or not (mode bits).
    let secret_dir = daemon.dir.path().join("locked");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("secret"), "root's").unwrap();
    std::fs::set_permissions(
        secret_dir.join("secret"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o555)).unwrap();

    let mut client = daemon.client().await;
    let session = sftp(&mut client).await;
    let path = secret_dir.join("secret").display().to_string();
    let err = session.read(path.clone()).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("permission"),
        "{err}"
    );
    let Err(err) = session
        .create(secret_dir.join("planted").display().to_string())
        .await
    else {
        panic!("creating a file in a directory the user may not write must fail");
    };
    assert!(
        err.to_string().to_lowercase().contains("permission"),
        "{err}"
    );
    assert!(!secret_dir.join("planted").exists());
    let err = session.read("no-such-file").await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("no such file"),
        "{err}"
    );
}
