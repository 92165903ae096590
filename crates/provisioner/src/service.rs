//! The gRPC service `k8shell.provisioner.v1.Provisioner`. Calls change what is wanted and wake
//! the reconciler; only the reconciler touches the runtime.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8shell_authz::client::AuthzClient;
use k8shell_blueprint::WorkspaceSpec;
use k8shell_proto::provisioner::v1 as pb;
use k8shell_proto::provisioner::v1::provisioner_server::Provisioner;
use k8shell_proto::types::v1::{Id, WorkspaceRef, from_timestamp, timestamp};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::health;
use crate::images;
use crate::reconciler::Reconciler;
use crate::store::{Desired, NewWorkspace, Observed, StoreError, WorkspaceRow};
use crate::wait;

/// The service.
#[derive(Debug, Clone)]
pub struct ProvisionerService {
    pub reconciler: Arc<Reconciler>,
    pub authz: Arc<AuthzClient>,
    /// `local` or `kubernetes`, stored with each workspace.
    pub runtime_name: &'static str,
    pub stop: CancellationToken,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WorkspaceEvent, Status>> + Send>>;

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken { .. } => Status::already_exists(error.to_string()),
            StoreError::NotFound(_) => Status::not_found(error.to_string()),
            StoreError::Corrupt(_) | StoreError::Database(_) => {
                tracing::error!(%error, "provisioner store");
                Status::unavailable("the workspace store is unavailable; try again shortly")
            }
        }
    }
}

/// A workspace name: a DNS label, since it is the hostname inside.
fn check_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "workspace name {name:?} is not valid: use 1 to 63 lowercase letters, digits and '-', starting with a letter (it becomes the hostname)"
        )))
    }
}

fn state(observed: Observed) -> pb::State {
    match observed {
        Observed::Pending => pb::State::Pending,
        Observed::Starting => pb::State::Starting,
        Observed::Running => pb::State::Running,
        Observed::Stopping => pb::State::Stopping,
        Observed::Stopped => pb::State::Stopped,
        Observed::Deleting => pb::State::Deleting,
        Observed::Deleted => pb::State::Deleted,
        Observed::Failed => pb::State::Failed,
    }
}

/// The workspace as callers see it.
pub fn to_proto(row: &WorkspaceRow) -> pb::Workspace {
    let desired = match row.desired {
        Desired::Running => pb::DesiredState::Running,
        Desired::Stopped => pb::DesiredState::Stopped,
        Desired::Deleted => pb::DesiredState::Deleted,
    };
    // A running workspace's reason lists what could not be applied (limits).
    let warnings = if row.observed == Observed::Running && !row.reason.is_empty() {
        row.reason.split("; ").map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    pb::Workspace {
        r#ref: Some(WorkspaceRef {
            id: Some(Id {
                value: row.id.to_string(),
            }),
            owner: row.owner.clone(),
            name: row.name.clone(),
        }),
        blueprint: row.spec["name"].as_str().unwrap_or_default().to_owned(),
        blueprint_source: row.blueprint_source.clone(),
        spec_json: row.spec.to_string(),
        image: row.image.clone(),
        runtime: row.runtime.clone(),
        desired: desired.into(),
        state: state(row.observed).into(),
        reason: row.reason.clone(),
        endpoint: row.endpoint.clone(),
        idle_timeout_seconds: row.idle_timeout_seconds.unsigned_abs(),
        created_at: Some(timestamp(row.created_at)),
        last_activity_at: Some(timestamp(row.last_activity_at)),
        warnings,
    }
}

fn parse_id(id: Option<&Id>) -> Result<Uuid, Status> {
    let text = id.map(|i| i.value.as_str()).unwrap_or_default();
    Uuid::parse_str(text)
        .map_err(|_| Status::invalid_argument(format!("workspace id {text:?} is not a UUID")))
}

impl ProvisionerService {
    async fn resolve(&self, selector: Option<&pb::Selector>) -> Result<WorkspaceRow, Status> {
        let store = &self.reconciler.store;
        match selector.and_then(|s| s.by.as_ref()) {
            Some(pb::selector::By::Id(id)) => Ok(store.get(parse_id(Some(id))?).await?),
            Some(pb::selector::By::Name(pb::OwnerAndName { owner, name })) => {
                store.by_name(owner, name).await?.ok_or_else(|| {
                    Status::not_found(format!(
                        "{owner} has no workspace named {name:?}; `k8shell ws ls` lists them"
                    ))
                })
            }
            None => Err(Status::invalid_argument(
                "say which workspace: by id, or by owner and name",
            )),
        }
    }

    /// The `provision` decision for the requester having `others` workspaces besides this one.
    async fn authorize(
        &self,
        requester: Option<&pb::Requester>,
        owner: &str,
        spec: &WorkspaceSpec,
        others: i64,
    ) -> Result<(), Status> {
        let requester = requester.ok_or_else(|| {
            Status::invalid_argument("the requester (username, groups) is required")
        })?;
        if requester.username != owner {
            return Err(Status::permission_denied(format!(
                "{} cannot provision a workspace of {owner}",
                requester.username
            )));
        }
        let input = serde_json::json!({
            "v": 1,
            "user": {"username": requester.username, "groups": requester.groups},
            "current_workspaces": others,
            "blueprint": spec.name,
            "resources": {
                "cpu_millis": (spec.resources.cpu * 1000.0).round() as u64,
                "memory_bytes": spec.resources.memory_bytes(),
                "disk_bytes": spec.resources.disk_bytes(),
            },
        });
        let verdict = self.authz.check("provision", &input).await;
        tracing::info!(
            user = %requester.username,
            blueprint = %spec.name,
            allow = verdict.allow,
            decision = %verdict.decision_id,
            "provision decision"
        );
        if verdict.allow {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "not allowed: {}",
                verdict.reasons.join("; ")
            )))
        }
    }

    /// Wants the workspace running (after the decision), a failed one retried.
    async fn want_running(
        &self,
        row: WorkspaceRow,
        requester: Option<&pb::Requester>,
    ) -> Result<WorkspaceRow, Status> {
        if row.desired == Desired::Deleted {
            return Err(Status::failed_precondition(format!(
                "workspace {} is being deleted",
                row.name
            )));
        }
        if row.desired == Desired::Running && row.observed != Observed::Failed {
            return Ok(row);
        }
        let spec = spec_of(&row)?;
        let others = self.reconciler.store.count(&row.owner).await? - 1;
        self.authorize(requester, &row.owner, &spec, others).await?;
        if row.observed == Observed::Failed {
            self.reconciler
                .move_to(
                    &row,
                    Observed::Failed,
                    Observed::Pending,
                    "start requested",
                    None,
                )
                .await?;
        }
        let row = self
            .reconciler
            .store
            .set_desired(row.id, Desired::Running)
            .await?;
        self.reconciler.wake();
        Ok(row)
    }

    async fn want(
        &self,
        selector: Option<&pb::Selector>,
        desired: Desired,
    ) -> Result<pb::Workspace, Status> {
        let row = self.resolve(selector).await?;
        let row = self.reconciler.store.set_desired(row.id, desired).await?;
        self.reconciler.wake();
        Ok(to_proto(&row))
    }
}

fn spec_of(row: &WorkspaceRow) -> Result<WorkspaceSpec, Status> {
    serde_json::from_value(row.spec.clone()).map_err(|e| {
        Status::internal(format!(
            "the stored blueprint of {} cannot be read by this version: {e}",
            row.name
        ))
    })
}

#[tonic::async_trait]
impl Provisioner for ProvisionerService {
    async fn create(
        &self,
        request: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let request = request.into_inner();
        let owner = request
            .requester
            .as_ref()
            .map(|r| r.username.clone())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument("the requester (username, groups) is required")
            })?;
        check_name(&request.name)?;
        let file = if request.blueprint_file.is_empty() {
            "blueprint.ncl"
        } else {
            &request.blueprint_file
        };
        let compiled = images::compile(&request.blueprint_source, file)
            .await
            .map_err(Status::invalid_argument)?;
        let store = &self.reconciler.store;
        // Said before the decision: a taken name is the thing to fix, whatever the quota.
        if store.by_name(&owner, &request.name).await?.is_some() {
            return Err(StoreError::NameTaken {
                owner,
                name: request.name,
            }
            .into());
        }
        let others = store.count(&owner).await?;
        self.authorize(request.requester.as_ref(), &owner, &compiled.spec, others)
            .await?;
        let spec = serde_json::to_value(&compiled.spec)
            .map_err(|e| Status::internal(format!("storing the blueprint: {e}")))?;
        let idle = compiled.spec.idle_timeout().map_or(0, |d| d.as_secs());
        let row = store
            .create(&NewWorkspace {
                owner,
                name: request.name,
                blueprint_source: request.blueprint_source,
                spec,
                image: self.reconciler.images.reference(&compiled),
                runtime: self.runtime_name.to_owned(),
                idle_timeout_seconds: i64::try_from(idle).unwrap_or(i64::MAX),
                desired: if request.stopped {
                    Desired::Stopped
                } else {
                    Desired::Running
                },
            })
            .await?;
        tracing::info!(workspace = %row.id, owner = %row.owner, name = %row.name, "workspace created");
        self.reconciler.changes.stored();
        self.reconciler.wake();
        Ok(Response::new(to_proto(&row)))
    }

    async fn start(
        &self,
        request: Request<pb::StartRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let request = request.into_inner();
        let row = self.resolve(request.workspace.as_ref()).await?;
        let row = self.want_running(row, request.requester.as_ref()).await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn stop(
        &self,
        request: Request<pb::WorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.want(request.workspace.as_ref(), Desired::Stopped)
                .await?,
        ))
    }

    async fn delete(
        &self,
        request: Request<pb::WorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.want(request.workspace.as_ref(), Desired::Deleted)
                .await?,
        ))
    }

    async fn get(
        &self,
        request: Request<pb::WorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let row = self.resolve(request.get_ref().workspace.as_ref()).await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let owner = Some(request.get_ref().owner.as_str()).filter(|o| !o.is_empty());
        let rows = self.reconciler.store.list(owner).await?;
        Ok(Response::new(pb::ListResponse {
            workspaces: rows.iter().map(to_proto).collect(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let id = match &request.id {
            Some(id) => Some(parse_id(Some(id))?),
            None => None,
        };
        let owner = request.owner;
        // Subscribed before the snapshot: a change between the two is seen, never lost.
        let mut changes = self.reconciler.changes.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let service = self.clone();
        let selected = move |row: &WorkspaceRow| {
            id.is_none_or(|id| row.id == id) && (owner.is_empty() || row.owner == owner)
        };
        tokio::spawn(async move {
            let snapshot = |service: ProvisionerService| async move {
                let rows = match id {
                    Some(id) => service.reconciler.store.get(id).await.map(|row| vec![row]),
                    None => service.reconciler.store.list(None).await,
                };
                rows.map_err(Status::from)
            };
            let mut pending = Some(snapshot(service.clone()).await);
            loop {
                if let Some(rows) = pending.take() {
                    let rows = match rows {
                        Ok(rows) => rows,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    };
                    for row in rows.iter().filter(|row| selected(row)) {
                        let event = pb::WorkspaceEvent {
                            workspace: Some(to_proto(row)),
                            previous: pb::State::Unspecified.into(),
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                let change = tokio::select! {
                    change = changes.recv() => change,
                    () = tx.closed() => return,
                    () = service.stop.cancelled() => return,
                };
                match change {
                    Ok(change) if selected(&change.workspace) => {
                        let event = pb::WorkspaceEvent {
                            workspace: Some(to_proto(&change.workspace)),
                            previous: state(change.previous).into(),
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Too slow a watcher gets the whole picture again rather than a gap.
                    Err(RecvError::Lagged(_)) => pending = Some(snapshot(service.clone()).await),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn touch(
        &self,
        request: Request<pb::TouchRequest>,
    ) -> Result<Response<pb::TouchResponse>, Status> {
        let request = request.into_inner();
        let row = self.resolve(request.workspace.as_ref()).await?;
        let at = match request.at {
            Some(at) => from_timestamp(&at).map_err(|e| Status::invalid_argument(e.to_string()))?,
            None => self.reconciler.clock.now(),
        };
        self.reconciler.store.touch(row.id, at).await?;
        Ok(Response::new(pb::TouchResponse {}))
    }

    async fn ensure_running(
        &self,
        request: Request<pb::EnsureRunningRequest>,
    ) -> Result<Response<pb::EnsureRunningResponse>, Status> {
        let request = request.into_inner();
        let wait = match &request.deadline {
            Some(deadline) => {
                let deadline = from_timestamp(deadline)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let left = deadline - k8shell_common::clock::now();
                Duration::try_from(left).unwrap_or(Duration::ZERO)
            }
            None => self.reconciler.config.ensure_timeout,
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.reconciler.changes.subscribe();
        let row = self.resolve(request.workspace.as_ref()).await?;
        // A connection is activity.
        self.reconciler
            .store
            .touch(row.id, self.reconciler.clock.now())
            .await?;
        let started = row.observed != Observed::Running || row.desired != Desired::Running;
        let row = if started {
            self.want_running(row, request.requester.as_ref()).await?
        } else {
            row
        };
        let store = &self.reconciler.store;
        let row = wait::until_running(row, &mut changes, deadline, &self.stop, |id| store.get(id))
            .await?;
        let endpoint = health::parse_endpoint(&row.endpoint)
            .ok_or_else(|| Status::internal("a running workspace without an endpoint"))?;
        let channel = health::channel(&endpoint, &self.reconciler.tls).map_err(Status::internal)?;
        if !health::serving(&channel).await {
            self.reconciler.wake();
            return Err(Status::unavailable(format!(
                "workspace {}'s k8shelld does not answer; it is being checked, try again shortly",
                row.name
            )));
        }
        Ok(Response::new(pb::EnsureRunningResponse {
            endpoint: row.endpoint.clone(),
            workspace: Some(to_proto(&row)),
            started,
        }))
    }
}
