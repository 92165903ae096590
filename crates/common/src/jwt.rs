//! Ed25519 JWTs (`alg: EdDSA`): identity signs them, every service verifies them locally against
//! a JWKS. Only EdDSA is accepted, so there is no algorithm confusion to exploit.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Clock skew tolerated between issuer and verifier.
pub const LEEWAY_SECONDS: i64 = 30;

/// Why a token was refused. The texts are safe to return to callers: they never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported token algorithm {0:?}: only EdDSA is accepted")]
    Algorithm(String),
    #[error("token signed by unknown key {0:?}")]
    UnknownKey(String),
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token is for {claim} {found:?}, not {expected:?}")]
    Mismatch {
        claim: &'static str,
        expected: String,
        found: String,
    },
    #[error("invalid key: {0}")]
    Key(String),
    #[error("invalid JWKS: {0}")]
    Jwks(String),
}

/// One public key of a JWKS (RFC 8037 `OKP` / `Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The claims of a session token: who (`sub`), which workspace (`ws`), which session (`sid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    /// Username.
    pub sub: String,
    /// Who the token is for, e.g. `k8shelld`.
    pub aud: String,
    /// Workspace id.
    pub ws: Uuid,
    /// Session id.
    pub sid: Uuid,
    pub iat: i64,
    /// Not valid before (defaults to `iat`).
    #[serde(default)]
    pub nbf: Option<i64>,
    pub exp: i64,
    /// Token id.
    #[serde(default)]
    pub jti: Option<Uuid>,
}

/// Audience of access tokens for the REST API and the console.
pub const API_AUDIENCE: &str = "k8shell-api";

/// The claims of an access token for the REST API and console (hours, refreshable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// Username.
    pub sub: String,
    /// [`API_AUDIENCE`].
    pub aud: String,
    /// User id.
    pub uid: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// Signs tokens with one Ed25519 key.
pub struct JwtSigner {
    kid: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// A new random key; returns the signer and the key's PKCS#8 document to store.
    pub fn generate(kid: &str) -> Result<(Self, Vec<u8>), JwtError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|e| JwtError::Key(e.to_string()))?;
        let signer = Self::from_pkcs8(kid, pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    /// A signer from a stored PKCS#8 key.
    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<Self, JwtError> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// The public half, for the JWKS.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: B64.encode(self.key.public_key().as_ref()),
            kid: self.kid.clone(),
            alg: Some("EdDSA".to_owned()),
            use_: Some("sig".to_owned()),
        }
    }

    /// A compact JWS of `claims`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, JwtError> {
        let header = Header {
            alg: "EdDSA".to_owned(),
            kid: Some(self.kid.clone()),
            typ: Some("JWT".to_owned()),
        };
        let header = serde_json::to_vec(&header).map_err(|_| JwtError::Malformed("header"))?;
        let claims = serde_json::to_vec(claims).map_err(|_| JwtError::Malformed("claims"))?;
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let signature = self.key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            B64.encode(signature.as_ref())
        ))
    }
}

/// Verifies tokens against the keys of a JWKS.
#[derive(Debug, Clone, Default)]
pub struct JwtVerifier {
    keys: HashMap<String, Vec<u8>>,
}

impl JwtVerifier {
    /// A verifier trusting the Ed25519 keys of `jwks` (other key types are skipped).
    pub fn from_jwks(jwks: &Jwks) -> Result<Self, JwtError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                continue;
            }
            let x = B64
                .decode(&jwk.x)
                .map_err(|_| JwtError::Jwks(format!("key {:?}: x is not base64url", jwk.kid)))?;
            if x.len() != 32 {
                return Err(JwtError::Jwks(format!(
                    "key {:?}: an Ed25519 key has 32 bytes, not {}",
                    jwk.kid,
                    x.len()
                )));
            }
            keys.insert(jwk.kid.clone(), x);
        }
        if keys.is_empty() {
            return Err(JwtError::Jwks("no Ed25519 key in the set".to_owned()));
        }
        Ok(Self { keys })
    }

    /// A verifier from the text of a JWKS document.
    pub fn from_jwks_json(text: &str) -> Result<Self, JwtError> {
        let jwks: Jwks = serde_json::from_str(text).map_err(|e| JwtError::Jwks(e.to_string()))?;
        Self::from_jwks(&jwks)
    }

    /// Checks the signature and returns the claims (no time or audience checks).
    pub fn verify_signature<C: DeserializeOwned>(&self, token: &str) -> Result<C, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("expected three dot-separated parts"));
        };
        let header: Header = decode_json(header, "header")?;
        if header.alg != "EdDSA" {
            return Err(JwtError::Algorithm(header.alg));
        }
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .get(kid)
                .ok_or_else(|| JwtError::UnknownKey(kid.clone()))?,
            None if self.keys.len() == 1 => self
                .keys
                .values()
                .next()
                .ok_or(JwtError::Malformed("no key"))?,
            None => return Err(JwtError::Malformed("no kid, and several keys are trusted")),
        };
        let signature = B64
            .decode(signature)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        let signing_input_len = token.len() - signature_part_len(token);
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&token.as_bytes()[..signing_input_len], &signature)
            .map_err(|_| JwtError::Signature)?;
        decode_json(claims, "claims")
    }

    /// Verifies a session token for `audience` and `workspace` at time `now` (Unix seconds).
    pub fn verify_session(
        &self,
        token: &str,
        audience: &str,
        workspace: Uuid,
        now: i64,
    ) -> Result<SessionClaims, JwtError> {
        let claims: SessionClaims = self.verify_signature(token)?;
        if now >= claims.exp + LEEWAY_SECONDS {
            return Err(JwtError::Expired);
        }
        if claims.nbf.unwrap_or(claims.iat) > now + LEEWAY_SECONDS {
            return Err(JwtError::NotYetValid);
        }
        if claims.aud != audience {
            return Err(JwtError::Mismatch {
                claim: "audience",
                expected: audience.to_owned(),
                found: claims.aud,
            });
        }
        if claims.ws != workspace {
            return Err(JwtError::Mismatch {
                claim: "workspace",
                expected: workspace.to_string(),
                found: claims.ws.to_string(),
            });
        }
        Ok(claims)
    }
}

impl JwtVerifier {
    /// Verifies an access token for the REST API at time `now` (Unix seconds).
    pub fn verify_access(&self, token: &str, now: i64) -> Result<AccessClaims, JwtError> {
        let claims: AccessClaims = self.verify_signature(token)?;
        if now >= claims.exp + LEEWAY_SECONDS {
            return Err(JwtError::Expired);
        }
        if claims.nbf > now + LEEWAY_SECONDS {
            return Err(JwtError::NotYetValid);
        }
        if claims.aud != API_AUDIENCE {
            return Err(JwtError::Mismatch {
                claim: "audience",
                expected: API_AUDIENCE.to_owned(),
                found: claims.aud,
            });
        }
        Ok(claims)
    }
}

/// Length of `.signature` at the end of `token`.
fn signature_part_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_json<T: DeserializeOwned>(part: &str, what: &'static str) -> Result<T, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(ws: Uuid, exp: i64) -> SessionClaims {
        SessionClaims {
            iss: "k8shell-identity".into(),
            sub: "alice".into(),
            aud: "k8shelld".into(),
            ws,
            sid: Uuid::now_v7(),
            iat: 1_000,
            nbf: None,
            exp,
            jti: None,
        }
    }

    #[test]
    fn a_signed_session_token_verifies() {
        let (signer, _) = JwtSigner::generate("k1").unwrap();
        let verifier = JwtVerifier::from_jwks(&Jwks {
            keys: vec![signer.jwk()],
        })
        .unwrap();
        let ws = Uuid::now_v7();
        let token = signer.sign(&claims(ws, 2_000)).unwrap();
        let got = verifier
            .verify_session(&token, "k8shelld", ws, 1_500)
            .unwrap();
        assert_eq!(got.sub, "alice");
    }

    #[test]
    fn bad_tokens_are_refused_for_the_right_reason() {
        let (signer, _) = JwtSigner::generate("k1").unwrap();
        let (other, _) = JwtSigner::generate("k1").unwrap();
        let verifier = JwtVerifier::from_jwks(&Jwks {
            keys: vec![signer.jwk()],
        })
        .unwrap();
        let ws = Uuid::now_v7();
        let check = |token: &str| verifier.verify_session(token, "k8shelld", ws, 1_500);

        let expired = signer.sign(&claims(ws, 1_400)).unwrap();
        assert_eq!(check(&expired), Err(JwtError::Expired));
        let elsewhere = signer.sign(&claims(Uuid::now_v7(), 2_000)).unwrap();
        assert!(matches!(
            check(&elsewhere),
            Err(JwtError::Mismatch {
                claim: "workspace",
                ..
            })
        ));
        let forged = other.sign(&claims(ws, 2_000)).unwrap();
        assert_eq!(check(&forged), Err(JwtError::Signature));

        // alg=none with the same claims.
        let good = signer.sign(&claims(ws, 2_000)).unwrap();
        let payload = good.split('.').nth(1).unwrap();
        let none = format!("{}.{payload}.", B64.encode(br#"{"alg":"none"}"#));
        assert_eq!(check(&none), Err(JwtError::Algorithm("none".into())));
        assert!(matches!(check("garbage"), Err(JwtError::Malformed(_))));

        // A tampered payload breaks the signature.
        let mut tampered_claims = claims(ws, 2_000);
        tampered_claims.sub = "root".into();
        let tampered_payload = B64.encode(serde_json::to_vec(&tampered_claims).unwrap());
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = &tampered_payload;
        assert_eq!(check(&parts.join(".")), Err(JwtError::Signature));
    }

    #[test]
    fn a_stored_key_signs_the_same_as_before() {
        let (signer, pkcs8) = JwtSigner::generate("k1").unwrap();
        let reloaded = JwtSigner::from_pkcs8("k1", &pkcs8).unwrap();
        assert_eq!(signer.jwk(), reloaded.jwk());
    }
}
