//! Workspace images: the reference a blueprint gets, and its build when the registry does not
//! have it yet (buildah, the blueprint crate's `oci` builder).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use k8shell_blueprint::Compiled;
use k8shell_blueprint::oci::{OciTarget, build};

use crate::config::ImagesConfig;

/// Builds and remembers what the registry has.
#[derive(Debug)]
pub struct Images {
    config: ImagesConfig,
    /// References known to be in the registry (built or found by this process).
    present: Mutex<HashSet<String>>,
    /// One build at a time: buildah on a small host, and no two builds of one image.
    building: tokio::sync::Mutex<()>,
}

impl Images {
    pub fn new(config: ImagesConfig) -> Self {
        Self {
            config,
            present: Mutex::new(HashSet::new()),
            building: tokio::sync::Mutex::new(()),
        }
    }

    fn repository(&self, compiled: &Compiled) -> String {
        format!(
            "{}/{}",
            self.config.repository.trim_end_matches('/'),
            compiled.spec.name
        )
    }

    /// The image of a compiled blueprint: same blueprint, same reference.
    pub fn reference(&self, compiled: &Compiled) -> String {
        format!("{}:{}", self.repository(compiled), compiled.image_tag())
    }

    /// Makes sure the registry has the blueprint's image (`known`, as stored at creation),
    /// building it if not. The error is for the workspace's status: it names the image and what
    /// failed.
    pub async fn ensure(&self, known: &str, source: &str, file: &str) -> Result<String, String> {
        // Seen by this process already: no need to evaluate the blueprint again.
        if self.is_present(known) {
            return Ok(known.to_owned());
        }
        let compiled = compile(source, file).await?;
        let reference = self.reference(&compiled);
        if self.is_present(&reference) {
            return Ok(reference);
        }
        let _one_build = self.building.lock().await;
        if self.is_present(&reference) {
            return Ok(reference);
        }
        let target = OciTarget {
            repository: self.repository(&compiled),
            tls_verify: self.config.tls_verify,
            credentials: None,
            auth_file: self.config.auth_file.clone(),
            storage: self.config.build_dir.clone(),
        };
        let built = tokio::task::spawn_blocking(move || {
            build(&compiled, &target, &mut |progress| {
                tracing::debug!(?progress, "image build");
            })
        })
        .await
        .map_err(|e| format!("building image {reference}: {e}"))?
        .map_err(|e| format!("building image {reference}: {e}"))?;
        if built.pushed {
            tracing::info!(image = %built.reference, "built and pushed a workspace image");
        }
        self.present
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(built.reference.clone());
        Ok(built.reference)
    }

    fn is_present(&self, reference: &str) -> bool {
        self.present
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(reference)
    }
}

/// Compiles a blueprint off the async threads (Nickel evaluation takes tens of milliseconds).
pub async fn compile(source: &str, file: &str) -> Result<Compiled, String> {
    let (source, file) = (source.to_owned(), file.to_owned());
    tokio::task::spawn_blocking(move || k8shell_blueprint::compile_source(&source, &file))
        .await
        .map_err(|e| format!("compiling the blueprint: {e}"))?
        .map_err(|e| e.to_string())
}
