//! Graceful shutdown: one cancellation token for the whole process.
//!
//! The first SIGINT or SIGTERM cancels the token; every listener and task stops accepting work
//! and drains. If draining takes longer than the drain deadline, or a second signal arrives, the
//! process exits at once.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code used when shutdown is forced (128 + SIGINT, as shells report it).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Why a shutdown was forced rather than drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedBy {
    /// A second signal arrived while draining.
    SecondSignal,
    /// Draining took longer than the deadline.
    DrainDeadline,
}

/// The process-wide shutdown handle; clones share one token.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A handle that nothing has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token to pass to listeners and tasks.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts shutdown (tests, admin endpoints, fatal errors).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when shutdown starts.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// Listens for SIGINT/SIGTERM: the first triggers shutdown; a second one or the drain
    /// deadline then exits the process with [`FORCED_EXIT_CODE`].
    pub fn listen_for_signals(&self, drain_deadline: Duration) -> std::io::Result<()> {
        self.listen_for_signals_with(drain_deadline, |forced_by| {
            tracing::error!(?forced_by, "shutdown forced; exiting now");
            std::process::exit(FORCED_EXIT_CODE);
        })
    }

    /// Like [`Shutdown::listen_for_signals`] with a custom action when shutdown is forced.
    pub fn listen_for_signals_with<F>(
        &self,
        drain_deadline: Duration,
        on_forced: F,
    ) -> std::io::Result<()>
    where
        F: FnOnce(ForcedBy) + Send + 'static,
    {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let token = self.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = sigint.recv() => tracing::info!("SIGINT received; draining"),
                _ = sigterm.recv() => tracing::info!("SIGTERM received; draining"),
                _ = token.cancelled() => tracing::info!("shutdown requested; draining"),
            }
            token.cancel();
            let forced_by = tokio::select! {
                _ = sigint.recv() => ForcedBy::SecondSignal,
                _ = sigterm.recv() => ForcedBy::SecondSignal,
                _ = tokio::time::sleep(drain_deadline) => ForcedBy::DrainDeadline,
            };
            on_forced(forced_by);
        });
        Ok(())
    }
}
