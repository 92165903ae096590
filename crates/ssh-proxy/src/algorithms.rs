//! The algorithms the proxy speaks: modern ones only. Key exchange over Curve25519 (with strict
//! key exchange against Terrapin), AEAD ciphers, no SHA-1 anywhere, no CBC, no compression.

use std::borrow::Cow;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{Preferred, cipher, compression, kex, mac};

/// What the proxy offers, best first.
pub fn preferred() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(&[
            kex::CURVE25519,
            // The same exchange under its older name (paramiko knows only this one).
            kex::CURVE25519_PRE_RFC_8731,
            // Markers, advertised only when listed: extension negotiation and strict kex.
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        // Host keys offered are those held; the list is also `server-sig-algs`, so RSA user keys
        // (with SHA-2 signatures only) keep working.
        key: Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        cipher: Cow::Borrowed(&[
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
        ]),
        // Unused by AEAD ciphers, but clients that insist on a common MAC (paramiko) find one.
        mac: Cow::Borrowed(&[mac::HMAC_SHA256_ETM, mac::HMAC_SHA512_ETM]),
        compression: Cow::Borrowed(&[compression::NONE]),
        ..Preferred::default()
    }
}
