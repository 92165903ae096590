//! A single-use browser sign-in that whoever starts the server hands to its first user (the
//! all-in-one prints `<public url>/login/once?code=…` at start, so that an administrator gets
//! into the console on a machine without an OpenID provider). Only the code's SHA-256 is kept;
//! the first correct use consumes it, and it expires.

use std::sync::Mutex;
use std::time::SystemTime;

/// The sign-in on offer.
#[derive(Debug, Clone)]
pub struct OneTimeLogin {
    /// Who it signs in.
    pub username: String,
    /// SHA-256 of the code.
    pub code_sha256: [u8; 32],
    pub expires_at: SystemTime,
}

impl OneTimeLogin {
    /// A login for `username` with `code`, valid until `expires_at`.
    pub fn new(username: &str, code: &str, expires_at: SystemTime) -> Self {
        Self {
            username: username.to_owned(),
            code_sha256: digest(code),
            expires_at,
        }
    }
}

fn digest(code: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, code.as_bytes()).as_ref());
    out
}

/// The offer, if any, taken by its first correct use.
#[derive(Debug, Default)]
pub struct OneTimeLogins(Mutex<Option<OneTimeLogin>>);

impl OneTimeLogins {
    pub fn new(offer: Option<OneTimeLogin>) -> Self {
        Self(Mutex::new(offer))
    }

    /// The offer when `code` is the offered one and still valid; it is gone after (give it back
    /// with [`OneTimeLogins::put_back`] if the sign-in then fails on our side). An expired
    /// offer is dropped at its first use.
    pub fn redeem(&self, code: &str, now: SystemTime) -> Option<OneTimeLogin> {
        let mut offer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = offer.as_ref()?;
        if current.expires_at <= now {
            *offer = None;
            return None;
        }
        // Compared as digests: equal lengths, and nothing of the code itself is compared.
        let matches = crate::cookies::same_secret(&hex(&current.code_sha256), &hex(&digest(code)));
        if !matches {
            return None;
        }
        offer.take()
    }

    /// Offers `login` again (the sign-in it was taken for did not complete).
    pub fn put_back(&self, login: OneTimeLogin) {
        let mut offer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        offer.get_or_insert(login);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn redeemed_once_with_the_right_code_only() {
        let now = SystemTime::now();
        let logins = OneTimeLogins::new(Some(OneTimeLogin::new(
            "alice",
            "s3cret",
            now + Duration::from_secs(60),
        )));
        assert!(logins.redeem("wrong", now).is_none());
        let taken = logins.redeem("s3cret", now).unwrap();
        assert_eq!(taken.username, "alice");
        assert!(logins.redeem("s3cret", now).is_none(), "a second use");
        logins.put_back(taken);
        assert!(
            logins.redeem("s3cret", now).is_some(),
            "given back after a failure"
        );
    }

    #[test]
    fn an_expired_offer_is_refused_and_dropped() {
        let now = SystemTime::now();
        let logins = OneTimeLogins::new(Some(OneTimeLogin::new("alice", "c", now)));
        assert!(logins.redeem("c", now).is_none());
        assert!(logins.redeem("c", now - Duration::from_secs(10)).is_none());
    }
}
