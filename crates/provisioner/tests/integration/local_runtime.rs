//! The local runtime with real components: a blueprint built by the oci builder and pushed to a
//! real registry, pulled into the image cache, run by runc with the static k8shelld as init.
//! Needs root (runc), as the local runtime does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8shell_provisioner::local::{
    LocalConfig, LocalRuntime, NetworkConfig, RegistryAccess, is_mounted,
};
use k8shell_provisioner::{Observed, Runtime, RuntimeError, WorkspaceRun};
use uuid::Uuid;

use crate::support::{Base, exec};

struct Setup {
    base: Base,
    runtime: LocalRuntime,
    image: String,
}

/// A registry with a busybox workspace image built from the busybox blueprint.
fn setup() -> Setup {
    setup_with(None)
}

fn setup_with(network: Option<NetworkConfig>) -> Setup {
    let base = Base::start();
    let blueprint = base.dir.path().join("ws.ncl");
    std::fs::write(&blueprint, base.blueprint("")).unwrap();
    let compiled = k8shell_blueprint::compile_file(&blueprint).unwrap();
    let target = k8shell_blueprint::oci::OciTarget {
        repository: format!("{}/workspaces/busybox", base.registry.host()),
        tls_verify: false,
        credentials: None,
        auth_file: None,
        storage: base.dir.path().join("buildah"),
    };
    let image = k8shell_blueprint::oci::build(&compiled, &target, &mut |_| {})
        .unwrap()
        .reference;
    let runtime = LocalRuntime::new(LocalConfig {
        state_dir: base.dir.path().join("state"),
        k8shelld: k8shell_testkit::static_k8shelld(None).unwrap(),
        jwks_file: base.jwks.clone(),
        registry: RegistryAccess {
            tls_verify: false,
            auth_file: None,
        },
        stop_grace: Duration::from_secs(5),
        network,
    })
    .unwrap();
    Setup {
        base,
        runtime,
        image,
    }
}

fn workspace(image: &str, name: &str) -> WorkspaceRun {
    WorkspaceRun {
        id: Uuid::now_v7(),
        owner: "alice".to_owned(),
        name: name.to_owned(),
        image: image.to_owned(),
        user: "dev".to_owned(),
        uid: 1000,
        gid: 1000,
        cpu: 0.5,
        memory_bytes: 256 << 20,
        home_bytes: 1 << 30,
        egress: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_runs_keeps_its_home_across_restarts_and_leaves_nothing_behind() {
    let setup = setup();
    let ws = workspace(&setup.image, "tiny");
    let token = setup.base.token(ws.id);
    assert_eq!(
        setup.runtime.observe(ws.id).await.unwrap(),
        Observed::Absent
    );

    let endpoint = setup.runtime.start(&ws).await.unwrap();
    let channel = setup.base.ready(&endpoint, ws.id).await;
    assert_eq!(
        exec(&channel, &token, "id -u; id -un").await,
        ("1000\ndev\n".to_owned(), 0)
    );
    assert_eq!(exec(&channel, &token, "hostname").await.0, "tiny\n");
    assert_eq!(
        exec(&channel, &token, "cat /etc/motd; cat /opt/k8shell/stamp")
            .await
            .0,
        "busybox workspace\nbuilt\n"
    );
    assert_eq!(
        exec(&channel, &token, "echo kept > ~/kept.txt && pwd").await,
        ("/home/dev\n".to_owned(), 0)
    );
    // Its own PID namespace, with k8shelld as PID 1, and no network but loopback.
    assert_eq!(
        exec(&channel, &token, "cat /proc/1/cmdline | tr '\\0' ' '")
            .await
            .0,
        "/.k8shell/k8shelld --config /etc/k8shell/k8shelld.toml "
    );
    match setup.runtime.observe(ws.id).await.unwrap() {
        Observed::Running { warnings, .. } => {
            assert_eq!(
                warnings,
                Vec::<String>::new(),
                "this host's cgroups take the limits"
            )
        }
        other => panic!("expected running, got {other:?}"),
    }
    // Starting a running workspace changes nothing.
    assert_eq!(setup.runtime.start(&ws).await.unwrap(), endpoint);

    setup.runtime.stop(ws.id).await.unwrap();
    assert_eq!(
        setup.runtime.observe(ws.id).await.unwrap(),
        Observed::Stopped
    );
    let endpoint = setup.runtime.start(&ws).await.unwrap();
    let channel = setup.base.ready(&endpoint, ws.id).await;
    assert_eq!(
        exec(&channel, &token, "cat ~/kept.txt").await,
        ("kept\n".to_owned(), 0)
    );

    setup.runtime.delete(ws.id).await.unwrap();
    assert_eq!(
        setup.runtime.observe(ws.id).await.unwrap(),
        Observed::Absent
    );
    let state = setup.base.dir.path().join("state");
    assert!(
        !state.join("workspaces").join(ws.id.to_string()).exists(),
        "the workspace directory is gone"
    );
    assert!(
        !state
            .join("runc")
            .join(format!("k8shell-{}", ws.id.simple()))
            .exists(),
        "runc forgot the container"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&ws.id.to_string()), "no mount is left");
    assert!(!is_mounted(&state.join("workspaces")));
    let cgroup_left = [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/unified",
    ]
    .iter()
    .map(|root| {
        Path::new(root)
            .join("k8shell")
            .join(format!("ws-{}", ws.id.simple()))
    })
    .find(|path| path.exists());
    assert_eq!(cgroup_left, None, "no cgroup is left");
    // Deleting twice is fine (a reconciler may repeat itself).
    setup.runtime.delete(ws.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_does_not_exist_fails_clearly_and_leaves_nothing() {
    let setup = setup();
    let missing = format!("{}-missing", setup.image);
    let ws = workspace(&missing, "ghost");
    let error = setup.runtime.start(&ws).await.unwrap_err();
    assert!(matches!(error, RuntimeError::Image { .. }), "{error}");
    assert!(error.to_string().contains(&missing), "{error}");
    assert_eq!(
        setup.runtime.observe(ws.id).await.unwrap(),
        Observed::Absent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_reach_neither_each_other_nor_the_hosts_services() {
    // A bridge and subnet of this test's own, removed at the end.
    let tag = Uuid::now_v7().simple().to_string();
    let subnet = u8::from_str_radix(&tag[tag.len() - 2..], 16).unwrap() % 200 + 20;
    let network = NetworkConfig {
        bridge: format!("k8sht{}", &tag[tag.len() - 6..]),
        gateway: std::net::Ipv4Addr::new(10, subnet, 0, 1),
    };
    let setup = setup_with(Some(network.clone()));
    let (a, b) = (
        workspace(&setup.image, "alpha"),
        workspace(&setup.image, "beta"),
    );
    let _cleanup = NetworkCleanup {
        bridge: network.bridge.clone(),
        workspaces: vec![a.id, b.id],
        runc_root: setup.base.dir.path().join("state/runc"),
    };
    let channel_a = setup
        .base
        .ready(&setup.runtime.start(&a).await.unwrap(), a.id)
        .await;
    let channel_b = setup
        .base
        .ready(&setup.runtime.start(&b).await.unwrap(), b.id)
        .await;
    let (token_a, token_b) = (setup.base.token(a.id), setup.base.token(b.id));
    let address_a = setup.runtime.address(a.id).unwrap();
    assert_ne!(Some(address_a), setup.runtime.address(b.id));

    // alpha serves on 8080; it answers itself, and the host (the proxies' side) reaches it.
    let serve = "setsid sh -c 'while true; do echo reached | nc -l -p 8080; done' </dev/null >/dev/null 2>&1 &";
    assert_eq!(exec(&channel_a, &token_a, serve).await.1, 0);
    let local = k8shell_testkit::poll_until("alpha's server to listen", || {
        let (channel, token) = (channel_a.clone(), token_a.clone());
        async move {
            let (out, _) = exec(&channel, &token, "nc -w 2 127.0.0.1 8080 </dev/null").await;
            out.contains("reached").then_some(out)
        }
    })
    .await;
    assert_eq!(local, "reached\n");
    // The server restarts nc after each connection: try until it listens again.
    let answer = k8shell_testkit::poll_until("alpha's server to answer the host", || async move {
        let mut stream = tokio::net::TcpStream::connect((address_a, 8080))
            .await
            .ok()?;
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .ok()?;
        (!answer.is_empty()).then_some(answer)
    })
    .await;
    assert_eq!(answer, "reached\n");

    // beta cannot reach alpha.
    let (out, _) = exec(
        &channel_b,
        &token_b,
        &format!("nc -w 2 {address_a} 8080 </dev/null; echo done"),
    )
    .await;
    assert_eq!(out, "done\n", "beta reached alpha");

    // Neither reaches a service of the host, not even on the bridge's own address.
    let host_service = tokio::net::TcpListener::bind((network.gateway, 0))
        .await
        .unwrap();
    let port = host_service.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move { host_service.accept().await.map(drop) });
    let (out, _) = exec(
        &channel_b,
        &token_b,
        &format!("nc -w 2 {} {port} </dev/null; echo done", network.gateway),
    )
    .await;
    assert_eq!(out, "done\n");
    assert!(
        !accepted.is_finished(),
        "a workspace connected to a host service"
    );
    accepted.abort();

    for ws in [a.id, b.id] {
        setup.runtime.delete(ws).await.unwrap();
        assert!(
            !Path::new(&format!("/var/run/netns/k8shell-{}", ws.simple())).exists(),
            "the network namespace is gone"
        );
    }
    setup.runtime.remove_network().await.unwrap();
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&network.bridge),
        "the bridge is gone: {links}"
    );
    assert!(
        !links.contains(&format!("kv{}", &a.id.simple().to_string()[20..])),
        "no veth is left: {links}"
    );
}

/// Takes down what a failed network test left on the host (the runtime does it on success):
/// containers, their network namespaces, the bridge and its firewall table.
struct NetworkCleanup {
    bridge: String,
    workspaces: Vec<Uuid>,
    runc_root: PathBuf,
}

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new(args[0])
                .args(&args[1..])
                .output();
        };
        let root = self.runc_root.display().to_string();
        for ws in &self.workspaces {
            let id = format!("k8shell-{}", ws.simple());
            run(&["runc", "--root", &root, "delete", "--force", &id]);
            run(&["ip", "netns", "del", &id]);
        }
        run(&["ip", "link", "del", &self.bridge]);
        run(&[
            "nft",
            "delete",
            "table",
            "inet",
            &format!("k8shell_{}", self.bridge),
        ]);
    }
}
