//! The Kubernetes runtime against a scripted API server (tower-test): every request is checked
//! (method, path, query, body field by field) and answered as the API server would, the pod
//! watch included (list, then watch responses of JSON lines, a 410 Gone and the re-list).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8shell_provisioner::kubernetes::{KubernetesConfig, KubernetesRuntime, object_name};
use k8shell_provisioner::{Endpoint, Observed, Runtime, RuntimeError, WorkspaceRun};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tower_test::mock::SendResponse;
use uuid::Uuid;

const NS: &str = "k8shell-ws";
const SELECTOR: &str = "app.kubernetes.io/managed-by=k8shell-provisioner";
const IMAGE: &str = "registry.example/ws/dev@sha256:0123456789abcdef";
const K8SHELLD_IMAGE: &str = "registry.example/k8shelld:1";
const WAIT: Duration = Duration::from_secs(10);

/// One request to the API server other than the pod list and watch.
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: Option<String>,
    body: Value,
    reply: SendResponse<Response<Body>>,
}

impl Call {
    fn param(&self, key: &str) -> Option<String> {
        param(&self.query, key)
    }

    fn respond(self, status: StatusCode, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.reply.send_response(response);
    }

    fn not_found(self) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{} not found", self.path), "reason": "NotFound", "code": 404,
        });
        self.respond(StatusCode::NOT_FOUND, &status);
    }

    /// Answers an apply as the API server does: the object as stored, with a uid.
    fn applied(self, uid: &str) -> Value {
        let mut object = self.body.clone();
        object["metadata"]["uid"] = uid.into();
        object["metadata"]["resourceVersion"] = "10".into();
        self.respond(StatusCode::OK, &object);
        object
    }
}

/// A query parameter, percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            let mut out = Vec::new();
            let mut bytes = v.bytes();
            while let Some(b) = bytes.next() {
                match b {
                    b'%' => {
                        let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                        out.push(u8::from_str_radix(&hex, 16).unwrap());
                    }
                    b'+' => out.push(b' '),
                    b => out.push(b),
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

/// The scripted API server: pod lists and watches are answered from `listed` and the event
/// batches the test feeds; every other request goes to the test in order.
struct FakeApi {
    calls: mpsc::UnboundedReceiver<Call>,
    listed: Arc<Mutex<Vec<Value>>>,
    events: mpsc::UnboundedSender<Vec<Value>>,
    lists: watch::Receiver<usize>,
    watches: watch::Receiver<usize>,
    /// Watch requests answered so far (one per batch).
    answered: usize,
}

impl FakeApi {
    fn start(listed: Vec<Value>) -> (kube::Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel::<Vec<Value>>();
        let events_rx = Arc::new(tokio::sync::Mutex::new(events_rx));
        let (lists_tx, lists) = watch::channel(0);
        let (watches_tx, watches) = watch::channel(0);
        let listed = Arc::new(Mutex::new(listed));
        let items = listed.clone();
        tokio::spawn(async move {
            while let Some((request, reply)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let path = parts.uri.path().to_owned();
                let query = parts.uri.query().unwrap_or_default().to_owned();
                if parts.method == Method::GET && path == format!("/api/v1/namespaces/{NS}/pods") {
                    assert_eq!(param(&query, "labelSelector").as_deref(), Some(SELECTOR));
                    if param(&query, "watch").as_deref() == Some("true") {
                        watches_tx.send_modify(|n| *n += 1);
                        let events_rx = events_rx.clone();
                        tokio::spawn(async move {
                            let Some(batch) = events_rx.lock().await.recv().await else {
                                return;
                            };
                            let lines: String =
                                batch.iter().map(|event| format!("{event}\n")).collect();
                            reply.send_response(Response::new(Body::from(lines.into_bytes())));
                        });
                    } else {
                        let list = json!({
                            "apiVersion": "v1", "kind": "PodList",
                            "metadata": { "resourceVersion": "1" },
                            "items": *items.lock().unwrap(),
                        });
                        let body = Body::from(serde_json::to_vec(&list).unwrap());
                        reply.send_response(Response::new(body));
                        lists_tx.send_modify(|n| *n += 1);
                    }
                    continue;
                }
                let bytes = body.collect_bytes().await.unwrap();
                let call = Call {
                    method: parts.method,
                    path,
                    query,
                    content_type: parts
                        .headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    reply,
                };
                if calls_tx.send(call).is_err() {
                    return;
                }
            }
        });
        let api = Self {
            calls,
            listed,
            events,
            lists,
            watches,
            answered: 0,
        };
        (kube::Client::new(service, NS), api)
    }

    /// The next request, which must be `method path`.
    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = tokio::time::timeout(WAIT, self.calls.recv())
            .await
            .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
            .unwrap();
        assert_eq!((&call.method, call.path.as_str()), (&method, path));
        call
    }

    /// Feeds one watch response and returns once the watcher has taken it in (it watches again
    /// only after it has put every event into its store).
    async fn feed(&mut self, events: Vec<Value>) {
        self.answered += 1;
        let answered = self.answered;
        wait_until(&mut self.watches, |n| n >= answered).await;
        self.events.send(events).unwrap();
        wait_until(&mut self.watches, |n| n > answered).await;
    }
}

async fn wait_until(counter: &mut watch::Receiver<usize>, f: impl Fn(usize) -> bool) {
    tokio::time::timeout(WAIT, counter.wait_for(|n| f(*n)))
        .await
        .expect("the watcher did not get there")
        .unwrap();
}

fn config() -> KubernetesConfig {
    serde_json::from_value(json!({
        "namespace": NS,
        "storage_class": "zfs",
        "k8shelld_image": K8SHELLD_IMAGE,
        "k8shelld_tls_secret": "k8shelld-tls",
        "jwks_config_map": "k8shell-jwks",
        "blocked_cidrs": ["10.0.0.0/8", "fd00::/8"],
        "ready_timeout": "20s",
    }))
    .unwrap()
}

fn workspace() -> WorkspaceRun {
    WorkspaceRun {
        id: Uuid::parse_str("0190f5c2-7b1e-7cc3-9a41-5d2f3e4a5b6c").unwrap(),
        owner: "alice".to_owned(),
        name: "dev".to_owned(),
        image: IMAGE.to_owned(),
        user: "alice".to_owned(),
        uid: 1000,
        gid: 1000,
        cpu: 1.5,
        memory_bytes: 2 << 30,
        home_bytes: 10 << 30,
        egress: true,
    }
}

fn path(resource: &str) -> String {
    let prefix = if resource == "networkpolicies" {
        "/apis/networking.k8s.io/v1"
    } else {
        "/api/v1"
    };
    format!(
        "{prefix}/namespaces/{NS}/{resource}/{}",
        object_name(workspace().id)
    )
}

fn expected_endpoint() -> Endpoint {
    Endpoint::Tcp(format!(
        "{}.{NS}.svc.cluster.local:7000",
        object_name(workspace().id)
    ))
}

/// The workspace's pod as the API server reports it.
fn pod(uid: &str, version: u32, status: Value) -> Value {
    let id = workspace().id;
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": object_name(id), "namespace": NS, "uid": uid,
            "resourceVersion": version.to_string(),
            "labels": { "k8shell.io/workspace": id.to_string(), "app.kubernetes.io/managed-by": "k8shell-provisioner" },
        },
        "spec": { "containers": [{ "name": "workspace", "image": IMAGE }] },
        "status": status,
    })
}

fn ready() -> Value {
    json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] })
}

fn pending() -> Value {
    json!({ "phase": "Pending", "conditions": [{ "type": "Ready", "status": "False" }] })
}

fn event(kind: &str, object: Value) -> Value {
    json!({ "type": kind, "object": object })
}

/// A runtime whose watcher has listed `listed` and is watching.
async fn runtime(listed: Vec<Value>) -> (Arc<KubernetesRuntime>, FakeApi) {
    let (client, mut api) = FakeApi::start(listed);
    let runtime = Arc::new(KubernetesRuntime::new(client, config()));
    wait_until(&mut api.watches, |n| n >= 1).await;
    (runtime, api)
}

fn labels() -> Value {
    json!({
        "k8shell.io/workspace": workspace().id.to_string(),
        "k8shell.io/owner": "alice",
        "app.kubernetes.io/name": "k8shell-workspace",
        "app.kubernetes.io/managed-by": "k8shell-provisioner",
    })
}

/// Checks an apply request's form and common metadata; returns its body.
fn check_apply(call: &Call, kind: &str) -> Value {
    assert_eq!(
        call.param("fieldManager").as_deref(),
        Some("k8shell-provisioner")
    );
    assert_eq!(call.param("force").as_deref(), Some("true"));
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body = call.body.clone();
    assert_eq!(body["kind"], kind);
    assert_eq!(body["metadata"]["name"], object_name(workspace().id));
    assert_eq!(body["metadata"]["namespace"], NS);
    assert_eq!(body["metadata"]["labels"], labels());
    body
}

/// Answers start's five applies, checking each object; returns the pod's uid.
async fn answer_applies(api: &mut FakeApi) -> &'static str {
    let id = workspace().id;
    let call = api.expect(Method::PATCH, &path("configmaps")).await;
    let config_map = check_apply(&call, "ConfigMap");
    let toml = config_map["data"]["k8shelld.toml"].as_str().unwrap();
    let k8shelld: k8shell_k8shelld::Config = toml::from_str(toml).unwrap();
    k8shelld.validate().unwrap();
    assert_eq!(
        (k8shelld.workspace_id, k8shelld.user.as_str()),
        (id, "alice")
    );
    let tcp = k8shelld.tcp.unwrap();
    assert_eq!(tcp.listen.to_string(), "0.0.0.0:7000");
    assert_eq!(tcp.tls.key_file.to_str(), Some("/etc/k8shell/tls/tls.key"));
    assert_eq!(
        k8shelld.jwks.file.unwrap().to_str(),
        Some("/etc/k8shell/jwks.json")
    );
    call.applied("cm-uid");

    let call = api
        .expect(Method::PATCH, &path("persistentvolumeclaims"))
        .await;
    let claim = check_apply(&call, "PersistentVolumeClaim");
    assert_eq!(claim["spec"]["storageClassName"], "zfs");
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(
        claim["spec"]["resources"]["requests"]["storage"],
        (10u64 << 30).to_string()
    );
    call.applied("pvc-uid");

    let call = api.expect(Method::PATCH, &path("services")).await;
    let service = check_apply(&call, "Service");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(
        service["spec"]["selector"],
        json!({ "k8shell.io/workspace": id.to_string() })
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([{ "name": "k8shelld", "port": 7000, "targetPort": 7000, "protocol": "TCP" }])
    );
    call.applied("svc-uid");

    let call = api.expect(Method::PATCH, &path("networkpolicies")).await;
    let policy = check_apply(&call, "NetworkPolicy");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        json!({ "k8shell.io/workspace": id.to_string() })
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        spec["ingress"],
        json!([{
            "from": [{
                "namespaceSelector": {},
                "podSelector": { "matchExpressions": [{
                    "key": "app.kubernetes.io/name", "operator": "In",
                    "values": ["k8shell-ssh-proxy", "k8shell-api"],
                }] },
            }],
            "ports": [{ "protocol": "TCP", "port": 7000 }],
        }])
    );
    assert_eq!(
        spec["egress"][0]["to"],
        json!([
            { "ipBlock": { "cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"] } },
            { "ipBlock": { "cidr": "::/0", "except": ["fd00::/8"] } },
        ])
    );
    assert_eq!(
        spec["egress"][1]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    call.applied("netpol-uid");

    let call = api.expect(Method::PATCH, &path("pods")).await;
    let pod = check_apply(&call, "Pod");
    let spec = &pod["spec"];
    assert_eq!(spec["hostname"], "dev");
    assert_eq!(spec["automountServiceAccountToken"], false);
    let init = &spec["initContainers"][0];
    assert_eq!(init["image"], K8SHELLD_IMAGE);
    assert_eq!(
        init["command"],
        json!(["cp", "/k8shelld", "/.k8shell/k8shelld"])
    );
    assert_eq!(
        init["volumeMounts"],
        json!([{ "name": "k8shelld", "mountPath": "/.k8shell" }])
    );
    let home = &spec["initContainers"][1];
    assert_eq!(home["image"], IMAGE);
    assert_eq!(
        home["command"],
        json!(["chown", "1000:1000", "/home/alice"])
    );
    let main = &spec["containers"][0];
    assert_eq!(main["image"], IMAGE);
    assert_eq!(
        main["command"],
        json!([
            "/.k8shell/k8shelld",
            "--config",
            "/etc/k8shell/k8shelld.toml"
        ])
    );
    assert_eq!(
        main["ports"],
        json!([{ "name": "k8shelld", "containerPort": 7000, "protocol": "TCP" }])
    );
    assert_eq!(main["readinessProbe"]["tcpSocket"]["port"], 7000);
    let amounts = json!({ "cpu": "1500m", "memory": (2u64 << 30).to_string() });
    let resources = json!({ "requests": amounts, "limits": amounts });
    assert_eq!(main["resources"], resources);
    assert_eq!(init["resources"], resources);
    assert_eq!(
        main["volumeMounts"],
        json!([
            { "name": "k8shelld", "mountPath": "/.k8shell", "readOnly": true },
            { "name": "config", "mountPath": "/etc/k8shell", "readOnly": true },
            { "name": "home", "mountPath": "/home/alice" },
        ])
    );
    let volumes = spec["volumes"].as_array().unwrap();
    assert_eq!(volumes[0], json!({ "name": "k8shelld", "emptyDir": {} }));
    assert_eq!(
        volumes[1],
        json!({ "name": "home", "persistentVolumeClaim": { "claimName": object_name(id) } })
    );
    let sources = &volumes[2]["projected"]["sources"];
    assert_eq!(sources[0]["configMap"]["name"], object_name(id));
    assert_eq!(sources[1]["secret"]["name"], "k8shelld-tls");
    assert_eq!(
        sources[1]["secret"]["items"][1],
        json!({ "key": "tls.key", "path": "tls/tls.key", "mode": 0o400 })
    );
    assert_eq!(sources[2]["configMap"]["name"], "k8shell-jwks");
    call.applied("pod-uid");
    "pod-uid"
}

/// `observe`, answering its read of the home claim (`claim`: whether there is one; None: it
/// must not read it).
async fn observe(
    runtime: &Arc<KubernetesRuntime>,
    api: &mut FakeApi,
    claim: Option<bool>,
) -> Observed {
    let mut observing = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.observe(workspace().id).await.unwrap() }
    });
    let claim_path = path("persistentvolumeclaims");
    loop {
        tokio::select! {
            observed = &mut observing => return observed.unwrap(),
            call = api.expect(Method::GET, &claim_path) => match claim {
                Some(true) => call.respond(StatusCode::OK, &json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": { "name": object_name(workspace().id), "namespace": NS },
                })),
                Some(false) => call.not_found(),
                None => panic!("observe read the claim of a running workspace"),
            },
        }
    }
}

#[tokio::test]
async fn start_applies_the_objects_and_returns_once_the_pod_is_ready() {
    let (runtime, mut api) = runtime(Vec::new()).await;
    let starting = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.start(&workspace()).await }
    });
    let uid = answer_applies(&mut api).await;
    api.feed(vec![event("ADDED", pod(uid, 11, pending()))])
        .await;
    assert!(
        !starting.is_finished(),
        "start returned before the pod was ready"
    );
    api.feed(vec![event("MODIFIED", pod(uid, 12, ready()))])
        .await;
    let endpoint = tokio::time::timeout(WAIT, starting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(endpoint, expected_endpoint());
    assert_eq!(
        observe(&runtime, &mut api, None).await,
        Observed::Running {
            endpoint: expected_endpoint(),
            warnings: Vec::new()
        }
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_start_naming_it() {
    let (runtime, mut api) = runtime(Vec::new()).await;
    let starting = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.start(&workspace()).await }
    });
    let uid = answer_applies(&mut api).await;
    let mut status = pending();
    status["containerStatuses"] = json!([{
        "name": "workspace", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
        "state": { "waiting": {
            "reason": "ErrImagePull",
            "message": format!("failed to pull image \"{IMAGE}\": not found"),
        } },
    }]);
    api.feed(vec![event("MODIFIED", pod(uid, 11, status))])
        .await;
    let error = tokio::time::timeout(WAIT, starting)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Image { image, .. } if image == IMAGE),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(IMAGE) && message.contains("ErrImagePull"),
        "{message}"
    );
}

#[tokio::test]
async fn stop_deletes_only_the_pod_and_keeps_the_home() {
    let (runtime, mut api) = runtime(vec![pod("pod-uid", 5, ready())]).await;
    let stopping = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.stop(workspace().id).await }
    });
    let call = api.expect(Method::DELETE, &path("pods")).await;
    call.respond(StatusCode::OK, &pod("pod-uid", 6, ready()));
    tokio::time::timeout(WAIT, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Everything stop asked for was asked before it returned: nothing but the pod.
    assert!(
        api.calls.try_recv().is_err(),
        "stop deleted more than the pod"
    );

    // Again, with the pod already gone: still fine.
    let stopping = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.stop(workspace().id).await }
    });
    api.expect(Method::DELETE, &path("pods")).await.not_found();
    tokio::time::timeout(WAIT, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    api.feed(vec![event("DELETED", pod("pod-uid", 7, ready()))])
        .await;
    assert_eq!(
        observe(&runtime, &mut api, Some(true)).await,
        Observed::Stopped
    );
}

#[tokio::test]
async fn delete_removes_every_object_and_tolerates_those_already_gone() {
    let (runtime, mut api) = runtime(Vec::new()).await;
    let deleting = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.delete(workspace().id).await }
    });
    api.expect(Method::DELETE, &path("pods")).await.not_found();
    for resource in [
        "services",
        "networkpolicies",
        "configmaps",
        "persistentvolumeclaims",
    ] {
        let call = api.expect(Method::DELETE, &path(resource)).await;
        if resource == "networkpolicies" {
            call.not_found();
        } else {
            let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" });
            call.respond(StatusCode::OK, &status);
        }
    }
    tokio::time::timeout(WAIT, deleting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        observe(&runtime, &mut api, Some(false)).await,
        Observed::Absent
    );
}

#[tokio::test]
async fn a_410_gone_relists_and_the_store_follows_the_new_list() {
    let (runtime, mut api) = runtime(vec![pod("pod-uid", 5, ready())]).await;
    assert_eq!(
        observe(&runtime, &mut api, None).await,
        Observed::Running {
            endpoint: expected_endpoint(),
            warnings: Vec::new()
        }
    );
    // While the watch was away the pod went: the re-list no longer has it.
    api.listed.lock().unwrap().clear();
    let gone = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 5 (40)", "reason": "Expired", "code": 410,
    });
    api.feed(vec![event("ERROR", gone)]).await;
    assert_eq!(
        *api.lists.borrow(),
        2,
        "the watcher did not list again after 410 Gone"
    );
    assert_eq!(
        observe(&runtime, &mut api, Some(true)).await,
        Observed::Stopped
    );

    // And it keeps watching from the new list.
    api.feed(vec![event("ADDED", pod("pod-uid-2", 41, ready()))])
        .await;
    assert_eq!(
        observe(&runtime, &mut api, None).await,
        Observed::Running {
            endpoint: expected_endpoint(),
            warnings: Vec::new()
        }
    );
}
