//! Images for the local runtime: pulled with skopeo into one OCI layout (blobs addressed by
//! digest, so layers shared between images are stored once), unpacked with umoci.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::runtime::RuntimeError;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    /// Verify TLS (off only for plain-HTTP registries such as the tests').
    pub tls_verify: bool,
    /// A docker-style `config.json` with credentials.
    pub auth_file: Option<PathBuf>,
}

/// The image cache.
#[derive(Debug)]
pub struct ImageCache {
    layout: PathBuf,
    access: RegistryAccess,
    /// skopeo writes the layout's index: one pull at a time.
    pulling: tokio::sync::Mutex<()>,
    /// Configurations read from the layout: a start of a cached image spawns no skopeo.
    configs: std::sync::Mutex<std::collections::HashMap<String, ImageConfig>>,
}

/// The image's own configuration (what the blueprint builder set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
}

impl ImageCache {
    pub fn new(layout: PathBuf, access: RegistryAccess) -> Self {
        Self {
            layout,
            access,
            pulling: tokio::sync::Mutex::new(()),
            configs: std::sync::Mutex::default(),
        }
    }

    /// The layout's name for an image reference.
    fn tag(image: &str) -> String {
        image
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    fn oci_ref(&self, image: &str) -> String {
        format!("oci:{}:{}", self.layout.display(), Self::tag(image))
    }

    /// Pulls `image` unless the cache has it (a digest reference never changes; a tag is pulled
    /// again only when missing, so a restart does not depend on the registry). Returns the
    /// image's configuration.
    pub async fn pull(&self, image: &str) -> Result<ImageConfig, RuntimeError> {
        if let Some(config) = self.remembered(image) {
            return Ok(config);
        }
        let _one_at_a_time = self.pulling.lock().await;
        if let Some(config) = self.remembered(image) {
            return Ok(config);
        }
        if let Ok(config) = self.config(image).await {
            return Ok(config);
        }
        std::fs::create_dir_all(&self.layout)
            .map_err(RuntimeError::io("creating the image cache"))?;
        let mut command = Command::new(super::tool("skopeo", "skopeo")?);
        command
            .args([
                "copy",
                "--quiet",
                &format!("--src-tls-verify={}", self.access.tls_verify),
            ])
            .stdin(Stdio::null());
        if let Some(file) = &self.access.auth_file {
            command.arg("--src-authfile").arg(file);
        }
        command
            .arg(format!("docker://{image}"))
            .arg(self.oci_ref(image));
        let out = command
            .output()
            .await
            .map_err(RuntimeError::io("running skopeo copy"))?;
        if !out.status.success() {
            return Err(RuntimeError::Image {
                image: image.to_owned(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        self.config(image).await
    }

    fn remembered(&self, image: &str) -> Option<ImageConfig> {
        self.configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(image)
            .cloned()
    }

    /// The image's configuration, from the cache.
    async fn config(&self, image: &str) -> Result<ImageConfig, RuntimeError> {
        let out = Command::new(super::tool("skopeo", "skopeo")?)
            .args(["inspect", "--config"])
            .arg(self.oci_ref(image))
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(RuntimeError::io("running skopeo inspect"))?;
        if !out.status.success() {
            return Err(RuntimeError::Image {
                image: image.to_owned(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        let config: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| RuntimeError::Image {
                image: image.to_owned(),
                detail: format!("unreadable image configuration: {e}"),
            })?;
        let env = config["config"]["Env"]
            .as_array()
            .map(|env| {
                env.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let config = ImageConfig { env };
        self.configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(image.to_owned(), config.clone());
        Ok(config)
    }

    /// Unpacks the image's root file system into `rootfs` (which must not exist).
    pub async fn unpack(&self, image: &str, rootfs: &Path) -> Result<(), RuntimeError> {
        let image_ref = format!("{}:{}", self.layout.display(), Self::tag(image));
        let out = Command::new(super::tool("umoci", "umoci")?)
            .args(["raw", "unpack", "--image", &image_ref])
            .arg(rootfs)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(RuntimeError::io("running umoci"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Step {
                step: format!("unpacking {image}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}
