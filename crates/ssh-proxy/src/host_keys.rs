//! The proxy's host keys: Ed25519 and ECDSA P-256, generated on first start and kept in OpenSSH
//! format with mode 0600 (a key others can read is refused, as sshd refuses it). Their
//! fingerprints are logged so that operators can publish them for `known_hosts`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};

/// What is wrong with the host keys.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} can be read by others (mode {mode:o}): run `chmod 600 {}`; a host key must stay private",
        path.display(), path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{} is not an OpenSSH {expected} private key: {detail}", path.display())]
    Unreadable {
        path: PathBuf,
        expected: String,
        detail: String,
    },
    #[error("generating the {algorithm} host key: {detail}")]
    Generate { algorithm: String, detail: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HostKeyError + '_ {
    move |source| HostKeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The kinds of host key the proxy holds, best first, with their file names (as sshd names them).
fn kinds() -> [(&'static str, Algorithm); 2] {
    [
        ("ssh_host_ed25519_key", Algorithm::Ed25519),
        (
            "ssh_host_ecdsa_key",
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
    ]
}

/// The SHA-256 fingerprint as `ssh-keygen -l` prints it (`SHA256:…`).
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// Reads the host keys in `dir`, generating those that do not exist yet.
pub fn load_or_generate(dir: &Path) -> Result<Vec<PrivateKey>, HostKeyError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut keys = Vec::new();
    for (file, algorithm) in kinds() {
        let path = dir.join(file);
        let (key, generated) = if path.exists() {
            (read(&path, &algorithm)?, false)
        } else {
            (generate(&path, &algorithm)?, true)
        };
        tracing::info!(
            key = %path.display(),
            fingerprint = %fingerprint(&key),
            generated,
            "host key"
        );
        keys.push(key);
    }
    Ok(keys)
}

fn read(path: &Path, expected: &Algorithm) -> Result<PrivateKey, HostKeyError> {
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(HostKeyError::Exposed {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let unreadable = |detail: String| HostKeyError::Unreadable {
        path: path.to_owned(),
        expected: expected.to_string(),
        detail,
    };
    let key = PrivateKey::from_openssh(&text).map_err(|e| unreadable(e.to_string()))?;
    if &key.algorithm() != expected {
        return Err(unreadable(format!("it holds a {} key", key.algorithm())));
    }
    Ok(key)
}

/// A new key, written beside and renamed into place (a crash leaves no half key), and its public
/// half in `<file>.pub` for operators.
fn generate(path: &Path, algorithm: &Algorithm) -> Result<PrivateKey, HostKeyError> {
    let failed = |detail: String| HostKeyError::Generate {
        algorithm: algorithm.to_string(),
        detail,
    };
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), algorithm.clone())
        .map_err(|e| failed(e.to_string()))?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| failed(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| failed(e.to_string()))?;
    let temp = path.with_extension("new");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io(&temp))?;
    file.write_all(private.as_bytes()).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    std::fs::rename(&temp, path).map_err(io(path))?;
    let public_path = path.with_extension("pub");
    std::fs::write(&public_path, format!("{public}\n")).map_err(io(&public_path))?;
    Ok(key)
}
