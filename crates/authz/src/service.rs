//! The gRPC service `k8shell.authz.v1.Authz` and the decision log.

use std::sync::Arc;

use k8shell_common::events::types::PolicyDecision;
use k8shell_common::events::{Event, EventPublisher};
use k8shell_proto::authz::v1::authz_server::Authz;
use k8shell_proto::authz::v1::{CheckRequest, CheckResponse};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::decide::{Decision, RequestError, decide};
use crate::reload::PolicySource;

/// The service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    pub(crate) policies: Arc<PolicySource>,
    pub(crate) pool: PgPool,
    pub(crate) events: Option<EventPublisher>,
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

impl AuthzService {
    /// Writes the decision to `authz.decisions` and, when NATS is configured, to the outbox.
    /// A decision that cannot be logged is not given: the caller gets UNAVAILABLE.
    async fn log(&self, decision: &Decision) -> Result<(), Status> {
        sqlx::query(
            "INSERT INTO decisions (id, domain, input, allow, reasons, revision, latency_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(decision.id)
        .bind(&decision.domain)
        .bind(&decision.logged_input)
        .bind(decision.allow)
        .bind(&decision.reasons)
        .bind(&decision.revision)
        .bind(i64::try_from(decision.latency_us).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot write the decision log");
            Status::unavailable("the decision log is unavailable; nothing is decided without it")
        })?;
        if let Some(events) = &self.events {
            let event = Event::new(PolicyDecision {
                decision_id: decision.id,
                domain: decision.domain.clone(),
                allow: decision.allow,
                reasons: decision.reasons.clone(),
                revision: decision.revision.clone(),
                input: decision.logged_input.clone(),
            });
            events.publish(&event).await.map_err(|e| {
                tracing::error!(error = %e, "cannot queue the decision event");
                Status::unavailable(
                    "the decision log is unavailable; nothing is decided without it",
                )
            })?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Authz for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let decision = decide(&self.policies.current, &request.domain, &request.input_json)?;
        self.log(&decision).await?;
        tracing::info!(
            domain = %decision.domain,
            allow = decision.allow,
            decision = %decision.id,
            revision = %decision.revision,
            "decision"
        );
        Ok(Response::new(CheckResponse {
            allow: decision.allow,
            reasons: decision.reasons,
            revision: decision.revision,
            decision_id: decision.id.to_string(),
            decision_json: decision.document.to_string(),
            cacheable: decision.cacheable,
        }))
    }
}
