//! Who a credential belongs to, asked of identity and remembered for a few seconds, so that a
//! busy client costs identity one call per user every few seconds, and a suspension takes
//! effect within that time.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8shell_proto::identity::v1 as idpb;
use k8shell_proto::identity::v1::identity_client::IdentityClient;
use tonic::transport::Channel;
use uuid::Uuid;

/// How long an answer of identity is reused.
const FRESH_FOR: Duration = Duration::from_secs(10);
/// Entries kept at most; the cache is emptied beyond (answers are cheap to get again).
const MAX_ENTRIES: usize = 10_000;

/// Users by id and by API-token hash.
#[derive(Debug, Default)]
pub struct UserCache {
    by_id: Mutex<HashMap<Uuid, (idpb::User, Instant)>>,
    by_token: Mutex<HashMap<[u8; 32], (idpb::User, Instant)>>,
}

impl UserCache {
    /// The user with this id (from an access token).
    pub async fn by_id(
        &self,
        identity: &IdentityClient<Channel>,
        id: Uuid,
    ) -> Result<idpb::User, tonic::Status> {
        if let Some(user) = fresh(&self.by_id, &id) {
            return Ok(user);
        }
        let user = identity
            .clone()
            .get_user(idpb::GetUserRequest {
                user: Some(idpb::UserSelector {
                    user: Some(idpb::user_selector::User::Id(id.into())),
                }),
            })
            .await?
            .into_inner();
        remember(&self.by_id, id, &user);
        Ok(user)
    }

    /// The owner of a personal API token.
    pub async fn by_token(
        &self,
        identity: &IdentityClient<Channel>,
        secret: &str,
    ) -> Result<idpb::User, tonic::Status> {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(user) = fresh(&self.by_token, &key) {
            return Ok(user);
        }
        let user = identity
            .clone()
            .verify_token(idpb::VerifyTokenRequest {
                secret: secret.to_owned(),
            })
            .await?
            .into_inner();
        remember(&self.by_token, key, &user);
        Ok(user)
    }

    /// Forgets everything (after a change the caller made to users or tokens).
    pub fn forget(&self) {
        lock(&self.by_id).clear();
        lock(&self.by_token).clear();
    }
}

fn lock<K, V>(map: &Mutex<HashMap<K, V>>) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fresh<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, (idpb::User, Instant)>>,
    key: &K,
) -> Option<idpb::User> {
    let map = lock(map);
    map.get(key)
        .filter(|(_, at)| at.elapsed() < FRESH_FOR)
        .map(|(user, _)| user.clone())
}

fn remember<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, (idpb::User, Instant)>>,
    key: K,
    user: &idpb::User,
) {
    let mut map = lock(map);
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, (user.clone(), Instant::now()));
}
