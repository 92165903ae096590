//! Signing in with an SSH key: the server hands out a single-use challenge, the client signs it
//! in the standard SSH signature format (`ssh-keygen -Y sign -n k8shell-login`, or through
//! ssh-agent), and the signature must verify with a key identity lists for the user.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use russh::keys::ssh_key::{Algorithm, HashAlg, PublicKey, SshSig};

/// The SSH signature namespace of logins; signatures for other uses (git, files) do not count.
pub const NAMESPACE: &str = "k8shell-login";
/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Challenges outstanding at most (they are small; this bounds a flood).
const MAX_OUTSTANDING: usize = 10_000;

/// A challenge handed out.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub id: String,
    /// The exact text to sign.
    pub message: String,
}

#[derive(Debug)]
struct Issued {
    username: String,
    message: String,
    expires: Instant,
}

/// Outstanding challenges, each answerable once.
#[derive(Debug, Default)]
pub struct Challenges {
    issued: Mutex<HashMap<String, Issued>>,
}

impl Challenges {
    /// A new challenge for `username` at `origin` (the origin stops a signature made for
    /// another k8shell from being replayed here).
    /// `None` when too many are outstanding (a flood must not push out others' challenges).
    pub fn issue(
        &self,
        origin: &str,
        username: &str,
    ) -> Result<Option<Challenge>, ring::error::Unspecified> {
        let id = random_text()?;
        let nonce = random_text()?;
        let expires_at = k8shell_common::clock::now() + CHALLENGE_TTL;
        let expires_text = expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let message = format!("{NAMESPACE}\n{origin}\n{username}\n{nonce}\n{expires_text}\n");
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        issued.retain(|_, c| c.expires > now);
        if issued.len() >= MAX_OUTSTANDING {
            return Ok(None);
        }
        issued.insert(
            id.clone(),
            Issued {
                username: username.to_owned(),
                message: message.clone(),
                expires: now + CHALLENGE_TTL,
            },
        );
        Ok(Some(Challenge { id, message }))
    }

    /// The message of challenge `id` if it was issued to `username` and has not expired; it
    /// cannot be used again either way.
    pub fn take(&self, id: &str, username: &str) -> Option<String> {
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)?;
        (issued.username == username && issued.expires > Instant::now()).then_some(issued.message)
    }
}

/// 32 random bytes as URL-safe text (challenges, CSRF tokens).
pub fn random_text() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Why a signature does not log anyone in (logged; the client hears only "not accepted").
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("not an SSH signature: {0}")]
    Format(String),
    #[error("signature algorithm {0} is not accepted (SHA-1 and security-key signatures are not)")]
    Algorithm(String),
    #[error("the signature does not verify: {0}")]
    Invalid(String),
}

/// Parses an armored signature and returns the key it claims to be made with (as an
/// authorized_keys line), to be checked against identity before [`verify`].
pub fn parse(armored: &str) -> Result<(SshSig, String), SignatureError> {
    let signature: SshSig = armored
        .trim()
        .parse()
        .map_err(|e: russh::keys::ssh_key::Error| SignatureError::Format(e.to_string()))?;
    let algorithm = signature.algorithm();
    let acceptable = match &algorithm {
        Algorithm::Rsa { hash } => hash.is_some(),
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => true,
        _ => false,
    };
    if !acceptable || !matches!(signature.hash_alg(), HashAlg::Sha256 | HashAlg::Sha512) {
        return Err(SignatureError::Algorithm(algorithm.to_string()));
    }
    let key = PublicKey::new(signature.public_key().clone(), "");
    let line = key
        .to_openssh()
        .map_err(|e| SignatureError::Format(e.to_string()))?;
    Ok((signature, line))
}

/// Checks that `signature` signs `message` in the login namespace.
pub fn verify(signature: &SshSig, message: &str) -> Result<(), SignatureError> {
    let key = PublicKey::new(signature.public_key().clone(), "");
    key.verify(NAMESPACE, message.as_bytes(), signature)
        .map_err(|e| SignatureError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_answered_once_and_only_for_its_user() {
        let challenges = Challenges::default();
        let challenge = challenges
            .issue("https://k8shell.test", "alice")
            .unwrap()
            .unwrap();
        assert!(
            challenge
                .message
                .starts_with("k8shell-login\nhttps://k8shell.test\nalice\n")
        );
        assert_eq!(challenges.take(&challenge.id, "bob"), None);
        // The failed attempt used it up.
        assert_eq!(challenges.take(&challenge.id, "alice"), None);
        let again = challenges
            .issue("https://k8shell.test", "alice")
            .unwrap()
            .unwrap();
        assert_eq!(
            challenges.take(&again.id, "alice"),
            Some(again.message.clone())
        );
        assert_eq!(challenges.take(&again.id, "alice"), None);
    }

    #[test]
    fn garbage_is_not_a_signature() {
        assert!(matches!(
            parse("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----"),
            Err(SignatureError::Format(_))
        ));
    }
}
