//! The Kubernetes runtime: each workspace is a Pod with its home on a PVC, reached through a
//! headless Service and fenced by a NetworkPolicy (see `resources`). Everything is written by
//! server-side apply, so that starting again converges instead of failing on what exists.
//!
//! The provisioner's pods are known from one watch (a reflector store), never by polling:
//! `start` waits on it for readiness and `observe` reads it.

mod pod_status;
mod resources;

use std::fmt;
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

pub use resources::object_name;

use crate::runtime::{Endpoint, Observed, Runtime, RuntimeError, RuntimeFuture, WorkspaceRun};

/// The field manager of every apply: the provisioner owns these fields.
const FIELD_MANAGER: &str = "k8shell-provisioner";

/// The Kubernetes runtime's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The namespace every workspace lives in.
    pub namespace: String,
    /// StorageClass of the home volumes; the cluster's default when unset.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// The image holding the static k8shelld at `/k8shelld` (and `cp`, which copies it).
    pub k8shelld_image: String,
    /// A `kubernetes.io/tls` Secret in `namespace` with k8shelld's `tls.crt`, `tls.key` and the
    /// callers' CA as `ca.crt`; its certificate names `*.<namespace>.svc.<cluster_domain>`.
    pub k8shelld_tls_secret: String,
    /// A ConfigMap in `namespace` with identity's JWKS under the key `jwks.json`.
    pub jwks_config_map: String,
    /// What workspaces with egress must not reach: the API server, nodes, the pod and service
    /// networks (IPv4 and IPv6 CIDRs).
    #[serde(default)]
    pub blocked_cidrs: Vec<String>,
    /// The cluster's DNS domain, for the endpoints.
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// How long a pod may take to become ready (image pull included).
    #[serde(default = "default_ready_timeout", with = "humantime_serde")]
    pub ready_timeout: Duration,
}

fn default_cluster_domain() -> String {
    "cluster.local".to_owned()
}

fn default_ready_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Workspaces as pods.
pub struct KubernetesRuntime {
    client: kube::Client,
    config: KubernetesConfig,
    pods: Store<Pod>,
    /// Marked changed after every watch event: what `start` waits on.
    changes: watch::Receiver<()>,
    watcher: JoinHandle<()>,
}

impl fmt::Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for KubernetesRuntime {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// A failed API call, in words for the status.
fn api_error(step: impl Into<String>) -> impl FnOnce(kube::Error) -> RuntimeError {
    let step = step.into();
    move |e| RuntimeError::Step {
        step,
        detail: e.to_string(),
    }
}

impl KubernetesRuntime {
    /// Starts watching the provisioner's pods (until the runtime is dropped); must be called
    /// within a Tokio runtime.
    pub fn new(client: kube::Client, config: KubernetesConfig) -> Self {
        let (pods, writer) = reflector::store();
        let (notify, changes) = watch::channel(());
        let selector = format!("{}={}", resources::MANAGED_BY.0, resources::MANAGED_BY.1);
        let events = watcher(
            Api::<Pod>::namespaced(client.clone(), &config.namespace),
            watcher::Config::default().labels(&selector),
        )
        // Errors (a 410 Gone among them) are retried, after a back-off, with a fresh list.
        .default_backoff()
        .reflect(writer);
        let watcher = tokio::spawn(async move {
            let mut events = pin!(events);
            while let Some(event) = events.next().await {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching workspace pods");
                }
                notify.send_replace(());
            }
        });
        Self {
            client,
            config,
            pods,
            changes,
            watcher,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn endpoint(&self, workspace: Uuid) -> Endpoint {
        Endpoint::Tcp(format!(
            "{}.{}.svc.{}:{}",
            object_name(workspace),
            self.config.namespace,
            self.config.cluster_domain,
            resources::K8SHELLD_PORT
        ))
    }

    async fn apply<K>(&self, object: &K) -> Result<K, RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + serde::Serialize
            + DeserializeOwned
            + Clone
            + fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&K::DynamicType::default()).into_owned();
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map_err(api_error(format!("applying {kind} {name}")))
    }

    /// Deletes one object; one that is already gone is fine.
    async fn remove<K>(&self, workspace: Uuid) -> Result<(), RuntimeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + DeserializeOwned
            + Clone
            + fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object_name(workspace);
        match self
            .api::<K>()
            .delete(&name, &DeleteParams::default())
            .await
        {
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            result => result.map(drop).map_err(api_error(format!(
                "deleting {} {name}",
                K::kind(&K::DynamicType::default())
            ))),
        }
    }

    /// Waits until `check` of the workspace's pod (None: there is none) gives an answer, looking
    /// again after every watch event.
    async fn wait_for<T>(
        &self,
        step: &str,
        workspace: Uuid,
        deadline: Instant,
        mut check: impl FnMut(Option<&Pod>) -> Option<Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeError> {
        let key = ObjectRef::new(&object_name(workspace)).within(&self.config.namespace);
        let mut changes = self.changes.clone();
        let stopped = || RuntimeError::Step {
            step: step.to_owned(),
            detail: "the watch of workspace pods has stopped".to_owned(),
        };
        let waiting = async {
            self.pods.wait_until_ready().await.map_err(|_| stopped())?;
            loop {
                // Marked seen before looking, so that no change in between is missed.
                changes.borrow_and_update();
                if let Some(answer) = check(self.pods.get(&key).as_deref()) {
                    return answer;
                }
                changes.changed().await.map_err(|_| stopped())?;
            }
        };
        tokio::time::timeout_at(deadline, waiting)
            .await
            .map_err(|_| RuntimeError::Step {
                step: step.to_owned(),
                detail: format!(
                    "not done after {}",
                    humantime_serde::re::humantime::format_duration(self.config.ready_timeout)
                ),
            })?
    }

    async fn start_inner(&self, workspace: &WorkspaceRun) -> Result<Endpoint, RuntimeError> {
        let id = workspace.id;
        let deadline = Instant::now() + self.config.ready_timeout;
        // An apply to a pod that is still terminating (a stop just before) would change nothing.
        self.wait_for("waiting for the previous pod to end", id, deadline, |pod| {
            pod.is_none_or(|pod| pod.metadata.deletion_timestamp.is_none())
                .then_some(Ok(()))
        })
        .await?;
        self.apply(&resources::config_map(workspace, &self.config)?)
            .await?;
        self.apply(&resources::home_claim(workspace, &self.config)?)
            .await?;
        self.apply(&resources::service(workspace, &self.config)?)
            .await?;
        self.apply(&resources::network_policy(workspace, &self.config)?)
            .await?;
        let pod = self
            .apply(&resources::pod(workspace, &self.config)?)
            .await?;
        // The pod that the apply returned, not an older one the store may still hold.
        let uid = pod.metadata.uid;
        self.wait_for("waiting for the pod to become ready", id, deadline, |pod| {
            let pod = pod.filter(|pod| pod.metadata.uid == uid)?;
            if pod_status::is_ready(pod) {
                Some(Ok(()))
            } else {
                pod_status::failure(pod).map(Err)
            }
        })
        .await?;
        Ok(self.endpoint(id))
    }

    async fn stop_inner(&self, workspace: Uuid) -> Result<(), RuntimeError> {
        self.remove::<Pod>(workspace).await
    }

    async fn delete_inner(&self, workspace: Uuid) -> Result<(), RuntimeError> {
        self.remove::<Pod>(workspace).await?;
        self.remove::<Service>(workspace).await?;
        self.remove::<NetworkPolicy>(workspace).await?;
        self.remove::<ConfigMap>(workspace).await?;
        self.remove::<PersistentVolumeClaim>(workspace).await
    }

    async fn observe_inner(&self, workspace: Uuid) -> Result<Observed, RuntimeError> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let pod = self
            .wait_for("observing the pod", workspace, deadline, |pod| {
                Some(Ok(pod.map(pod_status::is_ready)))
            })
            .await?;
        Ok(match pod {
            Some(true) => Observed::Running {
                endpoint: self.endpoint(workspace),
                warnings: Vec::new(),
            },
            // Starting, failing or terminating: not reachable, but there.
            Some(false) => Observed::Stopped,
            None => {
                let claim = self
                    .api::<PersistentVolumeClaim>()
                    .get_opt(&object_name(workspace))
                    .await
                    .map_err(api_error("reading the home volume's claim"))?;
                match claim {
                    Some(_) => Observed::Stopped,
                    None => Observed::Absent,
                }
            }
        })
    }
}

impl Runtime for KubernetesRuntime {
    fn start<'a>(&'a self, workspace: &'a WorkspaceRun) -> RuntimeFuture<'a, Endpoint> {
        Box::pin(self.start_inner(workspace))
    }

    fn stop<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, ()> {
        Box::pin(self.stop_inner(workspace))
    }

    fn delete<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, ()> {
        Box::pin(self.delete_inner(workspace))
    }

    fn observe<'a>(&'a self, workspace: Uuid) -> RuntimeFuture<'a, Observed> {
        Box::pin(self.observe_inner(workspace))
    }
}
