//! OpenID Connect ID tokens from an external provider: signatures with the provider's JWKS
//! (RS256, ES256 or EdDSA), then issuer, audience, nonce and lifetime.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;

use crate::jwt::{JwtError, LEEWAY_SECONDS};

/// A provider's public key.
#[derive(Debug, Clone)]
enum ProviderKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// The keys of a provider's `jwks_uri`.
#[derive(Debug, Clone, Default)]
pub struct ProviderKeys {
    keys: HashMap<String, ProviderKey>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: String,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// What an ID token says, once verified.
#[derive(Debug, Clone, PartialEq)]
pub struct IdTokenClaims {
    pub issuer: String,
    pub subject: String,
    /// Every other claim (email, groups, names, …).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl IdTokenClaims {
    /// A string claim.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(|v| v.as_str())
    }

    /// A claim that is a list of strings (or one string).
    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.claims.get(name) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        }
    }
}

impl ProviderKeys {
    /// Parses a JWKS; keys of unknown types, and encryption keys, are skipped.
    pub fn from_jwks_json(text: &str) -> Result<Self, JwtError> {
        let raw: RawJwks = serde_json::from_str(text).map_err(|e| JwtError::Jwks(e.to_string()))?;
        let decode = |v: &Option<String>| -> Result<Vec<u8>, JwtError> {
            B64.decode(v.as_deref().unwrap_or_default())
                .map_err(|_| JwtError::Jwks("a key parameter is not base64url".to_owned()))
        };
        let mut keys = HashMap::new();
        for jwk in raw.keys {
            if jwk.use_.as_deref() == Some("enc") {
                continue;
            }
            let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
                ("RSA", _) => ProviderKey::Rsa {
                    n: decode(&jwk.n)?,
                    e: decode(&jwk.e)?,
                },
                ("EC", Some("P-256")) => {
                    let mut point = vec![4u8];
                    point.extend(decode(&jwk.x)?);
                    point.extend(decode(&jwk.y)?);
                    ProviderKey::P256(point)
                }
                ("OKP", Some("Ed25519")) => ProviderKey::Ed25519(decode(&jwk.x)?),
                _ => continue,
            };
            keys.insert(jwk.kid, key);
        }
        if keys.is_empty() {
            return Err(JwtError::Jwks("no usable signing key".to_owned()));
        }
        Ok(Self { keys })
    }

    /// Verifies an ID token for `client_id` from `issuer`, carrying `nonce`, at `now`.
    pub fn verify_id_token(
        &self,
        token: &str,
        issuer: &str,
        client_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<IdTokenClaims, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("expected three dot-separated parts"));
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            #[serde(default)]
            kid: String,
        }
        let header: Header = json_part(header, "header")?;
        let key = if header.kid.is_empty() && self.keys.len() == 1 {
            self.keys
                .values()
                .next()
                .ok_or(JwtError::Malformed("no key"))?
        } else {
            self.keys
                .get(&header.kid)
                .ok_or_else(|| JwtError::UnknownKey(header.kid.clone()))?
        };
        let signature = B64
            .decode(signature)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        let message = &token.as_bytes()[..header_and_payload_len(token)];
        let verified = match (header.alg.as_str(), key) {
            ("RS256", ProviderKey::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &signature)
                .is_ok(),
            ("ES256", ProviderKey::P256(point)) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, &signature)
                    .is_ok()
            }
            ("EdDSA", ProviderKey::Ed25519(x)) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, &signature)
                .is_ok(),
            (alg @ ("RS256" | "ES256" | "EdDSA"), _) => {
                return Err(JwtError::Algorithm(format!(
                    "{alg} with a key of another type"
                )));
            }
            (other, _) => return Err(JwtError::Algorithm(other.to_owned())),
        };
        if !verified {
            return Err(JwtError::Signature);
        }
        let mut claims: serde_json::Map<String, serde_json::Value> = json_part(payload, "claims")?;
        let text = |claims: &serde_json::Map<String, serde_json::Value>, name: &str| {
            claims.get(name).and_then(|v| v.as_str()).map(str::to_owned)
        };
        let number = |claims: &serde_json::Map<String, serde_json::Value>, name: &str| {
            claims.get(name).and_then(serde_json::Value::as_i64)
        };
        let iss = text(&claims, "iss").unwrap_or_default();
        if iss != issuer {
            return Err(JwtError::Mismatch {
                claim: "issuer",
                expected: issuer.to_owned(),
                found: iss,
            });
        }
        let audiences = match claims.get("aud") {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(many)) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| a == client_id) {
            return Err(JwtError::Mismatch {
                claim: "audience",
                expected: client_id.to_owned(),
                found: audiences.join(","),
            });
        }
        let found_nonce = text(&claims, "nonce").unwrap_or_default();
        if found_nonce != nonce {
            return Err(JwtError::Mismatch {
                claim: "nonce",
                expected: "the nonce of this login".to_owned(),
                found: "another".to_owned(),
            });
        }
        let exp = number(&claims, "exp").ok_or(JwtError::Malformed("no exp"))?;
        if now >= exp + LEEWAY_SECONDS {
            return Err(JwtError::Expired);
        }
        if number(&claims, "iat").is_some_and(|iat| iat > now + LEEWAY_SECONDS) {
            return Err(JwtError::NotYetValid);
        }
        let subject = text(&claims, "sub").ok_or(JwtError::Malformed("no sub"))?;
        for registered in ["iss", "sub", "aud", "exp", "iat", "nonce"] {
            claims.remove(registered);
        }
        Ok(IdTokenClaims {
            issuer: iss,
            subject,
            claims,
        })
    }
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn json_part<T: serde::de::DeserializeOwned>(
    part: &str,
    what: &'static str,
) -> Result<T, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what))
}
