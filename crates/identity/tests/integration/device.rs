//! Device logins (CLI, SSH keyboard-interactive) and access tokens for the REST API.

use k8shell_common::jwt::JwtVerifier;
use k8shell_proto::identity::v1::{
    ApproveDeviceLoginRequest, BeginDeviceLoginRequest, DeviceLoginState, IssueAccessTokenRequest,
    PollDeviceLoginRequest, RefreshAccessTokenRequest, UserState,
};

use crate::harness::{Identity, by_name};

async fn begin(identity: &Identity) -> k8shell_proto::identity::v1::BeginDeviceLoginResponse {
    identity
        .client_as("ssh-proxy")
        .begin_device_login(BeginDeviceLoginRequest {
            client_name: "k8shell CLI on laptop".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn poll(
    identity: &Identity,
    device_code: &str,
) -> Result<k8shell_proto::identity::v1::PollDeviceLoginResponse, tonic::Status> {
    identity
        .client_as("ssh-proxy")
        .poll_device_login(PollDeviceLoginRequest {
            device_code: device_code.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn approve(
    identity: &Identity,
    code: &str,
    user: &str,
    yes: bool,
) -> Result<String, tonic::Status> {
    identity
        .client()
        .approve_device_login(ApproveDeviceLoginRequest {
            user_code: code.into(),
            user: by_name(user),
            approve: yes,
        })
        .await
        .map(|r| r.into_inner().client_name)
}

#[tokio::test]
async fn a_device_login_confirmed_in_the_browser_yields_the_user_and_a_token() {
    let identity = Identity::start().await;
    let begun = begin(&identity).await;
    assert_eq!(
        begun.verification_uri,
        "https://console.k8shell.test/device"
    );
    assert!(begun.verification_uri_complete.ends_with(&begun.user_code));
    assert_eq!(begun.interval_seconds, 5);
    let pending = poll(&identity, &begun.device_code).await.unwrap();
    assert_eq!(pending.state, DeviceLoginState::Pending as i32);
    assert!(pending.user.is_none());
    let eager = poll(&identity, &begun.device_code).await.unwrap_err();
    assert_eq!(eager.code(), tonic::Code::ResourceExhausted);
    assert!(eager.message().contains("slow down"), "{eager:?}");

    // The user types the code loosely: lowercase, no dash.
    let typed = begun.user_code.replace('-', " ").to_lowercase();
    let device = approve(&identity, &typed, "root-admin", true)
        .await
        .unwrap();
    assert_eq!(
        device, "k8shell CLI on laptop",
        "the user sees which device they let in"
    );

    let done = poll(&identity, &begun.device_code).await.unwrap();
    assert_eq!(done.state, DeviceLoginState::Approved as i32);
    assert_eq!(done.user.unwrap().username, "root-admin");
    let token = done.access_token.unwrap().token;
    let jwks: k8shell_common::jwt::Jwks = serde_json::from_str(
        &k8shell_common::http::get(&identity.jwks_url, None)
            .await
            .unwrap(),
    )
    .unwrap();
    let now = k8shell_common::clock::now().unix_timestamp();
    let claims = JwtVerifier::from_jwks(&jwks)
        .unwrap()
        .verify_access(&token, now)
        .unwrap();
    assert_eq!(claims.sub, "root-admin");

    // The answer is given once: the device code cannot be replayed.
    let replay = poll(&identity, &begun.device_code).await.unwrap_err();
    assert_eq!(replay.code(), tonic::Code::NotFound);
    // A code is confirmed once.
    let again = approve(&identity, &begun.user_code, "root-admin", true)
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn refused_expired_and_suspended_device_logins() {
    let identity = Identity::start().await;
    let refused = begin(&identity).await;
    approve(&identity, &refused.user_code, "root-admin", false)
        .await
        .unwrap();
    let answer = poll(&identity, &refused.device_code).await.unwrap();
    assert_eq!(answer.state, DeviceLoginState::Denied as i32);
    assert!(answer.access_token.is_none());

    let late = begin(&identity).await;
    identity
        .pg
        .psql(
            "k8shell",
            "UPDATE identity.device_logins SET expires_at = now() - interval '1 second'",
        )
        .unwrap();
    let status = approve(&identity, &late.user_code, "root-admin", true)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("start the login again"),
        "{status:?}"
    );
    let answer = poll(&identity, &late.device_code).await.unwrap();
    assert_eq!(answer.state, DeviceLoginState::Expired as i32);

    let pending = begin(&identity).await;
    identity.set_state("root-admin", UserState::Suspended).await;
    let status = approve(&identity, &pending.user_code, "root-admin", true)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn access_tokens_are_bounded_refreshable_and_follow_the_users_state() {
    let identity = Identity::start().await;
    let mut client = identity.client();
    let issued = client
        .issue_access_token(IssueAccessTokenRequest {
            user: by_name("root-admin"),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    let too_long = client
        .issue_access_token(IssueAccessTokenRequest {
            user: by_name("root-admin"),
            ttl_seconds: 48 * 3600,
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);

    let refreshed = client
        .refresh_access_token(RefreshAccessTokenRequest {
            token: issued.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(refreshed.token, issued.token);

    let mut tampered = issued.token.clone();
    tampered.pop();
    let status = client
        .refresh_access_token(RefreshAccessTokenRequest { token: tampered })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    identity.set_state("root-admin", UserState::Suspended).await;
    let status = client
        .refresh_access_token(RefreshAccessTokenRequest {
            token: refreshed.token,
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "a suspended user's token is not renewed"
    );
}
