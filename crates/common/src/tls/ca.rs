//! A local certificate authority for the embedded default and for tests.
//!
//! In production the certificates come from Vault's PKI engine; here one CA key on disk signs a
//! certificate per service whose SAN URI `spiffe://k8shell/<service>` names the service, which is
//! what peers check (see [`super::peer_service`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::{TlsError, TlsFiles, spiffe_uri};

/// How long the CA's own certificate is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a service certificate is valid; rotation happens well before.
const SERVICE_VALIDITY: Duration = Duration::days(90);

/// A CA whose key is held in memory.
pub struct LocalCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

impl LocalCa {
    /// A new CA with a fresh key.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "k8shell");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + CA_VALIDITY;
        let key = KeyPair::generate().map_err(TlsError::generate)?;
        let cert = params.self_signed(&key).map_err(TlsError::generate)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA in `dir` (`ca.pem`, `ca-key.pem`), creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        if cert_path.exists() && key_path.exists() {
            let cert_pem = read(&cert_path)?;
            let key_pem = read(&key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
                path: key_path.clone(),
                message: e.to_string(),
            })?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| TlsError::Pem {
                path: cert_path.clone(),
                message: e.to_string(),
            })?;
            return Ok(Self { cert_pem, issuer });
        }
        let ca = Self::generate("k8shell local CA")?;
        std::fs::create_dir_all(dir).map_err(|e| TlsError::io(dir, e))?;
        write_private(&key_path, &ca.issuer.key().serialize_pem())?;
        write(&cert_path, &ca.cert_pem)?;
        Ok(ca)
    }

    /// The CA certificate, PEM-encoded: the trust root every service is given.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `service`, valid as server and client, with SAN URI
    /// `spiffe://k8shell/<service>` and the given DNS names and IP addresses.
    pub fn issue(&self, service: &str, hosts: &[&str]) -> Result<IssuedCert, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("k8shell-{service}"));
        params.distinguished_name = dn;
        let uri = spiffe_uri(service);
        params.subject_alt_names.push(SanType::URI(
            uri.as_str().try_into().map_err(TlsError::generate)?,
        ));
        for host in hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*host).try_into().map_err(TlsError::generate)?),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + SERVICE_VALIDITY;
        let key = KeyPair::generate().map_err(TlsError::generate)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(TlsError::generate)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `service` and writes `<service>.pem`, `<service>-key.pem` and
    /// `ca.pem` into `dir`; returns the paths, ready for [`super::ReloadingTls::load`].
    pub fn issue_files(
        &self,
        dir: &Path,
        service: &str,
        hosts: &[&str],
    ) -> Result<TlsFiles, TlsError> {
        let issued = self.issue(service, hosts)?;
        std::fs::create_dir_all(dir).map_err(|e| TlsError::io(dir, e))?;
        let files = TlsFiles {
            cert_file: dir.join(format!("{service}.pem")),
            key_file: dir.join(format!("{service}-key.pem")),
            ca_file: dir.join("ca.pem"),
        };
        write_private(&files.key_file, &issued.key_pem)?;
        write(&files.cert_file, &issued.cert_pem)?;
        if !files.ca_file.exists() {
            write(&files.ca_file, &self.cert_pem)?;
        }
        Ok(files)
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::io(path, e))
}

/// Writes through a temporary file and a rename, so that a reader never sees half a file.
fn write(path: &Path, contents: &str) -> Result<(), TlsError> {
    write_mode(path, contents, 0o644)
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    write_mode(path, contents, 0o600)
}

fn write_mode(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| TlsError::io(&tmp, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| TlsError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TlsError::io(path, e))
}
