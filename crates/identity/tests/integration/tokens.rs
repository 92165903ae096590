//! API tokens and session tokens.

use k8shell_common::jwks::{JwksCache, JwksConfig};
use k8shell_proto::identity::v1::{
    CreateTokenRequest, IssueSessionTokenRequest, RevokeTokenRequest, UserState, VerifyTokenRequest,
};
use k8shell_proto::types::v1::Id;
use uuid::Uuid;

use crate::harness::{Identity, by_name};

#[tokio::test]
async fn api_tokens_are_shown_once_verified_and_revoked() {
    let identity = Identity::start().await;
    let mut client = identity.client();
    let created = client
        .create_token(CreateTokenRequest {
            user: by_name("root-admin"),
            name: "ci".into(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    let token = created.token.unwrap();
    assert!(created.secret.starts_with("k8s_"));
    assert!(created.secret.starts_with(&token.prefix));
    assert!(
        token.prefix.len() < created.secret.len() / 2,
        "only a prefix is kept for display"
    );
    // Only the SHA-256 of the secret is stored; no column holds the secret itself.
    let stored_hash = identity
        .pg
        .psql(
            "k8shell",
            "SELECT encode(hash, 'hex') FROM identity.api_tokens",
        )
        .unwrap();
    let expected = ring::digest::digest(&ring::digest::SHA256, created.secret.as_bytes());
    let expected: String = expected
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored_hash, expected);
    let leaks = identity
        .pg
        .psql(
            "k8shell",
            &format!(
                "SELECT count(*) FROM identity.api_tokens t WHERE row_to_json(t)::text LIKE '%{}%'",
                created.secret
            ),
        )
        .unwrap();
    assert_eq!(leaks, "0", "the secret itself is never stored");

    let user = client
        .verify_token(VerifyTokenRequest {
            secret: created.secret.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.username, "root-admin");

    client
        .revoke_token(RevokeTokenRequest {
            user: by_name("root-admin"),
            token_id: token.id.clone(),
        })
        .await
        .unwrap();
    let status = client
        .verify_token(VerifyTokenRequest {
            secret: created.secret,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn expired_tokens_and_suspended_users_are_refused() {
    let identity = Identity::start().await;
    let mut client = identity.client();
    let create = |name: &str| CreateTokenRequest {
        user: by_name("root-admin"),
        name: name.into(),
        ttl_seconds: 0,
    };
    let expiring = client
        .create_token(create("old"))
        .await
        .unwrap()
        .into_inner();
    let other = client
        .create_token(create("other"))
        .await
        .unwrap()
        .into_inner();
    identity
        .pg
        .psql(
            "k8shell",
            "UPDATE identity.api_tokens SET expires_at = now() - interval '1 minute' WHERE name = 'old'",
        )
        .unwrap();
    let status = client
        .verify_token(VerifyTokenRequest {
            secret: expiring.secret,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    identity.set_state("root-admin", UserState::Suspended).await;
    let status = client
        .verify_token(VerifyTokenRequest {
            secret: other.secret,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Too long a lifetime, or no name, is refused with the limit.
    let mut too_long = create("long");
    too_long.ttl_seconds = 10 * 365 * 24 * 3600;
    let status = client.create_token(too_long).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("allowed"), "{status:?}");
    let status = client.create_token(create(" ")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn session_tokens_verify_against_the_published_jwks() {
    let identity = Identity::start().await;
    let mut client = identity.client_as("ssh-proxy");
    let (workspace, session) = (Uuid::now_v7(), Uuid::now_v7());
    let issued = client
        .issue_session_token(IssueSessionTokenRequest {
            user: by_name("root-admin"),
            workspace_id: Some(Id::from(workspace)),
            session_id: Some(Id::from(session)),
            ttl_seconds: 120,
        })
        .await
        .unwrap()
        .into_inner();
    let keys = JwksCache::load(JwksConfig::url(&identity.jwks_url, None))
        .await
        .unwrap();
    let now = k8shell_common::clock::now().unix_timestamp();
    let claims = keys
        .verify_session(&issued.token, "k8shelld", workspace, now)
        .unwrap();
    assert_eq!(claims.sub, "root-admin");
    assert_eq!(claims.sid, session);
    assert_eq!(claims.iss, "https://k8shell.test");
    assert!(claims.jti.is_some() && claims.nbf.is_some());
    assert_eq!(claims.exp - claims.iat, 120);
    assert!(
        keys.verify_session(&issued.token, "k8shelld", Uuid::now_v7(), now)
            .is_err()
    );

    let status = client
        .issue_session_token(IssueSessionTokenRequest {
            user: by_name("root-admin"),
            workspace_id: Some(Id::from(workspace)),
            session_id: Some(Id::from(session)),
            ttl_seconds: 3600,
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "minutes, not hours"
    );
}
