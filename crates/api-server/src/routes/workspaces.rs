//! `/workspaces`: a user's workspaces, created from a blueprint, started, stopped, removed, and
//! their state as it changes (Server-Sent Events). Someone else's workspace looks like no
//! workspace at all, unless authz's `api` policy grants `workspaces.manage_all`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt as _};
use k8shell_proto::provisioner::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::caller::Caller;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::routes::common::{Page, action, id_text, parse_id, time_text};
use crate::state::{AppState, State};

/// The endpoint of authz's `api` policy that lets a caller see and manage every workspace.
pub const MANAGE_ALL: &str = "workspaces.manage_all";

/// A workspace.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub owner: String,
    pub name: String,
    /// The blueprint's name.
    pub blueprint: String,
    /// The image it runs (pinned by blueprint hash).
    pub image: String,
    /// `local` or `kubernetes`.
    pub runtime: String,
    /// `pending`, `starting`, `running`, `stopping`, `stopped`, `deleting`, `deleted` or `failed`.
    pub state: String,
    /// What it is asked to be: `running`, `stopped` or `deleted`.
    pub desired: String,
    /// Why it is in this state.
    pub reason: String,
    /// Stopped after this long without activity (0: never).
    pub idle_timeout_seconds: u64,
    pub created_at: Option<String>,
    pub last_activity_at: Option<String>,
    /// Limits that could not be applied, and other things the owner should know.
    pub warnings: Vec<String>,
    /// How to reach it with OpenSSH.
    pub ssh_command: String,
    /// The compiled blueprint (resources, user, allowances).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
}

pub fn state_name(state: pb::State) -> &'static str {
    match state {
        pb::State::Pending => "pending",
        pb::State::Starting => "starting",
        pb::State::Running => "running",
        pb::State::Stopping => "stopping",
        pb::State::Stopped => "stopped",
        pb::State::Deleting => "deleting",
        pb::State::Deleted => "deleted",
        pb::State::Failed => "failed",
        pb::State::Unspecified => "unknown",
    }
}

impl Workspace {
    pub fn from_message(state: &AppState, w: &pb::Workspace) -> Self {
        let reference = w.r#ref.clone().unwrap_or_default();
        let desired = match w.desired() {
            pb::DesiredState::Running => "running",
            pb::DesiredState::Stopped => "stopped",
            pb::DesiredState::Deleted => "deleted",
            pb::DesiredState::Unspecified => "unknown",
        };
        let login = if reference.name == "default" {
            reference.owner.clone()
        } else {
            format!("{}+{}", reference.owner, reference.name)
        };
        Self {
            id: id_text(reference.id.as_ref()),
            ssh_command: state.ssh_command(&login),
            owner: reference.owner,
            name: reference.name,
            blueprint: w.blueprint.clone(),
            image: w.image.clone(),
            runtime: w.runtime.clone(),
            state: state_name(w.state()).to_owned(),
            desired: desired.to_owned(),
            reason: w.reason.clone(),
            idle_timeout_seconds: w.idle_timeout_seconds,
            created_at: time_text(w.created_at.as_ref()),
            last_activity_at: time_text(w.last_activity_at.as_ref()),
            warnings: w.warnings.clone(),
            spec: serde_json::from_str(&w.spec_json).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A page of workspaces.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceList {
    pub items: Vec<Workspace>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Filters of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    /// Whose workspaces (default: yours). Someone else's needs `workspaces.manage_all`;
    /// `*` lists everyone's.
    pub owner: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A new workspace: a name and a blueprint, either an example by name or Nickel source.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// A DNS label, unique among your workspaces (`default` is what `ssh you@host` enters).
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )]
    pub name: String,
    /// The name of an example blueprint (see `GET /blueprints`).
    pub blueprint: Option<String>,
    /// A blueprint in Nickel, instead of an example.
    pub blueprint_source: Option<String>,
    /// The file name errors in `blueprint_source` refer to.
    pub blueprint_file: Option<String>,
    /// Create it without starting it.
    #[serde(default)]
    pub stopped: bool,
}

fn requester(caller: &Caller) -> pb::Requester {
    pb::Requester {
        username: caller.user.username.clone(),
        groups: caller.user.groups.clone(),
    }
}

fn by_id(id: Uuid) -> Option<pb::Selector> {
    Some(pb::Selector {
        by: Some(pb::selector::By::Id(id.into())),
    })
}

/// The workspace `id` if the caller may see it; 404 otherwise, whether it exists or not.
pub async fn visible(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<pb::Workspace> {
    let not_found = || ApiError::not_found(format!("you have no workspace {id}"));
    let workspace = state
        .gateway
        .backends
        .provisioner
        .clone()
        .get(pb::WorkspaceRequest {
            workspace: by_id(id),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => not_found(),
            _ => ApiError::from_status("the workspace", &status),
        })?
        .into_inner();
    // A deleted workspace is gone for its owner too (its row stays for the record).
    if workspace.state() == pb::State::Deleted {
        return Err(not_found());
    }
    let owner = workspace.r#ref.as_ref().map(|r| r.owner.as_str());
    if owner == Some(caller.username()) || caller.may(state, MANAGE_ALL).await {
        Ok(workspace)
    } else {
        Err(not_found())
    }
}

#[utoipa::path(get, path = "/workspaces", tag = "workspaces",
    params(ListFilter),
    responses((status = 200, body = WorkspaceList),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    state: State,
    caller: Caller,
    Query(filter): Query<ListFilter>,
) -> ApiResult<Json<WorkspaceList>> {
    let owner = match filter.owner.as_deref() {
        None | Some("") => caller.username().to_owned(),
        Some(owner) if owner == caller.username() => owner.to_owned(),
        Some(owner) => {
            caller.require(&state, MANAGE_ALL).await?;
            if owner == "*" {
                String::new()
            } else {
                owner.to_owned()
            }
        }
    };
    let limit = Page {
        limit: filter.limit,
        cursor: None,
    }
    .limit()? as usize;
    let mut workspaces = state
        .gateway
        .backends
        .provisioner
        .clone()
        .list(pb::ListRequest { owner })
        .await
        .map_err(|s| ApiError::from_status("the workspaces", &s))?
        .into_inner()
        .workspaces;
    // Ids are UUIDv7: by id is by creation.
    workspaces.sort_by_key(|w| {
        w.r#ref
            .as_ref()
            .and_then(|r| r.id.as_ref())
            .map(|i| i.value.clone())
    });
    let after = filter.cursor.unwrap_or_default();
    let mut items: Vec<Workspace> = workspaces
        .iter()
        .filter(|w| w.state() != pb::State::Deleted)
        .filter(|w| {
            after.is_empty() || id_text(w.r#ref.as_ref().and_then(|r| r.id.as_ref())) > after
        })
        .take(limit + 1)
        .map(|w| Workspace::from_message(&state, w))
        .collect();
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|w| w.id.clone())
    } else {
        None
    };
    Ok(Json(WorkspaceList { items, next_cursor }))
}

#[utoipa::path(post, path = "/workspaces", tag = "workspaces",
    request_body = CreateWorkspace,
    responses((status = 201, body = Workspace),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create(
    state: State,
    caller: Caller,
    Json(body): Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let (source, file) = match (&body.blueprint, &body.blueprint_source) {
        (Some(name), None) => {
            let example = state
                .blueprints
                .iter()
                .find(|b| &b.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        state.blueprints.iter().map(|b| b.name.as_str()).collect();
                    ApiError::bad_request(format!(
                        "there is no example blueprint {name:?}; there is {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ))
                })?;
            (example.source.clone(), format!("{name}.ncl"))
        }
        (None, Some(source)) => (
            source.clone(),
            body.blueprint_file
                .clone()
                .unwrap_or_else(|| "blueprint.ncl".to_owned()),
        ),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `blueprint` (an example's name) and `blueprint_source` (Nickel)",
            ));
        }
    };
    // Evaluated here first under limits: the provisioner compiles it again without them, and
    // only what finished here goes there.
    if let crate::routes::blueprints::Outcome::Invalid { message } =
        crate::routes::blueprints::evaluate_posted(&state, source.clone(), file.clone()).await?
    {
        return Err(ApiError::bad_request(message));
    }
    let created = state
        .gateway
        .backends
        .provisioner
        .clone()
        .create(pb::CreateRequest {
            requester: Some(requester(&caller)),
            name: body.name.clone(),
            blueprint_source: source,
            blueprint_file: file,
            stopped: body.stopped,
        })
        .await
        .map_err(|s| ApiError::from_status(&format!("workspace {}", body.name), &s))?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(Workspace::from_message(&state, &created)),
    ))
}

#[utoipa::path(get, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 200, body = Workspace),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get(
    state: State,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Workspace>> {
    let id = parse_id(&id, "workspace")?;
    let workspace = visible(&state, &caller, id).await?;
    Ok(Json(Workspace::from_message(&state, &workspace)))
}

#[utoipa::path(delete, path = "/workspaces/{id}", tag = "workspaces",
    params(("id" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 202, body = Workspace, description = "Deletion under way: the workspace and its home go"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete(
    state: State,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let id = parse_id(&id, "workspace")?;
    visible(&state, &caller, id).await?;
    let workspace = state
        .gateway
        .backends
        .provisioner
        .clone()
        .delete(pb::WorkspaceRequest {
            workspace: by_id(id),
        })
        .await
        .map_err(|s| ApiError::from_status("the workspace", &s))?
        .into_inner();
    tracing::info!(user = %caller.username(), workspace = %id, "workspace deletion asked");
    Ok((
        StatusCode::ACCEPTED,
        Json(Workspace::from_message(&state, &workspace)),
    ))
}

#[utoipa::path(post, path = "/workspaces/{id}:start", tag = "workspaces",
    params(("id" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 202, body = Workspace, description = "Asked to run; watch `/workspaces/events` for `running`"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn start(
    state: State,
    caller: Caller,
    target: Path<String>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    act(state, caller, target, "start").await
}

#[utoipa::path(post, path = "/workspaces/{id}:stop", tag = "workspaces",
    params(("id" = uuid::Uuid, Path, description = "Workspace id")),
    responses((status = 202, body = Workspace, description = "Asked to stop; the home is kept"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn stop(
    state: State,
    caller: Caller,
    target: Path<String>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    act(state, caller, target, "stop").await
}

/// `POST /workspaces/{id}:{action}` (axum cannot route a suffix after a parameter).
pub async fn act_route(
    state: State,
    caller: Caller,
    Path(target): Path<String>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let (_, verb) = action(&target, "workspace", &["start", "stop"])?;
    if verb == "start" {
        start(state, caller, Path(target)).await
    } else {
        stop(state, caller, Path(target)).await
    }
}

async fn act(
    axum::extract::State(state): State,
    caller: Caller,
    Path(target): Path<String>,
    wanted: &str,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let (id, _) = action(&target, "workspace", &[wanted])?;
    visible(&state, &caller, id).await?;
    let mut provisioner = state.gateway.backends.provisioner.clone();
    let answer = if wanted == "start" {
        provisioner
            .start(pb::StartRequest {
                workspace: by_id(id),
                requester: Some(requester(&caller)),
            })
            .await
    } else {
        provisioner
            .stop(pb::WorkspaceRequest {
                workspace: by_id(id),
            })
            .await
    };
    let workspace = answer
        .map_err(|s| ApiError::from_status("the workspace", &s))?
        .into_inner();
    tracing::info!(user = %caller.username(), workspace = %id, action = wanted, "workspace action");
    Ok((
        StatusCode::ACCEPTED,
        Json(Workspace::from_message(&state, &workspace)),
    ))
}

/// Which workspaces' events.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsFilter {
    /// One workspace (default: all of yours).
    #[param(value_type = Option<uuid::Uuid>)]
    pub id: Option<String>,
}

/// One change of state, as the `data` of an SSE event named `workspace`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceEvent {
    pub workspace: Workspace,
    /// The state before (absent in the first snapshot).
    pub previous: Option<String>,
}

#[utoipa::path(get, path = "/workspaces/events", tag = "workspaces",
    params(EventsFilter),
    responses((status = 200, content_type = "text/event-stream", body = WorkspaceEvent,
               description = "First the current state of each workspace, then every change, as events named `workspace`"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn events(
    state: State,
    caller: Caller,
    Query(filter): Query<EventsFilter>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = match filter.id.as_deref() {
        Some(id) => {
            let id = parse_id(id, "workspace")?;
            visible(&state, &caller, id).await?;
            Some(id)
        }
        None => None,
    };
    let owner = if id.is_some() {
        String::new()
    } else {
        caller.username().to_owned()
    };
    let stream = state
        .gateway
        .backends
        .provisioner
        .clone()
        .watch(pb::WatchRequest {
            owner,
            id: id.map(Into::into),
        })
        .await
        .map_err(|s| ApiError::from_status("the workspaces", &s))?
        .into_inner();
    let app = Arc::clone(&state);
    let stop = state.stop.clone();
    let events = stream
        .take_until(stop.cancelled_owned())
        // A broken watch ends the stream; the browser reconnects and gets a new snapshot.
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(move |event| {
            std::future::ready((|| {
                let event = event.ok()?;
                let workspace = Workspace::from_message(&app, event.workspace.as_ref()?);
                let previous = match event.previous() {
                    pb::State::Unspecified => None,
                    other => Some(state_name(other).to_owned()),
                };
                let data = WorkspaceEvent {
                    workspace,
                    previous,
                };
                Some(Ok(Event::default()
                    .event("workspace")
                    .json_data(&data)
                    .unwrap_or_else(|_| {
                        Event::default().comment("unencodable event")
                    })))
            })())
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
