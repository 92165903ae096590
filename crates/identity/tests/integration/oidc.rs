//! Login through a real OpenID provider (npm `oidc-provider`), the whole authorization-code +
//! PKCE flow over HTTP, as a browser would do it.

use base64::Engine as _;
use k8shell_common::config::SecretFile;
use k8shell_identity::oidc::OidcConfig;
use k8shell_proto::identity::v1::{BeginLoginRequest, CompleteLoginRequest, ListUsersRequest};
use k8shell_testkit::{Browser, OidcProvider, query_param};

use crate::harness::Identity;

const CALLBACK: &str = "http://127.0.0.1:9/login/callback";

fn accounts() -> serde_json::Value {
    serde_json::json!({
        "alice": {
            "email": "alice@example.com", "email_verified": true, "name": "Alice Liddell",
            "preferred_username": "Alice", "groups": ["dev", "admins"]
        },
        "mallory": { "email": "mallory@elsewhere.org", "groups": ["outsiders"] },
        "carol": { "email": "carol@agency.net", "preferred_username": "carol", "groups": ["contractors"] },
        "eve": { "email": "eve@example.com", "email_verified": false, "groups": [] }
    })
}

async fn start() -> (OidcProvider, Identity) {
    start_asking(None).await
}

/// With `authz`, identity asks that authz (sharing the CA) whether newcomers may sign up.
async fn start_asking(
    authz: Option<(k8shell_common::tls::LocalCa, String)>,
) -> (OidcProvider, Identity) {
    let provider = OidcProvider::start(&[CALLBACK], &accounts()).unwrap();
    let (issuer, client_id, secret) = (
        provider.issuer.clone(),
        provider.client_id.clone(),
        provider.client_secret.clone(),
    );
    let identity = Identity::start_full(
        move |dir| {
            let secret_file = dir.join("oidc-client-secret");
            std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
            Some(OidcConfig {
                issuer,
                client_id,
                client_secret_file: Some(SecretFile(secret_file)),
                client_secret: None,
                redirect_uri: CALLBACK.to_owned(),
                ca_file: None,
                scopes: ["openid", "email", "profile", "groups"]
                    .map(str::to_owned)
                    .to_vec(),
                groups_claim: "groups".to_owned(),
                allowed_email_domains: vec!["example.com".to_owned()],
                allowed_groups: vec!["contractors".to_owned()],
            })
        },
        authz,
    )
    .await;
    (provider, identity)
}

/// Begins a login, lets `login` sign in at the provider, and returns (state, code).
async fn authorize(identity: &Identity, login: &str) -> (String, String) {
    let begun = identity
        .client()
        .begin_login(BeginLoginRequest {})
        .await
        .unwrap()
        .into_inner();
    let url = begun.authorization_url.clone();
    let login = login.to_owned();
    let callback =
        tokio::task::spawn_blocking(move || Browser::new().log_in(&url, &login, CALLBACK))
            .await
            .unwrap()
            .unwrap();
    let state = query_param(&callback, "state").unwrap();
    assert_eq!(state, begun.state, "the provider returns our state");
    (state, query_param(&callback, "code").unwrap())
}

#[tokio::test]
async fn a_first_login_creates_the_user_and_the_next_one_finds_it() {
    let (_provider, identity) = start().await;
    let mut client = identity.client();
    let (state, code) = authorize(&identity, "alice").await;
    let first = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let user = first.user.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(user.display_name, "Alice Liddell");
    assert_eq!(user.groups, vec!["dev".to_owned(), "admins".to_owned()]);
    assert!(user.last_login_at.is_some());

    let (state, code) = authorize(&identity, "alice").await;
    let second = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !second.created,
        "the link to the provider's subject is reused"
    );
    assert_eq!(second.user.unwrap().id, user.id);
    let users = client
        .list_users(ListUsersRequest { page: None })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(
        users
            .iter()
            .filter(|u| u.email == "alice@example.com")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_tampered_or_replayed_state_is_refused() {
    let (_provider, identity) = start().await;
    let mut client = identity.client();
    let (state, code) = authorize(&identity, "alice").await;
    let tampered = client
        .complete_login(CompleteLoginRequest {
            state: format!("{state}x"),
            code: code.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(tampered.code(), tonic::Code::Unauthenticated);
    assert!(tampered.message().contains("start again"), "{tampered:?}");
    client
        .complete_login(CompleteLoginRequest {
            state: state.clone(),
            code: code.clone(),
        })
        .await
        .unwrap();
    let replayed = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn an_id_token_for_another_nonce_is_refused() {
    let (_provider, identity) = start().await;
    let (state, code) = authorize(&identity, "alice").await;
    identity
        .pg
        .psql(
            "k8shell",
            "UPDATE identity.login_attempts SET nonce = 'not-the-one-sent'",
        )
        .unwrap();
    let status = identity
        .client()
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("nonce"), "{status:?}");
}

#[tokio::test]
async fn only_allowed_domains_and_groups_are_onboarded() {
    let (_provider, identity) = start().await;
    let mut client = identity.client();
    let (state, code) = authorize(&identity, "mallory").await;
    let refused = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("mallory@elsewhere.org"),
        "{refused:?}"
    );
    let count = identity
        .pg
        .psql(
            "k8shell",
            "SELECT count(*) FROM identity.users WHERE email LIKE 'mallory%'",
        )
        .unwrap();
    assert_eq!(count, "0", "a refused login creates nothing");

    // The right domain, but the provider has not verified the address.
    let (state, code) = authorize(&identity, "eve").await;
    let refused = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::PermissionDenied,
        "unverified email"
    );

    // Another domain, but an allowed group.
    let (state, code) = authorize(&identity, "carol").await;
    let carol = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(carol.user.unwrap().username, "carol");
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    let (provider, _identity) = start().await;
    let other = OidcProvider::start(&[CALLBACK], &accounts()).unwrap();
    // A genuine ID token, but from the other provider.
    let verifier = "a-verifier-long-enough-for-pkce-0123456789abcdef";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
    let url = format!(
        "{}/auth?response_type=code&client_id={}&redirect_uri={}&scope=openid&state=s&nonce=n&code_challenge={challenge}&code_challenge_method=S256",
        other.issuer,
        other.client_id,
        k8shell_common::http::form_encode(CALLBACK)
    );
    let callback =
        tokio::task::spawn_blocking(move || Browser::new().log_in(&url, "alice", CALLBACK))
            .await
            .unwrap()
            .unwrap();
    let code = query_param(&callback, "code").unwrap();
    let answer = k8shell_common::http::post_form(
        &format!("{}/token", other.issuer),
        None,
        Some((&other.client_id, &other.client_secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let id_token = body["id_token"].as_str().unwrap();

    let keys_of = |issuer: &str| {
        let issuer = issuer.to_owned();
        async move {
            let text = k8shell_common::http::get(&format!("{issuer}/jwks"), None)
                .await
                .unwrap();
            k8shell_common::oidc_token::ProviderKeys::from_jwks_json(&text).unwrap()
        }
    };
    let now = k8shell_common::clock::now().unix_timestamp();
    // With the other provider's keys and name it is valid…
    let genuine = keys_of(&other.issuer).await.verify_id_token(
        id_token,
        &other.issuer,
        &other.client_id,
        "n",
        now,
    );
    assert!(genuine.is_ok(), "{genuine:?}");
    // …but for our provider it is someone else's token.
    let ours = keys_of(&provider.issuer).await;
    let refused = ours
        .verify_id_token(id_token, &provider.issuer, &provider.client_id, "n", now)
        .unwrap_err();
    assert!(
        matches!(
            refused,
            k8shell_common::jwt::JwtError::Signature
                | k8shell_common::jwt::JwtError::UnknownKey(_)
                | k8shell_common::jwt::JwtError::Mismatch {
                    claim: "issuer",
                    ..
                }
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn with_authz_configured_its_onboarding_policy_decides() {
    use k8shell_common::shutdown::Shutdown;
    let pg = k8shell_testkit::Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = k8shell_common::tls::LocalCa::generate("shared CA").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let config = k8shell_authz::Config {
        database: k8shell_common::db::DatabaseConfig::new(pg.create_database("authz").unwrap()),
        grpc: k8shell_authz::GrpcConfig {
            listen: listener.local_addr().unwrap(),
            tls: ca.issue_files(dir.path(), "authz", &["localhost"]).unwrap(),
        },
        bundle_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../authz/policies"),
        reload_every: std::time::Duration::from_secs(60),
        nats: None,
        outbox: None,
        metrics_listen: None,
        telemetry: Default::default(),
    };
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let listeners = k8shell_authz::Listeners {
        grpc: listener,
        metrics: None,
    };
    tokio::spawn(async move { k8shell_authz::serve(config, listeners, stop).await.unwrap() });

    let (_provider, identity) = start_asking(Some((ca, uri))).await;
    let mut client = identity.client();
    // The default bundle admits verified addresses at example.com: alice is one.
    let (state, code) = authorize(&identity, "alice").await;
    let alice = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap()
        .into_inner();
    assert!(alice.created);
    // carol's group `contractors` is in identity's own allow-list, but the policy decides now.
    let (state, code) = authorize(&identity, "carol").await;
    let refused = client
        .complete_login(CompleteLoginRequest { state, code })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("may sign up"),
        "the policy's reason: {refused:?}"
    );
    let decisions = pg
        .psql(
            "authz",
            "SELECT count(*) FROM authz.decisions WHERE domain = 'onboarding'",
        )
        .unwrap();
    assert_eq!(decisions, "2", "both decisions are in authz's log");
    shutdown.trigger();
}
