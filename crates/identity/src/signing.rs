//! The JWT signing keys: Ed25519, one file per key in a directory, the newest signing, the older
//! ones still published until every token they signed has expired.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8shell_common::jwt::{Jwks, JwtSigner};
use time::OffsetDateTime;

/// A key and when it was made (its kid is a UUIDv7, which sorts by time).
struct Key {
    kid: String,
    created: OffsetDateTime,
    signer: Arc<JwtSigner>,
}

/// Errors of the key ring.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing key directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path}: {message}")]
    Key { path: PathBuf, message: String },
}

/// The key ring.
pub struct KeyRing {
    dir: PathBuf,
    rotate_after: Duration,
    /// How long a retired key stays published: the longest token lifetime.
    publish_for: Duration,
    /// How long a new key is published before it signs, so that verifiers have fetched it.
    publish_ahead: Duration,
    keys: RwLock<Vec<Key>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the keys in `dir`, creating the first one if there is none.
    pub fn open(
        dir: &Path,
        rotate_after: Duration,
        publish_for: Duration,
        publish_ahead: Duration,
    ) -> Result<Self, SigningError> {
        let io = |source| SigningError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(kid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".key"))
            else {
                continue;
            };
            let created = kid_time(kid).ok_or_else(|| SigningError::Key {
                path: path.clone(),
                message: "the file name is not a key id".to_owned(),
            })?;
            let der = std::fs::read(&path).map_err(|source| SigningError::Io {
                path: path.clone(),
                source,
            })?;
            let signer = JwtSigner::from_pkcs8(kid, &der).map_err(|e| SigningError::Key {
                path: path.clone(),
                message: e.to_string(),
            })?;
            keys.push(Key {
                kid: kid.to_owned(),
                created,
                signer: Arc::new(signer),
            });
        }
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let ring = Self {
            dir: dir.to_owned(),
            rotate_after,
            publish_for,
            publish_ahead,
            keys: RwLock::new(keys),
        };
        ring.rotate_if_due()?;
        Ok(ring)
    }

    /// Adds a new signing key if there is none or the newest is older than `rotate_after`, and
    /// forgets keys no token can still depend on. Returns whether it rotated.
    pub fn rotate_if_due(&self) -> Result<bool, SigningError> {
        let now = k8shell_common::clock::now();
        let due = self
            .read()
            .last()
            .is_none_or(|newest| now - newest.created >= self.rotate_after);
        if due {
            self.rotate()?;
        }
        self.prune(now);
        Ok(due)
    }

    /// Adds a new key, which signs from now on; the previous ones stay published.
    pub fn rotate(&self) -> Result<String, SigningError> {
        let kid = k8shell_common::ids::new_id().to_string();
        let path = self.dir.join(format!("{kid}.key"));
        let (signer, pkcs8) = JwtSigner::generate(&kid).map_err(|e| SigningError::Key {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_private(&path, &pkcs8).map_err(|source| SigningError::Io {
            path: path.clone(),
            source,
        })?;
        tracing::info!(%kid, "new JWT signing key");
        self.write().push(Key {
            kid: kid.clone(),
            created: k8shell_common::clock::now(),
            signer: Arc::new(signer),
        });
        Ok(kid)
    }

    /// The key that signs now: the newest one published for at least `publish_ahead`, or the
    /// oldest one while none is (a fresh installation signs with its first key at once).
    pub fn active(&self) -> Option<Arc<JwtSigner>> {
        let keys = self.read();
        let now = k8shell_common::clock::now();
        keys.iter()
            .rev()
            .find(|k| now - k.created >= self.publish_ahead)
            .or_else(|| keys.first())
            .map(|k| Arc::clone(&k.signer))
    }

    /// The published keys.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.read().iter().map(|k| k.signer.jwk()).collect(),
        }
    }

    /// Drops keys retired longer ago than any token lives.
    fn prune(&self, now: OffsetDateTime) {
        let mut keys = self.write();
        // A key is retired when its successor starts signing.
        let retired_at: Vec<Option<OffsetDateTime>> = (0..keys.len())
            .map(|i| {
                keys.get(i + 1)
                    .map(|next| next.created + self.publish_ahead)
            })
            .collect();
        let mut index = 0;
        keys.retain(|key| {
            let keep = retired_at[index].is_none_or(|at| now - at < self.publish_for);
            index += 1;
            if !keep {
                let path = self.dir.join(format!("{}.key", key.kid));
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a retired key");
                }
            }
            keep
        });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Key>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Key>> {
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The creation time inside a UUIDv7 key id.
fn kid_time(kid: &str) -> Option<OffsetDateTime> {
    let uuid = uuid::Uuid::parse_str(kid).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?)
        .ok()
        .map(|t| t + time::Duration::nanoseconds(i64::from(nanos)))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8shell_common::jwt::{JwtVerifier, SessionClaims};

    fn claims() -> SessionClaims {
        let now = k8shell_common::clock::now().unix_timestamp();
        SessionClaims {
            iss: "test".into(),
            sub: "alice".into(),
            aud: "k8shelld".into(),
            ws: uuid::Uuid::nil(),
            sid: uuid::Uuid::nil(),
            iat: now,
            nbf: None,
            exp: now + 600,
            jti: None,
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let ring = KeyRing::open(
            dir.path(),
            day * 30,
            Duration::from_secs(3600),
            Duration::ZERO,
        )
        .unwrap();
        let old = ring.active().unwrap().sign(&claims()).unwrap();
        assert_eq!(ring.jwks().keys.len(), 1);

        let new_kid = ring.rotate().unwrap();
        let jwks = ring.jwks();
        assert_eq!(jwks.keys.len(), 2, "the old key stays published");
        let verifier = JwtVerifier::from_jwks(&jwks).unwrap();
        let now = k8shell_common::clock::now().unix_timestamp();
        assert!(
            verifier
                .verify_session(&old, "k8shelld", uuid::Uuid::nil(), now)
                .is_ok()
        );
        let new = ring.active().unwrap().sign(&claims()).unwrap();
        let header = new.split('.').next().unwrap();
        let header =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap();
        assert!(
            String::from_utf8(header).unwrap().contains(&new_kid),
            "new tokens use the new key"
        );

        // The key files survive a restart; a fresh ring is not rotated again.
        let reopened = KeyRing::open(
            dir.path(),
            day * 30,
            Duration::from_secs(3600),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(reopened.jwks(), jwks);
        assert_eq!(reopened.active().unwrap().jwk().kid, new_kid);
    }

    #[test]
    fn a_new_key_is_published_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let ring = KeyRing::open(dir.path(), hour * 720, hour, Duration::from_secs(600)).unwrap();
        let first = ring.active().unwrap().jwk().kid;
        let next = ring.rotate().unwrap();
        assert!(
            ring.jwks().keys.iter().any(|k| k.kid == next),
            "published at once"
        );
        assert_eq!(
            ring.active().unwrap().jwk().kid,
            first,
            "but not signing yet"
        );
    }

    #[test]
    fn keys_retired_longer_than_any_token_lives_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(
            dir.path(),
            Duration::from_secs(86_400),
            Duration::ZERO,
            Duration::ZERO,
        )
        .unwrap();
        ring.rotate().unwrap();
        ring.rotate_if_due().unwrap();
        assert_eq!(
            ring.jwks().keys.len(),
            1,
            "with no token lifetime left, only the active key"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
