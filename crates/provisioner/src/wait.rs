//! Waiting for a workspace to run (EnsureRunning).
//!
//! A change is a row as the reconciler wrote it, and it can reach a waiter after the waiter's
//! own later write: a workspace created stopped announces "stopped" just as a first connection
//! asks it to run. So a change that would end the wait is confirmed against the store first.

use std::future::Future;

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::changes::Change;
use crate::store::{Desired, Observed, StoreError, WorkspaceRow};

/// Waits until `row` runs (its own changes come on `changes`), until `deadline` or `stop`.
/// `reread` reads the stored row; `row` itself must be as stored.
pub async fn until_running<Reread, Read>(
    row: WorkspaceRow,
    changes: &mut Receiver<Change>,
    deadline: tokio::time::Instant,
    stop: &CancellationToken,
    reread: Reread,
) -> Result<WorkspaceRow, Status>
where
    Reread: Fn(Uuid) -> Read,
    Read: Future<Output = Result<WorkspaceRow, StoreError>>,
{
    let mut current = row;
    let mut as_stored = true;
    loop {
        let runs = current.observed == Observed::Running && current.desired == Desired::Running;
        let ended = ended(&current);
        if (runs || ended.is_some()) && !as_stored {
            // A change that would end the wait may be older than what is stored now.
            current = stored(reread(current.id), deadline, &current).await?;
            as_stored = true;
            continue;
        }
        if runs {
            return Ok(current);
        }
        if let Some(ended) = ended {
            return Err(ended);
        }
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.workspace.id == current.id => {
                    current = change.workspace;
                    as_stored = false;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    current = stored(reread(current.id), deadline, &current).await?;
                    as_stored = true;
                }
                Err(RecvError::Closed) => return Err(Status::unavailable("the provisioner is stopping")),
            },
            () = tokio::time::sleep_until(deadline) => return Err(still(&current)),
            () = stop.cancelled() => return Err(Status::unavailable("the provisioner is stopping")),
        }
    }
}

/// The stored row, read by `read` within the same deadline as the wait.
async fn stored<Read>(
    read: Read,
    deadline: tokio::time::Instant,
    current: &WorkspaceRow,
) -> Result<WorkspaceRow, Status>
where
    Read: Future<Output = Result<WorkspaceRow, StoreError>>,
{
    match tokio::time::timeout_at(deadline, read).await {
        Ok(row) => Ok(row?),
        // `current` is the change being confirmed, which may not be so: not named as the state.
        Err(_) => Err(Status::deadline_exceeded(format!(
            "workspace {} is not running yet; try again shortly",
            current.name
        ))),
    }
}

/// The answer when the deadline passes with the workspace not running yet.
fn still(row: &WorkspaceRow) -> Status {
    Status::deadline_exceeded(format!(
        "workspace {} is still {} ({}); try again shortly",
        row.name,
        row.observed.as_str(),
        row.reason
    ))
}

/// Why waiting for `row` to run is over, if it is: it failed, went away or was stopped.
fn ended(row: &WorkspaceRow) -> Option<Status> {
    match row.observed {
        Observed::Failed => Some(Status::failed_precondition(format!(
            "workspace {} failed to start: {}",
            row.name, row.reason
        ))),
        Observed::Deleting | Observed::Deleted => Some(Status::not_found(format!(
            "workspace {} was deleted",
            row.name
        ))),
        _ if row.desired == Desired::Stopped => Some(Status::aborted(format!(
            "workspace {} was stopped while it started",
            row.name
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::broadcast;

    use super::*;

    fn row(desired: Desired, observed: Observed) -> WorkspaceRow {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        WorkspaceRow {
            id: Uuid::from_u128(7),
            owner: "alice".to_owned(),
            name: "default".to_owned(),
            blueprint_source: String::new(),
            spec: serde_json::Value::Null,
            image: String::new(),
            runtime: "local".to_owned(),
            desired,
            observed,
            reason: String::new(),
            endpoint: String::new(),
            idle_timeout_seconds: 0,
            created_at: now,
            last_activity_at: now,
        }
    }

    fn change(desired: Desired, observed: Observed) -> Change {
        Change {
            workspace: row(desired, observed),
            previous: Observed::Pending,
        }
    }

    /// Waits from `start` with `sent` queued; the store answers `stored` in order (the last one
    /// again once they run out).
    async fn wait(
        start: WorkspaceRow,
        sent: Vec<Change>,
        stored: Vec<WorkspaceRow>,
    ) -> (Result<WorkspaceRow, Status>, usize) {
        let (sender, mut changes) = broadcast::channel(16);
        for change in sent {
            sender.send(change).unwrap();
        }
        let rereads = Mutex::new(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let result = until_running(
            start,
            &mut changes,
            deadline,
            &CancellationToken::new(),
            |_| {
                let mut n = rereads.lock().unwrap();
                let answer = stored[(*n).min(stored.len() - 1)].clone();
                *n += 1;
                async move { Ok(answer) }
            },
        )
        .await;
        let rereads = *rereads.lock().unwrap();
        (result, rereads)
    }

    #[tokio::test]
    async fn a_stale_stopped_change_does_not_end_a_start_asked_for_after_it() {
        // Created stopped; the start was asked for (desired running, as stored) before the
        // reconciler's "stopped" change, written earlier, arrived.
        let (result, rereads) = wait(
            row(Desired::Running, Observed::Pending),
            vec![
                change(Desired::Stopped, Observed::Stopped),
                change(Desired::Running, Observed::Starting),
                change(Desired::Running, Observed::Running),
            ],
            vec![
                row(Desired::Running, Observed::Starting),
                row(Desired::Running, Observed::Running),
            ],
        )
        .await;
        assert_eq!(result.unwrap().observed, Observed::Running);
        assert_eq!(
            rereads, 2,
            "the stopped change and the running one were confirmed"
        );
    }

    #[tokio::test]
    async fn a_stale_running_change_does_not_hand_out_a_stopping_workspace() {
        // The workspace ran, then was asked to stop; the old "running" change arrives late.
        let (result, rereads) = wait(
            row(Desired::Running, Observed::Starting),
            vec![change(Desired::Running, Observed::Running)],
            vec![row(Desired::Stopped, Observed::Stopping)],
        )
        .await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert_eq!(rereads, 1);
    }

    #[tokio::test]
    async fn a_stop_the_store_confirms_ends_the_wait() {
        let (result, _) = wait(
            row(Desired::Running, Observed::Starting),
            vec![change(Desired::Stopped, Observed::Stopping)],
            vec![row(Desired::Stopped, Observed::Stopping)],
        )
        .await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(status.message().contains("was stopped while it started"));
    }

    #[tokio::test]
    async fn a_failure_the_store_confirms_is_reported_with_its_reason() {
        let mut failed = row(Desired::Running, Observed::Failed);
        failed.reason = "image not found".to_owned();
        let (result, _) = wait(
            row(Desired::Running, Observed::Starting),
            vec![Change {
                workspace: failed.clone(),
                previous: Observed::Starting,
            }],
            vec![failed],
        )
        .await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("image not found"), "{status:?}");
    }
}
