//! mTLS between services with certificates from the local CA.

use std::sync::Arc;
use std::time::Duration;

use k8shell_common::tls::{LocalCa, ReloadingTls, TlsFiles, install_crypto_provider, peer_service};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// A TLS echo server that answers each connection with the peer's service name, then echoes.
async fn serve(tls: Arc<ReloadingTls>) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(tls.server_config(&[]).unwrap());
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = token.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = peer_service(stream.get_ref().1.peer_certificates().unwrap_or(&[]))
                    .unwrap_or_else(|e| format!("error: {e}"));
                stream
                    .write_all(format!("{peer}\n").as_bytes())
                    .await
                    .unwrap();
                let mut buf = [0; 5];
                if stream.read_exact(&mut buf).await.is_ok() {
                    stream.write_all(&buf).await.unwrap();
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, stop)
}

struct Answer {
    peer_name: String,
    echo: Vec<u8>,
    server_cert: Vec<u8>,
}

async fn call(client: &Arc<ReloadingTls>, addr: std::net::SocketAddr) -> std::io::Result<Answer> {
    let connector = TlsConnector::from(client.client_config(&[]).unwrap());
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let server_cert = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    stream.write_all(b"hello").await?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text).await?;
    let text = String::from_utf8(text).unwrap();
    let (peer_name, echo) = text.split_once('\n').unwrap_or((&text, ""));
    Ok(Answer {
        peer_name: peer_name.to_owned(),
        echo: echo.as_bytes().to_vec(),
        server_cert,
    })
}

fn files(dir: &std::path::Path, ca: &LocalCa, service: &str) -> TlsFiles {
    ca.issue_files(dir, service, &["localhost", "127.0.0.1"])
        .unwrap()
}

#[tokio::test]
async fn services_talk_mtls_and_see_each_others_names() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let server = ReloadingTls::load(files(dir.path(), &ca, "identity")).unwrap();
    let client = ReloadingTls::load(files(dir.path(), &ca, "ssh-proxy")).unwrap();
    let (addr, stop) = serve(server).await;

    let answer = call(&client, addr).await.unwrap();
    assert_eq!(answer.peer_name, "ssh-proxy");
    assert_eq!(answer.echo, b"hello");

    // The same CA directory is reused, not regenerated.
    let again = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    assert_eq!(again.cert_pem(), ca.cert_pem());
    let from_reloaded_ca = ReloadingTls::load(files(&dir.path().join("b"), &again, "api")).unwrap();
    assert_eq!(
        call(&from_reloaded_ca, addr).await.unwrap().peer_name,
        "api"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("k8shell test CA").unwrap();
    let rogue_ca = LocalCa::generate("k8shell test CA").unwrap();
    let server = ReloadingTls::load(files(&dir.path().join("s"), &ca, "identity")).unwrap();
    // The rogue client trusts the real CA (so it accepts the server) but its own certificate
    // comes from another CA with the same name.
    let mut rogue_files = files(&dir.path().join("r"), &rogue_ca, "ssh-proxy");
    let real_ca_file = dir.path().join("real-ca.pem");
    std::fs::write(&real_ca_file, ca.cert_pem()).unwrap();
    rogue_files.ca_file = real_ca_file;
    let rogue = ReloadingTls::load(rogue_files).unwrap();
    let (addr, stop) = serve(server).await;

    let result = call(&rogue, addr).await;
    assert!(
        result.is_err(),
        "the server must refuse a certificate from another CA, got peer {:?}",
        result.map(|a| a.peer_name).ok()
    );
    stop.cancel();
}

#[tokio::test]
async fn a_server_from_another_ca_is_rejected_by_the_client() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("real").unwrap();
    let rogue_ca = LocalCa::generate("rogue").unwrap();
    let rogue_server =
        ReloadingTls::load(files(&dir.path().join("s"), &rogue_ca, "identity")).unwrap();
    let client = ReloadingTls::load(files(&dir.path().join("c"), &ca, "ssh-proxy")).unwrap();
    let (addr, stop) = serve(rogue_server).await;
    let err = call(&client, addr)
        .await
        .err()
        .expect("handshake must fail");
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"),
        "{err}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_restart() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("k8shell test CA").unwrap();
    let server_files = files(&dir.path().join("s"), &ca, "identity");
    let server = ReloadingTls::load(server_files.clone()).unwrap();
    let client = ReloadingTls::load(files(&dir.path().join("c"), &ca, "ssh-proxy")).unwrap();
    let stop_watch = CancellationToken::new();
    let mut reloaded = server.subscribe();
    server.watch(Duration::from_millis(20), stop_watch.clone());
    let (addr, stop) = serve(Arc::clone(&server)).await;

    let before = call(&client, addr).await.unwrap().server_cert;

    // Rotate: a new certificate and key for the same service, written in place.
    let rotated = ca
        .issue_files(&dir.path().join("s"), "identity", &["localhost"])
        .unwrap();
    assert_eq!(rotated, server_files);
    reloaded.changed().await.unwrap();

    let after = call(&client, addr).await.unwrap();
    assert_ne!(
        after.server_cert, before,
        "the listener must present the new certificate"
    );
    let on_disk = std::fs::read(&server_files.cert_file).unwrap();
    let expected = rustls_pki_types::CertificateDer::pem_slice_iter(&on_disk)
        .next()
        .unwrap()
        .unwrap();
    use rustls_pki_types::pem::PemObject as _;
    assert_eq!(after.server_cert, expected.to_vec());
    assert_eq!(after.peer_name, "ssh-proxy");
    stop.cancel();
    stop_watch.cancel();
}

#[tokio::test]
async fn a_broken_rotation_keeps_the_old_certificate() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("k8shell test CA").unwrap();
    let server_files = files(dir.path(), &ca, "identity");
    let server = ReloadingTls::load(server_files.clone()).unwrap();
    std::fs::write(&server_files.cert_file, "not a certificate").unwrap();
    let err = server.reload().unwrap_err();
    assert!(
        err.to_string()
            .contains(&server_files.cert_file.display().to_string()),
        "{err}"
    );
    let client = ReloadingTls::load(files(&dir.path().join("c"), &ca, "ssh-proxy")).unwrap();
    let (addr, stop) = serve(server).await;
    assert_eq!(call(&client, addr).await.unwrap().peer_name, "ssh-proxy");
    stop.cancel();
}
