//! State changes going out: to `Watch` streams in this process at once, and to NATS
//! (`k8shell.workspace.<state>`) from the transitions table, so that a transition committed just
//! before a crash is still published after the restart, under the same event id.

use std::time::Duration;

use k8shell_common::events::types::{WorkspaceLifecycle, WorkspaceState};
use k8shell_common::events::{EVENT_VERSION, Event, EventPublisher};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::store::{Observed, PendingTransition, Store, StoreError, WorkspaceRow};

/// A workspace after a change of observed state.
#[derive(Debug, Clone)]
pub struct Change {
    pub workspace: WorkspaceRow,
    pub previous: Observed,
}

/// Fans changes out.
#[derive(Debug)]
pub struct Changes {
    watchers: broadcast::Sender<Change>,
    unpublished: Notify,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            watchers: broadcast::channel(1024).0,
            unpublished: Notify::new(),
        }
    }
}

impl Changes {
    /// A committed change: watchers see it now, NATS soon.
    pub fn committed(&self, change: Change) {
        let _no_watchers = self.watchers.send(change);
        self.unpublished.notify_one();
    }

    /// A transition stored without a row to show (creation): NATS only.
    pub fn stored(&self) {
        self.unpublished.notify_one();
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.watchers.subscribe()
    }

    /// Hands stored transitions to the event outbox, oldest first, until `stop`.
    pub async fn publish(&self, store: Store, events: EventPublisher, stop: CancellationToken) {
        loop {
            match publish_pending(&store, &events).await {
                // More may wait behind a full batch.
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "publishing workspace events; will retry"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.unpublished.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

const BATCH: i64 = 100;

/// One batch; true if it was full.
async fn publish_pending(store: &Store, events: &EventPublisher) -> Result<bool, PublishError> {
    let pending = store.unpublished(BATCH).await?;
    for transition in &pending {
        events.publish(&event(transition)).await?;
    }
    let ids: Vec<i64> = pending.iter().map(|t| t.id).collect();
    store.mark_published(&ids).await?;
    Ok(pending.len() as i64 == BATCH)
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Events(#[from] k8shell_common::events::EventError),
}

fn event(transition: &PendingTransition) -> Event<WorkspaceLifecycle> {
    let state = match transition.to_state.as_str() {
        "pending" => WorkspaceState::Created,
        "starting" => WorkspaceState::Starting,
        "running" => WorkspaceState::Running,
        "stopping" => WorkspaceState::Stopping,
        "stopped" => WorkspaceState::Stopped,
        "deleting" => WorkspaceState::Deleting,
        "deleted" => WorkspaceState::Deleted,
        _ => WorkspaceState::Failed,
    };
    Event {
        v: EVENT_VERSION,
        id: transition.event_id,
        at: transition.at,
        body: WorkspaceLifecycle {
            workspace: transition.workspace_id,
            owner: transition.owner.clone(),
            state,
            detail: Some(transition.reason.clone()).filter(|r| !r.is_empty()),
        },
    }
}
