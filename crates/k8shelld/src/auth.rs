//! Who may call: every request carries `authorization: Bearer <session token>`, an Ed25519 JWT
//! from identity whose `ws` claim is this workspace; on TCP the caller's mTLS certificate must
//! also name ssh-proxy or api. Anything else is UNAUTHENTICATED and nothing runs.

use std::sync::Arc;

use k8shell_common::jwks::JwksCache;
use tonic::{Request, Status};
use uuid::Uuid;

/// Services allowed to reach k8shelld over TCP.
pub const ALLOWED_CALLERS: &[&str] = &["ssh-proxy", "api"];

/// Verifies session tokens.
#[derive(Debug)]
pub struct TokenAuth {
    keys: Arc<JwksCache>,
    audience: String,
    workspace: Uuid,
}

impl TokenAuth {
    /// Tokens for `workspace` and `audience`, signed by one of `keys`.
    pub fn new(keys: Arc<JwksCache>, audience: String, workspace: Uuid) -> Self {
        Self {
            keys,
            audience,
            workspace,
        }
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
        let now = k8shell_common::clock::now().unix_timestamp();
        let claims = self
            .keys
            .verify_session(token, &self.audience, self.workspace, now)
            .map_err(|e| {
                tracing::info!(error = %e, "refused a session token");
                Status::unauthenticated(format!("session token refused: {e}"))
            })?;
        tracing::debug!(user = %claims.sub, session = %claims.sid, "session token accepted");
        request.extensions_mut().insert(claims);
        Ok(request)
    }
}
