//! The reconciler: moves each workspace's observed state towards the desired one, one step at a
//! time, each step a compare-and-set transition in the store. Runtime operations are idempotent,
//! so a reconciler that died anywhere simply does the current step again after its restart: a
//! workspace found `starting` is started (the runtime finds what exists), `stopping` is stopped,
//! `deleting` is deleted. Running workspaces are adopted, never restarted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8shell_blueprint::WorkspaceSpec;
use k8shell_common::tls::ReloadingTls;
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::changes::{Change, Changes};
use crate::clock::Clock;
use crate::config::ReconcileConfig;
use crate::health;
use crate::images::Images;
use crate::runtime::{self, Runtime, WorkspaceRun};
use crate::store::{Desired, Observed, Store, StoreError, WorkspaceRow};

/// The reconciler and what it drives.
#[derive(Debug)]
pub struct Reconciler {
    pub store: Store,
    pub runtime: Arc<dyn Runtime>,
    pub images: Images,
    pub changes: Changes,
    pub clock: Arc<dyn Clock>,
    /// This service's certificate, for k8shelld over TCP.
    pub tls: Arc<ReloadingTls>,
    pub config: ReconcileConfig,
    wake: Notify,
    /// Workspaces being driven now (one task per workspace at a time).
    inflight: Mutex<HashMap<Uuid, AbortHandle>>,
    starts: Semaphore,
}

impl Reconciler {
    pub fn new(
        store: Store,
        runtime: Arc<dyn Runtime>,
        images: Images,
        clock: Arc<dyn Clock>,
        tls: Arc<ReloadingTls>,
        config: ReconcileConfig,
    ) -> Self {
        Self {
            starts: Semaphore::new(config.parallel.max(1)),
            store,
            runtime,
            images,
            changes: Changes::default(),
            clock,
            tls,
            config,
            wake: Notify::new(),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Something changed: look now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reconciles until `stop`; then abandons what is in flight, as a crash would, for the
    /// next run to pick up.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                _ = ticker.tick() => self.check_running().await,
            }
            self.pass().await;
        }
        for (_, task) in self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            task.abort();
        }
    }

    /// Stops idle workspaces, then starts a step for every unsettled one.
    async fn pass(self: &Arc<Self>) {
        if let Err(error) = self.stop_idle().await {
            tracing::warn!(%error, "looking for idle workspaces");
        }
        match self.store.unsettled().await {
            Ok(rows) => {
                for row in rows {
                    self.spawn_step(row, None);
                }
            }
            Err(error) => tracing::warn!(%error, "listing unsettled workspaces"),
        }
    }

    fn spawn_step(self: &Arc<Self>, row: WorkspaceRow, why: Option<String>) {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if inflight.contains_key(&row.id) {
            return;
        }
        let this = Arc::clone(self);
        let id = row.id;
        // The lock is held until the handle is in the map: the task removes it only after.
        let task = tokio::spawn(async move {
            let moved = this.step(row, why).await;
            this.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            match moved {
                Ok(true) => this.wake(),
                Ok(false) => {}
                Err(error) => tracing::warn!(workspace = %id, %error, "reconciling"),
            }
        });
        inflight.insert(id, task.abort_handle());
    }

    /// One step for one workspace; true when it moved (the next step may follow at once).
    async fn step(&self, row: WorkspaceRow, why: Option<String>) -> Result<bool, StoreError> {
        use Desired as D;
        use Observed as O;
        match (row.desired, row.observed) {
            (_, O::Deleted) | (D::Stopped, O::Stopped) | (D::Running, O::Running | O::Failed) => {
                Ok(false)
            }
            (_, O::Deleting) => self.delete(&row).await,
            (D::Deleted, from) => Ok(self
                .move_to(&row, from, O::Deleting, "delete requested", None)
                .await?
                && self.delete(&row).await?),
            (_, O::Stopping) => self.stop(&row).await,
            (D::Stopped, O::Pending) => {
                self.move_to(&row, O::Pending, O::Stopped, "created stopped", None)
                    .await
            }
            (D::Stopped, from @ (O::Running | O::Starting | O::Failed)) => {
                let why = why.unwrap_or_else(|| "stop requested".to_owned());
                Ok(self.move_to(&row, from, O::Stopping, &why, None).await?
                    && self.stop(&WorkspaceRow { reason: why, ..row }).await?)
            }
            (D::Running, from @ (O::Pending | O::Stopped)) => Ok(self
                .move_to(&row, from, O::Starting, "starting", None)
                .await?
                && self.start(&row).await?),
            (D::Running, O::Starting) => self.start(&row).await,
        }
    }

    /// Image, container, k8shelld answering: running; any failure: failed, saying what.
    async fn start(&self, row: &WorkspaceRow) -> Result<bool, StoreError> {
        let _slot = self.starts.acquire().await;
        let run = match self.prepare(row).await {
            Ok(run) => run,
            Err(reason) => return self.fail(row, reason).await,
        };
        let started = match self.runtime.start(&run).await {
            Ok(endpoint) => health::wait_serving(&endpoint, &self.tls, self.config.ready_timeout)
                .await
                .map(|()| endpoint),
            Err(error) => Err(error.to_string()),
        };
        let endpoint = match started {
            Ok(endpoint) => endpoint,
            Err(reason) => {
                // The home stays; nothing else of a failed start does.
                if let Err(error) = self.runtime.stop(row.id).await {
                    tracing::warn!(workspace = %row.id, %error, "cleaning up a failed start");
                }
                return self.fail(row, reason).await;
            }
        };
        let warnings = match self.runtime.observe(row.id).await {
            Ok(runtime::Observed::Running { warnings, .. }) => warnings.join("; "),
            _ => String::new(),
        };
        // A start is activity: a workspace stopped for a day is not idle the moment it is back.
        self.store.touch(row.id, self.clock.now()).await?;
        self.move_to(
            row,
            Observed::Starting,
            Observed::Running,
            &warnings,
            Some(&health::endpoint_text(&endpoint)),
        )
        .await
    }

    /// What the runtime needs, with the image built if the registry does not have it.
    async fn prepare(&self, row: &WorkspaceRow) -> Result<WorkspaceRun, String> {
        let spec: WorkspaceSpec = serde_json::from_value(row.spec.clone())
            .map_err(|e| format!("the stored blueprint cannot be read: {e}"))?;
        let image = self
            .images
            .ensure(
                &row.image,
                &row.blueprint_source,
                &format!("{}.ncl", spec.name),
            )
            .await?;
        if image != row.image {
            tracing::info!(workspace = %row.id, old = %row.image, new = %image, "image reference changed (builder version)");
        }
        Ok(run_of(row, &spec, image))
    }

    async fn fail(&self, row: &WorkspaceRow, reason: String) -> Result<bool, StoreError> {
        tracing::warn!(workspace = %row.id, %reason, "workspace failed to start");
        self.move_to(row, Observed::Starting, Observed::Failed, &reason, None)
            .await
    }

    async fn stop(&self, row: &WorkspaceRow) -> Result<bool, StoreError> {
        match self.runtime.stop(row.id).await {
            Ok(()) => {
                self.move_to(
                    row,
                    Observed::Stopping,
                    Observed::Stopped,
                    &row.reason,
                    None,
                )
                .await
            }
            Err(error) => {
                let reason = format!("stopping failed, will retry: {error}");
                self.store
                    .set_reason(row.id, Observed::Stopping, &reason)
                    .await?;
                Ok(false)
            }
        }
    }

    async fn delete(&self, row: &WorkspaceRow) -> Result<bool, StoreError> {
        match self.runtime.delete(row.id).await {
            Ok(()) => {
                self.move_to(row, Observed::Deleting, Observed::Deleted, "deleted", None)
                    .await
            }
            Err(error) => {
                let reason = format!("deleting failed, will retry: {error}");
                self.store
                    .set_reason(row.id, Observed::Deleting, &reason)
                    .await?;
                Ok(false)
            }
        }
    }

    /// The transition, and the change announced (to watchers now, to NATS soon) if it happened.
    pub async fn move_to(
        &self,
        row: &WorkspaceRow,
        from: Observed,
        to: Observed,
        reason: &str,
        endpoint: Option<&str>,
    ) -> Result<bool, StoreError> {
        let endpoint = if to == Observed::Running {
            endpoint
        } else {
            // Only a running workspace has an endpoint.
            Some("")
        };
        let Some(workspace) = self
            .store
            .transition_returning(row.id, from, to, reason, endpoint)
            .await?
        else {
            return Ok(false);
        };
        tracing::info!(workspace = %row.id, name = %row.name, from = from.as_str(), to = to.as_str(), %reason, "workspace state");
        self.changes.committed(Change {
            workspace,
            previous: from,
        });
        Ok(true)
    }

    /// Running workspaces whose container is gone are failed (with the reason), not silently
    /// restarted; those still running are left alone (adopted after a restart).
    async fn check_running(&self) {
        let rows = match self.store.in_state(Observed::Running).await {
            Ok(rows) => rows,
            Err(error) => return tracing::warn!(%error, "listing running workspaces"),
        };
        for row in rows {
            if self.is_inflight(row.id) {
                continue;
            }
            match self.runtime.observe(row.id).await {
                Ok(runtime::Observed::Running { .. }) => {}
                Ok(_) => {
                    let moved = self
                        .move_to(
                            &row,
                            Observed::Running,
                            Observed::Failed,
                            "the workspace stopped unexpectedly; start it again",
                            None,
                        )
                        .await;
                    if let Err(error) = moved {
                        tracing::warn!(workspace = %row.id, %error, "recording a lost workspace");
                    }
                }
                Err(error) => tracing::warn!(workspace = %row.id, %error, "observing"),
            }
        }
    }

    fn is_inflight(&self, id: Uuid) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    /// Workspaces without activity for their idle timeout are stopped; their home stays.
    async fn stop_idle(self: &Arc<Self>) -> Result<(), StoreError> {
        for row in self.store.idle(self.clock.now()).await? {
            if self.is_inflight(row.id) {
                continue;
            }
            let idle_for = std::time::Duration::from_secs(row.idle_timeout_seconds.unsigned_abs());
            let why = format!(
                "stopped after {} without activity (the blueprint's idle_timeout)",
                humantime::format_duration(idle_for)
            );
            let row = self.store.set_desired(row.id, Desired::Stopped).await?;
            self.spawn_step(row, Some(why));
        }
        Ok(())
    }
}

/// The runtime's view of a stored workspace.
pub fn run_of(row: &WorkspaceRow, spec: &WorkspaceSpec, image: String) -> WorkspaceRun {
    WorkspaceRun {
        id: row.id,
        owner: row.owner.clone(),
        name: row.name.clone(),
        image,
        user: spec.user.name.clone(),
        uid: spec.user.uid,
        gid: spec.user.gid,
        cpu: spec.resources.cpu,
        memory_bytes: spec.resources.memory_bytes().unwrap_or(0),
        home_bytes: k8shell_blueprint::spec::size_bytes(&spec.home.size).unwrap_or(0),
        egress: spec.allow.egress,
    }
}
