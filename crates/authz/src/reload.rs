//! The current bundle, swapped atomically when the directory changes and the new bundle loads
//! and passes its tests; otherwise the previous one stays, and the failure is logged and counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::bundle::{Bundle, BundleError, revision_of};

/// The live bundle and its source.
#[derive(Debug)]
pub struct PolicySource {
    dir: PathBuf,
    pub current: ArcSwap<Bundle>,
    /// Bundles refused since start.
    pub refused: Counter,
}

impl PolicySource {
    /// Loads the bundle in `dir`; at start a bad bundle is an error.
    pub fn load(dir: PathBuf) -> Result<Arc<Self>, BundleError> {
        let bundle = Bundle::load(&dir)?;
        tracing::info!(dir = %dir.display(), revision = bundle.revision(), tests = bundle.tests().len(), "policy bundle loaded");
        Ok(Arc::new(Self {
            dir,
            current: ArcSwap::from_pointee(bundle),
            refused: Counter::default(),
        }))
    }

    /// Re-reads the directory if its contents changed. Returns the new revision when swapped.
    pub fn reload(&self) -> Result<Option<String>, BundleError> {
        let revision = revision_of(&self.dir)?;
        if revision == self.current.load().revision() {
            return Ok(None);
        }
        match Bundle::load(&self.dir) {
            Ok(bundle) => {
                let revision = bundle.revision().to_owned();
                self.current.store(Arc::new(bundle));
                tracing::info!(%revision, "policy bundle reloaded");
                Ok(Some(revision))
            }
            Err(error) => {
                self.refused.inc();
                tracing::error!(%error, kept = self.current.load().revision(), "policy bundle refused; keeping the previous one");
                Err(error)
            }
        }
    }

    /// Polls the directory every `every` until `stop`.
    pub fn watch(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // A refused revision is not retried until the files change again.
            let mut refused_revision = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Ok(revision) = revision_of(&this.dir) else {
                    continue;
                };
                if Some(&revision) == refused_revision.as_ref() {
                    continue;
                }
                if this.reload().is_err() {
                    refused_revision = Some(revision);
                }
            }
        });
    }
}
