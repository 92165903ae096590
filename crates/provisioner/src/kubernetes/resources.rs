//! The objects of one workspace, as the provisioner applies them: ConfigMap (k8shelld's
//! configuration), PersistentVolumeClaim (home), headless Service, NetworkPolicy and Pod. All of
//! them are named [`object_name`] and carry [`labels`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::KubernetesConfig;
use crate::runtime::{RuntimeError, WorkspaceRun};

/// k8shelld's gRPC port in every workspace pod.
pub const K8SHELLD_PORT: u16 = 7000;
/// The label selecting everything the provisioner manages (and the watch of its pods).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "k8shell-provisioner");
pub const WORKSPACE_LABEL: &str = "k8shell.io/workspace";
const OWNER_LABEL: &str = "k8shell.io/owner";
/// The only callers of k8shelld (their pods carry `app.kubernetes.io/name`).
const CALLERS: [&str; 2] = ["k8shell-ssh-proxy", "k8shell-api"];

/// Where the init container leaves k8shelld for the workspace container.
const K8SHELLD_DIR: &str = "/.k8shell";
/// k8shelld's configuration, TLS material and JWKS: one projected volume.
const CONFIG_DIR: &str = "/etc/k8shell";
const CONFIG_KEY: &str = "k8shelld.toml";
const JWKS_KEY: &str = "jwks.json";

/// `ws-<uuid without dashes>`: 35 characters, a valid DNS label for every kind.
pub fn object_name(workspace: Uuid) -> String {
    format!("ws-{}", workspace.simple())
}

/// The labels on every object of a workspace.
pub fn labels(workspace: &WorkspaceRun) -> BTreeMap<String, String> {
    [
        (WORKSPACE_LABEL, workspace.id.to_string()),
        (OWNER_LABEL, workspace.owner.clone()),
        ("app.kubernetes.io/name", "k8shell-workspace".to_owned()),
        (MANAGED_BY.0, MANAGED_BY.1.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// The k8shelld configuration of a workspace: TCP with mTLS, keys from the projected volume.
pub fn k8shelld_config(workspace: &WorkspaceRun) -> String {
    // JSON strings are valid TOML basic strings: the user name is quoted safely.
    let quoted = |s: &str| Value::from(s).to_string();
    format!(
        "workspace_id = \"{id}\"\nuser = {user}\n\n[tcp]\nlisten = \"0.0.0.0:{K8SHELLD_PORT}\"\n\n\
         [tcp.tls]\ncert_file = \"{CONFIG_DIR}/tls/tls.crt\"\nkey_file = \"{CONFIG_DIR}/tls/tls.key\"\n\
         ca_file = \"{CONFIG_DIR}/tls/ca.crt\"\n\n[jwks]\nfile = \"{CONFIG_DIR}/{JWKS_KEY}\"\n",
        id = workspace.id,
        user = quoted(&workspace.user),
    )
}

/// Every object starts as JSON (it reads like the manifest) and is checked against its type.
fn typed<K: DeserializeOwned>(kind: &str, value: Value) -> Result<K, RuntimeError> {
    serde_json::from_value(value).map_err(|e| RuntimeError::Step {
        step: format!("building the {kind}"),
        detail: e.to_string(),
    })
}

fn metadata(workspace: &WorkspaceRun, config: &KubernetesConfig) -> Value {
    json!({
        "name": object_name(workspace.id),
        "namespace": config.namespace,
        "labels": labels(workspace),
    })
}

pub fn config_map(
    workspace: &WorkspaceRun,
    config: &KubernetesConfig,
) -> Result<ConfigMap, RuntimeError> {
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(workspace, config),
            "data": { CONFIG_KEY: k8shelld_config(workspace) },
        }),
    )
}

pub fn home_claim(
    workspace: &WorkspaceRun,
    config: &KubernetesConfig,
) -> Result<PersistentVolumeClaim, RuntimeError> {
    typed(
        "PersistentVolumeClaim",
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata(workspace, config),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": config.storage_class,
                "resources": { "requests": { "storage": workspace.home_bytes.to_string() } },
            },
        }),
    )
}

/// Headless: the name resolves to the pod's address only while the pod is ready.
pub fn service(
    workspace: &WorkspaceRun,
    config: &KubernetesConfig,
) -> Result<Service, RuntimeError> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(workspace, config),
            "spec": {
                "clusterIP": "None",
                "selector": { WORKSPACE_LABEL: workspace.id.to_string() },
                "ports": [{
                    "name": "k8shelld",
                    "port": K8SHELLD_PORT,
                    "targetPort": K8SHELLD_PORT,
                    "protocol": "TCP",
                }],
            },
        }),
    )
}

/// In: k8shelld's port, from the proxies only (in any namespace: they live in the control
/// plane's, and k8shelld checks their mTLS identity anyway). Out: the internet and the cluster's
/// DNS, but never the `blocked_cidrs` (control plane, other workspaces); nothing without egress.
pub fn network_policy(
    workspace: &WorkspaceRun,
    config: &KubernetesConfig,
) -> Result<NetworkPolicy, RuntimeError> {
    let egress = if workspace.egress {
        let (v6, v4): (Vec<&String>, Vec<&String>) = config
            .blocked_cidrs
            .iter()
            .partition(|cidr| cidr.contains(':'));
        json!([
            { "to": [
                { "ipBlock": { "cidr": "0.0.0.0/0", "except": v4 } },
                { "ipBlock": { "cidr": "::/0", "except": v6 } },
            ] },
            { "to": [{
                  "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
                  "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
              }],
              "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }] },
        ])
    } else {
        json!([])
    };
    typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(workspace, config),
            "spec": {
                "podSelector": { "matchLabels": { WORKSPACE_LABEL: workspace.id.to_string() } },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{
                    "from": [{
                        "namespaceSelector": {},
                        "podSelector": { "matchExpressions": [{
                            "key": "app.kubernetes.io/name",
                            "operator": "In",
                            "values": CALLERS,
                        }] },
                    }],
                    "ports": [{ "protocol": "TCP", "port": K8SHELLD_PORT }],
                }],
                "egress": egress,
            },
        }),
    )
}

/// The workspace pod: k8shelld copied in by an init container and run as the entrypoint (as root:
/// it drops to the user), the home chowned to the user, requests equal to limits (Guaranteed).
pub fn pod(workspace: &WorkspaceRun, config: &KubernetesConfig) -> Result<Pod, RuntimeError> {
    let millicores = (workspace.cpu * 1000.0).round().max(1.0) as u64;
    let amounts =
        json!({ "cpu": format!("{millicores}m"), "memory": workspace.memory_bytes.to_string() });
    let resources = json!({ "requests": amounts, "limits": amounts });
    let home = format!("/home/{}", workspace.user);
    let root = json!({ "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false });
    typed(
        "Pod",
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata(workspace, config),
            "spec": {
                "hostname": workspace.name,
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "initContainers": [
                    {
                        "name": "k8shelld",
                        "image": config.k8shelld_image,
                        "command": ["cp", "/k8shelld", format!("{K8SHELLD_DIR}/k8shelld")],
                        "resources": resources,
                        "volumeMounts": [{ "name": "k8shelld", "mountPath": K8SHELLD_DIR }],
                    },
                    {
                        // Not fsGroup: that would make k8shelld's TLS key readable by the user.
                        "name": "home",
                        "image": workspace.image,
                        "command": ["chown", format!("{}:{}", workspace.uid, workspace.gid), home.clone()],
                        "securityContext": root,
                        "resources": resources,
                        "volumeMounts": [{ "name": "home", "mountPath": home }],
                    },
                ],
                "containers": [{
                    "name": "workspace",
                    "image": workspace.image,
                    "command": [
                        format!("{K8SHELLD_DIR}/k8shelld"),
                        "--config",
                        format!("{CONFIG_DIR}/{CONFIG_KEY}"),
                    ],
                    "ports": [{ "name": "k8shelld", "containerPort": K8SHELLD_PORT, "protocol": "TCP" }],
                    // k8shelld's gRPC health needs mTLS: an open port is the readiness signal.
                    "readinessProbe": {
                        "tcpSocket": { "port": K8SHELLD_PORT },
                        "periodSeconds": 2,
                    },
                    "securityContext": root,
                    "resources": resources,
                    "volumeMounts": [
                        { "name": "k8shelld", "mountPath": K8SHELLD_DIR, "readOnly": true },
                        { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
                        { "name": "home", "mountPath": home },
                    ],
                }],
                "volumes": [
                    { "name": "k8shelld", "emptyDir": {} },
                    { "name": "home", "persistentVolumeClaim": { "claimName": object_name(workspace.id) } },
                    { "name": "config", "projected": {
                        "defaultMode": 0o444,
                        "sources": [
                            { "configMap": {
                                "name": object_name(workspace.id),
                                "items": [{ "key": CONFIG_KEY, "path": CONFIG_KEY }],
                            } },
                            { "secret": {
                                "name": config.k8shelld_tls_secret,
                                "items": [
                                    { "key": "tls.crt", "path": "tls/tls.crt" },
                                    { "key": "tls.key", "path": "tls/tls.key", "mode": 0o400 },
                                    { "key": "ca.crt", "path": "tls/ca.crt" },
                                ],
                            } },
                            { "configMap": {
                                "name": config.jwks_config_map,
                                "items": [{ "key": JWKS_KEY, "path": JWKS_KEY }],
                            } },
                        ],
                    } },
                ],
            },
        }),
    )
}
