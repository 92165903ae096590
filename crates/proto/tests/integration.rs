//! gRPC as the services will run it: tonic over mTLS with the local CA, gRPC health, and
//! deny-by-default admission of calling services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use k8shell_common::grpc::{allow_services, mtls_channel, mtls_incoming};
use k8shell_common::tls::{LocalCa, ReloadingTls, install_crypto_provider};
use k8shell_proto::health::pb::HealthCheckRequest;
use k8shell_proto::health::pb::health_check_response::ServingStatus;
use k8shell_proto::health::pb::health_client::HealthClient;
use tokio_util::sync::CancellationToken;

struct Server {
    uri: String,
    stop: CancellationToken,
}

/// An "identity" server that only ssh-proxy and api may call.
async fn start_identity(ca: &LocalCa, dir: &std::path::Path) -> Server {
    let tls = ReloadingTls::load(ca.issue_files(dir, "identity", &["localhost"]).unwrap()).unwrap();
    let (reporter, health) = k8shell_proto::health::server::health_reporter();
    reporter
        .set_service_status(
            "k8shell.identity.v1.Identity",
            k8shell_proto::health::ServingStatus::Serving,
        )
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let incoming = mtls_incoming(listener, &tls, stop.clone()).unwrap();
    let guarded = tonic::service::interceptor::InterceptedService::new(
        health,
        allow_services(&["ssh-proxy", "api"]),
    );
    let token = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(guarded)
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
            .unwrap();
    });
    Server {
        uri: format!("https://localhost:{port}"),
        stop,
    }
}

async fn check(client_tls: &Arc<ReloadingTls>, uri: &str) -> Result<i32, tonic::Status> {
    let channel = mtls_channel(uri, client_tls).unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "k8shell.identity.v1.Identity".into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn an_allowed_service_sees_health_over_mtls() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("test CA").unwrap();
    let server = start_identity(&ca, &dir.path().join("identity")).await;
    let proxy = ReloadingTls::load(
        ca.issue_files(&dir.path().join("proxy"), "ssh-proxy", &[])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        check(&proxy, &server.uri).await.unwrap(),
        ServingStatus::Serving as i32
    );
    server.stop.cancel();
}

#[tokio::test]
async fn a_service_not_on_the_list_is_denied() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("test CA").unwrap();
    let server = start_identity(&ca, &dir.path().join("identity")).await;
    let shield = ReloadingTls::load(
        ca.issue_files(&dir.path().join("shield"), "ssh-shield", &[])
            .unwrap(),
    )
    .unwrap();
    let status = check(&shield, &server.uri).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("`ssh-shield`"), "{status:?}");
    server.stop.cancel();
}

#[tokio::test]
async fn a_client_from_another_ca_cannot_connect() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("test CA").unwrap();
    let rogue_ca = LocalCa::generate("test CA").unwrap();
    let server = start_identity(&ca, &dir.path().join("identity")).await;
    let mut files = rogue_ca
        .issue_files(&dir.path().join("rogue"), "ssh-proxy", &[])
        .unwrap();
    let trusted = dir.path().join("trusted-ca.pem");
    std::fs::write(&trusted, ca.cert_pem()).unwrap();
    files.ca_file = trusted;
    let rogue = ReloadingTls::load(files).unwrap();
    let status = check(&rogue, &server.uri).await.unwrap_err();
    // TLS 1.3: the client finishes first, then the server's alert ends the connection.
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable
        ),
        "{status:?}"
    );
    assert!(
        format!("{status:?}").contains("alert"),
        "refused by TLS: {status:?}"
    );
    server.stop.cancel();
}
