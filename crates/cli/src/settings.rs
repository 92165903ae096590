//! Where the CLI keeps what it knows between runs: the API's URL in
//! `$XDG_CONFIG_HOME/k8shell/config.toml` and the access token in `credentials` next to it
//! (mode 0600). `K8SHELL_URL` and `K8SHELL_TOKEN` override both.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::PathBuf;

use anyhow::Context as _;
use etcetera::BaseStrategy as _;
use serde::{Deserialize, Serialize};

/// The saved settings.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The API, e.g. `https://k8shell.example.com`.
    pub url: Option<String>,
    /// Who signed in (shown by `whoami` when the server cannot be asked).
    pub username: Option<String>,
}

pub fn dir() -> anyhow::Result<PathBuf> {
    let base = etcetera::choose_base_strategy()
        .context("cannot find your home directory to keep the CLI's settings: set HOME")?;
    Ok(base.config_dir().join("k8shell"))
}

pub fn load() -> anyhow::Result<Settings> {
    let path = dir()?.join("config.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not valid: fix or delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn save(settings: &Settings) -> anyhow::Result<()> {
    let dir = dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(settings)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The saved access token.
pub fn token() -> anyhow::Result<Option<String>> {
    let path = dir()?.join("credentials");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves the access token where only you can read it.
pub fn save_token(token: &str) -> anyhow::Result<()> {
    let dir = dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("credentials");
    let temp = dir.join(format!(".credentials.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("writing {}", temp.display()))?;
    file.write_all(token.as_bytes())?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))
}

pub fn forget_token() -> anyhow::Result<bool> {
    let path = dir()?.join("credentials");
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
