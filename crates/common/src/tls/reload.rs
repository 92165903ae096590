//! TLS material that follows its files: rustls configs whose certificate, key and trust roots are
//! swapped atomically when the PEM files change on disk.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{TlsError, TlsFiles, crypto_provider};

/// One consistent set of loaded material.
struct Material {
    certified_key: Arc<CertifiedKey>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<dyn ServerCertVerifier>,
    fingerprint: u64,
}

/// A service's certificate, key and trust roots, reloaded when their files change.
pub struct ReloadingTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Material>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Loads the files once; fails if any is missing or inconsistent.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = crypto_provider();
        let material = load_material(&files, &provider)?;
        let (generation, _) = watch::channel(0);
        Ok(Arc::new(Self {
            files,
            provider,
            current: ArcSwap::from_pointee(material),
            generation,
        }))
    }

    /// The files this material comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files; swaps the material in if they changed. Returns whether it swapped.
    /// On error the previous material stays in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let fingerprint = fingerprint(&self.files)?;
        if fingerprint == self.current.load().fingerprint {
            return Ok(false);
        }
        let material = load_material(&self.files, &self.provider)?;
        self.current.store(Arc::new(material));
        self.generation.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// A receiver that changes each time new material is swapped in.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Polls the files every `interval` until `stop` fires. Content, not mtime, decides: this
    /// also follows Kubernetes secret volumes, which swap a symlink.
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                match this.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %this.files.cert_file.display(), "reloaded TLS certificate")
                    }
                    Ok(false) => {}
                    // A rotation writes several files; a half-written set is retried next tick.
                    Err(TlsError::KeyMismatch { .. }) => {
                        tracing::debug!("TLS files are being rotated; retrying")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS reload failed; keeping the current certificate")
                    }
                }
            }
        })
    }

    /// A server config that presents this service's certificate and requires a client
    /// certificate signed by the configured CA (mTLS). `alpn` lists protocols, e.g. `h2`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(FollowingClientVerifier(Arc::clone(self))))
            .with_cert_resolver(Arc::new(FollowingCertResolver(Arc::clone(self))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A client config that presents this service's certificate and trusts only the
    /// configured CA.
    pub fn client_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FollowingServerVerifier(Arc::clone(self))))
            .with_client_cert_resolver(Arc::new(FollowingCertResolver(Arc::clone(self))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    fn material(&self) -> arc_swap::Guard<Arc<Material>> {
        self.current.load()
    }

    /// Handshake signatures do not depend on the trust roots, only on the provider.
    fn verify_signature(
        &self,
        version: Tls,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        match version {
            Tls::V12 => verify_tls12_signature(message, cert, dss, algs),
            Tls::V13 => verify_tls13_signature(message, cert, dss, algs),
        }
    }
}

/// The TLS version whose signature rules apply.
#[derive(Debug, Clone, Copy)]
enum Tls {
    V12,
    V13,
}

fn fingerprint(files: &TlsFiles) -> Result<u64, TlsError> {
    let mut hasher = DefaultHasher::new();
    for path in [&files.cert_file, &files.key_file, &files.ca_file] {
        std::fs::read(path)
            .map_err(|e| TlsError::io(path, e))?
            .hash(&mut hasher);
    }
    Ok(hasher.finish())
}

fn load_material(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Material, TlsError> {
    // Fingerprint first: if a file changes while we read, the next poll sees a new fingerprint.
    let fingerprint = fingerprint(files)?;
    let certs = read_certs(&files.cert_file)?;
    let key_pem = std::fs::read(&files.key_file).map_err(|e| TlsError::io(&files.key_file, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: files.key_file.clone(),
        message: format!("no usable private key: {e}"),
    })?;
    let signing_key = provider.key_provider.load_private_key(key)?;
    let certified_key = CertifiedKey::new(certs, signing_key);
    if certified_key.keys_match().is_err() {
        return Err(TlsError::KeyMismatch {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
        });
    }

    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca_file)? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            path: files.ca_file.clone(),
            message: format!("unusable CA certificate: {e}"),
        })?;
    }
    let roots = Arc::new(roots);
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
            .build()
            .map_err(|e| TlsError::Pem {
                path: files.ca_file.clone(),
                message: e.to_string(),
            })?;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
        .build()
        .map_err(|e| TlsError::Pem {
            path: files.ca_file.clone(),
            message: e.to_string(),
        })?;
    Ok(Material {
        certified_key: Arc::new(certified_key),
        client_verifier,
        server_verifier,
        fingerprint,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Presents whatever certificate is current, as server and as client.
#[derive(Debug)]
struct FollowingCertResolver(Arc<ReloadingTls>);

impl ResolvesServerCert for FollowingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.material().certified_key))
    }
}

impl ResolvesClientCert for FollowingCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.material().certified_key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against whatever CA is current.
#[derive(Debug)]
struct FollowingClientVerifier(Arc<ReloadingTls>);

impl ClientCertVerifier for FollowingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would have to outlive a reload; they are optional, so send none.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .material()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V12, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V13, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies server certificates against whatever CA is current.
#[derive(Debug)]
struct FollowingServerVerifier(Arc<ReloadingTls>);

impl ServerCertVerifier for FollowingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.material().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V12, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_signature(Tls::V13, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
