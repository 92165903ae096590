//! Durable JetStream consumers that survive restarts of NATS and of the consumer, and drop a
//! second delivery of an event they have already acknowledged.

use std::collections::{HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures_util::StreamExt as _;
use uuid::Uuid;

use super::{Event, EventBody, EventError, StreamSpec, ensure_stream};

/// Acknowledgements are confirmed by the server; across a reconnect one may be lost.
const ACK_ATTEMPTS: usize = 3;

/// How many acknowledged ids a consumer remembers to drop redeliveries.
const REMEMBERED_IDS: usize = 16_384;

/// Ids acknowledged recently, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<Uuid>,
    set: HashSet<Uuid>,
}

impl RecentIds {
    fn contains(&self, id: &Uuid) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: Uuid) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > REMEMBERED_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// A durable pull consumer of events of type `T`.
pub struct DurableConsumer<T> {
    consumer: PullConsumer,
    messages: Option<pull::Stream>,
    seen: Arc<Mutex<RecentIds>>,
    _payload: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for DurableConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableConsumer").finish_non_exhaustive()
    }
}

/// One event handed to the application; call [`Delivery::ack`] once it is handled.
#[derive(Debug)]
pub struct Delivery<T> {
    pub event: Event<T>,
    message: jetstream::Message,
    seen: Arc<Mutex<RecentIds>>,
}

impl<T> Delivery<T> {
    /// Acknowledges the event: it will not be delivered to this consumer again.
    ///
    /// The id is remembered first, so that even if every acknowledgement is lost (NATS
    /// restarting), the redelivery is dropped rather than handled twice.
    pub async fn ack(self) -> Result<(), EventError> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.event.id);
        let mut last_error = None;
        for _ in 0..ACK_ATTEMPTS {
            match self.message.double_ack().await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::debug!(%error, id = %self.event.id, "acknowledgement not confirmed; retrying");
                    last_error = Some(error);
                }
            }
        }
        Err(EventError::js(last_error.map_or_else(
            || "acknowledgement failed".to_owned(),
            |e| e.to_string(),
        )))
    }

    /// Asks for redelivery after `delay` (the handler failed for a transient reason).
    pub async fn retry_after(self, delay: Duration) -> Result<(), EventError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(EventError::js)
    }
}

impl<T: EventBody> DurableConsumer<T> {
    /// Creates or resumes the durable consumer `name` on `stream`, receiving `filter_subject`.
    pub async fn open(
        js: &jetstream::Context,
        stream: &StreamSpec,
        name: &str,
        filter_subject: &str,
    ) -> Result<Self, EventError> {
        let stream = ensure_stream(js, stream).await?;
        let consumer = stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_owned()),
                    filter_subject: filter_subject.to_owned(),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await
            .map_err(EventError::js)?;
        Ok(Self {
            consumer,
            messages: None,
            seen: Arc::default(),
            _payload: PhantomData,
        })
    }

    /// The next event not acknowledged before. Waits through NATS outages; returns an error
    /// only when the consumer itself is gone.
    pub async fn next(&mut self) -> Result<Delivery<T>, EventError> {
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => {
                    let stream = self.consumer.messages().await.map_err(EventError::js)?;
                    self.messages.insert(stream)
                }
            };
            let message = match messages.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    // Missed heartbeats and reconnects surface here; the stream recovers.
                    tracing::debug!(%error, "consumer stream hiccup; continuing");
                    continue;
                }
                None => {
                    self.messages = None;
                    continue;
                }
            };
            let event: Event<T> = match serde_json::from_slice(&message.payload) {
                Ok(event) => event,
                Err(error) => {
                    tracing::error!(%error, subject = %message.subject, "undecodable event; terminating its delivery");
                    message
                        .ack_with(AckKind::Term)
                        .await
                        .map_err(EventError::js)?;
                    continue;
                }
            };
            let already = self
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&event.id);
            if already {
                tracing::debug!(id = %event.id, "dropping a redelivered event");
                message.ack().await.map_err(EventError::js)?;
                continue;
            }
            return Ok(Delivery {
                event,
                message,
                seen: Arc::clone(&self.seen),
            });
        }
    }
}
