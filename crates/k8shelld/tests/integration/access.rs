//! Who may call k8shelld: session tokens for this workspace only, and over TCP only ssh-proxy
//! and api with certificates from the CA.

use k8shell_common::jwt::JwtSigner;
use k8shell_common::shutdown::Shutdown;
use k8shell_common::tls::{LocalCa, ReloadingTls, install_crypto_provider};
use k8shell_k8shelld::Listener;
use k8shell_proto::k8shelld::v1::InfoRequest;

use crate::harness::{self, Daemon, Ended, Exec, run, start, with_token};

/// A command that would leave a file behind if it ran.
fn marker_command(daemon: &Daemon) -> (String, std::path::PathBuf) {
    let marker = daemon.user.home.join("ran");
    (format!("touch {}", marker.display()), marker)
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_and_nothing_runs() {
    let daemon = Daemon::start().await;
    let (command, marker) = marker_command(&daemon);
    let (forger, _) = JwtSigner::generate("test-key").unwrap();
    let now = k8shell_common::clock::now().unix_timestamp();
    let forged = forger
        .sign(&serde_json::json!({
            "iss": "x", "sub": "alice", "aud": "k8shelld", "ws": daemon.workspace,
            "sid": uuid::Uuid::now_v7(), "iat": now, "exp": now + 300
        }))
        .unwrap();
    let cases = [
        ("missing", None),
        ("garbage", Some("not.a.token".to_owned())),
        (
            "expired",
            Some(daemon.token_with(|c| {
                c.iat -= 7200;
                c.exp = c.iat + 60;
            })),
        ),
        (
            "other workspace",
            Some(daemon.token_with(|c| c.ws = uuid::Uuid::now_v7())),
        ),
        (
            "other audience",
            Some(daemon.token_with(|c| c.aud = "api".into())),
        ),
        ("wrong signature", Some(forged)),
    ];
    for (case, token) in cases {
        let mut client = daemon.client_with_token(token).await;
        let status = Exec::open(&mut client, start(&command)).await.err();
        let status = status.unwrap_or_else(|| panic!("{case}: the exec must be refused"));
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{case}: {status:?}"
        );
        let info = client.info(InfoRequest {}).await.unwrap_err();
        assert_eq!(info.code(), tonic::Code::Unauthenticated, "{case}");
    }
    assert!(!marker.exists(), "no refused call may run anything");

    // The same command with a good token runs.
    let mut client = daemon.client().await;
    let (_, _, ended) = run(&mut client, &command).await;
    assert_eq!(ended, Ended::Code(0));
    assert!(marker.exists());
}

#[tokio::test]
async fn a_rotated_signing_key_is_picked_up_from_the_jwks_file() {
    let daemon = Daemon::start().await;
    let (new_signer, _) = JwtSigner::generate("rotated-key").unwrap();
    let jwks = k8shell_common::jwt::Jwks {
        keys: vec![daemon.signer.jwk(), new_signer.jwk()],
    };
    std::fs::write(
        daemon.dir.path().join("jwks.json"),
        serde_json::to_vec(&jwks).unwrap(),
    )
    .unwrap();
    let now = k8shell_common::clock::now().unix_timestamp();
    let token = new_signer
        .sign(&k8shell_common::jwt::SessionClaims {
            iss: "k8shell-identity".into(),
            sub: "alice".into(),
            aud: "k8shelld".into(),
            ws: daemon.workspace,
            sid: uuid::Uuid::now_v7(),
            iat: now,
            exp: now + 60,
            nbf: None,
            jti: None,
        })
        .unwrap();
    let mut client = daemon.client_with_token(Some(token)).await;
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.workspace_id, daemon.workspace.to_string());
}

#[tokio::test]
async fn info_describes_the_workspace() {
    let daemon = Daemon::start().await;
    let mut client = daemon.client().await;
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.workspace_id, daemon.workspace.to_string());
    assert_eq!(info.user, daemon.user.name);
    assert!(!info.os.is_empty());
    assert!(info.uptime_seconds > 0);
    assert!(info.memory_total_bytes >= info.memory_available_bytes && info.memory_total_bytes > 0);
    assert!(info.home_total_bytes > 0);
}

#[tokio::test]
async fn over_tcp_only_allowed_services_with_ca_certificates_get_in() {
    install_crypto_provider();
    let (dir, workspace, signer, user) = harness::prepare();
    let ca = LocalCa::generate("test CA").unwrap();
    let tls = ReloadingTls::load(
        ca.issue_files(&dir.path().join("d"), "k8shelld", &["localhost"])
            .unwrap(),
    )
    .unwrap();
    let mut config = harness::config(dir.path(), workspace, &user);
    config.unix_socket = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        k8shell_k8shelld::serve(config, Listener::Tcp(listener, tls), stop)
            .await
            .unwrap();
    });
    let daemon_like = Daemon {
        dir,
        socket: Default::default(),
        workspace,
        signer,
        user,
        shutdown: shutdown.clone(),
        task: tokio::spawn(async {}),
    };
    let uri = format!("https://localhost:{port}");
    let caller = |service: &str| {
        let files = ca
            .issue_files(&daemon_like.dir.path().join(service), service, &[])
            .unwrap();
        ReloadingTls::load(files).unwrap()
    };

    let proxy = k8shell_common::grpc::mtls_channel(&uri, &caller("ssh-proxy")).unwrap();
    let mut client = with_token(proxy, Some(daemon_like.token()));
    let (out, _, ended) = run(&mut client, "echo over-tcp").await;
    assert_eq!((out.as_str(), ended), ("over-tcp\n", Ended::Code(0)));

    let shield = k8shell_common::grpc::mtls_channel(&uri, &caller("ssh-shield")).unwrap();
    let mut client = with_token(shield, Some(daemon_like.token()));
    let status = client.info(InfoRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let proxy = k8shell_common::grpc::mtls_channel(&uri, &caller("ssh-proxy")).unwrap();
    let mut client = with_token(proxy, None);
    let status = client.info(InfoRequest {}).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "a certificate is not enough"
    );

    shutdown.trigger();
    server.await.unwrap();
}

#[tokio::test]
async fn health_answers_without_a_token() {
    use k8shell_proto::health::pb::HealthCheckRequest;
    use k8shell_proto::health::pb::health_client::HealthClient;
    let daemon = Daemon::start().await;
    let channel = harness::unix_channel(&daemon.socket).await;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "k8shell.k8shelld.v1.Workspace".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        k8shell_proto::health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
