//! SSH keys: adding, removing, verifying, with the errors people meet.

use k8shell_proto::identity::v1::{
    AddKeyRequest, ListKeysRequest, RemoveKeyRequest, UserState, VerifyPublicKeyRequest,
};

use crate::harness::{Identity, by_name, public_key, ssh_keygen};

fn verify(username: &str, key: &str) -> VerifyPublicKeyRequest {
    VerifyPublicKeyRequest {
        username: username.into(),
        public_key: key.into(),
    }
}

#[tokio::test]
async fn the_bootstrap_admin_can_log_in_with_its_key() {
    let identity = Identity::start().await;
    let mut client = identity.client();
    let key = public_key(&identity.admin_key);
    let user = client
        .verify_public_key(verify("root-admin", &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.username, "root-admin");
    assert_eq!(user.groups, vec!["admins".to_owned()]);

    // Our fingerprint is the one ssh-keygen prints.
    let keys = client
        .list_keys(ListKeysRequest {
            user: by_name("root-admin"),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    let printed = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(identity.admin_key.with_extension("pub"))
        .output()
        .unwrap();
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(
        printed.split_whitespace().nth(1),
        Some(keys[0].fingerprint.as_str())
    );
    assert_eq!(keys[0].comment, "admin@test");
    assert!(
        keys[0].last_used_at.is_some(),
        "verification records the key's use"
    );
}

#[tokio::test]
async fn unknown_user_and_unknown_key_get_the_same_answer() {
    let identity = Identity::start().await;
    let mut client = identity.client();
    let stranger = public_key(&ssh_keygen(identity.dir.path(), "stranger"));
    let admin = public_key(&identity.admin_key);
    let unknown_key = client
        .verify_public_key(verify("root-admin", &stranger))
        .await
        .unwrap_err();
    let unknown_user = client
        .verify_public_key(verify("nobody", &admin))
        .await
        .unwrap_err();
    assert_eq!(unknown_key.code(), tonic::Code::NotFound);
    assert_eq!(unknown_user.code(), tonic::Code::NotFound);
    assert_eq!(unknown_key.message(), unknown_user.message());
}

#[tokio::test]
async fn keys_are_added_listed_removed_and_owned_by_one_account() {
    let identity = Identity::start().await;
    identity.create_user("alice").await;
    identity.create_user("bob").await;
    let mut client = identity.client();
    let key = public_key(&ssh_keygen(identity.dir.path(), "alice"));

    let added = client
        .add_key(AddKeyRequest {
            user: by_name("alice"),
            public_key: key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.key_type, "ssh-ed25519");
    assert_eq!(added.openssh, key);
    assert!(
        client
            .verify_public_key(verify("alice", &key))
            .await
            .is_ok()
    );

    // The same key cannot be registered twice, to the same or another account.
    for owner in ["alice", "bob"] {
        let status = client
            .add_key(AddKeyRequest {
                user: by_name(owner),
                public_key: key.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{owner}");
        assert!(status.message().contains(&added.fingerprint), "{status:?}");
    }
    // Bob cannot log in as Alice with her key, nor as himself.
    assert!(client.verify_public_key(verify("bob", &key)).await.is_err());

    client
        .remove_key(RemoveKeyRequest {
            user: by_name("alice"),
            fingerprint: added.fingerprint.clone(),
        })
        .await
        .unwrap();
    assert!(
        client
            .verify_public_key(verify("alice", &key))
            .await
            .is_err()
    );
    let status = client
        .remove_key(RemoveKeyRequest {
            user: by_name("alice"),
            fingerprint: added.fingerprint,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn malformed_keys_are_refused_with_a_reason() {
    let identity = Identity::start().await;
    let mut client = identity.client();
    let cases = [
        ("", "empty key"),
        ("-----BEGIN OPENSSH PRIVATE KEY----- abc", "private key"),
        ("ssh-ed25519 not-base64!!", "base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== x", "damaged"),
    ];
    for (key, expected) in cases {
        let status = client
            .add_key(AddKeyRequest {
                user: by_name("root-admin"),
                public_key: key.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{key:?}");
        assert!(status.message().contains(expected), "{key:?}: {status:?}");
    }
}

#[tokio::test]
async fn a_suspended_user_cannot_log_in_with_a_key() {
    let identity = Identity::start().await;
    let mut client = identity.client();
    let key = public_key(&identity.admin_key);
    identity.set_state("root-admin", UserState::Suspended).await;
    let status = client
        .verify_public_key(verify("root-admin", &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    identity.set_state("root-admin", UserState::Active).await;
    assert!(
        client
            .verify_public_key(verify("root-admin", &key))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn only_allowed_services_may_call() {
    let identity = Identity::start().await;
    let mut shield = identity.client_as("ssh-shield");
    let status = shield
        .verify_public_key(verify("root-admin", &public_key(&identity.admin_key)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}
