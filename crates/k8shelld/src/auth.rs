//! Who may call: every request carries `authorization: Bearer <session token>`, an Ed25519 JWT
//! from identity whose `ws` claim is this workspace; on TCP the caller's mTLS certificate must
//! also name ssh-proxy or api. Anything else is UNAUTHENTICATED and nothing runs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use k8shell_common::jwt::{JwtError, JwtVerifier, SessionClaims};
use tonic::{Request, Status};
use uuid::Uuid;

/// A JWKS file is re-read at most this often when a token names an unknown key.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Services allowed to reach k8shelld over TCP.
pub const ALLOWED_CALLERS: &[&str] = &["ssh-proxy", "api"];

/// Verifies session tokens.
#[derive(Debug)]
pub struct TokenAuth {
    jwks_file: PathBuf,
    audience: String,
    workspace: Uuid,
    verifier: ArcSwap<JwtVerifier>,
    last_reload: Mutex<Instant>,
}

/// Errors loading the keys.
#[derive(Debug, thiserror::Error)]
#[error("JWKS {path}: {message}")]
pub struct JwksError {
    pub path: PathBuf,
    pub message: String,
}

impl TokenAuth {
    /// Loads the JWKS file.
    pub fn load(jwks_file: PathBuf, audience: String, workspace: Uuid) -> Result<Self, JwksError> {
        let verifier = read_jwks(&jwks_file)?;
        Ok(Self {
            jwks_file,
            audience,
            workspace,
            verifier: ArcSwap::from_pointee(verifier),
            last_reload: Mutex::new(Instant::now()),
        })
    }

    /// Checks a request's token and stores the claims in its extensions.
    pub fn check<T>(&self, mut request: Request<T>) -> Result<Request<T>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <session token>`")
            })?;
        let claims = self.verify(token).map_err(|e| {
            tracing::info!(error = %e, "refused a session token");
            Status::unauthenticated(format!("session token refused: {e}"))
        })?;
        tracing::debug!(user = %claims.sub, session = %claims.sid, "session token accepted");
        request.extensions_mut().insert(claims);
        Ok(request)
    }

    fn verify(&self, token: &str) -> Result<SessionClaims, JwtError> {
        let now = k8shell_common::clock::now().unix_timestamp();
        match self
            .verifier
            .load()
            .verify_session(token, &self.audience, self.workspace, now)
        {
            // Keys rotate: a new kid may be in the file already.
            Err(JwtError::UnknownKey(kid)) if self.reload_allowed() => {
                match read_jwks(&self.jwks_file) {
                    Ok(verifier) => self.verifier.store(Arc::new(verifier)),
                    Err(e) => tracing::warn!(error = %e, "cannot reload the JWKS"),
                }
                self.verifier
                    .load()
                    .verify_session(token, &self.audience, self.workspace, now)
                    .map_err(|e| match e {
                        JwtError::UnknownKey(_) => JwtError::UnknownKey(kid),
                        other => other,
                    })
            }
            result => result,
        }
    }

    fn reload_allowed(&self) -> bool {
        let mut last = self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.elapsed() >= RELOAD_AT_MOST_EVERY {
            *last = Instant::now();
            true
        } else {
            false
        }
    }
}

fn read_jwks(path: &PathBuf) -> Result<JwtVerifier, JwksError> {
    let text = std::fs::read_to_string(path).map_err(|e| JwksError {
        path: path.clone(),
        message: e.to_string(),
    })?;
    JwtVerifier::from_jwks_json(&text).map_err(|e| JwksError {
        path: path.clone(),
        message: e.to_string(),
    })
}
