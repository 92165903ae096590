//! Session-token keys from a JWKS URL, over HTTP and HTTPS, following key rotation.

use std::sync::{Arc, Mutex};

use k8shell_common::jwks::{JwksCache, JwksConfig};
use k8shell_common::jwt::{Jwks, JwtError, JwtSigner, SessionClaims};
use k8shell_common::tls::{LocalCa, install_crypto_provider};
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Serves whatever JWKS `document` holds, to every GET, over plain HTTP or TLS.
async fn jwks_server(document: Arc<Mutex<String>>, tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let document = Arc::clone(&document);
            let tls = tls.clone();
            tokio::spawn(async move {
                let body = document.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut request = vec![0; 4096];
                match tls {
                    Some(acceptor) => {
                        let Ok(mut stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = stream.read(&mut request).await;
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    None => {
                        let mut stream = tcp;
                        let _ = stream.read(&mut request).await;
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    port
}

fn jwks_of(signers: &[&JwtSigner]) -> String {
    serde_json::to_string(&Jwks {
        keys: signers.iter().map(|s| s.jwk()).collect(),
    })
    .unwrap()
}

fn claims(ws: Uuid) -> SessionClaims {
    let now = k8shell_common::clock::now().unix_timestamp();
    SessionClaims {
        iss: "k8shell-identity".into(),
        sub: "alice".into(),
        aud: "k8shelld".into(),
        ws,
        sid: Uuid::now_v7(),
        iat: now,
        exp: now + 300,
        nbf: None,
        jti: None,
    }
}

#[tokio::test]
async fn keys_from_a_url_follow_rotation() {
    let (first, _) = JwtSigner::generate("k1").unwrap();
    let (second, _) = JwtSigner::generate("k2").unwrap();
    let document = Arc::new(Mutex::new(jwks_of(&[&first])));
    let port = jwks_server(Arc::clone(&document), None).await;
    let cache = JwksCache::load(JwksConfig::url(
        format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
        None,
    ))
    .await
    .unwrap();
    let stop = CancellationToken::new();
    cache.spawn_refresher(stop.clone());
    let ws = Uuid::now_v7();
    let now = || k8shell_common::clock::now().unix_timestamp();

    let token = first.sign(&claims(ws)).unwrap();
    assert_eq!(
        cache
            .verify_session(&token, "k8shelld", ws, now())
            .unwrap()
            .sub,
        "alice"
    );

    // Identity publishes the next key, then signs with it.
    *document.lock().unwrap() = jwks_of(&[&first, &second]);
    let token = second.sign(&claims(ws)).unwrap();
    let mut attempts = 0;
    loop {
        match cache.verify_session(&token, "k8shelld", ws, now()) {
            Ok(_) => break,
            Err(JwtError::UnknownKey(kid)) => {
                assert_eq!(kid, "k2");
                attempts += 1;
                assert!(attempts < 500, "the new key never arrived");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    stop.cancel();
}

#[tokio::test]
async fn https_urls_are_verified_against_the_configured_ca() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::generate("test CA").unwrap();
    let issued = ca.issue("identity", &["localhost"]).unwrap();
    let certs: Vec<_> =
        rustls_pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let server =
        rustls::ServerConfig::builder_with_provider(k8shell_common::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let (signer, _) = JwtSigner::generate("k1").unwrap();
    let document = Arc::new(Mutex::new(jwks_of(&[&signer])));
    let port = jwks_server(
        document,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
    )
    .await;
    let url = format!("https://localhost:{port}/.well-known/jwks.json");

    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let cache = JwksCache::load(JwksConfig::url(&url, Some(ca_file)))
        .await
        .unwrap();
    let ws = Uuid::now_v7();
    let now = k8shell_common::clock::now().unix_timestamp();
    let token = signer.sign(&claims(ws)).unwrap();
    assert!(cache.verify_session(&token, "k8shelld", ws, now).is_ok());

    // Another CA's certificate is not trusted.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, LocalCa::generate("other").unwrap().cert_pem()).unwrap();
    let err = JwksCache::load(JwksConfig::url(&url, Some(other)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    // Without a CA, https is refused with what to do.
    let err = JwksCache::load(JwksConfig::url(&url, None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ca_file"), "{err}");
}

#[tokio::test]
async fn an_unreachable_url_fails_at_start_with_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let err = JwksCache::load(JwksConfig::url(&url, None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
}
