//! Service identity in certificates: the SAN URI `spiffe://k8shell/<service>`.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

/// Prefix of the SAN URI that names a k8shell service.
pub const SPIFFE_PREFIX: &str = "spiffe://k8shell/";

/// The SAN URI naming `service`.
pub fn spiffe_uri(service: &str) -> String {
    format!("{SPIFFE_PREFIX}{service}")
}

/// The service name in a verified peer's leaf certificate (the first of `certs`).
///
/// Call it only on certificates that rustls has verified against the CA: it checks names, not
/// signatures.
pub fn peer_service(certs: &[CertificateDer<'_>]) -> Result<String, TlsError> {
    let leaf = certs
        .first()
        .ok_or_else(|| TlsError::Peer("the peer presented no certificate".to_owned()))?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| TlsError::Peer(format!("unparseable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::Peer(format!("bad subjectAltName: {e}")))?
        .ok_or_else(|| TlsError::Peer("certificate has no subjectAltName".to_owned()))?;
    let mut names = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(SPIFFE_PREFIX),
            _ => None,
        });
    match (names.next(), names.next()) {
        (Some(service), None) if is_service_name(service) => Ok(service.to_owned()),
        (Some(_), Some(_)) => Err(TlsError::Peer(
            "certificate names more than one k8shell service".to_owned(),
        )),
        _ => Err(TlsError::Peer(format!(
            "certificate has no SAN URI {SPIFFE_PREFIX}<service>"
        ))),
    }
}

fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
