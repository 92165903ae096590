//! Device logins (RFC 8628 in spirit): a device without a browser gets a secret device code to
//! poll with and a short user code; the user confirms the code in the console after signing in.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom as _;
use sqlx::Row as _;
use uuid::Uuid;

use crate::store::{Store, StoreError, User, UserRef, UserState};

/// Letters that cannot be mistaken for each other or spell much (no vowels, no 0/O, 1/I).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A device login as begun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLogin {
    pub device_code: String,
    pub user_code: String,
}

/// Where a device login stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    Pending,
    Approved(User),
    Denied,
    Expired,
}

/// Errors of device logins.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown or expired code {0:?}: start the login again on the device")]
    UnknownCode(String),
    #[error("no randomness available")]
    Random,
    #[error("slow down: poll at most every {0} s")]
    SlowDown(u64),
    #[error("this account is suspended")]
    Suspended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn hash(device_code: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, device_code.as_bytes())
        .as_ref()
        .to_vec()
}

fn random(bytes: usize) -> Result<Vec<u8>, DeviceError> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| DeviceError::Random)?;
    Ok(buf)
}

/// `XXXX-XXXX` from the unambiguous alphabet.
fn user_code() -> Result<String, DeviceError> {
    let letters: String = random(8)?
        .iter()
        .map(|b| USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()] as char)
        .collect();
    Ok(format!("{}-{}", &letters[..4], &letters[4..]))
}

/// Normalises what a user typed: case, spaces and the dash do not matter.
pub fn normalize_user_code(typed: &str) -> String {
    let letters: String = typed
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() == 8 {
        format!("{}-{}", &letters[..4], &letters[4..])
    } else {
        letters
    }
}

/// Starts a device login valid for `lifetime`.
pub async fn begin(
    store: &Store,
    client_name: &str,
    lifetime: Duration,
) -> Result<DeviceLogin, DeviceError> {
    // Abandoned logins are removed as new ones begin: the table cannot grow without bound.
    sqlx::query("DELETE FROM device_logins WHERE expires_at < now() - interval '1 hour'")
        .execute(store.pool())
        .await
        .map_err(StoreError::from)?;
    let device_code = URL_SAFE_NO_PAD.encode(random(32)?);
    // A clash of user codes is possible (20^8); try a few.
    for _ in 0..5 {
        let code = user_code()?;
        let inserted = sqlx::query(
            "INSERT INTO device_logins (device_code_hash, user_code, client_name, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_code) DO NOTHING",
        )
        .bind(hash(&device_code))
        .bind(&code)
        .bind(client_name)
        .bind(k8shell_common::clock::now() + lifetime)
        .execute(store.pool())
        .await
        .map_err(StoreError::from)?;
        if inserted.rows_affected() == 1 {
            return Ok(DeviceLogin {
                device_code,
                user_code: code,
            });
        }
    }
    Err(DeviceError::Random)
}

/// The user confirms (or refuses) a code; returns the device's name.
pub async fn approve(
    store: &Store,
    user_code: &str,
    user: &UserRef,
    approve: bool,
) -> Result<String, DeviceError> {
    let user = store.user(user).await?;
    if user.state != UserState::Active {
        return Err(DeviceError::Suspended);
    }
    let code = normalize_user_code(user_code);
    let row = sqlx::query(
        "UPDATE device_logins SET user_id = CASE WHEN $3 THEN $2 ELSE NULL END, denied = NOT $3 \
         WHERE user_code = $1 AND expires_at > now() AND user_id IS NULL AND NOT denied \
         RETURNING client_name",
    )
    .bind(&code)
    .bind(user.id)
    .bind(approve)
    .fetch_optional(store.pool())
    .await
    .map_err(StoreError::from)?
    .ok_or(DeviceError::UnknownCode(code))?;
    Ok(row.try_get("client_name").map_err(StoreError::from)?)
}

/// Where the device's login stands; an approved or final answer is given once. A device that
/// asks again about a pending login sooner than `interval` is told to slow down.
pub async fn poll(
    store: &Store,
    device_code: &str,
    interval: Duration,
) -> Result<DeviceState, DeviceError> {
    let row = sqlx::query(
        "UPDATE device_logins d SET polled_at = now() FROM device_logins prior \
         WHERE d.device_code_hash = $1 AND prior.device_code_hash = d.device_code_hash \
         RETURNING d.user_id, d.denied, d.expires_at > now() AS fresh, \
         prior.polled_at > now() - make_interval(secs => $2::float8) AS too_soon",
    )
    .bind(hash(device_code))
    .bind(interval.as_secs_f64())
    .fetch_optional(store.pool())
    .await
    .map_err(StoreError::from)?
    .ok_or_else(|| DeviceError::UnknownCode("(device code)".to_owned()))?;
    let user: Option<Uuid> = row.try_get("user_id").map_err(StoreError::from)?;
    let denied: bool = row.try_get("denied").map_err(StoreError::from)?;
    let fresh: bool = row.try_get("fresh").map_err(StoreError::from)?;
    let too_soon: Option<bool> = row.try_get("too_soon").map_err(StoreError::from)?;
    let state = match (user, denied, fresh) {
        (Some(id), _, true) => DeviceState::Approved(store.user(&UserRef::Id(id)).await?),
        (_, true, _) => DeviceState::Denied,
        (_, _, false) => DeviceState::Expired,
        (None, false, true) if too_soon == Some(true) => {
            return Err(DeviceError::SlowDown(interval.as_secs()));
        }
        (None, false, true) => return Ok(DeviceState::Pending),
    };
    sqlx::query("DELETE FROM device_logins WHERE device_code_hash = $1")
        .bind(hash(device_code))
        .execute(store.pool())
        .await
        .map_err(StoreError::from)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_unambiguous_and_forgiving() {
        let code = user_code().unwrap();
        assert_eq!(code.len(), 9);
        assert!(
            code.chars()
                .all(|c| c == '-' || USER_CODE_ALPHABET.contains(&(c as u8)))
        );
        assert_eq!(normalize_user_code("bcdf ghjk"), "BCDF-GHJK");
        assert_eq!(normalize_user_code(&code.to_lowercase()), code);
    }
}
