//! The gRPC service `k8shell.authz.v1.Authz` and the decision log.

use std::sync::Arc;

use k8shell_common::events::types::PolicyDecision;
use k8shell_common::events::{Event, EventPublisher};
use k8shell_proto::authz::v1::authz_server::Authz;
use k8shell_proto::authz::v1::{
    CheckRequest, CheckResponse, ListDecisionsRequest, ListDecisionsResponse,
};
use sqlx::PgPool;
use sqlx::Row as _;
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

    async fn list_decisions(
        &self,
        request: Request<ListDecisionsRequest>,
    ) -> Result<Response<ListDecisionsResponse>, Status> {
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 100,
            n => n.min(1000),
        };
        // Ids are UUIDv7: their order is the order of the decisions.
        let before =
            if request.cursor.is_empty() {
                None
            } else {
                Some(uuid::Uuid::parse_str(&request.cursor).map_err(|_| {
                    Status::invalid_argument("cursor is not one this service gave out")
                })?)
            };
        let rows = sqlx::query(
            "SELECT id, at, domain, input, allow, reasons, revision FROM decisions \
             WHERE ($1::uuid IS NULL OR id < $1) AND ($2 = '' OR domain = $2) \
             AND (NOT $3 OR NOT allow) AND ($4 = '' OR input->'user'->>'username' = $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(before)
        .bind(&request.domain)
        .bind(request.denied_only)
        .bind(&request.username)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read the decision log");
            Status::unavailable("the decision log cannot be read right now")
        })?;
        let mut decisions = Vec::with_capacity(rows.len());
        for row in &rows {
            decisions.push(decision_message(row).map_err(|e| {
                tracing::error!(error = %e, "unreadable decision log row");
                Status::internal("the decision log holds a row this version cannot read")
            })?);
        }
        let next_cursor = if decisions.len() > limit as usize {
            decisions.truncate(limit as usize);
            decisions.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListDecisionsResponse {
            decisions,
            next_cursor,
        }))
    }
}

fn decision_message(
    row: &sqlx::postgres::PgRow,
) -> Result<k8shell_proto::authz::v1::Decision, sqlx::Error> {
    let id: uuid::Uuid = row.try_get("id")?;
    let at: time::OffsetDateTime = row.try_get("at")?;
    let input: serde_json::Value = row.try_get("input")?;
    Ok(k8shell_proto::authz::v1::Decision {
        id: id.to_string(),
        at: Some(k8shell_proto::types::v1::timestamp(at)),
        domain: row.try_get("domain")?,
        input_json: input.to_string(),
        allow: row.try_get("allow")?,
        reasons: row.try_get("reasons")?,
        revision: row.try_get("revision")?,
    })
}
