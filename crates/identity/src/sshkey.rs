//! OpenSSH public keys: parsing an authorized_keys line, checking the key's structure, and its
//! SHA256 fingerprint as `ssh-keygen -l` prints it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// A public key that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPublicKey {
    pub key_type: String,
    pub blob: Vec<u8>,
    pub comment: String,
}

/// Why a key was refused; the text tells the user what to paste instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("empty key: paste a line such as `ssh-ed25519 AAAAC3Nz… you@host` (the .pub file)")]
    Empty,
    #[error("that is a private key: paste the public one (the .pub file), never the private key")]
    PrivateKey,
    #[error(
        "unsupported key type {0:?}: use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (≥ 2048 bits)"
    )]
    Unsupported(String),
    #[error("the key data is not valid base64: copy the whole line from the .pub file")]
    Base64,
    #[error("the key data is damaged ({0}): copy the whole line from the .pub file")]
    Malformed(&'static str),
    #[error("the line says {declared:?} but the key data is {actual:?}")]
    TypeMismatch { declared: String, actual: String },
    #[error("RSA keys need at least 2048 bits; this one has {0}")]
    WeakRsa(usize),
}

const SUPPORTED: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl SshPublicKey {
    /// Parses `type base64 [comment]` (options before the type are not accepted here), or a bare
    /// base64 blob as SSH servers receive it.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        let mut fields = text.split_whitespace();
        let first = fields.next().ok_or(KeyError::Empty)?;
        let (declared, data, comment) = if SUPPORTED.contains(&first)
            || first.starts_with("ssh-")
            || first.starts_with("ecdsa-")
            || first.starts_with("sk-")
        {
            let data = fields
                .next()
                .ok_or(KeyError::Malformed("no key data after the type"))?;
            let comment = fields.collect::<Vec<_>>().join(" ");
            (Some(first.to_owned()), data, comment)
        } else {
            (None, first, String::new())
        };
        let blob = STANDARD
            .decode(data)
            .or_else(|_| STANDARD_NO_PAD.decode(data))
            .map_err(|_| KeyError::Base64)?;
        let key_type = check_blob(&blob)?;
        if let Some(declared) = declared
            && declared != key_type
        {
            return Err(KeyError::TypeMismatch {
                declared,
                actual: key_type,
            });
        }
        Ok(Self {
            key_type,
            blob,
            comment,
        })
    }

    /// `SHA256:<base64 without padding>` of the key blob.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.blob)
    }

    /// The authorized_keys line.
    pub fn to_openssh(&self) -> String {
        let mut line = format!("{} {}", self.key_type, STANDARD.encode(&self.blob));
        if !self.comment.is_empty() {
            line.push(' ');
            line.push_str(&self.comment);
        }
        line
    }
}

/// `SHA256:…` of a key blob.
pub fn fingerprint(blob: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, blob);
    format!("SHA256:{}", STANDARD_NO_PAD.encode(digest.as_ref()))
}

/// Reads the SSH wire encoding (RFC 4253 §6.6) far enough to know the key is whole.
fn check_blob(blob: &[u8]) -> Result<String, KeyError> {
    let mut reader = Reader(blob);
    let key_type = String::from_utf8(reader.string()?.to_vec())
        .map_err(|_| KeyError::Malformed("type is not text"))?;
    match key_type.as_str() {
        "ssh-ed25519" => {
            if reader.string()?.len() != 32 {
                return Err(KeyError::Malformed("an Ed25519 key has 32 bytes"));
            }
        }
        "sk-ssh-ed25519@openssh.com" => {
            if reader.string()?.len() != 32 {
                return Err(KeyError::Malformed("an Ed25519 key has 32 bytes"));
            }
            reader.string()?; // application
        }
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => {
            let curve = reader.string()?;
            if !key_type.ends_with(std::str::from_utf8(curve).unwrap_or("?")) {
                return Err(KeyError::Malformed("curve does not match the key type"));
            }
            let point = reader.string()?;
            if point.first() != Some(&4) {
                return Err(KeyError::Malformed("not an uncompressed curve point"));
            }
        }
        "sk-ecdsa-sha2-nistp256@openssh.com" => {
            reader.string()?;
            reader.string()?;
            reader.string()?;
        }
        "ssh-rsa" => {
            let exponent = reader.string()?;
            let modulus = reader.string()?;
            if exponent.is_empty() || modulus.is_empty() {
                return Err(KeyError::Malformed("empty RSA parameters"));
            }
            let leading = modulus.iter().take_while(|b| **b == 0).count();
            let significant = &modulus[leading..];
            let bits = significant.first().map_or(0, |b| {
                (significant.len() - 1) * 8 + (8 - b.leading_zeros() as usize)
            });
            if bits < 2048 {
                return Err(KeyError::WeakRsa(bits));
            }
        }
        other => return Err(KeyError::Unsupported(other.to_owned())),
    }
    if !reader.0.is_empty() {
        return Err(KeyError::Malformed("trailing bytes"));
    }
    Ok(key_type)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Result<&'a [u8], KeyError> {
        let (len, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or(KeyError::Malformed("truncated"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(KeyError::Malformed("truncated"));
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn ed25519_lines_parse_with_fingerprint_and_comment() {
        let blob = wire(&[b"ssh-ed25519", &[7u8; 32]]);
        let line = format!("ssh-ed25519 {} alice@laptop", STANDARD.encode(&blob));
        let key = SshPublicKey::parse(&line).unwrap();
        assert_eq!(key.key_type, "ssh-ed25519");
        assert_eq!(key.comment, "alice@laptop");
        assert_eq!(key.to_openssh(), line);
        assert!(key.fingerprint().starts_with("SHA256:"));
        assert_eq!(key.fingerprint().len(), "SHA256:".len() + 43);
        // The bare blob (what an SSH server receives) is the same key.
        assert_eq!(
            SshPublicKey::parse(&STANDARD.encode(&blob))
                .unwrap()
                .fingerprint(),
            key.fingerprint()
        );
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        assert_eq!(SshPublicKey::parse("  "), Err(KeyError::Empty));
        assert_eq!(
            SshPublicKey::parse("-----BEGIN OPENSSH PRIVATE KEY-----"),
            Err(KeyError::PrivateKey)
        );
        assert_eq!(
            SshPublicKey::parse("ssh-ed25519 !!!"),
            Err(KeyError::Base64)
        );
        let short = wire(&[b"ssh-ed25519", &[7u8; 31]]);
        assert!(matches!(
            SshPublicKey::parse(&format!("ssh-ed25519 {}", STANDARD.encode(short))),
            Err(KeyError::Malformed(_))
        ));
        let ed = wire(&[b"ssh-ed25519", &[7u8; 32]]);
        assert!(matches!(
            SshPublicKey::parse(&format!("ssh-rsa {}", STANDARD.encode(&ed))),
            Err(KeyError::TypeMismatch { .. })
        ));
        let dss = wire(&[b"ssh-dss", b"p", b"q", b"g", b"y"]);
        assert_eq!(
            SshPublicKey::parse(&format!("ssh-dss {}", STANDARD.encode(dss))),
            Err(KeyError::Unsupported("ssh-dss".into()))
        );
        let mut modulus = vec![0u8];
        modulus.extend_from_slice(&[0xff; 128]);
        let rsa1024 = wire(&[b"ssh-rsa", &[1, 0, 1], &modulus]);
        assert_eq!(
            SshPublicKey::parse(&format!("ssh-rsa {}", STANDARD.encode(rsa1024))),
            Err(KeyError::WeakRsa(1024))
        );
    }
}
