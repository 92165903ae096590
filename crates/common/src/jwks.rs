//! The keys that verify session tokens, from a JWKS file or URL, refreshed when they rotate.
//!
//! Identity publishes a new key before it signs with it; verifiers refresh periodically and as
//! soon as a token names a key they do not know yet.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::jwt::{AccessClaims, JwtError, JwtVerifier, SessionClaims};

/// A JWKS is re-read at most this often when tokens name unknown keys.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Where the keys come from. Exactly one of `file` and `url`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// A JWKS file (written by the runtime or a config manager).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `https://identity:7001/.well-known/jwks.json` (or `http://` on loopback).
    #[serde(default)]
    pub url: Option<String>,
    /// CA certificates that sign the URL's server certificate (required for https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often the keys are re-read even when no token asks for it.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_every: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

impl JwksConfig {
    /// Keys from a file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            file: Some(path.into()),
            url: None,
            ca_file: None,
            refresh_every: default_refresh(),
        }
    }

    /// Keys from a URL.
    pub fn url(url: impl Into<String>, ca_file: Option<PathBuf>) -> Self {
        Self {
            file: None,
            url: Some(url.into()),
            ca_file,
            refresh_every: default_refresh(),
        }
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS: set exactly one of `file` and `url`")]
    Source,
    #[error("JWKS {source_name}: {message}")]
    Load {
        source_name: String,
        message: String,
    },
}

/// The current verifier, kept fresh.
#[derive(Debug)]
pub struct JwksCache {
    config: JwksConfig,
    verifier: ArcSwap<JwtVerifier>,
    last_refresh: Mutex<Instant>,
    wanted: Notify,
}

impl JwksCache {
    /// Loads the keys once; fails if they cannot be had now.
    pub async fn load(config: JwksConfig) -> Result<Arc<Self>, JwksError> {
        if config.file.is_some() == config.url.is_some() {
            return Err(JwksError::Source);
        }
        let verifier = fetch(&config).await?;
        Ok(Arc::new(Self {
            config,
            verifier: ArcSwap::from_pointee(verifier),
            last_refresh: Mutex::new(Instant::now()),
            wanted: Notify::new(),
        }))
    }

    /// Refreshes every `refresh_every`, and soon after a token names an unknown key.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(this.config.refresh_every) => {}
                    _ = this.wanted.notified() => {}
                }
                match fetch(&this.config).await {
                    Ok(verifier) => this.verifier.store(Arc::new(verifier)),
                    Err(error) => {
                        tracing::warn!(%error, "cannot refresh the JWKS; keeping the current keys")
                    }
                }
            }
        })
    }

    /// Verifies a session token. A token signed by an unknown key triggers a refresh: at once
    /// for a file, in the background for a URL (the caller's next attempt then succeeds).
    pub fn verify_session(
        &self,
        token: &str,
        audience: &str,
        workspace: Uuid,
        now: i64,
    ) -> Result<SessionClaims, JwtError> {
        self.verify_with(|verifier| verifier.verify_session(token, audience, workspace, now))
    }

    /// Verifies an access token of the REST API, refreshing the keys like
    /// [`Self::verify_session`].
    pub fn verify_access(&self, token: &str, now: i64) -> Result<AccessClaims, JwtError> {
        self.verify_with(|verifier| verifier.verify_access(token, now))
    }

    fn verify_with<C>(
        &self,
        verify: impl Fn(&JwtVerifier) -> Result<C, JwtError>,
    ) -> Result<C, JwtError> {
        let result = verify(&self.verifier.load());
        let Err(JwtError::UnknownKey(_)) = &result else {
            return result;
        };
        if !self.refresh_allowed() {
            return result;
        }
        match &self.config.file {
            Some(path) => {
                match read_file(path) {
                    Ok(verifier) => self.verifier.store(Arc::new(verifier)),
                    Err(error) => tracing::warn!(%error, "cannot reload the JWKS file"),
                }
                verify(&self.verifier.load())
            }
            None => {
                self.wanted.notify_one();
                result
            }
        }
    }

    fn refresh_allowed(&self) -> bool {
        let mut last = self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.elapsed() >= REFRESH_AT_MOST_EVERY {
            *last = Instant::now();
            true
        } else {
            false
        }
    }
}

async fn fetch(config: &JwksConfig) -> Result<JwtVerifier, JwksError> {
    match (&config.file, &config.url) {
        (Some(path), None) => read_file(path),
        (None, Some(url)) => {
            let text = crate::http::get(url, config.ca_file.as_deref())
                .await
                .map_err(|message| JwksError::Load {
                    source_name: url.clone(),
                    message,
                })?;
            JwtVerifier::from_jwks_json(&text).map_err(|e| JwksError::Load {
                source_name: url.clone(),
                message: e.to_string(),
            })
        }
        _ => Err(JwksError::Source),
    }
}

fn read_file(path: &Path) -> Result<JwtVerifier, JwksError> {
    let load_error = |message: String| JwksError::Load {
        source_name: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| load_error(e.to_string()))?;
    JwtVerifier::from_jwks_json(&text).map_err(|e| load_error(e.to_string()))
}
