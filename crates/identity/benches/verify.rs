//! `VerifyPublicKey` over gRPC+mTLS against the bare indexed Postgres lookup it wraps, and
//! session-JWT verification against the raw Ed25519 signature check it wraps, in one run.
//! Run: `cargo bench -p k8shell-identity --bench verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/integration/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use k8shell_common::jwt::{Jwks, JwtSigner, JwtVerifier, SessionClaims};
use k8shell_proto::identity::v1::VerifyPublicKeyRequest;

const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 16;
const JWTS: usize = 100_000;

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Runs `REQUESTS` calls of `call` from `CONCURRENCY` tasks.
async fn load<F, Fut>(call: F) -> Figures
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(REQUESTS / CONCURRENCY);
            for _ in 0..REQUESTS / CONCURRENCY {
                let t = Instant::now();
                call().await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    figures(latencies, start.elapsed())
}

fn row(name: &str, ours: &Figures, peer_name: &str, peer: &Figures) {
    println!(
        "| {name} | {:.0}/s, p50 {:.0} µs, p99 {:.0} µs | {peer_name}: {:.0}/s, p50 {:.0} µs, p99 {:.0} µs | {:.2}× the peer's throughput |",
        ours.per_second,
        ours.p50.as_secs_f64() * 1e6,
        ours.p99.as_secs_f64() * 1e6,
        peer.per_second,
        peer.p50.as_secs_f64() * 1e6,
        peer.p99.as_secs_f64() * 1e6,
        ours.per_second / peer.per_second
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let identity = harness::Identity::start().await;
    let key = harness::public_key(&identity.admin_key);
    let client = identity.client_as("ssh-proxy");

    // Warm-up.
    for _ in 0..200 {
        client
            .clone()
            .verify_public_key(VerifyPublicKeyRequest {
                username: "root-admin".into(),
                public_key: key.clone(),
            })
            .await
            .unwrap();
    }
    let verify = {
        let key = key.clone();
        load(move || {
            let mut client = client.clone();
            let key = key.clone();
            async move {
                client
                    .verify_public_key(VerifyPublicKeyRequest {
                        username: "root-admin".into(),
                        public_key: key,
                    })
                    .await
                    .unwrap();
            }
        })
        .await
    };
    let url = identity.pg.url("k8shell");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    let fingerprint = k8shell_identity::sshkey::SshPublicKey::parse(&key)
        .unwrap()
        .fingerprint();
    let lookup = load(move || {
        let pool = pool.clone();
        let fingerprint = fingerprint.clone();
        async move {
            sqlx::query(
                "SELECT u.id FROM identity.ssh_keys k JOIN identity.users u ON u.id = k.user_id \
                 WHERE u.username = $1 AND k.fingerprint = $2",
            )
            .bind("root-admin")
            .bind(fingerprint)
            .fetch_one(&pool)
            .await
            .unwrap();
        }
    })
    .await;

    // Session JWT verification on one core.
    let (signer, _) = JwtSigner::generate("bench").unwrap();
    let verifier = JwtVerifier::from_jwks(&Jwks {
        keys: vec![signer.jwk()],
    })
    .unwrap();
    let now = k8shell_common::clock::now().unix_timestamp();
    let ws = uuid::Uuid::now_v7();
    let token = signer
        .sign(&SessionClaims {
            iss: "bench".into(),
            sub: "alice".into(),
            aud: "k8shelld".into(),
            ws,
            sid: uuid::Uuid::now_v7(),
            iat: now,
            nbf: None,
            exp: now + 600,
            jti: None,
        })
        .unwrap();
    let mut latencies = Vec::with_capacity(JWTS);
    let start = Instant::now();
    for _ in 0..JWTS {
        let t = Instant::now();
        verifier
            .verify_session(&token, "k8shelld", ws, now)
            .unwrap();
        latencies.push(t.elapsed());
    }
    let jwt = figures(latencies, start.elapsed());
    let (message, signature) = token.rsplit_once('.').unwrap();
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .unwrap();
    let public = signer.jwk();
    let public =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, public.x)
            .unwrap();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public);
    let mut latencies = Vec::with_capacity(JWTS);
    let start = Instant::now();
    for _ in 0..JWTS {
        let t = Instant::now();
        key.verify(message.as_bytes(), &signature).unwrap();
        latencies.push(t.elapsed());
    }
    let raw = figures(latencies, start.elapsed());

    println!("| figure | k8shell | peer | ratio |");
    println!("|---|---|---|---|");
    row(
        &format!("`VerifyPublicKey`, gRPC + mTLS, {CONCURRENCY} concurrent callers"),
        &verify,
        "the same indexed lookup straight on Postgres",
        &lookup,
    );
    row(
        "session JWT verification (EdDSA), one core",
        &jwt,
        "the bare Ed25519 signature check (ring)",
        &raw,
    );
}
