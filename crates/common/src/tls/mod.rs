//! mTLS between services with rustls (ring provider).
//!
//! [`ReloadingTls`] holds a service's certificate, key and trust roots loaded from PEM files and
//! swaps them when the files change, so that rotated certificates are served without a restart.
//! Its server config requires a client certificate from the same CA; [`peer_service`] reads the
//! calling service's name from that certificate.

mod ca;
mod peer;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use serde::Deserialize;

pub use ca::{IssuedCert, LocalCa};
pub use peer::{SPIFFE_PREFIX, peer_service, spiffe_uri};
pub use reload::ReloadingTls;

/// Where a service's TLS material lives. Any of the files may be replaced at run time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain of this service (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key of this service (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
    /// PEM certificates of the CAs whose certificates peers must present.
    pub ca_file: PathBuf,
}

/// What went wrong with TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: no certificate found; expected a PEM `CERTIFICATE` block")]
    NoCertificate { path: PathBuf },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate generation: {0}")]
    Generate(String),
    #[error("peer certificate: {0}")]
    Peer(String),
}

impl TlsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn generate(e: impl std::fmt::Display) -> Self {
        Self::Generate(e.to_string())
    }
}

/// The one crypto provider of the project (ring).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider; call it first in every `main` and test
/// harness. Installing twice is harmless.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}
