//! Session activity from NATS: a session opened in a workspace is activity (idle stop looks at
//! it), as are the `Touch` calls of the proxies while users type.

use k8shell_common::events::Event;
use k8shell_common::events::types::{SessionOpened, subjects};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// Touches workspaces as sessions open, until `stop`.
pub async fn follow_sessions(nats: async_nats::Client, store: Store, stop: CancellationToken) {
    let mut opened = match nats.subscribe(subjects::SESSION_OPENED).await {
        Ok(subscription) => subscription,
        Err(error) => {
            return tracing::error!(%error, "cannot follow session activity; idle stop sees only Touch");
        }
    };
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = opened.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let event: Event<SessionOpened> = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "ignoring a session event this version cannot read");
                continue;
            }
        };
        match store.touch(event.body.workspace, event.at).await {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(error) => tracing::warn!(%error, "recording session activity"),
        }
    }
}
