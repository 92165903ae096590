//! Publishing: events go into the [`Outbox`] first, and one delivery task moves them to
//! JetStream in order, each acknowledged before the next, retrying until NATS takes it.
//! The event id travels as `Nats-Msg-Id`, so a re-sent event is dropped by JetStream within the
//! stream's duplicate window.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{Event, EventBody, EventError, Outbox};

/// Timing of the delivery task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How long to wait for JetStream's acknowledgement of one event.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Longest pause between retries while NATS is unreachable.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ack_timeout: default_ack_timeout(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_ack_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(2)
}

/// The handle services publish through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventPublisher {
    outbox: Arc<Outbox>,
}

impl EventPublisher {
    /// A publisher writing into `outbox`; run [`run_delivery`] on the same outbox.
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Self { outbox }
    }

    /// Accepts an event for delivery. When this returns `Ok`, the event is durable; it reaches
    /// JetStream as soon as NATS is reachable, after every event accepted before it.
    pub async fn publish<T: EventBody>(&self, event: &Event<T>) -> Result<(), EventError> {
        let payload = serde_json::to_vec(event)?;
        let subject = event.subject();
        let id = event.id;
        let outbox = Arc::clone(&self.outbox);
        tokio::task::spawn_blocking(move || outbox.append(id, &subject, &payload))
            .await
            .map_err(|e| EventError::JetStream(format!("outbox writer stopped: {e}")))??;
        Ok(())
    }

    /// The outbox behind this publisher.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

/// Moves events from `outbox` to JetStream until `stop` fires. Undelivered events stay in the
/// outbox for the next start.
pub async fn run_delivery(
    outbox: Arc<Outbox>,
    js: jetstream::Context,
    config: DeliveryConfig,
    stop: CancellationToken,
) -> Result<(), EventError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let batch = {
            let outbox = Arc::clone(&outbox);
            tokio::task::spawn_blocking(move || outbox.peek(64))
                .await
                .map_err(|e| EventError::JetStream(format!("outbox reader stopped: {e}")))??
        };
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = outbox.appended() => continue,
            }
        }
        for event in batch {
            loop {
                match send(&js, &event, config.ack_timeout).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(50);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, id = %event.id, subject = %event.subject, retry_in = ?backoff, "event not delivered yet");
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(config.max_backoff);
                    }
                }
            }
            outbox.commit(event.next_offset)?;
        }
    }
}

async fn send(
    js: &jetstream::Context,
    event: &super::PendingEvent,
    ack_timeout: Duration,
) -> Result<(), EventError> {
    let publish = PublishMessage::build()
        .message_id(event.id.to_string())
        .payload(event.payload.clone().into());
    // The client may block while it reconnects: bound the whole exchange.
    let exchange = async {
        let ack = js
            .send_publish(event.subject.clone(), publish)
            .await
            .map_err(EventError::js)?;
        ack.await.map_err(EventError::js)
    };
    match tokio::time::timeout(ack_timeout, exchange).await {
        Ok(Ok(ack)) => {
            if ack.duplicate {
                tracing::debug!(id = %event.id, "event was already stored; dropped as duplicate");
            }
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(EventError::JetStream(format!(
            "no acknowledgement within {ack_timeout:?}"
        ))),
    }
}

/// A service's publishing set up in one call: the outbox opened, NATS connected (in the
/// background if it is down), the delivery task running until `stop`, and the streams the events
/// land in created as soon as NATS answers. Returns the publisher and the NATS client (for
/// core-NATS requests such as terminate).
pub async fn start_publishing(
    nats: &super::NatsConfig,
    outbox: &super::OutboxConfig,
    client_name: &str,
    streams: &'static [super::StreamSpec],
    stop: CancellationToken,
) -> Result<(EventPublisher, async_nats::Client), EventError> {
    let outbox = Arc::new(Outbox::open(outbox.clone())?);
    let client = super::connect(nats, client_name).await?;
    let js = jetstream::new(client.clone());
    tokio::spawn(ensure_streams(js.clone(), streams, stop.clone()));
    tokio::spawn(run_delivery(
        Arc::clone(&outbox),
        js,
        DeliveryConfig::default(),
        stop,
    ));
    Ok((EventPublisher::new(outbox), client))
}

/// Events are stored only once their stream exists; NATS may come up after the service.
async fn ensure_streams(
    js: jetstream::Context,
    streams: &'static [super::StreamSpec],
    stop: CancellationToken,
) {
    for spec in streams {
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = super::ensure_stream(&js, spec).await {
            tracing::warn!(%error, stream = spec.name, "stream not ready yet");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}
