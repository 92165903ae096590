//! Events on NATS: typed payloads, subjects and streams (ARCHITECTURE §3), publishing through a
//! durable on-disk [`Outbox`] so that nothing is lost while NATS is away, and durable consumers
//! that drop redeliveries by event id.

mod consumer;
mod outbox;
mod publisher;
pub mod types;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use consumer::{Delivery, DurableConsumer};
pub use outbox::{Outbox, OutboxConfig, OutboxError, PendingEvent, Position};
pub use publisher::{DeliveryConfig, EventPublisher, run_delivery, start_publishing};

/// Version of the envelope and of every payload type; bumped on incompatible change.
pub const EVENT_VERSION: u32 = 1;

/// A payload type: what happened, and on which subject it is published.
pub trait EventBody: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The NATS subject, `k8shell.<domain>.<event>[.<key>]`.
    fn subject(&self) -> String;
}

/// The JSON that goes on the wire: `{"v":1,"id":"…","at":"…", …payload fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<T> {
    /// Payload version ([`EVENT_VERSION`]).
    pub v: u32,
    /// UUIDv7; consumers drop a second delivery of the same id.
    pub id: Uuid,
    /// When it happened (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(flatten)]
    pub body: T,
}

impl<T: EventBody> Event<T> {
    /// A new event happening now.
    pub fn new(body: T) -> Self {
        Self {
            v: EVENT_VERSION,
            id: crate::ids::new_id(),
            at: crate::clock::now(),
            body,
        }
    }

    /// Its subject.
    pub fn subject(&self) -> String {
        self.body.subject()
    }
}

/// Event errors.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("event payload: {0}")]
    Json(#[from] serde_json::Error),
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl EventError {
    fn js(e: impl std::fmt::Display) -> Self {
        Self::JetStream(e.to_string())
    }
}

/// A JetStream stream and the subjects it stores.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub description: &'static str,
    /// How long JetStream remembers message ids to drop re-published events.
    pub duplicate_window: Duration,
}

/// Audit trail: authentication, sessions, shield, workspace lifecycle, policy decisions.
pub const AUDIT: StreamSpec = StreamSpec {
    name: "AUDIT",
    subjects: &[
        "k8shell.auth.>",
        "k8shell.audit.>",
        "k8shell.session.opened",
        "k8shell.session.closed",
        "k8shell.session.terminated",
        "k8shell.session.purged",
        "k8shell.shield.>",
        "k8shell.workspace.>",
    ],
    description: "k8shell audit events",
    duplicate_window: Duration::from_secs(30 * 60),
};

/// Activity inside workspaces and the alerts raised from it.
pub const TRACE: StreamSpec = StreamSpec {
    name: "TRACE",
    subjects: &["k8shell.trace.>", "k8shell.alert.>"],
    description: "k8shell workspace activity and alerts",
    duplicate_window: Duration::from_secs(10 * 60),
};

/// How a service reaches NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:4222`; several may be given separated by commas.
    pub url: String,
    /// A file holding the server's authorization token, if it wants one.
    #[serde(default)]
    pub token_file: Option<crate::config::SecretFile>,
}

/// Connects to NATS. Returns at once even when NATS is down: the client keeps trying in the
/// background, and the outbox keeps events meanwhile.
pub async fn connect(
    config: &NatsConfig,
    client_name: &str,
) -> Result<async_nats::Client, EventError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(file) = &config.token_file {
        let token = file
            .read()
            .map_err(|e| EventError::JetStream(format!("NATS token: {e}")))?;
        options = options.token(token.expose().to_owned());
    }
    let options = options
        .name(client_name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis(50 * 2u64.saturating_pow(attempt.min(5) as u32))
        })
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS connection event");
        });
    options
        .connect(config.url.as_str())
        .await
        .map_err(EventError::js)
}

/// Creates the stream if it does not exist yet and returns it. A stream made by an earlier
/// version may lack subjects added since: they are added (and none that it stores is dropped,
/// so that the earlier version keeps working during an upgrade); otherwise NATS would refuse,
/// or no stream would keep, the events published on them. A subject JetStream refuses (another
/// stream holds it) is left out with a warning, and the others are still added; an error on the
/// way (a timeout) is returned, for the caller to try again.
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    spec: &StreamSpec,
) -> Result<async_nats::jetstream::stream::Stream, EventError> {
    use async_nats::jetstream::context::CreateStreamErrorKind;
    use async_nats::jetstream::stream::{Config, StorageType};
    let mut stream = js
        .get_or_create_stream(Config {
            name: spec.name.to_owned(),
            subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
            description: Some(spec.description.to_owned()),
            storage: StorageType::File,
            duplicate_window: spec.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(EventError::js)?;
    let mut config = stream.info().await.map_err(EventError::js)?.config.clone();
    let mut widened = false;
    // One subject at a time: JetStream takes or refuses an update whole.
    for wanted in spec.subjects {
        let Some(subjects) = with_subjects(&config.subjects, &[wanted]) else {
            continue;
        };
        let wider = Config {
            subjects,
            ..config.clone()
        };
        match js.update_stream(&wider).await {
            Ok(info) => {
                tracing::info!(
                    stream = spec.name,
                    subject = wanted,
                    "the stream stores a new subject"
                );
                config = info.config;
                widened = true;
            }
            Err(error) if matches!(error.kind(), CreateStreamErrorKind::JetStream(_)) => {
                tracing::warn!(
                    stream = spec.name,
                    subject = wanted,
                    %error,
                    "JetStream refused to store this subject in the stream (does another stream hold it?); events on it wait in the outbox"
                );
            }
            Err(error) => return Err(EventError::js(error)),
        }
    }
    if widened {
        js.get_stream(spec.name).await.map_err(EventError::js)
    } else {
        Ok(stream)
    }
}

/// The subjects a stream that stores `have` needs to store `want` too, or None if it does
/// already. A wanted wildcard replaces the subjects it covers (NATS refuses overlaps), so
/// nothing stored before stops being stored.
fn with_subjects(have: &[String], want: &[&str]) -> Option<Vec<String>> {
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|w| !have.iter().any(|h| covers(h, w)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut subjects: Vec<String> = have
        .iter()
        .filter(|h| !missing.iter().any(|m| covers(m, h)))
        .cloned()
        .collect();
    subjects.extend(missing.iter().map(|m| (*m).to_owned()));
    Some(subjects)
}

/// Whether every subject that `subject` matches is matched by `pattern` too (NATS wildcards:
/// `*` is one token, `>` one or more at the end). NATS refuses a stream whose subjects overlap.
fn covers(pattern: &str, subject: &str) -> bool {
    let mut wanted = subject.split('.');
    for token in pattern.split('.') {
        match (token, wanted.next()) {
            (">", Some(_)) => return true,
            ("*", Some(t)) if t != ">" => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    wanted.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::{covers, with_subjects};

    fn owned(subjects: &[&str]) -> Vec<String> {
        subjects.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn missing_subjects_are_added_and_wildcards_take_the_place_of_what_they_cover() {
        assert_eq!(
            with_subjects(&owned(&["a.x", "b.>"]), &["a.x", "b.c", "d.>"]),
            Some(owned(&["a.x", "b.>", "d.>"]))
        );
        assert_eq!(
            with_subjects(&owned(&["s.opened", "s.closed", "ops.extra"]), &["s.>"]),
            Some(owned(&["ops.extra", "s.>"]))
        );
        assert_eq!(with_subjects(&owned(&["s.>"]), &["s.opened"]), None);
    }

    #[test]
    fn a_subject_is_covered_by_itself_and_by_wider_wildcards() {
        assert!(covers("k8shell.session.opened", "k8shell.session.opened"));
        assert!(covers("k8shell.session.>", "k8shell.session.opened"));
        assert!(covers("k8shell.*.opened", "k8shell.session.opened"));
        assert!(covers("k8shell.>", "k8shell.workspace.>"));
        assert!(covers("k8shell.*.*", "k8shell.workspace.*"));
    }

    #[test]
    fn a_narrower_or_other_subject_does_not_cover() {
        assert!(!covers("k8shell.session.opened", "k8shell.session.closed"));
        assert!(!covers("k8shell.session.opened", "k8shell.session.>"));
        assert!(!covers("k8shell.session", "k8shell.session.opened"));
        assert!(!covers("k8shell.session.opened", "k8shell.session"));
        assert!(!covers("k8shell.*", "k8shell.workspace.>"));
        assert!(!covers("k8shell.session.>", "k8shell.session"));
    }
}
