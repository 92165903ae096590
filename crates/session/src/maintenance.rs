//! The background job: closes sessions whose proxy vanished and removes sessions, timelines and
//! recordings older than the retention age, each removal an audit event.

use std::time::{Duration, Instant};

use k8shell_common::events::Event;
use k8shell_common::events::types::SessionPurged;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::service::SessionService;
use crate::store::StoreError;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub lost: usize,
    pub purged: usize,
}

/// Runs passes every `retention.check_every` until `stop`.
pub(crate) async fn run(
    service: SessionService,
    retention: RetentionConfig,
    lost_after: Duration,
    stop: CancellationToken,
) {
    // Heartbeats that failed while this service or its database was down are not the proxies'
    // fault: sessions are judged lost only after `lost_after` of this service working.
    let mut healthy_since = Instant::now();
    loop {
        let judge_lost = healthy_since.elapsed() >= lost_after;
        match pass(&service, &retention, judge_lost.then_some(lost_after)).await {
            Ok(done) if done != Pass::default() => tracing::info!(?done, "session maintenance"),
            Ok(_) => {}
            Err(error) => {
                healthy_since = Instant::now();
                tracing::warn!(%error, "session maintenance failed; retrying later");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retention.check_every) => {}
        }
    }
}

async fn pass(
    service: &SessionService,
    retention: &RetentionConfig,
    lost_after: Option<Duration>,
) -> Result<Pass, StoreError> {
    let mut done = Pass::default();
    if let Some(lost_after) = lost_after {
        let lost = service.store.close_lost(lost_after).await?;
        done.lost = lost.len();
        service.closed_elsewhere(&lost).await;
    }
    let max_age = time::Duration::try_from(retention.max_age).unwrap_or(time::Duration::MAX);
    let cutoff = k8shell_common::clock::now()
        .checked_sub(max_age)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    loop {
        let expired = service.store.expired(cutoff, 100).await?;
        if expired.is_empty() {
            break;
        }
        for session in expired {
            let recordings = service.store.recordings_of(session.id).await?;
            let purged = SessionPurged {
                session_id: session.id,
                user: session.username.clone(),
                workspace: session.workspace_id,
                ended_at: session.ended_at.unwrap_or(cutoff),
                recordings: recordings.len() as u64,
                compressed_bytes: recordings
                    .iter()
                    .map(|r| u64::try_from(r.compressed_bytes).unwrap_or(0))
                    .sum(),
            };
            // The audit event is queued (durably) before anything goes, so that a deletion is
            // never unrecorded; a crash after it repeats the deletion, which is harmless.
            if let Err(error) = service.events.publish(&Event::new(purged)).await {
                tracing::error!(%error, "could not queue the audit event of a purge; keeping the session");
                return Ok(done);
            }
            if let Err(error) = service.blobs.delete_prefix(&session.id.to_string()).await {
                tracing::error!(%error, "could not delete recordings; keeping the session");
                return Ok(done);
            }
            service.store.delete(session.id).await?;
            done.purged += 1;
        }
    }
    Ok(done)
}
