//! The event payloads and subjects of ARCHITECTURE §2 and §3. Each service that publishes one
//! owns its meaning; the types live here so that producer and consumers agree.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::EventBody;

/// Subjects, `k8shell.<domain>.<event>`.
pub mod subjects {
    use uuid::Uuid;

    pub const AUTH_FAILURE: &str = "k8shell.auth.failure";
    pub const AUDIT_DECISION: &str = "k8shell.audit.decision";
    pub const SESSION_OPENED: &str = "k8shell.session.opened";
    pub const SESSION_CLOSED: &str = "k8shell.session.closed";
    pub const SESSION_TERMINATED: &str = "k8shell.session.terminated";
    pub const SESSION_PURGED: &str = "k8shell.session.purged";
    pub const SHIELD_BANNED: &str = "k8shell.shield.banned";
    pub const SHIELD_UNBANNED: &str = "k8shell.shield.unbanned";

    /// Core NATS (not stored): asks whichever proxy holds session `id` to end it.
    pub fn session_terminate(id: Uuid) -> String {
        format!("k8shell.session.terminate.{id}")
    }

    /// `k8shell.workspace.<state>`, e.g. `k8shell.workspace.running`.
    pub fn workspace(state: &str) -> String {
        format!("k8shell.workspace.{state}")
    }

    /// Activity of one workspace.
    pub fn trace(workspace: Uuid) -> String {
        format!("k8shell.trace.{workspace}")
    }

    /// An alert raised by a worktrace rule.
    pub fn alert(rule: &str) -> String {
        format!("k8shell.alert.{rule}")
    }
}

/// A failed SSH authentication attempt (ssh-proxy → ssh-shield).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailure {
    pub ip: IpAddr,
    /// The client's source port (0 when unknown).
    #[serde(default)]
    pub port: u16,
    pub user: String,
    /// `publickey`, `keyboard-interactive`, `password`, `none`.
    pub method: String,
    pub reason: String,
}

impl EventBody for AuthFailure {
    fn subject(&self) -> String {
        subjects::AUTH_FAILURE.to_owned()
    }
}

/// One authorization decision (authz decision log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDecision {
    pub decision_id: Uuid,
    /// `onboarding`, `authentication`, `ssh`, `provision`, `api`.
    pub domain: String,
    pub allow: bool,
    pub reasons: Vec<String>,
    /// Hash of the policy bundle that decided.
    pub revision: String,
    /// Who asked about what, with secrets removed.
    pub input: serde_json::Value,
}

impl EventBody for PolicyDecision {
    fn subject(&self) -> String {
        subjects::AUDIT_DECISION.to_owned()
    }
}

/// Kind of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Ssh,
    Console,
}

/// A session started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpened {
    pub session_id: Uuid,
    pub user: String,
    pub workspace: Uuid,
    pub kind: SessionKind,
    pub client_ip: IpAddr,
}

impl EventBody for SessionOpened {
    fn subject(&self) -> String {
        subjects::SESSION_OPENED.to_owned()
    }
}

/// A session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClosed {
    pub session_id: Uuid,
    pub reason: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl EventBody for SessionClosed {
    fn subject(&self) -> String {
        subjects::SESSION_CLOSED.to_owned()
    }
}

/// Someone asked to end a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTerminated {
    pub session_id: Uuid,
    pub reason: String,
    pub requested_by: String,
    /// The proxy holding the session acknowledged; otherwise the service closed it itself.
    pub delivered: bool,
}

impl EventBody for SessionTerminated {
    fn subject(&self) -> String {
        subjects::SESSION_TERMINATED.to_owned()
    }
}

/// Retention removed an old session with its timeline and recordings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPurged {
    pub session_id: Uuid,
    pub user: String,
    pub workspace: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub ended_at: time::OffsetDateTime,
    pub recordings: u64,
    pub compressed_bytes: u64,
}

impl EventBody for SessionPurged {
    fn subject(&self) -> String {
        subjects::SESSION_PURGED.to_owned()
    }
}

/// ssh-shield banned an address or IPv6 prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShieldBanned {
    /// An address or a CIDR prefix (`2001:db8::/64`).
    pub target: String,
    pub ttl_seconds: u64,
    pub reason: String,
}

impl EventBody for ShieldBanned {
    fn subject(&self) -> String {
        subjects::SHIELD_BANNED.to_owned()
    }
}

/// ssh-shield lifted a ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShieldUnbanned {
    pub target: String,
    pub reason: String,
}

impl EventBody for ShieldUnbanned {
    fn subject(&self) -> String {
        subjects::SHIELD_UNBANNED.to_owned()
    }
}

/// Lifecycle states of a workspace, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceState {
    Created,
    Starting,
    Running,
    Stopping,
    Stopped,
    Deleting,
    Deleted,
    Failed,
}

impl WorkspaceState {
    /// The lowercase name used in subjects and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
        }
    }
}

/// A workspace changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceLifecycle {
    pub workspace: Uuid,
    pub owner: String,
    pub state: WorkspaceState,
    /// Why, for failures and stops on idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl EventBody for WorkspaceLifecycle {
    fn subject(&self) -> String {
        subjects::workspace(self.state.as_str())
    }
}

/// Something a workspace did (exec, connect, file access), seen by worktrace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub workspace: Uuid,
    /// `exec`, `connect`, `open`, …
    pub kind: String,
    pub detail: serde_json::Value,
}

impl EventBody for TraceEvent {
    fn subject(&self) -> String {
        subjects::trace(self.workspace)
    }
}

/// A worktrace rule fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    pub workspace: Uuid,
    pub severity: String,
    pub message: String,
}

impl EventBody for Alert {
    fn subject(&self) -> String {
        subjects::alert(&self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    #[test]
    fn envelope_is_flat_json_with_version() {
        let event = Event::new(AuthFailure {
            ip: "192.0.2.7".parse().unwrap(),
            port: 50022,
            user: "alice".into(),
            method: "publickey".into(),
            reason: "unknown key".into(),
        });
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["ip"], "192.0.2.7");
        assert_eq!(json["user"], "alice");
        assert!(json["at"].as_str().unwrap().ends_with('Z'));
        let back: Event<AuthFailure> = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        assert_eq!(event.subject(), "k8shell.auth.failure");
    }

    #[test]
    fn workspace_subjects_follow_state() {
        let body = WorkspaceLifecycle {
            workspace: Uuid::nil(),
            owner: "bob".into(),
            state: WorkspaceState::Running,
            detail: None,
        };
        assert_eq!(body.subject(), "k8shell.workspace.running");
        assert!(
            crate::events::AUDIT
                .subjects
                .iter()
                .any(|s| s.trim_end_matches('>') == "k8shell.workspace.")
        );
    }
}
